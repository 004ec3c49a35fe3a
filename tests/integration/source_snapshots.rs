//! Sources read through read-only btrfs snapshots (`sourceSnapshots`, `now --source-snapshots`),
//! on a loop-mounted btrfs: a pair of files kept in lockstep by a writer is captured at one
//! instant; paths stay the original ones; no snapshot is left after success, failure or
//! `kill -9` (the next run cleans up) and nothing that is not ours is ever touched; a symlink
//! planted where the snapshots go is refused. ZFS, which this kernel lacks, against a recorded
//! fake `zfs` (the command sequence, the paths, the cleanup); LVM in the VM suite
//! (tests/systemd, `s_lvm`): this kernel has no device-mapper.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

const PRIVATE: &str = ".hwc-backup-source-snapshots";

/// A btrfs image loop-mounted at `<scratch>/mnt`; unmounted on drop (declare it after the
/// `Env`, so that it goes first).
struct Btrfs {
    at: PathBuf,
    _mount: Mount,
}

impl Btrfs {
    fn new(env: &Env) -> Btrfs {
        require("btrfs");
        let img = env.dir.path().join("btrfs.img");
        let at = env.dir.path().join("mnt");
        std::fs::create_dir(&at).unwrap();
        let mount = Mount::image(&img, "mkfs.btrfs", &["-q", "-f"], 256, &at);
        Btrfs { at, _mount: mount }
    }

    fn subvolume(&self, name: &str) -> PathBuf {
        let p = self.at.join(name);
        btrfs(&["subvolume", "create"], &p);
        p
    }

    /// Every subvolume of the filesystem, by path relative to its top.
    fn subvolumes(&self) -> Vec<String> {
        let out = Command::new("btrfs").args(["subvolume", "list"]).arg(&self.at).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(" path ").nth(1).unwrap_or("").to_string())
            .collect()
    }
}

fn btrfs(args: &[&str], path: &Path) -> Output {
    let o = Command::new("btrfs").args(args).arg(path).output().unwrap();
    assert!(o.status.success(), "btrfs {args:?} {}: {}", path.display(), show(&o));
    o
}

/// `now --source SRC … --source-snapshots KIND --json`.
fn backup(env: &Env, src: &Path, kind: &str, extra: &[&str]) -> Output {
    let mut c = env.cmd(&["now", "--source"]);
    c.arg(src).args(env.target_args()).args(["--source-snapshots", kind, "--json", "--no-prune"]).args(extra);
    c.output().unwrap()
}

fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

