# A source that is the destination, or lies inside it, would back up the backups: refused,
# as `hwc-backup config check` refuses the plan (exit 2).
{
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      sources = [
        "/home"
        "/mnt/backup"
      ];
    };
  };
}
