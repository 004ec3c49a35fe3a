# Local snapshots without a schedule: services exist for backup-now and systemctl, no timers.
{
  networking.hostName = "desktop";
  hwc.system.services.backup = {
    enable = true;
    local.enable = true;
  };
}
