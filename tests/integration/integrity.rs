//! Integrity across all snapshots: `verify --all` reads each distinct inode once and names
//! every snapshot that shares a damaged one; the damage is remembered per drive (health fails
//! until `repair`, whichever snapshot was verified last) and never hard-linked into the next
//! snapshot; `repair` replaces a damaged file from the live source when its hash matches and
//! marks it lost otherwise (restore then warns); `verify --subset 25%` four times checks every
//! distinct inode exactly once; repair refuses while the lock is held and never writes
//! through a symlink planted in a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::*;

/// Flips one bit of `p` in place, keeping its size and mtime, as bit rot would.
pub(crate) fn flip(p: &Path, at: u64) {
    let mtime = std::fs::metadata(p).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
    f.set_modified(mtime).unwrap();
}

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

/// The `verify` check of `health --json`.
fn health_verify(env: &Env) -> (bool, String) {
    let o = env.run("health", &["--json"]);
    let h = json(&o);
    let c = h["checks"].as_array().unwrap().iter().find(|c| c["name"] == "verify").unwrap().clone();
    (c["ok"].as_bool().unwrap(), c["message"].as_str().unwrap().to_string())
}

/// Every regular file below the snapshots' source trees: (device, inode) → size, and the
/// number of paths.
fn distinct_inodes(env: &Env) -> (BTreeMap<(u64, u64), u64>, usize) {
    let mut inodes = BTreeMap::new();
    let mut paths = 0;
    for id in env.snapshot_ids() {
        let root = env.in_snapshot(&id);
        for rel in tree(&root) {
            let m = std::fs::symlink_metadata(root.join(&rel)).unwrap();
            if m.is_file() {
                paths += 1;
                inodes.insert((m.dev(), m.ino()), m.len());
            }
        }
    }
    (inodes, paths)
}

fn sum(reports: &Value, field: &str) -> u64 {
    reports.as_array().unwrap().iter().map(|r| r[field].as_u64().unwrap()).sum()
}

fn date(day: u32) -> String {
    format!("2025-01-{day:02}T02:00:00+01:00")
}

