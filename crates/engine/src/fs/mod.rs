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
pub mod fstype;
pub mod fsutil;
mod name;
mod remove;
mod subvol;
pub mod tree;

use std::os::fd::AsFd;

pub use dir::{Dir, Entry};
pub use name::{BadName, Name};
pub use remove::{Keep, Removal};

/// How every directory below a trusted root is opened: never through a symlink.
pub const DIR_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::CLOEXEC);

/// Device and inode of an open file: what a walk records of a directory it closes, to check
/// that [`reopen_parent`] gives it the same one back.
pub fn identity(fd: std::os::fd::BorrowedFd) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Re-opens the parent of the open directory `child` through `..`, for a walk that closed it
/// on the way down to bound its descriptors, and checks that it is still the directory
/// `want` (device, inode) recorded then. `Ok(None)`: it is another one — the tree was moved
/// while it was walked, and the caller stops rather than work somewhere else.
pub fn reopen_parent(
    child: std::os::fd::BorrowedFd,
    want: (u64, u64),
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    let up = rustix::fs::openat(child, c"..", DIR_FLAGS, rustix::fs::Mode::empty())?;
    Ok((identity(up.as_fd())? == want).then_some(up))
}
