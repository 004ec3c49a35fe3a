//! `restore`: paths of a snapshot back onto this machine.

use std::io::Write;

use anyhow::{bail, Result};
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::meta::Counts;
use hwc_backup_engine::store::restore::{self, Action, Filter, RestoreProgress};

use super::print_json;
use super::status::snapshot_json;
use crate::args::RestoreArgs;
use crate::exit::Exit;
use crate::progress::Progress;

pub(crate) fn restore_cmd(a: RestoreArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    if a.list {
        let snapshots = t.host.list()?;
        if a.json {
            print_json(&snapshots.iter().map(snapshot_json).collect::<Vec<_>>())?;
        } else {
            let mut out = std::io::stdout().lock();
            for s in snapshots.iter().rev() {
                let pin = s.pin.describe().map(|p| format!("  [{p}]")).unwrap_or_default();
                writeln!(
                    out,
                    "{}  {}  {}{pin}",
                    s.id(),
                    s.meta.started_local().strftime("%Y-%m-%d %H:%M:%S %:z"),
                    s.meta.state.as_str()
                )?;
            }
        }
        return Ok(Exit::Success);
    }
    let (Some(name), [paths @ .., dest]) = (&a.snapshot, a.paths.as_slice()) else {
        bail!(usage());
    };
    if paths.is_empty() {
        bail!(usage());
    }
    let filter = Filter::new(&a.includes, &a.excludes)
        .map_err(|e| hwc_backup_engine::Error::config("--include/--exclude", e.to_string()))?;
    let snapshot = t.host.resolve(name)?;
    let progress = Progress::bytes(!a.json && !a.dry_run);
    let total = |_entries: u64, bytes: u64| progress.total(bytes);
    let done = |c: &Counts| progress.done(c.bytes_copied, format!("{} entries", c.files));
    let opts = restore::RestoreOptions {
        force: a.force,
        dry_run: a.dry_run,
        delete: a.delete,
        filter: Some(&filter),
        progress: progress.is_shown().then_some(RestoreProgress { total: &total, done: &done }),
        ..Default::default()
    };
    let tier = t.host.tier_of(&snapshot)?;
    let reports = match paths {
        [one] => restore::restore(&snapshot, &tier, one, dest, opts).map(|r| vec![r]),
        several => restore::restore_into(&snapshot, &tier, several, dest, opts),
    };
    progress.finish();
    let reports = reports?;
    // Files `repair` found no good copy of are restored as they are, damaged: say which.
    for lost in hwc_backup_engine::store::repair::lost_files(&t.host, &snapshot) {
        if paths.iter().any(|p| lost.starts_with(p)) {
            eprintln!(
                "hwc-backup: warning: {} is marked lost in {} (damaged, no good copy was found); its restored content is not what was backed up",
                lost.display(),
                snapshot.id()
            );
        }
    }
    report(&reports, &a, "")
}

/// Prints restore reports (`--json`: one object, or an array for several paths), each entry on
/// its own line, deletions first; a refusal a dry run found is an error and exit 1, as the
/// restore itself would be. `from` goes before the snapshot's name (`"offsite snapshot "`).
pub(crate) fn report(reports: &[restore::RestoreReport], a: &RestoreArgs, from: &str) -> Result<Exit> {
    if a.json {
        match reports {
            [one] => print_json(one)?,
            several => print_json(&several)?,
        }
    } else {
        let mut out = std::io::stdout().lock();
        let verb = if a.dry_run { "would write" } else { "restored" };
        for report in reports {
            // Deletions first (what a --delete would remove), then what is written; one line
            // per entry, whatever the name holds: a newline in a name cannot fake another line.
            let (gone, rest): (Vec<_>, Vec<_>) = report.changes.iter().partition(|c| c.action == Action::Deleted);
            for c in gone.iter().chain(&rest) {
                let shown = c.path.display().to_string().replace('\n', "\\n").replace('\r', "\\r");
                writeln!(out, "{:<9}  {shown}", c.action.as_str())?;
            }
            let deleted = match (a.delete, a.dry_run) {
                (false, _) => String::new(),
                (true, true) => format!(", {} to delete", report.deleted),
                (true, false) => format!(", {} deleted", report.deleted),
            };
            writeln!(
                out,
                "{verb} {} from {from}{} to {} ({} entries to write, {}{deleted})",
                report.source.display(),
                report.snapshot,
                report.target.display(),
                report.entries,
                human_bytes(report.bytes)
            )?;
        }
    }
    // Only a dry run gets here with a refusal: it shows it, and fails as the restore would.
    if let Some(first) = reports.iter().find_map(|r| r.refused.first()) {
        eprintln!(
            "error: refused: {} is a directory and the snapshot has no directory there; restore never deletes a directory",
            first.display()
        );
        return Ok(Exit::Failed);
    }
    if a.dry_run && !a.force {
        if let Some(first) = reports.iter().find_map(|r| r.overwritten.first()) {
            eprintln!("error: {} exists; use --force to overwrite", first.display());
            return Ok(Exit::Failed);
        }
    }
    Ok(Exit::Success)
}

fn usage() -> hwc_backup_engine::Error {
    hwc_backup_engine::Error::config(
        "restore",
        "give --list, or SNAPSHOT PATH… DESTINATION (e.g. latest /home/alice/notes.txt /tmp/notes.txt)",
    )
}
