# Nextcloud: its home (config, apps from the app store) and data directory, its database (a
# PostgreSQL or MySQL dump, or a copy of its SQLite file), and maintenance mode on for the
# instant of the filesystem snapshots.
#
# Maintenance mode rides on `local.quiesce`: the unit `hwc-backup-nextcloud-online.service` is
# active while Nextcloud is out of maintenance mode (it runs `nextcloud-occ maintenance:mode
# --off` when started and `--on` when stopped), and is quiesced with mode "stop". So the runner
# turns maintenance mode on right before the snapshots and off right after they exist, with
# its hard timeout, and the safety timer turns it off again should the run die.
{
  options =
    { lib, config, ... }:
    let
      nc = config.services.nextcloud or { };
    in
    {
      enable = lib.mkEnableOption "the Nextcloud profile: its directories, its database and maintenance mode around the snapshot";

      home = lib.mkOption {
        type = lib.types.str;
        default = nc.home or "/var/lib/nextcloud";
        defaultText = lib.literalExpression "config.services.nextcloud.home";
        example = "/srv/nextcloud";
        description = "Nextcloud's home (apps from the app store); backed up.";
      };

      datadir = lib.mkOption {
        type = lib.types.str;
        default = nc.datadir or (nc.home or "/var/lib/nextcloud");
        defaultText = lib.literalExpression "config.services.nextcloud.datadir";
        example = "/mnt/nextcloud-data";
        description = "Nextcloud's data directory (`config/` and the users' files in `data/`); backed up.";
      };

      dbtype = lib.mkOption {
        type = lib.types.enum [
          "sqlite"
          "pgsql"
          "mysql"
        ];
        default = nc.config.dbtype or "sqlite";
        defaultText = lib.literalExpression "config.services.nextcloud.config.dbtype";
        example = "pgsql";
        description = ''
          The database: `pgsql` and `mysql` are dumped (`databases.postgresql`/`databases.mysql`),
          `sqlite` is copied from `<datadir>/data/<dbname>.db` (`databases.sqlite`).
        '';
      };

      dbname = lib.mkOption {
        type = lib.types.strMatching "[^./][^/]*";
        default = nc.config.dbname or "nextcloud";
        defaultText = lib.literalExpression "config.services.nextcloud.config.dbname";
        example = "cloud";
        description = "The database's name.";
      };

      maintenanceMode = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = ''
          Put Nextcloud in maintenance mode for the instant of the filesystem snapshots (the
          whole walk without them), through the quiesced unit
          `hwc-backup-nextcloud-online.service`. Started at boot after `nextcloud-setup.service`,
          that unit takes Nextcloud out of maintenance mode.
        '';
      };

      occ = lib.mkOption {
        type = lib.types.nullOr lib.types.package;
        # Only an enabled Nextcloud has one (its package has no default).
        default = if nc.enable or false then nc.occ else null;
        defaultText = lib.literalExpression "if config.services.nextcloud.enable then config.services.nextcloud.occ else null";
        example = lib.literalExpression "config.services.nextcloud.occ";
        description = "The `nextcloud-occ` program of this instance (needed by {option}`profiles.nextcloud.maintenanceMode`).";
      };

      credentials = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = config.systemd.services.nextcloud-cron.serviceConfig.LoadCredential or [ ];
        defaultText = lib.literalExpression "config.systemd.services.nextcloud-cron.serviceConfig.LoadCredential";
        example = [ "dbpass:/run/agenix/nextcloud-db" ];
        description = "`LoadCredential=` entries `nextcloud-occ` needs (the database password), as Nextcloud's own units load them.";
      };
    };

  contributes =
    p:
    let
      profiles = import ./default.nix;
      sqliteDb = "${p.datadir}/data/${p.dbname}.db";
      occ = "${toString p.occ}/bin/nextcloud-occ";
      online = "hwc-backup-nextcloud-online";
      maintenance = p.maintenanceMode && p.occ != null;
    in
    {
      sources = [ p.home ] ++ (if p.datadir != p.home then [ p.datadir ] else [ ]);
      # Previews are generated again on demand.
      excludePatterns = [
        "${p.datadir}/data/appdata_*/preview/"
      ] ++ (if p.dbtype == "sqlite" then profiles.sqliteFiles sqliteDb else [ ]);
      postgresql = if p.dbtype == "pgsql" then [ p.dbname ] else null;
      mysql = if p.dbtype == "mysql" then [ p.dbname ] else null;
      sqlite = if p.dbtype == "sqlite" then [ sqliteDb ] else [ ];
      warnings =
        if p.maintenanceMode && p.occ == null then
          [
            "hwc.system.services.backup.profiles.nextcloud.maintenanceMode is on but profiles.nextcloud.occ is null (services.nextcloud is not enabled here?): Nextcloud is backed up without maintenance mode."
          ]
        else
          [ ];
      quiesce = if maintenance then { "${online}.service".mode = "stop"; } else { };
      services =
        if maintenance then
          {
            ${online} = {
              description = "Nextcloud out of maintenance mode (stopped by backups for the instant of the snapshot)";
              wantedBy = [ "multi-user.target" ];
              after = [ "nextcloud-setup.service" ];
              requires = [ "nextcloud-setup.service" ];
              serviceConfig = {
                Type = "oneshot";
                RemainAfterExit = true;
                User = "nextcloud";
                ExecStart = "${occ} maintenance:mode --off";
                ExecStop = "${occ} maintenance:mode --on";
                TimeoutSec = "90s";
                PrivateTmp = true;
                NoNewPrivileges = true;
                ProtectSystem = "full";
                ProtectHome = true;
                ProtectKernelTunables = true;
                ProtectKernelModules = true;
                ProtectKernelLogs = true;
                ProtectControlGroups = true;
                ProtectClock = true;
                ProtectHostname = true;
                RestrictRealtime = true;
                RestrictNamespaces = true;
                RestrictSUIDSGID = true;
                LockPersonality = true;
                PrivateDevices = true;
                CapabilityBoundingSet = [ "" ];
                SystemCallArchitectures = "native";
                SystemCallFilter = [ "@system-service" ];
                RestrictAddressFamilies = [
                  "AF_UNIX"
                  "AF_INET"
                  "AF_INET6"
                ];
              } // (if p.credentials != [ ] then { LoadCredential = p.credentials; } else { });
            };
          }
        else
          { };
    };
}
