# Fills `hwc.system.services.backup` from a test case's definitions the way the module system
# would, offline (Debian's Nix 2.8, no nixpkgs): option defaults and types come from
# modules/backup.nix itself, read through stub-lib.nix; unknown options and values of the wrong
# type abort the evaluation. Used by tests/nix/eval.nix and tests/systemd/render-input.nix.
{ definitions, package }:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    isAttrs
    listToAttrs
    map
    ;

  module = import ../../modules/backup.nix {
    lib = import ./stub-lib.nix;
    pkgs.hwc-backup = package;
    # The NixOS facts the service profiles' defaults read (nix/profiles/), as the case sets them.
    config = {
      networking.hostName = definitions.networking.hostName or "nixos";
      services = definitions.services or { };
      system = definitions.system or { };
      systemd = definitions.systemd or { };
    };
  };

  # Walk the declarations: an option takes the case's value (checked) or its default; a group
  # recurses; a case value for a name that is not declared is an error. An attribute set of
  # submodules (hosts.<name>) has each entry filled from the submodule's own declarations.
  fill =
    loc: decl: value:
    let
      where = concatStringsSep "." loc;
      entries =
        attrs:
        if decl.type.elemType.module or null == null then
          attrs
        else
          builtins.mapAttrs (
            name: entry: fill (loc ++ [ name ]) (decl.type.elemType.module { inherit name; }).options { v = entry; }
          ) attrs;
    in
    if decl._type or null == "option" then
      if value == null && !(decl ? default) then
        throw "${where} has no default and the case does not set it"
      else if value == null then
        entries decl.default
      else if decl.type.check value.v then
        entries value.v
      else
        throw "${where}: ${builtins.toJSON value.v} is not a ${decl.type.description}"
    else
      let
        given = if value == null then { } else value.v;
        unknown = filter (n: !(decl ? ${n})) (attrNames given);
      in
      if !(isAttrs given) then
        throw "${where} is a group of options, not a value"
      else if unknown != [ ] then
        throw "${where}: no such option ${concatStringsSep ", " unknown}"
      else
        listToAttrs (
          map (n: {
            name = n;
            value = fill (loc ++ [ n ]) decl.${n} (if given ? ${n} then { v = given.${n}; } else null);
          }) (attrNames decl)
        );

  cfg = fill [ "hwc" "system" "services" "backup" ] module.options.hwc.system.services.backup {
    v = definitions.hwc.system.services.backup or { };
  };

in
cfg
