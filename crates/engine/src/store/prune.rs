//! Applying retention to a host directory.
//!
//! [`plan`] is pure: (complete snapshots, policy, now) → for every snapshot, keep in which
//! tier and why, or remove. [`execute`] applies such a plan by renames only: kept snapshots
//! move to the directory of the finest tier that keeps them, expired ones are renamed into
//! `.trash/` (instant and atomic). The slow delete happens later in [`empty_trash`], outside
//! the lock; if it is interrupted, the next run finishes it.
//!
//! Safety rules that other tools break: the newest complete snapshot is always kept; a policy
//! that keeps nothing is refused; and nothing is pruned while the newest complete snapshot is
//! older than the health threshold, so a broken job cannot let retention eat the history.

use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fs::{Dir, Name};
use crate::store::layout::{HostDir, Snapshot};
use crate::store::lock::HostLock;
use crate::store::retention::{self, Policy, SnapshotTime, Tier};

/// What happens to one snapshot.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PruneItem {
    /// `daily/NAME` as it is now.
    pub id: String,
    /// The directory name.
    pub name: String,
    /// Start time (UTC).
    pub time: Timestamp,
    /// Whether it stays.
    pub keep: bool,
    /// The tier it belongs in when kept.
    pub tier: Option<Tier>,
    /// Why it is kept (restic's words), empty when removed.
    pub reasons: Vec<String>,
    /// Its pin, when one holds it (`pinned until …: note`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// What removing it alone frees on disk (bytes of the blocks of the inodes no other
    /// snapshot holds), when computed (`prune --dry-run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frees_bytes: Option<u64>,
}

/// The decision for a whole host directory.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PrunePlan {
    /// Every complete snapshot, newest first.
    pub items: Vec<PruneItem>,
    /// Set when pruning was refused; then nothing is removed or moved.
    pub refused: Option<String>,
    /// What all the removals together free on disk, when computed (`prune --dry-run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frees_bytes: Option<u64>,
}

impl PrunePlan {
    /// How many snapshots the plan removes.
    pub fn removals(&self) -> usize {
        if self.refused.is_some() {
            return 0;
        }
        self.items.iter().filter(|i| !i.keep).count()
    }
}

/// Decides what to keep. `max_age` is the health threshold as configured (`"48h"`): if the
/// newest snapshot is older than that at `now`, the plan is refused.
pub fn plan(snapshots: &[Snapshot], policy: &Policy, now: Timestamp, max_age: &str) -> PrunePlan {
    let times: Vec<SnapshotTime> =
        snapshots.iter().map(|s| SnapshotTime::new(s.meta.started_at, s.meta.utc_offset)).collect();
    let decision = retention::apply(&times, policy, now);
    let mut items: Vec<PruneItem> = snapshots
        .iter()
        .map(|s| PruneItem {
            id: s.id(),
            name: s.name.clone(),
            time: s.time(),
            keep: false,
            tier: None,
            reasons: Vec::new(),
            pinned: s.pin.describe_at(now),
            frees_bytes: None,
        })
        .collect();
    for kept in &decision.keep {
        let item = &mut items[kept.index];
        item.keep = true;
        item.tier = Some(retention::tier_for(kept));
        item.reasons = kept.reasons.clone();
    }
    // The newest complete snapshot is never removed, whatever the policy says.
    if let Some(newest) = newest_index(snapshots) {
        let item = &mut items[newest];
        if !item.keep {
            item.keep = true;
            item.tier = Some(Tier::Daily);
            item.reasons.push("newest complete snapshot".into());
        }
    }
    // A pinned snapshot is never removed (until its pin's date); one that retention would
    // remove stays in the tier it is in.
    for (s, item) in snapshots.iter().zip(items.iter_mut()) {
        if s.pin.holds(now) {
            item.reasons.push(s.pin.describe_at(now).unwrap_or_else(|| "pinned".into()));
            if !item.keep {
                item.keep = true;
                item.tier = Some(s.tier);
            }
        } else {
            item.pinned = None;
        }
    }
    let refused = refuse_reason(snapshots, policy, now, max_age);
    items.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    PrunePlan { items, refused, frees_bytes: None }
}

fn newest_index(snapshots: &[Snapshot]) -> Option<usize> {
    (0..snapshots.len()).max_by(|&a, &b| {
        snapshots[a].time().cmp(&snapshots[b].time()).then_with(|| snapshots[a].name.cmp(&snapshots[b].name))
    })
}

