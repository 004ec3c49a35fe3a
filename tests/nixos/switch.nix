# `nixos-rebuild switch` must neither start a backup nor restart one that is running
# (restartIfChanged = false). The specialisation changes the plan (keepDaily) and the unit
# (onlyOnAC) and the schedule (daily -> hourly, which restarts backup.timer); switching to it
# while a run waits in its pre-backup hook keeps that run alive, writes the new plan, and starts
# nothing else. A restarted timer with Persistent=true and a stamp older than the new calendar's
# last elapse would fire at once; the module's activation renews the stamps first.
{
  name = "hwc-backup-switch";

  nodes.machine = {
    hwc.system.services.backup = {
      schedule.enable = true;
      preBackupScript = ''
        while [ -e /run/slow-backup ]; do sleep 1; done
      '';
    };
    specialisation.changed.configuration = {
      hwc.system.services.backup = {
        local.keepDaily = 9;
        schedule = {
          onlyOnAC = false;
          frequency = "hourly";
          randomDelay = "0";
        };
      };
    };
  };

  testScript =
    { nodes, ... }:
    let
      switch = "${nodes.machine.system.build.toplevel}/specialisation/changed/bin/switch-to-configuration test";
    in
    ''
      machine.wait_for_unit("multi-user.target")

      with subtest("switching while idle starts no backup, also with a changed schedule"):
          # As if the last scheduled run were three days ago: the restarted timer would catch up.
          machine.succeed("touch -d '3 days ago' /var/lib/systemd/timers/stamp-backup.timer")
          machine.succeed("${switch}")
          machine.succeed("systemctl cat backup.timer | grep -q 'OnCalendar=\\*-\\*-\\* \\*:00:00'")
          machine.sleep(5)
          machine.succeed("grep -q '\"daily\": 9' /etc/hwc-backup/config.json")
          machine.fail("test -e /mnt/backup/machine")
          for unit in ["backup", "backup-local", "backup-cloud", "backup-verify", "backup-health-check"]:
              machine.fail(f"journalctl -b -u {unit}.service -o cat | grep -q Starting")

      with subtest("switching back during a run leaves the run alone"):
          machine.succeed("touch /run/slow-backup", "systemctl start --no-block backup.service")
          machine.wait_until_succeeds(
              "systemctl show -P ActiveState backup.service | grep -qx activating", timeout=60
          )
          invocation = machine.succeed("systemctl show -P InvocationID backup.service").strip()
          machine.succeed("${nodes.machine.system.build.toplevel}/bin/switch-to-configuration test")
          machine.succeed("grep -q '\"daily\": 7' /etc/hwc-backup/config.json")
          after = machine.succeed("systemctl show -P InvocationID backup.service").strip()
          assert after == invocation, "the running backup was restarted by the switch"

      with subtest("the run then finishes normally"):
          machine.succeed("rm /run/slow-backup")
          machine.wait_until_succeeds(
              "systemctl show -P ActiveState backup.service | grep -qx inactive", timeout=120
          )
          machine.succeed("test -L /mnt/backup/machine/latest")
          starts = machine.succeed("journalctl -b -u backup.service -o cat | grep -c Starting").strip()
          assert starts == "1", f"backup.service started {starts} times"
    '';
}
