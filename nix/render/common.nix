# Helpers every part uses: builtins, the option groups, fixed places, path predicates.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
  inherit (builtins)
    any
    all
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elemAt
    filter
    genList
    head
    length
    listToAttrs
    mapAttrs
    match
    replaceStrings
    ;

  local = cfg.local;
  notif = cfg.notifications;
  db = cfg.databases;

  # Fixed places: the runner's JSON-lines logs (the seed's /var/log/backup) and its state.
  logDir = "/var/log/backup";
  stateDir = "/var/lib/hwc-backup";
  cacheDir = "/var/cache/hwc-backup";

  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: as: if cond then as else { };
  # Path options may be given as Nix path values; toString keeps them out of the store.
  pathOrNull = p: if p == null then null else toString p;

  # ----------------------------------------------------------------------------------------------
  # Paths
  # ----------------------------------------------------------------------------------------------

  # Absolute, no empty, `.` or `..` component, no trailing slash (except "/" itself).
  isCleanAbsolute =
    p:
    let
      s = toString p;
    in
    s == "/"
    || (match "(/[^/]+)+" s != null && match ".*/\\.\\.?(/.*)?" s == null);

  # `a` is `b` or lies below it.
  isWithin =
    a: b:
    let
      sa = toString a;
      sb = toString b;
    in
    sa == sb || sb == "/" || match "${escapeRegex sb}/.*" sa != null;

  escapeRegex =
    s:
    builtins.replaceStrings
      [ "\\" "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" ]
      [ "\\\\" "\\." "\\*" "\\+" "\\?" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\|" "\\^" "\\$" ]
      s;

  # The strings that occur more than once in `xs`, each named once.
  duplicates =
    xs:
    let
      groups = builtins.groupBy (x: x) xs;
    in
    filter (x: length groups.${x} > 1) (attrNames groups);


  optionals = cond: xs: if cond then xs else [ ];
}
