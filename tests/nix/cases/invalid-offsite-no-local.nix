# An offsite copy without local snapshots to copy from (only pulled hosts here).
{
  networking.hostName = "nas";
  hwc.system.services.backup = {
    enable = true;
    hosts.web1.sources = [ "/srv" ];
    offsite.cloud = {
      repository = "rclone:b2:nas-restic";
      passwordFile = "/run/agenix/restic-password";
      rcloneConfigFile = "/run/agenix/rclone.conf";
    };
  };
}
