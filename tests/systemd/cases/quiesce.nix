# base.nix for the quiesce scenario (installed last, like a `nixos-rebuild switch` to it): the
# source is a btrfs filesystem (a loop device the scenario makes) read from read-only
# snapshots, and two dummy writer services are held still while the snapshots are taken, one
# stopped, one frozen. Metrics go to a textfile directory, for the downtime gauge.
args:
let
  base = import ./base.nix args;
  b = base.hwc.system.services.backup;
in
base
// {
  hwc.system.services.backup = b // {
    local = b.local // {
      sources = [ "/srv/quiesced" ];
      sourceSnapshots = "btrfs";
      quiesce = {
        "hwc-test-writer-stop.service".mode = "stop";
        hwc-test-writer-freeze.mode = "freeze";
      };
    };
    metrics.textfileDir = "/var/lib/hwc-metrics";
  };
}
