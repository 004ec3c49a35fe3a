# Exclusions by tag file, marker file and size (issue 14): caches, `.nobackup` and files over
# 4 GiB left out here, and a pulled host with its own settings (its agent walks them).
{
  networking.hostName = "workstation";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [ "/home" ];
      excludeCaches = true;
      excludeIfPresent = [
        ".nobackup"
        ".hwc-skip"
      ];
      excludeLargerThan = "4G";
    };
    hosts.builder = {
      sources = [ "/srv" ];
      excludeCaches = true;
      excludeLargerThan = "512MiB";
    };
  };
}
