# Home Assistant: its configuration directory, with the recorder's SQLite database copied
# consistently (`databases.sqlite`) and its live files, the log and text-to-speech cache left out.
{
  options =
    { lib, config, ... }:
    {
      enable = lib.mkEnableOption "the Home Assistant profile: its configuration directory and a consistent copy of its database";

      configDir = lib.mkOption {
        type = lib.types.str;
        default = toString (config.services.home-assistant.configDir or "/var/lib/hass");
        defaultText = lib.literalExpression "config.services.home-assistant.configDir";
        example = "/srv/hass";
        description = "Home Assistant's configuration directory; backed up.";
      };

      database = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        defaultText = lib.literalExpression ''"''${configDir}/home-assistant_v2.db"'';
        example = "/var/lib/hass/recorder.db";
        description = ''
          The recorder's SQLite database, copied with {option}`databases.sqlite`; `null`: the
          recorder's default, `home-assistant_v2.db` in {option}`profiles.home-assistant.configDir`.
          `""`: none (a recorder on another database server).
        '';
      };
    };

  contributes =
    p:
    let
      profiles = import ./default.nix;
      db = if p.database == null then "${p.configDir}/home-assistant_v2.db" else p.database;
      dbs = if db == "" then [ ] else [ db ];
    in
    {
      sources = [ p.configDir ];
      excludePatterns = [
        "${p.configDir}/home-assistant.log*"
        "${p.configDir}/tts/"
      ] ++ builtins.concatMap profiles.sqliteFiles dbs;
      sqlite = dbs;
    };
}
