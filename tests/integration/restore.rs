//! Restore: round trips of a directory and a single file from an older snapshot, the rich
//! tree (ACLs, xattrs, owners, hard links, devices, FIFOs, sparse files, odd names) equal per
//! `rsync -aHAXn`, a `--force` merge that replaces files and symlinks of the other type but
//! never deletes a directory, a lone symlink, a staging entry left by an interrupted restore,
//! refusal to overwrite without `--force`, `--dry-run` writing nothing and marking each entry
//! new, replaced, unchanged or merged, and `--list`. The hostile cases (issue 12, item 5): a
//! path below a symlink stored in the snapshot is refused rather than read live, symlinks
//! planted in the target are replaced and never followed, a file onto a directory lands
//! inside it, a DEST inside the backup destination is refused (exit 2), and restoring `/`
//! leaves `.hwc-backup/` behind; a victim outside is compared before and after each.

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
    // Removing it touches keep/'s mtime: keep the one the restore set and put it back, so
    // that rsync compares what the restore did (this passed only when both fell in one tick).
    let stamp = env.dir.path().join("keep-mtime");
    sh(&format!("touch -r '{}' '{}'", target.join("keep").display(), stamp.display()));
    std::fs::remove_file(target.join("keep/only-local")).unwrap();
    sh(&format!("touch -r '{}' '{}'", stamp.display(), target.join("keep").display()));
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
fn a_staging_entry_where_others_can_write_is_named_not_removed() {
    // In a directory others can write to (here: owned by nobody, as a user's home is), an
    // entry under the staging name may be a tree someone renamed there for root to delete.
    let env = Env::new();
    write(&env.src.join("d/file"), "content\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let shared = env.dir.path().join("home-of-nobody");
    std::fs::create_dir(&shared).unwrap();
    sh(&format!("chown nobody '{}'", shared.display()));
    let planted = shared.join(".tree.hwc-restore");
    write(&planted.join("keep.txt"), "not yours to delete\n");
    let target = shared.join("tree");
    let out = env.run("restore", &["latest", &s(&env.src.join("d")), &s(&target)]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(show(&out).contains(".tree.hwc-restore: an earlier restore's staging entry"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(planted.join("keep.txt")).unwrap(), "not yours to delete\n");
    assert!(!target.exists());
    // Group-writable and not sticky: the same, even when root owns both.
    sh(&format!("chown root '{}' && chmod 0775 '{}'", shared.display(), shared.display()));
    let out = env.run("restore", &["latest", &s(&env.src.join("d")), &s(&target)]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(planted.join("keep.txt").exists());
    // Once a person has looked at it and removed it, the restore works; sticky is fine too.
    std::fs::remove_dir_all(&planted).unwrap();
    sh(&format!("chmod 1777 '{}'", shared.display()));
    write(&planted.join("half/written"), "par");
    let out = env.run("restore", &["latest", &s(&env.src.join("d")), &s(&target)]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!planted.exists(), "root's own leftover in a sticky directory is cleared");
    assert_eq!(rsync_differences(&env.src.join("d"), &target), "");
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

/// Every entry below `root` (itself included) with its type, mode, mtime and content or link
/// target, not following symlinks: compared before and after to prove nothing changed.
fn fingerprint(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let what = if md.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p).unwrap().display())
        } else if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            "dir".to_string()
        } else {
            format!("{:?}", std::fs::read(&p).unwrap())
        };
        out.push(format!("{} {:o} {}.{} {what}", p.display(), md.mode(), md.mtime(), md.mtime_nsec()));
    }
    out.sort();
    out
}

