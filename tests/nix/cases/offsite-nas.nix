# Issue 13: a server backing up to a local drive and copying to a restic repository on a NAS
# mount, with its own weekly timer and a check timer; a second offsite to S3 with credentials
# in an environment file, copied after each local run. Sleep inhibition is off (a server).
{
  networking.hostName = "server";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      sources = [
        "/srv"
        "/etc/nixos"
      ];
    };
    schedule = {
      enable = true;
      onlyOnAC = false;
      randomDelay = "0";
    };
    inhibitSleep = false;
    offsite = {
      nas = {
        repository = "/mnt/nas/restic/server";
        passwordFile = "/run/secrets/restic/password";
        schedule = "Sun 03:00";
        check = {
          schedule = "Sun *-*-01..07 05:00";
          readDataSubset = null;
        };
        keepLast = 3;
        keepYearly = 2;
        maxAge = "8d";
      };
      s3-archive = {
        repository = "s3:s3.eu-central-1.amazonaws.com/example-backups/server";
        passwordFile = "/run/secrets/restic/password";
        environmentFile = "/run/secrets/restic/s3.env";
      };
    };
  };
}