fn refuse_reason(snapshots: &[Snapshot], policy: &Policy, now: Timestamp, max_age_text: &str) -> Option<String> {
    // Validated when the plan was loaded; a bad value here refuses rather than prunes.
    let Ok(max_age) = crate::plan::parse_duration(max_age_text) else {
        return Some(format!("health.maxAge {max_age_text:?} is not a duration"));
    };
    if policy.is_empty() {
        return Some("the retention policy keeps nothing".into());
    }
    let newest = snapshots.iter().map(Snapshot::time).max()?;
    let age = now.duration_since(newest);
    let max = jiff::SignedDuration::try_from(max_age).unwrap_or(jiff::SignedDuration::MAX);
    (age > max).then(|| {
        format!(
            "the newest complete snapshot is from {newest}, older than the health threshold ({}); \
             pruning is suspended until a new backup succeeds",
            max_age_text
        )
    })
}

/// Applies a plan by renames: moves kept snapshots to their tier, expired ones to the trash,
/// then points `latest` at the newest. Nothing happens when the plan was refused.
pub fn execute(host: &HostDir, lock: &HostLock, plan: &PrunePlan) -> Result<()> {
    if plan.refused.is_some() {
        return Ok(());
    }
    // Expire first, oldest first: an interruption then leaves more, never less.
    for item in plan.items.iter().rev().filter(|i| !i.keep) {
        move_to_trash(host, lock, &item.id, &item.name)?;
    }
    for item in plan.items.iter().filter(|i| i.keep) {
        let tier = item.tier.unwrap_or(Tier::Daily);
        let want = format!("{}/{}", tier.as_str(), item.name);
        if want != item.id {
            let name = crate::store::layout::name_of(&item.name)?;
            let from = tier_of(host, &item.id)?;
            let to = host.tier_for_write(lock, tier)?;
            from.rename_noreplace(&name, &to, &name)?;
            to.sync()?;
            from.sync()?;
        }
    }
    host.refresh_latest(lock)?;
    host.dir()?.sync()
}

/// The open tier directory of an id `TIER/NAME`.
fn tier_of(host: &HostDir, id: &str) -> Result<Dir> {
    let tier = id
        .split('/')
        .next()
        .and_then(Tier::from_name)
        .ok_or_else(|| Error::Snapshot { name: id.to_string(), message: "is not TIER/NAME".into() })?;
    host.tier(tier)?
        .ok_or_else(|| Error::Snapshot { name: id.to_string(), message: "its tier directory is gone".into() })
}

fn move_to_trash(host: &HostDir, lock: &HostLock, id: &str, name: &str) -> Result<()> {
    let trash = host.trash_for_write(lock)?;
    let from = tier_of(host, id)?;
    let to = crate::store::layout::name_of(&format!("{name}.{}", id.split('/').next().unwrap_or("snapshot")))?;
    from.rename(&crate::store::layout::name_of(name)?, &trash, &to)
}

/// Moves the entry `name` of `dir` (a leftover of an interrupted run, in `.incomplete/`)
/// into the trash.
pub fn trash_entry(host: &HostDir, lock: &HostLock, dir: &Dir, name: &Name) -> Result<()> {
    let trash = host.trash_for_write(lock)?;
    let to = Name::new(format!("{name}.incomplete.{}", std::process::id()))
        .map_err(|e| Error::Unsafe { path: dir.child_path(name), message: e.to_string() })?;
    dir.rename(name, &trash, &to)
}

/// Deletes everything in the trash. Safe to run without the lock and to interrupt: each
/// entry is already out of every tier, and whatever remains is deleted by the next call.
/// A stray file in the trash is removed like any entry. An entry that cannot be deleted is
/// skipped (the others still go) and its error returned at the end.
///
/// The deletion runs on a thread of its own in the idle I/O class, so that the hundreds of
/// thousands of unlinks of an expired snapshot wait for any other disk I/O (Linux keeps I/O
/// priority per thread). The systemd units already run the whole job that way; this covers a
/// `hwc-backup now` or `prune` typed in a shell.
pub fn empty_trash(host: &HostDir) -> Result<u64> {
    let Some(trash) = host.trash()? else { return Ok(0) };
    let entries = trash.entries()?;
    if entries.is_empty() {
        return Ok(0);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            match crate::fs::fsutil::idle_io_priority_for_this_thread() {
                Ok(class) => tracing::debug!("emptying the trash in I/O class {class}"),
                Err(e) => tracing::debug!("emptying the trash at normal I/O priority: {e}"),
            }
            // One entry that cannot go (a mount point planted there, a read-only nested
            // subvolume) must not keep the others, and the space they hold, from going.
            let mut first_error = None;
            let mut removed = 0;
            for e in &entries {
                match trash.remove_snapshot(&e.name) {
                    Ok(()) => removed += 1,
                    Err(err) => {
                        tracing::warn!("emptying the trash: {err}");
                        first_error.get_or_insert(err);
                    }
                }
            }
            match first_error {
                None => Ok(removed),
                Some(e) => Err(e),
            }
        })
        .join()
        .expect("the trash deletion thread does not panic")
    })
}
