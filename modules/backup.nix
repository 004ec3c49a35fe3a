# hwc.system.services.backup: hard-linked, rotated, verifiable snapshots driven by systemd timers.
#
# The options follow the seed README (local.*, cloud.*, protonDrive.*, schedule.*,
# notifications.*, pre/postBackupScript). Everything they turn into (the JSON plan at
# /etc/hwc-backup/config.json, the units, the assertions) is computed by the pure function in
# ../nix/render.nix, which the offline tests evaluate without nixpkgs; this file only declares
# the options and wires the result into NixOS.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.hwc.system.services.backup;

  configFile = "/etc/hwc-backup/config.json";

  rendered = import ../nix/render.nix {
    inherit cfg configFile;
    package = cfg.package;
    # Hooks stop at the first failing command, as NixOS `script`s do.
    writeHook = name: text: pkgs.writeShellScript name "set -e\n${text}";
    rclone = lib.getExe pkgs.rclone;
    # agenix decrypts `age.secrets.<name>` to its `.path` (/run/agenix/<name> by default);
    # without agenix the conventional path is used, for a secret put there by other means.
    secretPath = name: lib.attrByPath [ "age" "secrets" name "path" ] "/run/agenix/${name}" config;
  };

  planFile = (pkgs.formats.json { }).generate "hwc-backup-config.json" rendered.plan;

  # A bad plan fails `nixos-rebuild` instead of the 02:00 run. Skipped when cross-compiling:
  # the runner cannot run on the build machine then.
  configCheck = pkgs.runCommand "hwc-backup-config-check" { } ''
    ${lib.getExe cfg.package} config check ${planFile}
    touch $out
  '';

  # Scalar settings (hardening, priorities) are defaults, so a machine that must loosen one sets
  # it plainly; lists keep normal priority so that additions (ReadWritePaths) add to ours.
  softDefaults =
    unit:
    unit
    // lib.optionalAttrs (unit ? serviceConfig) {
      serviceConfig = lib.mapAttrs (
        _: value: if lib.isList value then value else lib.mkDefault value
      ) unit.serviceConfig;
    };

  # Types shared by several options.
  keepCount =
    lib.types.addCheck lib.types.int (n: n >= -1)
    // {
      description = "integer ≥ -1 (-1 keeps every period)";
    };
  duration = lib.types.strMatching "([0-9]+[smhdw])+";
  # Each database name becomes a file name in the staging directory.
  dbName = lib.types.strMatching "[^./][^/]*";
  dbUser = lib.types.strMatching "[^/:[:space:]]+";

  mkKeep =
    period: default:
    lib.mkOption {
      type = keepCount;
      inherit default;
      example = default + 1;
      description = ''
        How many ${period} snapshots to keep: the newest snapshot of each of the last N
        ${period} periods that have one, as `restic forget --keep-${period} N` selects them.
        `0` disables the rule, `-1` keeps one for every such period.
      '';
    };
