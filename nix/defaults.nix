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
  cloud = {
    provider = "proton-drive";
    remotePath = "Backups";
    syncMode = "sync";
    keepHistory = 30;
    maxAge = "7d";
  };
  schedule.timeOfDay = "02:00";
  verify.schedule = "monthly";
}
