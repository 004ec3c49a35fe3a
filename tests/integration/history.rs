//! Reading the history (issue 14), through the real binary:
//!
//! - `diff` against rsync as the oracle (`rsync -aHAXnic --delete NEW/ OLD/` between the two
//!   snapshot trees: what rsync would change is what differs), on a tree mutated with adds,
//!   deletes (files and a directory), a content change of equal size with the mtime restored
//!   (caught by the manifest hash: a different inode with the same size and mtime), an
//!   identical re-created file (a different inode, not a change), mode-, owner- and
//!   xattr-only changes, a symlink retargeted, file→dir and dir→symlink;
//! - `find` and `versions` across 20 snapshots of a file that changes on 5 of them;
//! - `du`: per snapshot and in total against `du -sb`/`du -sbc` (each inode counted once),
//!   and what `prune --dry-run` says it frees against what the prune then frees (statvfs
//!   before and after, on a tmpfs of its own);
//! - pins: a pinned snapshot survives a two-year retention simulation while an unpinned one
//!   of the same day does not, a pin with `--until` holds until then, and pins survive the
//!   loss of the state directory; bare names are accepted everywhere;
//! - hostile: symlinks planted at a snapshot, at its `.hwc-backup/`, at `pin.json`, and inside
//!   a snapshot tree: the victim stays unchanged, and the command refuses or skips, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use crate::util::*;

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", show(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", show(o)))
}

