# hwc-backup, callPackage style (upstreamable to nixpkgs as it is).
{
  lib,
  rustPlatform,
}:
let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;
in
rustPlatform.buildRustPackage {
  pname = "hwc-backup";
  inherit (workspace) version;

  # Only what cargo reads: editing the Nix files or the docs does not rebuild the package.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      # crates/cli declares the integration-test target there; cargo wants it to exist.
      ../tests/integration
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The integration tests drive nix-instantiate, systemd-analyze and rsync, none of which the
  # build sandbox has; they run in CI (`cargo test`). Here: the unit tests of both crates.
  cargoTestFlags = [
    "--workspace"
    "--lib"
    "--bins"
  ];

  # The seed's command names; hwc-backup dispatches on argv[0].
  postInstall = ''
    for name in backup-now backup-status backup-restore backup-verify; do
      ln -s hwc-backup "$out/bin/$name"
    done
  '';

  meta = {
    description = "Hard-linked, rotated, verifiable snapshots, driven by systemd timers";
    # No homepage until the project has a public one (a placeholder would mislead).
    # The LICENSE file and Cargo.toml's `license` say MIT too (tests/integration/nix.rs checks).
    license = lib.licenses.mit;
    # Empty until someone takes it on in nixpkgs (maintainer-list.nix needs a real entry).
    maintainers = [ ];
    mainProgram = "hwc-backup";
    platforms = lib.platforms.linux;
  };
}
