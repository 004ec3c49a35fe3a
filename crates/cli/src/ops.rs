//! Operating the backup: what happens around a run (cloud push, metrics, JSON logs,
//! notifications) and the commands `cloud`, `health` and `notify-failure`.
//!
//! Everything here that is not the job itself is best effort: a log directory that is missing,
//! a metrics directory that is read-only or a notification server that is down is reported as
//! a warning on stderr and never changes the outcome of the backup.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use hwc_backup_engine::cloud::{self, CloudOptions, CloudReport};
use hwc_backup_engine::health::{self, HealthReport};
use hwc_backup_engine::jsonlog::{self, Log};
use hwc_backup_engine::meta::RunState;
use hwc_backup_engine::notify::{self, Delivery, Message};
use hwc_backup_engine::plan::Plan;
use hwc_backup_engine::run::{human_bytes, RunReport};
use hwc_backup_engine::verify::VerifyReport;
use hwc_backup_engine::{metrics, Error, ErrorKind};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::args::{CloudArgs, HealthArgs, NotifyFailureArgs};
use crate::exit::Exit;
use crate::target::Resolved;

/// The systemd unit of the whole run, named in "what to run next".
const BACKUP_UNIT: &str = "backup.service";

/// How `now` was run, for [`after_run`].
pub struct AfterRun {
    /// The plan came from a file (not `--source/--dest`): logs, metrics and notifications
    /// are wanted. Ad-hoc runs write none of them.
    pub configured: bool,
    /// Push to the cloud when the plan enables it (`false` with `--local-only`).
    pub push_cloud: bool,
    /// `--allow-shrink`: also lets the cloud mirror a much smaller snapshot.
    pub allow_shrink: bool,
    /// `--json`: print nothing for people.
    pub json: bool,
}

/// What [`after_run`] did.
pub struct AfterOutcome {
    /// The cloud push, when one ran.
    pub cloud: Option<CloudReport>,
    /// The exit code when it differs from the run's own (a failed cloud push fails the job).
    pub exit: Option<Exit>,
}

/// Before `run::run`: the healthchecks `/start` ping and the coordinator's log line.
pub fn before_run(plan: &Plan) {
    log(plan, Log::Coordinator, "job.started", json!({ "job": "backup", "sources": plan.sources }));
    if let Some(d) = notify::ping_start(&plan.notifications) {
        warn_failed(plan, &[d]);
    }
}

/// After `run::run` (and after the last run is recorded): cloud push, JSON logs, metrics,
/// notifications.
pub fn after_run(plan: &Plan, report: &RunReport, how: &AfterRun) -> AfterOutcome {
    let mut outcome = AfterOutcome { cloud: None, exit: None };
    if how.configured {
        log_run(plan, report);
    }
    let published = report.state.published();
    if published && how.push_cloud && plan.cloud.enable {
        let c = push_cloud(plan, how.allow_shrink);
        if !how.json {
            print_cloud(&c);
        }
        if !c.ok {
            outcome.exit = Some(Exit::Failed);
        }
        outcome.cloud = Some(c);
    }
    if !how.configured {
        return outcome;
    }
    write_metrics(plan);
    let msg = run_message(plan, report, outcome.cloud.as_ref());
    let deliveries = send(plan, &msg, &plan.notifications);
    log(
        plan,
        Log::Coordinator,
        "job.finished",
        json!({ "job": "backup", "state": msg.state, "runState": report.state, "snapshot": report.snapshot,
                "error": msg.error, "errorKind": msg.error_kind, "cloud": outcome.cloud.as_ref().map(|c| c.ok), "notifications": deliveries }),
    );
    // A skipped run exits 4, which systemd counts as a failure: recording it keeps
    // OnFailure='s notify-failure from turning it into a "FAILED" message.
    if report.state != RunState::Success || outcome.exit.is_some() {
        record_failed_invocation(plan);
    }
    outcome
}

