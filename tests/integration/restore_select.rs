//! Restore for real recoveries (issue 14, item 5), each against rsync as the oracle:
//! `--include`/`--exclude` patterns (the rsync command line they stand for is built here and
//! run on the same snapshot directory), several PATHs into one DEST (`rsync -a A B DEST/`),
//! `--delete` (`rsync -a --delete`, with excludes and with includes, whose rules protect what
//! they leave out) and its `--dry-run`, which lists the deletions and changes nothing, alone
//! and with several PATHs; and the hostile case: symlinks
//! planted in DEST, pointing at a victim directory whose files `--delete` would remove if it
//! followed them, are removed as links and the victim stays as it was.

use crate::snapshot::rsync_differences;
use crate::util::*;

/// A tree with something for every pattern below.
fn varied_tree(env: &Env) {
    let src = &env.src;
    write(&src.join("a/x.txt"), "x\n");
    write(&src.join("a/y.log"), "y\n");
    write(&src.join("a/keep/z.txt"), "z\n");
    write(&src.join("a/keep/z.log"), "zl\n");
    write(&src.join("b/c/d.pdf"), "pdf\n");
    write(&src.join("b/c/e.txt"), "e\n");
    std::fs::create_dir_all(src.join("b/empty")).unwrap();
    std::fs::create_dir_all(src.join("b/only-logs")).unwrap();
    write(&src.join("b/only-logs/1.log"), "1\n");
    write(&src.join("docs/inner/n.md"), "n\n");
    write(&src.join("docs/inner/o.txt"), "o\n");
    write(&src.join("docs/top.md"), "t\n");
    write(&src.join("node_modules/m.js"), "m\n");
    write(&src.join("proj/node_modules/p.js"), "p\n");
    write(&src.join("proj/main.rs"), "fn main() {}\n");
    sh(&format!(
        "ln -s a/x.txt '{}' && ln -s nowhere '{}'",
        src.join("link.txt").display(),
        src.join("a/dangling").display()
    ));
    sh(&format!("touch -d '2024-05-01 10:00' '{}' '{}'", src.join("b/empty").display(), src.join("a").display()));
}

/// The rsync filter arguments that `--include I… --exclude E…` of a restore stand for.
fn rsync_filters(includes: &[&str], excludes: &[&str]) -> String {
    let q = |p: &str| format!("'{}'", p.replace('\'', r"'\''"));
    let mut args: Vec<String> = excludes.iter().map(|e| format!("--exclude={}", q(e))).collect();
    if !includes.is_empty() {
        for i in includes {
            args.push(format!("--include={}", q(i)));
            args.push(format!("--include={}", q(&format!("{}/***", i.trim_end_matches('/')))));
        }
        args.extend(["--include='*/'".into(), "--exclude='*'".into(), "--prune-empty-dirs".into()]);
    }
    args.join(" ")
}

