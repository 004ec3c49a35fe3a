//! How a run's outcome is recorded and told (issue 12 items 7 and 8, issue 18's typed
//! errors): a run that finds the lock held is `skipped` (exit 4) and nobody hears "failed";
//! verify is not fooled by a prune moving or expiring a snapshot under it; a snapshot dated
//! in the future is a warning, never takes `latest` from a later run, and fails `health`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::notify::{notifying_plan, Listener};
use crate::util::*;

/// A child process killed (and reaped) when the test ends, also on a panic.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Holds `<host>/.lock` with flock(1) until the returned child's stdin is closed.
fn hold_lock(lock: &Path) -> Reaped {
    require("flock");
    let mut child = Command::new("flock")
        .arg("-x")
        .arg(lock)
        .args(["-c", "echo held; read _"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held");
    Reaped(child)
}

fn last_run(env: &Env) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(env.state.join(HOST).join("last-run.json")).unwrap()).unwrap()
}

fn check<'a>(health: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    health["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()
}

fn health_json(env: &Env, plan: &Path) -> (i32, serde_json::Value) {
    let out = env.cmd(&["health", "--json", "--config"]).arg(plan).output().unwrap();
    (code(&out), serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out))))
}

#[test]
fn a_run_that_finds_the_lock_held_is_skipped_not_failed() {
    let env = Env::new();
    let l = Listener::start();
    write(&env.src.join("a"), "a");
    let mut p = notifying_plan(&env, &l.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    p["metrics"]["textfileDir"] = s(&env.dir.path().join("prom")).into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let before = l.wait_for(4).len();

    let holder = hold_lock(&env.host_dir().join(".lock"));
    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 4, "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["state"].as_str(), report["errorKind"].as_str()), (Some("skipped"), Some("locked")));

    // The listener hears a start, a healthchecks log ping and (onSuccess) a low notice:
    // nothing says "failed".
    let all = l.wait_for(before + 4);
    let new = &all[before..];
    let paths: Vec<&str> = new.iter().map(|r| r.path.as_str()).collect();
    assert!(paths.contains(&"/hc/0f1e/start") && paths.contains(&"/hc/0f1e/log"), "{new:#?}");
    assert!(!paths.iter().any(|p| p.ends_with("/fail")), "a skipped run pinged /fail: {new:#?}");
    assert!(!paths.contains(&"/hc/0f1e"), "a skipped run is not a success ping either: {new:#?}");
    for r in new {
        assert!(!r.body.to_lowercase().contains("state: failed"), "{r:#?}");
        assert_ne!(r.header("Priority"), Some("urgent"), "{r:#?}");
        assert!(!r.header("Title").unwrap_or("").contains("FAILED"), "{r:#?}");
    }
    let ntfy = new.iter().find(|r| r.path == "/backups").expect("a notice with onSuccess");
    assert_eq!(ntfy.header("Title"), Some("hwc-backup testhost: backup skipped"));
    assert_eq!(ntfy.header("Priority"), Some("low"));
    let hook: serde_json::Value = serde_json::from_str(&new.iter().find(|r| r.path == "/hook").unwrap().body).unwrap();
    assert_eq!((hook["state"].as_str(), hook["errorKind"].as_str()), (Some("skipped"), Some("locked")));

    // Recorded as skipped, with the run before it; health does not fail lastRun.
    let rec = last_run(&env);
    assert_eq!((rec["state"].as_str(), rec["errorKind"].as_str()), (Some("skipped"), Some("locked")));
    assert_eq!(rec["lastCompleted"]["state"], "success");
    let (c, h) = health_json(&env, &plan);
    assert_eq!(c, 0, "{h:#}");
    let last = check(&h, "lastRun");
    assert_eq!(last["ok"], true);
    assert!(last["message"].as_str().unwrap().contains("was skipped"), "{last}");
    let out = env.cmd(&["status", "--json", "--config"]).arg(&plan).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["lastRun"]["errorKind"], "locked");
    let prom = std::fs::read_to_string(env.dir.path().join("prom/hwc_backup_testhost.prom")).unwrap();
    assert!(prom.contains("hwc_backup_last_run_state{host=\"testhost\",state=\"success\"} 1"), "{prom}");
    assert!(prom.contains("hwc_backup_last_skipped_timestamp_seconds{"), "{prom}");

    // systemd's OnFailure= (exit 4 fails the unit) does not turn it into a failure either.
    let n = l.requests().len();
    let out = env.cmd(&["notify-failure", "--unit", "backup.service", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(l.requests().len(), n, "{:#?}", &l.requests()[n..]);

    // The lock released, the next run works.
    drop(holder);
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(last_run(&env)["state"], "success");
}

#[test]
fn a_skip_does_not_hide_the_failure_before_it() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let good = plan_json(&env);
    let plan = write_plan(&env, "plan.json", &good.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let mut p = good.clone();
    p["sources"] = serde_json::json!([s(&env.dir.path().join("gone"))]);
    let bad = write_plan(&env, "bad.json", &p.to_string());
    let out = env.cmd(&["now", "--json", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["state"].as_str(), report["errorKind"].as_str()), (Some("failed"), Some("preflight")));
    let _holder = hold_lock(&env.host_dir().join(".lock"));
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 4, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("skipped"), "{}", show(&out));
    let (c, h) = health_json(&env, &plan);
    assert_eq!(c, 1);
    let m = check(&h, "lastRun")["message"].as_str().unwrap().to_string();
    assert!(m.contains("failed: preflight: source") && m.contains("was skipped"), "{m}");
}

/// Writes a plan with this retention (no pruning after runs) and takes snapshots at `times`.
fn two_snapshots(env: &Env, retention: serde_json::Value, times: &[&str]) -> PathBuf {
    // Big enough that verify is still reading the first snapshot when it is stopped.
    write(&env.src.join("big"), vec![7u8; 64 << 20]);
    for i in 0..20 {
        write(&env.src.join(format!("small/{i}")), format!("{i}"));
    }
    let mut p = plan_json(env);
    p["retention"] = retention;
    let plan = write_plan(env, "plan.json", &p.to_string());
    for t in times {
        let out = env.cmd(&["now", "--now", t, "--config"]).arg(&plan).output().unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
    }
    plan
}

/// Starts `verify --all` and stops it (SIGSTOP) while it reads snapshot `id`.
fn verify_stopped_in(env: &Env, plan: &Path, id: &str) -> Reaped {
    let child = env
        .cmd(&["verify", "--all", "--threads", "1", "--config"])
        .arg(plan)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let child = Reaped(child);
    let inside = env.host_dir().join(id);
    let start = Instant::now();
    loop {
        let reading = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|rd| rd.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&inside))))
            .unwrap_or(false);
        if reading {
            sh(&format!("kill -STOP {pid}"));
            return child;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "verify never opened anything in {id}");
    }
}

