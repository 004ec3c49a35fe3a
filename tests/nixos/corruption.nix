# Verify detects bit rot (tests/systemd: verify-detects-corruption). One byte of a snapshot file
# is flipped, its size and mtime kept: backup-verify.service fails naming the file, OnFailure=
# runs backup-failure@backup-verify.service.service and a failure notification reaches the sink.
# Repaired in place (the file may be hard-linked across snapshots), verify passes again.
{
  name = "hwc-backup-corruption";

  nodes.machine = { };

  testScript = ''
    FILE = "/mnt/backup/machine/latest/srv/data/docs/numbers.txt"

    def requests():
        return int(machine.succeed("cat /var/lib/hook-sink/requests 2>/dev/null | wc -l").strip())

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("hook-sink.service")
    machine.succeed("mkdir -p /srv/data/docs", "seq 1 20000 > /srv/data/docs/numbers.txt")

    with subtest("a fresh snapshot verifies"):
        machine.succeed("systemctl start backup.service")
        machine.succeed(f"cmp /srv/data/docs/numbers.txt {FILE}")
        machine.succeed("systemctl start backup-verify.service")

    with subtest("a flipped byte (same size and mtime) fails verify, naming the file"):
        machine.succeed(
            f"cp -p {FILE} /tmp/orig",
            f"printf X | dd of={FILE} bs=1 seek=100 conv=notrunc status=none",
            f"touch -r /tmp/orig {FILE}",
        )
        machine.fail(f"cmp -s /tmp/orig {FILE}")
        machine.succeed(f"test $(stat -c %s {FILE}) -eq $(stat -c %s /tmp/orig)")
        marks = int(machine.succeed("journalctl -b -u backup-verify.service -o cat | wc -l").strip())
        before = requests()
        machine.fail("systemctl start backup-verify.service")
        journal = machine.succeed(
            f"journalctl -b -u backup-verify.service -o cat | tail -n +{marks + 1}"
        )
        assert "Failed with result" in journal or "Failed to start" in journal, (
            f"backup-verify.service did not fail: {journal!r}"
        )
        assert "numbers.txt" in journal, f"the damaged file is not named: {journal!r}"

    with subtest("the failed verification is reported"):
        machine.wait_until_succeeds(
            "journalctl -b -u 'backup-failure@backup-verify.service.service' -o cat"
            " | grep -qE '^Finished |^Failed to start |Failed with result'",
            timeout=120,
        )
        machine.wait_until_succeeds(
            f"tail -n +{before + 1} /var/lib/hook-sink/requests | grep -qi fail", timeout=120
        )

    with subtest("repaired in place, the snapshot verifies again"):
        machine.succeed(f"cp -p /tmp/orig {FILE}", "systemctl reset-failed backup-verify.service")
        machine.succeed("systemctl start backup-verify.service")
  '';
}
