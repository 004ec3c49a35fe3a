//! Crashes, a full destination and the writer lock.
//!
//! - Interrupted runs: `kill -9` of `hwc-backup now` at several moments (the very first run;
//!   fixed delays after start; when its work directory appears, when its manifest grows, while
//!   it copies big files). Each time every earlier snapshot and `latest` are intact and verify
//!   clean, nothing half-written is visible under a tier, and the next run succeeds and
//!   reports the leftover it cleaned up.
//! - A destination that fills up mid-run (a tmpfs with a size limit, and one with an inode
//!   limit that hard links exhaust): the run fails with "No space left" and the path, earlier
//!   snapshots stay and verify clean, no work in progress or trash is left, the space is
//!   given back, and once the source is small again a new run succeeds.
//! - The lock: while one run holds it (a real run, or `flock(1)`), another exits 4 naming the
//!   holder and touches nothing.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::util::*;

const LOCKED: i32 = 4;

/// The testing clock of run number `day` (each run its own day, so names never collide and
/// retention keeps every snapshot) and the snapshot name it produces.
fn clock(day: u32) -> (String, String) {
    (format!("2025-03-{day:02}T02:00:00Z"), format!("2025-03-{day:02}_02-00-00"))
}

/// A small deterministic generator (xorshift64*), so big files are the same on every run
/// and do not compress.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes `size` pseudo-random bytes from `seed` to `path`: one generated MiB, repeated with
/// the MiB's number stamped into it (unoptimised test code generates slowly).
fn big_file(path: &Path, seed: u64, size: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(seed | 1);
    let mut chunk = vec![0u8; 1 << 20];
    for w in chunk.chunks_exact_mut(8) {
        w.copy_from_slice(&rng.next().to_le_bytes());
    }
    let mut left = size;
    let mut n_chunk = 0u64;
    while left > 0 {
        chunk[..8].copy_from_slice(&n_chunk.to_le_bytes());
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
        n_chunk += 1;
    }
    f.flush().unwrap();
}

/// `dirs` directories of `files` small files each (16 B … 4 KiB, content from their names).
fn small_files(root: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            let line = format!("dir {d} file {f}\n");
            let reps = 1 + (d * files + f) * 37 % 4000 / line.len();
            std::fs::write(dir.join(format!("f{f:02}.txt")), line.repeat(reps)).unwrap();
        }
    }
}

const DIRS: usize = 400;
const FILES_PER_DIR: usize = 50;
const BIG_FILES: u64 = 3;
const BIG_SIZE: usize = 20 << 20;

/// The large tree: 20 000 small files in 400 directories, and three 20 MiB files in `zz-big/`
/// (last in walk order, so they are copied late in a run).
fn large_tree(root: &Path) {
    small_files(root, DIRS, FILES_PER_DIR);
    for i in 0..BIG_FILES {
        big_file(&root.join(format!("zz-big/b{i}.bin")), 1000 + i, BIG_SIZE);
    }
}

/// Gives every regular file below `root` the mtime `t`.
fn touch_all(root: &Path, t: SystemTime) {
    for rel in tree(root) {
        let p = root.join(rel);
        if p.symlink_metadata().unwrap().is_file() {
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        }
    }
}

/// Edits between snapshots: rewrite the big files and a few small ones, add and delete some.
/// With `touch_everything`, every file also gets a new mtime, so that the next run has to copy
/// all of it (and lasts long enough to be interrupted after a fixed delay).
fn edit(root: &Path, round: u64, touch_everything: bool) {
    for i in 0..BIG_FILES {
        big_file(&root.join(format!("zz-big/b{i}.bin")), round * 100 + i, BIG_SIZE);
    }
    for d in 0..10 {
        write(&root.join(format!("d{d:03}/f00.txt")), format!("edited in round {round}\n"));
    }
    for f in 0..20 {
        write(&root.join(format!("new-{round}/n{f}.txt")), format!("new file {f} of round {round}\n"));
    }
    for d in 390..DIRS {
        let _ = std::fs::remove_file(root.join(format!("d{d:03}/f{:02}.txt", 40 + round)));
    }
    if touch_everything {
        touch_all(root, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + round * 86_400));
    }
}

