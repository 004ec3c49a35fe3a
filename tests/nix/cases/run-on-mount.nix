# Issue 13, item 5: a drive plugged in now and then (mount point with a "-", escaped in the mount
# unit's name as systemd does), backed up when it is mounted unless its newest snapshot is younger
# than 12 hours; no timer.
{
  networking.hostName = "desktop";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/media/backup-drive";
      runOnMount = true;
      runOnMountMinInterval = "12h";
    };
  };
}
