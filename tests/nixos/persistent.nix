# Persistent= catch-up (tests/systemd: persistent-catch-up). A run whose elapse passed while the
# machine was off is started as soon as backup.timer starts again (at boot). As there, the
# power-off is the timer being stopped (what shutdown does; systemd keeps the last trigger as the
# mtime of /var/lib/systemd/timers/stamp-backup.timer) while the clock jumps 3 h past the next
# elapse; starting the timer is what boot does. Control: an "off" hour with no elapse gives no run.
{
  name = "hwc-backup-persistent";

  nodes.machine = {
    # The test moves the clock; nothing may move it back.
    services.timesyncd.enable = false;
    hwc.system.services.backup.schedule = {
      enable = true;
      randomDelay = "0";
    };
  };

  testScript = ''
    def count(unit, pattern):
        out = machine.succeed(f"journalctl -b -u {unit} -o cat | grep -cE '{pattern}' || true")
        return int(out.strip())

    def latest():
        return machine.succeed("readlink /mnt/backup/machine/latest || true").strip()

    def next_elapse(timer):
        return int(
            machine.succeed(
                f"date -d \"$(systemctl show -P NextElapseUSecRealtime {timer})\" +%s"
            ).strip()
        )

    def set_clock(epoch):
        machine.succeed(f"date -u -s @{epoch}")

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("hook-sink.service")
    machine.succeed("mkdir -p /srv/data/docs", "echo hello > /srv/data/docs/hello.txt")

    with subtest("backup.timer is persistent and keeps its stamp"):
        machine.succeed("systemctl is-active backup.timer")
        machine.succeed("systemctl cat backup.timer | grep -qx 'Persistent=true'")
        machine.succeed("test -f /var/lib/systemd/timers/stamp-backup.timer")

    with subtest("a run missed while the machine was off is caught up when the timer starts"):
        elapse = next_elapse("backup.timer")
        machine.succeed("systemctl stop backup.timer")
        starts = count("backup.service", "^Starting ")
        finished = count("backup.service", "^Finished ")
        before = latest()
        set_clock(elapse + 3 * 3600)
        machine.succeed("systemctl start backup.timer")
        machine.wait_until_succeeds(
            "test \"$(journalctl -b -u backup.service -o cat | grep -c '^Finished ')\" -gt "
            + str(finished),
            timeout=180,
        )
        assert count("backup.service", "^Starting ") == starts + 1, "not exactly one catch-up run"
        assert count("backup.service", "Failed with result|^Failed to start ") == 0, "the run failed"
        after = latest()
        assert after != "" and after != before, f"latest did not move ({before!r} -> {after!r})"
        machine.succeed("test -f /mnt/backup/machine/latest/srv/data/docs/hello.txt")

    with subtest("no catch-up when no elapse was missed"):
        machine.succeed("systemctl stop backup.timer")
        starts = count("backup.service", "^Starting ")
        now = int(machine.succeed("date +%s").strip())
        set_clock(now + 3600)
        machine.succeed("systemctl start backup.timer", "sleep 5")
        assert count("backup.service", "^Starting ") == starts, "backup.service started without a missed elapse"
  '';
}
