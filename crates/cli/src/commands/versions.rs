//! `versions`: the distinct versions of one path.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::history::find;

use super::diff::one_line;
use super::print_json;
use crate::args::VersionsArgs;
use crate::exit::Exit;

pub(crate) fn versions_cmd(a: VersionsArgs) -> Result<Exit> {
    hwc_backup_engine::store::walk::rel_of(&a.path)?;
    let t = a.target.resolve()?;
    let snapshots = t.host.list()?;
    let versions = find::versions(&t.host, &snapshots, &a.path)?;
    if a.json {
        print_json(&serde_json::json!({ "path": a.path.to_string_lossy(), "versions": versions }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", one_line(&a.path))?;
        for (i, v) in versions.iter().enumerate().rev() {
            let first = v.snapshots.first().map_or("?", String::as_str);
            let last = v.snapshots.last().map_or("?", String::as_str);
            let span = if v.snapshots.len() == 1 { first.to_string() } else { format!("{first} … {last}") };
            writeln!(
                out,
                "  #{:<3} {:<7} {:>10}  mtime {}  in {} snapshot(s): {span}",
                i + 1,
                v.kind.as_str(),
                human_bytes(v.size),
                v.mtime.strftime("%Y-%m-%d %H:%M:%S"),
                v.snapshots.len()
            )?;
        }
        writeln!(out, "{} versions in {} snapshots", versions.len(), snapshots.len())?;
    }
    Ok(if versions.is_empty() { Exit::Failed } else { Exit::Success })
}
