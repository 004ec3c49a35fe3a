# `nix flake check`: the package (with its unit tests), the dev shell, the module evaluated in
# real NixOS configurations against the golden files, and every VM test in tests/nixos.
{ pkgs, self }:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
in
{
  package = self.packages.${system}.default;
  devShell = self.devShells.${system}.default;
  module-eval = import ../tests/nix/module-eval.nix { inherit pkgs self; };
}
// lib.mapAttrs' (name: test: lib.nameValuePair "vm-${name}" test) (
  import ../tests/nixos { inherit pkgs self; }
)
