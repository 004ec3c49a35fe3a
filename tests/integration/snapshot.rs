//! Snapshot fidelity: a first snapshot equals its source as far as real rsync can tell
//! (`rsync -aHAXn --itemize-changes --delete` prints nothing), and a second snapshot
//! hard-links exactly the unchanged files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::util::*;

/// A source tree with everything design §5 says must survive: nested directories, a
/// read-only directory, odd permissions and owners, nanosecond mtimes, symlinks (relative,
/// absolute, dangling), hard links, a FIFO, a device node, a sparse file, xattrs and ACLs,
/// and names with spaces, newlines, non-UTF-8 bytes and unicode.
pub fn rich_tree(src: &Path) {
    write(&src.join("home/alice/notes.txt"), "notes\n");
    write(&src.join("home/alice/docs/report.pdf"), vec![7u8; 300_000]);
    write(&src.join("home/alice/docs/empty"), "");
    write(&src.join("home/bob/secret"), "root only\n");
    write(&src.join("home/alice/with space/ünïcode ✓.txt"), "u\n");
    write(&src.join("home/alice/line\nbreak"), "n\n");
    std::fs::create_dir_all(src.join("home/alice/emptydir")).unwrap();
    std::fs::create_dir_all(src.join("etc/ro")).unwrap();
    write(&src.join("etc/ro/conf"), "ro\n");
    let s = |p: &str| src.join(p).display().to_string();
    sh(&format!(
        "set -e
        cd '{root}'
        printf x > \"$(printf 'home/alice/bad\\377name')\"
        chmod 600 home/bob/secret && chown 1234:5678 home/bob/secret && chown 1234:5678 home/bob
        chmod 4755 home/alice/docs/report.pdf
        ln -s notes.txt home/alice/rel-link
        ln -s /etc/hostname home/alice/abs-link
        ln -s does-not-exist home/alice/dangling
        ln home/alice/notes.txt home/alice/notes-hardlink
        mkfifo home/alice/fifo
        mknod home/alice/null c 1 3
        truncate -s 20M home/alice/sparse && printf data | dd of=home/alice/sparse bs=1 seek=9000000 conv=notrunc 2>/dev/null
        setfattr -n user.color -v blue home/alice/notes.txt
        setfattr -n user.dir -v yes home/alice/docs
        setfacl -m u:1234:rw home/alice/docs/report.pdf
        setfacl -d -m u:1234:rx home/alice/docs
        touch -h -d '2021-03-04 05:06:07.123456789' home/alice/rel-link home/alice/notes.txt
        chmod 500 etc/ro
        touch -d '2020-01-01 00:00:00.5' etc/ro",
        root = s("")
    ));
}

pub fn rsync_differences(from: &Path, to: &Path) -> String {
    require("rsync");
    sh(&format!("rsync -aHAXn --itemize-changes --delete '{}/' '{}/'", from.display(), to.display()))
}

#[test]
fn first_snapshot_equals_source_per_rsync() {
    require("setfacl");
    require("setfattr");
    let env = Env::new();
    rich_tree(&env.src);
    let out = env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("daily/2025-01-15_02-00-00"), "{}", show(&out));
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    assert_eq!(rsync_differences(&env.src, &snap), "", "rsync sees differences between source and snapshot");
    // Holes stay holes: 20 MiB apparent, a few KiB allocated.
    let sparse = std::fs::metadata(snap.join("home/alice/sparse")).unwrap();
    assert_eq!(sparse.len(), 20 << 20);
    assert!(sparse.blocks() * 512 < 1 << 20, "sparse file was filled in: {} blocks", sparse.blocks());
    // Hard links inside the source stay one inode.
    assert_eq!(ino(&snap.join("home/alice/notes.txt")), ino(&snap.join("home/alice/notes-hardlink")));
    // `latest` points at it.
    assert_eq!(std::fs::read_link(env.host_dir().join("latest")).unwrap(), Path::new("daily/2025-01-15_02-00-00"));
    // The read-only directory keeps its mode in the snapshot.
    assert_eq!(std::fs::metadata(snap.join("etc/ro")).unwrap().permissions().mode() & 0o777, 0o500);
}