/// A writer keeping `a/a.txt` and `z/b.txt` in lockstep: each round writes the same counter to
/// both, each by a rename, `a` first (so at any instant `a` is `b` or `b + 1`). Between the two in walk order lie many files, so a walk
/// of the live tree sees them apart.
struct Lockstep {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Lockstep {
    fn start(src: &Path) -> Lockstep {
        write(&src.join("a/a.txt"), "0");
        write(&src.join("z/b.txt"), "0");
        for i in 0..3000 {
            write(&src.join(format!("m/{}/f{i}", i % 30)), format!("filler {i}"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (s, src) = (stop.clone(), src.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                for (dir, name) in [("a", "a.txt"), ("z", "b.txt")] {
                    let tmp = src.join(dir).join(".tmp");
                    std::fs::write(&tmp, n.to_string()).unwrap();
                    std::fs::rename(&tmp, src.join(dir).join(name)).unwrap();
                }
            }
            n
        });
        Lockstep { stop, handle: Some(handle) }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().map(|h| h.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the pair was ever the state of the tree at one instant: `a` is written first, so
/// it equals `b` or is one ahead of it; `b` ahead of `a` only comes from reading them apart.
fn existed(a: &Option<String>, b: &Option<String>) -> bool {
    let (Some(a), Some(b)) = (a, b) else { return false };
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    a == b || a == b + 1
}

/// The pair as stored in a snapshot.
/// (`None` for a file the walk missed: a live directory listing can miss a name being
/// renamed over.)
fn pair(report: &serde_json::Value, src: &Path) -> (Option<String>, Option<String>) {
    let snap = PathBuf::from(report["snapshotPath"].as_str().expect("published")).join(src.strip_prefix("/").unwrap());
    (std::fs::read_to_string(snap.join("a/a.txt")).ok(), std::fs::read_to_string(snap.join("z/b.txt")).ok())
}

#[test]
fn a_btrfs_snapshot_captures_files_written_in_lockstep_at_one_instant() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    let mut writer = Lockstep::start(&src);
    let mut live_mismatches = 0;
    for round in 0..3 {
        let o = backup(&env, &src, "btrfs", &["--threads", "1"]);
        assert_eq!(code(&o), 0, "{}", show(&o));
        let r = report(&o);
        let (a, b) = pair(&r, &src);
        assert!(existed(&a, &b), "round {round}: a={a:?} b={b:?} never existed together: a blend of two moments");
        assert_eq!(r["sourceReads"][0]["kind"], "btrfs", "{r}");
        assert_eq!(r["sourceReads"][0]["subvolume"], s(&src), "{r}");
        // Without a filesystem snapshot the same writer is caught between its two files.
        // (It may end partial: the writer's temporary file vanishes under the walk.)
        let o = backup(&env, &src, "none", &["--threads", "1"]);
        let (a, b) = pair(&report(&o), &src);
        live_mismatches += usize::from(!existed(&a, &b));
    }
    let rounds = writer.stop();
    assert!(rounds > 10, "the writer hardly ran ({rounds} rounds)");
    assert!(live_mismatches > 0, "the live walk never saw the writer between its files: the test proves nothing");
    assert_eq!(fs.subvolumes(), vec!["data".to_string()], "no source snapshot is left");
    assert!(!src.join(PRIVATE).exists(), "the private directory is removed when empty");
}

#[test]
fn paths_in_the_manifest_metadata_and_restore_are_the_original_ones() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("home");
    write(&src.join("alice/notes.txt"), "hello\n");
    write(&src.join("alice/skip.tmp"), "excluded\n");
    let o = backup(&env, &src.join("alice"), "btrfs", &["--exclude", &format!("{}/alice/*.tmp", s(&src))]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    assert_eq!(r["sourceReads"][0]["subvolume"], s(&src), "the subvolume above the source: {r}");
    assert_eq!(r["counts"]["excluded"], 1, "an exclude matches the original path: {r}");
    let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap());
    let manifest = std::fs::read_to_string(snap.join(".hwc-backup/manifest.b3")).unwrap();
    let rel = src.join("alice/notes.txt");
    assert!(manifest.contains(&format!("  {}\n", s(rel.strip_prefix("/").unwrap()))), "{manifest}");
    assert!(!manifest.contains(PRIVATE) && !manifest.contains("hwc-backup-"), "{manifest}");
    assert_eq!(tree(&snap.join(src.strip_prefix("/").unwrap())), vec!["alice", "alice/notes.txt"]);
    let meta = std::fs::read_to_string(snap.join(".hwc-backup/meta.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["sourceReads"][0]["kind"], "btrfs");
    assert!(meta["sourceReads"][0]["takenAt"].is_string(), "{meta}");
    // Restored to its original path.
    std::fs::remove_file(&rel).unwrap();
    let o = env.run("restore", &["latest", &s(&rel), &s(&rel)]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(std::fs::read_to_string(&rel).unwrap(), "hello\n");
    assert_eq!(fs.subvolumes(), vec!["home".to_string()]);
}

#[test]
fn a_failed_run_leaves_no_snapshot_and_a_killed_runs_leftovers_go_but_nothing_else() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    for i in 0..6000 {
        write(&src.join(format!("d{}/f{i}", i % 60)), format!("{i}"));
    }
    // A failure during the build: a destination too small for the data.
    let small = env.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let tmpfs = Mount::tmpfs(&small, "size=64k");
    let o = env
        .cmd(&["now", "--source"])
        .arg(&src)
        .args(["--dest", &s(&small), "--host", HOST, "--state-dir", &s(&env.state), "--source-snapshots", "btrfs"])
        .output()
        .unwrap();
    assert_ne!(code(&o), 0, "the run must fail: {}", show(&o));
    assert_eq!(fs.subvolumes(), vec!["data".to_string()], "a failed run removes its snapshot: {}", show(&o));
    drop(tmpfs);

    // kill -9 at moments spread over a whole run (before the snapshot exists, while the walk
    // reads it, while it is removed), each shifted by a few random milliseconds: at most the
    // killed run's own snapshot is left, and the next run removes it.
    let started = Instant::now();
    let o = backup(&env, &src, "btrfs", &["--threads", "1"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let whole = started.elapsed();
    for k in 0..6u32 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let jitter = Duration::from_nanos(u64::from(now.subsec_nanos() % 20_000_000));
        let mut child = env
            .cmd(&["now", "--source"])
            .arg(&src)
            .args(env.target_args())
            .args(["--source-snapshots", "btrfs", "--threads", "1", "--no-prune"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(whole * k / 6 + jitter);
        let _ = child.kill(); // SIGKILL (a no-op when it has already ended)
        child.wait().unwrap();
        let left = fs.subvolumes();
        assert!(left.len() <= 2, "trial {k}: more than the killed run's snapshot left: {left:?}");
        if let Some(ours) = left.get(1) {
            assert!(ours.starts_with(&format!("data/{PRIVATE}/hwc-backup-")), "trial {k}: {left:?}");
        }
        let o = backup(&env, &src, "btrfs", &[]);
        assert_eq!(code(&o), 0, "trial {k}: {}", show(&o));
        assert_eq!(fs.subvolumes(), vec!["data".to_string()], "trial {k}: the next run cleans up");
    }

    // kill -9 while the walk reads from the snapshot.
    let mut child = env
        .cmd(&["now", "--source"])
        .arg(&src)
        .args(env.target_args())
        .args(["--source-snapshots", "btrfs", "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs.subvolumes().len() < 2 {
        assert!(Instant::now() < deadline, "no snapshot appeared");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = fs.subvolumes();
    assert_eq!(left.len(), 2, "the killed run's snapshot is still there: {left:?}");
    assert!(left[1].starts_with(&format!("data/{PRIVATE}/hwc-backup-")), "{left:?}");

    // Look-alikes that are not ours: a writable subvolume with our name in our directory, a
    // read-only snapshot with another name there, and one with our name outside it.
    let private = src.join(PRIVATE);
    btrfs(&["subvolume", "create"], &private.join("hwc-backup-999999-1-0"));
    let o =
        Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&src).arg(private.join("mine-keep")).output();
    assert!(o.unwrap().status.success());
    let o = Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(&src)
        .arg(fs.at.join("hwc-backup-999998-1-0"))
        .output();
    assert!(o.unwrap().status.success());

    let o = backup(&env, &src, "btrfs", &[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let mut left = fs.subvolumes();
    left.sort();
    let mut want = vec![
        "data".to_string(),
        format!("data/{PRIVATE}/hwc-backup-999999-1-0"),
        format!("data/{PRIVATE}/mine-keep"),
        "hwc-backup-999998-1-0".to_string(),
    ];
    want.sort();
    assert_eq!(left, want, "only the killed run's snapshot is removed");
    // Our directory, kept while it holds what is not ours, is never part of a snapshot.
    let r = report(&o);
    let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap());
    assert!(!snap.join(src.strip_prefix("/").unwrap()).join(PRIVATE).exists());
}

#[test]
fn a_symlink_where_the_snapshots_go_is_refused_and_its_target_untouched() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    write(&src.join("file"), "x");
    let victim = fs.at.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, src.join(PRIVATE)).unwrap();
    let o = backup(&env, &src, "btrfs", &[]);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(show(&o).contains(PRIVATE), "the error names the path: {}", show(&o));
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "nothing was created in the symlink's target");
    assert_eq!(fs.subvolumes(), vec!["data".to_string()]);
    assert!(std::fs::symlink_metadata(src.join(PRIVATE)).unwrap().file_type().is_symlink());
    // "auto" reads live instead, and says why.
    let o = backup(&env, &src, "auto", &[]);
    assert!(code(&o) <= 1, "{}", show(&o));
    let r = report(&o);
    assert_eq!(r["sourceReads"][0]["kind"], "live", "{r}");
    assert!(r["sourceReads"][0]["note"].as_str().unwrap().contains(PRIVATE), "{r}");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    assert_eq!(fs.subvolumes(), vec!["data".to_string()]);
}

#[test]
fn auto_reads_a_source_on_no_snapshottable_volume_live_and_btrfs_zfs_lvm_refuse_it() {
    let env = Env::new();
    write(&env.src.join("f"), "x");
    let o = env.snapshot_at("2025-01-15T02:00:00+01:00", &["--source-snapshots", "auto", "--json"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    assert_eq!(r["sourceReads"][0]["kind"], "live", "{r}");
    let o = env.snapshot_at("2025-01-16T02:00:00+01:00", &["--source-snapshots", "btrfs"]);
    assert_ne!(code(&o), 0, "btrfs on a source that is not on btrfs fails: {}", show(&o));
    assert!(show(&o).contains("not btrfs"), "{}", show(&o));
    // "zfs" and "lvm" on a source that is neither: refused, naming the source and why.
    let bin = env.dir.path().join("no-zfs-bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("zfs"), "#!/bin/sh\nexit 0\n").unwrap();
    assert!(Command::new("chmod").arg("755").arg(bin.join("zfs")).status().unwrap().success());
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());
    for (kind, why) in [("zfs", "no ZFS dataset"), ("lvm", "not on an LVM logical volume")] {
        let o = env
            .cmd(&["now", "--source"])
            .arg(&env.src)
            .args(env.target_args())
            .args(["--now", "2025-01-16T02:00:00+01:00"])
            .args(["--source-snapshots", kind])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_ne!(code(&o), 0, "{}", show(&o));
        assert!(show(&o).contains(&s(&env.src)) && show(&o).contains(why), "{kind}: {}", show(&o));
    }
    assert_eq!(env.snapshot_ids().len(), 1, "nothing published by the refused runs");
}

#[test]
fn a_source_over_several_filesystems_snapshots_each_or_only_the_first_with_one_file_system() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    write(&src.join("top.txt"), "top\n");
    // Another subvolume mounted below the source, a tmpfs mounted below it, and a nested
    // subvolume that is no mount point (a snapshot shows it as an empty placeholder).
    let other = fs.subvolume("other");
    write(&other.join("o.txt"), "other\n");
    std::fs::create_dir(src.join("mnt")).unwrap();
    let dev = sh(&format!("findmnt -n -o SOURCE '{}'", s(&fs.at))).trim().to_string();
    let _mnt = Mount::with(&["-o", "subvol=other", &dev], &src.join("mnt"));
    std::fs::create_dir(src.join("tmp")).unwrap();
    let _tmp = Mount::tmpfs(&src.join("tmp"), "size=1m");
    write(&src.join("tmp/t.txt"), "tmpfs\n");
    btrfs(&["subvolume", "create"], &src.join("nested"));
    write(&src.join("nested/n.txt"), "nested\n");

    let mut plan = plan_json(&env);
    plan["sources"] = serde_json::json!([s(&src)]);
    plan["oneFileSystem"] = false.into();
    plan["sourceSnapshots"] = "btrfs".into();
    let file = write_plan(&env, "plan.json", &plan.to_string());
    let o = env.cmd(&["now", "--json", "--config"]).arg(&file).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    let read = &r["sourceReads"][0];
    assert_eq!(read["kind"], "btrfs", "{r}");
    assert_eq!(read["mounts"][0]["source"], s(&src.join("mnt")), "{r}");
    assert_eq!(read["mounts"][0]["kind"], "btrfs", "{r}");
    assert_eq!(read["mounts"][1]["source"], s(&src.join("tmp")), "{r}");
    assert_eq!(read["mounts"][1]["kind"], "live", "{r}");
    let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap()).join(src.strip_prefix("/").unwrap());
    let mut want = vec!["mnt", "mnt/o.txt", "nested", "nested/n.txt", "tmp", "tmp/t.txt", "top.txt"];
    assert_eq!(tree(&snap), want, "every filesystem below the source, at its original path");
    let mut subvolumes = fs.subvolumes();
    subvolumes.sort();
    assert_eq!(subvolumes, vec!["data", "data/nested", "other"], "both snapshots are removed");

    // With oneFileSystem, only the source's own filesystem: the mount points stay empty.
    plan["oneFileSystem"] = true.into();
    let file = write_plan(&env, "plan.json", &plan.to_string());
    let o = env.cmd(&["now", "--json", "--config"]).arg(&file).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    assert!(r["sourceReads"][0].get("mounts").is_none(), "{r}");
    let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap()).join(src.strip_prefix("/").unwrap());
    want.retain(|p| !p.contains('/'));
    assert_eq!(tree(&snap), want);
    assert_eq!(fs.subvolumes().len(), 3);
}

/// Fake `systemctl` and `systemd-run` (this container runs no systemd; the real-systemd VM
/// suite covers the real ones): each call is logged with the number of source snapshots
/// present at that moment; `off.service` is inactive; stopping or freezing `$FAIL_STOP` fails.
fn fake_systemd(env: &Env, snapdir: &Path) -> (PathBuf, PathBuf) {
    let bin = env.dir.path().join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    let log = env.dir.path().join("systemd.log");
    let script = format!(
        r#"#!/bin/sh
n=$(ls -A '{snapdir}' 2>/dev/null | wc -l)
echo "$(basename "$0") $* snapshots=$n" >> '{log}'
if [ "$(basename "$0")" = systemctl ]; then
  case "$1" in
    is-active) [ "$3" = off.service ] && exit 3 ;;
    stop|freeze) [ -n "$FAIL_STOP" ] && [ "$2" = "$FAIL_STOP" ] && exit 1 ;;
  esac
fi
exit 0
"#,
        snapdir = s(snapdir),
        log = s(&log)
    );
    for name in ["systemctl", "systemd-run"] {
        let p = bin.join(name);
        std::fs::write(&p, &script).unwrap();
        assert!(Command::new("chmod").arg("755").arg(&p).status().unwrap().success());
    }
    (bin, log)
}

fn quiesce_plan(env: &Env, src: &Path, kind: &str) -> PathBuf {
    let mut plan = plan_json(env);
    plan["sources"] = serde_json::json!([s(src)]);
    plan["sourceSnapshots"] = kind.into();
    plan["metrics"]["textfileDir"] = s(&env.dir.path().join("prom")).into();
    plan["quiesce"] = serde_json::json!([
        { "unit": "db.service", "mode": "stop" },
        { "unit": "app.service", "mode": "freeze" },
        { "unit": "off.service", "mode": "stop" },
    ]);
    write_plan(env, "plan.json", &plan.to_string())
}

fn run_with(env: &Env, plan: &Path, bin: &Path, fail_stop: &str) -> Output {
    let path = format!("{}:{}", s(bin), std::env::var("PATH").unwrap_or_default());
    env.cmd(&["now", "--json", "--config"]).arg(plan).env("PATH", path).env("FAIL_STOP", fail_stop).output().unwrap()
}

#[test]
fn quiesced_services_are_held_only_while_the_snapshots_are_taken() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    for i in 0..2000 {
        write(&src.join(format!("d{}/f{i}", i % 20)), format!("{i}"));
    }
    let (bin, log) = fake_systemd(&env, &src.join(PRIVATE));
    let plan = quiesce_plan(&env, &src, "btrfs");
    let o = run_with(&env, &plan, &bin, "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let calls = std::fs::read_to_string(&log).unwrap();
    let pid_timer = |verb: &str| {
        calls
            .lines()
            .find(|l| {
                // systemctl by its absolute path (found on PATH): the service manager would look a
                // bare name up in its own search path.
                l.starts_with("systemd-run")
                    && l.ends_with(&format!(
                        "-- {} {verb} {} snapshots=0",
                        s(&bin.join("systemctl")),
                        match verb {
                            "start" => "db.service",
                            _ => "app.service",
                        }
                    ))
            })
            .unwrap_or_else(|| panic!("no safety timer for {verb}:\n{calls}"))
            .to_string()
    };
    let start_timer = pid_timer("start");
    assert!(start_timer.contains("--on-active="), "{start_timer}");
    let order: Vec<&str> = calls.lines().filter(|l| !l.starts_with("systemctl is-active")).collect();
    let pos = |needle: &str| {
        order.iter().position(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("no {needle}:\n{calls}"))
    };
    // Timers armed before anything is stopped; stopped with no snapshot yet; started again
    // while the snapshot exists (taken, and still being read: not after the copy).
    assert!(pos("systemd-run") < pos("systemctl stop db.service"), "{calls}");
    assert!(order[pos("systemctl stop db.service")].ends_with("snapshots=0"), "{calls}");
    assert!(order[pos("systemctl freeze app.service")].ends_with("snapshots=0"), "{calls}");
    assert!(order[pos("systemctl thaw app.service")].ends_with("snapshots=1"), "{calls}");
    assert!(order[pos("systemctl start db.service")].ends_with("snapshots=1"), "{calls}");
    assert!(
        pos("systemctl thaw app.service") < pos("systemctl start db.service"),
        "last held, first released: {calls}"
    );
    assert!(order.iter().any(|l| l.starts_with("systemctl stop hwc-backup-unquiesce-")), "timers disarmed: {calls}");
    assert!(!calls.contains("stop off.service"), "an inactive unit is left alone: {calls}");
    let r = report(&o);
    let held = r["heldUnits"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(held.len(), 3, "{r}");
    let by = |u: &str| held.iter().find(|h| h["unit"] == u).unwrap().clone();
    assert_eq!(by("app.service")["mode"], "freeze");
    assert!(by("db.service")["downMs"].as_u64().unwrap() < 5000, "{r}");
    assert_eq!(by("db.service")["wholeWalk"], false);
    assert!(by("off.service")["downMs"].is_null(), "{r}");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(r["snapshotPath"].as_str().unwrap()).join(".hwc-backup/meta.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["heldUnits"], r["heldUnits"]);
    let prom = std::fs::read_to_string(env.dir.path().join(format!("prom/hwc_backup_{HOST}.prom"))).unwrap();
    let line = prom
        .lines()
        .find(|l| l.starts_with("hwc_backup_newest_snapshot_unit_down_seconds{") && l.contains("unit=\"db.service\""))
        .unwrap_or_else(|| panic!("no downtime metric for db.service:\n{prom}"));
    let secs: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 0.0 && secs < 5.0, "{line}");

    // A unit that fails to stop: the run fails, and what was held is released.
    std::fs::write(&log, "").unwrap();
    let o = run_with(&env, &plan, &bin, "app.service");
    assert_ne!(code(&o), 0, "{}", show(&o));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains("systemctl start db.service"), "{calls}");
    assert!(calls.contains("systemctl thaw app.service"), "{calls}");
    assert_eq!(fs.subvolumes(), vec!["data".to_string()], "no snapshot was taken or left");

    // Without filesystem snapshots the units stay held for the whole walk, and say so.
    std::fs::write(&log, "").unwrap();
    let plan = quiesce_plan(&env, &src, "none");
    let o = run_with(&env, &plan, &bin, "");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    let held = r["heldUnits"].as_array().unwrap();
    assert!(held.iter().any(|h| h["unit"] == "db.service" && h["wholeWalk"] == true), "{r}");
}

#[test]
fn auto_reads_live_when_the_snapshot_fails_and_the_plan_names_the_btrfs_program() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    write(&src.join("f"), "x");
    let mut plan = plan_json(&env);
    plan["sources"] = serde_json::json!([s(&src)]);
    plan["sourceSnapshots"] = "auto".into();
    // A btrfs program that always fails: the snapshot cannot be taken.
    plan["btrfs"] = "/bin/false".into();
    let file = write_plan(&env, "plan.json", &plan.to_string());
    let o = env.cmd(&["now", "--json", "--config"]).arg(&file).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    assert_eq!(r["sourceReads"][0]["kind"], "live", "{r}");
    assert!(r["sourceReads"][0]["note"].as_str().unwrap().contains("/bin/false"), "{r}");
    let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap()).join(src.strip_prefix("/").unwrap());
    assert_eq!(tree(&snap), vec!["f"], "the private directory is not backed up");
    assert!(!src.join(PRIVATE).exists());
    // With "btrfs" the same failure fails the run.
    plan["sourceSnapshots"] = "btrfs".into();
    let file = write_plan(&env, "plan.json", &plan.to_string());
    let o = env.cmd(&["now", "--json", "--config"]).arg(&file).output().unwrap();
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(!src.join(PRIVATE).exists());
}

#[test]
fn with_the_state_directory_on_the_same_btrfs_the_snapshots_go_there_and_the_source_is_untouched() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    let state = fs.subvolume("state"); // another subvolume of the same filesystem
    for i in 0..6000 {
        write(&src.join(format!("d{}/f{i}", i % 60)), format!("{i}"));
    }
    let before = std::fs::metadata(&src).unwrap();
    let run = || {
        let mut c = env.cmd(&["now", "--source"]);
        c.arg(&src).args(["--dest", &s(&env.dest), "--host", HOST, "--state-dir", &s(&state)]).args([
            "--source-snapshots",
            "btrfs",
            "--threads",
            "1",
        ]);
        c
    };
    let mut child = run().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let private = state.join("source-snapshots");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&private).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "no snapshot appeared in {}", private.display());
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!src.join(PRIVATE).exists(), "nothing is written into the source's subvolume");
    child.kill().unwrap();
    child.wait().unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&private).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o700);
    // A look-alike that is not ours: writable, our name.
    btrfs(&["subvolume", "create"], &private.join("hwc-backup-999999-1-0"));
    let o = run().arg("--json").output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    assert_eq!(r["sourceReads"][0]["kind"], "btrfs", "{r}");
    let mut left = fs.subvolumes();
    left.sort();
    assert_eq!(left, vec!["data", "state", "state/source-snapshots/hwc-backup-999999-1-0"], "the killed run's is gone");
    let after = std::fs::metadata(&src).unwrap();
    assert_eq!(
        (before.mtime(), before.ctime()),
        (after.mtime(), after.ctime()),
        "the source's root was not even touched"
    );
}