/// After `verify`: records the outcome for health and metrics (needs the resolved target for
/// the state directory; metrics only when a plan is in use).
pub fn after_verify(t: &Resolved, reports: &[VerifyReport]) {
    let dir = t.state_dir.join(&t.host_name);
    match health::record_verify(&dir, reports) {
        Ok(rec) => {
            if let Some(plan) = &t.plan {
                log(
                    plan,
                    Log::Local,
                    "verify.finished",
                    json!({ "snapshots": rec.snapshots, "filesChecked": rec.files_checked,
                            "errors": rec.errors, "damaged": rec.damaged }),
                );
                write_metrics(plan);
            }
        }
        Err(e) => eprintln!("hwc-backup: warning: the verify result was not recorded: {e}"),
    }
}

/// `hwc-backup cloud`: push the newest snapshot alone.
pub fn cloud(a: CloudArgs) -> Result<Exit> {
    let plan = a.target.load_plan("")?;
    if !plan.cloud.enable {
        bail!(Error::config("cloud.enable", "is false; enable the cloud copy in the configuration first"));
    }
    log(&plan, Log::Coordinator, "job.started", json!({ "job": "cloud" }));
    let c = push_cloud(&plan, a.allow_shrink);
    if a.json {
        print_json(&c)?;
    } else {
        print_cloud(&c);
    }
    write_metrics(&plan);
    let msg = cloud_message(&plan, &c);
    // healthchecks watches the backup job (backup.service); a cloud push run on its own
    // timer must not ping it.
    let targets = hwc_backup_engine::plan::Notifications { healthchecks: None, ..plan.notifications.clone() };
    let deliveries = send(&plan, &msg, &targets);
    log(
        &plan,
        Log::Coordinator,
        "job.finished",
        json!({ "job": "cloud", "state": msg.state, "error": c.error, "notifications": deliveries }),
    );
    if !c.ok {
        record_failed_invocation(&plan);
    }
    Ok(if c.ok { Exit::Success } else { Exit::Failed })
}

/// `hwc-backup health`: every check, printed; exit 1 when any fails; notifies when the
/// failures are new (or a day old), so an hourly timer does not page every hour.
pub fn health(a: HealthArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    let plan = match &t.plan {
        Some(p) => p.clone(),
        None => {
            let dest = t.host.root().parent().unwrap_or(Path::new("/")).to_path_buf();
            let mut p = Plan::ad_hoc(t.host_name.clone(), vec!["/".into()], dest, vec![]);
            p.state_dir = t.state_dir.clone();
            p
        }
    };
    let report = health::check(&plan, Timestamp::now());
    let state_dir = plan.host_state_dir();
    if let Err(e) = report.record(&state_dir) {
        eprintln!("hwc-backup: warning: the health result was not recorded: {e}");
    }
    if a.json {
        print_json(&report)?;
    } else {
        print_health(&report)?;
    }
    if t.plan.is_none() {
        return Ok(if report.healthy { Exit::Success } else { Exit::Failed });
    }
    log(&plan, Log::Health, "health.check", serde_json::to_value(&report).unwrap_or_default());
    write_metrics(&plan);
    if !report.healthy {
        let failing: Vec<String> = report.failures().map(|c| c.name.clone()).collect();
        let key = failing.join(",");
        if notified_recently(&state_dir, "health", &key, 24 * 3600) {
            tracing::info!("not notifying: the same health failures were notified within a day");
        } else {
            // healthchecks is the backup job's dead man's switch; a health check must not
            // ping it (a success ping would hide a dead job, a fail ping is the job's to send).
            let targets = hwc_backup_engine::plan::Notifications { healthchecks: None, ..plan.notifications.clone() };
            let msg = health_message(&plan, &report);
            let deliveries = send(&plan, &msg, &targets);
            remember_notification(&state_dir, "health", RunState::Failed, &key);
            log(&plan, Log::Health, "health.notified", json!({ "failing": failing, "notifications": deliveries }));
        }
    }
    if !report.healthy {
        record_failed_invocation(&plan);
    }
    Ok(if report.healthy { Exit::Success } else { Exit::Failed })
}

