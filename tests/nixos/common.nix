# What every test machine has: a second disk mounted at /mnt/backup (a real mount point, as
# requireMountPoint wants), some data under /srv/data to back up, and a webhook sink on
# 127.0.0.1:8080 that appends each request it receives to /var/lib/hook-sink/requests.
{ pkgs, ... }:
{
  virtualisation.emptyDiskImages = [ 512 ];
  virtualisation.fileSystems."/mnt/backup" = {
    device = "/dev/vdb";
    fsType = "ext4";
    autoFormat = true;
  };

  systemd.tmpfiles.rules = [ "d /srv/data 0755 root root - -" ];

  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [ "/srv/data" ];
      excludePatterns = [ "*.tmp" ];
    };
    notifications = {
      enable = true;
      onSuccess = true;
      webhook.url = "http://127.0.0.1:8080/hook";
    };
  };

  systemd.services.hook-sink = {
    wantedBy = [ "multi-user.target" ];
    serviceConfig = {
      ExecStart = "${pkgs.python3.interpreter} ${./hook-sink.py}";
      StateDirectory = "hook-sink";
    };
  };
}
