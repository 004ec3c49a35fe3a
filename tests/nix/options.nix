# The names of the options modules/backup.nix declares, read through stub-lib.nix (Nix 2.8, no
# nixpkgs), for the test that README.md documents each of them.
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
      if decl._type or null == "option" then [ "${prefix}${name}" ] else walk "${prefix}${name}." decl
    ) (builtins.attrNames decls);
in
walk "" module.options.hwc.system.services.backup
