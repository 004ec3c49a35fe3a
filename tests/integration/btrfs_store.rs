//! The btrfs store (`--store btrfs`, `local.store`) on a loop-mounted btrfs: every snapshot is a
//! read-only subvolume made as a snapshot of the previous one; it matches the source exactly
//! (`rsync -aHAXn --itemize-changes` prints nothing); unchanged files keep their inode (shared),
//! changed ones are new, deleted ones gone; verify passes; prune deletes subvolumes; `kill -9`
//! at random moments leaves nothing half visible and the next run cleans up; switching a
//! hard-link history to the btrfs store keeps every old snapshot intact; planted symlinks never
//! lead outside.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A btrfs image loop-mounted on the `Env`'s `dest`; unmounted on drop (declare it after the
/// `Env`, so that it goes first).
struct Btrfs {
    at: PathBuf,
    _mount: Mount,
}

impl Btrfs {
    fn on(env: &Env) -> Btrfs {
        require("btrfs");
        let img = env.dir.path().join("btrfs.img");
        let mount = Mount::image(&img, "mkfs.btrfs", &["-q", "-f"], 512, &env.dest);
        Btrfs { at: env.dest.clone(), _mount: mount }
    }

    /// Every subvolume, by path relative to the filesystem's top.
    fn subvolumes(&self) -> Vec<String> {
        let out = Command::new("btrfs").args(["subvolume", "list"]).arg(&self.at).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(" path ").nth(1).unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    }
}

fn readonly(p: &Path) -> bool {
    let out = Command::new("btrfs").args(["property", "get"]).arg(p).arg("ro").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim() == "ro=true"
}

/// `btrfs subvolume create P`.
fn create_subvolume(p: &Path) {
    let o = Command::new("btrfs").args(["subvolume", "create"]).arg(p).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
}

/// `btrfs property set P ro true|false`.
fn set_readonly(p: &Path, ro: bool) {
    let o = Command::new("btrfs").args(["property", "set"]).arg(p).args(["ro", &ro.to_string()]).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
}

fn is_subvolume(p: &Path) -> bool {
    std::fs::symlink_metadata(p).unwrap().ino() == 256
}

