# Calls nix/package.nix with stand-ins for lib and rustPlatform (Nix 2.8, no nixpkgs) and
# reports what it would build: the version, the source set, the lock file, the entry points.
let
  lib = {
    importTOML = file: builtins.fromTOML (builtins.readFile file);
    fileset = {
      unions = paths: paths;
      toSource = { root, fileset }: { inherit root fileset; };
    };
    licenses.mit = "mit";
    platforms.linux = [ ];
  };
  rustPlatform.buildRustPackage = args: args;
  package = import ../../nix/package.nix { inherit lib rustPlatform; };
in
{
  inherit (package)
    pname
    version
    postInstall
    cargoTestFlags
    ;
  inherit (package.meta) mainProgram license maintainers;
  hasHomepage = package.meta ? homepage;
  lockFile = toString package.cargoLock.lockFile;
  root = toString package.src.root;
  sources = map toString package.src.fileset;
  missing = map toString (builtins.filter (p: !builtins.pathExists p) package.src.fileset);
}