#[test]
fn damage_is_read_once_named_everywhere_remembered_never_linked_and_repaired() {
    let env = Env::new();
    let shared: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&env.src.join("data/shared.bin"), &shared);
    write(&env.src.join("data/small"), "small\n");
    for day in 1..=10 {
        write(&env.src.join("journal"), format!("entry {day}\n").repeat(1000 + day as usize));
        env.snapshot_ok(&date(day), &["--no-prune"]);
    }
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 10, "{ids:?}");
    let at = |id: &str, rel: &str| env.in_snapshot(id).join(rel);
    let damaged_ino = ino(&at(&ids[0], "data/shared.bin"));
    assert!(ids.iter().all(|id| ino(&at(id, "data/shared.bin")) == damaged_ino), "one inode shared by all");
    // One shared inode (through snapshot 3's path) and one file of snapshot 5 only.
    flip(&at(&ids[2], "data/shared.bin"), 123_456);
    flip(&at(&ids[4], "journal"), 10);
    let (inodes, paths) = distinct_inodes(&env);

    let o = env.run("verify", &["--all", "--json"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let reports = json(&o);
    // Each distinct inode was read once, and every path was checked.
    assert_eq!(sum(&reports, "filesRead"), inodes.len() as u64, "{reports}");
    assert_eq!(sum(&reports, "bytesRead"), inodes.values().sum::<u64>(), "{reports}");
    assert_eq!(sum(&reports, "filesRead") + sum(&reports, "filesShared"), paths as u64);
    assert_eq!(sum(&reports, "filesChecked"), paths as u64);
    for (i, r) in reports.as_array().unwrap().iter().enumerate() {
        let damage = r["damage"].as_array().unwrap();
        let shared_damage = damage.iter().find(|d| d["path"].as_str().unwrap().ends_with("data/shared.bin"));
        let shared_damage = shared_damage.unwrap_or_else(|| panic!("{} names the shared damage: {r}", ids[i]));
        assert_eq!(shared_damage["snapshots"], serde_json::json!(ids), "every snapshot sharing it is named");
        assert_eq!(shared_damage["inode"], damaged_ino);
        let journal = damage.iter().find(|d| d["path"].as_str().unwrap().ends_with("/journal"));
        if i == 4 {
            assert_eq!(journal.unwrap()["snapshots"], serde_json::json!([ids[4]]));
        } else {
            assert!(journal.is_none(), "{r}");
        }
    }
    let human = env.run("verify", &["--all"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains(&format!("(inode {damaged_ino}, in {}", ids.join(", "))), "{text}");
    assert!(!health_verify(&env).0);

    // The next run does not hard-link the damaged inode: it copies the file afresh.
    write(&env.src.join("journal"), "changed on the source since\n");
    env.snapshot_ok(&date(11), &["--no-prune"]);
    let newest = env.snapshot_ids().into_iter().find(|id| id.ends_with("2025-01-11_02-00-00")).unwrap();
    assert_ne!(ino(&at(&newest, "data/shared.bin")), damaged_ino, "the damaged inode was linked");
    assert_eq!(std::fs::read(at(&newest, "data/shared.bin")).unwrap(), shared);
    assert_eq!(ino(&at(&newest, "data/small")), ino(&at(&ids[9], "data/small")), "clean files are still linked");
    // Verifying only the newest snapshot (clean) does not make the damage look repaired.
    let o = env.run("verify", &[&newest]);
    assert!(o.status.success(), "{}", show(&o));
    let (ok, message) = health_verify(&env);
    assert!(!ok && message.contains("repair"), "{message}");

    // A dry run says what it would do and changes nothing.
    let before = tree(&env.dest);
    let o = env.run("repair", &["--dry-run", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let r = json(&o);
    assert_eq!(r["repaired"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["lost"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(tree(&env.dest), before);
    assert_ne!(std::fs::read(at(&ids[0], "data/shared.bin")).unwrap(), shared);
    assert!(!health_verify(&env).0);

    let o = env.run("repair", &["--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let r = json(&o);
    let repaired = &r["repaired"][0];
    assert!(repaired["path"].as_str().unwrap().ends_with("data/shared.bin"), "{r}");
    assert_eq!(repaired["snapshots"], serde_json::json!(ids));
    let lost = &r["lost"][0];
    assert!(lost["path"].as_str().unwrap().ends_with("/journal"), "{r}");
    assert_eq!(lost["snapshots"], serde_json::json!([ids[4]]));
    assert!(lost["note"].as_str().unwrap().contains("changed"), "{r}");
    // The good copy is in every snapshot, still one inode shared by all ten, a new one.
    let fixed = ino(&at(&ids[0], "data/shared.bin"));
    assert_ne!(fixed, damaged_ino);
    for id in &ids {
        assert_eq!(std::fs::read(at(id, "data/shared.bin")).unwrap(), shared, "{id}");
        assert_eq!(ino(&at(id, "data/shared.bin")), fixed, "{id}");
        let leftovers: Vec<_> = tree(&env.in_snapshot(id)).into_iter().filter(|p| p.contains(".hwc-repair")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    let lost_list = std::fs::read_to_string(env.host_dir().join(&ids[4]).join(".hwc-backup/lost.json")).unwrap();
    assert!(lost_list.contains("/journal"), "{lost_list}");
    let (ok, message) = health_verify(&env);
    assert!(ok, "{message}");
    // A verify now knows the lost file and finds nothing else.
    let o = env.run("verify", &["--all", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let reports = json(&o);
    assert!(reports[4]["lost"][0].as_str().unwrap().ends_with("/journal"), "{reports}");
    assert!(health_verify(&env).0);
    // Restoring the lost file warns.
    let target = env.dir.path().join("restored");
    let journal = s(&env.src.join("journal"));
    let o = env.run("restore", &[&ids[4], &journal, &s(&target)]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("marked lost"), "{}", show(&o));
}

#[test]
fn subset_of_25_percent_four_times_checks_every_inode_exactly_once() {
    let env = Env::new();
    for i in 0..40 {
        write(&env.src.join(format!("f{i:02}")), format!("file {i}\n").repeat(i + 1));
    }
    for day in 1..=3 {
        write(&env.src.join("f00"), format!("changes every day: {day}\n"));
        env.snapshot_ok(&date(day), &["--no-prune"]);
    }
    let (inodes, paths) = distinct_inodes(&env);
    // Eight damaged inodes, each shared by all three snapshots.
    let newest = env.snapshot_ids().pop().unwrap();
    let corrupted: BTreeSet<String> = (10..18).map(|i| format!("f{i:02}")).collect();
    for name in &corrupted {
        flip(&env.in_snapshot(&newest).join(name), 0);
    }
    let mut read = 0;
    let mut bytes = 0;
    let mut found: Vec<String> = Vec::new();
    let mut first_call_read = None;
    for call in 0..4 {
        let o = env.run("verify", &["--subset", "25%", "--json"]);
        let reports = json(&o);
        let checked = sum(&reports, "filesRead") + sum(&reports, "filesShared") + sum(&reports, "filesSkipped");
        assert_eq!(checked, paths as u64, "every path is looked at: {reports}");
        read += sum(&reports, "filesRead");
        bytes += sum(&reports, "bytesRead");
        first_call_read.get_or_insert(sum(&reports, "filesRead"));
        let mut damaged: BTreeSet<String> = BTreeSet::new();
        for r in reports.as_array().unwrap() {
            for d in r["damage"].as_array().unwrap() {
                damaged.insert(Path::new(d["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into());
            }
        }
        assert_eq!(code(&o) == 0, damaged.is_empty(), "call {call}: {}", show(&o));
        found.extend(damaged);
    }
    assert_eq!(read, inodes.len() as u64, "each distinct inode read once over the four calls");
    assert_eq!(bytes, inodes.values().sum::<u64>());
    found.sort();
    assert_eq!(found, corrupted.iter().cloned().collect::<Vec<_>>(), "each damaged inode found in exactly one call");
    // A fifth call starts the cycle again with the first slice.
    let o = env.run("verify", &["--subset", "25", "--json"]);
    assert_eq!(Some(sum(&json(&o), "filesRead")), first_call_read);
    // Bad percentages are refused.
    for bad in ["0%", "101%", "x"] {
        let o = env.run("verify", &["--subset", bad]);
        assert_eq!(code(&o), 2, "{bad}: {}", show(&o));
    }
}

/// A damaged file shared by two snapshots; returns its path relative to a snapshot's tree.
fn two_damaged_snapshots(env: &Env) -> (Vec<String>, PathBuf) {
    write(&env.src.join("d/f"), "good content\n".repeat(100));
    env.snapshot_ok(&date(1), &["--no-prune"]);
    env.snapshot_ok(&date(2), &["--no-prune"]);
    let ids = env.snapshot_ids();
    flip(&env.in_snapshot(&ids[0]).join("d/f"), 3);
    let o = env.run("verify", &["--all"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    (ids, PathBuf::from("d/f"))
}

#[test]
fn repair_never_writes_through_a_symlink_planted_in_a_snapshot() {
    let env = Env::new();
    let (ids, rel) = two_damaged_snapshots(&env);
    // After the verify, snapshot 2's directory `d` becomes a symlink to a victim directory
    // holding a file of the same name.
    let victim = env.dir.path().join("victim");
    write(&victim.join("f"), "victim\n");
    let d = env.in_snapshot(&ids[1]).join("d");
    std::fs::rename(&d, env.dir.path().join("moved-away")).unwrap();
    std::os::unix::fs::symlink(&victim, &d).unwrap();
    let o = env.run("repair", &["--json"]);
    assert_eq!(code(&o), 1, "the refused place is reported: {}", show(&o));
    let r = json(&o);
    assert!(r["failed"][0]["note"].as_str().unwrap().contains("symbolic link"), "{r}");
    assert_eq!(r["failed"][0]["snapshots"], serde_json::json!([ids[1]]), "{r}");
    assert_eq!(r["repaired"][0]["snapshots"], serde_json::json!([ids[0]]), "{r}");
    assert_eq!(std::fs::read_to_string(victim.join("f")).unwrap(), "victim\n");
    assert_eq!(tree(&victim), vec!["f".to_string()], "nothing was created in the victim directory");
    // The place that could be repaired was; the other stays recorded.
    assert_eq!(std::fs::read(env.in_snapshot(&ids[0]).join(&rel)).unwrap(), std::fs::read(env.src.join(&rel)).unwrap());
    assert!(!health_verify(&env).0);
}

#[test]
fn repair_refuses_while_another_run_holds_the_lock() {
    require("flock");
    let env = Env::new();
    let (ids, rel) = two_damaged_snapshots(&env);
    let damaged = std::fs::read(env.in_snapshot(&ids[0]).join(&rel)).unwrap();
    let lock = env.host_dir().join(".lock");
    let (ready, go) = (env.dir.path().join("ready"), env.dir.path().join("go"));
    let script = format!(
        "touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        s(&ready),
        s(&go)
    );
    let mut holder = std::process::Command::new("flock").arg(&lock).args(["sh", "-c", &script]).spawn().unwrap();
    for _ in 0..600 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready.exists(), "flock(1) did not start");
    let o = env.run("repair", &[]);
    assert_eq!(code(&o), 4, "{}", show(&o));
    assert_eq!(std::fs::read(env.in_snapshot(&ids[0]).join(&rel)).unwrap(), damaged, "nothing repaired");
    std::fs::write(&go, "").unwrap();
    assert!(holder.wait().unwrap().success());
    let o = env.run("repair", &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(health_verify(&env).0);
}

#[test]
fn marking_lost_never_writes_through_a_symlink_planted_as_the_list() {
    let env = Env::new();
    let (ids, rel) = two_damaged_snapshots(&env);
    // The source changed since: no good copy, so repair would mark the file lost.
    write(&env.src.join(&rel), "changed since\n");
    let victim = env.dir.path().join("victim.json");
    write(&victim, "victim\n");
    let list = env.host_dir().join(&ids[1]).join(".hwc-backup/lost.json");
    std::os::unix::fs::symlink(&victim, &list).unwrap();
    let o = env.run("repair", &["--json"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let r = json(&o);
    assert!(r["failed"][0]["note"].as_str().unwrap().contains("lost.json"), "{r}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    assert!(std::fs::symlink_metadata(&list).unwrap().file_type().is_symlink(), "the planted link is left alone");
    // The other snapshot's list was written, and its place is no longer unrepaired damage.
    let other = std::fs::read_to_string(env.host_dir().join(&ids[0]).join(".hwc-backup/lost.json")).unwrap();
    assert!(other.contains("d/f"), "{other}");
    assert!(!health_verify(&env).0);
    let damage = sh(&format!("cat {}/{HOST}/destinations/*/damage.json", s(&env.state)));
    let damage: Value = serde_json::from_str(&damage).unwrap();
    let open: Vec<&str> = damage["files"].as_array().unwrap().iter().map(|p| p["snapshot"].as_str().unwrap()).collect();
    assert_eq!(open, [ids[1].as_str()], "{damage}");
    assert_eq!(damage["lost"][0]["snapshot"], ids[0], "{damage}");
}

#[test]
fn repair_keeps_hard_links_within_and_across_snapshots() {
    // Two names of one file in one directory, in two snapshots sharing the inode: after the
    // repair all four places are still one inode, with the good content.
    let env = Env::new();
    write(&env.src.join("d/a"), "good content\n".repeat(100));
    std::fs::hard_link(env.src.join("d/a"), env.src.join("d/b")).unwrap();
    env.snapshot_ok(&date(1), &["--no-prune"]);
    env.snapshot_ok(&date(2), &["--no-prune"]);
    let ids = env.snapshot_ids();
    let places: Vec<PathBuf> = ids.iter().flat_map(|id| ["d/a", "d/b"].map(|n| env.in_snapshot(id).join(n))).collect();
    assert!(places.iter().all(|p| ino(p) == ino(&places[0])), "one inode to start with");
    flip(&places[0], 3);
    let o = env.run("verify", &["--all"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let o = env.run("repair", &["--json"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(places.iter().all(|p| ino(p) == ino(&places[0])), "the repair split the hard links");
    assert_ne!(ino(&places[0]), ino(&env.src.join("d/a")), "a copy, not a link to the source");
    assert_eq!(std::fs::read_to_string(&places[3]).unwrap(), "good content\n".repeat(100));
    let leftovers = sh(&format!("find '{}' -name '.hwc-repair*'", env.host_dir().display()));
    assert_eq!(leftovers, "", "temporary names left behind");
    let o = env.run("verify", &["--all"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
}

#[test]
fn repair_reads_no_live_path_of_the_kernels_own_and_opens_no_fifo() {
    // Whoever can write the disk plants a file and its manifest line at `proc/uptime` (the
    // next verify records it as damaged), and the live source of a real damaged file is
    // replaced by a FIFO: repair reads neither, marks both lost, and ends.
    let env = Env::new();
    write(&env.src.join("d/f"), "good content\n".repeat(100));
    env.snapshot_ok(&date(1), &["--no-prune"]);
    let id = env.snapshot_ids().pop().unwrap();
    let root = env.host_dir().join(&id);
    write(&root.join("proc/uptime"), "planted\n");
    let manifest = root.join(".hwc-backup/manifest.b3");
    let lines = std::fs::read_to_string(&manifest).unwrap();
    assert!(lines.lines().all(|l| l.split_once("  ").unwrap().1 > "proc/uptime"), "{lines}");
    std::fs::write(&manifest, format!("{}  proc/uptime\n{lines}", "ab".repeat(32))).unwrap();
    flip(&env.in_snapshot(&id).join("d/f"), 3);
    std::fs::remove_file(env.src.join("d/f")).unwrap();
    sh(&format!("mkfifo '{}'", env.src.join("d/f").display()));
    let o = env.run("verify", &[]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let mut repair = env.cmd(&["repair", "--json"]);
    repair.args(env.target_args());
    let o = crate::verify::within_a_minute(&mut repair, "repair of planted paths");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let r = json(&o);
    let notes: Vec<&str> = r["lost"].as_array().unwrap().iter().map(|l| l["note"].as_str().unwrap()).collect();
    assert_eq!(notes.len(), 2, "{r}");
    assert!(notes.iter().any(|n| n.contains("/proc/uptime is on a filesystem of the kernel's own")), "{r}");
    assert!(notes.iter().any(|n| n.contains("is not a regular file now")), "{r}");
}

#[test]
fn marking_lost_never_writes_into_a_planted_hard_link_fifo_or_symlinked_metadata() {
    for plant in ["hard link", "fifo", "symlinked .hwc-backup"] {
        let env = Env::new();
        let (ids, rel) = two_damaged_snapshots(&env);
        write(&env.src.join(&rel), "changed since\n");
        // A victim outside the destination that parses as a lost list, and a directory.
        let victim = env.dir.path().join("victim.json");
        write(&victim, "[]\n");
        let victim_dir = env.dir.path().join("victim-dir");
        write(&victim_dir.join("lost.json"), "[]\n");
        let meta = env.host_dir().join(&ids[1]).join(".hwc-backup");
        match plant {
            "hard link" => std::fs::hard_link(&victim, meta.join("lost.json")).unwrap(),
            "fifo" => drop(sh(&format!("mkfifo '{}'", meta.join("lost.json").display()))),
            _ => {
                std::fs::rename(&meta, env.dir.path().join("meta-aside")).unwrap();
                std::os::unix::fs::symlink(&victim_dir, &meta).unwrap();
            }
        }
        let mut repair = env.cmd(&["repair", "--json"]);
        repair.args(env.target_args());
        let o = crate::verify::within_a_minute(&mut repair, plant);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "[]\n", "{plant}: {}", show(&o));
        assert_eq!(tree(&victim_dir), vec!["lost.json".to_string()], "{plant}");
        assert_eq!(std::fs::read_to_string(victim_dir.join("lost.json")).unwrap(), "[]\n", "{plant}");
        let r = json(&o);
        let in_lost = |id: &str| r["lost"].as_array().unwrap().iter().any(|l| l["snapshots"].to_string().contains(id));
        match plant {
            // Replaced by a rename: the snapshot's own list now names the file; the victim
            // keeps its content (it only lost one of its names).
            "hard link" => {
                assert_eq!(code(&o), 0, "{plant}: {}", show(&o));
                assert!(std::fs::read_to_string(meta.join("lost.json")).unwrap().contains("d/f"));
                assert!(in_lost(&ids[1]), "{r}");
            }
            "fifo" => {
                assert_eq!(code(&o), 1, "{plant}: {}", show(&o));
                assert!(r["failed"][0]["snapshots"].to_string().contains(&ids[1]), "{plant}: {r}");
            }
            // A snapshot whose metadata is a symlink is no snapshot at all: left out.
            _ => {
                assert_eq!(code(&o), 0, "{plant}: {}", show(&o));
                assert!(in_lost(&ids[0]) && !in_lost(&ids[1]), "{plant}: {r}");
            }
        }
    }
}

#[test]
fn repair_reads_no_live_file_outside_the_plans_sources() {
    // Whoever can write the disk plants, in a snapshot, a file at the path of a victim outside
    // the plan's sources with a manifest line of the victim's hash (a guess at a secret): the
    // next verify records it as damaged. With the plan, repair does not read the victim (it
    // would tell the disk whether the guess was right) and marks the file lost; the same
    // destination named without a plan reads any path, which is what makes the check needed.
    let env = Env::new();
    write(&env.src.join("d/f"), "good content\n");
    let victim = env.dir.path().join("victim/secret");
    write(&victim, "the secret\n");
    let mut plan = plan_json(&env);
    plan["retention"]["pruneAfterRun"] = false.into();
    let plan = write_plan(&env, "plan.json", &plan.to_string());
    let with_plan = |sub: &str, args: &[&str]| env.cmd(&[sub, "--config"]).arg(&plan).args(args).output().unwrap();
    let o = with_plan("now", &["--now", &date(1)]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let id = env.snapshot_ids().pop().unwrap();
    let root = env.host_dir().join(&id);
    let rel = victim.strip_prefix("/").unwrap();
    write(&root.join(rel), "the secreT\n");
    let manifest = root.join(".hwc-backup/manifest.b3");
    let lines = std::fs::read_to_string(&manifest).unwrap();
    let planted = format!("{}  {}", blake3::hash(b"the secret\n").to_hex(), rel.display());
    assert!(lines.lines().all(|l| l.split_once("  ").unwrap().1 < rel.to_str().unwrap()), "{lines}");
    std::fs::write(&manifest, format!("{lines}{planted}\n")).unwrap();
    let o = with_plan("verify", &[]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let o = with_plan("repair", &["--dry-run", "--json"]);
    let r = json(&o);
    assert_eq!(r["repaired"], serde_json::json!([]), "{r}");
    let note = r["lost"][0]["note"].as_str().unwrap();
    assert!(note.contains("below none of the plan's sources"), "{r}");
    // Without the plan, nothing limits the path: the victim answers.
    let o = env.run("repair", &["--dry-run", "--json"]);
    let r = json(&o);
    assert_eq!(r["repaired"][0]["note"], "source", "{r}");
}
