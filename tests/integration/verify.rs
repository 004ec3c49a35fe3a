//! Verify: a clean snapshot verifies; one flipped byte, a deleted file and an added file are
//! each found; `--sample` compares with the live source; a 5000-byte path and a Latin-1 name
//! verify (fd-relative) and damage to them is named, and `b3sum --check` checks the rest.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;

use crate::util::*;

fn snapshot(env: &Env) -> std::path::PathBuf {
    write(&env.src.join("a/one"), vec![5u8; 100_000]);
    write(&env.src.join("a/two"), "two\n");
    write(&env.src.join("b/three"), "three\n");
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    env.in_snapshot("daily/2025-01-15_02-00-00")
}

#[test]
fn clean_snapshot_verifies() {
    let env = Env::new();
    snapshot(&env);
    let out = env.run("verify", &["--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["filesChecked"], 3);
}

#[test]
fn finds_one_flipped_byte() {
    let env = Env::new();
    let snap = snapshot(&env);
    let victim = snap.join("a/one");
    // Flip one bit in place, keeping size and mtime, as bit rot would.
    let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&victim).unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(54_321)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(54_321)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let out = env.run("verify", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("changed:") && stdout.contains("a/one"), "{stdout}");
    assert!(!stdout.contains("a/two"), "only the damaged file is reported: {stdout}");
}

#[test]
fn finds_missing_and_unexpected_files() {
    let env = Env::new();
    let snap = snapshot(&env);
    std::fs::remove_file(snap.join("a/two")).unwrap();
    write(&snap.join("b/intruder"), "x");
    let out = env.run("verify", &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r[0]["missing"][0].as_str().unwrap().ends_with("a/two"), "{r}");
    assert!(r[0]["unexpected"][0].as_str().unwrap().ends_with("b/intruder"), "{r}");
}

#[test]
fn sample_compares_with_the_live_source() {
    let env = Env::new();
    let snap = snapshot(&env);
    let out = env.run("verify", &["--sample", "3", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["sampled"], 3);
    // A source edited after the snapshot is "changed since", not damage.
    write(&env.src.join("a/two"), "edited later\n");
    let out = env.run("verify", &["--sample", "3", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    // A source whose content changed while its mtime stayed put is what sampling exists
    // for: the quick check would link the stale copy forever.
    let three = env.src.join("b/three");
    let mtime = std::fs::metadata(&three).unwrap().modified().unwrap();
    std::fs::write(&three, "THREE\n").unwrap();
    std::fs::File::options().write(true).open(&three).unwrap().set_modified(mtime).unwrap();
    let _ = snap;
    let out = env.run("verify", &["--sample", "3", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r[0]["sampleMismatches"].to_string().contains("b/three"), "{r}");
}

/// A 5000-byte path, a Latin-1 (non-UTF-8) name, and names with a backslash and a newline.
/// Returns the long file's path relative to the source. It is built by python3 one `chdir` at
/// a time, because the path itself is longer than `PATH_MAX`.
fn awkward_names(env: &Env) -> String {
    require("python3");
    let long = format!("{}long.txt", format!("{}/", "d".repeat(249)).repeat(20));
    assert!(long.len() > 5000, "the path is longer than 5000 bytes");
    python(&format!(
        "import os\nos.chdir({src:?})\nfor i in range(20):\n    os.mkdir('d' * 249)\n    os.chdir('d' * 249)\n\
         open('long.txt', 'wb').write(bytes([7]) * 10000)\nos.utime('long.txt', (1e9, 1e9))\n",
        src = s(&env.src)
    ));
    write(&env.src.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")), "latin-1\n");
    write(&env.src.join("back\\slash"), "backslash\n");
    write(&env.src.join("new\nline"), "newline\n");
    long
}

fn python(script: &str) {
    let o = std::process::Command::new("python3").args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "python3 failed: {}", show(&o));
}

/// Flips one byte of `dir/rel` (any length), keeping size and mtime, as bit rot would.
fn flip_byte_deep(dir: &std::path::Path, rel: &str) {
    let (dirs, name) = rel.rsplit_once('/').unwrap();
    python(&format!(
        "import os\nos.chdir({dir:?})\nfor c in {dirs:?}.split('/'):\n    os.chdir(c)\n\
         st = os.stat({name:?})\nf = open({name:?}, 'r+b')\nf.seek(4321)\nb = f.read(1)\nf.seek(4321)\n\
         f.write(bytes([b[0] ^ 1]))\nf.close()\nos.utime({name:?}, ns=(st.st_atime_ns, st.st_mtime_ns))\n",
        dir = s(dir)
    ));
}

#[test]
fn long_paths_and_non_utf8_names_verify_and_b3sum_checks_what_it_can() {
    require("b3sum");
    let env = Env::new();
    let long = awkward_names(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let out = env.run("verify", &["--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["filesChecked"], 4, "{r}");

    // b3sum, run the way the README says. It checks the backslash and newline names. The
    // Latin-1 name is escaped as `\xe9`, which b3sum reports as an invalid escape on that one
    // line (b3sum cannot name a non-UTF-8 file at all: it writes U+FFFD and refuses to check
    // that), and the 5000-byte path fails in b3sum's own open() with ENAMETOOLONG. Every other
    // line is still checked.
    let snap = env.host_dir().join("daily/2025-01-15_02-00-00");
    let b3 = std::process::Command::new("b3sum")
        .args(["--check", ".hwc-backup/manifest.b3"])
        .current_dir(&snap)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&b3.stdout), String::from_utf8_lossy(&b3.stderr));
    assert!(stdout.contains("back\\\\slash: OK"), "{}", show(&b3));
    assert!(stdout.contains("new\\nline: OK"), "{}", show(&b3));
    assert!(stdout.contains("long.txt: FAILED (File name too long"), "{}", show(&b3));
    assert_eq!(stderr.matches("Invalid backslash escape").count(), 1, "only the Latin-1 line: {}", show(&b3));
    assert_eq!(stdout.matches(": OK").count(), 2, "{}", show(&b3));
    let manifest = std::fs::read(snap.join(".hwc-backup/manifest.b3")).unwrap();
    assert!(manifest.windows(10).any(|w| w == b"caf\\xe9.tx"), "the Latin-1 byte is escaped, not lost");

    // Damage deep down is found and named.
    flip_byte_deep(&env.in_snapshot("daily/2025-01-15_02-00-00"), &long);
    let out = env.run("verify", &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["changed"].as_array().unwrap().len(), 1, "{r}");
    let changed = r[0]["changed"][0].as_str().unwrap();
    assert!(changed.ends_with(&long), "names the damaged file: {r}");
    assert!(r[0]["missing"].as_array().unwrap().is_empty(), "{r}");

    // A damaged Latin-1 file is found too, and the text report names it.
    let latin = env.in_snapshot("daily/2025-01-15_02-00-00").join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    let mtime = std::fs::metadata(&latin).unwrap().modified().unwrap();
    std::fs::write(&latin, "LATIN-1\n").unwrap();
    std::fs::File::options().write(true).open(&latin).unwrap().set_modified(mtime).unwrap();
    let out = env.run("verify", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("changed: ") && stdout.contains("caf\u{fffd}.txt"), "{stdout}");
}

#[test]
fn a_manifest_replaced_by_a_symlink_is_refused_not_followed() {
    // Whoever can write the backup disk replaces a snapshot's manifest with a symlink to a
    // file of the server: verify must refuse it, naming it, and never read the victim.
    let env = Env::new();
    snapshot(&env);
    let meta = env.host_dir().join("daily/2025-01-15_02-00-00/.hwc-backup");
    let victim = env.dir.path().join("victim.b3");
    write(&victim, format!("{}  secret/path\n", "0".repeat(64)));
    std::fs::rename(meta.join("manifest.b3"), meta.join("manifest.b3.orig")).unwrap();
    std::os::unix::fs::symlink(&victim, meta.join("manifest.b3")).unwrap();
    let before = std::fs::read(&victim).unwrap();
    let out = env.run("verify", &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = show(&out);
    assert!(text.contains(&format!("{}: is a symlink to", s(&meta.join("manifest.b3")))), "{text}");
    assert!(!text.contains("secret/path"), "the victim was read as a manifest: {text}");
    assert_eq!(std::fs::read(&victim).unwrap(), before);
}

#[test]
fn a_name_replaced_by_a_symlink_or_fifo_is_missing_and_never_followed() {
    // In the older of two snapshots (whose files the newer one shares as hard links), a file
    // and a directory are replaced by symlinks to copies outside with the very same content,
    // and another file by a FIFO: following a symlink would find the content the manifest
    // expects and call it clean, opening the FIFO would hang. Each is missing instead; the
    // copies outside are untouched and the newer snapshot is clean.
    let env = Env::new();
    let old = snapshot(&env);
    write(&env.src.join("c/four"), "four\n");
    env.snapshot_ok("2025-01-16T02:00:00+01:00", &[]);
    let outside = env.dir.path().join("outside");
    write(&outside.join("one"), vec![5u8; 100_000]);
    write(&outside.join("b/three"), "three\n");
    std::fs::remove_file(old.join("a/one")).unwrap();
    std::os::unix::fs::symlink(outside.join("one"), old.join("a/one")).unwrap();
    std::fs::remove_dir_all(old.join("b")).unwrap();
    std::os::unix::fs::symlink(outside.join("b"), old.join("b")).unwrap();
    std::fs::remove_file(old.join("a/two")).unwrap();
    sh(&format!("mkfifo '{}'", old.join("a/two").display()));
    let before = (std::fs::read(outside.join("one")).unwrap(), std::fs::read(outside.join("b/three")).unwrap());
    let out = env.run("verify", &["--all", "--json"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing: Vec<String> = r[0]["missing"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().into()).collect();
    let src = s(&env.src);
    assert_eq!(missing, [format!("{src}/a/one"), format!("{src}/a/two"), format!("{src}/b/three")], "{r}");
    assert_eq!(r[0]["changed"], serde_json::json!([]), "{r}");
    assert_eq!(r[1]["snapshot"], "daily/2025-01-16_02-00-00", "{r}");
    assert_eq!(
        (r[1]["missing"].clone(), r[1]["filesChecked"].clone()),
        (serde_json::json!([]), serde_json::json!(4)),
        "{r}"
    );
    assert_eq!((std::fs::read(outside.join("one")).unwrap(), std::fs::read(outside.join("b/three")).unwrap()), before);
}

#[test]
fn a_manifest_damaged_early_or_late_is_an_error_not_a_hang() {
    // A tree of 6 000 files (more than the manifest's parser runs ahead of the walk) whose
    // manifest has an unreadable line near its start, or near its end: verify reports the
    // manifest as damaged and ends, whichever thread meets the damage first.
    let env = Env::new();
    many_small_files(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let manifest = env.host_dir().join("daily/2025-01-15_02-00-00/.hwc-backup/manifest.b3");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    assert!(lines.len() >= 6000, "{}", lines.len());
    for at in [1, lines.len() - 10] {
        let mut damaged = lines.clone();
        damaged[at] = "not a manifest line";
        std::fs::write(&manifest, damaged.join("\n") + "\n").unwrap();
        let what = format!("verify of a manifest damaged at line {}", at + 1);
        let out = within_a_minute(env.cmd(&["verify"]).args(env.target_args()), &what);
        assert_eq!(code(&out), 1, "{}", show(&out));
        assert!(show(&out).contains(&format!("line {} is not", at + 1)), "{}", show(&out));
    }
    std::fs::write(&manifest, good).unwrap();
    let out = env.run("verify", &[]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn a_walk_that_fails_midway_is_an_error_not_a_hang() {
    // The walk fails on a directory it cannot open (verify run as an unprivileged user, one
    // directory of the snapshot mode 000) while thousands of manifest entries are still
    // unread: verify names the directory and ends instead of waiting on its own threads.
    let env = Env::new();
    many_small_files(&env);
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    let locked = env.in_snapshot("daily/2025-01-15_02-00-00").join("d10");
    sh(&format!("chmod -R a+rX '{}' '{}'", env.dir.path().display(), env.dest.display()));
    sh(&format!("chmod 000 '{}'", locked.display()));
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .arg("verify")
        .args(env.target_args());
    let out = within_a_minute(&mut cmd, "verify of a walk that fails");
    sh(&format!("chmod 755 '{}'", locked.display()));
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/d10: Permission denied"), "{err}");
    assert_eq!(err.matches("Permission denied").count(), 1, "the cause once: {err}");
}

/// 60 directories of 100 small files: a manifest longer than its parser runs ahead of the walk.
fn many_small_files(env: &Env) {
    for d in 0..60 {
        for f in 0..100 {
            write(&env.src.join(format!("d{d:02}/f{f:03}")), format!("{d} {f}\n"));
        }
    }
}

/// Runs `cmd` to its end, or kills it after a minute and fails the test: `what` hung.
pub(crate) fn within_a_minute(cmd: &mut std::process::Command, what: &str) -> std::process::Output {
    let started = std::time::Instant::now();
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("{what} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}
