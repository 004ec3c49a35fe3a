{
  description = "hwc-backup: hard-linked, rotated, verifiable snapshots for NixOS";

  # The lock pins the nixos-26.05 branch; `owner` is spelled as in flake.lock.
  inputs.nixpkgs.url = "github:nixos/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      eachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: {
        hwc-backup = final.callPackage ./nix/package.nix { };
      };

      packages = eachSystem (pkgs: rec {
        hwc-backup = pkgs.callPackage ./nix/package.nix { };
        default = hwc-backup;
      });

      # The module itself knows nothing about flakes: its `package` defaults to
      # pkgs.hwc-backup. Without that attribute (no overlay), the package is built with the
      # user's own pkgs, never with this flake's nixpkgs input, so a user who does not set
      # `inputs.hwc-backup.inputs.nixpkgs.follows` gets no second nixpkgs closure.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./modules/backup.nix ];
          hwc.system.services.backup.package = lib.mkDefault (
            pkgs.hwc-backup or (pkgs.callPackage ./nix/package.nix { })
          );
        };
      nixosModules.hwc-backup = self.nixosModules.default;

      # `nix fmt`: the RFC 166 style that nixpkgs uses (named `nixfmt` since nixos-25.11).
      formatter = eachSystem (pkgs: pkgs.nixfmt);

      checks = eachSystem (pkgs: import ./nix/checks.nix { inherit pkgs self; });

      devShells = eachSystem (pkgs: {
        default = import ./nix/devshell.nix {
          inherit pkgs;
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      });
    };
}
