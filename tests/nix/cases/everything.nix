# Every option away from its default: another rclone remote with its own config and no
# history, all notification targets, verification with sampling, metrics, hook paths, every
# retention rule, a raw calendar expression with a time, no random delay, AC power not
# required, both database dumps into a staging directory that a source already contains (so
# the sources stay as given), against a remote PostgreSQL server.
{
  networking.hostName = "ignored";
  hwc.system.services.backup = {
    enable = true;
    hostName = "db-1.example";
    local = {
      enable = true;
      mountPoint = "/srv/backup";
      requireMountPoint = false;
      keepLast = 2;
      keepHourly = 24;
      keepDaily = -1;
      keepWeekly = 0;
      keepMonthly = 0;
      keepYearly = 3;
      keepWithin = "1y6m";
      minSpaceGB = 0;
      makeRoom = true;
      store = "btrfs";
      sources = [
        "/var/lib/postgresql-dumps"
        "/etc"
      ];
      excludePatterns = [ ];
      oneFileSystem = false;
    };
    cloud = {
      enable = true;
      provider = "b2";
      remotePath = "bucket/db-1";
      syncMode = "copy";
      rcloneConfigFile = "/run/secrets/rclone.conf";
      keepHistory = 0;
      maxAge = "36h";
    };
    schedule = {
      enable = true;
      frequency = "Sat *-*-* 04:30";
      randomDelay = "0";
      onlyOnAC = false;
    };
    notifications = {
      enable = true;
      onSuccess = true;
      onFailure = true;
      ntfy = {
        url = "https://ntfy.example/backups";
        tokenFile = "/run/secrets/ntfy-token";
      };
      webhook.url = "https://hooks.example/backup";
      # The ping URL's UUID is the secret: read from a file at run time.
      healthchecks.urlFile = "/run/secrets/healthchecks-url";
      email.to = "ops@example.org";
    };
    preBackupScript = "pg_dumpall > /var/lib/postgresql-dumps/all.sql";
    readWritePaths = [ "/var/lib/postgresql-dumps" ];
    environmentFile = "/run/secrets/backup.env";
    health = {
      maxAge = "36h";
      minBackups = 3;
      schedule = "daily";
      verifyMaxAge = "40d";
    };
    verify = {
      enable = true;
      schedule = "Sun *-*-01..07 05:00";
      sample = 50;
      subset = 5;
    };
    metrics.textfileDir = "/var/lib/node-exporter";
    databases = {
      stagingDir = "/var/lib/postgresql-dumps/hwc";
      postgresql = {
        enable = true;
        user = "backup";
        host = "db.internal";
        port = 6432;
        binDir = "/opt/postgresql/bin";
      };
      mysql = {
        enable = true;
        user = "mysql-backup";
        databases = [
          "shop"
          "wiki"
        ];
        defaultsFile = "/run/secrets/my.cnf";
        socket = "/run/mysqld/mysqld.sock";
        binDir = "/opt/mysql/bin";
      };
    };
  };
}