in
{
  options.hwc.system.services.backup = {
    enable = lib.mkEnableOption "hwc-backup, hard-linked and rotated snapshots of this machine";

    package = lib.mkPackageOption pkgs "hwc-backup" {
      example = "inputs.hwc-backup.packages.\${pkgs.stdenv.hostPlatform.system}.default";
    };

    hostName = lib.mkOption {
      type = lib.types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      example = "laptop";
      description = ''
        Name of the directory under {option}`local.mountPoint` that holds this machine's
        snapshots (`<mountPoint>/<hostName>/daily/…`). Letters, digits, `.`, `_` and `-`,
        at most 64 characters.
      '';
    };

    local = {
      enable = lib.mkEnableOption "local snapshots to an external drive, NAS or DAS mounted at {option}`local.mountPoint`";

      mountPoint = lib.mkOption {
        type = lib.types.str;
        default = "/mnt/backup";
        example = "/mnt/nas-backup";
        description = ''
          Where the backup destination is mounted. Snapshots go to
          `<mountPoint>/<hostName>/`. The units require this mount (`RequiresMountsFor=`) and, with
          {option}`local.requireMountPoint`, the runner refuses to write to a bare directory.
        '';
      };

      requireMountPoint = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = ''
          Refuse to run unless {option}`local.mountPoint` is a mount point, so that an unplugged
          drive does not fill the root file system. Set to `false` for a destination that is a
          plain directory.
        '';
      };

      useRsync = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = true;
        description = ''
          Make incremental snapshots: unchanged files are hard links to the previous snapshot.
          hwc-backup always works this way (with its own engine, not rsync); `false` is accepted
          for compatibility and only produces a warning.
        '';
      };

      keepLast = lib.mkOption {
        type = keepCount;
        default = 0;
        example = 3;
        description = "Always keep the N newest snapshots (`restic forget --keep-last`). `-1` keeps all.";
      };
      keepHourly = mkKeep "hourly" 0;
      keepDaily = mkKeep "daily" 7;
      keepWeekly = mkKeep "weekly" 4;
      keepMonthly = mkKeep "monthly" 6;
      keepYearly = mkKeep "yearly" 0;

      keepWithin = lib.mkOption {
        type = lib.types.nullOr (lib.types.strMatching "([0-9]+[ymdh])+");
        default = null;
        example = "14d";
        description = ''
          Also keep every snapshot younger than this, relative to the newest one
          (`restic forget --keep-within`; units `y`, `m` (months), `d`, `h`).
        '';
      };

      minSpaceGB = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 10;
        example = 50;
        description = "Refuse to start a snapshot with less than this many GiB free on the destination.";
      };

      sources = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [
          "/home"
          "/etc/nixos"
        ];
        example = [
          "/home"
          "/etc/nixos"
          "/var/lib/postgresql-dumps"
        ];
        description = ''
          Absolute paths to back up. Each is stored under its own path inside the snapshot
          (`…/daily/<time>/home/alice/notes.txt`).
        '';
      };

      excludePatterns = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [
          ".cache"
          "*.tmp"
          ".local/share/Trash"
          "node_modules"
          "__pycache__"
        ];
        example = [
          ".cache"
          "/home/*/Downloads/"
          "**/target/"
        ];
        description = ''
          What to leave out, with rsync's rules: no slash matches a name at any depth, a slash
          inside matches the end of the path, a leading `/` anchors at the file system root, a
          trailing `/` matches directories only, `*` stays within a name and `**` crosses `/`.
        '';
      };

      oneFileSystem = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = "Do not descend into other file systems mounted below a source.";
      };
    };

    cloud = {
      enable = lib.mkEnableOption "pushing the newest local snapshot to a cloud remote with rclone";

      provider = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9_.+@-]*";
        default = "proton-drive";
        example = "b2";
        description = ''
          `"proton-drive"` uses the `proton` remote of the rclone config from
          {option}`protonDrive`; any other value is the name of a remote defined in
          {option}`cloud.rcloneConfigFile`.
        '';
      };

      remotePath = lib.mkOption {
        type = lib.types.str;
        default = "Backups";
        example = "Backups/laptop";
        description = "Directory on the remote that receives the snapshot.";
      };

      syncMode = lib.mkOption {
        type = lib.types.enum [
          "sync"
          "copy"
          "move"
        ];
        default = "sync";
        example = "copy";
        description = ''
          rclone verb: `sync` mirrors the snapshot (deletes what it no longer has), `copy` only
          adds, `move` also deletes the pushed files from the local destination.
        '';
      };

      bandwidthLimit = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "10M";
        description = "rclone `--bwlimit` (for example `10M` for 10 MiB/s, or a timetable); `null` for none.";
      };

      rcloneConfigFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        defaultText = lib.literalMD "the agenix secret of {option}`protonDrive` when it is enabled, otherwise `null` (root's own rclone config)";
        example = "/run/agenix/rclone-b2";
        description = "rclone config file holding the remote's credentials. Give a path outside the Nix store.";
      };

      keepHistory = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 30;
        example = 90;
        description = ''
          How many history folders to keep on the remote, under `<remotePath>/<hostName>/history/`:
          one per push, holding the files that push replaced or deleted (rclone's
          `--backup-dir`). The oldest beyond this number are purged; `0` keeps no history.
        '';
      };

      maxAge = lib.mkOption {
        type = duration;
        default = "7d";
        example = "2d";
        description = ''
          The health check fails when the last successful push is older than this (units `s`,
          `m`, `h`, `d`, `w`).
        '';
      };
    };

    protonDrive = {
      enable = lib.mkEnableOption "Proton Drive as the cloud target, with the rclone config from an agenix secret";

      secretName = lib.mkOption {
        type = lib.types.str;
        default = "rclone-proton-config";
        example = "rclone-proton";
        description = ''
          Name of the agenix secret (`age.secrets.<name>`) holding an rclone config with a
          `proton` remote. Its decrypted path becomes the cloud push's rclone config.
        '';
      };
    };

    schedule = {
      enable = lib.mkEnableOption "the `backup.timer` that runs backups automatically";

      frequency = lib.mkOption {
        type = lib.types.nonEmptyStr;
        default = "daily";
        example = "Mon,Wed,Fri";
        description = ''
          `hourly`, `daily`, `weekly` (Sundays), `monthly`, `quarterly`, `semiannually` or
          `yearly`, at {option}`schedule.timeOfDay`; or a systemd calendar expression
          ({manpage}`systemd.time(7)`). An expression without a time of day (`Mon,Wed,Fri`)
          runs at {option}`schedule.timeOfDay`; one with a time is used as it is.
        '';
      };

      timeOfDay = lib.mkOption {
        type = lib.types.strMatching "([01][0-9]|2[0-3]):[0-5][0-9]";
        default = "02:00";
        example = "03:30";
        description = "When to run, `HH:MM` in the machine's time zone (for `hourly`: the minute).";
      };

      randomDelay = lib.mkOption {
        type = lib.types.str;
        default = "1h";
        example = "15min";
        description = "Random delay (`RandomizedDelaySec=`) to spread the load; `\"0\"` for none.";
      };

      onlyOnAC = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = ''
          Skip scheduled backups and verifications while on battery (`ConditionACPower=true`).
          Machines without a battery always count as on AC power.
        '';
      };
    };

    notifications = {
      enable = lib.mkEnableOption "notifications about backup results";

      onSuccess = lib.mkOption {
        type = lib.types.bool;
        default = false;
        example = true;
        description = "Notify after successful runs.";
      };

      onFailure = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = "Notify when a run fails or a backup unit is killed.";
      };

      ntfy = {
        url = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          example = "https://ntfy.sh/my-backups";
          description = "ntfy topic URL to publish to.";
        };
        tokenFile = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          example = "/run/agenix/ntfy-token";
          description = "File holding an ntfy access token. Give a path outside the Nix store.";
        };
      };

      webhook.url = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "https://hooks.example.org/backup";
        description = "URL that receives a JSON POST per notification.";
      };

      healthchecks.url = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "https://hc-ping.com/your-uuid";
        description = "healthchecks.io-style ping URL (`/start`, `/fail` are appended as needed).";
      };

      email.to = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "root@example.org";
        description = "Address to mail through `sendmail`.";
      };
    };

    preBackupScript = lib.mkOption {
      type = lib.types.lines;
      default = "";
      example = ''
        ''${config.services.postgresql.package}/bin/pg_dumpall -U postgres > /var/backup/pg.sql
      '';
      description = ''
        Shell commands run before each snapshot (`set -e`: the first failing command fails
        the run). They run inside the backup unit's sandbox: add the paths they write to
        {option}`readWritePaths`. PostgreSQL and MySQL dumps are built in: see
        {option}`databases.postgresql.enable` and {option}`databases.mysql.enable`.
      '';
    };

    postBackupScript = lib.mkOption {
      type = lib.types.lines;
      default = "";
      example = ''
        echo "snapshot $HWC_BACKUP_SNAPSHOT finished: $HWC_BACKUP_STATE"
      '';
      description = ''
        Shell commands run after every run, successful or not; `HWC_BACKUP_STATE` and
        `HWC_BACKUP_SNAPSHOT` tell how it went.
      '';
    };

    readWritePaths = lib.mkOption {
      type = lib.types.listOf lib.types.path;
      default = [ ];
      example = [ "/var/backup" ];
      description = ''
        Extra paths the backup units may write to, for the hooks. Everything else but the
        destination, `/var/lib/hwc-backup` and `/var/log/backup` is read-only to them.
      '';
    };

    health = {
      maxAge = lib.mkOption {
        type = lib.types.nullOr duration;
        default = null;
        defaultText = lib.literalMD "from {option}`schedule.frequency`: `48h` for daily, `8d` for weekly, `32d` for monthly …";
        example = "36h";
        description = ''
          The newest complete snapshot must be younger than this (units `s`, `m`, `h`, `d`, `w`)
          for the health check to pass.
        '';
      };

      minBackups = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 1;
        example = 3;
        description = "The health check fails with fewer complete snapshots than this.";
      };

      verifyMaxAge = lib.mkOption {
        type = lib.types.nullOr duration;
        default = null;
        example = "35d";
        description = ''
          The health check fails unless a verification (`backup-verify`) ran within this long.
          `null`: a verification that never ran is no failure. Damage found by the last
          verification always fails the check. With {option}`verify.enable`, pick a little more
          than the interval of {option}`verify.schedule`.
        '';
      };

      schedule = lib.mkOption {
        type = lib.types.nullOr lib.types.nonEmptyStr;
        default = "weekly";
        example = "daily";
        description = ''
          systemd calendar expression for `backup-health-check.timer`, active together with
          `backup.timer`; `null` for no timer. A failed check is notified like a failed backup.
        '';
      };
    };

    verify = {
      enable = lib.mkEnableOption "`backup-verify.timer`, which re-reads the latest snapshot against its manifest";

      schedule = lib.mkOption {
        type = lib.types.nonEmptyStr;
        default = "monthly";
        example = "Sun *-*-01..07 04:00";
        description = "systemd calendar expression for `backup-verify.timer`.";
      };

      sample = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 0;
        example = 100;
        description = "Also compare this many randomly chosen files with the live sources (`--sample`).";
      };
    };

    metrics.textfileDir = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text-files";
      description = "Directory of the node exporter's textfile collector to write `hwc_backup_*` metrics to.";
    };

    databases = {
      stagingDir = lib.mkOption {
        type = lib.types.str;
        default = "/var/backup/databases";
        example = "/var/lib/hwc-backup-dumps";
        description = ''
          Where the database dumps are written before each snapshot (`postgresql/`, `mysql/`
          below it; mode 0700, owned by root). When a dump is enabled and no entry of
          {option}`local.sources` contains this directory, it is added to the sources, so
          every snapshot holds the dumps taken just before it. It must not lie inside the
          destination, nor contain one of {option}`local.sources`.
        '';
      };

      postgresql = {
        enable = lib.mkEnableOption "PostgreSQL dumps before every snapshot (a failed dump fails the run)";

        user = lib.mkOption {
          type = dbUser;
          default = "postgres";
          example = "backup";
          description = ''
            System user that `pg_dumpall`/`pg_dump` run as; it logs in to the server with peer
            authentication on the local socket, so it needs a database role of the same name
            that may read everything (the superuser `postgres` can).
          '';
        };

        databases = lib.mkOption {
          type = lib.types.listOf dbName;
          default = [ ];
          example = [
            "nextcloud"
            "gitea"
          ];
          description = ''
            Databases to dump one by one with `pg_dump --format=custom` into
            `postgresql/<name>.dump`, plus the roles with `pg_dumpall --globals-only` into
            `postgresql/globals.sql`. `[ ]` dumps the whole cluster with `pg_dumpall` into
            `postgresql/all.sql`.
          '';
        };

        host = lib.mkOption {
          type = lib.types.nullOr lib.types.nonEmptyStr;
          default = null;
          example = "/run/postgresql";
          description = "Server host name or socket directory (`--host`); `null` for libpq's default socket.";
        };

        port = lib.mkOption {
          type = lib.types.nullOr lib.types.port;
          default = null;
          example = 5433;
          description = "Server port (`--port`); `null` for libpq's default.";
        };

        binDir = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default =
            if config.services.postgresql.enable or false then
              "${config.services.postgresql.package}/bin"
            else
              null;
          defaultText = lib.literalExpression ''
            if config.services.postgresql.enable then "''${config.services.postgresql.package}/bin" else null
          '';
          example = lib.literalExpression ''"''${pkgs.postgresql_16}/bin"'';
          description = ''
            Directory holding `pg_dump` and `pg_dumpall`, of the server's major version or
            newer. `null` looks them up on `PATH`, which in the backup units holds only
            coreutils, findutils, grep, sed and systemd.
          '';
        };
      };

      mysql = {
        enable = lib.mkEnableOption "MySQL/MariaDB dumps before every snapshot (a failed dump fails the run)";

        user = lib.mkOption {
          type = dbUser;
          default = "root";
          example = "backup";
          description = ''
            System user that `mariadb-dump` (or `mysqldump`) runs as; with MariaDB's
            `unix_socket` authentication it logs in as the database user of the same name.
          '';
        };

        databases = lib.mkOption {
          type = lib.types.listOf dbName;
          default = [ ];
          example = [ "wordpress" ];
          description = ''
            Databases to dump one file each (`mysql/<name>.sql`); `[ ]` dumps everything with
            `--all-databases` into `mysql/all.sql`.
          '';
        };

        defaultsFile = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          example = "/run/agenix/mysql-backup.cnf";
          description = ''
            Option file with credentials (`--defaults-extra-file`), for a server that does not
            authenticate the dump's user by its socket. Give a path outside the Nix store.
          '';
        };

        socket = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          example = "/run/mysqld/mysqld.sock";
          description = "The server's socket (`--socket`); `null` for the client's default.";
        };

        binDir = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default =
            if config.services.mysql.enable or false then "${config.services.mysql.package}/bin" else null;
          defaultText = lib.literalExpression ''
            if config.services.mysql.enable then "''${config.services.mysql.package}/bin" else null
          '';
          example = lib.literalExpression ''"''${pkgs.mariadb}/bin"'';
          description = ''
            Directory holding `mariadb-dump` or `mysqldump`. `null` looks them up on `PATH`,
            which in the backup units holds only coreutils, findutils, grep, sed and systemd.
          '';
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = rendered.assertions;

    warnings =
      rendered.warnings
      ++ lib.optional (
        cfg.cloud.enable
        && cfg.protonDrive.enable
        && cfg.cloud.rcloneConfigFile == null
        && config ? age
        && !(config.age.secrets ? ${cfg.protonDrive.secretName})
      ) "hwc.system.services.backup.protonDrive.secretName: age.secrets.\"${cfg.protonDrive.secretName}\" is not declared, so the cloud push will find no rclone config.";

    environment.etc."hwc-backup/config.json".source = planFile;

    environment.systemPackages = [ cfg.package ];

    # The units create these themselves (StateDirectory/LogsDirectory); tmpfiles makes them
    # exist for backup-now and backup-status run from a shell before any unit ran.
    # The staging directory must exist before a unit starts, as it is one of their
    # ReadWritePaths (a missing one would stay read-only to the runner).
    systemd.tmpfiles.rules = [
      "d ${rendered.plan.stateDir} 0700 root root - -"
      "d ${rendered.plan.logDir} 0700 root root - -"
    ]
    ++ lib.optional rendered.dumps "d ${rendered.plan.databases.stagingDir} 0700 root root - -";

    # Unit names: see ../nix/render.nix (backup.timer -> backup.service, backup-local,
    # backup-cloud, backup-health-check, backup-verify, backup-failure@).
    systemd.services = lib.mapAttrs (_: softDefaults) rendered.units.services;
    systemd.timers = rendered.units.timers;

    system.checks = lib.optional (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) configCheck;
  };
}
