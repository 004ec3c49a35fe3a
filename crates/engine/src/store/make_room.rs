//! Making room (`local.makeRoom`, Time Machine's thinning): a run that would not fit the
//! destination's `minFreeBytes` first removes the oldest snapshots, one at a time, until it
//! fits. Never the newest, never below `health.minBackups` snapshots (at least one stays),
//! never a pinned one (`pinned`). Each removal is a move to the trash and the trash emptied,
//! so the space is free before the next check; each is reported with the reason.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::fsutil;
use crate::plan::Destination;
use crate::run::human_bytes;
use crate::store::layout::{self, HostDir, Snapshot};
use crate::store::lock::HostLock;

/// One snapshot removed to make room, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    /// `daily/NAME`.
    pub snapshot: String,
    /// Why, in words (free space against the required).
    pub reason: String,
}

/// Whether a snapshot is pinned at `now`, the run's time (kept whatever the rules; an
/// unreadable pin counts as one, as it does for retention).
fn pinned(s: &Snapshot, now: Timestamp) -> bool {
    s.pin.holds(now)
}

/// The snapshots making room may remove at `now` (the run's time, as retention judges pins),
/// in the order it would: oldest first, never the newest, never a pinned one, and never so
/// many that fewer than `min_backups` (at least one) would be left.
pub fn candidates(snapshots: &[Snapshot], min_backups: u32, now: Timestamp) -> Vec<&Snapshot> {
    let mut by_age: Vec<&Snapshot> = snapshots.iter().collect();
    by_age.sort_by_key(|s| s.time());
    let keep = (min_backups as usize).max(1);
    let removable = by_age.len().saturating_sub(keep);
    let newest = by_age.last().map(|s| s.name.clone());
    by_age.into_iter().filter(|s| Some(&s.name) != newest.as_ref() && !pinned(s, now)).take(removable).collect()
}

/// Removes the oldest candidates one at a time until `destination` has `min_free_bytes`
/// free; what was removed. `now` is the run's time (`now --now`), at which pins are judged.
/// A `Preflight` error when it cannot make enough room.
pub fn make_room(
    host: &HostDir,
    lock: &HostLock,
    destination: &Destination,
    min_backups: u32,
    now: Timestamp,
) -> Result<Vec<Removal>> {
    let need = destination.min_free_bytes;
    // The free space of the filesystem the run holds, not of whatever is at the path now.
    let free = || fsutil::free_bytes_of(host.dir()?);
    let mut removed = Vec::new();
    // What an earlier run or prune left in the trash is room too: freed before any snapshot
    // is given up for it. If the trash cannot be emptied, no snapshot is moved into it.
    empty_trash_and_settle(host)?;
    loop {
        let have = free()?;
        if have >= need {
            return Ok(removed);
        }
        let snapshots = host.list()?;
        let Some(victim) = candidates(&snapshots, min_backups, now).first().map(|s| (*s).clone()) else {
            let mut message = format!(
                "destination {} has {} free, less than the required {}; local.makeRoom found nothing more to \
                 remove ({} snapshot(s) left: the newest, pinned ones and health.minBackups {} stay)",
                destination.path.display(),
                human_bytes(have),
                human_bytes(need),
                snapshots.len(),
                min_backups
            );
            if !removed.is_empty() {
                message.push_str(&format!(" after removing {}", ids(&removed)));
            }
            return Err(Error::Preflight(message));
        };
        let reason = format!(
            "{} free, less than the required {}: the oldest snapshot beyond health.minBackups {min_backups}",
            human_bytes(have),
            human_bytes(need)
        );
        tracing::warn!("making room: removing {} ({reason})", victim.id());
        remove(host, lock, &victim)?;
        removed.push(Removal { snapshot: victim.id(), reason });
    }
}

fn ids(removed: &[Removal]) -> String {
    removed.iter().map(|r| r.snapshot.as_str()).collect::<Vec<_>>().join(", ")
}

/// Moves `s` to the trash and empties it, so its space is free now.
fn remove(host: &HostDir, lock: &HostLock, s: &Snapshot) -> Result<()> {
    let from = host.tier_for_write(lock, s.tier)?;
    let trash = host.trash_for_write(lock)?;
    let name = layout::name_of(&s.name)?;
    let to = layout::name_of(&format!("{}.{}.room", s.name, s.tier.as_str()))?;
    from.rename(&name, &trash, &to)?;
    from.sync()?;
    host.refresh_latest(lock)?;
    empty_trash_and_settle(host)
}

/// Empties the trash and waits until the filesystem counts what it freed: a commit (`syncfs`:
/// btrfs shows space freed by unlinks only after one) and, for deleted subvolumes, the
/// kernel's cleaner. Without that the next free-space reading is stale and one more snapshot
/// than needed goes. An entry that cannot be deleted stops making room (an error naming it).
fn empty_trash_and_settle(host: &HostDir) -> Result<()> {
    let emptied = crate::store::prune::empty_trash(host).map_err(|e| {
        Error::Preflight(format!("local.makeRoom: the trash cannot be emptied, so no snapshot is removed: {e}"))
    })?;
    if emptied == 0 {
        return Ok(());
    }
    let dir = host.dir()?;
    dir.sync_filesystem()?;
    // A deleted btrfs subvolume's space comes back when the kernel's cleaner is done with it
    // and a commit has recorded that, which left alone happens every 30 s (two cycles: about
    // a minute). A commit every 200 ms meanwhile makes it a matter of the cleaner's work.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let _ = dir.sync_filesystem();
            }
        });
        let waited = dir.wait_for_deleted_subvolumes();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        waited
    })
}