#[test]
fn include_and_exclude_patterns_select_what_rsync_selects() {
    require("rsync");
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let snap_root = env.host_dir().join("daily/2025-01-15_02-00-00");
    let src_rel = s(env.src.strip_prefix("/").unwrap());
    let anchored_keep = format!("{}/a/keep", s(&env.src));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec![], vec!["*.log", "node_modules"]),
        (vec![], vec!["a/keep/", "/does/not/exist", "docs/**/*.md"]),
        (vec!["*.txt"], vec![]),
        (vec!["docs"], vec!["*.md"]),
        (vec!["*.pdf", &anchored_keep], vec!["z.log"]),
        (vec!["node_modules/"], vec![]),
        (vec!["*.nothing-matches"], vec![]),
    ];
    for (k, (includes, excludes)) in cases.iter().enumerate() {
        let ours = env.dir.path().join(format!("ours-{k}"));
        let mut args = vec!["latest".to_string(), s(&env.src), s(&ours)];
        for i in includes {
            args.extend(["--include".into(), i.to_string()]);
        }
        for e in excludes {
            args.extend(["--exclude".into(), e.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run("restore", &args);
        assert!(out.status.success(), "case {k}: {}", show(&out));
        let oracle = env.dir.path().join(format!("oracle-{k}"));
        std::fs::create_dir_all(&oracle).unwrap();
        sh(&format!(
            "rsync -a --relative {} '{}/./{}/' '{}/'",
            rsync_filters(includes, excludes),
            snap_root.display(),
            src_rel,
            oracle.display()
        ));
        let expected = oracle.join(&src_rel);
        // rsync --prune-empty-dirs leaves out the top too when nothing matched; a restore
        // always restores the path it was given.
        if !expected.exists() {
            assert_eq!(tree(&ours), Vec::<String>::new(), "case {k} ({includes:?}, {excludes:?})");
            continue;
        }
        assert_eq!(tree(&ours), tree(&expected), "case {k} ({includes:?}, {excludes:?})");
        assert_eq!(rsync_differences(&expected, &ours), "", "case {k} ({includes:?}, {excludes:?})");
    }
    // The oracle agrees with what the rules say, not only with us.
    let t = |k: usize| tree(&env.dir.path().join(format!("ours-{k}")));
    assert!(t(0).contains(&"a/x.txt".into()) && !t(0).contains(&"a/y.log".into()), "{:?}", t(0));
    assert!(!t(0).iter().any(|p| p.contains("node_modules")) && t(0).contains(&"b/empty".into()), "{:?}", t(0));
    assert_eq!(
        t(2),
        [
            "a",
            "a/keep",
            "a/keep/z.txt",
            "a/x.txt",
            "b",
            "b/c",
            "b/c/e.txt",
            "docs",
            "docs/inner",
            "docs/inner/o.txt",
            "link.txt"
        ],
    );
    assert_eq!(t(3), ["docs", "docs/inner", "docs/inner/o.txt"]);
    assert_eq!(t(4), ["a", "a/keep", "a/keep/z.txt", "b", "b/c", "b/c/d.pdf"]);
    assert_eq!(t(5), ["node_modules", "node_modules/m.js", "proj", "proj/node_modules", "proj/node_modules/p.js"]);
    // The dry run lists what the real one writes, and writes nothing.
    let target = env.dir.path().join("dry");
    let out = env.run("restore", &["latest", &s(&env.src), &s(&target), "--include", "*.txt", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!target.exists());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<String> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().strip_prefix(&s(&target)).unwrap().trim_start_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    listed.sort();
    assert_eq!(listed, tree(&env.dir.path().join("ours-2")), "{report}");
    // A malformed pattern is bad usage, and nothing is written.
    let out = env.run("restore", &["latest", &s(&env.src), &s(&target), "--exclude", "a["]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(!target.exists());
}

#[test]
fn several_paths_restore_into_one_directory_as_rsync_copies_them() {
    require("rsync");
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    let dest = env.dir.path().join("into");
    let paths = [env.src.join("a"), env.src.join("b/c"), env.src.join("link.txt"), env.src.join("docs/top.md")];
    let mut args = vec!["latest".to_string()];
    args.extend(paths.iter().map(|p| s(p)));
    args.push(s(&dest));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run("restore", &args);
    assert!(out.status.success(), "{}", show(&out));
    let oracle = env.dir.path().join("oracle");
    std::fs::create_dir_all(&oracle).unwrap();
    sh(&format!(
        "rsync -a '{}' '{}' '{}' '{}' '{}/'",
        snap.join("a").display(),
        snap.join("b/c").display(),
        snap.join("link.txt").display(),
        snap.join("docs/top.md").display(),
        oracle.display()
    ));
    assert_eq!(tree(&dest), tree(&oracle));
    // DEST itself is no path of the snapshot: its mtime is whenever its last entry was made,
    // by us or by rsync, so it is not compared (the entries' times are).
    sh(&format!("touch -r '{}' '{}'", dest.display(), oracle.display()));
    assert_eq!(sh(&format!("rsync -aHAXn --itemize-changes '{}/' '{}/'", oracle.display(), dest.display())), "");
    // Again: everything is there and identical, so nothing needs --force.
    let out = env.run("restore", &args);
    assert!(out.status.success(), "{}", show(&out));
    // A changed file in DEST needs --force, checked for every path before anything is written.
    write(&dest.join("c/e.txt"), "changed\n");
    std::fs::remove_file(dest.join("top.md")).unwrap();
    let out = env.run("restore", &args);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(!dest.join("top.md").exists(), "nothing is written before the check of every path");
    let mut forced = args.clone();
    forced.push("--force");
    let out = env.run("restore", &forced);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(dest.join("c/e.txt")).unwrap(), "e\n");
    // Two paths with the same name, or a DEST that is a file: bad usage, nothing written.
    let clash = env.dir.path().join("clash");
    let out = env.run(
        "restore",
        &[
            "latest",
            &s(&env.src.join("a/x.txt")),
            &s(&env.src.join("b/c/e.txt")),
            &s(&env.src.join("a/keep/z.txt")),
            &s(&env.src.join("docs/inner/o.txt")),
            &s(&env.src.join("a/x.txt")),
            &s(&clash),
        ],
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x.txt"), "{}", show(&out));
    assert!(!clash.exists());
    let file = env.dir.path().join("a-file");
    write(&file, "mine\n");
    let out = env.run("restore", &["latest", &s(&env.src.join("a")), &s(&env.src.join("b")), &s(&file)]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
}

/// DEST as a user left it since the snapshot: files added, changed and removed, a
/// directory where the snapshot has a file, a file where it has a directory.
fn drifted_copy(from: &std::path::Path, to: &std::path::Path) {
    sh(&format!("cp -a '{}' '{}'", from.display(), to.display()));
    write(&to.join("a/new.txt"), "new since\n");
    write(&to.join("a/x.txt"), "changed since\n");
    std::fs::remove_file(to.join("a/keep/z.txt")).unwrap();
    write(&to.join("extra/deep/f.txt"), "f\n");
    write(&to.join("extra/deep/g.keep"), "protected\n");
    write(&to.join("b/c/h.keep"), "protected too\n");
    std::fs::remove_file(to.join("docs/top.md")).unwrap();
    write(&to.join("docs/top.md/inside"), "a directory where the snapshot has a file\n");
    std::fs::remove_dir_all(to.join("proj/node_modules")).unwrap();
    write(&to.join("proj/node_modules"), "a file where the snapshot has a directory\n");
}

#[test]
fn delete_makes_dest_what_rsync_delete_makes_it_and_its_dry_run_lists_the_deletions() {
    require("rsync");
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    for (k, excludes) in [vec![], vec!["*.keep"]].iter().enumerate() {
        let ours = env.dir.path().join(format!("ours-{k}"));
        let oracle = env.dir.path().join(format!("oracle-{k}"));
        drifted_copy(&env.src, &ours);
        // The same times on both sides (what DEST holds and keeps is compared too).
        sh(&format!("cp -a '{}' '{}'", ours.display(), oracle.display()));
        let mut args = vec!["latest".to_string(), s(&env.src), s(&ours), "--delete".into(), "--force".into()];
        for e in excludes {
            args.extend(["--exclude".into(), e.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The dry run: deletions listed first, nothing changed.
        let before = tree_state(&ours);
        let mut dry = args.clone();
        dry.push("--dry-run");
        let out = env.run("restore", &dry);
        assert!(out.status.success(), "{}", show(&out));
        let after = tree_state(&ours);
        assert_eq!(before, after, "the dry run changed DEST");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        let deleted: Vec<String> = lines
            .iter()
            .take_while(|l| l.starts_with("deleted"))
            .map(|l| l.split_whitespace().last().unwrap().strip_prefix(&format!("{}/", s(&ours))).unwrap().to_string())
            .collect();
        assert!(!lines.iter().skip(deleted.len()).any(|l| l.starts_with("deleted")), "deletions come first: {stdout}");
        // What rsync would delete (its dry run, itemized), at the top of each removed tree.
        let rsync_says = sh(&format!(
            "rsync -a --delete --dry-run --itemize-changes {} '{}/' '{}/' | sed -n 's/^\\*deleting *//p'",
            rsync_filters(&[], excludes),
            snap.display(),
            oracle.display()
        ));
        let mut expected: Vec<String> = rsync_says
            .lines()
            .map(|l| l.trim_end_matches('/').to_string())
            .filter(|l| !l.contains("/") || !rsync_says.lines().any(|p| p.ends_with('/') && l.starts_with(p)))
            .collect();
        expected.sort();
        let mut deleted_sorted = deleted.clone();
        deleted_sorted.sort();
        // The directory where the snapshot has a file is replaced, not listed as deleted.
        expected.retain(|p| p != "docs/top.md" && !p.starts_with("docs/top.md/"));
        if excludes.is_empty() {
            assert_eq!(deleted_sorted, expected, "{stdout}");
        } else {
            // A directory is listed once, at its top, when it goes; what it holds that the
            // excludes protect stays, with the directories holding it, and what goes there is
            // listed (as rsync lists it).
            assert_eq!(deleted_sorted, ["a/new.txt", "extra/deep/f.txt"], "{stdout}");
            // rsync's dry run names them too (with the directories it then finds it cannot
            // delete, as they hold protected entries).
            for p in &deleted_sorted {
                assert!(rsync_says.lines().any(|l| l == p), "{p} is not among rsync's deletions: {rsync_says}");
            }
        }
        let out = env.run("restore", &args);
        assert!(out.status.success(), "{}", show(&out));
        sh(&format!(
            "rsync -a --delete {} '{}/' '{}/'",
            rsync_filters(&[], excludes),
            snap.display(),
            oracle.display()
        ));
        // Directories of DEST kept for an excluded entry in them are not the snapshot's: the
        // deletion in them set their mtimes, a moment apart on the two sides.
        for kept in ["extra", "extra/deep"].iter().filter(|_| !excludes.is_empty()) {
            sh(&format!("touch -r '{}' '{}'", oracle.join(kept).display(), ours.join(kept).display()));
        }
        assert_eq!(tree(&ours), tree(&oracle), "excludes {excludes:?}");
        assert_eq!(rsync_differences(&oracle, &ours), "", "excludes {excludes:?}");
        assert!(!ours.join("a/new.txt").exists());
        assert_eq!(ours.join("extra/deep/g.keep").exists(), !excludes.is_empty());
        assert_eq!(ours.join("b/c/h.keep").exists(), !excludes.is_empty());
    }
}

/// DEST as a user left it since the snapshot, for `--delete` with patterns: entries added in
/// places the patterns include and in places they leave out, nested directories holding only
/// entries left out, a directory holding both, an empty one, a directory the patterns leave
/// nothing in, and a file of the snapshot (left out) turned into a directory. Every directory
/// gets an old mtime, so that which ones a restore sets, leaves or changes by deleting shows.
fn drifted_for_patterns(from: &std::path::Path, to: &std::path::Path) {
    sh(&format!("cp -a '{}' '{}'", from.display(), to.display()));
    write(&to.join("a/new.txt"), "new since\n");
    write(&to.join("a/new.log"), "new log\n");
    write(&to.join("a/x.txt"), "changed since\n");
    write(&to.join("extra/only/l.log"), "left out\n");
    write(&to.join("extra/docs/deep.log"), "below a directory an include matches\n");
    std::fs::remove_dir_all(to.join("node_modules")).unwrap();
    write(&to.join("node_modules"), "a file where the snapshot has a directory\n");
    write(&to.join("extra2/deep/n.txt"), "included\n");
    write(&to.join("mix/1.txt"), "1\n");
    write(&to.join("mix/2.log"), "2\n");
    write(&to.join("mix/sub/3.txt"), "3\n");
    write(&to.join("mix/sub/4.pdf"), "4\n");
    std::fs::create_dir_all(to.join("emptyx")).unwrap();
    write(&to.join("b/only-logs/new.txt"), "in a directory with nothing included\n");
    std::fs::remove_file(to.join("a/y.log")).unwrap();
    write(&to.join("a/y.log/q.txt"), "a directory where the snapshot has a file\n");
    write(&to.join("docs/inner/new.md"), "md\n");
    write(&to.join("docs/inner/new.pdf"), "pdf\n");
    write(&to.join("proj/node_modules/extra.js"), "js\n");
    write(&to.join("proj/node_modules/extra.log"), "log\n");
    sh(&format!("find '{}' -type d -exec touch -h -d '2020-01-01 00:00' {{}} +", to.display()));
}

/// The directories below `root` with their mtimes.
fn dir_times(root: &std::path::Path) -> std::collections::BTreeMap<String, f64> {
    sh(&format!("cd '{}' && find . -mindepth 1 -type d -printf '%P %T@\\n'", root.display()))
        .lines()
        .map(|l| {
            let (p, t) = l.rsplit_once(' ').unwrap();
            (p.to_string(), t.parse().unwrap())
        })
        .collect()
}

/// `ours` and `oracle` (restored from `snap`) are the same tree (rsync sees no difference but
/// directory times), and every directory has the same mtime on both sides, or on both a time
/// after `t0` (set by a deletion in it, a moment apart on the two sides). rsync itself is not
/// consistent there: in a directory of the transfer where it deletes something, it sometimes
/// sets the snapshot's mtime after the deletion and sometimes before (its generator and its
/// deletions race; seen with rsync 3.5.0 about one run in three), so a directory of ours with
/// the snapshot's mtime where rsync's has a later one is the same result — for the
/// directories rsync transferred (`itemized`, its `-i` output), not for one it left out.
fn assert_same_as_oracle(
    ours: &std::path::Path,
    oracle: &std::path::Path,
    snap: &std::path::Path,
    (t0, itemized): (f64, &str),
    what: &str,
) {
    let transferred: Vec<&str> = itemized
        .lines()
        .filter(|l| l.starts_with(".d") || l.starts_with("cd"))
        .filter_map(|l| l.split_once(' ').map(|(_, p)| p.trim().trim_end_matches('/')))
        .collect();
    assert_eq!(tree(ours), tree(oracle), "{what}");
    let differences = sh(&format!(
        "rsync -aHAXn --omit-dir-times --itemize-changes --delete '{}/' '{}/'",
        oracle.display(),
        ours.display()
    ));
    assert_eq!(differences, "", "{what}");
    let (a, b, c) = (dir_times(ours), dir_times(oracle), dir_times(snap));
    for (p, t) in &a {
        let o = b[p];
        let raced = o >= t0 && c.get(p) == Some(t) && transferred.contains(&p.as_str());
        assert!(
            *t == o || (*t >= t0 && o >= t0) || raced,
            "{what}: {p} has mtime {t} here, {o} in the oracle (t0 {t0})"
        );
    }
}

/// What disappeared from `before` to `after`, each at its top (a directory once).
fn gone_tops(before: &[String], after: &[String]) -> Vec<String> {
    let gone: Vec<&String> = before.iter().filter(|p| !after.contains(p)).collect();
    let mut tops: Vec<String> =
        gone.iter().filter(|p| !gone.iter().any(|q| p.starts_with(&format!("{q}/")))).map(|p| p.to_string()).collect();
    tops.sort();
    tops
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn delete_with_include_removes_what_rsync_delete_removes_and_keeps_what_the_rules_leave_out() {
    require("rsync");
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    let cases: Vec<(Vec<&str>, Vec<&str>)> =
        vec![(vec!["*.txt"], vec![]), (vec!["*.pdf", "docs"], vec!["*.md"]), (vec!["node_modules/"], vec!["*.log"])];
    for (k, (includes, excludes)) in cases.iter().enumerate() {
        let what = format!("case {k} ({includes:?}, {excludes:?})");
        let ours = env.dir.path().join(format!("ours-{k}"));
        let oracle = env.dir.path().join(format!("oracle-{k}"));
        drifted_for_patterns(&env.src, &ours);
        sh(&format!("cp -a '{}' '{}'", ours.display(), oracle.display()));
        let mut args = vec!["latest".to_string(), s(&env.src), s(&ours), "--delete".into(), "--force".into()];
        for i in includes {
            args.extend(["--include".into(), i.to_string()]);
        }
        for e in excludes {
            args.extend(["--exclude".into(), e.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let filters = rsync_filters(includes, excludes);
        // The dry run: deletions listed first, nothing changed.
        let fingerprint = || tree_state(&ours);
        let before = fingerprint();
        let mut dry = args.clone();
        dry.push("--dry-run");
        let out = env.run("restore", &dry);
        assert!(out.status.success(), "{what}: {}", show(&out));
        assert_eq!(fingerprint(), before, "{what}: the dry run changed DEST");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        let mut listed: Vec<String> = lines
            .iter()
            .take_while(|l| l.starts_with("deleted"))
            .map(|l| l.split_whitespace().last().unwrap().strip_prefix(&format!("{}/", s(&ours))).unwrap().to_string())
            .collect();
        assert!(!lines.iter().skip(listed.len()).any(|l| l.starts_with("deleted")), "{what}: {stdout}");
        listed.sort();
        // rsync's own dry run lists every entry it deletes (and directories it then finds
        // it cannot): each of ours is among them.
        let rsync_n = sh(&format!(
            "rsync -a --delete --dry-run --itemize-changes {filters} '{}/' '{}/' | sed -n 's/^\\*deleting *//p'",
            snap.display(),
            oracle.display()
        ));
        let rsync_n: Vec<&str> = rsync_n.lines().map(|l| l.trim_end_matches('/')).collect();
        for p in &listed {
            assert!(rsync_n.contains(&p.as_str()), "{what}: {p} is not among rsync's {rsync_n:?}");
        }
        // The real runs, and what rsync really removed, at the top of each removed tree.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let t0 = now_secs() - 0.05;
        let mut json = args.clone();
        json.push("--json");
        let out = env.run("restore", &json);
        assert!(out.status.success(), "{what}: {}", show(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let oracle_before = tree(&oracle);
        let itemized = sh(&format!("rsync -a --delete -i {filters} '{}/' '{}/'", snap.display(), oracle.display()));
        let expected = gone_tops(&oracle_before, &tree(&oracle));
        assert_eq!(listed, expected, "{what}: {stdout}");
        assert_eq!(report["deleted"], listed.len(), "{what}: {report}");
        assert_same_as_oracle(&ours, &oracle, &snap, (t0, &itemized), &what);
    }
    // The oracle agrees with what the rules say, not only with us.
    let has = |k: usize, p: &str| std::fs::symlink_metadata(env.dir.path().join(format!("ours-{k}")).join(p)).is_ok();
    for p in ["a/new.txt", "extra2", "mix/1.txt", "mix/sub/3.txt", "emptyx", "a/y.log", "b/only-logs/new.txt"] {
        assert!(!has(0, p), "{p} is included and not in the snapshot");
    }
    for p in ["a/new.log", "extra/only/l.log", "mix/2.log", "mix/sub/4.pdf", "b/only-logs/1.log", "docs/inner/new.md"] {
        assert!(has(0, p), "{p} is left out by the rules, so it is kept");
    }
    assert!(!has(0, "b/empty"), "a directory of the snapshot with nothing included goes when empty");
    assert!(!has(1, "docs/inner/new.pdf") && !has(1, "mix/sub/4.pdf") && has(1, "docs/inner/new.md"));
    assert!(!has(1, "extra/docs") && has(1, "extra/only/l.log") && has(0, "extra/docs/deep.log"));
    // A file where the snapshot has a directory: replaced only where something below that
    // directory is restored.
    let ours = |k: usize, p: &str| env.dir.path().join(format!("ours-{k}")).join(p);
    assert!(ours(0, "node_modules").is_file() && ours(1, "node_modules").is_file());
    assert!(ours(2, "node_modules/m.js").is_file());
    assert!(has(1, "mix/sub/3.txt") && has(1, "a/new.txt"));
    assert!(!has(2, "proj/node_modules/extra.js") && has(2, "proj/node_modules/extra.log") && has(2, "a/y.log/q.txt"));
}

#[test]
fn include_into_an_existing_tree_without_delete_matches_rsync() {
    require("rsync");
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    for (k, (includes, excludes)) in [(vec!["*.txt"], vec![]), (vec!["*.pdf", "docs"], vec!["*.md"])].iter().enumerate()
    {
        let what = format!("case {k} ({includes:?}, {excludes:?})");
        let (ours, oracle) = (env.dir.path().join(format!("ours-{k}")), env.dir.path().join(format!("oracle-{k}")));
        drifted_for_patterns(&env.src, &ours);
        sh(&format!("cp -a '{}' '{}'", ours.display(), oracle.display()));
        let mut args = vec!["latest".to_string(), s(&env.src), s(&ours), "--force".into()];
        for i in includes {
            args.extend(["--include".into(), i.to_string()]);
        }
        for e in excludes {
            args.extend(["--exclude".into(), e.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run("restore", &args);
        assert!(out.status.success(), "{what}: {}", show(&out));
        sh(&format!("rsync -a {} '{}/' '{}/'", rsync_filters(includes, excludes), snap.display(), oracle.display()));
        // Nothing is deleted: every directory time is the snapshot's or the one DEST had.
        assert_same_as_oracle(&ours, &oracle, &snap, (f64::MAX, ""), &what);
    }
    // A directory of the snapshot with nothing included is left as DEST has it (its old time).
    let t = dir_times(&env.dir.path().join("ours-0"));
    assert_eq!(t["b/only-logs"], t["extra"], "{t:?}");
}

#[test]
fn delete_with_include_and_several_paths_matches_rsync() {
    require("rsync");
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    let drifted = env.dir.path().join("drifted");
    drifted_for_patterns(&env.src, &drifted);
    let (ours, oracle) = (env.dir.path().join("ours"), env.dir.path().join("oracle"));
    std::fs::create_dir_all(&ours).unwrap();
    for name in ["a", "b", "docs"] {
        sh(&format!("cp -a '{}' '{}/'", drifted.join(name).display(), ours.display()));
    }
    // Not below a restored path: stays, whatever the rules say.
    write(&ours.join("other/unrelated.txt"), "not ours to delete\n");
    sh(&format!("cp -a '{}' '{}'", ours.display(), oracle.display()));
    let paths = ["a", "b", "docs"].map(|n| s(&env.src.join(n)));
    let mut args = vec!["latest"];
    args.extend(paths.iter().map(String::as_str));
    args.extend([
        &*Box::leak(s(&ours).into_boxed_str()),
        "--delete",
        "--force",
        "--include",
        "*.txt",
        "--exclude",
        "*.md",
    ]);
    let mut dry = args.clone();
    dry.extend(["--dry-run", "--json"]);
    let out = env.run("restore", &dry);
    assert!(out.status.success(), "{}", show(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<String> = reports
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["changes"].as_array().unwrap().clone())
        .filter(|c| c["action"] == "deleted")
        .map(|c| c["path"].as_str().unwrap().strip_prefix(&format!("{}/", s(&ours))).unwrap().to_string())
        .collect();
    listed.sort();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let t0 = now_secs() - 0.05;
    let out = env.run("restore", &args);
    assert!(out.status.success(), "{}", show(&out));
    let before = tree(&oracle);
    let itemized = sh(&format!(
        "rsync -a --delete -i {} '{}' '{}' '{}' '{}/'",
        rsync_filters(&["*.txt"], &["*.md"]),
        snap.join("a").display(),
        snap.join("b").display(),
        snap.join("docs").display(),
        oracle.display()
    ));
    assert_eq!(listed, gone_tops(&before, &tree(&oracle)));
    assert!(listed.contains(&"a/new.txt".to_string()) && listed.contains(&"b/empty".to_string()), "{listed:?}");
    let o = env.dir.path().join("snap-view");
    std::fs::create_dir_all(&o).unwrap();
    for name in ["a", "b", "docs"] {
        sh(&format!("cp -a '{}' '{}/'", snap.join(name).display(), o.display()));
    }
    assert_same_as_oracle(&ours, &oracle, &o, (t0, &itemized), "several paths");
    assert_eq!(std::fs::read_to_string(ours.join("other/unrelated.txt")).unwrap(), "not ours to delete\n");
}

#[test]
fn delete_with_include_removes_a_planted_symlink_as_a_link_and_never_follows_one() {
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let victim = env.dir.path().join("victim");
    write(&victim.join("precious.txt"), "precious\n");
    write(&victim.join("sub/x.txt"), "also precious\n");
    write(&victim.join("e.txt"), "named as the snapshot's b/c/e.txt\n");
    write(&victim.join("new.txt"), "named as an included file\n");
    let fingerprint = || tree_state(&victim);
    let before = fingerprint();
    let dest = env.dir.path().join("dest-tree");
    sh(&format!("cp -a '{}' '{}'", env.src.display(), dest.display()));
    let plant = |at: &str| {
        let _ = std::fs::remove_dir_all(dest.join(at));
        std::os::unix::fs::symlink(&victim, dest.join(at)).unwrap();
    };
    // At an included name the snapshot does not have (removed as a link), in an extraneous
    // directory that stays for an entry left out (removed there as a link), at a name the
    // rules leave out (kept, as rsync keeps it), and as directories on the way: where the
    // snapshot has one holding included files (replaced by a directory), and where it has one
    // holding none (nothing restored there: kept).
    plant("a/evil.txt");
    write(&dest.join("gone/kept.log"), "left out\n");
    plant("gone/inner.txt");
    plant("a/keeplink");
    plant("b/c");
    plant("b/only-logs");
    // Below an extraneous directory that an include matches: everything there goes, the
    // link as a link.
    write(&dest.join("gone/docs/x.log"), "goes\n");
    plant("gone/docs/way");
    let args = ["latest", &*s(&env.src), &*s(&dest), "--delete", "--force", "--include", "*.txt", "--include", "docs"];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = env.run("restore", &dry);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for p in ["a/evil.txt", "gone/inner.txt"] {
        let shown = format!(" {}", s(&dest.join(p)));
        assert!(stdout.lines().any(|l| l.starts_with("deleted") && l.ends_with(&shown)), "{p}: {stdout}");
    }
    assert!(std::fs::symlink_metadata(dest.join("a/evil.txt")).unwrap().file_type().is_symlink());
    let out = env.run("restore", &args);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(fingerprint(), before, "the victim changed");
    for gone in ["a/evil.txt", "gone/inner.txt", "gone/docs"] {
        assert!(std::fs::symlink_metadata(dest.join(gone)).is_err(), "{gone} is still there");
    }
    assert_eq!(std::fs::read_to_string(dest.join("gone/kept.log")).unwrap(), "left out\n");
    assert!(std::fs::symlink_metadata(dest.join("a/keeplink")).unwrap().file_type().is_symlink());
    assert!(std::fs::symlink_metadata(dest.join("b/c")).unwrap().is_dir());
    assert_eq!(std::fs::read_to_string(dest.join("b/c/e.txt")).unwrap(), "e\n");
    // Where the snapshot has a directory with nothing included below it, nothing is restored
    // and the link, a name the rules leave out, stays (as with rsync -m --delete).
    assert!(std::fs::symlink_metadata(dest.join("b/only-logs")).unwrap().file_type().is_symlink());
}

#[test]
fn delete_never_follows_a_symlink_planted_in_dest() {
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let victim = env.dir.path().join("victim");
    write(&victim.join("precious.txt"), "precious\n");
    write(&victim.join("sub/x.txt"), "also precious\n");
    write(&victim.join("a/y.log"), "looks like the snapshot's\n");
    let snapshot_of_victim = || tree_state(&victim);
    let before = snapshot_of_victim();
    let dest = env.dir.path().join("dest-tree");
    sh(&format!("cp -a '{}' '{}'", env.src.display(), dest.display()));
    // Where the snapshot has nothing (extraneous: deleted), where it has a directory (replaced),
    // and inside an extraneous directory (deleted with it).
    std::os::unix::fs::symlink(&victim, dest.join("planted")).unwrap();
    std::fs::remove_dir_all(dest.join("b")).unwrap();
    std::os::unix::fs::symlink(&victim, dest.join("b")).unwrap();
    std::fs::create_dir_all(dest.join("gone")).unwrap();
    std::os::unix::fs::symlink(&victim, dest.join("gone/link")).unwrap();
    std::os::unix::fs::symlink(victim.join("sub"), dest.join("a/keep/sub")).unwrap();
    for extra in [&[][..], &["--exclude", "*.md"][..]] {
        let mut args = vec![
            "latest",
            &*Box::leak(s(&env.src).into_boxed_str()),
            &*Box::leak(s(&dest).into_boxed_str()),
            "--delete",
            "--force",
        ];
        args.extend_from_slice(extra);
        let out = env.run("restore", &args);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(snapshot_of_victim(), before, "the victim changed");
        assert!(std::fs::symlink_metadata(dest.join("planted")).is_err());
        assert!(std::fs::symlink_metadata(dest.join("gone")).is_err());
        assert!(std::fs::symlink_metadata(dest.join("b")).unwrap().is_dir());
        assert_eq!(std::fs::read_to_string(dest.join("b/c/d.pdf")).unwrap(), "pdf\n");
        assert!(std::fs::symlink_metadata(dest.join("a/keep/sub")).is_err());
        std::os::unix::fs::symlink(&victim, dest.join("planted")).unwrap();
    }
}

#[test]
fn delete_replaces_a_directory_unless_it_holds_an_excluded_entry() {
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let dest = env.dir.path().join("dest-tree");
    sh(&format!("cp -a '{}' '{}'", env.src.display(), dest.display()));
    // A directory where the snapshot has the file docs/top.md, holding an entry that an
    // anchored exclude (matched against the path on the host, not in the snapshot) protects.
    std::fs::remove_file(dest.join("docs/top.md")).unwrap();
    write(&dest.join("docs/top.md/stay.dat"), "protected\n");
    let pattern = format!("{}/docs/top.md/stay.dat", s(&env.src));
    let out = env.run("restore", &["latest", &s(&env.src), &s(&dest), "--delete", "--force", "--exclude", &pattern]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("patterns protect"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(dest.join("docs/top.md/stay.dat")).unwrap(), "protected\n");
    // Without that exclude the directory is replaced by the snapshot's file.
    let out = env.run("restore", &["latest", &s(&env.src), &s(&dest), "--delete", "--force", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(dest.join("docs/top.md")).unwrap(), "t\n");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deleted"], 0, "a replaced directory is not counted as deleted: {report}");
    // Without --delete it is refused, as before.
    std::fs::remove_file(dest.join("docs/top.md")).unwrap();
    write(&dest.join("docs/top.md/x"), "x\n");
    let out = env.run("restore", &["latest", &s(&env.src), &s(&dest), "--force"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(dest.join("docs/top.md/x").exists());
}

#[test]
fn patterns_never_write_or_prune_through_a_symlink_planted_in_dest() {
    let env = Env::new();
    varied_tree(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let victim = env.dir.path().join("victim");
    write(&victim.join("precious.txt"), "precious\n");
    let fingerprint = || tree_state(&victim);
    let before = fingerprint();
    let dest = env.dir.path().join("dest-tree");
    std::fs::create_dir_all(dest.join("b")).unwrap();
    // Where the snapshot has a directory holding an included file, and one holding none.
    std::os::unix::fs::symlink(&victim, dest.join("b/c")).unwrap();
    std::os::unix::fs::symlink(&victim, dest.join("b/empty")).unwrap();
    let args = ["latest", &*s(&env.src), &*s(&dest), "--include", "*.pdf", "--force"];
    let out = env.run("restore", &args);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(fingerprint(), before, "the victim changed");
    assert!(!victim.join("d.pdf").exists());
    assert_eq!(std::fs::read_to_string(dest.join("b/c/d.pdf")).unwrap(), "pdf\n");
    assert!(std::fs::symlink_metadata(dest.join("b/c")).unwrap().is_dir());
    // Where the snapshot has a directory with nothing included, nothing is restored, so the
    // link stays as it was (as rsync --prune-empty-dirs leaves it), not followed.
    assert!(std::fs::symlink_metadata(dest.join("b/empty")).unwrap().file_type().is_symlink());
    assert!(!dest.join("a").exists(), "a directory with nothing included is not created");
}

/// Every entry of the tree at `dir` (path, size, mtime, type, link target) and the content of
/// every file: equal before and after means nothing there changed.
fn tree_state(dir: &std::path::Path) -> String {
    sh(&format!("cd '{}' && find . -printf '%p %s %T@ %y %l\\n' | sort && cat $(find . -type f | sort)", dir.display()))
}
