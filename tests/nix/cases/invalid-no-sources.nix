# Nothing to back up.
{
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [ ];
    };
  };
}
