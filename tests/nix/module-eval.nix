# A flake check (nix/checks.nix): every valid case of tests/nix/cases, evaluated as part of a
# real NixOS configuration, passes its assertions, gives the warnings of its golden checks.json,
# and renders the golden plan, unit files and authorized_keys entries. This is what ties the
# golden files (written by tests/integration/nix.rs without nixpkgs) to what NixOS really
# produces. Store hashes and versions are normalised, and the environment NixOS gives every
# service (PATH, LOCALE_ARCHIVE, TZDIR) and blank lines are left out of the unit comparison.
{ pkgs, self }:
let
  inherit (pkgs) lib;

  caseNames = lib.filter (name: !lib.hasPrefix "invalid-" name) (
    map (lib.removeSuffix ".nix") (
      lib.attrNames (lib.filterAttrs (n: _: lib.hasSuffix ".nix" n) (builtins.readDir ./cases))
    )
  );

  evalCase =
    name:
    (import (pkgs.path + "/nixos/lib/eval-config.nix") {
      system = null;
      modules = [
        self.nixosModules.default
        (./cases + "/${name}.nix")
        {
          nixpkgs.pkgs = pkgs;
          boot.loader.grub.enable = false;
          fileSystems."/" = {
            device = "none";
            fsType = "tmpfs";
          };
          system.stateVersion = "26.05";
        }
      ];
    }).config;

  checkCase =
    name:
    let
      config = evalCase name;
      golden = ./golden + "/${name}";
      goldenUnits = lib.optionals (builtins.pathExists (golden + "/units")) (
        lib.attrNames (builtins.readDir (golden + "/units"))
      );
      ourUnits = lib.filter (n: lib.hasPrefix "backup" n) (lib.attrNames config.systemd.units);
      # An agent-only client has no plan; a client has authorized_keys entries.
      hasPlan = builtins.pathExists (golden + "/plan.json");
      hasKeys = builtins.pathExists (golden + "/authorized-keys.json");
      authorizedKeys = lib.mapAttrs (_: u: u.openssh.authorizedKeys.keys) (
        lib.filterAttrs (_: u: u.openssh.authorizedKeys.keys != [ ]) config.users.users
      );
      ours = lib.filter (lib.hasInfix "hwc.system.services.backup");
      failed = ours (map (a: a.message) (lib.filter (a: !a.assertion) config.assertions));
      ourWarnings = ours config.warnings;
      unitText = file: builtins.unsafeDiscardStringContext config.systemd.units.${file}.text;
    in
    assert lib.assertMsg (failed == [ ]) "${name}: failed assertions: ${toString failed}";
    assert lib.assertMsg (ourUnits == goldenUnits)
      "${name}: units ${toString ourUnits}, golden ${toString goldenUnits}";
    ''
      echo "== ${name}"
      ${lib.optionalString hasPlan ''
        jq -S . ${config.environment.etc."hwc-backup/config.json".source} | normalise > actual
        jq -S . ${golden}/plan.json | normalise > expected
        diff -u expected actual
      ''}
      ${lib.optionalString (!hasPlan) ''
        test ${lib.boolToString (!(config.environment.etc ? "hwc-backup/config.json"))} = true
      ''}

      echo ${lib.escapeShellArg (builtins.toJSON authorizedKeys)} | jq -S . | normalise > actual
      ${if hasKeys then "jq -S . ${golden}/authorized-keys.json" else "echo {}"} | normalise > expected
      diff -u expected actual

      echo ${lib.escapeShellArg (builtins.toJSON ourWarnings)} | jq -S . > actual
      jq -S .warnings ${golden}/checks.json > expected
      diff -u expected actual

      ${lib.concatMapStrings (file: ''
        printf '%s\n' ${lib.escapeShellArg (unitText file)} | unitLines > actual
        unitLines < ${golden}/units/${file} > expected
        diff -u expected actual
      '') goldenUnits}
    '';
in
pkgs.runCommand "hwc-backup-module-eval"
  {
    nativeBuildInputs = [
      pkgs.jq
      pkgs.diffutils
    ];
  }
  ''
    normalise() {
      sed -E 's#/nix/store/[0-9a-z]{32}-#/nix/store/HASH-#g
              s#(hwc-backup|rclone|openssh|util-linux|restic|systemd|btrfs-progs|sqlite|lvm2|zfs-user)-[0-9][^/" ]*#\1-VERSION#g'
    }
    unitLines() {
      grep -vE '^(Environment="(PATH|LOCALE_ARCHIVE|TZDIR)=.*)?$' | normalise
    }
    ${lib.concatMapStrings checkCase caseNames}
    touch $out
  ''
