//! Verify: a clean snapshot verifies; one flipped byte, a deleted file and an added file are
//! each found; `--sample` compares with the live source.

use std::io::{Read, Seek, SeekFrom, Write};

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