/// The state directory's `source-snapshots/` is a symlink to a directory that would pass
/// every check (root's, 0700, on the same btrfs) and holds a leftover with our name: the run
/// refuses it, naming it, and creates, deletes and changes nothing at its target.
#[test]
fn a_symlink_at_the_state_directorys_snapshot_place_is_refused_and_its_target_untouched() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let src = fs.subvolume("data");
    let state = fs.subvolume("state");
    write(&src.join("file"), "x");
    let victim = fs.at.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let look_alike = victim.join("hwc-backup-999999-1-0");
    let o = Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&src).arg(&look_alike).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    std::os::unix::fs::symlink(&victim, state.join("source-snapshots")).unwrap();
    let listing = |p: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let before = (listing(&victim), fs.subvolumes());
    let run = |kind: &str| {
        let mut c = env.cmd(&["now", "--source"]);
        c.arg(&src).args(["--dest", &s(&env.dest), "--host", HOST, "--state-dir", &s(&state)]);
        c.args(["--source-snapshots", kind, "--json", "--no-prune"]).output().unwrap()
    };
    let o = run("btrfs");
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(show(&o).contains("source-snapshots"), "the error names the path: {}", show(&o));
    assert_eq!((listing(&victim), fs.subvolumes()), before, "nothing created or deleted at the target");
    assert!(std::fs::symlink_metadata(state.join("source-snapshots")).unwrap().file_type().is_symlink());
    assert!(!src.join(PRIVATE).exists(), "no fallback into the source's subvolume either");
    // "auto" does not follow it either: it reads live and says why (and nothing about
    // services: none are held).
    let o = run("auto");
    assert!(code(&o) <= 1, "{}", show(&o));
    assert_eq!(report(&o)["sourceReads"][0]["kind"], "live", "{}", show(&o));
    assert!(show(&o).contains("source-snapshots: is a symlink"), "{}", show(&o));
    assert!(!show(&o).contains("quiesced services"), "{}", show(&o));
    assert_eq!((listing(&victim), fs.subvolumes()), before, "auto: nothing created or deleted at the target");
}

