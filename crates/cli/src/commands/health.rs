//! `health`: the checks monitoring runs.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::job::Job;
use hwc_backup_engine::ops::health::{self, HealthReport};
use hwc_backup_engine::ops::{self, Live, Systemd};
use hwc_backup_engine::plan::Plan;
use jiff::Timestamp;

use super::print_json;
use crate::args::HealthArgs;
use crate::exit::Exit;
use crate::ops::warn;

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
    let report = health::check_job(&job, Timestamp::now());
    let after = ops::after_run::after_health(&job, &report, t.job.is_some(), &Systemd::from_env(), &Live);
    if a.json {
        print_json(&report)?;
    } else {
        print_health(&report)?;
    }
    warn(&after.warnings);
    Ok(if report.healthy { Exit::Success } else { Exit::Failed })
}

pub(crate) fn print_health(r: &HealthReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let failed = r.failures().count();
    if failed == 0 {
        writeln!(out, "backups of {}: healthy", r.host)?;
    } else {
        writeln!(out, "backups of {}: UNHEALTHY ({failed} of {} checks failed)", r.host, r.checks.len())?;
    }
    if let Some(d) = r.destination.as_ref().filter(|d| d.filesystem.is_some()) {
        writeln!(out, "  the records checked are those of {}", d.describe())?;
    }
    for c in &r.checks {
        writeln!(out, "  {} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.message)?;
    }
    Ok(())
}
