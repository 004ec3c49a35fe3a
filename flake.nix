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
      # pkgs.hwc-backup; this only points that default at the package built here.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./modules/backup.nix ];
          hwc.system.services.backup.package = lib.mkDefault (
            self.packages.${pkgs.stdenv.hostPlatform.system}.default
              or (pkgs.callPackage ./nix/package.nix { })
          );
        };
      nixosModules.hwc-backup = self.nixosModules.default;

      checks = eachSystem (pkgs: import ./nix/checks.nix { inherit pkgs self; });

      devShells = eachSystem (pkgs: {
        default = import ./nix/devshell.nix {
          inherit pkgs;
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      });
    };
}
