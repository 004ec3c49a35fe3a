# The seed README's "Dual Backup (Local + Cloud)" example.
{
  networking.hostName = "laptop";
  hwc.system.services.backup = {
    enable = true;

    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      keepDaily = 7;
    };

    cloud = {
      enable = true;
      provider = "proton-drive";
    };

    protonDrive.enable = true;

    schedule = {
      enable = true;
      frequency = "daily";
      timeOfDay = "02:00";
    };
  };
}
