//! `local.makeRoom` on a small filesystem: runs keep succeeding while the oldest snapshots go,
//! the newest and `health.minBackups` survive, each removal is named with its reason; with
//! makeRoom off the run is refused as before; `prune --dry-run --make-room` lists the
//! candidates oldest first and removes nothing.

use crate::util::*;

const MIB: u64 = 1 << 20;
/// Just after the last run (prune refuses when the newest snapshot is older than maxAge).
const LATER: &str = "2025-03-08T03:00:00+01:00";

/// 1.5 MiB that differ from run to run (a new copy in every snapshot).
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..(3 * MIB / 2))
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn plan(env: &Env, make_room: bool, min_free: u64) -> std::path::PathBuf {
    let mut p = plan_json(env);
    p["destination"]["minFreeBytes"] = min_free.into();
    p["destination"]["makeRoom"] = make_room.into();
    p["health"]["minBackups"] = 2.into();
    p["retention"]["daily"] = 60.into();
    write_plan(env, &format!("plan-{make_room}-{min_free}.json"), &p.to_string())
}

fn run(env: &Env, plan: &std::path::Path, day: u32) -> std::process::Output {
    write(&env.src.join("big"), noise(u64::from(day)));
    let when = format!("2025-03-{day:02}T02:00:00+01:00");
    env.cmd(&["now", "--config"]).arg(plan).args(["--now", &when, "--local-only"]).output().unwrap()
}

#[test]
fn runs_make_room_by_removing_the_oldest_and_keep_the_newest_and_min_backups() {
    let env = Env::new();
    let _fs = Mount::tmpfs(&env.dest, "size=8m");
    let on = plan(&env, true, 3 * MIB);
    let mut made_room = String::new();
    for day in 1..=8 {
        let o = run(&env, &on, day);
        assert!(o.status.success(), "day {day}: {}", show(&o));
        made_room.push_str(&String::from_utf8_lossy(&o.stdout));
        let ids = env.snapshot_ids();
        assert!(ids.len() >= (day as usize).min(2), "health.minBackups survive: {ids:?}");
        assert!(ids.last().unwrap().ends_with(&format!("2025-03-{day:02}_02-00-00")), "the newest is there: {ids:?}");
    }
    let ids = env.snapshot_ids();
    assert!(!ids.iter().any(|i| i.contains("2025-03-01")), "the oldest went: {ids:?}");
    assert!(made_room.contains("made room: removed daily/2025-03-01_02-00-00"), "{made_room}");
    assert!(made_room.contains("less than the required"), "{made_room}");

    // Off: refused as before, nothing removed.
    let off = plan(&env, false, 3 * MIB);
    let before = env.snapshot_ids();
    write(&env.src.join("more"), noise(99));
    let o = run(&env, &off, 9);
    let o = if o.status.success() { run(&env, &off, 10) } else { o };
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(show(&o).contains("less than the required"), "{}", show(&o));
    assert!(before.iter().all(|id| env.snapshot_ids().contains(id)), "makeRoom off removes nothing");

    // A dry run lists what it would remove, oldest first, never the newest or below
    // minBackups, and removes nothing.
    let huge = plan(&env, true, 1 << 40);
    let now = env.snapshot_ids();
    let o = env
        .cmd(&["prune", "--now", LATER, "--dry-run", "--make-room", "--json", "--config"])
        .arg(&huge)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed: Vec<&str> =
        r["makeRoom"]["removed"].as_array().unwrap().iter().map(|x| x["snapshot"].as_str().unwrap()).collect();
    let mut oldest_first = now.clone();
    oldest_first.sort_by_key(|id| id.split('/').nth(1).unwrap().to_string());
    assert_eq!(listed, oldest_first[..oldest_first.len() - 2].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(env.snapshot_ids(), now, "a dry run removes nothing");
    // For real, it cannot reach a terabyte free: it removes what it may and says so.
    let o = env.cmd(&["prune", "--now", LATER, "--make-room", "--config"]).arg(&huge).output().unwrap();
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("found nothing more to remove"), "{}", show(&o));
    assert_eq!(env.snapshot_ids(), oldest_first[oldest_first.len() - 2..].to_vec());
}

