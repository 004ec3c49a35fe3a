# The seed README's quick start (laptop and server alike).
{
  networking.hostName = "laptop";
  hwc.system.services.backup = {
    enable = true;
    local.enable = true;
    schedule.enable = true;
  };
}
