//! Excludes through the real binary: the set of entries in a snapshot equals the set that
//! real `rsync -a --relative` copies with the same `--exclude` list.

use std::path::Path;

use crate::util::*;

/// A home directory with the usual clutter at several depths, plus names that only
/// directory-only and anchored patterns tell apart.
fn cluttered_tree(src: &Path) {
    for user in ["alice", "bob"] {
        let h = src.join("home").join(user);
        write(&h.join(".cache/thumbs/a.png"), "x");
        write(&h.join("notes.txt"), "keep");
        write(&h.join("draft.tmp"), "tmp");
        write(&h.join("proj/node_modules/lib/index.js"), "js");
        write(&h.join("proj/src/main.py"), "py");
        write(&h.join("proj/src/__pycache__/main.cpython-311.pyc"), "pyc");
        write(&h.join(".local/share/Trash/files/old.txt"), "trash");
        write(&h.join(".local/share/keep.txt"), "keep");
        write(&h.join("build"), "a FILE named build");
        write(&h.join("proj/build/out.o"), "a DIRECTORY named build");
        write(&h.join("logs/app.log"), "log");
        write(&h.join("logs/deep/er/app.log"), "log");
        write(&h.join("logs/app.txt"), "txt");
        write(&h.join("skip/this"), "anchored");
        write(&h.join("sub/skip/this"), "same name, not anchored");
        write(&h.join("a1z"), "a**z");
        write(&h.join("a/b/z"), "a**z crosses slashes");
        write(&h.join("file[1].txt"), "brackets");
        write(&h.join("x.bak"), "bak");
        write(&h.join("y.bak2"), "bak2");
    }
}

fn compare_with_rsync(patterns: &[String]) {
    require("rsync");
    let env = Env::new();
    cluttered_tree(&env.src);
    let mut extra: Vec<&str> = Vec::new();
    for p in patterns {
        extra.push("--exclude");
        extra.push(p);
    }
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &extra);
    let ours_root = env.host_dir().join("daily/2025-01-15_02-00-00");
    let rsync_root = env.dir.path().join("rsync-copy");
    std::fs::create_dir_all(&rsync_root).unwrap();
    let excludes: String = patterns.iter().map(|p| format!(" --exclude='{p}'")).collect();
    sh(&format!("rsync -a --relative{excludes} '{}' '{}/'", env.src.display(), rsync_root.display()));
    let ours: Vec<String> = tree(&ours_root).into_iter().filter(|p| !p.starts_with(".hwc-backup")).collect();
    let theirs = tree(&rsync_root);
    let only_ours: Vec<_> = ours.iter().filter(|p| !theirs.contains(p)).collect();
    let only_rsync: Vec<_> = theirs.iter().filter(|p| !ours.contains(p)).collect();
    assert!(
        only_ours.is_empty() && only_rsync.is_empty(),
        "patterns {patterns:?}\nonly in our snapshot: {only_ours:#?}\nonly in rsync's copy: {only_rsync:#?}"
    );
    assert!(ours.iter().any(|p| p.ends_with("notes.txt")), "sanity: the tree was copied at all");
}

#[test]
fn seed_default_excludes_match_rsync() {
    let p = [".cache", "*.tmp", ".local/share/Trash", "node_modules", "__pycache__"];
    compare_with_rsync(&p.map(String::from));
}

#[test]
fn anchored_directory_only_and_wildcard_excludes_match_rsync() {
    // Anchored patterns name a path from the root; the tree lives in a temp dir under
    // /var/tmp (see `Env::new`), so the random component is matched with `*`.
    let patterns = [
        "/var/tmp/hwc-test-*/src/home/alice/skip".to_string(),
        "build/".to_string(),
        "**/logs/**.log".to_string(),
        "a**z".to_string(),
        "*.ba?".to_string(),
        "file[0-9].txt".to_string(),
        "file\\[1\\].txt".to_string(),
    ];
    compare_with_rsync(&patterns);
}
