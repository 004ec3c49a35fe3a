# The module on, but neither local nor cloud backups: only the package and a warning.
{
  networking.hostName = "kiosk";
  hwc.system.services.backup = {
    enable = true;
    local.useRsync = false;
    schedule.enable = true;
    protonDrive.enable = true;
    notifications.webhook.url = "https://hooks.example/x";
    # Settings of the scheduled verification, which is off.
    verify.schedule = "weekly";
  };
}