/// `hwc-backup notify-failure --unit UNIT`: for systemd's `OnFailure=`, so that a runner the
/// OOM killer or a timeout ended still notifies. A failure the run itself notified within
/// the last ten minutes is not sent twice.
pub fn notify_failure(a: NotifyFailureArgs) -> Result<Exit> {
    let plan = a.target.load_plan("")?;
    // A pull's unit: its records and its message are the pulled host's.
    let plan = match pulled_host_of_unit(&plan, &a.unit) {
        Some(name) => plan.for_host(&name)?.0,
        None => plan,
    };
    let state_dir = plan.host_state_dir();
    let journal = journal_tail(&a.unit);
    // systemd (251+) tells the OnFailure= unit which invocation failed. A job that reached
    // its end recorded its own invocation after notifying; a killed one never did.
    // A unit that failed as a dependency (its disk never mounted) never ran, so nothing
    // matches and it is notified. Only a manual call, outside systemd, falls back to the
    // records' age.
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    let recent = if under_systemd {
        let id = std::env::var("MONITOR_INVOCATION_ID").unwrap_or_default();
        (!id.is_empty() && finished_invocation(&state_dir, &id)).then(|| job_of_unit(&a.unit).to_string())
    } else {
        reported_recently(&state_dir, job_of_unit(&a.unit))
    };
    log(
        &plan,
        Log::Coordinator,
        "unit.failed",
        json!({ "unit": a.unit, "alreadyNotified": recent.is_some(), "journal": journal }),
    );
    if let Some(job) = recent {
        println!(
            "{} failed; the {job} job finished and sent its own notification ({job} record updated within ten minutes)",
            a.unit
        );
        return Ok(Exit::Success);
    }
    let mut details = Vec::new();
    if let Some(j) = &journal {
        details.push(format!("last lines of journalctl -u {}:", a.unit));
        details.extend(j.lines().map(|l| format!("  {l}")));
    }
    let msg = Message {
        host: plan.host.clone(),
        job: a.unit.clone(),
        state: RunState::Failed,
        summary: format!(
            "systemd unit {} failed on {} (killed, timed out, or exited with an error)",
            a.unit, plan.host
        ),
        error: Some(format!("{} entered the failed state", a.unit)),
        error_kind: None,
        details,
        next_steps: vec![
            format!("journalctl -u {} -n 100 --no-pager", a.unit),
            format!("systemctl status {}", a.unit),
            "backup-status".into(),
        ],
    };
    let deliveries = send(&plan, &msg, &plan.notifications);
    let failed = deliveries.iter().filter(|d| !d.ok).count();
    if a.json {
        print_json(&deliveries)?;
    } else {
        println!("notified that {} failed: {} delivered, {failed} failed", a.unit, deliveries.len() - failed);
    }
    Ok(if failed > 0 { Exit::Failed } else { Exit::Success })
}

fn push_cloud(plan: &Plan, allow_shrink: bool) -> CloudReport {
    let c = cloud::push(plan, &CloudOptions { allow_shrink });
    log(plan, Log::Cloud, "cloud.push", serde_json::to_value(&c).unwrap_or_default());
    c
}

fn print_cloud(c: &CloudReport) {
    for n in &c.notes {
        println!("cloud: note: {n}");
    }
    match (&c.error, &c.snapshot) {
        (None, Some(s)) => println!(
            "cloud: pushed {s} to {} ({} files, {}; rclone {})",
            c.destination,
            c.files,
            human_bytes(c.bytes),
            c.verb
        ),
        (None, None) => println!("cloud: pushed to {}", c.destination),
        (Some(e), _) => println!("cloud push FAILED: {e}"),
    }
}

