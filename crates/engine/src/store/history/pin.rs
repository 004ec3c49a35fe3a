//! Pins: a snapshot that is never pruned (until a date, when one is given), with a note.
//!
//! The pin lives in the snapshot's own `.hwc-backup/pin.json`, so it moves with the snapshot
//! between tiers and survives a lost state directory. It is written with
//! [`crate::fs::Dir::write_atomic`] under the host lock, through the host directory's handle:
//! a symlink planted at the snapshot, at `.hwc-backup` or at `pin.json` is refused or
//! replaced, never followed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::{Dir, Name};
use crate::store::layout::{HostDir, Snapshot};
use crate::store::lock::HostLock;
use crate::store::meta::META_DIR;

/// The pin file inside a snapshot's `.hwc-backup/`.
pub const PIN_FILE: &str = "pin.json";

/// Largest pin file read.
const PIN_LIMIT: u64 = 64 << 10;

/// Longest note kept.
pub const MAX_NOTE: usize = 4096;

/// A pin on one snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// When it was pinned.
    pub pinned_at: Timestamp,
    /// Kept until this time; `None`: for ever (until `unpin`).
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// Why (free text).
    #[serde(default)]
    pub note: Option<String>,
}

impl Pin {
    /// A pin made at `now`; a note is checked (one line of at most [`MAX_NOTE`] bytes).
    pub fn new(now: Timestamp, until: Option<Timestamp>, note: Option<String>) -> Result<Pin> {
        if let Some(n) = &note {
            if n.len() > MAX_NOTE || n.chars().any(char::is_control) {
                return Err(Error::config(
                    "--note",
                    format!("must be one line of at most {MAX_NOTE} bytes without control characters"),
                ));
            }
        }
        Ok(Pin { pinned_at: now, until, note: note.filter(|n| !n.is_empty()) })
    }

    /// Whether it still holds at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|u| now < u)
    }

    /// `pinned until 2025-03-01T00:00:00Z: before nixos-rebuild switch`, or `pin expired
    /// 2025-03-01T00:00:00Z: …` when it no longer holds at `now` (the snapshot is pruned as
    /// any other then).
    pub fn describe(&self) -> String {
        self.describe_at(Timestamp::now())
    }

    /// [`Pin::describe`] at `now`.
    pub fn describe_at(&self, now: Timestamp) -> String {
        let mut s = match self.until {
            Some(u) if !self.active(now) => format!("pin expired {u}"),
            Some(u) => format!("pinned until {u}"),
            None => "pinned".to_string(),
        };
        if let Some(n) = &self.note {
            s.push_str(": ");
            s.push_str(n);
        }
        s
    }
}

/// What [`read_in`] found in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinState {
    /// No pin.
    None,
    /// A pin.
    Pinned(Pin),
    /// A `pin.json` that cannot be read (a symlink, garbage): the snapshot is kept as if
    /// pinned, since a pin is only ever a reason to keep, and the message says why.
    Unreadable(String),
}

impl PinState {
    /// The pin, when there is a readable one.
    pub fn pin(&self) -> Option<&Pin> {
        match self {
            PinState::Pinned(p) => Some(p),
            _ => None,
        }
    }

    /// Whether it keeps the snapshot at `now`.
    pub fn holds(&self, now: Timestamp) -> bool {
        match self {
            PinState::None => false,
            PinState::Pinned(p) => p.active(now),
            PinState::Unreadable(_) => true,
        }
    }

    /// For people, now: `pinned: note`, `pin expired …`, `pin.json unreadable: …`, or nothing.
    pub fn describe(&self) -> Option<String> {
        self.describe_at(Timestamp::now())
    }

    /// [`PinState::describe`] at `now` (a prune's `--now`).
    pub fn describe_at(&self, now: Timestamp) -> Option<String> {
        match self {
            PinState::None => None,
            PinState::Pinned(p) => Some(p.describe_at(now)),
            PinState::Unreadable(e) => Some(format!("pin unreadable, kept as pinned: {e}")),
        }
    }
}

