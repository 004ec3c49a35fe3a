# Evaluates flake.nix's outputs with nixpkgs' real lib and a stand-in for the rest of nixpkgs
# (the HWC_NIXPKGS_LIB test): which systems and outputs exist, that the overlay adds the
# package, and that nixosModules.default points the module's `package` at packages.<system>.
{ lib }:
let
  flake = import ../../flake.nix;
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  fakeDrv = name: system: {
    type = "derivation";
    inherit name system;
    outPath = "/nix/store/00000000000000000000000000000000-${name}-${system}";
  };
  fakePkgs = system: {
    inherit lib;
    stdenv.hostPlatform.system = system;
    callPackage = _fn: _args: fakeDrv "hwc-backup" system;
    mkShell = _args: fakeDrv "shell" system;
    testers.runNixOSTest = _test: fakeDrv "vm-test" system;
    rclone = fakeDrv "rclone" system // { meta.mainProgram = "rclone"; };
    nixfmt = fakeDrv "nixfmt" system;
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs systems fakePkgs;
  };
  self = flake.outputs { inherit self nixpkgs; };

  pkgs = fakePkgs "aarch64-linux";
  module = lib.evalModules {
    modules = [
      ./nixos-stub.nix
      self.nixosModules.default
      {
        _module.args.pkgs = pkgs;
        hwc.system.services.backup.enable = true;
      }
    ];
  };
in
{
  inputUrl = flake.inputs.nixpkgs.url;
  packages = lib.mapAttrs (_: lib.attrNames) self.packages;
  checks = lib.mapAttrs (_: lib.attrNames) self.checks;
  devShells = lib.mapAttrs (_: lib.attrNames) self.devShells;
  formatter = lib.mapAttrs (_: f: f.name) self.formatter;
  nixosModules = lib.attrNames self.nixosModules;
  overlay = lib.attrNames (self.overlays.default pkgs { });
  modulePackage = module.config.hwc.system.services.backup.package.outPath;
  # With the overlay applied to the user's pkgs, the module takes that package.
  modulePackageFromOverlay =
    (lib.evalModules {
      modules = [
        ./nixos-stub.nix
        self.nixosModules.default
        {
          _module.args.pkgs = pkgs // {
            hwc-backup = fakeDrv "hwc-backup-from-user-pkgs" "aarch64-linux";
          };
          hwc.system.services.backup.enable = true;
        }
      ];
    }).config.hwc.system.services.backup.package.outPath;
}
