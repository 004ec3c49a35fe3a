//! Health: a fresh, verified backup is healthy (exit 0); each failing condition is found on
//! its own with its own message (exit 1): destination unreachable or not mounted, too little
//! free space, newest snapshot too old, too few snapshots, last run failed, last verify found
//! damage or is missing, cloud copy never made. An unhealthy check notifies once.

use crate::notify::Listener;
use crate::util::*;

fn health(env: &Env, plan: &serde_json::Value) -> (i32, serde_json::Value) {
    let path = write_plan(env, "health-plan.json", &plan.to_string());
    let out = env.cmd(&["health", "--json", "--config"]).arg(&path).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    (code(&out), v)
}

/// The failing checks as `name: message`.
fn failing(v: &serde_json::Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| format!("{}: {}", c["name"].as_str().unwrap(), c["message"].as_str().unwrap()))
        .collect()
}

/// Asserts that exactly the check `name` fails, with a message containing `want`.
fn only_fails(env: &Env, plan: &serde_json::Value, name: &str, want: &str) {
    let (code, v) = health(env, plan);
    let f = failing(&v);
    assert_eq!(code, 1, "{f:?}");
    assert_eq!(f.len(), 1, "only {name} should fail: {f:#?}");
    assert!(f[0].starts_with(&format!("{name}: ")) && f[0].contains(want), "{name}/{want}: {f:#?}");
}

#[test]
fn each_failing_condition_has_its_own_message() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let base = plan_json(&env);
    let plan = write_plan(&env, "plan.json", &base.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));

    let (c, v) = health(&env, &base);
    assert_eq!(c, 0, "{:#?}", failing(&v));
    assert_eq!(v["healthy"], true);
    let names: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["destination", "freeSpace", "newestSnapshot", "snapshotCount", "lastRun", "verify"]);

    let mut p = base.clone();
    p["destination"]["requireMountPoint"] = true.into();
    only_fails(&env, &p, "destination", "is not a mount point");

    let mut p = base.clone();
    p["destination"]["minFreeBytes"] = (1u64 << 60).into();
    only_fails(&env, &p, "freeSpace", "less than the required");

    let mut p = base.clone();
    p["health"]["minBackups"] = 3.into();
    only_fails(&env, &p, "snapshotCount", "1 complete snapshot(s), fewer than health.minBackups 3");

    let mut p = base.clone();
    p["health"]["verifyMaxAge"] = "7d".into();
    only_fails(&env, &p, "verify", "no verify has been recorded");

    let mut p = base.clone();
    p["cloud"] = serde_json::json!({ "enable": true, "remote": "nowhere:x" });
    only_fails(&env, &p, "cloud", "never been pushed");

    // Damage found by verify stays visible until a clean verify.
    let victim = env.host_dir().join("latest").join(env.src.strip_prefix("/").unwrap()).join("a");
    std::fs::write(&victim, "b").unwrap();
    let out = env.cmd(&["verify", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    only_fails(&env, &base, "verify", "found 1 problem(s) in daily/");
    std::fs::write(&victim, "a").unwrap();
    let out = env.cmd(&["verify", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let mut p = base.clone();
    p["health"]["verifyMaxAge"] = "7d".into();
    assert_eq!(health(&env, &p).0, 0);

    // A failed run.
    let mut p = base.clone();
    p["sources"] = serde_json::json!([s(&env.dir.path().join("gone"))]);
    let bad = write_plan(&env, "bad.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    only_fails(&env, &base, "lastRun", "failed: preflight: source");
}

#[test]
fn missing_destination_and_old_or_no_snapshots() {
    let env = Env::new();
    let base = plan_json(&env);
    // Nothing yet: no snapshot.
    let (c, v) = health(&env, &base);
    assert_eq!(c, 1);
    let f = failing(&v);
    assert!(f.iter().any(|x| x.starts_with("newestSnapshot: there is no complete snapshot")), "{f:#?}");
    assert!(f.iter().any(|x| x.starts_with("snapshotCount: 0 complete")), "{f:#?}");

    // A snapshot from three days ago is older than maxAge 48h.
    write(&env.src.join("a"), "a");
    let three_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72);
    env.snapshot_ok(&three_days_ago.to_string(), &[]);
    only_fails(&env, &base, "newestSnapshot", "older than health.maxAge 48h");
    let mut p = base.clone();
    p["health"]["maxAge"] = "4d".into();
    assert_eq!(health(&env, &p).0, 0);

    let mut p = base.clone();
    p["destination"]["path"] = s(&env.dir.path().join("unplugged")).into();
    let (c, v) = health(&env, &p);
    assert_eq!(c, 1);
    let f = failing(&v);
    assert!(f[0].starts_with("destination: destination") && f[0].contains("is not reachable"), "{f:#?}");
}

#[test]
fn unhealthy_notifies_once_and_human_output_names_each_failure() {
    let env = Env::new();
    let l = Listener::start();
    let mut p = crate::notify::notifying_plan(&env, &l.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    p["health"]["minBackups"] = 2.into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["health", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("UNHEALTHY") && text.contains("FAIL newestSnapshot") && text.contains("FAIL snapshotCount"),
        "{text}"
    );
    l.wait_for(2);
    let ntfy = l.one("/backups");
    assert_eq!(ntfy.header("Title"), Some("hwc-backup testhost: health FAILED"));
    assert!(ntfy.body.contains("snapshotCount: 0 complete snapshot(s)"), "{}", ntfy.body);
    l.one("/hook");
    // healthchecks belongs to the backup job and is not pinged by health checks.
    assert!(l.requests().iter().all(|r| !r.path.starts_with("/hc")), "{:#?}", l.requests());
    // The same failures an hour later are not sent again.
    let n = l.requests().len();
    let out = env.cmd(&["health", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(l.requests().len(), n);
    let log = std::fs::read_to_string(env.dir.path().join("log/backup-health.log")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"health.check\"")).count(), 2, "{log}");
}
