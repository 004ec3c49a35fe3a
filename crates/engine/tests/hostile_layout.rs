//! Whoever can write the backup disk can plant a symlink at any fixed name of a host
//! directory. This table plants one — to a victim directory and to a victim file outside the
//! destination — at every fixed name, runs every store operation against it, and checks that
//! the victims never change and that the operations that must refuse name what they refused.
//!
//! The victim directory is dressed as a tier (it holds a copy of a real snapshot with an old
//! name), so an operation that followed the symlink would find something to expire or trash.

#![allow(clippy::disallowed_methods)] // scratch trees are built by path

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hwc_backup_engine::plan::{Count, Plan};
use hwc_backup_engine::run::{self, RunOptions};
use hwc_backup_engine::store::layout::HostDir;
use hwc_backup_engine::store::lock::HostLock;
use hwc_backup_engine::store::meta::RunState;
use hwc_backup_engine::store::{prune, restore, verify};

const HOST: &str = "h";

/// The fixed names of a host directory (`""` is the host directory itself).
const FIXED: [&str; 10] =
    ["", ".incomplete", ".trash", ".lock", "latest", "daily", "weekly", "monthly", "hourly", "yearly"];

struct Case {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dest: PathBuf,
    victim_dir: PathBuf,
    victim_file: PathBuf,
}

impl Case {
    fn host(&self) -> PathBuf {
        self.dest.join(HOST)
    }

    fn plan(&self) -> Plan {
        let mut plan = Plan::ad_hoc(HOST.into(), vec![self.src.clone()], self.dest.clone(), vec![]);
        // Keep one daily snapshot only, so every prune has something to expire.
        plan.retention.daily = Count::N(1);
        plan.retention.weekly = Count::N(0);
        plan.retention.monthly = Count::N(0);
        plan
    }

    fn run_at(&self, when: &str) -> run::RunReport {
        let plan = self.plan();
        let mut opts = RunOptions::for_plan(&plan);
        opts.now = Some(when.parse().unwrap());
        opts.prune = false;
        run::run(&plan, &opts, &|_| {})
    }
}

fn setup() -> Case {
    let tmp = tempfile::Builder::new().prefix("hwc-hostile-").tempdir_in("/var/tmp").unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    std::fs::write(src.join("sub/b.txt"), "beta").unwrap();
    let c = Case {
        victim_dir: tmp.path().join("victim"),
        victim_file: tmp.path().join("victim.txt"),
        src,
        dest,
        _tmp: tmp,
    };
    for when in ["2025-01-10T02:00:00+00:00[UTC]", "2025-01-11T02:00:00+00:00[UTC]"] {
        let r = c.run_at(when);
        assert_eq!(r.state, RunState::Success, "setup run failed: {:?}", r.error);
    }
    // The victim directory looks like a tier holding an old snapshot.
    std::fs::create_dir_all(&c.victim_dir).unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(c.host().join("daily/2025-01-10_02-00-00"))
        .arg(c.victim_dir.join("2024-01-01_00-00-00"))
        .status();
    assert!(copy.unwrap().success());
    std::fs::write(c.victim_dir.join("keep.txt"), "mine").unwrap();
    std::fs::write(&c.victim_file, "precious").unwrap();
    std::fs::set_permissions(&c.victim_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    c
}

/// Every entry below `root` (and `root` itself): type, mode, owner, size, mtime, content.
fn fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            out.insert(p, "missing".into());
            continue;
        };
        let content = if md.is_file() {
            format!("{:?}", std::fs::read(&p).unwrap())
        } else if md.is_symlink() {
            format!("-> {:?}", std::fs::read_link(&p).unwrap())
        } else {
            String::new()
        };
        out.insert(
            p.clone(),
            format!(
                "{:o} {}:{} {} {}.{} {content}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.len(),
                md.mtime(),
                md.mtime_nsec()
            ),
        );
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

/// Moves what is at `fixed` aside and puts a symlink to `target` there.
fn plant(c: &Case, fixed: &str, target: &Path) -> PathBuf {
    let at = if fixed.is_empty() { c.host() } else { c.host().join(fixed) };
    if std::fs::symlink_metadata(&at).is_ok() {
        let mut aside = at.clone().into_os_string();
        aside.push(".orig");
        std::fs::rename(&at, aside).unwrap();
    }
    std::os::unix::fs::symlink(target, &at).unwrap();
    at
}

