# The seed README's "Laptop with External Drive" example.
{
  networking.hostName = "laptop";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      keepDaily = 7;
      keepWeekly = 4;
      keepMonthly = 3;
    };
    schedule = {
      enable = true;
      frequency = "daily";
      timeOfDay = "02:00";
      onlyOnAC = true; # Only when plugged in
    };
  };
}
