//! Restore: round trips of a directory and a single file from an older snapshot, the rich
//! tree (ACLs, xattrs, owners, hard links, devices, FIFOs, sparse files, odd names) equal per
//! `rsync -aHAXn`, a `--force` merge that replaces files, directories and symlinks of the
//! other type, a lone symlink, a staging entry left by an interrupted restore, refusal to
//! overwrite without `--force`, `--dry-run` writing nothing, and `--list`.

use std::os::unix::fs::MetadataExt;

use crate::snapshot::{rich_tree, rsync_differences};
use crate::util::*;

fn two_snapshots(env: &Env) {
    write(&env.src.join("home/u/.config/app.toml"), "v1\n");
    write(&env.src.join("home/u/.config/sub/deep"), "deep v1\n");
    write(&env.src.join("home/u/notes.txt"), "notes v1\n");
    sh(&format!(
        "setfattr -n user.k -v v '{}' && ln -s app.toml '{}'",
        env.src.join("home/u/.config/app.toml").display(),
        env.src.join("home/u/.config/link").display()
    ));
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    write(&env.src.join("home/u/.config/app.toml"), "v2\n");
    write(&env.src.join("home/u/notes.txt"), "notes v2\n");
    env.snapshot_ok("2025-01-16T02:00:00+01:00", &[]);
}

fn host_path(env: &Env, rel: &str) -> String {
    s(&env.src.join(rel))
}

