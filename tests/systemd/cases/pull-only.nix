# base.nix on a server that keeps no snapshots of its own (`local.enable = false`), only the
# pulled hosts': the pull-health-verify scenario switches to it and runs each pulled host's
# health check and verification (issue 17: on such a server they must exist and work), then
# switches back to base.nix. The local sources and excludes are left at the module's defaults
# (they would only draw a "has no effect" warning), and the offsite copy goes (it copies local
# snapshots, so the module refuses it without them).
args:
let
  base = import ./base.nix args;
  b = base.hwc.system.services.backup;
in
base
// {
  hwc.system.services.backup = builtins.removeAttrs b [ "offsite" ] // {
    local = builtins.removeAttrs b.local [ "sources" "excludePatterns" ] // { enable = false; };
  };
}