/// `rsync -aHAXn --itemize-changes --delete SRC/ SNAPSHOT-COPY/` prints nothing.
fn assert_same(env: &Env, id: &str) {
    let out = Command::new("rsync")
        .args(["-aHAXn", "--itemize-changes", "--delete"])
        .arg(format!("{}/", env.src.display()))
        .arg(format!("{}/", env.in_snapshot(id).display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync: {}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{id} differs from the source");
}

/// Every snapshot is a read-only subvolume; no other subvolume exists below the host dir.
fn assert_all_sealed(env: &Env, fs: &Btrfs) {
    let ids = env.snapshot_ids();
    for id in &ids {
        let p = env.host_dir().join(id);
        assert!(is_subvolume(&p), "{id} is not a subvolume");
        assert!(readonly(&p), "{id} is writable");
    }
    let want: Vec<String> = ids.iter().map(|id| format!("{HOST}/{id}")).collect();
    assert_eq!(fs.subvolumes(), want, "a subvolume outside the tiers (a leftover)");
}

fn seed(env: &Env) {
    require("rsync");
    std::fs::create_dir_all(env.src.join("d/sub")).unwrap();
    for i in 0..40 {
        write(&env.src.join(format!("d/f{i}")), format!("file {i}\n"));
    }
    write(&env.src.join("d/sub/deep"), "deep\n");
    write(&env.src.join("big"), vec![7u8; 3 << 20]);
    std::os::unix::fs::symlink("d/f1", env.src.join("link")).unwrap();
    std::fs::hard_link(env.src.join("d/f2"), env.src.join("d/f2-hardlink")).unwrap();
}

#[test]
fn snapshots_are_read_only_subvolumes_that_share_what_is_unchanged() {
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    let first = "daily/2025-01-01_02-00-00";
    assert_same(&env, first);
    assert_all_sealed(&env, &fs);

    // Changed, deleted, new, a file that becomes a directory and a directory that becomes a
    // file, a new mode on an unchanged file.
    write(&env.src.join("d/f3"), "changed\n");
    std::fs::remove_file(env.src.join("d/f4")).unwrap();
    write(&env.src.join("d/new"), "new\n");
    std::fs::remove_file(env.src.join("d/f5")).unwrap();
    std::fs::create_dir(env.src.join("d/f5")).unwrap();
    write(&env.src.join("d/f5/inside"), "x\n");
    std::fs::remove_dir_all(env.src.join("d/sub")).unwrap();
    write(&env.src.join("d/sub"), "now a file\n");
    sh(&format!("chmod 600 '{}'", env.src.join("d/f6").display()));
    let out = env.snapshot_ok("2025-01-02T02:00:00Z", &["--store", "btrfs", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let second = "daily/2025-01-02_02-00-00";
    assert_same(&env, second);
    assert_all_sealed(&env, &fs);
    let (a, b) = (env.in_snapshot(first), env.in_snapshot(second));
    // Unchanged: the same inode in the snapshot of the previous subvolume (not written again).
    for f in ["d/f1", "big", "link", "d/f10"] {
        assert_eq!(ino(&a.join(f)), ino(&b.join(f)), "{f} was written again");
    }
    for f in ["d/f3", "d/f6"] {
        assert_ne!(ino(&a.join(f)), ino(&b.join(f)), "{f} changed but was kept");
    }
    assert!(!b.join("d/f4").exists());
    assert_eq!(std::fs::read(a.join("d/f3")).unwrap(), b"file 3\n", "the old snapshot is untouched");
    assert!(a.join("d/sub/deep").exists() && a.join("d/f4").exists());
    assert_eq!(report["counts"]["copied"], 5, "{report}");
    // The source's hard link stays a hard link.
    assert_eq!(ino(&b.join("d/f2")), ino(&b.join("d/f2-hardlink")));

    // The history commands read the subvolumes as any snapshot (each subvolume has a device
    // of its own, so kept files are compared by manifest hash, not by inode): diff lists the
    // changes and nothing unchanged, versions sees two versions of the changed file and one
    // of an unchanged one, find sees a name in both snapshots.
    let diff = env.run("diff", &[first, second, "--json"]);
    assert!(diff.status.success(), "diff: {}", show(&diff));
    let diff: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    let changed: std::collections::BTreeMap<String, String> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] != "dir" || c["change"] == "type")
        .map(|c| {
            let p = c["path"].as_str().unwrap().strip_prefix(&format!("{}/", env.src.display())).unwrap().to_string();
            (p, c["change"].as_str().unwrap().to_string())
        })
        .collect();
    for (path, change) in [
        ("d/f3", "modified"),
        ("d/f4", "removed"),
        ("d/new", "added"),
        ("d/f5", "type"),
        ("d/sub", "type"),
        ("d/f6", "metadata"),
    ] {
        assert_eq!(changed.get(path).map(String::as_str), Some(change), "{path}: {diff}");
    }
    for same in ["d/f1", "d/f10", "big", "link", "d/f2", "d/f2-hardlink"] {
        assert!(!changed.contains_key(same), "{same} is unchanged: {diff}");
    }
    let versions = |f: &str| {
        let o = env.run("versions", &[&s(&env.src.join(f)), "--json"]);
        assert!(o.status.success(), "versions: {}", show(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["versions"].as_array().unwrap().len()
    };
    assert_eq!((versions("d/f3"), versions("d/f10")), (2, 1));
    let found = env.run("find", &["f10", "--json"]);
    assert!(found.status.success(), "find: {}", show(&found));
    let found: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 2, "{found}");

    // A no-change run writes nothing; verify checks every snapshot.
    let out = env.snapshot_ok("2025-01-03T02:00:00Z", &["--store", "btrfs", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["counts"]["copied"], 0, "{report}");
    assert_same(&env, "daily/2025-01-03_02-00-00");
    let v = env.run("verify", &[]);
    assert!(v.status.success(), "verify: {}", show(&v));

    // du: the unchanged 3 MiB file is shared by all three snapshots, so deleting one frees
    // far less than it holds.
    let du = env.run("du", &["--json"]);
    assert!(du.status.success(), "du: {}", show(&du));
    let du: serde_json::Value = serde_json::from_slice(&du.stdout).unwrap();
    for u in du["snapshots"].as_array().unwrap() {
        assert!(u["sharedBytes"].as_u64().unwrap() >= 3 << 20, "{u}");
        assert!(u["freesBytes"].as_u64().unwrap() < 1 << 20, "{u}");
    }

    // Pin and unpin a read-only snapshot; it stays read-only.
    let p = env.run("pin", &[first]);
    assert!(p.status.success(), "pin: {}", show(&p));
    assert!(env.host_dir().join(first).join(".hwc-backup/pin.json").exists());
    let p = env.run("unpin", &[first]);
    assert!(p.status.success(), "unpin: {}", show(&p));
    assert_all_sealed(&env, &fs);

    // Restore from a snapshot of the btrfs store.
    let to = env.dir.path().join("restored");
    let r = env.run("restore", &[second, &s(&env.src), &s(&to)]);
    assert!(r.status.success(), "restore: {}", show(&r));
    assert_eq!(std::fs::read(to.join("d/f3")).unwrap(), b"changed\n");
    assert!(to.join("d/f5/inside").exists() && !to.join("d/f4").exists());
}

/// In the btrfs store a kept file is the previous snapshot's very inode: one whose extended
/// attribute or ACL changed (nothing else) is written anew, not kept with the old ones.
#[test]
fn a_changed_xattr_or_acl_is_not_kept_from_the_previous_subvolume() {
    require("setfacl");
    let env = Env::new();
    let _fs = Btrfs::on(&env);
    seed(&env);
    let set = |f: &str, v: &str| set_xattr(&env.src.join(f), "user.tag", v);
    set("d/f1", "one");
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    set("d/f1", "two");
    sh(&format!("setfacl -m u:nobody:r '{}'", env.src.join("d/f7").display()));
    env.snapshot_ok("2025-01-02T02:00:00Z", &["--store", "btrfs"]);
    let second = "daily/2025-01-02_02-00-00";
    assert_same(&env, second);
    let (a, b) = (env.in_snapshot("daily/2025-01-01_02-00-00"), env.in_snapshot(second));
    assert_eq!(xattr(&b.join("d/f1"), "user.tag"), "two");
    assert_eq!(xattr(&a.join("d/f1"), "user.tag"), "one", "the older snapshot keeps its own");
    assert_eq!(ino(&a.join("d/f10")), ino(&b.join("d/f10")), "the untouched file is kept");
}

#[test]
fn prune_deletes_subvolumes() {
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    for day in 1..=12 {
        write(&env.src.join("d/day"), format!("{day}\n"));
        env.snapshot_ok(&format!("2025-01-{day:02}T02:00:00Z"), &["--store", "btrfs"]);
    }
    let ids = env.snapshot_ids();
    assert!(ids.len() < 12, "nothing was pruned: {ids:?}");
    assert_all_sealed(&env, &fs);
    let trash: Vec<_> = std::fs::read_dir(env.host_dir().join(".trash")).unwrap().collect();
    assert!(trash.is_empty(), "the trash is not empty");
    assert_same(&env, ids.iter().find(|i| i.contains("2025-01-12")).unwrap());
}

#[test]
fn kill_9_at_random_moments_leaves_nothing_half_visible() {
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    for i in 0..1500 {
        write(&env.src.join(format!("many/{:02}/f{i}", i % 30)), format!("{i}\n"));
    }
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    for round in 0..6u64 {
        write(&env.src.join(format!("many/00/round{round}")), "r\n");
        let mut args: Vec<String> = vec!["now".into(), "--source".into(), s(&env.src)];
        args.extend(env.target_args());
        args.extend(["--store".into(), "btrfs".into(), "--now".into(), format!("2025-01-{:02}T02:00:00Z", round + 2)]);
        let mut child = env
            .cmd(&[])
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + (std::process::id() as u64 * 7919 + round * 37) % 150));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever is published is complete and sealed…
        for id in env.snapshot_ids() {
            assert!(env.host_dir().join(&id).join(".hwc-backup/meta.json").exists(), "{id} is half visible");
        }
    }
    // …and the next run deletes the leftover writable subvolume and seals what a kill left
    // writable between the publishing rename and the flag.
    let out = env.snapshot_ok("2025-02-01T02:00:00Z", &["--store", "btrfs"]);
    assert!(out.status.success());
    let incomplete: Vec<_> = std::fs::read_dir(env.host_dir().join(".incomplete")).unwrap().collect();
    assert!(incomplete.is_empty(), "leftovers under .incomplete");
    assert_all_sealed(&env, &fs);
    assert_same(&env, "daily/2025-02-01_02-00-00");
    let v = env.run("verify", &[]);
    assert!(v.status.success(), "verify: {}", show(&v));
}

#[test]
fn leftovers_of_a_killed_run_shaped_by_someone_who_writes_the_disk_are_removed_without_following() {
    // What a run killed mid-way leaves under `.incomplete/` (a writable snapshot of the last
    // one, or one already made read-only before its publishing rename), with what someone who
    // can write the disk puts there before the next run: symlinks to a victim directory inside
    // the leftovers and at a leftover's name, a subvolume nested in one, a read-only leftover
    // holding a symlink. The next run deletes every leftover as what it is and follows none.
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    let victim = env.dir.path().join("victim");
    write(&victim.join("keep"), "precious\n");
    write(&victim.join("sub/deeper"), "precious too\n");
    let victim_tree = tree(&victim);
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    let first = env.host_dir().join("daily/2025-01-01_02-00-00");
    let incomplete = env.host_dir().join(".incomplete");
    let snap = |to: &Path, ro: bool| {
        let mut c = Command::new("btrfs");
        c.args(["subvolume", "snapshot"]);
        if ro {
            c.arg("-r");
        }
        let o = c.arg(&first).arg(to).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
    };
    // A writable leftover: its `d` a symlink to the victim, a subvolume nested in it whose
    // entry is a symlink to the victim too.
    let writable = incomplete.join("2025-01-02_02-00-00");
    snap(&writable, false);
    let d = writable.join(env.src.strip_prefix("/").unwrap()).join("d");
    std::fs::remove_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(&victim, &d).unwrap();
    create_subvolume(&writable.join("nested"));
    std::os::unix::fs::symlink(&victim, writable.join("nested/to-victim")).unwrap();
    // A read-only leftover holding a symlink to the victim at the top.
    let sealed = incomplete.join("2025-01-03_02-00-00");
    snap(&sealed, false);
    std::os::unix::fs::symlink(&victim, sealed.join("to-victim")).unwrap();
    set_readonly(&sealed, true);
    // A leftover's name taken by a symlink to the victim.
    std::os::unix::fs::symlink(&victim, incomplete.join("2025-01-04_02-00-00")).unwrap();
    env.snapshot_ok("2025-01-05T02:00:00Z", &["--store", "btrfs"]);
    assert_eq!(tree(&victim), victim_tree, "the victim changed");
    let left: Vec<_> = std::fs::read_dir(&incomplete).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "leftovers under .incomplete: {left:?}");
    assert_all_sealed(&env, &fs);
    assert_same(&env, "daily/2025-01-05_02-00-00");
}

#[test]
fn switching_a_hard_link_history_to_the_btrfs_store_keeps_it() {
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "hardlink"]);
    write(&env.src.join("d/f3"), "changed\n");
    env.snapshot_ok("2025-01-02T02:00:00Z", &["--store", "hardlink"]);
    let old = ["daily/2025-01-01_02-00-00", "daily/2025-01-02_02-00-00"];
    let before: Vec<Vec<String>> = old.iter().map(|id| tree(&env.host_dir().join(id))).collect();
    assert!(fs.subvolumes().is_empty(), "the hard-link store made a subvolume");

    // The first btrfs-store run: a fresh subvolume, unchanged files reflinked from the plain
    // directory; the next one a snapshot of it.
    write(&env.src.join("d/f7"), "changed\n");
    env.snapshot_ok("2025-01-03T02:00:00Z", &[]);
    env.snapshot_ok("2025-01-04T02:00:00Z", &[]);
    for (id, b) in old.iter().zip(&before) {
        assert_eq!(&tree(&env.host_dir().join(id)), b, "{id} changed");
        assert!(!is_subvolume(&env.host_dir().join(id)));
    }
    for id in ["daily/2025-01-03_02-00-00", "daily/2025-01-04_02-00-00"] {
        let p = env.host_dir().join(id);
        assert!(is_subvolume(&p) && readonly(&p), "{id}");
        assert_same(&env, id);
    }
    let (c, d) = (env.in_snapshot("daily/2025-01-03_02-00-00"), env.in_snapshot("daily/2025-01-04_02-00-00"));
    assert_eq!(ino(&c.join("big")), ino(&d.join("big")));
    let v = env.run("verify", &[]);
    assert!(v.status.success(), "verify: {}", show(&v));
    // The store can go back: a hard-link run after btrfs ones.
    env.snapshot_ok("2025-01-05T02:00:00Z", &["--store", "hardlink"]);
    assert_same(&env, "daily/2025-01-05_02-00-00");
}