type Op = fn(&Case) -> Result<(), String>;

fn op_now(c: &Case) -> Result<(), String> {
    let plan = c.plan();
    let mut opts = RunOptions::for_plan(&plan);
    opts.now = Some("2025-01-12T02:00:00+00:00[UTC]".parse().unwrap());
    let r = run::run(&plan, &opts, &|_| {});
    match r.state {
        RunState::Failed => Err(r.error.unwrap_or_default()),
        _ => Ok(()),
    }
}

fn op_prune(c: &Case) -> Result<(), String> {
    let host = HostDir::open(&c.host()).map_err(|e| e.to_string())?;
    let lock = HostLock::acquire(&host, "prune").map_err(|e| e.to_string())?;
    let policy = c.plan().retention_policy().unwrap();
    let now = "2025-01-12T03:00:00Z".parse().unwrap();
    let p = prune::plan(&host.list().map_err(|e| e.to_string())?, &policy, now, "1000d");
    prune::execute(&host, &lock, &p).map_err(|e| e.to_string())?;
    drop(lock);
    prune::empty_trash(&host).map(|_| ()).map_err(|e| e.to_string())
}

fn op_trash(c: &Case) -> Result<(), String> {
    let host = HostDir::open(&c.host()).map_err(|e| e.to_string())?;
    prune::empty_trash(&host).map(|_| ()).map_err(|e| e.to_string())
}

fn op_latest(c: &Case) -> Result<(), String> {
    let host = HostDir::open(&c.host()).map_err(|e| e.to_string())?;
    let lock = HostLock::acquire(&host, "test").map_err(|e| e.to_string())?;
    host.refresh_latest(&lock).map_err(|e| e.to_string())
}

fn op_lock(c: &Case) -> Result<(), String> {
    let host = HostDir::open(&c.host()).map_err(|e| e.to_string())?;
    HostLock::acquire(&host, "test").map(|_| ()).map_err(|e| e.to_string())
}

