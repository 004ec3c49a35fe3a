//! `find`: which snapshots hold paths matching a pattern, or one path.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::source::exclude::ExcludeSet;
use hwc_backup_engine::store::history::find::{self, Query};

use super::diff::one_line;
use super::print_json;
use crate::args::FindArgs;
use crate::exit::Exit;

pub(crate) fn find_cmd(a: FindArgs) -> Result<Exit> {
    let query = match &a.path {
        Some(p) => {
            hwc_backup_engine::store::walk::rel_of(p)?;
            Query::Path(p.clone())
        }
        None => Query::Patterns(
            ExcludeSet::new(&a.patterns).map_err(|e| hwc_backup_engine::Error::config("PATTERN", e.to_string()))?,
        ),
    };
    let t = a.target.resolve()?;
    let snapshots = t.host.list()?;
    let hits = find::find(&t.host, &snapshots, &query)?;
    if a.json {
        print_json(&hits)?;
    } else {
        let mut out = std::io::stdout().lock();
        for h in hits.iter().rev() {
            let same = match h.same_as_newer {
                None => "newest",
                Some(true) => "same as newer",
                Some(false) => "differs from newer",
            };
            writeln!(
                out,
                "{:<28} {:<7} {:>10}  {}  {:<18}  {}",
                h.snapshot,
                h.kind.as_str(),
                human_bytes(h.size),
                h.mtime.strftime("%Y-%m-%d %H:%M:%S"),
                same,
                one_line(&h.path)
            )?;
        }
        writeln!(out, "{} matches in {} snapshots", hits.len(), snapshots.len())?;
    }
    // Like grep: nothing found is exit 1.
    Ok(if hits.is_empty() { Exit::Failed } else { Exit::Success })
}
