# Gitea and Forgejo (one module each, nix/profiles/gitea.nix and forgejo.nix, alike): the
# state directory (repositories, LFS, attachments, app.ini), the database (SQLite copied,
# PostgreSQL or MySQL dumped) and the logs left out.
name:
let
  Name = if name == "gitea" then "Gitea" else "Forgejo";
in
{
  options =
    { lib, config, ... }:
    let
      svc = config.services.${name} or { };
      stateDir = svc.stateDir or "/var/lib/${name}";
    in
    {
      enable = lib.mkEnableOption "the ${Name} profile: its state directory and its database";

      stateDir = lib.mkOption {
        type = lib.types.str;
        default = toString stateDir;
        defaultText = lib.literalExpression "config.services.${name}.stateDir";
        example = "/srv/${name}";
        description = "${Name}'s state directory (repositories, LFS objects, attachments, `custom/conf/app.ini`); backed up.";
      };

      database = {
        type = lib.mkOption {
          type = lib.types.enum [
            "sqlite3"
            "mysql"
            "postgres"
          ];
          default = svc.database.type or "sqlite3";
          defaultText = lib.literalExpression "config.services.${name}.database.type";
          example = "postgres";
          description = "The database: `sqlite3` is copied, `postgres` and `mysql` are dumped.";
        };

        name = lib.mkOption {
          type = lib.types.strMatching "[^./][^/]*";
          default = svc.database.name or name;
          defaultText = lib.literalExpression "config.services.${name}.database.name";
          example = "git";
          description = "The PostgreSQL or MySQL database to dump.";
        };

        path = lib.mkOption {
          type = lib.types.str;
          default = toString (svc.database.path or "${stateDir}/data/${name}.db");
          defaultText = lib.literalExpression "config.services.${name}.database.path";
          example = "/var/lib/${name}/data/${name}.db";
          description = "The SQLite database file, copied with {option}`databases.sqlite`.";
        };
      };
    };

  contributes =
    p:
    let
      profiles = import ./default.nix;
      t = p.database.type;
    in
    {
      sources = [ p.stateDir ];
      excludePatterns = [ "${p.stateDir}/log/" ] ++ (if t == "sqlite3" then profiles.sqliteFiles p.database.path else [ ]);
      sqlite = if t == "sqlite3" then [ p.database.path ] else [ ];
      postgresql = if t == "postgres" then [ p.database.name ] else null;
      mysql = if t == "mysql" then [ p.database.name ] else null;
    };
}
