//! `diff`: what changed between two snapshots.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::history::diff::{self, ChangeKind};
use hwc_backup_engine::store::layout::Snapshot;

use super::print_json;
use crate::args::DiffArgs;
use crate::exit::Exit;

/// A path on one line, whatever its name holds.
pub(crate) fn one_line(p: &std::path::Path) -> String {
    p.to_string_lossy().replace('\n', "\\n").replace('\r', "\\r")
}

/// `daily/NAME (pinned: note)`.
pub(crate) fn label(s: &Snapshot) -> String {
    match s.pin.describe() {
        Some(p) => format!("{} ({p})", s.id()),
        None => s.id(),
    }
}

pub(crate) fn diff_cmd(a: DiffArgs) -> Result<Exit> {
    let (paths, names): (Vec<&String>, Vec<&String>) = a.args.iter().partition(|x| x.starts_with('/'));
    if paths.len() > 1 || names.len() > 2 {
        bail!(hwc_backup_engine::Error::config(
            "diff",
            "takes at most two snapshots and one absolute PATH (e.g. diff daily/A daily/B /etc)"
        ));
    }
    let path = paths.first().map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let t = a.target.resolve()?;
    let all = t.host.list()?;
    let (old, new) = match names.as_slice() {
        [] => {
            if all.len() < 2 {
                bail!(hwc_backup_engine::Error::Snapshot {
                    name: "diff".into(),
                    message: format!("needs two snapshots; {} holds {}", t.host.root().display(), all.len()),
                });
            }
            (all[all.len() - 2].clone(), all[all.len() - 1].clone())
        }
        [one] => {
            let old = t.host.resolve(one)?;
            let new = all.last().cloned().expect("resolve found one");
            (old, new)
        }
        [x, y] => (t.host.resolve(x)?, t.host.resolve(y)?),
        _ => unreachable!("checked above"),
    };
    let d = diff::diff(&t.host, &old, &new, &path)?;
    if a.json {
        let mut v = serde_json::to_value(&d)?;
        v["fromPin"] = serde_json::to_value(old.pin.describe())?;
        v["toPin"] = serde_json::to_value(new.pin.describe())?;
        print_json(&v)?;
        return Ok(Exit::Success);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} → {}{}",
        label(&old),
        label(&new),
        if d.path.as_os_str() == "/" { String::new() } else { format!(" below {}", one_line(&d.path)) }
    )?;
    for c in &d.changes {
        let kind = match (c.change, c.old_kind) {
            (ChangeKind::Type, Some(o)) => format!("{}→{}", o.as_str(), c.kind.as_str()),
            _ => c.kind.as_str().to_string(),
        };
        let size = match c.change {
            ChangeKind::Removed => human_bytes(c.old_size),
            ChangeKind::Modified if c.old_size != c.size => {
                format!("{} → {}", human_bytes(c.old_size), human_bytes(c.size))
            }
            _ => human_bytes(c.size),
        };
        let what = if c.what.is_empty() { String::new() } else { format!("  ({})", c.what.join(", ")) };
        writeln!(out, "{} {:<12} {:>21}  {}{what}", c.change.mark(), kind, size, one_line(&c.path))?;
    }
    let s = &d.summary;
    writeln!(
        out,
        "{} added ({}), {} removed ({}), {} modified ({}), {} metadata only, {} type changes; {} unchanged (hard-linked)",
        s.added,
        human_bytes(s.bytes_added),
        s.removed,
        human_bytes(s.bytes_removed),
        s.modified,
        human_bytes(s.bytes_modified),
        s.metadata,
        s.type_changed,
        s.unchanged_linked
    )?;
    Ok(Exit::Success)
}