fn print_health(r: &HealthReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let failed = r.failures().count();
    if failed == 0 {
        writeln!(out, "backups of {}: healthy", r.host)?;
    } else {
        writeln!(out, "backups of {}: UNHEALTHY ({failed} of {} checks failed)", r.host, r.checks.len())?;
    }
    for c in &r.checks {
        writeln!(out, "  {} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.message)?;
    }
    Ok(())
}

fn run_message(plan: &Plan, r: &RunReport, cloud: Option<&CloudReport>) -> Message {
    let c = &r.counts;
    let mut details = Vec::new();
    let mut next = Vec::new();
    let mut state = r.state;
    let mut error = r.error.clone();
    let mut error_kind = r.error_kind;
    let summary = match r.state {
        RunState::Skipped => format!(
            "backup of {} skipped: another run holds the lock and does the work; nothing was done (not a failure)",
            plan.host
        ),
        RunState::Failed => {
            next.extend(next_steps_for(plan, r.error_kind));
            next.push(format!("journalctl -u {BACKUP_UNIT} -n 50 --no-pager"));
            format!("backup of {} failed; nothing was published and earlier snapshots are untouched", plan.host)
        }
        s => {
            details.push(format!(
                "snapshot: {}\nfiles: {} ({} copied, {}; {} linked)",
                r.snapshot.as_deref().unwrap_or("?"),
                c.files,
                c.copied,
                human_bytes(c.bytes_copied),
                c.linked
            ));
            if s == RunState::Partial {
                details.push(format!("{} warning(s):", c.warnings));
                details.extend(r.warnings.iter().take(10).map(|w| format!("  {}: {}", w.path.display(), w.message)));
                next.push("the snapshot's .hwc-backup/meta.json lists every warning".into());
            }
            format!(
                "backup of {} {}: {}",
                plan.host,
                if s == RunState::Partial { "published with warnings" } else { "succeeded" },
                r.snapshot.as_deref().unwrap_or("?")
            )
        }
    };
    if let Some(cl) = cloud {
        if cl.ok {
            details.push(format!("cloud: pushed to {}", cl.destination));
        } else {
            state = RunState::Failed;
            error = cl.error.clone();
            error_kind = None;
            details.push("the local snapshot was published; only the cloud copy failed".into());
            next.push("backup-cloud (to retry the push)".into());
            if let Some(l) = &cl.log_file {
                next.push(format!("less {}", l.display()));
            }
        }
    }
    next.push("backup-status".into());
    Message {
        host: plan.host.clone(),
        job: "backup".into(),
        state,
        summary,
        error,
        error_kind,
        details,
        next_steps: next,
    }
}

/// What to do first about a failed run, by the kind of its error.
fn next_steps_for(plan: &Plan, kind: Option<ErrorKind>) -> Vec<String> {
    let dest = plan.destination.path.display();
    match kind {
        Some(ErrorKind::Preflight) => vec![format!("is the destination {dest} mounted, and are the sources there?")],
        Some(ErrorKind::NoSpace) => {
            vec![
                format!("df -h {dest}"),
                "hwc-backup prune --dry-run (and fewer snapshots kept, or a bigger disk)".into(),
            ]
        }
        Some(ErrorKind::Guard) => {
            vec!["if the source really shrank on purpose: hwc-backup now --allow-shrink".into()]
        }
        Some(ErrorKind::Command) => vec!["the hook's or helper's output is in the error above".into()],
        _ => Vec::new(),
    }
}

fn cloud_message(plan: &Plan, c: &CloudReport) -> Message {
    let mut next = vec!["journalctl -u backup-cloud.service -n 50 --no-pager".to_string()];
    if let Some(l) = &c.log_file {
        next.push(format!("less {}", l.display()));
    }
    next.push("backup-status".into());
    Message {
        host: plan.host.clone(),
        job: "cloud".into(),
        state: if c.ok { RunState::Success } else { RunState::Failed },
        summary: if c.ok {
            format!("cloud copy of {} updated: {}", plan.host, c.snapshot.as_deref().unwrap_or("?"))
        } else {
            format!("cloud copy of {} failed; the local snapshots are untouched", plan.host)
        },
        error: c.error.clone(),
        error_kind: None,
        details: vec![format!("remote: {}", c.destination)],
        next_steps: next,
    }
}

fn health_message(plan: &Plan, r: &HealthReport) -> Message {
    Message {
        host: plan.host.clone(),
        job: "health".into(),
        state: RunState::Failed,
        summary: format!("backups of {} are unhealthy", plan.host),
        error: r.failures().next().map(|c| c.message.clone()),
        error_kind: None,
        details: r.failures().map(|c| format!("{}: {}", c.name, c.message)).collect(),
        next_steps: vec![
            "backup-health".into(),
            format!("journalctl -u {BACKUP_UNIT} -n 50 --no-pager"),
            "backup-status".into(),
        ],
    }
}

/// Sends and warns about every failed delivery.
fn send(plan: &Plan, msg: &Message, targets: &hwc_backup_engine::plan::Notifications) -> Vec<Delivery> {
    let deliveries = notify::notify(targets, msg);
    warn_failed(plan, &deliveries);
    deliveries
}

fn warn_failed(plan: &Plan, deliveries: &[Delivery]) {
    for d in deliveries.iter().filter(|d| !d.ok) {
        let e = d.error.as_deref().unwrap_or("unknown error");
        eprintln!("hwc-backup: warning: {} notification not delivered: {e}", d.target);
        log(plan, Log::Coordinator, "notify.failed", json!({ "target": d.target, "error": e }));
    }
}

/// Appends to a JSON-lines log; a failure is a warning with `-v` only, since the log directory
/// may simply not exist on a machine without the module.
fn log(plan: &Plan, which: Log, event: &str, fields: serde_json::Value) {
    if let Err(e) = jsonlog::append(&plan.log_dir, which, &plan.host, event, fields) {
        tracing::info!("not logged: {e}");
    }
}

fn log_run(plan: &Plan, r: &RunReport) {
    let secs = (r.finished_at.as_millisecond() - r.started_at.as_millisecond()) as f64 / 1000.0;
    log(
        plan,
        Log::Local,
        "run.finished",
        json!({ "state": r.state, "error": r.error, "errorKind": r.error_kind, "snapshot": r.snapshot, "snapshotPath": r.snapshot_path,
                "startedAt": r.started_at, "finishedAt": r.finished_at, "durationSeconds": secs,
                "counts": r.counts, "warnings": r.counts.warnings, "cleanedUp": r.cleaned_up,
                "pruned": r.prune.as_ref().map(|p| p.removals()),
                "pruneRefused": r.prune.as_ref().and_then(|p| p.refused.clone()) }),
    );
}

fn write_metrics(plan: &Plan) {
    if let Err(e) = metrics::write(plan) {
        eprintln!("hwc-backup: warning: metrics not written: {e}");
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// The last lines of the unit's journal, when journalctl is there and answers.
fn journal_tail(unit: &str) -> Option<String> {
    let journalctl = notify::find_program("journalctl", &["/run/current-system/sw/bin/journalctl"])?;
    let mut child = std::process::Command::new(journalctl)
        .args(["-u", unit, "-n", "20", "--no-pager", "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let status = notify::wait_with_timeout(&mut child, std::time::Duration::from_secs(10)).ok()?;
    let text = reader.join().ok()?;
    (status.success() && !text.trim().is_empty()).then(|| text.trim_end().to_string())
}

/// `<stateDir>/<host>/notifications.json`: the last notification per job.
const NOTIFIED_FILE: &str = "notifications.json";

#[derive(Serialize, Deserialize)]
struct Notified {
    time: Timestamp,
    state: RunState,
    key: String,
}

fn read_notified(dir: &Path) -> BTreeMap<String, Notified> {
    std::fs::read(dir.join(NOTIFIED_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn remember_notification(dir: &Path, job: &str, state: RunState, key: &str) {
    let mut all = read_notified(dir);
    all.insert(job.to_string(), Notified { time: Timestamp::now(), state, key: key.to_string() });
    let text = serde_json::to_vec_pretty(&all).expect("serializes");
    let _ = hwc_backup_engine::fsutil::ensure_dir(dir)
        .and_then(|()| hwc_backup_engine::fsutil::write_durably(&dir.join(NOTIFIED_FILE), &text));
}

fn notified_recently(dir: &Path, job: &str, key: &str, within_secs: i64) -> bool {
    read_notified(dir)
        .get(job)
        .is_some_and(|n| n.key == key && Timestamp::now().as_second() - n.time.as_second() < within_secs)
}

/// The pulled host whose unit this is: `backup-host-web1.service` → `web1`, when the plan
/// declares `hosts.web1`.
fn pulled_host_of_unit(plan: &Plan, unit: &str) -> Option<String> {
    let name = unit.strip_prefix("backup-host-")?;
    let name = name.strip_suffix(".service").unwrap_or(name);
    plan.hosts.contains_key(name).then(|| name.to_string())
}

/// The job a unit runs (`backup-cloud.service` → `cloud`), whose own failure notification
/// makes the unit's redundant.
fn job_of_unit(unit: &str) -> &'static str {
    // By the units' names as the module writes them; a pulled host named "cloud1" is a backup.
    if unit.starts_with("backup-cloud") {
        "cloud"
    } else if unit.starts_with("backup-health") {
        "health"
    } else {
        "backup"
    }
}

/// The file in which a job under systemd records `$INVOCATION_ID` when it ends in failure
/// after sending its own notifications — the only case in which `OnFailure=` fires for an
/// invocation that already notified.
const FINISHED_INVOCATION_FILE: &str = "finished-invocations";

/// Records that this systemd invocation failed and notified by itself (no-op outside
/// systemd), with the time, as `ID UNIX_SECONDS` lines. A succeeded invocation is never
/// recorded: for a unit that then fails as a dependency (its disk never mounted) systemd
/// passes that succeeded invocation's ID, which must not silence the notification. Keeps the
/// last few, since backup, cloud and health jobs may fail close together.
fn record_failed_invocation(plan: &Plan) {
    let Ok(id) = std::env::var("INVOCATION_ID") else { return };
    let path = plan.host_state_dir().join(FINISHED_INVOCATION_FILE);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> =
        old.lines().filter(|l| !l.is_empty() && l.split(' ').next() != Some(id.as_str())).map(String::from).collect();
    lines.push(format!("{id} {}", jiff::Timestamp::now().as_second()));
    let keep = lines.len().saturating_sub(20);
    let text = lines[keep..].join("\n") + "\n";
    let written = hwc_backup_engine::fsutil::ensure_dir(&plan.host_state_dir())
        .and_then(|()| hwc_backup_engine::fsutil::write_durably(&path, text.as_bytes()));
    if let Err(e) = written {
        tracing::info!("cannot record the finished invocation in {}: {e}", path.display());
    }
}

/// Whether the invocation `id` recorded, within the last two minutes, that it failed and
/// notified by itself. A job records its ID a moment before it exits and OnFailure= starts;
/// an older record is from an earlier failure, not this one.
fn finished_invocation(dir: &Path, id: &str) -> bool {
    let now = jiff::Timestamp::now().as_second();
    std::fs::read_to_string(dir.join(FINISHED_INVOCATION_FILE)).is_ok_and(|t| {
        t.lines().any(|l| {
            let mut parts = l.split(' ');
            let fresh =
                parts.nth(1).and_then(|t| t.parse::<i64>().ok()).is_some_and(|t| (0..=120).contains(&(now - t)));
            l.split(' ').next() == Some(id) && fresh
        })
    })
}

/// `job` when it finished within the last ten minutes with a failure it reported itself (its
/// record in the state directory was just rewritten and says so): the unit failed because
/// the job exited non-zero, not because it was killed, so its own notification went out.
/// The records' modification times are used, not their contents, because a run with a
/// testing clock records simulated times.
fn reported_recently(dir: &Path, job: &str) -> Option<String> {
    let fresh = |name: &str| {
        std::fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < std::time::Duration::from_secs(600)))
    };
    let cloud_failed = || fresh(cloud::STATE_FILE) && cloud::CloudRecord::read(dir).is_some_and(|c| !c.last_ok);
    let reported = match job {
        "cloud" => cloud_failed(),
        "health" => fresh(health::HEALTH_FILE) && health::HealthReport::read(dir).is_some_and(|h| !h.healthy),
        _ => {
            let run_failed = fresh(health::LAST_RUN_FILE)
                && health::LastRun::read(dir).is_some_and(|r| r.state != RunState::Success);
            run_failed || cloud_failed()
        }
    };
    reported.then(|| job.to_string())
}
