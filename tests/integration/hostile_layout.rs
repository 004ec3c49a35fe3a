//! Item 4 of the safety issue, through the binary: a symlink planted at a fixed name of the
//! host directory (by anyone who can write the backup disk) before `now` and before `prune`
//! is refused with exit 1 and a message naming it, and a victim directory and a victim file
//! outside the destination stay exactly as they were. The engine-level table of every
//! operation against every fixed name is `crates/engine/tests/hostile_layout.rs`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::util::*;

/// Every entry below `root`: mode, owner, size, mtime and content.
fn fingerprint(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() { std::fs::read(&p).unwrap() } else { Vec::new() };
        out.push(format!("{} {:o} {} {} {} {content:?}", p.display(), md.mode(), md.uid(), md.len(), md.mtime_nsec()));
        if md.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

struct Victims {
    dir: PathBuf,
    file: PathBuf,
}

impl Victims {
    fn new(env: &Env) -> Victims {
        let dir = env.dir.path().join("home-like");
        write(&dir.join("alice/notes.txt"), "irreplaceable");
        write(&dir.join("2024-01-01_00-00-00/.hwc-backup/meta.json"), "{}");
        let file = env.dir.path().join("victim.txt");
        write(&file, "precious");
        Victims { dir, file }
    }

    fn state(&self) -> (Vec<String>, Vec<String>) {
        (fingerprint(&self.dir), fingerprint(&self.file))
    }
}

fn plant(env: &Env, fixed: &str, target: &Path) -> PathBuf {
    let at = env.host_dir().join(fixed);
    if std::fs::symlink_metadata(&at).is_ok() {
        std::fs::rename(&at, env.host_dir().join(format!("{fixed}.orig"))).unwrap();
    }
    std::os::unix::fs::symlink(target, &at).unwrap();
    at
}

#[test]
fn a_planted_symlink_stops_now_and_prune_and_names_itself() {
    for fixed in [".incomplete", ".trash", ".lock", "latest", "daily", "weekly", "monthly"] {
        for to_dir in [true, false] {
            let env = Env::new();
            write(&env.src.join("a"), "a");
            env.snapshot_ok("2025-01-10T02:00:00+00:00", &[]);
            env.snapshot_ok("2025-01-11T02:00:00+00:00", &[]);
            let victims = Victims::new(&env);
            let before = victims.state();
            let target = if to_dir { &victims.dir } else { &victims.file };
            let at = plant(&env, fixed, target);
            let runs = [
                ("now", env.snapshot_at("2025-01-12T02:00:00+00:00", &[])),
                ("prune", env.run("prune", &["--now", "2026-01-01T00:00:00+00:00"])),
            ];
            for (what, o) in runs {
                let case = format!("{what} with {} -> {}", at.display(), target.display());
                assert_eq!(code(&o), 1, "{case}: {}", show(&o));
                assert!(
                    show(&o).contains(&format!("{}: is a symlink to", s(&at))),
                    "{case}: the message does not name it: {}",
                    show(&o)
                );
                assert_eq!(victims.state(), before, "{case} changed a victim");
                assert_eq!(std::fs::read_link(&at).unwrap(), *target, "{case} replaced the symlink");
            }
        }
    }
}

#[test]
fn a_symlinked_host_directory_is_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let victims = Victims::new(&env);
    let before = victims.state();
    std::os::unix::fs::symlink(&victims.dir, env.host_dir()).unwrap();
    let o = env.snapshot_at("2025-01-12T02:00:00+00:00", &[]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(show(&o).contains(&format!("{}: is a symlink to", s(&env.host_dir()))), "{}", show(&o));
    assert_eq!(victims.state(), before);
}

#[test]
fn a_destination_unmounted_during_the_run_gets_nothing_below_its_mount_point() {
    // The pre-hook runs after the host directory is open and the lock is held: it detaches
    // the destination's filesystem (`umount -l`), as an unplugged drive or an admin would.
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let tmpfs = Mount::tmpfs(&env.dest, "size=16m");
    let hook = env.dir.path().join("pre");
    write(&hook, format!("#!/bin/sh\numount -l '{}'\n", s(&env.dest)));
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = serde_json::json!(true);
    p["hooks"]["preBackup"] = serde_json::json!(s(&hook));
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let o = env.cmd(&["now", "--config", &s(&plan), "--now", "2025-01-12T02:00:00+00:00"]).output().unwrap();
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(show(&o).contains("vanished during the run (unmounted?)"), "{}", show(&o));
    // The mount point is a bare directory again, and the run created nothing in it.
    let below: Vec<_> = std::fs::read_dir(&env.dest).unwrap().collect();
    assert!(below.is_empty(), "written below the mount point: {below:?}");
    drop(tmpfs);
}

#[test]
fn a_device_node_planted_as_the_lock_or_a_list_is_never_opened() {
    // A character device of a driver that is not there (major 250): opening it would fail
    // with ENXIO, so an error that names the type shows it was looked at, not opened. A real
    // device (a watchdog) would act on the open alone.
    let env = Env::new();
    write(&env.src.join("a"), "a");
    env.snapshot_ok("2025-01-10T02:00:00+00:00", &[]);
    let id = env.snapshot_ids().pop().unwrap();
    let lock = env.host_dir().join(".lock");
    let _ = std::fs::remove_file(&lock);
    sh(&format!("mknod '{}' c 250 250", lock.display()));
    let o = env.snapshot_at("2025-01-11T02:00:00+00:00", &[]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(show(&o).contains(&format!("{}: is a device node, not a regular file", s(&lock))), "{}", show(&o));
    std::fs::remove_file(&lock).unwrap();
    // A snapshot's pin file (read by `status`, `prune`, `versions` …) as a device node.
    let pin = env.host_dir().join(&id).join(".hwc-backup/pin.json");
    sh(&format!("mknod '{}' c 250 250", pin.display()));
    let o = env.run("status", &[]);
    assert!(show(&o).contains("is a device node, not a regular file"), "{}", show(&o));
    assert!(!show(&o).contains("No such device"), "it was opened: {}", show(&o));
}

#[test]
fn symlinks_planted_after_the_lock_is_taken_are_refused_where_they_are_used() {
    // The host check at the start of a run sees a clean layout; the pre-backup hook (which
    // runs under the lock) then swaps `daily` or `.trash` for a symlink to a victim. The
    // publish and the prune that follow reach them by name again and must refuse them.
    for fixed in ["daily", ".trash"] {
        let env = Env::new();
        write(&env.src.join("a"), "a");
        for day in 1..=8 {
            env.snapshot_ok(&format!("2025-01-{day:02}T02:00:00+00:00"), &["--no-prune"]);
        }
        let victims = Victims::new(&env);
        let before = victims.state();
        let at = env.host_dir().join(fixed);
        let hook = env.dir.path().join("pre-hook");
        write(
            &hook,
            format!(
                "#!/bin/sh\nmkdir -p '{at}' && mv '{at}' '{at}.aside' && ln -s '{victim}' '{at}'\n",
                at = s(&at),
                victim = s(&victims.dir)
            ),
        );
        sh(&format!("chmod 755 '{}'", hook.display()));
        let mut p = plan_json(&env);
        p["hooks"] = serde_json::json!({ "preBackup": s(&hook), "postBackup": null });
        let plan = write_plan(&env, "plan.json", &p.to_string());
        let o = env.cmd(&["now", "--config"]).arg(&plan).args(["--now", "2025-01-20T02:00:00+00:00"]).output().unwrap();
        assert_eq!(code(&o), 1, "{fixed}: {}", show(&o));
        assert!(show(&o).contains(&format!("{}: is a symlink to", s(&at))), "{fixed}: {}", show(&o));
        assert_eq!(victims.state(), before, "{fixed}: a victim changed");
    }
}
