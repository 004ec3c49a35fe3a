//! The one door to the backup destination.
//!
//! Everything the engine does inside a host directory goes through a [`Dir`]: a handle on an
//! open directory that reaches only the [`Name`]s directly below it, one component at a time,
//! never through a symlink (`O_NOFOLLOW | O_DIRECTORY` on every open; cap-std's `Dir` is the
//! model). Whoever can write the backup disk can plant a symlink at `.incomplete`, `daily` or
//! `.lock`; through a `Dir` such a name is refused with an error naming it, instead of being
//! followed to `/home` and emptied there. Trees are deleted without recursion (`remove.rs`).
//!
//! Outside this module the engine does not touch the destination by path; `clippy.toml`
//! lists the `std::fs` path functions it must not call.

pub mod beneath;
mod dir;
pub mod fsops;
pub mod fsutil;
mod name;
mod remove;

pub use dir::{Dir, Entry};
pub use name::{BadName, Name};
