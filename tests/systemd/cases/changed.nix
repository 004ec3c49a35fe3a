# base.nix after an edit and `nixos-rebuild switch` (the daemon-reload scenario): the plan
# changes (one more exclude, more dailies) and the backup timer moves to 03:00 (the pulled
# hosts' timers, which use schedule.timeOfDay, with it).
args:
let
  base = import ./base.nix args;
  b = base.hwc.system.services.backup;
in
base
// {
  hwc.system.services.backup = b // {
    local = b.local // {
      excludePatterns = b.local.excludePatterns ++ [ "*.bak" ];
      keepDaily = 8;
    };
    schedule = b.schedule // { timeOfDay = "03:00"; };
  };
}
