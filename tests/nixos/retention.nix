# Retention over 40 simulated days, with the runner's testing clock (--now). One snapshot a day
# at 02:00 UTC from 2025-01-01 to 2025-02-09 (a Sunday), keepDaily 3, keepWeekly 2,
# keepMonthly 2, pruning after every run. What restic's rules keep at the end:
#   daily   : 02-09, 02-08, 02-07
#   weekly  : 02-09 (week of 02-03), 02-02 (week of 01-27)
#   monthly : 02-09 (February), 01-31 (January)
# Each snapshot lives in the finest tier that keeps it: daily/ 3, weekly/ 1 (02-02),
# monthly/ 1 (01-31), and latest is 02-09.
{
  name = "hwc-backup-retention";

  nodes.machine = {
    hwc.system.services.backup.local = {
      keepDaily = 3;
      keepWeekly = 2;
      keepMonthly = 2;
    };
  };

  testScript = ''
    import datetime
    import re

    machine.wait_for_unit("multi-user.target")
    machine.succeed("echo data > /srv/data/file")

    day = datetime.date(2025, 1, 1)
    while day <= datetime.date(2025, 2, 9):
        machine.succeed(
            f"echo {day} > /srv/data/today",
            f"hwc-backup now --now {day.isoformat()}T02:00:00Z --config /etc/hwc-backup/config.json",
        )
        day += datetime.timedelta(days=1)

    def listing(tier):
        # Snapshot directories only; metadata may sit beside them under other names.
        names = machine.succeed(f"ls /mnt/backup/machine/{tier}").split()
        return [n for n in names if re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", n)]

    with subtest("every tier holds what the policy keeps"):
        daily, weekly, monthly = listing("daily"), listing("weekly"), listing("monthly")
        assert daily == [
            "2025-02-07_02-00-00",
            "2025-02-08_02-00-00",
            "2025-02-09_02-00-00",
        ], f"daily/ holds {daily}"
        assert weekly == ["2025-02-02_02-00-00"], f"weekly/ holds {weekly}"
        assert monthly == ["2025-01-31_02-00-00"], f"monthly/ holds {monthly}"

    with subtest("latest is the newest snapshot and its content is right"):
        target = machine.succeed("readlink /mnt/backup/machine/latest").strip()
        assert target.endswith("daily/2025-02-09_02-00-00"), f"latest -> {target}"
        today = machine.succeed("cat /mnt/backup/machine/latest/srv/data/today").strip()
        assert today == "2025-02-09", f"latest holds the data of {today}"
        kept = machine.succeed("cat /mnt/backup/machine/monthly/2025-01-31_02-00-00/srv/data/today")
        assert kept.strip() == "2025-01-31", f"the January snapshot holds {kept!r}"

    with subtest("expired snapshots are deleted, not left in a trash directory"):
        # 2025-01-15 was kept by no rule at the end; its tree must be gone from the disk.
        machine.wait_until_succeeds(
            "test -z \"$(find /mnt/backup/machine -name '2025-01-15_02-00-00*')\"", timeout=60
        )
  '';
}