#[test]
fn restores_a_directory_from_an_older_snapshot() {
    require("rsync");
    let env = Env::new();
    two_snapshots(&env);
    let target = env.dir.path().join("restored-config");
    let out = env.run("restore", &["daily/2025-01-15_02-00-00", &host_path(&env, "home/u/.config"), &s(&target)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(target.join("app.toml")).unwrap(), "v1\n");
    assert_eq!(std::fs::read_to_string(target.join("sub/deep")).unwrap(), "deep v1\n");
    assert_eq!(std::fs::read_link(target.join("link")).unwrap().to_str(), Some("app.toml"));
    // Metadata too: the restored tree equals the snapshot's copy per rsync -aHAX.
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00").join("home/u/.config");
    assert_eq!(
        sh(&format!("rsync -aHAXn --itemize-changes --delete '{}/' '{}/'", snap.display(), target.display())),
        ""
    );
}

#[test]
fn restores_the_rich_tree_exactly() {
    require("setfacl");
    require("setfattr");
    let env = Env::new();
    rich_tree(&env.src);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let target = env.dir.path().join("restored/tree");
    let out = env.run("restore", &["latest", &s(&env.src), &s(&target), "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["written"], serde_json::json!([]), "a real restore does not list every path: {report}");
    assert!(report["entries"].as_u64().unwrap() > 20, "{report}");
    assert_eq!(rsync_differences(&env.src, &target), "", "restored tree differs from the source");
    assert_eq!(ino(&target.join("home/alice/notes.txt")), ino(&target.join("home/alice/notes-hardlink")));
    let sparse = std::fs::metadata(target.join("home/alice/sparse")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "sparse file was filled in: {} blocks", sparse.blocks());
    let names: Vec<_> = std::fs::read_dir(target.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("tree")], "nothing but the target is left beside it");
}

#[test]
fn force_merges_into_an_existing_tree_replacing_each_type() {
    let env = Env::new();
    let src = env.src.join("data");
    write(&src.join("keep/a.txt"), "a from snapshot\n");
    write(&src.join("was-dir"), "now a file\n");
    std::fs::create_dir_all(src.join("was-file")).unwrap();
    write(&src.join("was-file/inner"), "inner\n");
    write(&src.join("linked"), "one inode\n");
    std::fs::hard_link(src.join("linked"), src.join("keep/linked-too")).unwrap();
    std::os::unix::fs::symlink("keep/a.txt", src.join("sym")).unwrap();
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    // The target: one file the snapshot does not have (it stays), and every entry of the
    // snapshot present with another type or content.
    let target = env.dir.path().join("merge");
    write(&target.join("keep/a.txt"), "local edit\n");
    write(&target.join("keep/only-local"), "mine\n");
    write(&target.join("was-dir/deep/x"), "x\n");
    write(&target.join("was-file"), "a file\n");
    write(&target.join("linked"), "old\n");
    write(&target.join("sym"), "a regular file where the symlink goes\n");
    let out = env.run("restore", &["latest", &s(&src), &s(&target)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(target.join("keep/a.txt")).unwrap(), "local edit\n", "refused, untouched");
    // A directory where the snapshot has a file is never deleted, not even with --force:
    // refused before anything is written, and the dry run says so.
    let out = env.run("restore", &["latest", &s(&src), &s(&target), "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was-dir is a directory"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(target.join("was-dir/deep/x")).unwrap(), "x\n");
    assert_eq!(std::fs::read_to_string(target.join("keep/a.txt")).unwrap(), "local edit\n", "refused, untouched");
    let out = env.run("restore", &["latest", &s(&src), &s(&target), "--force", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused    "), "{}", show(&out));
    std::fs::remove_dir_all(target.join("was-dir")).unwrap();
    let out = env.run("restore", &["latest", &s(&src), &s(&target), "--force", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let overwritten = report["overwritten"].as_array().unwrap().len();
    assert_eq!(overwritten, 4, "a.txt, was-file, linked, sym: {report}");
    assert_eq!(std::fs::read_to_string(target.join("keep/only-local")).unwrap(), "mine\n", "merge keeps others");
    std::fs::remove_file(target.join("keep/only-local")).unwrap();
    assert_eq!(rsync_differences(&src, &target), "", "merged tree differs from the snapshot's");
    assert_eq!(ino(&target.join("linked")), ino(&target.join("keep/linked-too")), "hard link kept in a merge");
    let leftovers = sh(&format!("find '{}' -name '*.hwc-restore*'", target.display()));
    assert_eq!(leftovers, "", "temporary files left behind");
}

#[test]
fn restores_a_lone_symlink_and_clears_an_interrupted_restores_staging() {
    let env = Env::new();
    write(&env.src.join("d/file"), "content\n");
    std::os::unix::fs::symlink("file", env.src.join("d/link")).unwrap();
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let target = env.dir.path().join("out/link");
    let out = env.run("restore", &["latest", &s(&env.src.join("d/link")), &s(&target)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_link(&target).unwrap().to_str(), Some("file"));
    // What a restore killed half-way leaves: the staging entry, never the target.
    let staging = env.dir.path().join("out/.tree.hwc-restore");
    write(&staging.join("half/written"), "par");
    let target = env.dir.path().join("out/tree");
    let out = env.run("restore", &["latest", &s(&env.src.join("d")), &s(&target)]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!staging.exists(), "the stale staging entry was not cleared");
    assert_eq!(rsync_differences(&env.src.join("d"), &target), "");
    assert_eq!(std::fs::metadata(&target).unwrap().uid(), std::fs::metadata(env.src.join("d")).unwrap().uid());
}

#[test]
fn restores_a_single_file_by_unique_prefix_and_latest() {
    let env = Env::new();
    two_snapshots(&env);
    let t1 = env.dir.path().join("old-notes");
    let out = env.run("restore", &["2025-01-15", &host_path(&env, "home/u/notes.txt"), &s(&t1)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&t1).unwrap(), "notes v1\n");
    let t2 = env.dir.path().join("new-notes");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/notes.txt"), &s(&t2)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&t2).unwrap(), "notes v2\n");
}

#[test]
fn refuses_to_overwrite_without_force() {
    let env = Env::new();
    two_snapshots(&env);
    let target = env.dir.path().join("existing.txt");
    write(&target, "precious\n");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/notes.txt"), &s(&target)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n", "nothing may be overwritten");
    // Into an existing directory: the conflict deep inside is found before anything is written.
    let dir = env.dir.path().join("cfg");
    write(&dir.join("sub/deep"), "mine\n");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/.config"), &s(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(!dir.join("app.toml").exists(), "nothing is written when any conflict exists");
    // With --force it replaces.
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/notes.txt"), &s(&target), "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "notes v2\n");
}

#[test]
fn dry_run_writes_nothing_and_lists_what_it_would() {
    let env = Env::new();
    two_snapshots(&env);
    let target = env.dir.path().join("dry");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/.config"), &s(&target), "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app.toml") && stdout.contains("would write"), "{stdout}");
    assert!(!target.exists(), "--dry-run must not create anything");
}

#[test]
fn list_shows_every_snapshot_newest_first() {
    let env = Env::new();
    two_snapshots(&env);
    let out = env.run("restore", &["--list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("daily/2025-01-16_02-00-00") && lines[1].starts_with("daily/2025-01-15_02-00-00"),
        "{stdout}"
    );
    assert!(lines[0].contains("+01:00"), "times are shown with their offset: {stdout}");
}
