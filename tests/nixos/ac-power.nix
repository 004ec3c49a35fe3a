# schedule.onlyOnAC (tests/systemd: onlyOnAC): backup.service has ConditionACPower=true; on a
# discharging battery a start is skipped (journal: unmet condition) and no snapshot is made; on AC
# it runs. The power supplies come from the kernel's test_power module (a fake AC adapter, USB
# charger and battery, set through its parameters): real sysfs devices, so systemd needs no
# SYSTEMD_DEVICE_VERIFY_SYSFS=0 as the Debian VM does with its tmpfs fake.
{
  name = "hwc-backup-ac-power";

  nodes.machine = {
    hwc.system.services.backup.schedule.onlyOnAC = true;
  };

  testScript = ''
    PARAMS = "/sys/module/test_power/parameters"

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("hook-sink.service")
    machine.succeed("mkdir -p /srv/data/docs", "echo hello > /srv/data/docs/hello.txt")

    with subtest("backup.service has ConditionACPower=true"):
        machine.succeed("systemctl cat backup.service | grep -qx 'ConditionACPower=true'")

    with subtest("on a discharging battery the run is skipped"):
        machine.succeed(
            "modprobe test_power",
            f"echo off > {PARAMS}/ac_online",
            f"echo off > {PARAMS}/usb_online",
            f"echo discharging > {PARAMS}/battery_status",
            "grep -qx Battery /sys/class/power_supply/test_battery/type",
            "grep -qx 0 /sys/class/power_supply/test_ac/online",
        )
        # A start skipped on a condition is no error for systemctl.
        machine.succeed("systemctl start backup.service")
        machine.succeed(
            "journalctl -b -u backup.service -o cat"
            " | grep -q 'unmet condition check (ConditionACPower=true)'"
        )
        machine.fail("journalctl -b -u backup.service -o cat | grep -q '^Starting '")
        machine.fail("test -e /mnt/backup/machine/latest")

    with subtest("on AC the run happens and succeeds"):
        machine.succeed(
            f"echo on > {PARAMS}/ac_online",
            f"echo charging > {PARAMS}/battery_status",
            "grep -qx 1 /sys/class/power_supply/test_ac/online",
        )
        machine.succeed("systemctl start backup.service")
        machine.succeed("journalctl -b -u backup.service -o cat | grep -q '^Finished '")
        machine.succeed("test -f /mnt/backup/machine/latest/srv/data/docs/hello.txt")
  '';
}
