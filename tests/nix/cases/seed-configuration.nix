# Every block of the seed README's "Configuration" and "Advanced Configuration" sections at once:
# local, cloud, protonDrive, schedule, notifications, pre/post scripts and a custom calendar.
{
  networking.hostName = "workstation";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      useRsync = true;
      keepDaily = 7;
      keepWeekly = 4;
      keepMonthly = 6;
      minSpaceGB = 10;
      sources = [
        "/home"
        "/etc/nixos"
      ];
      excludePatterns = [
        ".cache"
        "*.tmp"
        ".local/share/Trash"
        "node_modules"
        "__pycache__"
      ];
    };
    cloud = {
      enable = true;
      provider = "proton-drive";
      remotePath = "Backups";
      syncMode = "sync";
      bandwidthLimit = "10M";
    };
    protonDrive = {
      enable = true;
      secretName = "rclone-proton-config";
    };
    schedule = {
      enable = true;
      frequency = "Mon,Wed,Fri";
      timeOfDay = "02:00";
      randomDelay = "1h";
      onlyOnAC = true;
    };
    notifications = {
      enable = true;
      onSuccess = false;
      onFailure = true;
    };
    preBackupScript = ''
      echo "Starting backup at $(date)"
    '';
    postBackupScript = ''
      echo "Backup completed at $(date)"
    '';
  };
}
