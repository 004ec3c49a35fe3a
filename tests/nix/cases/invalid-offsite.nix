# Offsite copies (and runOnMount) the module must refuse: a name that is no unit or label
# name, keep rules that keep nothing, a zero maxAge, a readDataSubset of 0% and one above 100%,
# local repositories that are unclean, contain a space or lie among the local snapshots, and a
# mount point whose mount unit name would need bytes beyond printable ASCII.
{
  networking.hostName = "laptop";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/bäckup";
      runOnMount = true;
    };
    offsite = {
      "bad name" = {
        repository = "sftp:backup@nas:/restic";
        passwordFile = "/run/agenix/restic-password";
      };
      nothing = {
        repository = "b2:bucket:laptop";
        passwordFile = "/run/agenix/restic-password";
        keepDaily = 0;
        keepWeekly = 0;
        keepMonthly = 0;
        maxAge = "0d";
        check.readDataSubset = "0%";
      };
      unclean = {
        repository = "/mnt/nas/../restic/";
        passwordFile = "/run/agenix/restic-password";
        check.readDataSubset = "101%";
      };
      spaced = {
        repository = "/mnt/my nas/restic";
        passwordFile = "/run/agenix/restic-password";
      };
      inside = {
        repository = "/mnt/bäckup/laptop/restic";
        passwordFile = "/run/agenix/restic-password";
      };
    };
  };
}
