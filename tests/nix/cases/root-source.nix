# Backing up "/" is fine when the destination is a separate mount that the run does not enter.
{
  networking.hostName = "tiny";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [ "/" ];
      excludePatterns = [
        "/nix/"
        "/tmp/"
      ];
    };
  };
}
