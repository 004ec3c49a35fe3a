# ZFS snapshots of the sources are not implemented by this version: refused at build time.
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
