# Issue 13: an offsite copy to Proton Drive through restic's rclone backend, with the rclone
# config taken from protonDrive's agenix secret, copied right after each local run (no schedule
# of its own), and checked monthly. Also: a laptop, so the run keeps the machine awake.
{
  networking.hostName = "laptop";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
    };
    schedule = {
      enable = true;
      onlyOnAC = true;
    };
    protonDrive.enable = true;
    offsite.proton = {
      repository = "rclone:proton:backups/restic";
      passwordFile = "/run/agenix/restic-password";
      keepDaily = 7;
      keepWeekly = 4;
      keepMonthly = -1;
      keepWithin = "14d";
      bandwidthLimit = 4096;
      check = {
        schedule = "monthly";
        readDataSubset = "10%";
      };
    };
  };
}
