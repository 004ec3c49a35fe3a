//! Snapshots dated in the future: a clock that was wrong once, or a mistyped `--now`.
//!
//! Such a snapshot must not silence anything. The rules, applied against this machine's real
//! clock (never a run's `--now`):
//!
//! - A snapshot dated more than [`FUTURE_TOLERANCE`] after the clock is *future-dated*.
//! - Publishing while a future-dated snapshot exists (the run's own or an earlier one) is a
//!   warning in the run's report, so the run ends `partial` (exit 3) and is notified.
//! - `latest` is the snapshot of the run that published last, not the one with the greatest
//!   date: runs are serialized by the host lock, so the last publish is the run that started
//!   last in real time, whatever date it recorded. A future-dated snapshot therefore never
//!   takes `latest` from the snapshot of a run that started after it. Only when `latest` is
//!   missing or names no complete snapshot is it chosen by date: the newest snapshot that is
//!   not future-dated (the newest of all when every one is).
//! - `health` fails `newestSnapshot` while the newest snapshot is future-dated: it would
//!   otherwise look fresh until its date, hiding a job that stopped.
//!
//! The price of following the last publish rather than the greatest date: a run killed
//! between the rename that publishes its snapshot and the rename that moves `latest` leaves
//! `latest` on the previous (complete) snapshot until the next run publishes, instead of
//! having the next run's start move it by date.

use std::time::Duration;

use jiff::Timestamp;

use crate::store::layout::Snapshot;
use crate::store::meta::Warning;

/// How far ahead of the clock a snapshot may be dated before it counts as future-dated
/// (clocks of machines that sync now and then drift by seconds, not minutes).
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How far `t` lies in the future of `now`, when more than [`FUTURE_TOLERANCE`].
pub fn ahead(t: Timestamp, now: Timestamp) -> Option<Duration> {
    let secs = t.as_second().saturating_sub(now.as_second());
    (secs > FUTURE_TOLERANCE.as_secs() as i64).then(|| Duration::from_secs(secs as u64))
}

/// The snapshot `latest` stands for (see the module docs): the one named by the `latest`
/// symlink (`linked`, the last component of its target, so that a snapshot moved to another
/// tier by pruning is followed), else the newest that is not future-dated, else the newest.
/// `all` is sorted oldest first, as [`crate::store::layout::HostDir::list`] returns it.
pub fn pick_latest<'a>(all: &'a [Snapshot], linked: Option<&str>, now: Timestamp) -> Option<&'a Snapshot> {
    if let Some(s) = linked.and_then(|name| all.iter().find(|s| s.name == name)) {
        return Some(s);
    }
    all.iter().rev().find(|s| ahead(s.time(), now).is_none()).or_else(|| all.last())
}

/// The warnings of a run that published `published` (`daily/NAME`), given every snapshot
/// after publishing: one per future-dated snapshot.
pub fn future_warnings(all: &[Snapshot], published: &str, now: Timestamp) -> Vec<Warning> {
    let mut out = Vec::new();
    for s in all {
        let Some(by) = ahead(s.time(), now) else { continue };
        let when = format!("{}, {} after this machine's clock", s.time(), crate::ops::health::words(by));
        let message = if s.name == published.rsplit('/').next().unwrap_or(published) {
            format!(
                "this snapshot is dated in the future ({when}): a mistyped --now or a wrong clock? \
                 it counts as the newest snapshot for retention and `health` fails until its date \
                 has passed; remove it if its date is wrong"
            )
        } else {
            format!(
                "snapshot {} is dated in the future ({when}); `latest` stays with this run's \
                 snapshot, `health` fails until its date has passed; remove it if its date is wrong",
                s.id()
            )
        };
        out.push(Warning { path: s.path.clone(), message });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::meta::{Counts, RunState, SnapshotMeta};
    use crate::store::retention::Tier;

    fn snap(name: &str, t: Timestamp) -> Snapshot {
        let meta = SnapshotMeta {
            format: 1,
            tool: "t".into(),
            host: "h".into(),
            name: name.into(),
            state: RunState::Success,
            started_at: t,
            finished_at: t,
            walk_started_at: None,
            client_walk_started_at: None,
            utc_offset: jiff::tz::Offset::UTC,
            sources: vec![],
            exclude_patterns: vec![],
            link_base: None,
            counts: Counts::default(),
            files_per_source: Default::default(),
            warnings: vec![],
            nixos_system: None,
            source_reads: vec![],
            held_units: vec![],
        };
        Snapshot {
            tier: Tier::Daily,
            name: name.into(),
            path: format!("/d/h/daily/{name}").into(),
            meta,
            pin: crate::store::history::pin::PinState::None,
        }
    }

    #[test]
    fn tolerance_is_five_minutes() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(ahead(Timestamp::from_second(1_000_300).unwrap(), now), None);
        assert_eq!(ahead(Timestamp::from_second(1_000_301).unwrap(), now), Some(Duration::from_secs(301)));
        assert_eq!(ahead(Timestamp::from_second(0).unwrap(), now), None);
    }

    #[test]
    fn latest_follows_the_last_publish_not_the_greatest_date() {
        let now = Timestamp::from_second(10_000_000).unwrap();
        let old = snap("old", Timestamp::from_second(9_000_000).unwrap());
        let normal = snap("normal", Timestamp::from_second(9_990_000).unwrap());
        let future = snap("future", Timestamp::from_second(20_000_000).unwrap());
        let all = vec![old, normal, future];
        // `latest` names the last run's snapshot: it stays, although another is newer by date.
        assert_eq!(pick_latest(&all, Some("normal"), now).unwrap().name, "normal");
        assert_eq!(pick_latest(&all, Some("old"), now).unwrap().name, "old");
        // The run with a future date published last: it holds `latest` until the next run.
        assert_eq!(pick_latest(&all, Some("future"), now).unwrap().name, "future");
        // Missing or dangling: by date, skipping the future-dated one.
        assert_eq!(pick_latest(&all, None, now).unwrap().name, "normal");
        assert_eq!(pick_latest(&all, Some("gone"), now).unwrap().name, "normal");
        // Only future-dated snapshots: the newest of them.
        assert_eq!(pick_latest(&all[2..], None, now).unwrap().name, "future");
        assert!(pick_latest(&[], Some("x"), now).is_none());
    }

    #[test]
    fn each_future_snapshot_is_a_warning() {
        let now = Timestamp::from_second(10_000_000).unwrap();
        let all = vec![
            snap("normal", Timestamp::from_second(9_990_000).unwrap()),
            snap("future", Timestamp::from_second(10_000_000 + 86_400).unwrap()),
        ];
        let w = future_warnings(&all, "daily/future", now);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.starts_with("this snapshot is dated in the future") && w[0].message.contains("1d 0h"));
        let w = future_warnings(&all, "daily/normal", now);
        assert!(w[0].message.starts_with("snapshot daily/future is dated in the future"), "{w:?}");
        assert!(future_warnings(&all[..1], "daily/normal", now).is_empty());
    }
}