/// Starts `hwc-backup now` on the env's source at clock `when` (no pruning: every snapshot
/// made here must stay).
fn spawn_now(env: &Env, when: &str) -> Child {
    let mut args: Vec<String> = vec!["now".into(), "--source".into(), s(&env.src)];
    args.extend(env.target_args());
    args.extend(["--now".into(), when.into(), "--no-prune".into()]);
    env.cmd(&[]).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start hwc-backup")
}

/// When to kill a run.
enum Moment {
    /// This long after it started.
    After(Duration),
    /// As soon as this path exists.
    Exists(PathBuf),
    /// As soon as this file holds at least this many bytes.
    AtLeast(PathBuf, u64),
}

impl Moment {
    fn describe(&self) -> String {
        match self {
            Moment::After(d) => format!("{} ms after the start", d.as_millis()),
            Moment::Exists(p) => format!("when {} appears", p.display()),
            Moment::AtLeast(p, n) => format!("when {} reaches {n} bytes", p.display()),
        }
    }
}

/// Waits for the moment; fails if the run ends first (the tree would then be too small to
/// interrupt this run on this machine, and the test would test nothing).
fn wait_for(child: &mut Child, m: &Moment) {
    let start = Instant::now();
    loop {
        let reached = match m {
            Moment::After(d) => start.elapsed() >= *d,
            Moment::Exists(p) => p.symlink_metadata().is_ok(),
            Moment::AtLeast(p, n) => std::fs::metadata(p).is_ok_and(|md| md.len() >= *n),
        };
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            panic!("the run ended ({status}) before the moment to kill it ({}); output:\n{out}", m.describe());
        }
        if reached {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting {}", m.describe());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `kill -9` and reap; asserts the signal is what ended it.
fn kill9(mut child: Child, what: &str) {
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{what}: the run was not ended by SIGKILL (did it finish first?)\n{}",
        show(&out)
    );
}

/// Names in `<host>/DIR` (empty when it does not exist), sorted.
fn entries(env: &Env, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(env.host_dir().join(dir)) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Every earlier snapshot and `latest` are intact and nothing else is visible:
/// the tiers hold exactly `ids`, each with its metadata, `latest` points at the newest, the
/// host directory holds nothing unexpected, and `verify --all` finds every snapshot clean.
fn assert_intact(env: &Env, ids: &[String], what: &str) {
    assert_eq!(env.snapshot_ids(), ids, "{what}: the snapshots under the tiers are not the earlier ones");
    let latest = env.host_dir().join("latest");
    match ids.last() {
        Some(newest) => assert_eq!(
            std::fs::read_link(&latest).unwrap_or_else(|e| panic!("{what}: latest: {e}")),
            PathBuf::from(newest),
            "{what}: latest moved"
        ),
        None => assert!(latest.symlink_metadata().is_err(), "{what}: latest exists without any snapshot"),
    }
    for id in ids {
        for f in ["meta.json", "manifest.b3"] {
            let p = env.host_dir().join(id).join(".hwc-backup").join(f);
            assert!(p.is_file(), "{what}: {} is missing", p.display());
        }
    }
    for name in entries(env, ".") {
        assert!(
            ["daily", "latest", ".incomplete", ".trash", ".lock"].contains(&name.as_str()),
            "{what}: unexpected {name} in the host directory: {:?}",
            tree(&env.host_dir()).iter().filter(|p| !p.contains('/') || p.matches('/').count() < 3).collect::<Vec<_>>()
        );
    }
    if ids.is_empty() {
        let o = env.run("verify", &[]);
        assert_eq!(code(&o), 1, "{what}: verify without snapshots: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("no complete snapshot"), "{what}: {}", show(&o));
        return;
    }
    let o = env.run("verify", &["--all"]);
    assert_eq!(code(&o), 0, "{what}: verify --all: {}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for id in ids {
        assert!(stdout.contains(&format!("{id}: OK")), "{what}: verify did not report {id} clean: {}", show(&o));
    }
}

/// The run after a crash: it succeeds, names every leftover it cleaned up (in its JSON report,
/// or in its text output), and leaves neither work in progress nor trash. Returns the new id.
fn recover(env: &Env, day: u32, json: bool, what: &str) -> String {
    let leftovers = entries(env, ".incomplete");
    let (when, name) = clock(day);
    let extra: &[&str] = if json { &["--no-prune", "--json"] } else { &["--no-prune"] };
    let o = env.snapshot_at(&when, extra);
    assert_eq!(code(&o), 0, "{what}: the run after the crash failed: {}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    if json {
        let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(r["state"], "success", "{what}: {stdout}");
        assert_eq!(r["snapshot"], format!("daily/{name}"), "{what}: {stdout}");
        let mut cleaned: Vec<String> =
            r["cleanedUp"].as_array().expect("cleanedUp").iter().map(|v| v.as_str().unwrap().to_string()).collect();
        cleaned.sort();
        assert_eq!(cleaned, leftovers, "{what}: cleanedUp does not name the leftovers");
    } else {
        for l in &leftovers {
            assert!(
                stdout.contains(&format!("cleaned up the leftover of an interrupted run: {l}")),
                "{what}: the output does not name the leftover {l}: {}",
                show(&o)
            );
        }
    }
    assert_eq!(entries(env, ".incomplete"), Vec::<String>::new(), "{what}: work in progress left behind");
    assert_eq!(entries(env, ".trash"), Vec::<String>::new(), "{what}: trash left behind");
    format!("daily/{name}")
}

/// Progress lines with the time since the test started (shown when it fails, and with
/// `--nocapture`), to tell a slow machine from a hung run.
struct Steps(Instant);

impl Steps {
    fn log(&self, what: &str) {
        eprintln!("[{:6.1} s] {what}", self.0.elapsed().as_secs_f64());
    }
}

#[test]
fn interrupted_runs_leave_earlier_snapshots_intact() {
    let steps = Steps(Instant::now());
    let env = Env::on_tmpfs();
    large_tree(&env.src);
    steps.log("tree generated");
    let work = |name: &str| env.host_dir().join(".incomplete").join(name);
    let manifest = |name: &str| work(name).join(".hwc-backup/manifest.b3");
    let mut ids: Vec<String> = Vec::new();

    // The very first run, killed half-way: no snapshot, no `latest`, nothing under a tier.
    let (when, name) = clock(1);
    let mut child = spawn_now(&env, &when);
    wait_for(&mut child, &Moment::AtLeast(manifest(&name), 64 << 10));
    kill9(child, "first run");
    assert_eq!(entries(&env, ".incomplete"), [name], "the killed run's work should be in .incomplete");
    assert_intact(&env, &ids, "first run killed");
    steps.log("first run killed");
    let t0 = Instant::now();
    ids.push(recover(&env, 2, true, "after the first run was killed"));
    // How long a run that copies the whole tree takes here: the fixed delays below must fall
    // inside such a run also on a machine much faster than the one they were chosen on.
    let full_run = t0.elapsed();
    assert_intact(&env, &ids, "after recovery");
    steps.log(&format!("first snapshot taken in {:.1} s", full_run.as_secs_f64()));

    // Fixed delays after the start (before, during and after taking the lock and cleaning up
    // the predecessor's leftover, and during the build), then a moment deep in the build.
    // Every file has changed, so each of these runs copies the whole tree.
    edit(&env.src, 1, true);
    let mut killed = Vec::new();
    let delay = |ms: u64| Moment::After(Duration::from_millis(ms).min(full_run.mul_f64(0.6)));
    let moments = [delay(50), delay(200), delay(600), Moment::AtLeast(manifest(&clock(6).1), 256 << 10)];
    for (i, moment) in moments.iter().enumerate() {
        let (when, name) = clock(3 + i as u32);
        let mut child = spawn_now(&env, &when);
        wait_for(&mut child, moment);
        if matches!(moment, Moment::AtLeast(..)) {
            // While it builds, a second run is refused, names the holder, and does not touch
            // the holder's work in progress.
            let o = env.snapshot_at(&clock(20).0, &["--no-prune"]);
            assert_eq!(code(&o), LOCKED, "a second run during a build: {}", show(&o));
            let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(t.contains("locked"), "{}", show(&o));
            assert!(t.contains(&format!("pid {}", child.id())), "the message does not name the holder: {}", show(&o));
            assert!(work(&name).is_dir(), "the refused run removed the holder's work in progress");
            assert!(child.try_wait().unwrap().is_none(), "the build ended while the second run was tried");
        }
        let what = format!("killed {}", moment.describe());
        kill9(child, &what);
        killed.push(name);
        assert_intact(&env, &ids, &what);
        // Leftovers are only those of killed runs (a run cleans up its predecessor's).
        for l in entries(&env, ".incomplete") {
            assert!(killed.contains(&l), "{what}: unexpected leftover {l}");
        }
        steps.log(&what);
    }
    ids.push(recover(&env, 7, false, "after the runs killed after a delay"));
    assert_intact(&env, &ids, "after recovery");
    steps.log("second snapshot taken");

    // Moments read off the filesystem, on a run that links most files and copies the big
    // ones at the end.
    edit(&env.src, 2, false);
    let big = |name: &str| work(name).join(env.src.strip_prefix("/").unwrap()).join("zz-big/b1.bin");
    for (day, moment) in [(8, Moment::Exists(work(&clock(8).1))), (9, Moment::Exists(big(&clock(9).1)))] {
        let (when, name) = clock(day);
        let mut child = spawn_now(&env, &when);
        wait_for(&mut child, &moment);
        let what = format!("killed {}", moment.describe());
        kill9(child, &what);
        assert!(entries(&env, ".incomplete").contains(&name), "{what}: its work is not in .incomplete");
        assert_intact(&env, &ids, &what);
        steps.log(&what);
    }
    ids.push(recover(&env, 11, true, "after the runs killed at filesystem moments"));
    assert_intact(&env, &ids, "at the end");

    // The final snapshot holds the edited source, and links what did not change.
    let last = env.in_snapshot(ids.last().unwrap());
    for rel in ["zz-big/b1.bin", "d000/f00.txt", "new-2/n3.txt", "d200/f20.txt"] {
        assert!(std::fs::read(last.join(rel)).unwrap() == std::fs::read(env.src.join(rel)).unwrap(), "{rel} differs");
    }
    let prev = env.in_snapshot(&ids[1]);
    assert_eq!(ino(&prev.join("d200/f20.txt")), ino(&last.join("d200/f20.txt")), "an unchanged file was not linked");
    let o = env.run("verify", &["--sample", "200"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    steps.log("done");
}

/// A full destination mid-run: the run fails with the cause and the path, earlier snapshots
/// stay and verify clean, nothing is left behind, and once the source fits again a run works.
#[test]
fn full_destination_mid_run_fails_cleanly() {
    let env = Env::new();
    small_files(&env.src, 10, 20);
    big_file(&env.src.join("data/base.bin"), 7, 16 << 20);
    let _fs = Mount::tmpfs(&env.dest, "size=64m");
    let mut ids = vec![];
    let (when, name) = clock(1);
    env.snapshot_ok(&when, &["--no-prune"]);
    ids.push(format!("daily/{name}"));
    let free_before = avail_bytes(&env.dest);

    // Grow the source past what is left: a new 60 MiB file, and more behind it.
    big_file(&env.src.join("grow/huge.bin"), 8, 60 << 20);
    small_files(&env.src.join("grow/zz-after"), 3, 10);
    for json in [false, true] {
        let (when, _) = clock(if json { 3 } else { 2 });
        let extra: &[&str] = if json { &["--no-prune", "--json"] } else { &["--no-prune"] };
        let o = env.snapshot_at(&when, extra);
        assert_eq!(code(&o), 1, "a run into a full destination must fail: {}", show(&o));
        let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(t.contains("No space left"), "the message does not give the cause: {}", show(&o));
        assert!(t.contains("huge.bin"), "the message does not name the path: {}", show(&o));
        if json {
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(r["state"], "failed");
            assert!(r["snapshot"].is_null(), "{r}");
        } else {
            assert!(t.contains("nothing was published"), "{}", show(&o));
        }
        assert_intact(&env, &ids, "after the full destination");
        assert_eq!(entries(&env, ".incomplete"), Vec::<String>::new(), "work in progress left on a full disk");
        assert_eq!(entries(&env, ".trash"), Vec::<String>::new(), "trash left on a full disk");
        let free_after = avail_bytes(&env.dest);
        assert!(
            free_after + (256 << 10) >= free_before,
            "the failed run did not give the space back: {free_before} free before, {free_after} after"
        );
    }

    // Free the source again: the next run succeeds, links what it can, and verifies.
    std::fs::remove_dir_all(env.src.join("grow")).unwrap();
    let (when, name) = clock(4);
    env.snapshot_ok(&when, &["--no-prune"]);
    ids.push(format!("daily/{name}"));
    assert_intact(&env, &ids, "after the source shrank again");
    let a = env.in_snapshot(&ids[0]).join("data/base.bin");
    let b = env.in_snapshot(&ids[1]).join("data/base.bin");
    assert_eq!(ino(&a), ino(&b), "the unchanged file should be linked, not copied");
}

/// Inodes in use at `path`.
fn inodes_used(path: &Path) -> u64 {
    let out = sh(&format!("df --output=iused '{}' | tail -n 1", path.display()));
    out.trim().parse().unwrap_or_else(|e| panic!("df output {out:?}: {e}"))
}

/// The same, when the destination runs out of inodes rather than bytes: on tmpfs every hard
/// link takes one, so a second snapshot of an unchanged tree cannot fit. The failed run must
/// give back what it took, or the leftover keeps the disk full and every later run fails.
#[test]
fn destination_out_of_inodes_fails_cleanly() {
    let env = Env::new();
    small_files(&env.src, 10, 30);
    let _fs = Mount::tmpfs(&env.dest, "size=64m");
    let (when, name) = clock(1);
    env.snapshot_ok(&when, &["--no-prune"]);
    let mut ids = vec![format!("daily/{name}")];
    // Room for about half a snapshot more.
    let used = inodes_used(&env.dest);
    sh(&format!("mount -o remount,nr_inodes={} '{}'", used + 150, s(&env.dest)));

    for day in [2, 3] {
        let (when, _) = clock(day);
        let o = env.snapshot_at(&when, &["--no-prune"]);
        assert_eq!(code(&o), 1, "a run into a destination without inodes must fail: {}", show(&o));
        let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(t.contains("No space left"), "the message does not give the cause: {}", show(&o));
        assert!(t.contains(&s(&env.dest)), "the message does not name the path: {}", show(&o));
        assert!(
            t.contains(".incomplete/2025-03-"),
            "the run failed before its build (on the previous run's leftover?): {}",
            show(&o)
        );
        assert_intact(&env, &ids, "after running out of inodes");
        assert_eq!(entries(&env, ".incomplete"), Vec::<String>::new(), "work in progress left behind");
        assert_eq!(entries(&env, ".trash"), Vec::<String>::new(), "trash left behind");
        assert!(inodes_used(&env.dest) <= used + 2, "the failed run kept its inodes: {used} before");
    }

    // A source that fits again (a third of it; a shrink that must be allowed explicitly).
    for d in 0..7 {
        std::fs::remove_dir_all(env.src.join(format!("d{d:03}"))).unwrap();
    }
    let (when, name) = clock(4);
    env.snapshot_ok(&when, &["--no-prune", "--allow-shrink"]);
    ids.push(format!("daily/{name}"));
    assert_intact(&env, &ids, "after the source shrank");
}

/// A plan whose preBackup hook signals `ready` and then waits for `go`: a run that holds the
/// lock for exactly as long as the test wants.
fn plan_with_waiting_hook(env: &Env) -> (PathBuf, PathBuf, PathBuf) {
    let ready = env.dir.path().join("ready");
    let go = env.dir.path().join("go");
    let hook = env.dir.path().join("pre-backup");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ntouch '{}'\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n",
            s(&ready),
            s(&go)
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = plan_json(env);
    p["hooks"]["preBackup"] = serde_json::json!(s(&hook));
    p["retention"]["pruneAfterRun"] = serde_json::json!(false);
    (write_plan(env, "plan.json", &p.to_string()), ready, go)
}

fn wait_until_exists(p: &Path, child: &mut Child) {
    let start = Instant::now();
    while !p.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the holder ended before it took the lock");
        assert!(start.elapsed() < Duration::from_secs(30), "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn second_run_is_refused_while_a_run_holds_the_lock() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let (plan, ready, go) = plan_with_waiting_hook(&env);
    let (when, name) = clock(1);
    let mut holder = env
        .cmd(&["now", "--config"])
        .arg(&plan)
        .args(["--now", &when])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_exists(&ready, &mut holder);
    let before = tree(&env.dest);
    let o: Output = env.snapshot_at(&clock(2).0, &["--no-prune"]);
    assert_eq!(code(&o), LOCKED, "{}", show(&o));
    let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(t.contains("locked by another run"), "{}", show(&o));
    assert!(t.contains(&format!("pid {}", holder.id())), "the message does not name the holder: {}", show(&o));
    assert!(t.contains(&s(&env.host_dir().join(".lock"))), "the message does not name the lock: {}", show(&o));
    assert_eq!(tree(&env.dest), before, "the refused run changed the destination");
    // `prune` takes the same lock.
    let o = env.run("prune", &[]);
    assert_eq!(code(&o), LOCKED, "{}", show(&o));

    std::fs::write(&go, "").unwrap();
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "the holder: {}", show(&out));
    assert_eq!(env.snapshot_ids(), [format!("daily/{name}")]);
}

#[test]
fn second_run_is_refused_while_flock_holds_the_lock() {
    require("flock");
    let env = Env::new();
    write(&env.src.join("a"), "a");
    std::fs::create_dir_all(env.host_dir()).unwrap();
    let lock = env.host_dir().join(".lock");
    std::fs::write(&lock, "the integration test's flock(1)").unwrap();
    let ready = env.dir.path().join("ready");
    let go = env.dir.path().join("go");
    let script = format!(
        "touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        s(&ready),
        s(&go)
    );
    let mut holder = std::process::Command::new("flock").arg(&lock).args(["sh", "-c", &script]).spawn().unwrap();
    wait_until_exists(&ready, &mut holder);
    let before = tree(&env.dest);
    let o = env.snapshot_at(&clock(1).0, &["--no-prune"]);
    assert_eq!(code(&o), LOCKED, "{}", show(&o));
    let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(t.contains("the integration test's flock(1)"), "the message does not name the holder: {}", show(&o));
    assert_eq!(tree(&env.dest), before, "the refused run changed the destination");
    std::fs::write(&go, "").unwrap();
    assert!(holder.wait().unwrap().success());
    // Released: the next run works.
    env.snapshot_ok(&clock(2).0, &["--no-prune"]);
}