#[test]
fn a_pinned_snapshot_is_never_removed_to_make_room() {
    let env = Env::new();
    let _fs = Mount::tmpfs(&env.dest, "size=8m");
    let on = plan(&env, true, 3 * MIB);
    let mut made_room = String::new();
    for day in 1..=6 {
        let o = run(&env, &on, day);
        assert!(o.status.success(), "day {day}: {}", show(&o));
        made_room.push_str(&String::from_utf8_lossy(&o.stdout));
        if day == 1 {
            let p = env
                .cmd(&["pin", "2025-03-01_02-00-00", "--note", "before upgrade", "--config"])
                .arg(&on)
                .output()
                .unwrap();
            assert!(p.status.success(), "{}", show(&p));
        }
    }
    let ids = env.snapshot_ids();
    assert!(ids.iter().any(|i| i.ends_with("2025-03-01_02-00-00")), "the pinned oldest stays: {ids:?}");
    assert!(!ids.iter().any(|i| i.contains("2025-03-02")), "the oldest unpinned went: {ids:?}");
    assert!(made_room.contains("made room: removed daily/2025-03-02_02-00-00"), "{made_room}");
    assert!(!made_room.contains("removed daily/2025-03-01"), "{made_room}");
}

#[test]
fn a_pin_until_a_date_is_judged_at_the_run_time_given_by_now() {
    let env = Env::new();
    let _fs = Mount::tmpfs(&env.dest, "size=8m");
    let on = plan(&env, true, 3 * MIB);
    let mut made_room = String::new();
    // Every run is dated (`--now`) before the pin's end, long past by the wall clock: the pin
    // holds for all of them.
    for day in 1..=6 {
        let o = run(&env, &on, day);
        assert!(o.status.success(), "day {day}: {}", show(&o));
        made_room.push_str(&String::from_utf8_lossy(&o.stdout));
        if day == 1 {
            let p = env
                .cmd(&["pin", "2025-03-01_02-00-00", "--until", "2025-03-10T00:00:00Z", "--config"])
                .arg(&on)
                .output()
                .unwrap();
            assert!(p.status.success(), "{}", show(&p));
        }
    }
    let ids = env.snapshot_ids();
    assert!(ids.iter().any(|i| i.ends_with("2025-03-01_02-00-00")), "pinned at the runs' time: {ids:?}");
    assert!(!made_room.contains("removed daily/2025-03-01"), "{made_room}");
    // A run dated after the pin's end may remove it (it is the oldest).
    let o = run(&env, &on, 11);
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("made room: removed daily/2025-03-01_02-00-00"), "{out}");
    assert!(!env.snapshot_ids().iter().any(|i| i.contains("2025-03-01")));
}

/// Free bytes of the filesystem at `p` (`stat -f`: available blocks times their size).
fn avail_bytes(p: &std::path::Path) -> u64 {
    let v: Vec<u64> =
        sh(&format!("stat -f -c '%a %S' '{}'", p.display())).split_whitespace().map(|x| x.parse().unwrap()).collect();
    v[0] * v[1]
}

#[test]
fn the_trash_is_room_before_any_snapshot_and_a_stuck_entry_removes_none() {
    let env = Env::new();
    let _fs = Mount::tmpfs(&env.dest, "size=16m");
    let off = plan(&env, false, 0);
    for day in 1..=4 {
        let o = run(&env, &off, day);
        assert!(o.status.success(), "day {day}: {}", show(&o));
    }
    // What an interrupted emptying of the trash left: 4.5 MiB, more than the 2 MiB asked for.
    for (i, seed) in [77, 78, 79].into_iter().enumerate() {
        write(&env.host_dir().join(format!(".trash/2025-02-01_02-00-00.daily/big{i}")), noise(seed));
    }
    let before = env.snapshot_ids();
    let on = plan(&env, true, avail_bytes(&env.dest) + 2 * MIB);
    let o = run(&env, &on, 5);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("made room"), "{}", show(&o));
    assert!(before.iter().all(|id| env.snapshot_ids().contains(id)), "a snapshot went for room the trash held");

    // One entry the trash cannot delete (an empty read-only bind mount in it: EBUSY): no run
    // gives up a snapshot it cannot free, each says why, and the other entries still go.
    let empty = env.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let stuck = env.host_dir().join(".trash/stuck/m");
    std::fs::create_dir_all(&stuck).unwrap();
    let _stuck = Mount::with(&["--bind", "-o", "ro", &s(&empty)], &stuck);
    write(&env.host_dir().join(".trash/other/file"), "junk");
    let before = env.snapshot_ids();
    let on = plan(&env, true, avail_bytes(&env.dest) + MIB);
    for day in 6..=7 {
        let o = run(&env, &on, day);
        assert_eq!(code(&o), 1, "day {day}: {}", show(&o));
        assert!(show(&o).contains("the trash cannot be emptied, so no snapshot is removed"), "{}", show(&o));
        assert!(show(&o).contains("stuck"), "{}", show(&o));
        assert_eq!(env.snapshot_ids(), before, "day {day}: a snapshot was given up");
    }
    assert!(!env.host_dir().join(".trash/other").exists(), "the other entries still go");
    // Without makeRoom the stuck entry is a warning, not a failed run.
    let o = run(&env, &off, 8);
    assert!(o.status.success(), "{}", show(&o));
}
