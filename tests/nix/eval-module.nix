# Evaluates modules/backup.nix with nixpkgs' real lib.evalModules (the HWC_NIXPKGS_LIB test):
#
#   nix-instantiate --eval --strict --json tests/nix/eval-module.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' --arg case ./tests/nix/cases/x.nix
#
# `definitions` (an attrset) may stand in for `case`. pkgs is faked with the same store paths
# eval.nix uses, so the results can be compared with the pure render's.
{
  lib,
  case ? null,
  definitions ? import case,
  package ? "/nix/store/00000000000000000000000000000000-hwc-backup-0.1.0",
  # Extra modules, e.g. a stand-in for agenix's age.secrets.
  extraModules ? [ ],
}:
let
  fakeStore = "/nix/store/00000000000000000000000000000000";
  fakeDrv = name: outPath: mainProgram: {
    type = "derivation";
    inherit name outPath;
    meta = { inherit mainProgram; };
  };

  pkgs = {
    hwc-backup = fakeDrv "hwc-backup-0.1.0" package "hwc-backup";
    rclone = fakeDrv "rclone-1.70.0" "${fakeStore}-rclone-1.70.0" "rclone";
    openssh = fakeDrv "openssh-10.0p2" "${fakeStore}-openssh-10.0p2" "ssh";
    util-linux = fakeDrv "util-linux-2.41-bin" "${fakeStore}-util-linux-2.41-bin" "mount";
    getent = fakeDrv "getent-glibc-2.40" "${fakeStore}-getent-glibc-2.40" "getent";
    restic = fakeDrv "restic-0.18.0" "${fakeStore}-restic-0.18.0" "restic";
    systemd = fakeDrv "systemd-258" "${fakeStore}-systemd-258" "systemctl";
    btrfs-progs = fakeDrv "btrfs-progs-6.14" "${fakeStore}-btrfs-progs-6.14" "btrfs";
    sqlite = fakeDrv "sqlite-3.50.4-bin" "${fakeStore}-sqlite-3.50.4-bin" "sqlite3";
    lvm2 = fakeDrv "lvm2-2.03.31-bin" "${fakeStore}-lvm2-2.03.31-bin" "lvm";
    zfs = fakeDrv "zfs-user-2.3.3" "${fakeStore}-zfs-user-2.3.3" "zfs";
    writeShellScript = name: _text: "${fakeStore}-${name}";
    formats.json = _: {
      generate = name: value: {
        outPath = "${fakeStore}-${name}";
        plan = value;
      };
    };
    runCommand = name: _env: script: { inherit name script; };
    stdenv = {
      buildPlatform.canExecute = _: true;
      hostPlatform = { };
    };
  };

  eval = lib.evalModules {
    modules = [
      ./nixos-stub.nix
      ../../modules/backup.nix
      { _module.args.pkgs = pkgs; }
      definitions
    ] ++ extraModules;
  };
  inherit (eval) config;

  # The documented options (not the submodules' internal `_module.args`).
  hwcOptions = lib.filter (
    o: lib.hasPrefix "hwc.system.services.backup." o.name && !(o.internal or false) && (o.visible or true) != false
  ) (lib.optionAttrSetToDocList eval.options);
in
{
  plan = (config.environment.etc."hwc-backup/config.json" or { source.plan = null; }).source.plan;
  units = {
    inherit (config.systemd) services timers;
  };
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
  # Every option value, so that --strict type-checks all of them (the module system checks a
  # value only when something reads it).
  values = config.hwc.system.services.backup;
  tmpfiles = config.systemd.tmpfiles.rules;
  # The users that got authorized_keys entries (agent.*), with their entries.
  authorizedKeys = lib.mapAttrs (_: u: u.openssh.authorizedKeys.keys) (
    lib.filterAttrs (_: u: u.openssh.authorizedKeys.keys != [ ]) config.users.users
  );
  systemPackages = map toString config.environment.systemPackages;
  checks = map (c: c.name) config.system.checks;
  activation = lib.mapAttrs (_: a: a.text) config.system.activationScripts;
  options = map (o: {
    inherit (o) name type;
    hasDescription = (o.description or "") != "";
    hasExample = o ? example;
    default = o.default.text or null;
  }) hwcOptions;
}
