# A file server on ZFS: each source read from a ZFS snapshot of its dataset.
{
  networking.hostName = "zfsbox";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [ "/tank/data" ];
      sourceSnapshots = "zfs";
    };
  };
}