fn op_verify(c: &Case) -> Result<(), String> {
    let host = HostDir::open(&c.host()).map_err(|e| e.to_string())?;
    for s in host.list().map_err(|e| e.to_string())? {
        verify::verify(&host, &s, 2, 0, &|_, _| {}).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn op_restore(c: &Case) -> Result<(), String> {
    let host = HostDir::open(&c.host()).map_err(|e| e.to_string())?;
    let snap = host.resolve("latest").map_err(|e| e.to_string())?;
    let target = c.dest.parent().unwrap().join("restored");
    let opts = restore::RestoreOptions { force: true, ..Default::default() };
    let tier = host.tier_of(&snap).map_err(|e| e.to_string())?;
    let r = restore::restore(&snap, &tier, &c.src.join("a.txt"), &target, opts).map(|_| ()).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&target);
    let _ = std::fs::remove_file(&target);
    r
}

fn op_status(c: &Case) -> Result<(), String> {
    let host = HostDir::open(&c.host()).map_err(|e| e.to_string())?;
    host.list().map(|_| ()).map_err(|e| e.to_string())
}

const OPS: [(&str, Op); 8] = [
    ("now", op_now),
    ("prune", op_prune),
    ("trash", op_trash),
    ("latest", op_latest),
    ("lock", op_lock),
    ("verify", op_verify),
    ("restore", op_restore),
    ("status", op_status),
];

/// Operations that write must refuse a planted symlink at any fixed name, naming it.
const WRITERS: [&str; 3] = ["now", "prune", "lock"];

#[test]
fn a_symlink_at_any_fixed_name_never_reaches_a_victim() {
    let mut checked = 0;
    for fixed in FIXED {
        for victim_is_dir in [true, false] {
            for (op_name, op) in OPS {
                let c = setup();
                let target = if victim_is_dir { &c.victim_dir } else { &c.victim_file };
                let before = (fingerprint(&c.victim_dir), fingerprint(&c.victim_file));
                let at = plant(&c, fixed, target);
                let result = op(&c);
                let after = (fingerprint(&c.victim_dir), fingerprint(&c.victim_file));
                let what = format!("{op_name} with {} -> {}", at.display(), target.display());
                assert!(before == after, "{what} changed a victim: {result:?}");
                if WRITERS.contains(&op_name) {
                    let err = result.expect_err(&format!("{what} did not refuse"));
                    assert!(err.contains(&*at.to_string_lossy()), "{what}: the error does not name it: {err}");
                }
                // The planted symlink itself is left as it was: refused, not "repaired".
                assert_eq!(std::fs::read_link(&at).unwrap(), *target, "{what} replaced the symlink");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, FIXED.len() * 2 * OPS.len());
}

#[test]
fn stray_files_in_incomplete_and_trash_are_removed_not_fatal() {
    let c = setup();
    std::fs::create_dir_all(c.host().join(".trash")).unwrap();
    std::fs::write(c.host().join(".incomplete/stray"), "x").unwrap();
    std::fs::write(c.host().join(".trash/stray"), "x").unwrap();
    std::os::unix::fs::symlink(&c.victim_dir, c.host().join(".incomplete/link")).unwrap();
    let before = fingerprint(&c.victim_dir);
    op_now(&c).unwrap();
    assert_eq!(before, fingerprint(&c.victim_dir));
    for d in [".incomplete", ".trash"] {
        let left: Vec<_> = std::fs::read_dir(c.host().join(d)).map(|r| r.collect()).unwrap_or_default();
        assert!(left.is_empty(), "{d} still holds {left:?}");
    }
}

#[test]
fn the_host_directory_is_created_private() {
    let c = setup();
    let mode = std::fs::metadata(c.host()).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_deep_tree_in_the_trash_is_deleted_without_recursion() {
    // 20 000 levels: far deeper than any stack-bounded recursion survives on a small thread
    // stack, and deeper than PATH_MAX, so it is built fd-relatively with rustix.
    let c = setup();
    let trash = c.host().join(".trash");
    std::fs::create_dir_all(&trash).unwrap();
    let mut fd =
        rustix::fs::open(&trash, rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty())
            .unwrap();
    for i in 0..20_000 {
        rustix::fs::mkdirat(&fd, "d", rustix::fs::Mode::from_raw_mode(if i % 1000 == 0 { 0o500 } else { 0o755 }))
            .unwrap();
        if i % 1000 == 0 {
            rustix::fs::openat(
                &fd,
                "f",
                rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::from_raw_mode(0o644),
            )
            .unwrap();
        }
        fd = rustix::fs::openat(
            &fd,
            "d",
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
    }
    drop(fd);
    let host = HostDir::open(&c.host()).unwrap();
    // On a thread with a small stack, as the trash thread of a run would have.
    let removed = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || prune::empty_trash(&host).map_err(|e| e.to_string()))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert!(removed >= 1);
    assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 0);
}

#[test]
fn a_snapshot_swapped_for_a_symlink_after_the_listing_restores_nothing_of_the_live_system() {
    // The restore found the snapshot in the listing; before it opens it, whoever writes the
    // disk puts a symlink to a "live" tree in its place (the same paths, other content). The
    // snapshot is opened below its tier's handle without following: refused, target untouched.
    let c = setup();
    let host = HostDir::open(&c.host()).unwrap();
    let snap = host.resolve("latest").unwrap();
    let tier = host.tier_of(&snap).unwrap();
    let live = c.dest.parent().unwrap().join("live");
    let inside = c.src.strip_prefix("/").unwrap();
    std::fs::create_dir_all(live.join(inside)).unwrap();
    std::fs::write(live.join(inside).join("a.txt"), "LIVE SYSTEM CONTENT").unwrap();
    std::fs::rename(&snap.path, c.dest.parent().unwrap().join("moved-away")).unwrap();
    std::os::unix::fs::symlink(&live, &snap.path).unwrap();
    let target = c.dest.parent().unwrap().join("restored");
    for path in [c.src.join("a.txt"), PathBuf::from("/")] {
        let opts = restore::RestoreOptions::default();
        let r = restore::restore(&snap, &tier, &path, &target, opts);
        let e = r.err().unwrap_or_else(|| panic!("{}: restored through the symlink", path.display())).to_string();
        assert!(e.contains(&snap.name), "{e}");
        assert!(std::fs::symlink_metadata(&target).is_err(), "{}: the target was written", path.display());
    }
}
