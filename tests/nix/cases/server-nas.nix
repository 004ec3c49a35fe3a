# The seed README's "Server with NAS" example.
{
  networking.hostName = "server";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/nas-backup";
      keepDaily = 14;
      keepWeekly = 8;
      keepMonthly = 12;
      sources = [
        "/home"
        "/etc/nixos"
        "/mnt/media"
        "/opt/business"
      ];
    };
    schedule = {
      enable = true;
      frequency = "weekly";
      timeOfDay = "03:00";
    };
  };
}
