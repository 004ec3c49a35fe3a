# When the timers fire, and the health check's default age limit.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
  # ----------------------------------------------------------------------------------------------
  # Schedule
  # ----------------------------------------------------------------------------------------------

  # `frequency` is one of systemd's shorthands, placed at `timeOfDay`, or a raw calendar
  # expression. A raw expression without a time ("Mon,Wed,Fri", "*-*-1/2") gets `timeOfDay`,
  # as the seed's "Mon,Wed,Fri" example means; one with a time ("Sat 04:30") is used verbatim.
  onCalendar =
    frequency: timeOfDay:
    let
      minute = head (match "[0-9]+:([0-9]+).*" timeOfDay);
      shorthands = {
        minutely = "*-*-* *:*:00";
        hourly = "*-*-* *:${minute}:00";
        daily = "*-*-* ${timeOfDay}";
        # Sunday, as the seed keeps its weekly snapshots from Sundays.
        weekly = "Sun *-*-* ${timeOfDay}";
        monthly = "*-*-01 ${timeOfDay}";
        quarterly = "*-01,04,07,10-01 ${timeOfDay}";
        semiannually = "*-01,07-01 ${timeOfDay}";
        yearly = "*-01-01 ${timeOfDay}";
        annually = "*-01-01 ${timeOfDay}";
      };
    in
    if shorthands ? ${frequency} then
      shorthands.${frequency}
    else if match ".*:.*" frequency != null then
      frequency
    else
      "${frequency} ${timeOfDay}";

  # The health check's default age limit: one missed run (plus the random delay) is tolerated.
  defaultMaxAge =
    {
      minutely = "1h";
      hourly = "3h";
      daily = "48h";
      weekly = "8d";
      monthly = "32d";
      quarterly = "93d";
      semiannually = "184d";
      yearly = "367d";
      annually = "367d";
    }
    .${cfg.schedule.frequency} or "8d";

  randomDelay = cfg.schedule.randomDelay;
  delaySetting = optionalAttrs (randomDelay != "" && randomDelay != "0") {
    RandomizedDelaySec = randomDelay;
  };
}
