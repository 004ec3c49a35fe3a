# A backup server that snapshots itself and pulls three machines over ssh, two at a time: one
# with the defaults (address = name, root, port 22), one with its own key, port, ssh options,
# retention and schedule, one with unlimited monthlies and a keepWithin of its own.
{
  networking.hostName = "nas";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/srv/backup";
      sources = [ "/etc/nixos" ];
    };
    schedule = {
      enable = true;
      timeOfDay = "01:30";
    };
    notifications = {
      enable = true;
      ntfy.url = "https://ntfy.example/backups";
    };
    hostConcurrency = 2;
    hosts = {
      web1 = {
        sources = [
          "/etc"
          "/var/www"
        ];
      };
      db1 = {
        address = "10.0.0.12";
        user = "backup";
        port = 2222;
        sshKeyFile = "/run/agenix/backup-ssh-key";
        sshOptions = [
          "UserKnownHostsFile=/etc/hwc-backup/known_hosts"
          "StrictHostKeyChecking=yes"
        ];
        sources = [ "/var/lib/postgresql-dumps" ];
        excludePatterns = [ "*.partial" ];
        oneFileSystem = false;
        devices = true;
        keepDaily = 14;
        keepLast = 3;
        schedule = "hourly";
      };
      "laptop.lan" = {
        sources = [ "/home" ];
        excludePatterns = [
          ".cache"
          "node_modules"
        ];
        keepMonthly = -1;
        keepWithin = "3d";
      };
    };
  };
}
