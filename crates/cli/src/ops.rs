//! The commands `cloud`, `health` and `notify-failure`, and printing what the engine did
//! around a run (`hwc_backup_engine::ops`: the cloud push, metrics, JSON logs,
//! notifications, the records in the state directory).
//!
//! The engine decides the order and keeps the records; this module prints. Everything there
//! that is not the job itself is best effort: its failures come back as warnings, printed
//! on stderr, and never change the outcome of the backup.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use hwc_backup_engine::cloud::CloudReport;
use hwc_backup_engine::health::{self, HealthReport};
use hwc_backup_engine::job::Job;
use hwc_backup_engine::notify;
use hwc_backup_engine::ops::{self, after_run, AfterRun, AfterRunReport, Live, StateDir, Systemd};
use hwc_backup_engine::plan::Plan;
use hwc_backup_engine::run::{human_bytes, RunReport};
use hwc_backup_engine::verify::VerifyReport;
use jiff::Timestamp;
use serde::Serialize;

use crate::args::{CloudArgs, HealthArgs, NotifyFailureArgs};
use crate::exit::Exit;
use crate::target::Resolved;

/// How `now` or `pull` was run.
pub struct Invocation {
    /// The plan came from a file: logs, metrics and notifications are wanted.
    pub configured: bool,
    /// Push to the cloud when the job has a cloud copy (this machine's, when the plan enables
    /// it).
    pub push_cloud: bool,
    /// `--allow-shrink`.
    pub allow_shrink: bool,
    /// `--json`: print nothing for people.
    pub json: bool,
}

/// Before a run: the engine's `job.started` line and healthchecks `/start` ping, for a
/// configured run.
pub fn before_run(job: &Job, configured: bool) {
    if configured {
        warn(&ops::before_run(job, &Live));
    }
}

/// After a run: the engine records it and runs the after-run sequence; this prints the run's
/// report, then what the sequence did, and returns the exit code.
pub fn finish_run(job: &Job, report: &RunReport, how: &Invocation) -> Result<Exit> {
    let after = after_run(
        job,
        report,
        &AfterRun {
            configured: how.configured,
            push_cloud: how.push_cloud,
            allow_shrink: how.allow_shrink,
            systemd: Systemd::from_env(),
        },
        &Live,
    );
    if how.json {
        print_json(report)?;
    } else {
        crate::commands::print_run(report)?;
        if let Some(c) = &after.cloud {
            print_cloud(c);
        }
    }
    warn(&after.warnings);
    Ok(exit_after(report, &after))
}

fn exit_after(report: &RunReport, after: &AfterRunReport) -> Exit {
    if after.cloud_failed() {
        Exit::Failed
    } else {
        Exit::from_report(report)
    }
}

/// After `verify`: the engine records the outcome (keyed by host and destination) for
/// health and metrics; metrics and the log line only when a plan is in use.
pub fn after_verify(t: &Resolved, reports: &[VerifyReport]) {
    let dest = t.host.root().parent().unwrap_or(Path::new("/"));
    let state = StateDir::new(&t.state_dir, &t.host_name);
    warn(&ops::after_run::after_verify(&state, dest, t.job.as_ref(), reports, &Live).warnings);
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("hwc-backup: warning: {w}");
    }
}

/// `hwc-backup cloud`: push the newest snapshot alone.
pub fn cloud(a: CloudArgs) -> Result<Exit> {
    let job = a.target.load_plan("")?.local_job();
    let pushed = ops::after_run::cloud_job(&job, a.allow_shrink, &Systemd::from_env(), &Live)?;
    if a.json {
        print_json(&pushed.cloud)?;
    } else {
        print_cloud(&pushed.cloud);
    }
    warn(&pushed.warnings);
    Ok(if pushed.cloud.ok { Exit::Success } else { Exit::Failed })
}

/// `hwc-backup health`: every check, printed; exit 1 when any fails; notifies when the
/// failures are new (or a day old), so an hourly timer does not page every hour.
pub fn health(a: HealthArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    // The plan's job (its store and, for this machine's, its cloud copy), or with `--dest` a
    // job of the store built from the arguments: built-in rules, records only.
    let job = match &t.job {
        Some(j) => j.clone(),
        None => {
            let dest = t.store.destination.path.clone();
            Job {
                store: t.store.clone(),
                ..Plan::ad_hoc(t.host_name.clone(), vec!["/".into()], dest, vec![]).local_job()
            }
        }
    };
    let report = health::check(&job.store, job.cloud(), Timestamp::now());
    let after = ops::after_run::after_health(&job, &report, t.job.is_some(), &Systemd::from_env(), &Live);
    if a.json {
        print_json(&report)?;
    } else {
        print_health(&report)?;
    }
    warn(&after.warnings);
    Ok(if report.healthy { Exit::Success } else { Exit::Failed })
}

/// `hwc-backup notify-failure --unit UNIT`: for systemd's `OnFailure=`, so that a runner the
/// OOM killer or a timeout ended still notifies. A failure the run itself notified within
/// the last ten minutes is not sent twice.
pub fn notify_failure(a: NotifyFailureArgs) -> Result<Exit> {
    let plan = a.target.load_plan("")?;
    // A pull's unit: its records and its message are the pulled host's.
    let job = match pulled_host_of_unit(&plan, &a.unit) {
        Some(name) => plan.pulled_job(&name)?,
        None => plan.local_job(),
    };
    let journal = journal_tail(&a.unit);
    let r = ops::after_run::unit_failed(&job, &a.unit, journal.as_deref(), &Systemd::from_env(), &Live);
    if let Some(job) = r.already_notified {
        println!(
            "{} failed; the {job} job finished and sent its own notification ({job} record updated within ten minutes)",
            a.unit
        );
        return Ok(Exit::Success);
    }
    warn(&r.warnings);
    let failed = r.notifications.iter().filter(|d| !d.ok).count();
    if a.json {
        print_json(&r.notifications)?;
    } else {
        println!("notified that {} failed: {} delivered, {failed} failed", a.unit, r.notifications.len() - failed);
    }
    Ok(if failed > 0 { Exit::Failed } else { Exit::Success })
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

/// The pulled host whose unit this is: `backup-host-web1.service` → `web1`, when the plan
/// declares `hosts.web1`.
fn pulled_host_of_unit(plan: &Plan, unit: &str) -> Option<String> {
    let name = unit.strip_prefix("backup-host-")?;
    let name = name.strip_suffix(".service").unwrap_or(name);
    plan.hosts.contains_key(name).then(|| name.to_string())
}
