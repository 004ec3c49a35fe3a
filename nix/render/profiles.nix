# The service profiles (`profiles.<name>`, nix/profiles/): what the enabled ones add to the
# sources, excludes, quiesced units, database dumps, SQLite copies and units.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
let
  profileSet = import ../profiles;
  enabledProfiles = filter (n: cfg.profiles.${n}.enable) profileSet.names;
  contributions = map (
    n: profileSet.none // (profileSet.load n).contributes cfg.profiles.${n}
  ) enabledProfiles;
  fromProfiles = field: concatMap (c: c.${field}) contributions;
  merged = field: builtins.foldl' (a: c: a // c.${field}) { } contributions;
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];

  # A dump engine is on when the user or a profile wants it; `[ ]` (everything) from either
  # wins over a list of names.
  wanted =
    engine: own:
    let
      lists = filter (l: l != null) (map (c: c.${engine}) contributions);
    in
    {
      enable = own.enable || lists != [ ];
      databases =
        if (own.enable && own.databases == [ ]) || any (l: l == [ ]) lists then
          [ ]
        else
          unique ((if own.enable then own.databases else [ ]) ++ concatLists lists);
    };
in
{
  inherit enabledProfiles unique;
  pgWanted = wanted "postgresql" db.postgresql;
  mysqlWanted = wanted "mysql" db.mysql;
  sqlitePaths = unique (map toString db.sqlite ++ fromProfiles "sqlite");
  # The profiles' directories, unless a source of the user's (or an earlier profile's) holds them.
  profileSources = builtins.foldl' (
    acc: s: if any (o: isWithin s o) (map toString local.sources ++ acc) then acc else acc ++ [ s ]
  ) [ ] (fromProfiles "sources");
  profileExcludes = fromProfiles "excludePatterns";
  quiesceUnits = local.quiesce // merged "quiesce";
  profileServices = merged "services";
  profileWarnings = fromProfiles "warnings";
}
