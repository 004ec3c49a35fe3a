# The configuration the VM test runs: a laptop-style setup (README "Laptop with External Drive")
# with every timer on, no random delay (so the timer fires at its OnCalendar), notifications to a
# listener inside the VM, and a pre-backup hook that probes what the sandbox lets it write.
{
  networking.hostName = "hwc-vm";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      sources = [ "/home" "/root" "/etc/hwc-test" ];
      excludePatterns = [ ".cache" "*.tmp" ];
      minSpaceGB = 0;
      keepDaily = 7;
      keepWeekly = 4;
      keepMonthly = 6;
    };
    schedule = {
      enable = true;
      frequency = "daily";
      timeOfDay = "02:00";
      randomDelay = "0";
      onlyOnAC = true;
    };
    notifications = {
      enable = true;
      onFailure = true;
      webhook.url = "http://127.0.0.1:8765/hook";
    };
    preBackupScript = ''
      /opt/hwc-test/probe-writes /mnt/backup /var/lib/hwc-backup /var/log/backup
    '';
    health.schedule = "weekly";
    verify.enable = true;
    verify.schedule = "monthly";
  };
}
