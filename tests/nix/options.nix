# The names of the options modules/backup.nix declares, read through stub-lib.nix (Nix 2.8, no
# nixpkgs), for the test that README.md documents each of them; the options of an attribute set
# of submodules are named as NixOS's manual names them (`hosts.<name>.address`).
let
  module = import ../../modules/backup.nix {
    lib = import ./stub-lib.nix;
    pkgs = { };
    config = { };
  };
  walk =
    prefix: decls:
    builtins.concatMap (
      name:
      let
        decl = decls.${name};
      in
      if decl._type or null == "option" then
        [ "${prefix}${name}" ]
        # An attribute set of submodules: its entries' options too, as `hosts.<name>.address`.
        ++ (
          if decl.type.elemType.module or null == null then
            [ ]
          else
            walk "${prefix}${name}.<name>." (decl.type.elemType.module { name = "<name>"; }).options
        )
      else
        walk "${prefix}${name}." decl
    ) (builtins.attrNames decls);
in
walk "" module.options.hwc.system.services.backup
