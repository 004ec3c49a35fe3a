# A home server on btrfs: sources read from read-only btrfs snapshots, a database stopped and
# an app frozen only while they are taken.
{
  networking.hostName = "homeserver";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [
        "/home"
        "/var/lib"
      ];
      sourceSnapshots = "btrfs";
      quiesce = {
        "postgresql.service".mode = "stop";
        home-assistant.mode = "freeze";
      };
    };
  };
}
