//! `restore`: a path of a snapshot back onto this machine.

use std::io::Write;

use anyhow::{bail, Result};
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::restore;

use super::print_json;
use super::status::snapshot_json;
use crate::args::RestoreArgs;
use crate::exit::Exit;

pub(crate) fn restore_cmd(a: RestoreArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    if a.list {
        let snapshots = t.host.list()?;
        if a.json {
            print_json(&snapshots.iter().map(snapshot_json).collect::<Vec<_>>())?;
        } else {
            let mut out = std::io::stdout().lock();
            for s in snapshots.iter().rev() {
                writeln!(
                    out,
                    "{}  {}  {}",
                    s.id(),
                    s.meta.started_local().strftime("%Y-%m-%d %H:%M:%S %:z"),
                    s.meta.state.as_str()
                )?;
            }
        }
        return Ok(Exit::Success);
    }
    let (Some(name), Some(path), Some(dest)) = (&a.snapshot, &a.path, &a.destination) else {
        bail!(hwc_backup_engine::Error::config(
            "restore",
            "give --list, or SNAPSHOT PATH DESTINATION (e.g. latest /home/alice/notes.txt /tmp/notes.txt)"
        ));
    };
    let snapshot = t.host.resolve(name)?;
    let opts = restore::RestoreOptions { force: a.force, dry_run: a.dry_run };
    let report = restore::restore(&snapshot, path, dest, opts)?;
    // Files `repair` found no good copy of are restored as they are, damaged: say which.
    for lost in hwc_backup_engine::store::repair::lost_files(&t.host, &snapshot) {
        if lost.starts_with(path) {
            eprintln!(
                "hwc-backup: warning: {} is marked lost in {} (damaged, no good copy was found); its restored content is not what was backed up",
                lost.display(),
                snapshot.id()
            );
        }
    }
    if a.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        let verb = if a.dry_run { "would write" } else { "restored" };
        for c in &report.changes {
            // One line per entry, whatever the name holds: a newline in a name cannot fake
            // another line.
            let shown = c.path.display().to_string().replace('\n', "\\n").replace('\r', "\\r");
            writeln!(out, "{:<9}  {shown}", c.action.as_str())?;
        }
        writeln!(
            out,
            "{verb} {} from {} to {} ({} entries to write, {})",
            report.source.display(),
            report.snapshot,
            report.target.display(),
            report.entries,
            human_bytes(report.bytes)
        )?;
    }
    // Only a dry run gets here with a refusal: it shows it, and fails as the restore would.
    if let Some(first) = report.refused.first() {
        eprintln!(
            "error: refused: {} is a directory and the snapshot has no directory there; restore never deletes a directory",
            first.display()
        );
        return Ok(Exit::Failed);
    }
    if a.dry_run && !a.force {
        if let Some(first) = report.overwritten.first() {
            eprintln!("error: {} exists; use --force to overwrite", first.display());
            return Ok(Exit::Failed);
        }
    }
    Ok(Exit::Success)
}
