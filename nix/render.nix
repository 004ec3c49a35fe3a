# The pure half of the NixOS module: option values in, JSON plan and unit descriptions out.
#
# Written with `builtins` only (no nixpkgs lib) so that Debian's Nix 2.8 can evaluate it with
# `nix-instantiate --eval --strict --json` on machines without nixpkgs; the tests in
# tests/integration/nix.rs do exactly that. modules/backup.nix wires the result verbatim:
#
#   plan        -> /etc/hwc-backup/config.json (the contract of docs/plan.md)
#   units       -> systemd.services.<name> / systemd.timers.<name>, in the shape of those options
#   assertions  -> assertions ({ assertion, message } pairs; the module adds only agenix checks),
#                  those of the server half with `enable`, those of the agent with `agent.enable`
#   warnings    -> warnings (likewise)
#   protonOffsites -> the offsites whose rclone config is protonDrive's agenix secret (the
#                  module warns when that secret is not declared)
#   dumps       -> whether a database dump is enabled (the module then creates the staging
#                  directory with tmpfiles)
#   agent       -> { authorizedKeys }: the `authorized_keys` entries for `agent.user`
#   profileUnits -> systemd.services.<name> of the service profiles (nix/profiles/)
#
# Unit names (from the seed README): backup.timer -> backup.service (the whole run),
# backup-local.service, backup-cloud.service, backup-health-check.timer/.service,
# backup-verify.timer/.service, backup-host-<name>.timer/.service per pulled host,
# backup-offsite-<name>.timer/.service and backup-offsite-check-<name>.timer/.service per
# offsite with its own schedule, backup-on-mount.service (local.runOnMount), and the
# template backup-failure@.service that every other service names in OnFailure=, so a failure
# is reported even when the runner was killed.
{
  # The values of `hwc.system.services.backup` (every option, defaults filled in).
  cfg,
  # The hwc-backup package: anything that interpolates to its store path.
  package,
  # name -> text -> absolute path of an executable running `text` (pkgs.writeShellScript).
  writeHook ? name: text: throw "render.nix: writeHook is needed to render ${name}",
  # Absolute path of the rclone binary, or null to find it on PATH.
  rclone ? null,
  # Absolute path of the ssh client that pulls hosts, or null to find it on PATH.
  ssh ? null,
  # util-linux's flock(1), which keeps pulls within hostConcurrency; systemd looks a bare name
  # up in its own PATH (/usr/bin, …), which NixOS does not have.
  flock ? "flock",
  # Absolute path of the restic binary the offsites use, or null to find it on PATH.
  restic ? null,
  # systemd-inhibit(1), which keeps the machine awake during a run (inhibitSleep); systemd
  # looks a bare name up in its own PATH, as for flock.
  systemdInhibit ? "systemd-inhibit",
  # btrfs-progs (its store path), whose btrfs the plan names for local.sourceSnapshots; null
  # finds btrfs on PATH.
  btrfsProgs ? null,
  # The sqlite3 program that copies `databases.sqlite` (and the profiles' SQLite databases);
  # null finds it on PATH.
  sqlite3 ? null,
  # The lvm program (lvm2) for LVM source snapshots (local.sourceSnapshots "lvm" or "auto"),
  # an absolute path; null finds lvm on PATH.
  lvm ? null,
  # The zfs program for ZFS source snapshots, an absolute path, or null: "zfs" finds it on
  # PATH, "auto" then takes no ZFS snapshot through the module (the module passes it only
  # where ZFS is enabled, so that other machines' plans do not pull ZFS in).
  zfs ? null,
  # Packages on every service's PATH (NixOS's `path`, to which NixOS adds coreutils, findutils,
  # gnugrep, gnused and systemd): those whose programs the runner starts by name, util-linux
  # (ionice for the snapshot threads' idle I/O class, blkid for a btrfs drive's UUID) and getent
  # (the database dumps' users). Everything else is named by its store path.
  path ? [ ],
  # Where the agenix secret `name` is decrypted to.
  secretPath ? name: "/run/agenix/${name}",
  # Where the module installs the plan; every unit passes it with --config.
  configFile ? "/etc/hwc-backup/config.json",
}:
let
  # The rendering is split by concern (nix/render/*.nix); each part is a function of the
  # whole context, so a part uses any other part's bindings by name. Nix's laziness makes
  # the fixed point below well defined: no part forces a binding that depends on itself.
  ctx =
    {
      inherit cfg package writeHook rclone ssh flock secretPath configFile restic systemdInhibit btrfsProgs sqlite3 lvm zfs;
    }
    // import ./render/common.nix ctx
    // import ./render/schedule.nix ctx
    // import ./render/plan.nix ctx
    // import ./render/profiles.nix ctx
    // import ./render/units.nix ctx
    // import ./render/pull-units.nix ctx
    // import ./render/offsite.nix ctx
    // import ./render/checks.nix ctx
    // import ./render/agent.nix ctx
    ;
  inherit (ctx)
    plan
    dumps
    optionals
    optionalAttrs
    agentCfg
    serverAssertions
    agentAssertions
    serverWarnings
    services
    profileServices
    timers
    authorizedKeys
    protonOffsites
    ;
in
{
  inherit plan dumps protonOffsites;
  # Each half's checks only when it is enabled, as the module applies them.
  assertions = optionals cfg.enable serverAssertions ++ optionals agentCfg.enable agentAssertions;
  warnings = optionals cfg.enable serverWarnings;
  units = {
    services =
      if path == [ ] then services else builtins.mapAttrs (_: s: s // { path = (s.path or [ ]) ++ path; }) services;
    inherit timers;
  };
  # The service profiles' own units (nix/profiles/), `systemd.services.<name>` definitions
  # named `hwc-backup-…`: not runs of the runner, but what it quiesces (Nextcloud's
  # maintenance mode).
  profileUnits = optionalAttrs cfg.enable profileServices;
  agent = {
    inherit authorizedKeys;
  };
  # system.activationScripts.hwc-backup-timers (modules/backup.nix; "" without timers): on a
  # switch or test (NIXOS_ACTION), renew the stamps of this module's timers, so that a timer
  # restarted because it changed does not fire a backup at once for a stale stamp
  # (Persistent=true); the next elapse comes as scheduled. The VM suite runs this very text.
  activation =
    let
      quote = s: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] s}'";
      names = map (t: quote "${t}.timer") (builtins.attrNames timers);
    in
    if timers == { } then
      ""
    else
      ''
        case "''${NIXOS_ACTION:-}" in
          switch | test)
            stamps=/var/lib/systemd/timers
            for timer in ${builtins.concatStringsSep " " names}; do
              touch -c "$stamps/stamp-$timer" 2>/dev/null || true
            done
            ;;
        esac
      '';
}
