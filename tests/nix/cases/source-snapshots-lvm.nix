# A server with ext4 on LVM: each source read from an LVM snapshot of its logical volume, with
# 5 GiB of copy-on-write space each.
{
  networking.hostName = "lvmbox";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      sources = [
        "/srv/data"
        "/home"
      ];
      sourceSnapshots = "lvm";
      lvmSnapshotSize = "5G";
    };
  };
}
