//! `du`: what each snapshot holds alone, shares, and would free.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::history::du;

use super::print_json;
use crate::args::DuArgs;
use crate::exit::Exit;

pub(crate) fn du_cmd(a: DuArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    let snapshots = t.host.list()?;
    let u = du::usage(&t.host, &snapshots)?;
    if a.json {
        print_json(&u)?;
        return Ok(Exit::Success);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<28} {:>10} {:>10} {:>10} {:>10}", "SNAPSHOT", "TOTAL", "ONLY HERE", "SHARED", "FREES")?;
    for s in u.snapshots.iter().rev() {
        let pin = s.pinned.as_deref().map(|p| format!("  [{p}]")).unwrap_or_default();
        writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>10} {:>10}{pin}",
            s.id,
            human_bytes(s.bytes),
            human_bytes(s.only_bytes),
            human_bytes(s.shared_bytes),
            human_bytes(s.frees_bytes)
        )?;
    }
    writeln!(
        out,
        "{} snapshots: {} in all ({} in one snapshot only, {} shared), {} on disk",
        u.snapshots.len(),
        human_bytes(u.total_bytes),
        human_bytes(u.only_bytes),
        human_bytes(u.shared_bytes),
        human_bytes(u.total_disk_bytes)
    )?;
    if u.reflinked > 0 {
        writeln!(
            out,
            "note: {} files share blocks with an older copy (reflinks on btrfs/XFS); their shared blocks are \
             counted in full, so the disk and FREES figures are upper bounds (`btrfs filesystem du` or \
             `compsize` on btrfs, `xfs_io -c fiemap` on XFS, tell shared extents)",
            u.reflinked
        )?;
    }
    Ok(Exit::Success)
}
