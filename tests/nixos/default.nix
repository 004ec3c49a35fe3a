# NixOS VM tests, one scenario per file, each a `runNixOSTest` module; nix/checks.nix exposes
# them as checks.<system>.vm-<name>. Run one with
#   nix build .#checks.x86_64-linux.vm-basic -L
# or interactively with
#   nix run .#checks.x86_64-linux.vm-basic.driverInteractive
{ pkgs, self }:
let
  runTest =
    file:
    pkgs.testers.runNixOSTest {
      imports = [ file ];
      globalTimeout = 20 * 60;
      defaults.imports = [
        self.nixosModules.default
        ./common.nix
      ];
    };
in
{
  basic = runTest ./basic.nix;
  retention = runTest ./retention.nix;
  unmounted = runTest ./unmounted.nix;
  switch = runTest ./switch.nix;
  databases = runTest ./databases.nix;
  persistent = runTest ./persistent.nix;
  ac-power = runTest ./ac-power.nix;
  mount = runTest ./mount.nix;
  stale = runTest ./stale.nix;
  corruption = runTest ./corruption.nix;
  pull = runTest ./pull.nix;
  offsite = runTest ./offsite.nix;
  zfs = runTest ./zfs.nix;
}
