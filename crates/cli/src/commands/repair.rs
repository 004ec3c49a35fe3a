//! `repair`: replace damaged files found by verify with a good copy, or mark them lost.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::copies::offsite::Restic;
use hwc_backup_engine::ops::state::{DestinationId, StateDir};
use hwc_backup_engine::store::lock::HostLock;
use hwc_backup_engine::store::repair::{self, LiveSources, RepairReport};

use super::print_json;
use crate::args::RepairArgs;
use crate::exit::Exit;

pub(crate) fn repair_cmd(a: RepairArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    // Refuses while a backup, prune or push holds the host.
    let lock = HostLock::acquire(&t.host, "repair")?;
    let dest = t.host.root().parent().unwrap_or(std::path::Path::new("/"));
    let scope = StateDir::new(&t.state_dir, &t.host_name).destination(&DestinationId::of(dest));
    let damage = scope.damage();
    // Good copies from the plan's offsite repositories when the source no longer has one
    // (this machine's own job only: a pulled host's snapshots are not copied offsite here).
    let mut offsites = Vec::new();
    for (name, o) in t.job.as_ref().map(|j| j.offsites()).unwrap_or_default() {
        match Restic::of(o) {
            Ok(restic) => offsites.push(repair::OffsiteSource { name: name.into(), restic, host: t.host_name.clone() }),
            Err(e) => eprintln!("hwc-backup: warning: offsite {name} cannot give good copies: {e}"),
        }
    }
    let live = live_sources(&t);
    let (report, record) = repair::repair(&t.host, &lock, &damage, &live, &offsites, a.dry_run)?;
    if !a.dry_run {
        scope.write_damage(&record)?;
        // The last verify's damage that is now repaired or marked lost no longer counts.
        let handled = damage.files.len().saturating_sub(record.files.len()) as u64;
        if let (Some(mut rec), true) = (scope.verify(&DestinationId::of(dest)), handled > 0) {
            rec.repaired = (rec.repaired + handled).min(rec.errors);
            scope.write_verify(&rec)?;
        }
    }
    drop(lock);
    if a.json {
        print_json(&report)?;
    } else {
        print_repair(&report)?;
    }
    Ok(if report.failed.is_empty() { Exit::Success } else { Exit::Failed })
}

/// Which live files may give good copies: the plan's sources for this machine's job; none for
/// a pulled host (its files are on that machine); any with `--dest` and no plan, where the
/// operator names the destination and no sources are known (the hash check still holds).
fn live_sources(t: &crate::target::Resolved) -> LiveSources {
    match &t.job {
        Some(job) if job.pulled().is_some() => LiveSources::Nowhere(format!(
            "{} is a pulled host: its live files are on that machine, not here",
            t.host_name
        )),
        Some(job) => LiveSources::Below(job.sources.paths.clone()),
        None => LiveSources::Anywhere,
    }
}

fn print_repair(r: &RepairReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let would = if r.dry_run { "would be " } else { "" };
    if r.repaired.is_empty() && r.lost.is_empty() && r.failed.is_empty() {
        writeln!(out, "no damaged file is recorded for this drive; nothing to repair")?;
    }
    for f in &r.repaired {
        let from = if f.note == "source" { "the live source" } else { &f.note };
        writeln!(out, "{}: {would}replaced from {from} in {}", f.path, f.snapshots.join(", "))?;
    }
    for f in &r.lost {
        writeln!(out, "{}: {would}marked lost in {}: {}", f.path, f.snapshots.join(", "), f.note)?;
    }
    for f in &r.failed {
        writeln!(out, "{}: NOT repaired in {}: {}", f.path, f.snapshots.join(", "), f.note)?;
    }
    Ok(())
}
