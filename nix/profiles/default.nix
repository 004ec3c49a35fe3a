# Service profiles: `hwc.system.services.backup.profiles.<name>`, presets for common NixOS
# services that bundle what a consistent backup of the service needs: its paths, its excludes,
# its database (a dump or a SQLite copy) and what holds it still (`local.quiesce`).
#
# Each profile is one file here, an attribute set of two functions:
#
#   options     { lib, config, ... } -> the options of `profiles.<name>` (an `enable` and the
#               service's facts, whose defaults read the real NixOS options, e.g.
#               `config.services.nextcloud.home`, with a fallback for the offline tests)
#   contributes profile -> what an enabled profile adds (builtins only, nix/render.nix):
#               { sources, excludePatterns, quiesce, postgresql, mysql, sqlite, services,
#               warnings }
#               (`postgresql`/`mysql`: null, or databases to dump, `[ ]` = all of them;
#               `services`: extra units, named `hwc-backup-…`)
#
# Adding one: write nix/profiles/<name>.nix and add its name below (README, "Service profiles").
{
  names = [
    "postgresql"
    "nextcloud"
    "home-assistant"
    "vaultwarden"
    "gitea"
    "forgejo"
  ];
  load = name: import (./. + "/${name}.nix");

  # What a profile adds when it adds nothing of that kind.
  none = {
    sources = [ ];
    excludePatterns = [ ];
    quiesce = { };
    postgresql = null;
    mysql = null;
    sqlite = [ ];
    services = { };
    warnings = [ ];
  };

  # The live files of a SQLite database, left out of the sources when its copy is taken.
  sqliteFiles = db: [
    db
    "${db}-wal"
    "${db}-shm"
    "${db}-journal"
  ];
}
