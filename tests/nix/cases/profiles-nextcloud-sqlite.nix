# Nextcloud on SQLite whose services.nextcloud is not enabled on this machine (no occ): its
# database file is copied, and the missing maintenance mode is warned about, not hidden.
{
  networking.hostName = "cloud";
  services.nextcloud.home = "/var/lib/nextcloud";
  hwc.system.services.backup = {
    enable = true;
    local.enable = true;
    profiles.nextcloud = {
      enable = true;
      dbtype = "sqlite";
    };
  };
}
