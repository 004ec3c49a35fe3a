# An hourly schedule: the minute comes from timeOfDay, the health limit follows the frequency,
# and the health check timer can be turned off. The inline ping URL carries a key in its query
# string, which the module warns about (it is written into the world-readable store).
{
  networking.hostName = "build";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      keepHourly = 24;
      keepDaily = 7;
      keepWeekly = 0;
      keepMonthly = 0;
      sources = [ "/srv" ];
    };
    schedule = {
      enable = true;
      frequency = "hourly";
      timeOfDay = "00:15";
      randomDelay = "5min";
    };
    health.schedule = null;
    notifications = {
      enable = true;
      healthchecks.url = "https://hc.example/ping/build?key=0123456789";
    };
  };
}
