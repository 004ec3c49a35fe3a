# Renders one test case offline (Nix 2.8, no nixpkgs):
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix --arg case ./tests/nix/cases/x.nix
#
# A case is written like a NixOS module's definitions ({ networking.hostName = …;
# hwc.system.services.backup = { … }; }), so the HWC_NIXPKGS_LIB test can also feed it to the
# real module. Option defaults and types come from modules/backup.nix itself, read through
# stub-lib.nix; unknown options and values of the wrong type abort the evaluation.
{
  case,
  package ? "/nix/store/00000000000000000000000000000000-hwc-backup-0.1.0",
  # The pull units' flock(1); the systemd-analyze test passes one that exists.
  flock ? "/nix/store/00000000000000000000000000000000-util-linux-2.41-bin/bin/flock",
  # systemd-inhibit(1) around the long-running units (inhibitSleep); likewise.
  systemdInhibit ? "/nix/store/00000000000000000000000000000000-systemd-258/bin/systemd-inhibit",
}:
let
  inherit (builtins) filter map;

  definitions = import case;
  fakeStore = "/nix/store/00000000000000000000000000000000";

  cfg = import ./fill-options.nix { inherit definitions package; };

  rendered = import ../../nix/render.nix {
    inherit cfg package flock systemdInhibit;
    restic = "${fakeStore}-restic-0.18.0/bin/restic";
    writeHook = name: _text: "${fakeStore}-${name}";
    rclone = "${fakeStore}-rclone-1.70.0/bin/rclone";
    ssh = "${fakeStore}-openssh-10.0p2/bin/ssh";
    btrfsProgs = "${fakeStore}-btrfs-progs-6.14";
    sqlite3 = "${fakeStore}-sqlite-3.50.4-bin/bin/sqlite3";
    lvm = "${fakeStore}-lvm2-2.03.31-bin/bin/lvm";
    # As the module: only where ZFS is used.
    zfs = if cfg.local.sourceSnapshots == "zfs" then "${fakeStore}-zfs-user-2.3.3/bin/zfs" else null;
    path = [
      "${fakeStore}-util-linux-2.41-bin"
      "${fakeStore}-getent-glibc-2.40"
    ];
  };
in
# What the module makes of it: the plan and units only with `enable`, the authorized_keys
# entries only with `agent.enable`.
{
  plan = if cfg.enable then rendered.plan else null;
  units =
    if cfg.enable then
      rendered.units
    else
      {
        services = { };
        timers = { };
      };
  inherit (rendered) warnings profileUnits;
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) rendered.assertions);
  authorizedKeys = if cfg.agent.enable then { ${cfg.agent.user} = rendered.agent.authorizedKeys; } else { };
}