/// Issue 15, item 4: the run summary, meta.json and `status` (text and `--json`) say per
/// source whether it was read from a filesystem snapshot and which kind, and which services
/// were held and for how long.
#[test]
fn summary_meta_and_status_say_how_each_source_was_read_and_what_was_held() {
    let env = Env::new();
    let fs = Btrfs::new(&env);
    let on_btrfs = fs.subvolume("data");
    write(&on_btrfs.join("a"), "a");
    // env.src lies on the machine's own filesystem, not btrfs: read live under "auto".
    write(&env.src.join("b"), "b");
    let (bin, _log) = fake_systemd(&env, &on_btrfs.join(PRIVATE));
    let mut plan = plan_json(&env);
    plan["sources"] = serde_json::json!([s(&on_btrfs), s(&env.src)]);
    plan["sourceSnapshots"] = "auto".into();
    plan["quiesce"] = serde_json::json!([
        { "unit": "db.service", "mode": "stop" },
        { "unit": "off.service", "mode": "freeze" },
    ]);
    let plan = write_plan(&env, "plan.json", &plan.to_string());
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());

    // The run summary (text).
    let o = env.cmd(&["now", "--config"]).arg(&plan).env("PATH", &path).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let summary = String::from_utf8_lossy(&o.stdout).into_owned();
    let btrfs_line = format!("{}: read from a btrfs snapshot of {} taken at ", s(&on_btrfs), s(&on_btrfs));
    assert!(summary.contains(&btrfs_line), "{summary}");
    assert!(summary.contains(&format!("{}: read live (", s(&env.src))), "{summary}");
    assert!(
        summary.contains("db.service stopped for ") && summary.contains("s while the snapshots were taken"),
        "{summary}"
    );
    assert!(summary.contains("off.service was not running; left alone"), "{summary}");

    // meta.json of the snapshot.
    let snap = env.dest.join(HOST).join("latest");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(snap.join(".hwc-backup/meta.json")).unwrap()).unwrap();
    let kinds: Vec<&str> =
        meta["sourceReads"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["btrfs", "live"], "{meta}");
    assert!(meta["sourceReads"][0]["takenAt"].is_string(), "{meta}");
    assert!(meta["sourceReads"][1]["note"].is_string(), "{meta}");
    let db = meta["heldUnits"].as_array().unwrap().iter().find(|h| h["unit"] == "db.service").unwrap().clone();
    assert_eq!(db["mode"], "stop", "{meta}");
    assert!(db["downMs"].as_u64().is_some_and(|ms| ms < 5000), "{meta}");

    // status, text: the newest snapshot's sources and held services.
    let o = env.cmd(&["status", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let status = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(status.contains("newest snapshot daily/"), "{status}");
    assert!(status.contains(&btrfs_line), "{status}");
    assert!(status.contains(&format!("{}: read live (", s(&env.src))), "{status}");
    assert!(status.contains("db.service stopped for "), "{status}");

    // status --json: every snapshot carries its sourceReads and heldUnits, as meta.json.
    let o = env.cmd(&["status", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let newest = &j["snapshots"][0];
    assert_eq!(newest["sourceReads"], meta["sourceReads"], "{j}");
    assert_eq!(newest["heldUnits"], meta["heldUnits"], "{j}");
}

/// A fake `zfs` on PATH that logs its argv and emulates one dataset, `tank/data`, mounted at
/// `mp` (a tmpfs): `zfs snapshot` copies the tree into `mp/.zfs/snapshot/<name>/` (as ZFS shows
/// a snapshot) and then changes a live file, as a writer after the instant would; properties
/// live in `state/`. Returns (PATH with it first, the log).
fn fake_zfs(env: &Env, mp: &Path) -> (String, PathBuf) {
    let bin = env.dir.path().join("zfs-bin");
    let state = env.dir.path().join("zfs-state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let log = env.dir.path().join("zfs.log");
    let script = format!(
        r#"#!/bin/bash
MP='{mp}' STATE='{state}'
echo "zfs $*" >>'{log}'
last=${{@: -1}}
case "$1" in
list)
  case " $* " in
  *" -t filesystem "*) printf 'tank/data\t%s\ntank/other\t/nonexistent\n' "$MP" ;;
  *" -t snapshot "*)
    [ "$last" = tank/data ] || {{ echo "cannot open '$last': dataset does not exist" >&2; exit 1; }}
    for d in "$MP"/.zfs/snapshot/*; do
      [ -d "$d" ] || continue
      n=${{d##*/}}; p=-; [ -f "$STATE/$n" ] && p=$(cat "$STATE/$n")
      printf 'tank/data@%s\t%s\n' "$n" "$p"
    done ;;
  esac ;;
snapshot)
  ds=${{last%@*}} n=${{last#*@}}
  [ "$ds" = tank/data ] || {{ echo "cannot open '$ds': dataset does not exist" >&2; exit 1; }}
  d="$MP/.zfs/snapshot/$n"
  [ -e "$d" ] && {{ echo "cannot create snapshot '$last': dataset already exists" >&2; exit 1; }}
  mkdir -p "$d" && (cd "$MP" && tar --exclude=./.zfs -cf - .) | (cd "$d" && tar -xpf -) || exit 1
  [ "$2" = -o ] && echo "${{3#*=}}" >"$STATE/$n"
  [ -f "$MP/home/alice/notes.txt" ] && echo "written after the snapshot" >"$MP/home/alice/notes.txt"
  [ -n "$ZFS_FAKE_SLOW" ] && sleep "$ZFS_FAKE_SLOW"
  exit 0 ;;
destroy)
  n=${{last#*@}}
  [ "${{last%@*}}" = tank/data ] && [ -d "$MP/.zfs/snapshot/$n" ] || {{ echo "could not find any snapshots to destroy" >&2; exit 1; }}
  rm -rf "$MP/.zfs/snapshot/$n" "$STATE/$n" ;;
*) echo "fake zfs: unexpected $*" >&2; exit 2 ;;
esac
"#,
        mp = s(mp),
        state = s(&state),
        log = s(&log)
    );
    std::fs::write(bin.join("zfs"), script).unwrap();
    assert!(Command::new("chmod").arg("755").arg(bin.join("zfs")).status().unwrap().success());
    (format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default()), log)
}

