# `nix develop`: the package's build inputs plus what the tests and the formatters use.
{ pkgs, package }:
pkgs.mkShell {
  inputsFrom = [ package ];
  packages = [
    pkgs.cargo
    pkgs.clippy
    pkgs.rustfmt
    pkgs.rust-analyzer
    # tests/integration: nix.rs drives nix-instantiate and systemd-analyze, the exclude tests rsync.
    pkgs.nix
    pkgs.systemd
    pkgs.rsync
    pkgs.rclone
  ];
}