fn ids(env: &Env) -> Vec<String> {
    let v = json(&env.run("restore", &["--list", "--json"]));
    // Oldest first, as the engine lists them.
    v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// What rsync would change to turn `old` into `new` (mtimes compared to the nanosecond,
/// contents by checksum): path (relative, "" for the root) →
/// `added`, `removed`, `modified`, `metadata` or `type`.
fn rsync_oracle(old: &Path, new: &Path) -> BTreeMap<String, String> {
    require("rsync");
    let out = sh(&format!(
        "rsync -aHAXnic --delete --modify-window=-1 --out-format='%i %n' '{}/' '{}/'",
        new.display(),
        old.display()
    ));
    let mut added = BTreeSet::new();
    let mut removed = BTreeSet::new();
    let mut result = BTreeMap::new();
    for line in out.lines() {
        let (flags, path) = line.split_once(' ').unwrap_or_else(|| panic!("rsync line {line:?}"));
        let path = path.trim_start();
        let path = path.trim_end_matches('/');
        let path = if path == "." { "" } else { path }.to_string();
        if flags == "*deleting" {
            removed.insert(path);
        } else if &flags[2..] == "+++++++++" {
            added.insert(path);
        } else {
            let f = flags.as_bytes();
            let kind = if f[2] == b'c' || f[3] == b's' { "modified" } else { "metadata" };
            result.insert(path, kind.to_string());
        }
    }
    for p in &added {
        // rsync replaces an entry of another type without a `*deleting` line of its own.
        let replaced = removed.contains(p) || std::fs::symlink_metadata(old.join(p)).is_ok();
        let kind = if replaced { "type" } else { "added" };
        result.insert(p.clone(), kind.into());
    }
    for p in removed.difference(&added) {
        result.insert(p.clone(), "removed".into());
    }
    result
}

/// `diff --json OLD NEW PATH` as path (relative to `base`) → change.
fn our_diff(env: &Env, old: &str, new: &str, base: &Path) -> (BTreeMap<String, String>, serde_json::Value) {
    let v = json(&env.run("diff", &[old, new, &s(base), "--json"]));
    let mut m = BTreeMap::new();
    for c in v["changes"].as_array().unwrap() {
        let p = c["path"].as_str().unwrap();
        let rel = Path::new(p).strip_prefix(base).unwrap_or_else(|_| panic!("{p} outside {}", base.display()));
        m.insert(s(rel), c["change"].as_str().unwrap().to_string());
    }
    (m, v)
}

fn set_mtime(p: &Path, stamp: &str) {
    sh(&format!("touch -h -d '{stamp}' '{}'", p.display()));
}

#[test]
fn diff_agrees_with_rsync_on_every_kind_of_change() {
    require("setfattr");
    let env = Env::new();
    let src = &env.src;
    for (name, body) in [
        ("keep.txt", "unchanged"),
        ("gone.txt", "deleted"),
        ("grow.txt", "short"),
        ("mode.txt", "mode"),
        ("owner.txt", "owner"),
        ("eq.txt", "AAAA equal size"),
        ("same.txt", "identical again"),
        ("olddir/a", "a"),
        ("olddir/sub/b", "b"),
        ("f2d", "a file, then a directory"),
        ("d2s/inner", "inside a directory that becomes a symlink"),
        ("xdir/x", "x"),
        ("deep/er/still/kept", "k"),
    ] {
        write(&src.join(name), body);
    }
    std::os::unix::fs::symlink("target-one", src.join("link")).unwrap();
    set_mtime(&src.join("eq.txt"), "2024-05-01 12:00:00.123456789");
    set_mtime(&src.join("same.txt"), "2024-05-02 12:00:00");
    env.snapshot_ok("2025-03-01T02:00:00+01:00", &[]);

    // Changes seen by the next run.
    write(&src.join("new.txt"), "new file");
    write(&src.join("newdir/f"), "new in a new directory");
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    sh(&format!("rm -r '{}'", src.join("olddir").display()));
    write(&src.join("grow.txt"), "much longer than before");
    sh(&format!("chmod 600 '{}'", src.join("mode.txt").display()));
    sh(&format!("chown 1234:1234 '{}'", src.join("owner.txt").display()));
    sh(&format!("setfattr -n user.tag -v blue '{}'", src.join("xdir").display()));
    std::fs::remove_file(src.join("f2d")).unwrap();
    write(&src.join("f2d/now-a-dir"), "x");
    sh(&format!("rm -r '{}'", src.join("d2s").display()));
    std::os::unix::fs::symlink("/etc", src.join("d2s")).unwrap();
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("target-two", src.join("link")).unwrap();
    // Gone for one snapshot, back for the next: a new inode of the same size and mtime.
    std::fs::remove_file(src.join("eq.txt")).unwrap();
    std::fs::remove_file(src.join("same.txt")).unwrap();
    env.snapshot_ok("2025-03-02T02:00:00+01:00", &[]);
    write(&src.join("eq.txt"), "BBBB equal size");
    set_mtime(&src.join("eq.txt"), "2024-05-01 12:00:00.123456789");
    write(&src.join("same.txt"), "identical again");
    set_mtime(&src.join("same.txt"), "2024-05-02 12:00:00");
    // `now -v` lists what changed against the snapshot it linked to.
    let o = env.snapshot_ok("2025-03-03T02:00:00+01:00", &["-v"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("changes since daily/2025-03-02_02-00-00:\n"), "{text}");
    for p in ["eq.txt", "same.txt"] {
        assert!(text.lines().any(|l| l == format!("+ {}", s(&src.join(p)))), "{p}: {text}");
    }
    assert!(text.contains("2 new, 0 changed, 0 gone"), "{text}");
    let o = env.run("diff", &["--json"]);
    assert_eq!(json(&o)["summary"]["added"], 2, "the same two, by diff");

    let [a, _, c] = ids(&env).try_into().unwrap();
    let (old, new) = (env.in_snapshot(&a), env.in_snapshot(&c));
    assert_ne!(ino(&old.join("eq.txt")), ino(&new.join("eq.txt")), "the test needs a new inode");
    assert_eq!(
        std::fs::metadata(old.join("eq.txt")).unwrap().mtime(),
        std::fs::metadata(new.join("eq.txt")).unwrap().mtime()
    );
    let oracle = rsync_oracle(&old, &new);
    let (ours, v) = our_diff(&env, &a, &c, src);
    assert_eq!(ours, oracle, "diff (left) differs from rsync (right)");
    // The oracle itself saw what the test set up (a test that cannot fail is a defect).
    for (p, want) in [
        ("new.txt", "added"),
        ("newdir/f", "added"),
        ("gone.txt", "removed"),
        ("olddir/sub/b", "removed"),
        ("grow.txt", "modified"),
        ("eq.txt", "modified"),
        ("link", "modified"),
        ("mode.txt", "metadata"),
        ("owner.txt", "metadata"),
        ("xdir", "metadata"),
        ("f2d", "type"),
        ("d2s", "type"),
    ] {
        assert_eq!(oracle.get(p).map(String::as_str), Some(want), "{p}: {oracle:?}");
    }
    for p in ["keep.txt", "same.txt", "deep/er/still/kept"] {
        assert!(!ours.contains_key(p), "{p} did not change: {ours:?}");
    }
    let by_path =
        |p: &str| v["changes"].as_array().unwrap().iter().find(|c| c["path"] == s(&src.join(p))).unwrap().clone();
    assert_eq!(by_path("eq.txt")["what"], serde_json::json!(["content"]), "caught by the hash alone");
    assert_eq!(by_path("mode.txt")["what"], serde_json::json!(["mode"]));
    assert_eq!(by_path("owner.txt")["what"], serde_json::json!(["owner", "group"]));
    assert!(by_path("xdir")["what"].as_array().unwrap().contains(&serde_json::json!("xattrs")));
    assert_eq!((by_path("f2d")["oldKind"].clone(), by_path("f2d")["kind"].clone()), ("file".into(), "dir".into()));
    assert_eq!((by_path("d2s")["oldKind"].clone(), by_path("d2s")["kind"].clone()), ("dir".into(), "symlink".into()));
    let sum = &v["summary"];
    assert_eq!(sum["added"], ours.values().filter(|k| *k == "added").count());
    assert_eq!(sum["removed"], ours.values().filter(|k| *k == "removed").count());
    assert_eq!(sum["bytesAdded"], "new file".len() + "new in a new directory".len() + 1);
    assert!(sum["unchangedLinked"].as_u64().unwrap() >= 2, "{sum}");
    assert_eq!(sum["filesHashed"], 0, "the manifests know every hash");

    // The default compares the two newest; bare names and the human form work too.
    let o = env.run("diff", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with(&format!("daily/2025-03-02_02-00-00 → {c}\n")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("+ file") && l.ends_with("/eq.txt")), "{text}");
    assert!(text.lines().last().unwrap().starts_with("2 added (30 B), 0 removed"), "{text}");
    let bare = a.split('/').nth(1).unwrap();
    let o = env.run("diff", &[bare, &s(&src.join("grow.txt"))]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("grow.txt"), "{}", show(&o));
    // A date that matches nothing names the nearest snapshots.
    let o = env.run("diff", &["2025-02-27"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("nearest: {a} (after)")), "{}", show(&o));
}

#[test]
fn find_and_versions_see_five_versions_in_twenty_snapshots() {
    let env = Env::on_tmpfs();
    let file = env.src.join("etc/app.conf");
    write(&env.src.join("other"), "o");
    let changes_before = [1, 5, 9, 13, 17];
    for day in 1..=20 {
        if changes_before.contains(&day) {
            write(&file, format!("version before snapshot {day:02}"));
            set_mtime(&file, &format!("2024-01-{day:02} 10:00:00"));
        }
        env.snapshot_ok(&format!("2025-04-{day:02}T02:00:00+02:00"), &["--no-prune"]);
    }
    assert_eq!(ids(&env).len(), 20);
    let v = json(&env.run("versions", &[&s(&file), "--json"]));
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 5, "{v}");
    let spans: Vec<usize> = versions.iter().map(|x| x["snapshots"].as_array().unwrap().len()).collect();
    assert_eq!(spans, [4, 4, 4, 4, 4]);
    assert_eq!(versions[4]["snapshots"][0], ids(&env)[16]);

    let hits = json(&env.run("find", &["app.conf", "--json"]));
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 20);
    let differs = hits.iter().filter(|h| h["sameAsNewer"] == false).count();
    let newest = hits.iter().filter(|h| h["sameAsNewer"].is_null()).count();
    assert_eq!((differs, newest), (4, 1), "{hits:?}");
    // --path looks the one path up; a pattern with a slash matches the tail of the path.
    assert_eq!(json(&env.run("find", &["--path", &s(&file), "--json"])).as_array().unwrap().len(), 20);
    assert_eq!(json(&env.run("find", &["etc/*.conf", "--json"])).as_array().unwrap().len(), 20);
    let o = env.run("find", &["no-such-name"]);
    assert_eq!(code(&o), 1, "nothing found is exit 1: {}", show(&o));
    let o = env.run("find", &["+ bad"]);
    assert_eq!(code(&o), 2, "a bad pattern is bad usage: {}", show(&o));
}

