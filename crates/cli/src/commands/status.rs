//! `status`: what a destination holds for a host, and the history of the drive mounted there
//! (its last run, last verify and last cloud push: the engine's records of that drive).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use hwc_backup_engine::fs::fsutil;
use hwc_backup_engine::ops::state::DestinationId;
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::layout::Snapshot;

use super::print_json;
use crate::args::StatusArgs;
use crate::exit::Exit;

pub(crate) fn status(a: StatusArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    let state = hwc_backup_engine::ops::StateDir::new(&t.state_dir, &t.host_name);
    let mounted = DestinationId::mounted(&t.store.destination);
    let records = state.records_of(mounted.as_ref());
    check_host_dir(&t).map_err(|e| match &records.last_seen {
        Some(s) => e.context(format!(
            "no backup drive is mounted; the last drive seen there: {} (at {})",
            s.destination.describe(),
            s.seen_at
        )),
        None => e,
    })?;
    let snapshots = t.host.list()?;
    let last_run = records.last_run_report();
    let verify = records.verify();
    let cloud = records.cloud();
    // The job's offsite copies (a pulled host has none): the repository's record, not a drive's.
    let offsites: Vec<(String, Option<hwc_backup_engine::ops::state::OffsiteRecord>)> = t
        .job
        .as_ref()
        .map(|j| j.offsites().into_iter().map(|(name, _)| (name.to_string(), state.offsite(name))).collect())
        .unwrap_or_default();
    let free = t.host.root().parent().and_then(|d| fsutil::free_bytes(d).ok());
    if a.json {
        let list: Vec<_> = snapshots.iter().map(snapshot_json).collect();
        print_json(&serde_json::json!({
            "host": t.host_name, "hostDir": t.host.root(), "snapshots": list,
            "destination": mounted, "lastRun": last_run, "lastVerify": verify, "cloud": cloud,
            "offsite": offsites.iter().map(|(n, r)| (n.clone(), serde_json::json!(r))).collect::<serde_json::Map<_, _>>(),
            "freeBytes": free,
        }))?;
        return Ok(Exit::Success);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "host {} at {}", t.host_name, t.host.root().display())?;
    if let Some(d) = mounted.as_ref().filter(|d| d.filesystem.is_some()) {
        writeln!(out, "{} (the history below is this drive's)", d.describe())?;
    }
    if snapshots.is_empty() {
        writeln!(out, "  no complete snapshots yet")?;
    }
    for tier in hwc_backup_engine::store::layout::TIERS {
        let of_tier: Vec<&Snapshot> = snapshots.iter().filter(|s| s.tier == tier).collect();
        if of_tier.is_empty() {
            continue;
        }
        writeln!(out, "{} ({}):", tier.as_str(), of_tier.len())?;
        for s in of_tier.iter().rev() {
            let pin = s.pin.describe().map(|p| format!("  [{p}]")).unwrap_or_default();
            writeln!(
                out,
                "  {}  {:<7}  {} new, {} files{pin}",
                s.name,
                s.meta.state.as_str(),
                human_bytes(s.meta.counts.bytes_copied),
                s.meta.counts.files
            )?;
        }
    }
    // How the newest snapshot's sources were read (sourceSnapshots): which kind of snapshot.
    if let Some(newest) = snapshots.iter().max_by_key(|s| s.meta.started_at) {
        if !newest.meta.source_reads.is_empty() {
            writeln!(out, "sources of {}:", newest.name)?;
            for r in &newest.meta.source_reads {
                writeln!(out, "  {}", super::now::describe_read(r))?;
            }
        }
    }
    if let Some(lr) = last_run {
        let state = lr["state"].as_str().unwrap_or("?");
        let when = lr["startedAt"].as_str().unwrap_or("?");
        let err = lr["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
        writeln!(out, "last run: {state} at {when}{err}")?;
    }
    if let Some(v) = verify {
        let result = if v.is_clean() {
            format!("clean, {} files", v.files_checked)
        } else {
            format!("{} problem(s) in {}", v.errors, v.damaged.join(", "))
        };
        writeln!(out, "last verify: {result} at {}", v.finished_at)?;
    }
    if let Some(c) = cloud {
        match (c.last_ok, &c.last_success, &c.last_error) {
            (true, Some(t), _) => writeln!(out, "last cloud push: ok at {t} to {}", c.destination)?,
            (_, ok, e) => writeln!(
                out,
                "last cloud push: FAILED{}{}",
                e.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                ok.map(|t| format!(" (last good push at {t})")).unwrap_or_default()
            )?,
        }
    }
    for (name, r) in &offsites {
        match r {
            None => writeln!(out, "offsite {name}: never copied")?,
            Some(r) => {
                let copy = match (r.last_ok, &r.last_success, &r.last_error) {
                    (true, Some(t), _) => format!(
                        "ok at {t} ({} as restic {})",
                        r.last_success_snapshot.as_deref().unwrap_or("?"),
                        r.last_success_restic_snapshot.as_deref().unwrap_or("?")
                    ),
                    (_, ok, e) => format!(
                        "FAILED{}{}",
                        e.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                        ok.map(|t| format!(" (last good copy at {t})")).unwrap_or_default()
                    ),
                };
                let check = match (r.last_check_ok, &r.last_check) {
                    (Some(true), Some(t)) => format!("; last check clean at {t}"),
                    (Some(false), _) => {
                        format!("; last check FAILED: {}", r.last_check_error.as_deref().unwrap_or("?"))
                    }
                    _ => String::new(),
                };
                writeln!(out, "offsite {name} ({}): {copy}{check}", r.repository)?;
            }
        }
    }
    if let Some(f) = free {
        writeln!(out, "free at destination: {}", human_bytes(f))?;
    }
    Ok(Exit::Success)
}

/// `status` reports only what is there: a destination that is missing or (when the plan
/// requires it) not mounted, or a host directory that does not exist, is an error that lists
/// the host directories the destination does hold.
pub(crate) fn check_host_dir(t: &crate::target::Resolved) -> Result<()> {
    let root = t.host.root();
    let dest = root.parent().unwrap_or(Path::new("/"));
    let others = || {
        let hosts = host_dirs(dest);
        if hosts.is_empty() {
            "it holds no host directories".to_string()
        } else {
            format!("host directories there: {} (choose one with --host NAME)", hosts.join(", "))
        }
    };
    if let Err(e) = std::fs::metadata(dest) {
        bail!("destination {} is not available ({e}); is the backup drive plugged in and mounted?", dest.display());
    }
    let must_mount = t.store.destination.require_mount_point;
    if must_mount && !fsutil::is_mount_point(dest)? {
        bail!(
            "destination {} is not a mount point (is the backup drive plugged in and mounted?); {}",
            dest.display(),
            others()
        );
    }
    if !root.is_dir() {
        bail!("no host directory {} at {}; {}", t.host_name, dest.display(), others());
    }
    Ok(())
}

/// The directories below `dest` that look like host directories (hold a tier or `latest`).
pub(crate) fn host_dirs(dest: &Path) -> Vec<String> {
    use hwc_backup_engine::fs::{Dir, Name};
    let Ok(dir) = Dir::open_trusted(dest) else { return Vec::new() };
    let marks = ["latest", "daily", "weekly", "monthly", "hourly", "yearly", ".incomplete", ".lock"];
    let is_host = |d: &Dir| marks.iter().any(|m| d.stat(&Name::fixed(m)).is_ok_and(|st| st.is_some()));
    let mut hosts: Vec<String> = dir
        .entries()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind == rustix::fs::FileType::Directory)
        .filter(|e| dir.open_dir(&e.name).is_ok_and(|d| is_host(&d)))
        .map(|e| e.name.to_string())
        .collect();
    hosts.sort();
    hosts
}

pub(crate) fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": s.id(), "tier": s.tier, "name": s.name, "path": s.path, "state": s.meta.state,
        "startedAt": s.meta.started_at, "utcOffset": s.meta.started_local().offset().to_string(),
        "bytesCopied": s.meta.counts.bytes_copied, "bytesLinked": s.meta.counts.bytes_linked,
        "files": s.meta.counts.files, "warnings": s.meta.counts.warnings,
        "pin": s.pin.pin(), "pinned": s.pin.describe(),
        "sourceReads": s.meta.source_reads,
    })
}
