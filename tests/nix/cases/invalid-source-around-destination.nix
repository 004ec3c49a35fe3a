# Backing up "/" with the destination below it is only safe when the run stays on one file
# system and the destination must be a separate mount.
{
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [ "/" ];
      oneFileSystem = false;
    };
  };
}
