# Options set where they do nothing: each gets a warning at build time. A pull-only server
# without schedule.enable, with settings that only local snapshots, a cloud push, several hosts,
# a schedule or the agent would use.
{
  networking.hostName = "quiet";
  hwc.system.services.backup = {
    enable = true;
    local = {
      mountPoint = "/mnt/quiet";
      # This machine's own backup is off: its sources and exclusions do nothing.
      excludePatterns = [ "*.tmp" ];
      sourceSnapshots = "none";
    };
    schedule.timeOfDay = "03:30";
    hosts.printer = {
      sources = [ "/etc" ];
      schedule = "hourly";
    };
    hostConcurrency = 2;
    verify = {
      enable = true;
      sample = 10;
    };
    health.schedule = "daily";
    cloud.bandwidthLimit = "1M";
    preBackupScript = "echo never";
    agent.allowedPaths = [ "/srv" ];
  };
}