#[test]
fn second_snapshot_links_unchanged_and_copies_changed() {
    let env = Env::new();
    for i in 0..50 {
        write(&env.src.join(format!("d{}/f{i}", i % 5)), format!("content {i}\n"));
    }
    write(&env.src.join("big"), vec![1u8; 2_000_000]);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    // Edit: change content, change only the mode, delete, add.
    write(&env.src.join("d0/f0"), "changed\n");
    std::fs::set_permissions(env.src.join("d1/f1"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(env.src.join("d2/f2")).unwrap();
    write(&env.src.join("d3/new"), "new\n");
    let out = env.snapshot_ok("2025-01-16T02:00:00+01:00", &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "success");
    assert_eq!(report["counts"]["copied"], 3, "changed, mode-changed and new files are copied: {report}");
    assert_eq!(report["counts"]["linked"], 48);

    let (a, b) = (env.in_snapshot("daily/2025-01-15_02-00-00"), env.in_snapshot("daily/2025-01-16_02-00-00"));
    assert_eq!(ino(&a.join("big")), ino(&b.join("big")), "unchanged file must be a hard link");
    assert_eq!(ino(&a.join("d4/f4")), ino(&b.join("d4/f4")));
    assert_ne!(ino(&a.join("d0/f0")), ino(&b.join("d0/f0")), "changed file must be a new copy");
    assert_ne!(ino(&a.join("d1/f1")), ino(&b.join("d1/f1")), "a mode change must not be shared with the old copy");
    assert!(!b.join("d2/f2").exists(), "deleted file must be gone");
    assert!(a.join("d2/f2").exists(), "the older snapshot keeps it");
    assert_eq!(std::fs::read_to_string(b.join("d3/new")).unwrap(), "new\n");
    assert_eq!(std::fs::read_to_string(a.join("d0/f0")).unwrap(), "content 0\n", "older snapshot unchanged");
    assert_eq!(rsync_differences(&env.src, &b), "");
}

#[test]
fn manifest_is_b3sum_compatible_and_inherited_for_links() {
    require("b3sum");
    let env = Env::new();
    write(&env.src.join("a/x"), "x\n");
    write(&env.src.join("a-b/y"), "y\n");
    write(&env.src.join("a/z/deep"), "deep\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    write(&env.src.join("a/x"), "x2\n");
    env.snapshot_ok("2025-01-16T02:00:00+01:00", &[]);
    for id in ["daily/2025-01-15_02-00-00", "daily/2025-01-16_02-00-00"] {
        let dir = env.host_dir().join(id);
        let out = sh(&format!("cd '{}' && b3sum --check .hwc-backup/manifest.b3", dir.display()));
        assert_eq!(out.lines().count(), 3, "every file is in the manifest of {id}: {out}");
        assert!(out.lines().all(|l| l.ends_with(": OK")), "{out}");
    }
}

#[test]
fn sockets_are_skipped_and_counted() {
    require("python3");
    let env = Env::new();
    // std's remove_dir_all (the TempDir's cleanup) recurses: remove the deep trees first,
    // also when an assertion fails.
    struct RmRf(String);
    impl Drop for RmRf {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rm").args(["-rf", &self.0]).status();
        }
    }
    let _cleanup = RmRf(s(env.dir.path()));
    write(&env.src.join("f"), "f");
    sh(&format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.bind('{}')\"",
        env.src.join("sock").display()
    ));
    let out = env.snapshot_ok("2025-01-15T02:00:00+01:00", &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["counts"]["socketsSkipped"], 1);
    assert!(!env.in_snapshot("daily/2025-01-15_02-00-00").join("sock").exists());
}

#[test]
fn unreadable_entry_makes_a_partial_run_with_exit_3() {
    // Root reads everything, so run as `nobody` over a tree with one directory it cannot
    // open: the snapshot is published, the run is `partial`, and the warning names the path.
    require("setpriv");
    let env = Env::new();
    write(&env.src.join("ok"), "ok");
    write(&env.src.join("locked/inside"), "hidden");
    std::fs::set_permissions(env.src.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    sh(&format!(
        "chown -R nobody '{}' '{}' '{}' && chmod 755 '{}'",
        env.src.display(),
        env.dest.display(),
        env.state.display(),
        env.dir.path().display()
    ));
    let mut args = vec!["now".to_string(), "--source".into(), s(&env.src)];
    args.extend(env.target_args());
    args.extend(["--now".into(), "2025-01-15T02:00:00+01:00".into(), "--json".into()]);
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin())
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "partial");
    let warning = report["warnings"][0].to_string();
    assert!(warning.contains("locked") && warning.contains("ermission denied"), "{warning}");
    assert!(env.in_snapshot("daily/2025-01-15_02-00-00").join("ok").exists());
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.host_dir().join("daily/2025-01-15_02-00-00/.hwc-backup/meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["state"], "partial");
}

#[test]
fn argv0_aliases_dispatch_to_subcommands() {
    let env = Env::new();
    write(&env.src.join("f"), "f");
    let link = env.dir.path().join("backup-now");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let mut args = vec!["--source".to_string(), s(&env.src)];
    args.extend(env.target_args());
    args.extend(["--now".into(), "2025-01-15T02:00:00+01:00".into()]);
    let out = std::process::Command::new(&link).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let status = env.dir.path().join("backup-status");
    std::os::unix::fs::symlink(bin(), &status).unwrap();
    let out = std::process::Command::new(&status).args(env.target_args()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("2025-01-15_02-00-00"), "{}", show(&out));
}

#[test]
fn repeated_wall_clock_time_after_dst_fall_back_gets_a_suffix() {
    // 2025-10-26 in Europe/Berlin: 02:30 happens twice, first at +02:00, then at +01:00.
    let env = Env::new();
    write(&env.src.join("f"), "1");
    env.snapshot_ok("2025-10-26T02:30:00+02:00", &[]);
    write(&env.src.join("f"), "2");
    env.snapshot_ok("2025-10-26T02:30:00+01:00", &[]);
    assert_eq!(env.snapshot_ids(), ["daily/2025-10-26_02-30-00", "daily/2025-10-26_02-30-00_2"]);
    assert_eq!(std::fs::read_link(env.host_dir().join("latest")).unwrap(), Path::new("daily/2025-10-26_02-30-00_2"));
    let out = env.run("restore", &["--list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "{}", show(&out));
}

#[test]
fn link_count_limit_falls_back_to_a_copy_and_is_counted() {
    // ext4 allows 65 000 links per inode. Bring the previous snapshot's copy of a file to
    // that limit with links of our own, so the next snapshot's link() gets EMLINK for real.
    let env = Env::new();
    let fs = sh(&format!("stat -f -c %T '{}'", env.dest.display()));
    assert!(
        fs.trim() == "ext2/ext3",
        "this test needs ext4 under /var/tmp (found {fs}); the README's machines have it"
    );
    write(&env.src.join("popular"), "linked everywhere\n");
    write(&env.src.join("other"), "other\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let first = env.in_snapshot("daily/2025-01-15_02-00-00").join("popular");
    let extra = env.dir.path().join("extra-links");
    std::fs::create_dir(&extra).unwrap();
    let have = std::fs::metadata(&first).unwrap().nlink();
    for i in have..65_000 {
        std::fs::hard_link(&first, extra.join(i.to_string())).unwrap();
    }
    let out = env.snapshot_ok("2025-01-16T02:00:00+01:00", &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "success", "EMLINK is not a failure: {report}");
    assert_eq!(report["counts"]["emlinkFallbacks"], 1, "{report}");
    assert_eq!(report["counts"]["linked"], 1, "the other file is still linked: {report}");
    let second = env.in_snapshot("daily/2025-01-16_02-00-00").join("popular");
    assert_ne!(ino(&first), ino(&second), "a fresh inode chain starts");
    assert_eq!(std::fs::read_to_string(&second).unwrap(), "linked everywhere\n");
    let out = env.run("verify", &[]);
    assert!(out.status.success(), "{}", show(&out));
}

/// A source that contains the destination: the walk never enters the host directory being
/// written (it used to copy the snapshot into itself until the stack overflowed), says so
/// once, and the run succeeds; the next run links as usual.
#[test]
fn a_source_containing_the_destination_skips_the_host_directory() {
    let env = Env::new();
    write(&env.src.join("data/a.txt"), "a\n");
    let dest = env.src.join("backups");
    std::fs::create_dir(&dest).unwrap();
    let run = |when: &str| {
        env.cmd(&["now", "--source"])
            .arg(&env.src)
            .arg("--dest")
            .arg(&dest)
            .args(["--host", HOST, "--state-dir"])
            .arg(&env.state)
            .args(["--now", when])
            .output()
            .unwrap()
    };
    for (i, when) in ["2025-01-15T02:00:00+01:00", "2025-01-16T02:00:00+01:00"].iter().enumerate() {
        let o = run(when);
        assert_eq!(code(&o), 0, "run {i}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.matches("excluded automatically").count(), 1, "reported once: {}", show(&o));
        assert!(err.contains(&s(&dest.join(HOST))), "{}", show(&o));
    }
    let host = dest.join(HOST);
    let snap = host.join("daily/2025-01-16_02-00-00").join(env.src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(snap.join("data/a.txt")).unwrap(), "a\n");
    // The destination directory itself is kept, empty: its host directory is not.
    assert!(snap.join("backups").is_dir());
    assert_eq!(std::fs::read_dir(snap.join("backups")).unwrap().count(), 0);
    assert_eq!(
        ino(&snap.join("data/a.txt")),
        ino(&host.join("daily/2025-01-15_02-00-00").join(env.src.strip_prefix("/").unwrap()).join("data/a.txt"))
    );
    let o = env.cmd(&["verify", "--dest"]).arg(&dest).args(["--host", HOST, "--all"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
}

/// A source that is the destination or lies inside it is a bad plan: exit 2 from the
/// one-off run and from `config check`, nothing written — also when the path only leads
/// there through a symlink.
#[test]
fn a_source_inside_the_destination_is_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let before = tree(&env.dest);
    let alias = env.dir.path().join("alias");
    std::os::unix::fs::symlink(&env.dest, &alias).unwrap();
    for source in [env.dest.clone(), env.host_dir(), env.host_dir().join("daily"), alias.join(HOST)] {
        let o = env
            .cmd(&["now", "--source"])
            .arg(&source)
            .args(env.target_args())
            .args(["--now", "2025-01-16T02:00:00+01:00"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 2, "now --source {}: {}", source.display(), show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("sources[0]") && err.contains("destination"), "{}", show(&o));
        assert_eq!(tree(&env.dest), before, "now --source {} wrote", source.display());
    }
    let mut p = plan_json(&env);
    p["sources"] = serde_json::json!([s(&env.src), s(&env.host_dir())]);
    let plan = write_plan(&env, "inside.json", &p.to_string());
    let o = env.cmd(&["config", "check"]).arg(&plan).output().unwrap();
    assert_eq!(code(&o), 2, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sources[1]"), "{}", show(&o));
    let o = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&o), 2, "{}", show(&o));
    assert_eq!(tree(&env.dest), before);
}

/// 30 000 nested directories (a path of 60 000 bytes, built relative to descriptors): no
/// recursion on the stack and no descriptor per level, so the snapshot works, also with a
/// limit of 512 open files; a leftover of that depth is cleaned up by the next run.
/// An extended attribute or an ACL changed without touching the file's content, mode, owner or
/// mtime (`setfattr`, `setfacl` change only its ctime): the quick check alone would link the
/// old copy with the old attributes. The file is copied afresh, the untouched one still
/// linked, and the snapshot equals the source per `rsync -aHAXn`. Several runs, so the
/// comparison is also made from a base that recorded when its walk began.
#[test]
fn a_changed_xattr_or_acl_makes_a_new_copy() {
    require("setfacl");
    let env = Env::new();
    for f in ["tagged", "acl", "same"] {
        write(&env.src.join(f), format!("{f}\n"));
    }
    let tag_source = |v: &str| set_xattr(&env.src.join("tagged"), "user.tag", v);
    tag_source("one");
    let ids = ["daily/2025-01-15_02-00-00", "daily/2025-01-16_02-00-00", "daily/2025-01-17_02-00-00"];
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    tag_source("two");
    sh(&format!("setfacl -m u:nobody:r '{}'", s(&env.src.join("acl"))));
    env.snapshot_ok("2025-01-16T02:00:00+01:00", &[]);
    tag_source("three");
    env.snapshot_ok("2025-01-17T02:00:00+01:00", &[]);
    assert_attribute_changes_copied(&env.src, &|i| env.in_snapshot(ids[i]));
}

/// Three snapshots of `src` (`snap(0)`…`snap(2)`) taken while `tagged` had `user.tag` "one",
/// "two", "three", `acl` got an ACL after the first and `same` was never touched: a file is
/// copied for a new attribute or ACL (a new inode), linked while nothing changed, and the
/// newest snapshot equals the source.
pub(crate) fn assert_attribute_changes_copied(src: &Path, snap: &dyn Fn(usize) -> PathBuf) {
    let tag = |i: usize| xattr(&snap(i).join("tagged"), "user.tag");
    assert_eq!([tag(0), tag(1), tag(2)], ["one", "two", "three"]);
    assert_ne!(ino(&snap(0).join("tagged")), ino(&snap(1).join("tagged")), "a new copy for the new attribute");
    assert_ne!(ino(&snap(1).join("tagged")), ino(&snap(2).join("tagged")));
    assert_ne!(ino(&snap(0).join("acl")), ino(&snap(1).join("acl")), "a new copy for the new ACL");
    assert_eq!(ino(&snap(1).join("acl")), ino(&snap(2).join("acl")), "unchanged since: linked");
    assert_eq!(ino(&snap(0).join("same")), ino(&snap(2).join("same")), "the untouched file stays linked");
    assert_eq!(rsync_differences(src, &snap(2)), "");
}

/// The attribute comparison reads the previous copy: a symlink planted there, to a victim
/// outside that carries the source's old attribute and a matching mtime, is never followed —
/// the entry is copied afresh from the source, and the victim keeps its content and its
/// attribute.
#[test]
fn a_symlink_planted_at_the_previous_copy_is_not_followed_by_the_attribute_check() {
    let env = Env::new();
    write(&env.src.join("tagged"), "tagged\n");
    set_xattr(&env.src.join("tagged"), "user.tag", "one");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let victim = env.dir.path().join("victim");
    write(&victim, "tagged\n");
    set_xattr(&victim, "user.tag", "one");
    let planted = env.in_snapshot("daily/2025-01-15_02-00-00").join("tagged");
    std::fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    set_xattr(&env.src.join("tagged"), "user.tag", "two");
    env.snapshot_ok("2025-01-16T02:00:00+01:00", &[]);
    let new = env.in_snapshot("daily/2025-01-16_02-00-00").join("tagged");
    assert!(std::fs::symlink_metadata(&new).unwrap().file_type().is_file(), "a regular file, copied");
    assert_eq!(xattr(&new, "user.tag"), "two");
    assert_eq!(
        (std::fs::read_to_string(&victim).unwrap(), xattr(&victim, "user.tag")),
        ("tagged\n".into(), "one".into())
    );
    assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink(), "the plant is left as it was");
}

/// A tree deeper than the directories a walk keeps open (`fs::tree::OPEN_LEVELS`) that
/// branches at every level (`d/…/d` 40 deep, and `x/file` beside each `d`): the walk goes
/// down, partly up and down again, closing and reopening the levels above through `..` (in
/// the source, the work tree and the previous snapshot at once) — the second run links
/// everything from the first, and both equal the source.
#[test]
fn a_deep_tree_that_branches_at_every_level() {
    let env = Env::new();
    let mut p = env.src.clone();
    for i in 0..40 {
        write(&p.join("x/file"), format!("level {i}\n"));
        p.push("d");
    }
    write(&p.join("bottom"), "bottom\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let out = env.snapshot_ok("2025-01-16T02:00:00+01:00", &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "success", "{report}");
    assert_eq!(report["counts"]["linked"], 41, "{report}");
    for id in ["daily/2025-01-15_02-00-00", "daily/2025-01-16_02-00-00"] {
        assert_eq!(rsync_differences(&env.src, &env.in_snapshot(id)), "", "{id}");
    }
}

#[test]
fn a_tree_thirty_thousand_levels_deep() {
    require("python3");
    let env = Env::new();
    // std's remove_dir_all (the TempDir's cleanup) recurses: remove the deep trees first,
    // also when an assertion fails.
    struct RmRf(String);
    impl Drop for RmRf {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rm").args(["-rf", &self.0]).status();
        }
    }
    let _cleanup = RmRf(s(env.dir.path()));
    sh(&format!(
        "python3 -c '
import os
fd = os.open(\"{}\", os.O_RDONLY)
for i in range(30000):
    os.mkdir(\"d\", dir_fd=fd)
    n = os.open(\"d\", os.O_RDONLY, dir_fd=fd); os.close(fd); fd = n
f = os.open(\"bottom.txt\", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd); os.write(f, b\"deep\\n\")
'",
        s(&env.src)
    ));
    let run = |when: &str| {
        let mut args = vec!["now".to_string(), "--source".into(), s(&env.src)];
        args.extend(env.target_args());
        args.extend(["--now".into(), when.into(), "--json".into()]);
        let script = format!("ulimit -n 512 && exec {} \"$@\"", bin());
        let o = std::process::Command::new("sh").args(["-c", &script, "sh"]).args(&args).output().unwrap();
        // Not `show`: a failure names a path of 60 000 bytes.
        let text = |b: &[u8]| String::from_utf8_lossy(b).chars().take(3000).collect::<String>();
        assert_eq!(code(&o), 0, "{}\n{}", text(&o.stdout), text(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let first = run("2025-01-15T02:00:00+01:00");
    assert_eq!(first["counts"]["files"], 1, "{first}");
    assert!(first["counts"]["directories"].as_u64().unwrap() > 30_000, "{first}");
    let second = run("2025-01-16T02:00:00+01:00");
    assert_eq!(second["counts"]["linked"], 1, "{second}");
    // The first snapshot as the leftover of an interrupted run: the next run removes it.
    let incomplete = env.host_dir().join(".incomplete");
    std::fs::create_dir_all(&incomplete).unwrap();
    std::fs::rename(env.host_dir().join("daily/2025-01-15_02-00-00"), incomplete.join("2025-01-15_02-00-00")).unwrap();
    let third = run("2025-01-17T02:00:00+01:00");
    assert_eq!(third["cleanedUp"], serde_json::json!(["2025-01-15_02-00-00"]), "{third}");
    assert_eq!(std::fs::read_dir(&incomplete).unwrap().count(), 0);
    assert!(std::fs::read_dir(env.host_dir().join(".trash")).map_or(true, |mut d| d.next().is_none()));
}

/// Two names of one inode given as single-file sources directly below `/` (their directory in
/// the snapshot is its root): the second is linked to the snapshot's copy of the first, found
/// beneath the work tree, never to a path outside it — the live file keeps its own inode and
/// changing it afterwards changes nothing in the snapshot.
#[test]
fn hard_links_at_the_snapshot_root_link_to_the_snapshot_copy_not_the_live_file() {
    let env = Env::new();
    let tag = format!("hwc-root-links-{}", std::process::id());
    let (a, b) = (PathBuf::from(format!("/{tag}-a")), PathBuf::from(format!("/{tag}-b")));
    struct Cleanup(PathBuf, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let _cleanup = Cleanup(a.clone(), b.clone());
    write(&a, "before\n");
    std::fs::hard_link(&a, &b).unwrap();
    let mut args: Vec<String> = ["now", "--source", &*s(&a), "--source", &*s(&b)].map(String::from).to_vec();
    args.extend(env.target_args());
    args.extend(["--now".into(), "2025-01-15T02:00:00+01:00".into()]);
    let out = env.cmd(&[]).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let snap = env.host_dir().join("daily/2025-01-15_02-00-00");
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let (sa, sb) = (snap.join(format!("{tag}-a")), snap.join(format!("{tag}-b")));
    assert_eq!(ino(&sa), ino(&sb), "the two names are one inode in the snapshot too");
    assert_ne!(ino(&sa), ino(&a), "the snapshot shares the live file's inode");
    std::fs::write(&a, "after\n").unwrap();
    assert_eq!(std::fs::read_to_string(&sb).unwrap(), "before\n", "the snapshot changed with the live file");
}
