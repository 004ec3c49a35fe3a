//! `prune`: apply retention to a host directory.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::layout::HostDir;
use hwc_backup_engine::store::prune;

use super::{parse_now, print_json};
use crate::args::PruneArgs;
use crate::exit::Exit;

pub(crate) fn prune_cmd(a: PruneArgs) -> Result<Exit> {
    let now = parse_now(&a.now)?.map_or_else(jiff::Timestamp::now, |z| z.timestamp());
    let t = a.target.resolve()?;
    // The rules of the job's store, or the built-in ones with `--dest`.
    let policy = t.store.retention_policy()?;
    let max_age = &t.store.health.max_age;
    let host: &HostDir = &t.host;
    let decision = if a.dry_run {
        let snapshots = host.list()?;
        let mut d = prune::plan(&snapshots, &policy, now, max_age);
        // What each removal would free, and all of them together (a walk of every snapshot).
        hwc_backup_engine::store::history::du::annotate_prune(host, &snapshots, &mut d)?;
        d
    } else {
        let lock = hwc_backup_engine::store::lock::HostLock::acquire(host, "prune")?;
        let d = prune::plan(&host.list()?, &policy, now, max_age);
        prune::execute(host, &lock, &d)?;
        drop(lock);
        prune::empty_trash(host)?;
        d
    };
    if a.json {
        print_json(&decision)?;
    } else {
        let mut out = std::io::stdout().lock();
        for i in &decision.items {
            let action = match (i.keep, i.tier) {
                (true, Some(t)) if format!("{}/{}", t.as_str(), i.name) != i.id => {
                    format!("keep → {}", t.as_str())
                }
                (true, _) => "keep".to_string(),
                (false, _) => "remove".to_string(),
            };
            let frees = i.frees_bytes.map(|b| format!("frees {}  ", human_bytes(b))).unwrap_or_default();
            writeln!(out, "{:<32} {:<16} {frees}{}", i.id, action, i.reasons.join(", "))?;
        }
        if let Some(total) = decision.frees_bytes {
            writeln!(
                out,
                "would remove {} of {} snapshots, freeing {} in all",
                decision.removals(),
                decision.items.len(),
                human_bytes(total)
            )?;
        }
        if let Some(r) = &decision.refused {
            writeln!(out, "prune refused: {r}")?;
        }
    }
    Ok(if decision.refused.is_some() { Exit::Failed } else { Exit::Success })
}
