//! The snapshot store: the hard-linked tree of each host (its layout, lock, retention and
//! pruning), each snapshot's manifest and metadata, the recorder every build writes through
//! and the link-or-copy decision every build makes (`place`), and everything that reads
//! history (verify, restore). It is the single source of truth; the state that describes a
//! destination lives with it (design §10, stage 2).

pub mod btrfs;
pub mod clock;
pub mod delta;
pub mod history;
pub mod layout;
pub mod lock;
pub mod make_room;
pub mod manifest;
pub mod meta;
pub mod place;
pub mod prune;
pub mod record;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod verify;
pub mod walk;