/// A victim directory outside everything the test restores, with one file.
fn victim(env: &Env) -> std::path::PathBuf {
    let v = env.dir.path().join("victim");
    write(&v.join("report.txt"), "the victim's own file\n");
    std::fs::set_permissions(v.join("report.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    v
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn a_path_below_a_symlink_in_the_snapshot_is_refused_not_read_live() {
    let env = Env::new();
    // The live data the links point to, outside the snapshot: after the backup it is
    // "encrypted"; a restore through the stored link would hand that back as the backup.
    let live = env.dir.path().join("data");
    write(&live.join("report.txt"), "good report\n");
    write(&live.join("sub/deep.txt"), "good deep\n");
    std::fs::create_dir_all(env.src.join("srv")).unwrap();
    std::os::unix::fs::symlink(&live, env.src.join("srv/link")).unwrap();
    std::os::unix::fs::symlink("../../data", env.src.join("srv/rel")).unwrap();
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    write(&live.join("report.txt"), "ENCRYPTED\n");
    let before = fingerprint(&live);
    for (link, shown_target) in [("srv/link", s(&live)), ("srv/rel", "../../data".to_string())] {
        for rest in ["report.txt", "sub", "sub/deep.txt"] {
            let target = env.dir.path().join("out");
            let asked = format!("{}/{link}/{rest}", s(&env.src));
            let out = env.run("restore", &["latest", &asked, &s(&target)]);
            assert_eq!(out.status.code(), Some(1), "{asked}: {}", show(&out));
            let expected = format!("is below a symlink in the snapshot ({}/{link} -> {shown_target})", s(&env.src));
            assert!(String::from_utf8_lossy(&out.stderr).contains(&expected), "{expected}: {}", show(&out));
            assert!(!target.exists(), "nothing restored for {asked}");
            let out = env.run("restore", &["latest", &asked, &s(&target), "--dry-run"]);
            assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        }
    }
    assert_eq!(fingerprint(&live), before, "the live data is untouched");
    // The link itself is restored, as a link.
    let target = env.dir.path().join("link-copy");
    let out = env.run("restore", &["latest", &format!("{}/srv/link", s(&env.src)), &s(&target)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_link(&target).unwrap(), live);
}

#[test]
fn symlinks_planted_in_the_target_are_replaced_never_followed() {
    let env = Env::new();
    let src = env.src.join("data");
    write(&src.join("sub/report.txt"), "from the snapshot\n");
    write(&src.join("report.txt"), "top from the snapshot\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let victim = victim(&env);
    let before = fingerprint(&victim);
    // Into an existing tree: a symlink where the snapshot has a directory, and one where
    // it has a file, both pointing at the victim.
    let target = env.dir.path().join("restore-here");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&victim, target.join("sub")).unwrap();
    std::os::unix::fs::symlink(victim.join("report.txt"), target.join("report.txt")).unwrap();
    let out = env.run("restore", &["latest", &s(&src), &s(&target)]);
    assert_eq!(out.status.code(), Some(1), "without --force the links are conflicts: {}", show(&out));
    assert_eq!(fingerprint(&victim), before);
    let out = env.run("restore", &["latest", &s(&src), &s(&target), "--dry-run", "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("replaced   {}/sub\n", s(&target))), "{stdout}");
    assert!(stdout.contains(&format!("new        {}/sub/report.txt\n", s(&target))), "{stdout}");
    let out = env.run("restore", &["latest", &s(&src), &s(&target), "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(fingerprint(&victim), before, "nothing written through the planted links");
    assert!(std::fs::symlink_metadata(target.join("sub")).unwrap().is_dir());
    assert_eq!(std::fs::read_to_string(target.join("sub/report.txt")).unwrap(), "from the snapshot\n");
    assert_eq!(std::fs::read_to_string(target.join("report.txt")).unwrap(), "top from the snapshot\n");
    // DEST itself a symlink to the victim: replaced by the restored directory.
    let dest_link = env.dir.path().join("dest-link");
    std::os::unix::fs::symlink(&victim, &dest_link).unwrap();
    let out = env.run("restore", &["latest", &s(&src), &s(&dest_link)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = env.run("restore", &["latest", &s(&src.join("report.txt")), &s(&dest_link), "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&dest_link).unwrap(), "top from the snapshot\n");
    assert!(!std::fs::symlink_metadata(&dest_link).unwrap().file_type().is_symlink());
    assert_eq!(fingerprint(&victim), before, "nothing written through DEST's own link");
}

#[test]
fn a_file_onto_a_directory_lands_inside_and_force_never_deletes_a_directory() {
    let env = Env::new();
    write(&env.src.join("docs/report.txt"), "v1\n");
    write(&env.src.join("docs/same.txt"), "same\n");
    write(&env.src.join("docs/other.txt"), "other v1\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let file = format!("{}/docs/report.txt", s(&env.src));
    // Onto an existing directory, as cp does: DEST/report.txt.
    let dir = env.dir.path().join("into");
    std::fs::create_dir_all(&dir).unwrap();
    let out = env.run("restore", &["latest", &file, &s(&dir)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(dir.join("report.txt")).unwrap(), "v1\n");
    // Again: now DEST/report.txt exists and is the same: nothing to replace, no --force needed.
    let out = env.run("restore", &["latest", &file, &s(&dir), "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"), "{}", show(&out));
    // A directory in the way of the file is never deleted, --force or not.
    let blocked = env.dir.path().join("blocked");
    write(&blocked.join("report.txt/precious"), "mine\n");
    let before = fingerprint(&blocked);
    for extra in [&[][..], &["--force"][..], &["--force", "--dry-run"][..]] {
        let mut args = vec!["latest", file.as_str(), blocked.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = env.run("restore", &args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("never deletes a directory"), "{}", show(&out));
        assert_eq!(fingerprint(&blocked), before, "{extra:?}");
    }
    let out = env.run("restore", &["latest", &file, &s(&blocked), "--dry-run", "--force", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["changes"][0]["action"], "refused", "{r}");

    // --dry-run marks each entry: new, replaced, unchanged (and merged for a directory).
    let tree = env.dir.path().join("tree");
    let out = env.run("restore", &["latest", &format!("{}/docs", s(&env.src)), &s(&tree)]);
    assert!(out.status.success(), "{}", show(&out));
    std::fs::remove_file(tree.join("report.txt")).unwrap();
    let other = tree.join("other.txt");
    let mtime = std::fs::metadata(&other).unwrap().modified().unwrap();
    std::fs::write(&other, "OTHER v1\n").unwrap(); // same size and mtime, other content
    std::fs::File::options().write(true).open(&other).unwrap().set_modified(mtime).unwrap();
    let out = env.run("restore", &["latest", &format!("{}/docs", s(&env.src)), &s(&tree), "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(1), "a replacement needs --force: {}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<(String, String)> = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let p = c["path"].as_str().unwrap();
            (p.strip_prefix(&s(&tree)).unwrap().to_string(), c["action"].as_str().unwrap().to_string())
        })
        .collect();
    let expected = [("", "merged"), ("/other.txt", "replaced"), ("/report.txt", "new"), ("/same.txt", "unchanged")];
    assert_eq!(actions, expected.map(|(a, b)| (a.to_string(), b.to_string())), "{r}");
    let out = env.run("restore", &["latest", &format!("{}/docs", s(&env.src)), &s(&tree), "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("unchanged  {}/same.txt", s(&tree))), "{stdout}");
    assert!(stdout.contains(&format!("replaced   {}/other.txt", s(&tree))), "{stdout}");
    assert!(stdout.contains(&format!("new        {}/report.txt", s(&tree))), "{stdout}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "OTHER v1\n", "a dry run writes nothing");
}

#[test]
fn a_dest_inside_the_backup_destination_is_refused() {
    let env = Env::new();
    write(&env.src.join("a.txt"), "a\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let before = fingerprint(&env.dest);
    let snap = env.host_dir().join("daily/2025-01-15_02-00-00");
    let sneaky = env.dir.path().join("looks-elsewhere");
    std::os::unix::fs::symlink(env.host_dir().join("daily"), &sneaky).unwrap();
    for dest in [
        snap.join("restored"),
        snap.clone(),
        env.host_dir().join("daily"),
        env.host_dir(),
        env.host_dir().join("latest/x"),
        env.dest.join("other-host/new/dir"),
        env.dest.clone(),
        sneaky.join("x"),
    ] {
        let out = env.run("restore", &["latest", &s(&env.src.join("a.txt")), &s(&dest), "--force"]);
        assert_eq!(out.status.code(), Some(2), "{}: {}", dest.display(), show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("inside the backup destination"), "{}", show(&out));
        assert_eq!(fingerprint(&env.dest), before, "nothing written for {}", dest.display());
    }
}

#[test]
fn restoring_the_root_leaves_the_snapshot_metadata_behind() {
    let env = Env::new();
    write(&env.src.join("a.txt"), "a\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let target = env.dir.path().join("whole");
    let out = env.run("restore", &["latest", "/", &s(&target), "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(".hwc-backup"), "{}", show(&out));
    let out = env.run("restore", &["latest", "/", &s(&target)]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!target.join(".hwc-backup").exists(), "the snapshot's metadata is not restored");
    let inside = target.join(env.src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(inside.join("a.txt")).unwrap(), "a\n");
    // Merging into it again leaves nothing to replace, and a `.hwc-backup` planted in the
    // target as a symlink to a victim is neither followed nor replaced.
    let victim = victim(&env);
    let before = fingerprint(&victim);
    std::os::unix::fs::symlink(&victim, target.join(".hwc-backup")).unwrap();
    let out = env.run("restore", &["latest", "/", &s(&target), "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_link(target.join(".hwc-backup")).unwrap(), victim);
    assert_eq!(fingerprint(&victim), before);
}

/// Deeper than any thread's stack could recurse, and than `ulimit -n` would allow with a
/// descriptor per level.
const DEEP: usize = 20_000;

mod deep {
    use std::os::fd::OwnedFd;
    use std::path::Path;

    use rustix::fs::{Mode, OFlags};

    fn dir_flags() -> OFlags {
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    }

    pub fn open(path: &Path) -> OwnedFd {
        rustix::fs::open(path, dir_flags(), Mode::empty()).unwrap()
    }

    /// Builds `levels` directories `d/d/…` below `top`, one `mkdirat` at a time (the path is
    /// far longer than PATH_MAX), and returns the bottom one.
    pub fn chain(top: &OwnedFd, levels: usize) -> OwnedFd {
        let mut cur = rustix::fs::openat(top, c".", dir_flags(), Mode::empty()).unwrap();
        for _ in 0..levels {
            rustix::fs::mkdirat(&cur, c"d", Mode::from_raw_mode(0o755)).unwrap();
            cur = rustix::fs::openat(&cur, c"d", dir_flags(), Mode::empty()).unwrap();
        }
        cur
    }

    /// How many levels the chain `d/d/…` below `top` has, and its bottom directory.
    pub fn follow(top: &Path) -> (usize, OwnedFd) {
        let mut cur = open(top);
        let mut depth = 0;
        while let Ok(next) = rustix::fs::openat(&cur, c"d", dir_flags(), Mode::empty()) {
            cur = next;
            depth += 1;
        }
        (depth, cur)
    }

    /// Writes the file `name` in an open directory.
    pub fn write(dir: &OwnedFd, name: &std::ffi::CStr, content: &[u8]) {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let f: std::fs::File = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644)).unwrap().into();
        std::io::Write::write_all(&mut &f, content).unwrap();
    }

    /// Reads the file `name` in an open directory.
    pub fn read(dir: &OwnedFd, name: &std::ffi::CStr) -> Vec<u8> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let f: std::fs::File = rustix::fs::openat(dir, name, flags, Mode::empty()).unwrap().into();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut data).unwrap();
        data
    }

    /// The inode of `name` in an open directory.
    pub fn ino(dir: &OwnedFd, name: &std::ffi::CStr) -> u64 {
        rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap().st_ino
    }
}

#[test]
fn restores_a_tree_twenty_thousand_levels_deep_with_256_descriptors() {
    require("prlimit");
    // On a tmpfs where there is one: tens of thousands of mkdir cost seconds on a disk.
    let env = Env::on_tmpfs();
    write(&env.src.join("deep/top.txt"), "top\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let id = env.snapshot_ids().pop().unwrap();
    // The deep chain is built in the snapshot directly (what `now` does with such a tree is
    // not this test's subject): a file and a 1 MiB file at the bottom, and a hard link to
    // the bottom file at the top, whose first copy is far beyond PATH_MAX from there.
    let in_snapshot = env.in_snapshot(&id).join("deep");
    let top = deep::open(&in_snapshot);
    let bottom = deep::chain(&top, DEEP);
    deep::write(&bottom, c"f", b"bottom\n");
    deep::write(&bottom, c"big", &vec![7u8; 1 << 20]);
    rustix::fs::linkat(&bottom, c"f", &top, c"link-to-bottom", rustix::fs::AtFlags::empty()).unwrap();
    drop((top, bottom));

    let target = env.dir.path().join("out/deep");
    let staging = env.dir.path().join("out/.deep.hwc-restore");
    let restore = |limits: &[&str], extra: &[&str]| {
        std::process::Command::new("prlimit")
            .arg("--nofile=256")
            .args(limits)
            .arg(bin())
            .arg("restore")
            .args(env.target_args())
            .args(["latest", &s(&env.src.join("deep")), &s(&target)])
            .args(extra)
            .env_remove("HWC_BACKUP_CONFIG")
            .env_remove("HWC_BACKUP_LOG")
            .output()
            .unwrap()
    };
    // Interrupted at the bottom: a file size limit kills the restore (SIGXFSZ) while it
    // writes the big file, 20 000 levels down in the staging entry.
    let out = restore(&["--fsize=65536"], &[]);
    assert!(!out.status.success(), "{}", show(&out));
    assert_eq!(deep::follow(&staging).0, DEEP, "the interrupted restore did not get to the bottom");
    assert!(!target.exists(), "an interrupted restore left a partial target");
    // The next restore removes that staging entry, and restores the whole tree.
    let out = restore(&[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!staging.exists(), "the stale staging entry was not cleared");
    let (depth, bottom) = deep::follow(&target);
    assert_eq!(depth, DEEP);
    assert_eq!(deep::read(&bottom, c"f"), b"bottom\n");
    assert_eq!(deep::read(&bottom, c"big").len(), 1 << 20);
    let top = deep::open(&target);
    assert_eq!(deep::ino(&top, c"link-to-bottom"), deep::ino(&bottom, c"f"), "the hard link was not kept");
    assert_eq!(std::fs::read_to_string(target.join("top.txt")).unwrap(), "top\n");
    // A merge onto it surveys and walks all of it too: the bottom file (and so its hard link
    // at the top), changed on the target, is refused without --force and replaced with it.
    deep::write(&bottom, c"f", b"changed\n");
    let out = restore(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(deep::read(&bottom, c"f"), b"changed\n");
    let out = restore(&[], &["--force"]);
    assert!(out.status.success(), "{}", show(&out));
    drop(bottom);
    let (depth, bottom) = deep::follow(&target);
    assert_eq!(depth, DEEP);
    assert_eq!(deep::read(&bottom, c"f"), b"bottom\n");
    assert_eq!(deep::ino(&top, c"link-to-bottom"), deep::ino(&bottom, c"f"), "the hard link was not kept");
    // --delete with an include, at that depth and under the same descriptor limit: at the
    // bottom, what was added since goes when the include selects it and stays when not (and
    // so does every directory of the chain, with nothing included below it); of two
    // extraneous chains as deep, the one holding a file left out stays with that file only,
    // the one holding only an included file goes whole.
    deep::write(&bottom, c"new.txt", b"added since\n");
    deep::write(&bottom, c"keep.log", b"left out\n");
    for (name, files) in [(c"x1", &[c"a.txt", c"b.log"][..]), (c"x2", &[c"c.txt"][..])] {
        rustix::fs::mkdirat(&top, name, rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        let x = rustix::fs::openat(&top, name, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        let x_bottom = deep::chain(&x, DEEP);
        for f in files {
            deep::write(&x_bottom, f, b"x\n");
        }
    }
    let out = restore(&[], &["--delete", "--include", "*.txt", "--force", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deleted"], 3, "new.txt, x1's a.txt and x2: {report}");
    let (depth, bottom) = deep::follow(&target);
    assert_eq!(depth, DEEP);
    assert!(rustix::fs::statat(&bottom, c"new.txt", rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_err());
    assert_eq!(deep::read(&bottom, c"keep.log"), b"left out\n");
    assert_eq!(deep::read(&bottom, c"f"), b"bottom\n");
    let (depth, x1_bottom) = deep::follow(&target.join("x1"));
    assert_eq!(depth, DEEP);
    assert_eq!(deep::read(&x1_bottom, c"b.log"), b"x\n");
    assert!(rustix::fs::statat(&x1_bottom, c"a.txt", rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_err());
    assert!(!target.join("x2").exists());
    drop((top, bottom, x1_bottom));
    // std's remove_dir_all holds a descriptor per level; rm does not.
    sh(&format!("rm -rf '{}'", env.dir.path().display()));
}

#[test]
fn merges_and_lists_a_new_deep_subtree_below_a_deep_existing_one() {
    // Deeper than the levels a restore keeps open (the rest are closed and re-opened on the
    // way back up), with the target holding the upper half of the chain: the dry run walks
    // directories that exist on the target and, below them, directories that do not.
    let env = Env::new();
    let chain = |levels: usize| vec!["d"; levels].join("/");
    write(&env.src.join("tree").join(chain(200)).join("f"), "bottom\n");
    write(&env.src.join("tree").join(chain(100)).join("g"), "middle\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let target = env.dir.path().join("out");
    std::fs::create_dir_all(target.join(chain(100))).unwrap();
    let from = s(&env.src.join("tree"));
    let out = env.run("restore", &["latest", &from, &s(&target), "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |action: &str| text.lines().filter(|l| l.starts_with(&format!("{action} "))).count();
    assert_eq!((count("merged"), count("new")), (101, 102), "{text}");
    assert!(text.contains(&format!("new        {}/f\n", target.join(chain(200)).display())), "{text}");
    // The real merge: nothing is replaced, so no --force; every directory gets its time
    // from the snapshot after its entries are written, on both sides of the boundary.
    let out = env.run("restore", &["latest", &from, &s(&target)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(target.join(chain(200)).join("f")).unwrap(), "bottom\n");
    assert_eq!(std::fs::read_to_string(target.join(chain(100)).join("g")).unwrap(), "middle\n");
    assert_eq!(rsync_differences(&env.src.join("tree"), &target), "");
}

/// File contents are written by worker threads beside the walk: a few thousand files, many of
/// them hard-linked in groups spread over directories, with their own modes and times,
/// restore exactly (`rsync -aHAXn`, links shared as in the snapshot); and when a worker
/// fails (the target's filesystem fills up), the restore stops with that file's error, no
/// target appears, and a victim outside is unchanged.
#[test]
fn workers_restore_a_wide_linked_tree_exactly_and_a_worker_failure_leaves_no_target() {
    require("rsync");
    let env = Env::new();
    let root = env.src.join("w");
    for d in 0..40 {
        for f in 0..60 {
            let p = root.join(format!("d{d:02}/f{f:02}"));
            write(&p, format!("{d} {f} {}\n", "x".repeat(f * 37)));
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600 + (f as u32 % 3) * 0o40))
                .unwrap();
        }
        // Each directory's last file is a link of a file two directories up.
        if d >= 2 {
            std::fs::hard_link(root.join(format!("d{:02}/f00", d - 2)), root.join(format!("d{d:02}/link"))).unwrap();
        }
    }
    sh(&format!("find '{}' -type f -name 'f1*' -exec touch -d '2020-02-03 04:05:06.789' {{}} +", root.display()));
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let target = env.dir.path().join("out/w");
    // Under a low open-file limit too: the queue of created files is sized to fit it.
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=128")
        .arg(bin())
        .arg("restore")
        .args(env.target_args())
        .args(["latest", &s(&root), &s(&target)])
        .env_remove("HWC_BACKUP_CONFIG")
        .env_remove("HWC_BACKUP_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(rsync_differences(&root, &target), "", "restored tree differs from the source");
    for d in 2..40 {
        assert_eq!(
            ino(&target.join(format!("d{:02}/f00", d - 2))),
            ino(&target.join(format!("d{d:02}/link"))),
            "hard link d{d:02}/link not shared"
        );
    }

    // A target on a filesystem too small for the tree: some worker runs out of space.
    let small = env.dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let _mounted = Mount::tmpfs(&small, "size=256k");
    let v = victim(&env);
    let before = fingerprint(&v);
    let target = small.join("w");
    let out = env.run("restore", &["latest", &s(&root), &s(&target)]);
    assert!(!out.status.success(), "a restore onto a full filesystem succeeded: {}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device") && err.contains(&s(&small)),
        "the error names neither the cause nor the file: {err}"
    );
    assert!(!target.exists(), "a partial target appeared");
    assert_eq!(fingerprint(&v), before, "the victim outside changed");
}