/// Reads the pin of an open snapshot directory (its tier entry already opened without
/// following a symlink).
pub fn read_in(snapshot: &Dir) -> PinState {
    let meta = match snapshot.try_open_dir(&Name::fixed(META_DIR)) {
        Ok(Some(m)) => m,
        Ok(None) => return PinState::None,
        Err(e) => return PinState::Unreadable(e.to_string()),
    };
    let name = Name::fixed(PIN_FILE);
    match meta.read_file(&name, PIN_LIMIT) {
        Ok(None) => PinState::None,
        Ok(Some(text)) => match serde_json::from_slice::<Pin>(&text) {
            Ok(p) => PinState::Pinned(p),
            Err(e) => PinState::Unreadable(format!("{}: {e}", meta.child_path(&name).display())),
        },
        Err(e) => PinState::Unreadable(e.to_string()),
    }
}

/// Pins a snapshot (replacing an earlier pin of it), under the host lock.
pub fn write(host: &HostDir, _lock: &HostLock, s: &Snapshot, pin: &Pin) -> Result<()> {
    let snap = host.open_snapshot(s)?;
    let meta = snap.open_dir(&Name::fixed(META_DIR))?;
    let mut text = serde_json::to_vec_pretty(pin).expect("a pin serializes");
    text.push(b'\n');
    // A snapshot of the btrfs store is read-only: writable for the moment of the write.
    crate::store::btrfs::writable(&snap, || meta.write_atomic(&Name::fixed(PIN_FILE), &text))
}

/// Removes the pin of a snapshot; `false` when it had none.
pub fn remove(host: &HostDir, _lock: &HostLock, s: &Snapshot) -> Result<bool> {
    let snap = host.open_snapshot(s)?;
    let meta = snap.open_dir(&Name::fixed(META_DIR))?;
    crate::store::btrfs::writable(&snap, || {
        let removed = meta.remove_file(&Name::fixed(PIN_FILE))?;
        if removed {
            meta.sync()?;
        }
        Ok(removed)
    })
}

/// Parses `--until`: a date (`2025-03-01`, midnight local time) or an RFC 3339 time.
pub fn parse_until(text: &str) -> Result<Timestamp> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        if let Ok(z) = date.to_zoned(jiff::tz::TimeZone::system()) {
            return Ok(z.timestamp());
        }
    }
    Err(Error::config(
        "--until",
        format!("{text:?} is not a date like 2025-03-01 or a time like 2025-03-01T12:00:00+01:00"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_expire_and_notes_are_one_line() {
        let now: Timestamp = "2025-01-15T12:00:00Z".parse().unwrap();
        let until: Timestamp = "2025-02-01T00:00:00Z".parse().unwrap();
        let p = Pin::new(now, Some(until), Some("before upgrade".into())).unwrap();
        assert!(p.active(now));
        assert!(!p.active(until));
        assert!(PinState::Pinned(p.clone()).holds(now));
        assert!(!PinState::None.holds(now));
        // Shown as what it is at that moment: a pin past its date no longer keeps anything.
        let shown = |t| PinState::Pinned(p.clone()).describe_at(t).unwrap();
        assert_eq!(shown(now), "pinned until 2025-02-01T00:00:00Z: before upgrade");
        assert_eq!(shown(until), "pin expired 2025-02-01T00:00:00Z: before upgrade");
        assert!(PinState::Unreadable("x".into()).holds(until), "an unreadable pin keeps");
        assert!(Pin::new(now, None, Some("two\nlines".into())).is_err());
        assert_eq!(Pin::new(now, None, Some(String::new())).unwrap().note, None);
        assert_eq!(parse_until("2025-02-01T00:00:00Z").unwrap(), until);
        assert!(parse_until("2025-02-01").is_ok());
        assert!(parse_until("next week").is_err());
    }
}
