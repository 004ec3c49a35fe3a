# PostgreSQL: the built-in dump (`databases.postgresql`) of the whole cluster or of the listed
# databases, and the server's live data directory left out (a copy of it taken while the
# server runs is not a database; the dump is).
{
  options =
    { lib, config, ... }:
    {
      enable = lib.mkEnableOption "the PostgreSQL profile: dump the cluster before every snapshot and leave its live data directory out";

      databases = lib.mkOption {
        type = lib.types.listOf (lib.types.strMatching "[^./][^/]*");
        default = [ ];
        example = [ "nextcloud" ];
        description = ''
          Databases to dump (`pg_dump -Fc` each, plus the roles); `[ ]` dumps the whole cluster
          with `pg_dumpall`. Added to {option}`databases.postgresql.databases`.
        '';
      };

      dataDir = lib.mkOption {
        type = lib.types.str;
        default = config.services.postgresql.dataDir or "/var/lib/postgresql";
        defaultText = lib.literalExpression "config.services.postgresql.dataDir";
        example = "/var/lib/postgresql/16";
        description = "The server's data directory, left out of the sources (its dump is what is backed up).";
      };
    };

  contributes = p: {
    postgresql = p.databases;
    excludePatterns = [ "${p.dataDir}/" ];
  };
}
