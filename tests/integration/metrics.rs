//! Metrics: the textfile parses with the Prometheus project's own parser (python3
//! `prometheus_client`) and holds the values of the run, the verify, the health check and the
//! cloud push; it is replaced atomically (no temporary file is left beside it).

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// A python3 that has `prometheus_client` (Debian's python3-prometheus-client lives in
/// /usr/bin/python3's path, which may not be the first python3 on PATH).
fn python_with_parser() -> String {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py).args(["-c", "import prometheus_client.parser"]).output();
        if ok.is_ok_and(|o| o.status.success()) {
            return py.to_string();
        }
    }
    panic!("python3 with prometheus_client is not installed: run tests/run (it installs python3-prometheus-client)");
}

/// `{"name{label=value,…}": value}` for every sample, as the reference parser reads them.
fn parse(file: &Path) -> serde_json::Map<String, serde_json::Value> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    assert fam.type == "gauge", fam
    assert fam.documentation, fam.name
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "host")
        assert s.labels["host"] == "testhost", s
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let out = Command::new(python_with_parser()).args(["-c", script]).arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "the metrics file does not parse: {}\n{}",
        show(&out),
        std::fs::read_to_string(file).unwrap()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn val(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    m.get(key).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("{key} missing from {m:#?}"))
}

#[test]
fn metrics_parse_and_hold_the_runs_values() {
    let env = Env::new();
    let prom = env.dir.path().join("textfile");
    let remote = env.dir.path().join("remote");
    write(&env.src.join("a"), vec![1u8; 5000]);
    write(&env.src.join("b/c"), "c");
    let rclone_conf = env.dir.path().join("rclone.conf");
    std::fs::write(&rclone_conf, "[disk]\ntype = local\n").unwrap();
    let mut p = plan_json(&env);
    p["metrics"]["textfileDir"] = s(&prom).into();
    let plan = write_plan(&env, "plan.json", &p.to_string());

    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let file = prom.join("hwc_backup_testhost.prom");
    let m = parse(&file);
    assert_eq!(val(&m, "hwc_backup_last_run_state{state=success}"), 1.0);
    assert_eq!(val(&m, "hwc_backup_last_run_state{state=failed}"), 0.0);
    assert_eq!(val(&m, "hwc_backup_last_run_files_copied{}"), 2.0);
    assert_eq!(val(&m, "hwc_backup_last_run_bytes_copied{}"), 5001.0);
    assert_eq!(val(&m, "hwc_backup_last_run_files_linked{}"), 0.0);
    assert_eq!(val(&m, "hwc_backup_snapshots{tier=daily}"), 1.0);
    assert_eq!(val(&m, "hwc_backup_snapshots{tier=weekly}"), 0.0);
    let now = jiff::Timestamp::now().as_second() as f64;
    let last_ok = val(&m, "hwc_backup_last_success_timestamp_seconds{}");
    assert!((now - last_ok).abs() < 120.0, "{last_ok} vs {now}");
    assert!(val(&m, "hwc_backup_newest_snapshot_age_seconds{}") < 120.0);
    assert!(val(&m, "hwc_backup_last_run_duration_seconds{}") >= 0.0);
    assert_eq!(val(&m, "hwc_backup_cloud_enabled{}"), 0.0);
    assert!(!m.contains_key("hwc_backup_verify_errors{}"), "no verify yet");

    // A second run links the unchanged files.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&env.src.join("d"), "new");
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let m = parse(&file);
    assert_eq!(val(&m, "hwc_backup_snapshots{tier=daily}"), 2.0);
    assert_eq!(val(&m, "hwc_backup_last_run_files_copied{}"), 1.0);
    assert_eq!(val(&m, "hwc_backup_last_run_bytes_linked{}"), 5001.0);
    assert!(val(&m, "hwc_backup_last_run_files_linked{}") >= 2.0);
    assert!(val(&m, "hwc_backup_oldest_snapshot_age_seconds{}") >= val(&m, "hwc_backup_newest_snapshot_age_seconds{}"));

    // verify, health and the cloud push each refresh the file with their values.
    let out = env.cmd(&["verify", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let m = parse(&file);
    assert_eq!(val(&m, "hwc_backup_verify_errors{}"), 0.0);
    assert_eq!(val(&m, "hwc_backup_verify_files_checked{}"), 3.0);

    let out = env.cmd(&["health", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let m = parse(&file);
    assert_eq!(val(&m, "hwc_backup_healthy{}"), 1.0);
    assert_eq!(val(&m, "hwc_backup_health_check_ok{check=newestSnapshot}"), 1.0);

    require("rclone");
    p["cloud"] = serde_json::json!({ "enable": true, "remote": format!("disk:{}", s(&remote)),
        "rcloneConfigFile": s(&rclone_conf) });
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["cloud", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let m = parse(&file);
    assert_eq!(val(&m, "hwc_backup_cloud_enabled{}"), 1.0);
    assert_eq!(val(&m, "hwc_backup_cloud_last_attempt_ok{}"), 1.0);
    assert!((now - val(&m, "hwc_backup_cloud_last_success_timestamp_seconds{}")).abs() < 120.0);

    // Only the .prom file is there: node-exporter never sees a temporary file.
    let names: Vec<String> =
        std::fs::read_dir(&prom).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["hwc_backup_testhost.prom"]);
}

#[test]
fn a_failed_run_is_in_the_metrics_and_the_json_log() {
    let env = Env::new();
    let prom = env.dir.path().join("textfile");
    let mut p = plan_json(&env);
    p["metrics"]["textfileDir"] = s(&prom).into();
    p["sources"] = serde_json::json!([s(&env.dir.path().join("missing"))]);
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let m = parse(&prom.join("hwc_backup_testhost.prom"));
    assert_eq!(val(&m, "hwc_backup_last_run_state{state=failed}"), 1.0);
    assert!(!m.contains_key("hwc_backup_last_success_timestamp_seconds{}"));
    let log = std::fs::read_to_string(env.dir.path().join("log/backup-local.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "run.finished");
    assert_eq!(last["state"], "failed");
    assert_eq!(last["host"], HOST);
    assert!(last["error"].as_str().unwrap().contains("missing"), "{last}");
    assert!(last["time"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok());
}

#[test]
fn an_unwritable_log_dir_does_not_fail_the_backup() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let mut p = plan_json(&env);
    // A regular file where the log directory should be.
    let blocker = env.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    p["logDir"] = s(&blocker.join("log")).into();
    p["metrics"]["textfileDir"] = s(&blocker.join("prom")).into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics not written"), "{}", show(&out));
    assert_eq!(env.snapshot_ids().len(), 1);
}
