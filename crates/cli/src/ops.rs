//! Printing what the engine did around a run (`hwc_backup_engine::ops`: the cloud push, metrics, JSON logs,
//! notifications, the records in the state directory).
//!
//! The engine decides the order and keeps the records; this module prints. Everything there
//! that is not the job itself is best effort: its failures come back as warnings, printed
//! on stderr, and never change the outcome of the backup.

use crate::commands::cloud::print_cloud;
use crate::commands::print_json;
use std::path::Path;

use anyhow::Result;
use hwc_backup_engine::job::Job;
use hwc_backup_engine::ops::{self, after_run, AfterRun, AfterRunReport, Live, StateDir, Systemd};
use hwc_backup_engine::run::RunReport;
use hwc_backup_engine::store::verify::VerifyReport;

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
        for o in &after.offsite {
            crate::commands::print_offsite(o);
        }
    }
    warn(&after.warnings);
    Ok(exit_after(report, &after))
}

fn exit_after(report: &RunReport, after: &AfterRunReport) -> Exit {
    if after.cloud_failed() || after.offsite_failed() {
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

pub(crate) fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("hwc-backup: warning: {w}");
    }
}
