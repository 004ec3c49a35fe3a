//! Reading the history of a host: what changed between two snapshots ([`diff`]), where a
//! file was and how it changed ([`find`]), what each snapshot costs on disk ([`du`]), and the
//! pins that keep a snapshot from being pruned ([`pin`]).
//!
//! Everything here only reads the destination, through the host directory's handle: every
//! snapshot is walked with [`crate::store::walk`] (fd-relative, `O_NOFOLLOW` on every component, an
//! explicit stack and one open directory, so depth is bounded by neither the stack nor the
//! descriptor limit). The answers come from `stat` and the manifest: a file hard-linked
//! between two snapshots is the same inode and is never read; a changed one is told by its
//! manifest hash. Only a pin is ever written, and only under the host lock.

pub mod diff;
pub mod dryrun;
pub mod du;
pub mod find;
pub mod pin;
