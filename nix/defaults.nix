# Defaults shared by the module's options (modules/backup.nix) and the render (nix/render/):
# kept in one place so that a build-time "has no effect" warning can tell a value the user set
# from the default.
{
  local = {
    sources = [
      "/home"
      "/etc/nixos"
    ];
    excludePatterns = [
      ".cache"
      "*.tmp"
      ".local/share/Trash"
      "node_modules"
      "__pycache__"
    ];
  };
}
