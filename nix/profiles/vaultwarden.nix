# Vaultwarden: its data folder (attachments, sends, keys), its SQLite database copied
# consistently into the staging directory (or its PostgreSQL/MySQL database dumped), and the
# icon cache left out.
{
  options =
    { lib, config, ... }:
    let
      vw = config.services.vaultwarden or { };
      # The module's data folder: DATA_FOLDER when set, else the state directory, which is
      # bitwarden_rs for systems older than 24.11.
      stateVersion = config.system.stateVersion or "24.11";
      stateDir = if builtins.compareVersions stateVersion "24.11" < 0 then "bitwarden_rs" else "vaultwarden";
    in
    {
      enable = lib.mkEnableOption "the Vaultwarden profile: its data folder and a consistent copy of its database";

      dataDir = lib.mkOption {
        type = lib.types.str;
        default =
          let
            set = vw.config.DATA_FOLDER or null;
          in
          if set == null then "/var/lib/${stateDir}" else toString set;
        defaultText = lib.literalExpression ''
          config.services.vaultwarden.config.DATA_FOLDER or "/var/lib/vaultwarden" ("/var/lib/bitwarden_rs" before system.stateVersion 24.11)
        '';
        example = "/srv/vaultwarden";
        description = "Vaultwarden's data folder; backed up.";
      };

      dbBackend = lib.mkOption {
        type = lib.types.enum [
          "sqlite"
          "mysql"
          "postgresql"
        ];
        default = vw.dbBackend or "sqlite";
        defaultText = lib.literalExpression "config.services.vaultwarden.dbBackend";
        example = "postgresql";
        description = "The database: `sqlite` (`db.sqlite3` in the data folder) is copied, the others dumped.";
      };

      databaseName = lib.mkOption {
        type = lib.types.strMatching "[^./][^/]*";
        default = "vaultwarden";
        example = "bitwarden";
        description = "The PostgreSQL or MySQL database to dump (not used with `sqlite`).";
      };
    };

  contributes =
    p:
    let
      profiles = import ./default.nix;
      db = "${p.dataDir}/db.sqlite3";
      sqlite = p.dbBackend == "sqlite";
    in
    {
      sources = [ p.dataDir ];
      excludePatterns = [ "${p.dataDir}/icon_cache/" ] ++ (if sqlite then profiles.sqliteFiles db else [ ]);
      sqlite = if sqlite then [ db ] else [ ];
      postgresql = if p.dbBackend == "postgresql" then [ p.databaseName ] else null;
      mysql = if p.dbBackend == "mysql" then [ p.databaseName ] else null;
    };
}
