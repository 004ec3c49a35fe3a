//! `prune`: apply retention to a host directory.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::layout::HostDir;
use hwc_backup_engine::store::{make_room, prune};

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
    let mut room = None;
    let decision = if a.dry_run {
        let snapshots = host.list()?;
        let mut d = prune::plan(&snapshots, &policy, now, max_age);
        // What each removal would free, and all of them together (a walk of every snapshot).
        hwc_backup_engine::store::history::du::annotate_prune(host, &snapshots, &mut d)?;
        if a.make_room {
            room = Some(room_preview(&t, &d, now)?);
        }
        d
    } else {
        let lock = hwc_backup_engine::store::lock::HostLock::acquire(host, "prune")?;
        let d = prune::plan(&host.list()?, &policy, now, max_age);
        prune::execute(host, &lock, &d)?;
        if a.make_room {
            // What retention expired frees space first.
            prune::empty_trash(host)?;
            let removed = make_room::make_room(host, &lock, &t.store.destination, t.store.health.min_backups, now);
            room = Some(match removed {
                Ok(removed) => Room {
                    dry_run: false,
                    free: free(&t)?,
                    need: t.store.destination.min_free_bytes,
                    removed,
                    error: None,
                },
                Err(e) => Room {
                    dry_run: false,
                    free: free(&t)?,
                    need: t.store.destination.min_free_bytes,
                    removed: Vec::new(),
                    error: Some(e.to_string()),
                },
            });
        }
        drop(lock);
        prune::empty_trash(host)?;
        d
    };
    if a.json {
        match &room {
            Some(room) => print_json(&serde_json::json!({ "prune": decision, "makeRoom": room }))?,
            None => print_json(&decision)?,
        }
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
        if let Some(room) = &room {
            print_room(&mut out, room)?;
        }
    }
    let room_failed = room.as_ref().is_some_and(|r| r.error.is_some());
    Ok(if decision.refused.is_some() || room_failed { Exit::Failed } else { Exit::Success })
}

/// What `--make-room` did or would do.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Room {
    dry_run: bool,
    /// Free bytes now (after, without --dry-run).
    free: u64,
    /// `minFreeBytes`.
    need: u64,
    /// Removed, or with --dry-run the candidates in the order they would go (removal stops as
    /// soon as there is room: how much each frees is known only once its hard links are gone).
    removed: Vec<make_room::Removal>,
    error: Option<String>,
}

fn free(t: &crate::target::Resolved) -> Result<u64> {
    Ok(hwc_backup_engine::fs::fsutil::free_bytes(&t.store.destination.path)?)
}

fn room_preview(t: &crate::target::Resolved, d: &prune::PrunePlan, now: jiff::Timestamp) -> Result<Room> {
    let need = t.store.destination.min_free_bytes;
    let have = free(t)?;
    let removed_ids: Vec<&str> = d.items.iter().filter(|i| !i.keep).map(|i| i.id.as_str()).collect();
    let left: Vec<_> = t.host.list()?.into_iter().filter(|s| !removed_ids.contains(&s.id().as_str())).collect();
    let removed = if have >= need {
        Vec::new()
    } else {
        make_room::candidates(&left, t.store.health.min_backups, now)
            .into_iter()
            .map(|s| make_room::Removal {
                snapshot: s.id(),
                reason: format!("{} free, less than the required {}", human_bytes(have), human_bytes(need)),
            })
            .collect()
    };
    Ok(Room { dry_run: true, free: have, need, removed, error: None })
}

fn print_room(out: &mut impl Write, room: &Room) -> Result<()> {
    if room.removed.is_empty() && room.error.is_none() {
        writeln!(out, "room enough: {} free, {} required", human_bytes(room.free), human_bytes(room.need))?;
    }
    for r in &room.removed {
        let verb = if room.dry_run { "would remove to make room" } else { "removed to make room" };
        writeln!(out, "{:<32} {verb}: {}", r.snapshot, r.reason)?;
    }
    if room.dry_run && !room.removed.is_empty() {
        writeln!(out, "(oldest first, stopping as soon as {} are free)", human_bytes(room.need))?;
    }
    if let Some(e) = &room.error {
        writeln!(out, "make room failed: {e}")?;
    }
    Ok(())
}