fn du_sb(paths: &[std::path::PathBuf], flags: &str) -> u64 {
    let list: Vec<String> = paths.iter().map(|p| format!("'{}'", p.display())).collect();
    let out = sh(&format!("du {flags} -c {} | tail -n 1", list.join(" ")));
    out.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn du_counts_each_inode_once_and_frees_what_a_prune_frees() {
    let env = Env::new();
    let _fs = Mount::tmpfs(&env.dest, "size=64m");
    write(&env.src.join("shared/big"), vec![7u8; 300_000]);
    for day in 1..=12 {
        // One file that lives one day, one that changes every day, one shared by all.
        let _ = std::fs::remove_file(env.src.join(format!("daily-{}", day - 1)));
        write(&env.src.join(format!("daily-{day}")), vec![day as u8; 50_000 + day * 1000]);
        write(&env.src.join("changing"), vec![day as u8; 20_000]);
        set_mtime(&env.src.join("changing"), &format!("2024-02-{day:02} 10:00:00"));
        env.snapshot_ok(&format!("2025-05-{day:02}T02:00:00+02:00"), &["--no-prune"]);
    }
    let all = ids(&env);
    let snaps: Vec<_> = all.iter().map(|id| env.host_dir().join(id)).collect();
    let u = json(&env.run("du", &["--json"]));
    let per = u["snapshots"].as_array().unwrap();
    assert_eq!(per.len(), 12);
    let total = u["totalBytes"].as_u64().unwrap();
    assert_eq!(total, du_sb(&snaps, "-sb"), "total = du -sbc over every snapshot (each inode once)");
    assert_eq!(u["onlyBytes"].as_u64().unwrap() + u["sharedBytes"].as_u64().unwrap(), total);
    let only_sum: u64 = per.iter().map(|x| x["onlyBytes"].as_u64().unwrap()).sum();
    assert_eq!(only_sum, u["onlyBytes"].as_u64().unwrap());
    assert_eq!(u["totalDiskBytes"].as_u64().unwrap(), du_sb(&snaps, "-s -B1"));
    for (x, p) in per.iter().zip(&snaps) {
        assert_eq!(x["bytes"].as_u64().unwrap(), du_sb(std::slice::from_ref(p), "-sb"), "{}", p.display());
        assert_eq!(x["bytes"].as_u64().unwrap(), x["onlyBytes"].as_u64().unwrap() + x["sharedBytes"].as_u64().unwrap());
    }
    assert!(per[0]["sharedBytes"].as_u64().unwrap() >= 300_000, "the big file is shared: {u}");
    assert!(per[5]["onlyBytes"].as_u64().unwrap() >= 56_000, "its daily file is its own: {u}");

    // What prune --dry-run says it frees is what the prune frees.
    let now = "2025-05-12T03:00:00+02:00";
    let dry = json(&env.run("prune", &["--dry-run", "--json", "--now", now]));
    let removed: Vec<&serde_json::Value> =
        dry["items"].as_array().unwrap().iter().filter(|i| i["keep"] == false).collect();
    assert!(removed.len() >= 3, "the default rules keep 7 daily of 12: {dry}");
    for r in &removed {
        assert!(r["freesBytes"].as_u64().unwrap() > 50_000, "{r}");
    }
    let promised = dry["freesBytes"].as_u64().unwrap();
    let text = String::from_utf8_lossy(&env.run("prune", &["--dry-run", "--now", now]).stdout).into_owned();
    assert!(text.contains("would remove") && text.contains("freeing"), "{text}");
    let before = avail_bytes(&env.dest);
    let o = env.run("prune", &["--now", now]);
    assert!(o.status.success(), "{}", show(&o));
    let after = avail_bytes(&env.dest);
    assert_eq!(after - before, promised, "prune freed {} bytes, dry run said {promised}", after - before);

    // A link outside every snapshot keeps its inode: deleting the snapshot would not free it.
    let newest_frees =
        |u: &serde_json::Value| u["snapshots"].as_array().unwrap().last().unwrap()["freesBytes"].as_u64().unwrap();
    let u1 = json(&env.run("du", &["--json"]));
    let newest = ids(&env).pop().unwrap();
    let own = env.in_snapshot(&newest).join("daily-12");
    std::fs::hard_link(&own, env.dest.join("a-link-elsewhere")).unwrap();
    let u2 = json(&env.run("du", &["--json"]));
    let blocks = std::fs::metadata(&own).unwrap().blocks() * 512;
    assert!(blocks > 0);
    assert_eq!(newest_frees(&u2), newest_frees(&u1) - blocks, "{u1} / {u2}");
}

/// `pin` through the binary.
fn pin(env: &Env, args: &[&str]) -> Output {
    let o = env.run("pin", args);
    assert!(o.status.success(), "{}", show(&o));
    o
}

#[test]
fn a_pinned_snapshot_survives_two_years_of_retention() {
    let env = Env::on_tmpfs();
    write(&env.src.join("f"), "x");
    // Two hand-made snapshots on 2023-01-10 besides the nightly one; only one is pinned.
    env.snapshot_ok("2023-01-10T02:00:00+01:00", &[]);
    env.snapshot_ok("2023-01-10T10:00:00+01:00", &["--pin", "--note", "before nixos-rebuild switch"]);
    env.snapshot_ok("2023-01-10T14:00:00+01:00", &[]);
    let o = env.run("diff", &[]);
    let head = String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string();
    assert_eq!(
        head,
        "daily/2023-01-10_10-00-00 (pinned: before nixos-rebuild switch) → daily/2023-01-10_14-00-00",
        "{}",
        show(&o)
    );
    // The 14:00 one, pinned by name until spring (a bare name, as everywhere).
    pin(&env, &["2023-01-10_14-00-00", "--until", "2023-04-01", "--note", "until spring"]);
    env.snapshot_ok("2023-01-10T15:00:00+01:00", &[]);
    let status = String::from_utf8_lossy(&env.run("status", &[]).stdout).into_owned();
    assert!(status.contains("pinned: before nixos-rebuild switch"), "{status}");
    assert!(status.contains("until spring"), "{status}");
    let mut date = jiff::civil::date(2023, 1, 11);
    let end = jiff::civil::date(2025, 1, 10);
    let mut spring_checked = false;
    while date <= end {
        env.snapshot_ok(&format!("{date}T02:00:00+01:00"), &[]);
        if !spring_checked && date >= jiff::civil::date(2023, 3, 20) {
            assert!(ids(&env).iter().any(|i| i.ends_with("2023-01-10_14-00-00")), "pinned until April");
            spring_checked = true;
        }
        if date == jiff::civil::date(2023, 6, 1) {
            // The state directory is lost: the pins are in the snapshots.
            sh(&format!("rm -rf '{}'", env.state.display()));
        }
        date = date.checked_add(jiff::Span::new().days(3)).unwrap();
    }
    assert!(spring_checked);
    let left = ids(&env);
    assert!(left.iter().any(|i| i.ends_with("2023-01-10_10-00-00")), "the pinned snapshot is gone: {left:?}");
    for gone in ["2023-01-10_02-00-00", "2023-01-10_14-00-00", "2023-01-10_15-00-00"] {
        assert!(!left.iter().any(|i| i.ends_with(gone)), "{gone} outlived its rules: {left:?}");
    }
    let list = String::from_utf8_lossy(&env.run("restore", &["--list"]).stdout).into_owned();
    assert!(list.contains("2023-01-10_10-00-00") && list.contains("[pinned: before nixos-rebuild switch]"), "{list}");
    // Unpinned, the next prune lets it go.
    let o = env.run("unpin", &["2023-01-10_10-00-00"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = env.run("prune", &["--now", "2025-01-10T03:00:00+01:00"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!ids(&env).iter().any(|i| i.ends_with("2023-01-10_10-00-00")));
}

#[test]
fn symlinks_planted_for_pins_and_reads_are_never_followed() {
    let env = Env::new();
    write(&env.src.join("f"), "x");
    std::os::unix::fs::symlink(env.dir.path().join("victim"), env.src.join("link")).unwrap();
    env.snapshot_ok("2025-06-01T02:00:00+02:00", &[]);
    env.snapshot_ok("2025-06-02T02:00:00+02:00", &[]);
    let victim = env.dir.path().join("victim");
    write(&victim.join("secret"), "do not touch");
    write(&victim.join("pin.json"), "victim");
    let [a, b] = ids(&env).try_into().unwrap();

    // pin.json is a symlink to a victim: replaced, never written through.
    let meta = env.host_dir().join(&a).join(".hwc-backup");
    std::os::unix::fs::symlink(victim.join("pin.json"), meta.join("pin.json")).unwrap();
    let o = env.run("status", &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("pin unreadable"), "{}", show(&o));
    pin(&env, &[&a, "--note", "n"]);
    assert_eq!(std::fs::read_to_string(victim.join("pin.json")).unwrap(), "victim");
    assert!(std::fs::symlink_metadata(meta.join("pin.json")).unwrap().is_file());

    // .hwc-backup is a symlink to the victim: that snapshot is not one; nothing is written.
    let meta_b = env.host_dir().join(&b).join(".hwc-backup");
    std::fs::rename(&meta_b, env.dir.path().join("moved-meta")).unwrap();
    std::fs::copy(env.dir.path().join("moved-meta/meta.json"), victim.join("meta.json")).unwrap();
    std::os::unix::fs::symlink(&victim, &meta_b).unwrap();
    let o = env.run("pin", &[&b]);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(!victim.join(".pin.json.tmp").exists());
    assert_eq!(std::fs::read_to_string(victim.join("pin.json")).unwrap(), "victim");
    std::fs::remove_file(&meta_b).unwrap();
    std::fs::rename(env.dir.path().join("moved-meta"), &meta_b).unwrap();

    // A snapshot directory that is a symlink to a victim that looks like a snapshot.
    let fake = env.dir.path().join("fake");
    sh(&format!("cp -a '{}' '{}'", env.host_dir().join(&b).display(), fake.display()));
    std::os::unix::fs::symlink(&fake, env.host_dir().join("daily/2025-06-03_02-00-00")).unwrap();
    let o = env.run("pin", &["2025-06-03_02-00-00"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(!fake.join(".hwc-backup/pin.json").exists());
    let o = env.run("diff", &[&b, "2025-06-03_02-00-00"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such snapshot"), "{}", show(&o));
    let o = env.run("du", &["--json"]);
    assert_eq!(json(&o)["snapshots"].as_array().unwrap().len(), 2, "the planted one is skipped");

    // A symlink stored in a snapshot is a symlink: find never looks behind it, and diff
    // refuses a PATH below it.
    let o = env.run("find", &["secret"]);
    assert_eq!(code(&o), 1, "nothing behind the link is found: {}", show(&o));
    let o = env.run("diff", &[&a, &b, &s(&env.src.join("link/secret"))]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("below a symlink"), "{}", show(&o));
    let o = env.run("versions", &[&s(&env.src.join("link/secret"))]);
    assert_eq!(code(&o), 1, "{}", show(&o));

    // A manifest that is a symlink to a victim is not read: diff says so and reads the files.
    write(&env.src.join("f"), "y"); // same size, so only a hash can tell
    set_mtime(&env.src.join("f"), "2024-01-01 00:00:00");
    env.snapshot_ok("2025-06-04T02:00:00+02:00", &[]);
    let c = ids(&env).pop().unwrap();
    let manifest = env.host_dir().join(&c).join(".hwc-backup/manifest.b3");
    std::fs::remove_file(&manifest).unwrap();
    write(&victim.join("manifest.b3"), format!("{}  {}/f\n", "0".repeat(64), s(&env.src).trim_start_matches('/')));
    std::os::unix::fs::symlink(victim.join("manifest.b3"), &manifest).unwrap();
    let o = env.run("diff", &[&a, &c, "--json"]);
    let v = json(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("manifest.b3"), "{}", show(&o));
    assert_eq!(v["summary"]["modified"], 1, "{v}");
    assert!(v["summary"]["filesHashed"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(std::fs::read_to_string(victim.join("secret")).unwrap(), "do not touch");
}

/// A multi-gigabyte manifest planted in a snapshot (sparse, one endless line) is read as a
/// stream of capped lines, never into memory: `diff` holds little, says the manifest is
/// unusable and compares by reading the files.
#[test]
fn diff_holds_little_memory_with_a_huge_planted_manifest() {
    require("/usr/bin/time");
    let env = Env::new();
    write(&env.src.join("f"), "x");
    env.snapshot_ok("2025-06-01T02:00:00+02:00", &[]);
    write(&env.src.join("f"), "y"); // same size: the content is compared
    env.snapshot_ok("2025-06-02T02:00:00+02:00", &[]);
    let [a, b] = ids(&env).try_into().unwrap();
    let manifest = env.host_dir().join(&b).join(".hwc-backup/manifest.b3");
    std::fs::remove_file(&manifest).unwrap();
    sh(&format!("truncate -s 3G '{}'", manifest.display()));
    // Reading it whole would take 3 GiB; the address space is capped at twice that, so that a
    // regression cannot take more of this shared machine. (A cap below the file's size would
    // hide one: `read_to_end` then fails cleanly, and diff reads the files.)
    let report = env.dir.path().join("peak-kib");
    let mut c = std::process::Command::new("sh");
    c.args(["-c", "ulimit -v 6291456 && exec /usr/bin/time -f %M -o \"$0\" \"$@\""]).arg(&report).arg(bin());
    c.arg("diff").args(env.target_args()).args([&a, &b, "--json"]);
    c.env_remove("HWC_BACKUP_CONFIG").env_remove("HWC_BACKUP_LOG");
    let o = crate::verify::within_a_minute(&mut c, "diff with a huge manifest");
    let peak_kib: u64 = std::fs::read_to_string(&report).unwrap().lines().last().unwrap().trim().parse().unwrap();
    assert!(peak_kib < 128 * 1024, "diff peaked at {peak_kib} KiB reading a 3 GiB manifest");
    let v = json(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("manifest.b3"), "{}", show(&o));
    assert_eq!(v["summary"]["modified"], 1, "{v}");
}

#[test]
fn now_dry_run_predicts_the_run_and_writes_nothing() {
    let env = Env::new();
    let src = &env.src;
    for (name, body) in
        [("keep", "k"), ("change", "before"), ("gone", "g"), ("dir/deep/f", "d"), ("skip.tmp", "t"), ("tagged", "x")]
    {
        write(&src.join(name), body);
    }
    set_xattr(&src.join("tagged"), "user.tag", "one");
    std::os::unix::fs::symlink("keep", src.join("link")).unwrap();
    sh(&format!("mkfifo '{}'", src.join("fifo").display()));
    let excl = ["--exclude", "*.tmp"];
    // Before the first snapshot: everything is copied; the destination is not even created.
    let fresh = env.dir.path().join("fresh");
    let o = env
        .cmd(&["now", "--dry-run", "--json", "--source", &s(src), "--dest", &s(&fresh), "--host", HOST])
        .output()
        .unwrap();
    let first = json(&o);
    assert!(!fresh.exists(), "a dry run creates nothing");
    assert_eq!((first["linkBase"].clone(), first["filesToCopy"].clone()), (serde_json::Value::Null, 6.into()));
    env.snapshot_ok("2025-07-01T02:00:00+02:00", &excl);

    write(&src.join("change"), "after, longer");
    write(&src.join("new"), "new file");
    write(&src.join("dir/deep/new2"), "another");
    std::fs::remove_file(src.join("gone")).unwrap();
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("change", src.join("link")).unwrap();
    // Only an attribute changes: the run copies it (the quick check alone would link it).
    set_xattr(&src.join("tagged"), "user.tag", "two");
    let before = tree(&env.dest);
    let state_before = tree(&env.state);
    let src_arg = s(src);
    let mut args = vec!["--dry-run", "--json", "--source", &src_arg];
    let target = env.target_args();
    args.extend(target.iter().map(String::as_str));
    args.extend(excl);
    let o = env.cmd(&["now"]).args(&args).output().unwrap();
    let dry = json(&o);
    assert_eq!(tree(&env.dest), before, "the dry run wrote nothing to the destination");
    assert_eq!(tree(&env.state), state_before, "nor any record");

    let o = env.snapshot_ok("2025-07-02T02:00:00+02:00", &["--json", "-v", "--exclude", "*.tmp"]);
    let run = json(&o);
    let c = &run["counts"];
    for (ours, theirs) in [
        ("filesToCopy", "copied"),
        ("bytesToCopy", "bytesCopied"),
        ("bytesLinked", "bytesLinked"),
        ("excluded", "excluded"),
        ("specials", "specials"),
    ] {
        assert_eq!(dry[ours], c[theirs], "{ours} vs the run's {theirs}: {dry} / {c}");
    }
    assert_eq!(dry["linked"].as_u64().unwrap(), c["linked"].as_u64().unwrap(), "{dry} / {c}");
    assert_eq!(dry["filesToCopy"], 4, "the changed, the two new and the re-tagged file: {dry}");
    // The same paths as the run's own list of changes (files and symlinks).
    let mut planned: BTreeSet<(String, String)> = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["path"].as_str().unwrap().to_string(), x["change"].as_str().unwrap().to_string()))
        .collect();
    // The re-tagged file is copied for its attribute alone: a metadata change, which the
    // run's list (below) leaves out with the directories' metadata changes.
    assert!(planned.remove(&(s(&src.join("tagged")), "metadata".into())), "{planned:?}");
    let done: BTreeSet<(String, String)> = run["itemized"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] != "dir" && x["change"] != "metadata")
        .map(|x| (x["path"].as_str().unwrap().to_string(), x["change"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(planned, done);
    assert!(planned.contains(&(s(&src.join("gone")), "removed".into())), "{planned:?}");
}

#[test]
fn bad_arguments_change_nothing_and_exit_2() {
    let env = Env::new();
    write(&env.src.join("f"), "x");
    env.snapshot_ok("2025-08-01T02:00:00+02:00", &[]);
    let before = tree(&env.host_dir());
    for args in [
        &["pin", "latest", "--until", "next week"][..],
        &["pin", "latest", "--note", "two\nlines"],
        &["diff", "/a", "/b"],
        &["diff", "a", "b", "c"],
        &["versions", "relative/path"],
        &["versions", "/a/../b"],
        &["find", "+ include"],
        &["find", "x", "--path", "/x"],
        &["now", "--dry-run", "--pin"],
    ] {
        let o = env.run(args[0], &args[1..]);
        assert_eq!(code(&o), 2, "{args:?}: {}", show(&o));
    }
    assert_eq!(tree(&env.host_dir()), before, "nothing was written");
    // One snapshot is not enough for a diff of the two newest: said, exit 1.
    let o = env.run("diff", &[]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs two snapshots"), "{}", show(&o));
}

#[test]
fn now_dry_run_is_the_runs_walk_skipping_the_host_directory_and_never_following_a_planted_symlink() {
    let env = Env::new();
    let src = &env.src;
    write(&src.join("keep"), "k");
    write(&src.join("dir/f"), "same bytes");
    // The destination inside the source: the host directory is left out by identity.
    let dest = src.join("backups");
    std::fs::create_dir(&dest).unwrap();
    let (src_arg, dest_arg, state_arg) = (s(src), s(&dest), s(&env.state));
    let common = ["--source", &src_arg, "--dest", &dest_arg, "--host", HOST, "--state-dir", &state_arg, "--json"];
    let run_at = |when: &str| {
        let o = env.cmd(&["now"]).args(common).args(["--now", when]).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        json(&o)
    };
    run_at("2025-07-01T02:00:00+02:00");
    // A symlink planted in the link base where `dir` was, to a copy of it with the same
    // attributes: followed, it would be "unchanged" and linked.
    let victim = env.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    sh(&format!("cp -a '{}' '{}'", src.join("dir/f").display(), victim.join("f").display()));
    let daily = dest.join(HOST).join("daily");
    let base = std::fs::read_dir(&daily).unwrap().next().unwrap().unwrap().path();
    let planted = base.join(src.strip_prefix("/").unwrap()).join("dir");
    std::fs::remove_dir_all(&planted).unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();

    let before = tree(&dest);
    let o = env.cmd(&["now", "--dry-run"]).args(common).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let dry = json(&o);
    assert_eq!(tree(&dest), before, "the dry run wrote nothing");
    let run = run_at("2025-07-02T02:00:00+02:00");
    let c = &run["counts"];
    for (ours, theirs) in [
        ("filesToCopy", "copied"),
        ("bytesToCopy", "bytesCopied"),
        ("linked", "linked"),
        ("excluded", "excluded"),
        ("directories", "directories"),
    ] {
        assert_eq!(dry[ours], c[theirs], "{ours} vs the run's {theirs}: {dry} / {c}");
    }
    assert_eq!(dry["excluded"], 1, "the host directory: {dry}");
    assert_eq!(dry["linked"], 1, "only `keep`; dir/f is copied, not judged through the symlink: {dry}");
    let m = std::fs::metadata(victim.join("f")).unwrap();
    assert_eq!(m.nlink(), 1, "nothing was linked to the victim");
    assert_eq!(std::fs::read_to_string(victim.join("f")).unwrap(), "same bytes");
}