fn zfs_snapshots(mp: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(mp.join(".zfs/snapshot"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn zfs_snapshots_follow_the_command_sequence_against_a_recorded_fake_zfs() {
    let env = Env::new();
    let mp = env.dir.path().join("tank");
    std::fs::create_dir(&mp).unwrap();
    let _tank = Mount::tmpfs(&mp, "size=64m");
    let (path, log) = fake_zfs(&env, &mp);
    let src = mp.join("home");
    write(&src.join("alice/notes.txt"), "before the snapshot\n");
    write(&src.join("alice/skip.tmp"), "excluded\n");
    for i in 0..3000 {
        write(&src.join(format!("bulk/{}/f{i}", i % 30)), format!("{i}"));
    }
    let now = |extra: &[&str]| {
        env.cmd(&["now", "--json", "--no-prune", "--source"])
            .arg(&src)
            .args(env.target_args())
            .args(["--source-snapshots", "zfs", "--exclude", &format!("{}/alice/*.tmp", s(&src))])
            .args(extra)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let o = now(&[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = report(&o);
    let read = &r["sourceReads"][0];
    assert_eq!(read["kind"], "zfs", "{r}");
    assert_eq!(read["volume"], "tank/data", "{r}");
    assert_eq!(read["subvolume"], s(&mp), "{r}");
    assert!(read["takenAt"].is_string(), "{r}");
    // Read from the snapshot: the file as it was at the instant, not as written after it.
    let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap());
    let stored = snap.join(src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(stored.join("alice/notes.txt")).unwrap(), "before the snapshot\n");
    assert_eq!(std::fs::read_to_string(src.join("alice/notes.txt")).unwrap(), "written after the snapshot\n");
    assert_eq!(r["counts"]["excluded"], 1, "an exclude matches the original path: {r}");
    let manifest = std::fs::read_to_string(snap.join(".hwc-backup/manifest.b3")).unwrap();
    let rel = src.join("alice/notes.txt");
    assert!(manifest.contains(&format!("  {}\n", s(rel.strip_prefix("/").unwrap()))), "{manifest}");
    assert!(!manifest.contains(".zfs") && !manifest.contains("hwc-backup-"), "{manifest}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(snap.join(".hwc-backup/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["sourceReads"][0]["kind"], "zfs", "{meta}");
    assert_eq!(meta["sourceReads"][0]["volume"], "tank/data", "{meta}");
    // The command sequence: find the dataset, clean up, snapshot (with our property), destroy.
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 4, "{calls}");
    assert_eq!(lines[0], "zfs list -H -o name,mountpoint -t filesystem", "{calls}");
    assert_eq!(lines[1], "zfs list -H -o name,hwc-backup:source-snapshot -t snapshot -d 1 tank/data", "{calls}");
    let name = lines[2]
        .strip_prefix("zfs snapshot -o hwc-backup:source-snapshot=yes tank/data@")
        .unwrap_or_else(|| panic!("{calls}"));
    assert!(name.starts_with("hwc-backup-") && name.split('-').count() == 5, "{calls}");
    assert_eq!(lines[3], format!("zfs destroy tank/data@{name}"), "{calls}");
    assert!(zfs_snapshots(&mp).is_empty(), "no snapshot left");
    // status says which kind each source of the newest snapshot was read from.
    let o = env.cmd(&["status"]).args(env.target_args()).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!("{}: read from a zfs snapshot of tank/data (mounted at {})", s(&src), s(&mp))),
        "{said}"
    );
    let o = env.cmd(&["status", "--json"]).args(env.target_args()).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(j["snapshots"][0]["sourceReads"][0]["kind"], "zfs", "{j}");
    // Restored to its original path.
    std::fs::remove_file(&rel).unwrap();
    let o = env.run("restore", &["latest", &s(&rel), &s(&rel)]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(std::fs::read_to_string(&rel).unwrap(), "before the snapshot\n");

    // A failed run (a destination too small) destroys its snapshot too.
    let small = env.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let tmpfs = Mount::tmpfs(&small, "size=64k");
    let o = env
        .cmd(&["now", "--source"])
        .arg(&src)
        .args(["--dest", &s(&small), "--host", HOST, "--state-dir", &s(&env.state), "--source-snapshots", "zfs"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_ne!(code(&o), 0, "the run must fail: {}", show(&o));
    assert!(zfs_snapshots(&mp).is_empty(), "a failed run destroys its snapshot: {}", show(&o));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .starts_with("zfs destroy tank/data@hwc-backup-"));
    drop(tmpfs);

    // kill -9 while the walk reads from the snapshot: it stays, and the next run destroys it.
    let mut child = env
        .cmd(&["now", "--source"])
        .arg(&src)
        .args(env.target_args())
        .args(["--source-snapshots", "zfs", "--threads", "1"])
        .env("PATH", &path)
        .env("ZFS_FAKE_SLOW", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // (Taken, with its property: a ZFS snapshot and its properties come into being at once.)
    let state = env.dir.path().join("zfs-state");
    while std::fs::read_dir(&state).unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "no snapshot appeared");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = zfs_snapshots(&mp);
    assert_eq!(left.len(), 1, "the killed run's snapshot is still there: {left:?}");
    // Look-alikes that are not ours: our name without our property, our property on another
    // name, our name and property of a process still running (pid 1), someone else's.
    let snapdir = mp.join(".zfs/snapshot");
    for (name, prop) in [
        ("hwc-backup-999999-1-0", None),
        ("hwc-backup-999999-1-0-x", Some("yes")),
        ("hwc-backup-1-1-0", Some("yes")),
        ("daily-2025", None),
    ] {
        std::fs::create_dir(snapdir.join(name)).unwrap();
        if let Some(p) = prop {
            std::fs::write(env.dir.path().join("zfs-state").join(name), p).unwrap();
        }
    }
    let o = now(&[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let mut want = vec!["daily-2025", "hwc-backup-1-1-0", "hwc-backup-999999-1-0", "hwc-backup-999999-1-0-x"];
    want.sort();
    assert_eq!(zfs_snapshots(&mp), want, "only the killed run's snapshot is destroyed");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(&format!("zfs destroy tank/data@{}", left[0])), "{calls}");
    assert_eq!(calls.matches("zfs destroy").count(), 4, "three runs' own, one leftover: {calls}");

    // A source whose mount zfs does not list is refused under "zfs", read live under "auto"
    // (a tmpfs is no ZFS dataset to mountinfo).
    let elsewhere = env.dir.path().join("elsewhere");
    write(&elsewhere.join("f"), "x");
    let o = env
        .cmd(&["now", "--json", "--no-prune", "--source"])
        .arg(&elsewhere)
        .args(env.target_args())
        .args(["--source-snapshots", "zfs"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(show(&o).contains(&s(&elsewhere)) && show(&o).contains("no ZFS dataset zfs lists"), "{}", show(&o));
}
