# A stale destination fails the health check (tests/systemd: health-check-stale). After a good
# backup the clock moves 3 days on (no backup meanwhile; health.maxAge is 48h for daily): the
# check fails, health.json names newestSnapshot as the failed check, OnFailure= runs
# backup-failure@backup-health-check.service.service and a failure notification reaches the sink.
# A backup afterwards makes the check pass again.
{
  name = "hwc-backup-stale";

  nodes.machine = {
    # The test moves the clock; nothing may move it back.
    services.timesyncd.enable = false;
  };

  testScript = ''
    import json

    HEALTH = "/var/lib/hwc-backup/machine/health.json"

    def requests():
        return int(machine.succeed("cat /var/lib/hook-sink/requests 2>/dev/null | wc -l").strip())

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("hook-sink.service")
    machine.succeed("mkdir -p /srv/data/docs", "echo hello > /srv/data/docs/hello.txt")

    with subtest("a fresh backup passes the health check"):
        machine.succeed("systemctl start backup.service")
        machine.succeed("systemctl start backup-health-check.service")
        machine.succeed(f"test -f {HEALTH}")

    with subtest("3 days without a backup: the health check fails and says why"):
        now = int(machine.succeed("date +%s").strip())
        machine.succeed(f"date -u -s @{now + 3 * 86400}", "touch /tmp/ref")
        before = requests()
        machine.fail("systemctl start backup-health-check.service")
        machine.succeed(
            "journalctl -b -u backup-health-check.service -o cat"
            " | grep -qE 'Failed with result|^Failed to start '"
        )
        machine.succeed(f"test {HEALTH} -nt /tmp/ref")
        health = json.loads(machine.succeed(f"cat {HEALTH}"))
        assert health["healthy"] is False, f"health.json: {health!r}"
        assert any(c["name"] == "newestSnapshot" and not c["ok"] for c in health["checks"]), (
            f"newestSnapshot not reported as failed: {health!r}"
        )

    with subtest("the failed health check is reported"):
        machine.wait_until_succeeds(
            "journalctl -b -u 'backup-failure@backup-health-check.service.service' -o cat"
            " | grep -qE '^Finished |^Failed to start |Failed with result'",
            timeout=120,
        )
        machine.wait_until_succeeds(
            f"tail -n +{before + 1} /var/lib/hook-sink/requests | grep -qi fail", timeout=120
        )

    with subtest("a backup after the stale period makes the check pass again"):
        machine.succeed("systemctl reset-failed backup-health-check.service")
        machine.succeed("systemctl start backup.service")
        machine.succeed("systemctl start backup-health-check.service")
  '';
}