fn finish(mut child: Reaped) -> (i32, String, String) {
    sh(&format!("kill -CONT {}", child.0.id()));
    let mut stdout = String::new();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = child.0.wait().unwrap();
    (status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn verify_follows_a_snapshot_a_concurrent_prune_moves() {
    let env = Env::new();
    let retention = serde_json::json!({ "last": 0, "hourly": 0, "daily": 1, "weekly": 4, "monthly": 0,
                                        "yearly": 0, "within": null, "pruneAfterRun": false });
    let plan = two_snapshots(&env, retention, &["2025-01-01T02:00:00Z", "2025-01-20T02:00:00Z"]);
    let verify = verify_stopped_in(&env, &plan, "daily/2025-01-01_02-00-00");
    let out = env.cmd(&["prune", "--now", "2025-01-20T12:00:00Z", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(env.snapshot_ids(), ["daily/2025-01-20_02-00-00", "weekly/2025-01-01_02-00-00"]);
    let (c, stdout, stderr) = finish(verify);
    assert_eq!(c, 0, "a snapshot moved by prune is not damage:\n{stdout}\n{stderr}");
    assert!(stdout.contains("weekly/2025-01-01_02-00-00: OK"), "{stdout}");
    assert!(stdout.contains("daily/2025-01-20_02-00-00: OK"), "{stdout}");
}

#[test]
fn verify_is_not_failed_by_a_snapshot_a_concurrent_prune_expires() {
    let env = Env::new();
    let retention = serde_json::json!({ "last": 0, "hourly": 0, "daily": 1, "weekly": 0, "monthly": 0,
                                        "yearly": 0, "within": null, "pruneAfterRun": false });
    let plan = two_snapshots(&env, retention, &["2025-01-01T02:00:00Z", "2025-01-20T02:00:00Z"]);
    let verify = verify_stopped_in(&env, &plan, "daily/2025-01-01_02-00-00");
    let out = env.cmd(&["prune", "--now", "2025-01-20T12:00:00Z", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(env.snapshot_ids(), ["daily/2025-01-20_02-00-00"]);
    let (c, stdout, stderr) = finish(verify);
    assert_eq!(c, 0, "a snapshot expired by prune is not damage:\n{stdout}\n{stderr}");
    assert!(stderr.contains("daily/2025-01-01_02-00-00 was expired by a concurrent prune"), "{stderr}");
    assert!(stdout.contains("daily/2025-01-20_02-00-00: OK"), "{stdout}");
    // Real damage is still found.
    std::fs::write(env.in_snapshot("daily/2025-01-20_02-00-00").join("small/3"), "x").unwrap();
    let out = env.cmd(&["verify", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
}

fn now_json(env: &Env, plan: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = env.cmd(&["now", "--json", "--config"]).arg(plan).args(extra).output().unwrap();
    (code(&out), serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out))))
}

fn latest(env: &Env) -> String {
    s(&std::fs::read_link(env.host_dir().join("latest")).unwrap())
}

fn warnings(report: &serde_json::Value) -> Vec<String> {
    report["warnings"].as_array().unwrap().iter().map(|w| w["message"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_snapshot_dated_in_the_future_is_a_warning_keeps_off_latest_and_fails_health() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let mut p = plan_json(&env);
    p["retention"]["pruneAfterRun"] = false.into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let real = jiff::Timestamp::now();
    let hour_ago = (real - jiff::SignedDuration::from_hours(1)).to_string();
    let (c, r) = now_json(&env, &plan, &["--now", &hour_ago]);
    assert_eq!(c, 0, "{r:#}");
    assert_eq!(health_json(&env, &plan).0, 0);

    // A mistyped --now two days ahead: published, with a warning (exit 3, partial).
    let ahead = (real + jiff::SignedDuration::from_hours(48)).to_string();
    let (c, future) = now_json(&env, &plan, &["--now", &ahead]);
    assert_eq!(c, 3, "{future:#}");
    assert_eq!(future["state"], "partial");
    let w = warnings(&future);
    assert!(w.len() == 1 && w[0].starts_with("this snapshot is dated in the future"), "{w:#?}");
    let future_id = future["snapshot"].as_str().unwrap().to_string();
    // It is the last publish, so it holds `latest` for now.
    assert_eq!(latest(&env), future_id);
    // health fails: the future-dated snapshot would look fresh for two days.
    let (c, h) = health_json(&env, &plan);
    assert_eq!(c, 1);
    let newest = check(&h, "newestSnapshot");
    assert_eq!(newest["ok"], false);
    assert!(newest["message"].as_str().unwrap().contains("in the future"), "{newest}");

    // The next runs (real clock) take `latest` and keep it: a later start wins over a
    // greater date, also at the start of the run after (which repairs `latest`).
    let (c, r1) = now_json(&env, &plan, &[]);
    assert_eq!(c, 3, "{r1:#}");
    let w = warnings(&r1);
    assert!(w.iter().any(|m| m.starts_with(&format!("snapshot {future_id} is dated in the future"))), "{w:#?}");
    assert_eq!(latest(&env), r1["snapshot"].as_str().unwrap());
    write(&env.src.join("a"), "second");
    let (c, r2) = now_json(&env, &plan, &[]);
    assert_eq!(c, 3, "{r2:#}");
    let id2 = r2["snapshot"].as_str().unwrap().to_string();
    assert_eq!(latest(&env), id2);
    // `latest` as a name resolves the same way (verify, restore).
    let out = env.cmd(&["verify", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["snapshot"], id2.as_str());
    let restored = env.dir.path().join("restored");
    let path = s(&env.src.join("a"));
    let out = env.cmd(&["restore", "--config"]).arg(&plan).args(["latest", &path]).arg(&restored).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&restored).unwrap(), "second");
    assert_eq!(health_json(&env, &plan).0, 1, "still unhealthy while the future snapshot exists");

    // Removed, all is well again.
    std::fs::remove_dir_all(env.host_dir().join(&future_id)).unwrap();
    let (c, h) = health_json(&env, &plan);
    assert_eq!(c, 0, "{h:#}");
    let (c, r) = now_json(&env, &plan, &[]);
    assert_eq!(c, 0, "{r:#}");
}
