# Settings that cannot work together: every keep rule zero, a cloud push without local
# snapshots or remote, Proton Drive without its secret, an ntfy token without a topic, a webhook URL
# given inline and as a file, a host name that is no directory name.
{
  hwc.system.services.backup = {
    enable = true;
    hostName = "..";
    local = {
      keepDaily = 0;
      keepWeekly = 0;
      keepMonthly = 0;
    };
    cloud = {
      enable = true;
      provider = "";
    };
    protonDrive = {
      enable = true;
      secretName = "";
    };
    notifications.ntfy.tokenFile = "/run/secrets/ntfy";
    notifications.webhook = {
      url = "https://hooks.example/backup";
      urlFile = "/run/secrets/webhook-url";
    };
  };
}
