//! Cloud push with the real rclone, to a local-directory remote and to a remote served by
//! `rclone serve sftp` on 127.0.0.1: after three snapshots with edits the remote equals the
//! newest snapshot, replaced and deleted files are in the history folder, the bandwidth limit
//! reaches rclone, the empty-snapshot guard refuses, and a broken remote fails the run with a
//! clear message while the local snapshot stays.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const TIMES: [&str; 3] = ["2025-01-13T02:00:00+01:00", "2025-01-14T02:00:00+01:00", "2025-01-15T02:00:00+01:00"];
const NAMES: [&str; 3] = ["2025-01-13_02-00-00", "2025-01-14_02-00-00", "2025-01-15_02-00-00"];

/// `rclone serve sftp DIR` on a free loopback port (user `hwc`, password `pw-for-test`),
/// stopped on drop. SFTP keeps modification times, so rclone's quick check works as it does
/// against real cloud remotes.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    fn start(dir: &Path, cache: &Path) -> Served {
        require("rclone");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("rclone")
            .args(["serve", "sftp"])
            .arg(dir)
            .args(["--addr", &format!("127.0.0.1:{port}"), "--user", "hwc", "--pass", "pw-for-test"])
            .args(["--config", "/dev/null", "--cache-dir"])
            .arg(cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "rclone serve sftp did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Served { child, port }
    }

    /// The rclone config section `[served]` for this server.
    fn config(&self) -> String {
        let obscured = sh("rclone obscure pw-for-test");
        format!(
            "[served]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = hwc\npass = {}\n",
            self.port,
            obscured.trim()
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plan pushing to `remote` with the given rclone config.
fn cloud_plan(env: &Env, remote: &str, conf: &str, bwlimit: Option<&str>) -> PathBuf {
    let conf_path = env.dir.path().join("rclone.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut p = plan_json(env);
    p["cloud"] = serde_json::json!({
        "enable": true, "remote": remote, "syncMode": "sync", "bandwidthLimit": bwlimit,
        "rcloneConfigFile": s(&conf_path), "rclone": null, "keepHistory": 30, "maxAge": "7d",
    });
    write_plan(env, "plan.json", &p.to_string())
}

fn now(env: &Env, plan: &Path, when: &str, extra: &[&str]) -> std::process::Output {
    env.cmd(&["now", "--config"]).arg(plan).args(["--now", when]).args(extra).output().unwrap()
}

/// Every entry under `dir` as `path -> content` (`<dir>` for directories, `-> target` for
/// symlinks, which rclone stores as `NAME.rclonelink` files holding the target).
fn listing(dir: &Path, remote: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rel in tree(dir) {
        let p = dir.join(&rel);
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.push((rel, "<dir>".into()));
        } else if md.file_type().is_symlink() {
            out.push((rel, format!("-> {}", std::fs::read_link(&p).unwrap().display())));
        } else if remote && rel.ends_with(".rclonelink") {
            let target = std::fs::read_to_string(&p).unwrap();
            out.push((rel.trim_end_matches(".rclonelink").to_string(), format!("-> {target}")));
        } else {
            out.push((rel, String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()));
        }
    }
    out.sort();
    out
}

fn assert_remote_equals(env: &Env, remote_current: &Path, id: &str) {
    let snap = env.host_dir().join(id);
    assert_eq!(listing(remote_current, true), listing(&snap, false), "remote differs from {id}");
}

/// rclone's quick check compares size and modification time, which many remotes (SFTP among
/// them) keep to the second; runs of a test follow each other within one, and a snapshot's
/// metadata files often keep their size, so the test lets the clock move on as it would
/// between real runs.
fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Three snapshots with edits; after each push the remote equals the newest snapshot and
/// the history folder holds what the push replaced or deleted. Returns the plan.
fn three_pushes(env: &Env, plan: &Path, current: &Path, history: &Path) {
    write(&env.src.join("doc.txt"), "version 1\n");
    write(&env.src.join("gone.txt"), "deleted in 2\n");
    write(&env.src.join("sub/keep.txt"), "unchanged\n");
    std::fs::create_dir_all(env.src.join("empty")).unwrap();
    std::os::unix::fs::symlink("doc.txt", env.src.join("link")).unwrap();
    let out = now(env, plan, TIMES[0], &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cloud: pushed daily/"), "{}", show(&out));
    assert_remote_equals(env, current, &format!("daily/{}", NAMES[0]));

    settle();
    write(&env.src.join("doc.txt"), "version 2, longer\n");
    std::fs::remove_file(env.src.join("gone.txt")).unwrap();
    write(&env.src.join("new.txt"), "added in 2\n");
    let out = now(env, plan, TIMES[1], &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_remote_equals(env, current, &format!("daily/{}", NAMES[1]));

    settle();
    write(&env.src.join("doc.txt"), "version 3\n");
    write(&env.src.join("sub/more.txt"), "more\n");
    let out = now(env, plan, TIMES[2], &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_remote_equals(env, current, &format!("daily/{}", NAMES[2]));

    let src_rel = env.src.strip_prefix("/").unwrap();
    let h2 = history.join(NAMES[1]).join(src_rel);
    assert_eq!(std::fs::read_to_string(h2.join("doc.txt")).unwrap(), "version 1\n");
    assert_eq!(std::fs::read_to_string(h2.join("gone.txt")).unwrap(), "deleted in 2\n");
    let h3 = history.join(NAMES[2]).join(src_rel);
    assert_eq!(std::fs::read_to_string(h3.join("doc.txt")).unwrap(), "version 2, longer\n");
    assert!(!h3.join("sub/keep.txt").exists(), "unchanged files are not in the history");
    // The metadata travels with the snapshot, so the remote copy can be checked with b3sum.
    assert!(current.join(".hwc-backup/manifest.b3").exists());
}

#[test]
fn local_directory_remote() {
    require("rclone");
    let env = Env::new();
    let remote = env.dir.path().join("remote");
    let plan = cloud_plan(&env, &format!("disk:{}", s(&remote)), "[disk]\ntype = local\n", Some("512k"));
    let host_remote = remote.join(HOST);
    three_pushes(&env, &plan, &host_remote.join("current"), &host_remote.join("history"));

    // The bandwidth limit reached rclone: on its command line and in its own log.
    let log = std::fs::read_to_string(env.dir.path().join("log/backup-cloud.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "cloud.push");
    assert_eq!(last["ok"], true);
    let cmd: Vec<String> = serde_json::from_value(last["command"].clone()).unwrap();
    let i = cmd.iter().position(|a| a == "--bwlimit").expect("--bwlimit passed");
    assert_eq!(cmd[i + 1], "512k");
    let rclone_log = std::fs::read_to_string(env.state.join(HOST).join("cloud-rclone.log")).unwrap();
    assert!(rclone_log.contains("Starting bandwidth limiter at 512Ki"), "{rclone_log}");

    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state.join(HOST).join("cloud.json")).unwrap()).unwrap();
    assert_eq!(state["lastSuccessSnapshot"], format!("daily/{}", NAMES[2]));
    assert!(state["lastSuccess"].as_str().is_some());

    // An emptied source (allowed locally with --allow-shrink, pushed later on its own) must
    // not wipe the remote.
    for e in std::fs::read_dir(&env.src).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let out = now(&env, &plan, "2025-01-16T02:00:00+01:00", &["--allow-shrink", "--local-only"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let before = listing(&host_remote.join("current"), true);
    let out = env.cmd(&["cloud", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refused") && stdout.contains("the snapshot is empty but the remote holds"), "{stdout}");
    assert!(stdout.contains("--allow-shrink"), "{stdout}");
    assert_eq!(listing(&host_remote.join("current"), true), before, "the remote is untouched");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state.join(HOST).join("cloud.json")).unwrap()).unwrap();
    assert_eq!(state["lastOk"], false);
    assert_eq!(state["lastSuccessSnapshot"], format!("daily/{}", NAMES[2]), "the last good push is kept");
    // Asked for explicitly, it mirrors the empty snapshot.
    let out = env.cmd(&["cloud", "--allow-shrink", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!host_remote.join("current").join(env.src.strip_prefix("/").unwrap()).join("doc.txt").exists());
}

#[test]
fn served_sftp_remote_and_a_broken_remote() {
    let env = Env::new();
    let served_dir = env.dir.path().join("served");
    std::fs::create_dir_all(&served_dir).unwrap();
    let server = Served::start(&served_dir, &env.dir.path().join("rclone-cache"));
    let plan = cloud_plan(&env, "served:backups", &server.config(), Some("2M"));
    let host_remote = served_dir.join("backups").join(HOST);
    three_pushes(&env, &plan, &host_remote.join("current"), &host_remote.join("history"));

    // The server goes away: the run fails, says why, and the local snapshot is there.
    drop(server);
    write(&env.src.join("doc.txt"), "version 4\n");
    let out = now(&env, &plan, "2025-01-16T02:00:00+01:00", &["--json"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "success", "the local part succeeded");
    let snap = env.in_snapshot("daily/2025-01-16_02-00-00");
    assert_eq!(std::fs::read_to_string(snap.join("doc.txt")).unwrap(), "version 4\n");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state.join(HOST).join("cloud.json")).unwrap()).unwrap();
    let err = state["lastError"].as_str().unwrap();
    assert!(err.contains("served:backups/testhost/current") && err.contains("connection refused"), "{err}");
    assert!(err.contains("the local snapshot daily/2025-01-16_02-00-00 is untouched"), "{err}");
    let out = env.cmd(&["status", "--config"]).arg(&plan).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("2025-01-16_02-00-00"), "{}", show(&out));
}

#[test]
fn unknown_remote_fails_with_a_clear_message() {
    require("rclone");
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let plan = cloud_plan(&env, "nosuchremote:backups", "", None);
    let out = now(&env, &plan, TIMES[0], &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cloud push FAILED"), "{stdout}");
    assert!(stdout.contains("nosuchremote"), "{stdout}");
    assert_eq!(env.snapshot_ids(), [format!("daily/{}", NAMES[0])]);
}

#[test]
fn move_mode_copies_and_never_touches_the_snapshot() {
    require("rclone");
    let env = Env::new();
    let remote = env.dir.path().join("remote");
    write(&env.src.join("a"), "a");
    let plan = cloud_plan(&env, &format!("disk:{}", s(&remote)), "[disk]\ntype = local\n", None);
    let mut p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    p["cloud"]["syncMode"] = "move".into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = now(&env, &plan, TIMES[0], &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("runs as \"copy\""), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(env.in_snapshot(&format!("daily/{}", NAMES[0])).join("a")).unwrap(), "a");
    assert_remote_equals(&env, &remote.join(HOST).join("current"), &format!("daily/{}", NAMES[0]));
    let v = env.run("verify", &[]);
    assert_eq!(code(&v), 0, "the snapshot is intact: {}", show(&v));
}
