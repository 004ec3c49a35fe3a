# A database server: PostgreSQL (two databases, each with pg_dump, plus the roles) and MariaDB
# (everything in one file) dumped before every snapshot into the default staging directory,
# which no source contains, so the module adds it to the sources. The cloud copy keeps 90
# history folders and must be at most two days old; a monthly verification must have run
# within 35 days.
{
  networking.hostName = "db-2";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/nas";
      sources = [
        "/etc/nixos"
        "/srv/www"
      ];
    };
    databases = {
      postgresql = {
        enable = true;
        databases = [
          "nextcloud"
          "gitea"
        ];
        host = "/run/postgresql";
        port = 5433;
        binDir = "/opt/postgresql-17/bin";
      };
      mysql = {
        enable = true;
        user = "backup";
        defaultsFile = "/run/agenix/mysql-backup.cnf";
        socket = "/run/mysqld/mysqld.sock";
        binDir = "/opt/mariadb/bin";
      };
    };
    cloud = {
      enable = true;
      provider = "b2";
      remotePath = "db-2";
      rcloneConfigFile = "/run/agenix/rclone.conf";
      keepHistory = 90;
      maxAge = "2d";
    };
    schedule.enable = true;
    health = {
      verifyMaxAge = "35d";
      minBackups = 2;
    };
    verify.enable = true;
  };
}