#[test]
fn btrfs_is_refused_elsewhere_and_auto_uses_hard_links_there() {
    let env = Env::new();
    seed(&env);
    let fstype = sh(&format!("stat -f -c %T '{}'", env.dest.display()));
    assert_ne!(fstype.trim(), "btrfs", "the test needs a non-btrfs /var/tmp");
    let out = env.snapshot_at("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    assert!(!out.status.success());
    let err = show(&out);
    assert!(err.contains("not on a btrfs filesystem") && err.contains(".incomplete"), "{err}");
    assert!(env.snapshot_ids().is_empty());
    env.snapshot_ok("2025-01-01T02:00:00Z", &[]);
    assert_same(&env, "daily/2025-01-01_02-00-00");
}

#[test]
fn planted_symlinks_never_lead_outside() {
    let env = Env::new();
    let _fs = Btrfs::on(&env);
    seed(&env);
    let victim = env.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    write(&victim.join("keep"), "precious\n");
    let victim_tree = tree(&victim);
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    let first = env.host_dir().join("daily/2025-01-01_02-00-00");

    // Inside the previous snapshot (made writable by whoever can write the disk): the source's
    // directory `d` replaced by a symlink to the victim. The next run's writable snapshot holds
    // that symlink; the walk must replace it, never write through it.
    set_readonly(&first, false);
    let d = env.in_snapshot("daily/2025-01-01_02-00-00").join("d");
    std::fs::remove_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(&victim, &d).unwrap();
    set_readonly(&first, true);
    env.snapshot_ok("2025-01-02T02:00:00Z", &["--store", "btrfs"]);
    assert_same(&env, "daily/2025-01-02_02-00-00");
    assert_eq!(tree(&victim), victim_tree, "the victim changed");

    // `.incomplete` and a tier planted as symlinks to the victim: refused, victim unchanged.
    for fixed in [".incomplete", "daily"] {
        let p = env.host_dir().join(fixed);
        let aside = env.host_dir().join(format!("{fixed}.aside"));
        std::fs::rename(&p, &aside).unwrap();
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let out = env.snapshot_at("2025-01-03T02:00:00Z", &["--store", "btrfs"]);
        assert!(!out.status.success(), "{fixed}: ran through a symlink");
        assert!(show(&out).contains(fixed), "{}", show(&out));
        assert_eq!(tree(&victim), victim_tree, "{fixed}: the victim changed");
        std::fs::remove_file(&p).unwrap();
        std::fs::rename(&aside, &p).unwrap();
    }
    // A symlink planted in the trash is removed as a symlink, not followed.
    std::fs::create_dir_all(env.host_dir().join(".trash")).unwrap();
    std::os::unix::fs::symlink(&victim, env.host_dir().join(".trash/planted")).unwrap();
    env.snapshot_ok("2025-01-04T02:00:00Z", &["--store", "btrfs"]);
    assert!(std::fs::symlink_metadata(env.host_dir().join(".trash/planted")).is_err(), "not removed");
    assert_eq!(tree(&victim), victim_tree, "the victim changed");
}

#[test]
fn a_mount_point_in_the_trash_is_never_entered_and_the_rest_still_goes() {
    // Bind mounts planted in the trash (by whoever can mount): a directory of another
    // filesystem, a read-only subvolume of this one kept outside the host directory, and a
    // directory mounted deeper in an entry. Each is named, nothing below it touched, the
    // subvolume stays read-only, the runs still succeed and the other entries go.
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    let victim = env.dir.path().join("victim");
    write(&victim.join("sub/keep"), "precious\n");
    let victim_tree = tree(&victim);
    let sub = fs.at.join("victim-subvolume");
    create_subvolume(&sub);
    write(&sub.join("keep"), "precious too\n");
    set_readonly(&sub, true);
    let trash = env.host_dir().join(".trash");
    for d in ["plain", "subvolume", "deep/inner"] {
        std::fs::create_dir_all(trash.join(d)).unwrap();
    }
    write(&trash.join("deep/file"), "junk");
    write(&trash.join("junk/file"), "junk");
    let _plain = Mount::with(&["--bind", &s(&victim)], &trash.join("plain"));
    let _subvolume = Mount::with(&["--bind", &s(&sub)], &trash.join("subvolume"));
    let _deep = Mount::with(&["--bind", &s(&victim)], &trash.join("deep/inner"));
    let out = env.snapshot_at("2025-01-02T02:00:00Z", &["--store", "btrfs"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = show(&out);
    assert!(err.contains("plain: a mount point where a snapshot was expected"), "{err}");
    assert!(err.contains("subvolume: a mount point where a snapshot was expected"), "{err}");
    assert!(err.contains("inner: a mount point inside a tree being deleted"), "{err}");
    assert_eq!(tree(&victim), victim_tree, "the victim changed");
    assert!(readonly(&sub), "the mounted subvolume was made writable");
    assert_eq!(std::fs::read_to_string(sub.join("keep")).unwrap(), "precious too\n");
    assert!(!trash.join("junk").exists(), "the other entries still go");
    let out = env.run("prune", &["--now", "2025-01-02T03:00:00Z"]);
    assert_eq!(code(&out), 1, "prune names what it could not delete: {}", show(&out));
    assert_eq!(tree(&victim), victim_tree, "the victim changed");
    assert!(readonly(&sub));
}

#[test]
fn a_subvolume_mounted_at_a_snapshots_name_is_not_sealed_and_stops_no_run() {
    // A writable subvolume kept outside the host directory, dressed as a snapshot (a copy of
    // a real one's metadata) and bind-mounted at a snapshot's name: the run names it, leaves
    // its flag alone and succeeds.
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    let sub = fs.at.join("victim-subvolume");
    create_subvolume(&sub);
    let first = env.host_dir().join("daily/2025-01-01_02-00-00");
    sh(&format!("cp -a '{}/.hwc-backup' '{}/'", first.display(), sub.display()));
    let at = env.host_dir().join("daily/2025-01-01_12-00-00");
    std::fs::create_dir(&at).unwrap();
    let _mounted = Mount::with(&["--bind", &s(&sub)], &at);
    let out = env.snapshot_at("2025-01-02T02:00:00Z", &["--store", "btrfs", "--no-prune"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("a mount point where a snapshot was expected; not made read-only"), "{}", show(&out));
    assert!(!readonly(&sub), "the mounted subvolume was made read-only");
}

/// Used bytes of the filesystem at `p` (statvfs: blocks minus free blocks), after a sync.
fn used(p: &Path) -> u64 {
    let out = sh(&format!("sync -f '{0}' && stat -f -c '%b %f %S' '{0}'", p.display()));
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0] - v[1]) * v[2]
}

#[test]
fn a_one_byte_append_to_a_64_mib_file_costs_less_than_1_mib() {
    const MIB: u64 = 1 << 20;
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    // Incompressible content (an xorshift stream), so nothing is saved by chance.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..64 * MIB / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    write(&env.src.join("huge"), &data);
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    let before = used(&fs.at);
    let mut f = std::fs::OpenOptions::new().append(true).open(env.src.join("huge")).unwrap();
    std::io::Write::write_all(&mut f, b"!").unwrap();
    drop(f);
    let out = env.snapshot_ok("2025-01-02T02:00:00Z", &["--store", "btrfs", "--json"]);
    let grown = used(&fs.at).saturating_sub(before);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(grown < MIB, "a 1-byte append to 64 MiB grew the used space by {grown} bytes: {report}");
    assert_same(&env, "daily/2025-01-02_02-00-00");
    let (a, b) = (env.in_snapshot("daily/2025-01-01_02-00-00"), env.in_snapshot("daily/2025-01-02_02-00-00"));
    assert_eq!(std::fs::read(a.join("huge")).unwrap(), data, "the older copy changed");
    assert_eq!(std::fs::metadata(b.join("huge")).unwrap().len(), 64 * MIB + 1);
    // A no-change run costs only metadata.
    let before = used(&fs.at);
    env.snapshot_ok("2025-01-03T02:00:00Z", &["--store", "btrfs"]);
    let grown = used(&fs.at).saturating_sub(before);
    assert!(grown < MIB, "a no-change snapshot grew the used space by {grown} bytes");
    let v = env.run("verify", &[]);
    assert!(v.status.success(), "verify: {}", show(&v));
    eprintln!("btrfs store: 1-byte append to 64 MiB and a no-change snapshot measured under 1 MiB each");
}

/// Bytes available at `p` after a sync.
fn avail(p: &Path) -> u64 {
    let out = sh(&format!("sync -f '{0}' && stat -f -c '%a %S' '{0}'", p.display()));
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    v[0] * v[1]
}

#[test]
fn make_room_removes_one_snapshot_when_one_is_enough_in_either_store() {
    const MIB: u64 = 1 << 20;
    // The freed space must be counted before the next check: a deleted subvolume's blocks
    // come back when the kernel's cleaner is done, unlinked files' after a commit.
    for store in ["btrfs", "hardlink"] {
        let env = Env::new();
        let fs = Btrfs::on(&env);
        let free0 = avail(&fs.at);
        let mut plan = plan_json(&env);
        plan["destination"]["minFreeBytes"] = serde_json::json!(free0 - 150 * MIB);
        plan["destination"]["makeRoom"] = serde_json::json!(true);
        plan["destination"]["store"] = serde_json::json!(store);
        let plan = write_plan(&env, "plan.json", &plan.to_string());
        // Each run stores 96 MiB of new, incompressible data: the third needs the room of one.
        let mut made = Vec::new();
        for day in 1..=3u64 {
            let mut x = 0x2545_F491_4F6C_DD1Du64 ^ day;
            let data: Vec<u8> = (0..96 * MIB / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect();
            write(&env.src.join("big"), &data);
            let o = env
                .cmd(&["now", "--config"])
                .arg(&plan)
                .args(["--now", &format!("2025-04-{day:02}T02:00:00Z"), "--json"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{store}, day {day}: {}", show(&o));
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            made.push(r["madeRoom"].as_array().map_or(0, Vec::len));
        }
        assert_eq!(made, vec![0, 0, 1], "{store}: removals per run");
        assert_eq!(env.snapshot_ids(), vec!["daily/2025-04-02_02-00-00", "daily/2025-04-03_02-00-00"], "{store}");
        if store == "btrfs" {
            assert_all_sealed(&env, &fs);
        }
    }
}

/// `hwc-backup pull` of `env.src` as host `client` into the btrfs store, through an `ssh`
/// stand-in that runs the real agent here (allowed `env.src` only).
fn pull_into_btrfs(env: &Env, when: &str) -> std::process::Output {
    let ssh = env.dir.path().join("local-ssh");
    if !ssh.exists() {
        std::fs::write(&ssh, format!("#!/bin/bash\nexec '{}' agent --allow '{}'\n", bin(), s(&env.src))).unwrap();
        sh(&format!("chmod +x '{}'", ssh.display()));
    }
    env.cmd(&["pull", "--address", "client.lan", "--user", "root", "--source", &s(&env.src)])
        .args(["--dest", &s(&env.dest), "--host", "client", "--state-dir", &s(&env.state), "--now", when])
        .args(["--no-prune", "--store", "btrfs", "--ssh-program", &s(&ssh)])
        .output()
        .unwrap()
}

/// Issue 19: a pulled host on a btrfs destination. Each pull fills a fresh subvolume (a pull
/// has no in-place mode), sealed read-only like a local snapshot; unchanged files are
/// reflinks of their previous copies (new inodes sharing the blocks: a pull of an unchanged
/// 3 MiB file adds far less than its size), the tree equals the source, hard links stay hard
/// links; a directory of the previous snapshot replaced by a symlink to a victim is never
/// followed (nothing of the victim is read into the snapshot or changed).
#[test]
fn pulled_hosts_are_stored_as_fresh_subvolumes_with_reflinked_unchanged_files() {
    let env = Env::new();
    let _fs = Btrfs::on(&env);
    seed(&env);
    let host = env.dest.join("client");
    let rel = s(&env.src).trim_start_matches('/').to_string();
    let inside = |id: &str| host.join("daily").join(id).join(&rel);
    let same = |id: &str| {
        let out = Command::new("rsync")
            .args(["-aHAXn", "--itemize-changes", "--delete"])
            .arg(format!("{}/", env.src.display()))
            .arg(format!("{}/", inside(id).display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "rsync: {}", show(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{id} differs from the source");
    };
    let o = pull_into_btrfs(&env, "2025-01-01T02:00:00Z");
    assert!(o.status.success(), "{}", show(&o));
    let first = "2025-01-01_02-00-00";
    same(first);
    assert!(is_subvolume(&host.join("daily").join(first)) && readonly(&host.join("daily").join(first)));

    write(&env.src.join("d/f3"), "changed\n");
    std::fs::remove_file(env.src.join("d/f4")).unwrap();
    let before = used(&env.dest);
    let o = pull_into_btrfs(&env, "2025-01-02T02:00:00Z");
    assert!(o.status.success(), "{}", show(&o));
    let grown = used(&env.dest).saturating_sub(before);
    let second = "2025-01-02_02-00-00";
    same(second);
    let snap = host.join("daily").join(second);
    assert!(is_subvolume(&snap) && readonly(&snap), "not a sealed subvolume");
    for f in ["big", "d/f1", "d/f10"] {
        let (a, b) = (inside(first).join(f), inside(second).join(f));
        let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino(), m.nlink())).unwrap();
        assert_ne!(id(&a).0, id(&b).0, "{f}: not in a subvolume of its own");
        assert_eq!(id(&b).2, 1, "{f}: hard-linked");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "{f}");
    }
    let (h1, h2) = (inside(second).join("d/f2"), inside(second).join("d/f2-hardlink"));
    assert_eq!(std::fs::metadata(&h1).unwrap().ino(), std::fs::metadata(&h2).unwrap().ino(), "hard link lost");
    assert!(grown < 1 << 20, "an unchanged 3 MiB file was copied, not reflinked: {grown} bytes added");

    // The previous snapshot's `d` replaced by a symlink to a victim holding a file like the
    // source's (same name, size and time): the next pull neither follows nor changes it.
    let victim = env.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    sh(&format!("cp -a '{}' '{}'", env.src.join("d/f1").display(), victim.display()));
    write(&victim.join("f10"), "vict 10\n"); // the size of "file 10\n"
    sh(&format!("touch -r '{}' '{}'", env.src.join("d/f10").display(), victim.join("f10").display()));
    let victim_tree = tree(&victim);
    let prev = host.join("daily").join(second);
    set_readonly(&prev, false);
    std::fs::remove_dir_all(inside(second).join("d")).unwrap();
    std::os::unix::fs::symlink(&victim, inside(second).join("d")).unwrap();
    set_readonly(&prev, true);
    let o = pull_into_btrfs(&env, "2025-01-03T02:00:00Z");
    assert!(o.status.success(), "{}", show(&o));
    same("2025-01-03_02-00-00");
    assert_eq!(tree(&victim), victim_tree, "the victim changed");
}

/// A no-change run in the btrfs store writes no directory's metadata (every directory of the
/// new subvolume keeps its ctime and its atime, so btrfs copies none of them on write) and relinks no
/// source hard link; a directory whose mode, mtime, owner or extended attributes changed in
/// the source is still updated, an extended attribute removed from it is removed, and a
/// directory the walk writes into gets its source mtime back (issue 19, the no-change cost).
#[test]
fn directory_metadata_is_written_only_where_it_changed() {
    require("setfattr");
    let env = Env::new();
    let fs = Btrfs::on(&env);
    seed(&env);
    std::fs::create_dir_all(env.src.join("m/a")).unwrap();
    std::fs::create_dir_all(env.src.join("m/b")).unwrap();
    write(&env.src.join("m/a/x"), "x\n");
    write(&env.src.join("m/b/y"), "y\n");
    sh(&format!("setfattr -n user.tag -v one '{}'", env.src.join("m/b").display()));
    env.snapshot_ok("2025-01-01T02:00:00Z", &["--store", "btrfs"]);
    let first = env.in_snapshot("daily/2025-01-01_02-00-00");

    // No change: no directory (nor the source's hard link, nor its directory) is written.
    std::thread::sleep(Duration::from_millis(20));
    env.snapshot_ok("2025-01-02T02:00:00Z", &["--store", "btrfs"]);
    let second = env.in_snapshot("daily/2025-01-02_02-00-00");
    assert_same(&env, "daily/2025-01-02_02-00-00");
    let ctime = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    // Nor its access time, which `relatime` would write on the first listing of each kept
    // directory (its atime is older than its ctime here, as after a day everywhere).
    let atime = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.atime(), m.atime_nsec())
    };
    for d in ["", "d", "d/sub", "m", "m/a", "m/b"] {
        assert_eq!(ctime(&first.join(d)), ctime(&second.join(d)), "directory '{d}' was written again");
        assert_eq!(atime(&first.join(d)), atime(&second.join(d)), "directory '{d}' got a new access time");
    }
    assert_eq!(ino(&first.join("d/f2-hardlink")), ino(&second.join("d/f2-hardlink")), "the hard link was redone");
    assert_eq!(ino(&second.join("d/f2")), ino(&second.join("d/f2-hardlink")));

    // Metadata-only changes of directories, each without touching their entries.
    sh(&format!(
        "chmod 750 '{a}' && touch -m -d '2020-02-03 04:05:06.123456789' '{m}' && \
         setfattr -x user.tag '{b}' && setfattr -n user.new -v two '{a}' && chown 1234:5678 '{sub}'",
        a = env.src.join("m/a").display(),
        m = env.src.join("m").display(),
        b = env.src.join("m/b").display(),
        sub = env.src.join("d/sub").display(),
    ));
    // And one directory the walk writes into (a new file), whose mtime changes in the copy.
    write(&env.src.join("m/b/z"), "z\n");
    env.snapshot_ok("2025-01-03T02:00:00Z", &["--store", "btrfs"]);
    assert_same(&env, "daily/2025-01-03_02-00-00");
    let third = env.in_snapshot("daily/2025-01-03_02-00-00");
    let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    assert_eq!(meta(&third.join("m/a")).mode() & 0o7777, 0o750);
    assert_eq!((meta(&third.join("m")).mtime(), meta(&third.join("m")).mtime_nsec()), (1580702706, 123456789));
    assert_eq!((meta(&third.join("d/sub")).uid(), meta(&third.join("d/sub")).gid()), (1234, 5678));
    let xattrs =
        |p: &Path| sh(&format!("getfattr -d --absolute-names '{}' 2>/dev/null | grep -v '^#' || true", p.display()));
    assert!(!xattrs(&third.join("m/b")).contains("user.tag"), "a removed xattr stayed");
    assert!(xattrs(&third.join("m/a")).contains("user.new"), "a new xattr is missing");
    // The older snapshots are untouched.
    assert!(xattrs(&second.join("m/b")).contains("user.tag"));
    assert_eq!(meta(&second.join("m/a")).mode() & 0o7777, 0o755);
    assert_all_sealed(&env, &fs);
}
