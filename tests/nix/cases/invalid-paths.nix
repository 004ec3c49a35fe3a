# Paths the module must refuse: relative, unclean and duplicate sources, a source inside the
# destination, a relative destination, paths that cannot be written into a unit file.
{
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "mnt/backup";
      sources = [
        "home"
        "/etc/nixos/"
        "/srv/../etc"
        "/srv"
        "/srv"
        "mnt/backup/x"
      ];
    };
    readWritePaths = [
      "/var/my dumps"
      "/var/100%"
    ];
  };
}
