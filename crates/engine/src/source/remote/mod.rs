//! Pulling snapshots of other machines over SSH: the agent (client side) and the pull builder
//! (server side), and the protocol between them.
//!
//! The backup server runs `ssh … hwc-backup agent` and speaks to the agent over the ssh
//! session's stdin/stdout. The agent walks the requested sources with the same rules as the
//! local walk (`snapshot`), streams one frame per entry, and sends file contents only when
//! the server asks. The server builds `<dest>/<host>/.incomplete/NAME` with the same layout,
//! manifest, metadata, atomic publish and retention as a local run (`run`); only where the
//! entries come from differs (see `source`).
//!
//! # Protocol (version [`proto::PROTOCOL`])
//!
//! 1. **Hello.** Each side first writes 8 raw bytes: `HWCB` and its protocol version as a
//!    big-endian `u32`. Either side refuses a peer with another magic ("not an hwc-backup
//!    agent": typically a shell's `command not found`) or another version, with a message
//!    naming both versions. Raw bytes, so that a future change of the framing below is still
//!    recognised.
//! 2. **Frames.** Everything else is frames: a big-endian `u32` length (at most
//!    [`proto::MAX_FRAME`]) and a [postcard](https://docs.rs/postcard)-encoded
//!    [`proto::ToAgent`] or [`proto::FromAgent`]. Names and paths are raw bytes (Linux file
//!    names need not be UTF-8); owners are numeric uid/gid.
//! 3. **Request.** The server sends the sources, the exclude patterns, `oneFileSystem`, the
//!    exclusions by tag file, marker file and size (`source::markers`; protocol 3) and
//!    `xattrs_since` (protocol 5: the previous pull's walk start on the agent's clock, less a
//!    second; none when unknown). The
//!    agent checks each source against its own allow-list (fixed by the `authorized_keys`
//!    command, so a server can never read beyond it): a clean absolute path in an allowed path,
//!    reached below it without following any symlink (`crate::fs::beneath`), and that it exists; it adds
//!    its own excludes, and answers `Ready` (with the time its walk starts, on its clock) or
//!    `Error`. After `Ready`, everything the agent sends is one LZ4
//!    frame stream ([`proto::CompressedWriter`]) holding the same frames; it cuts the walk's
//!    bytes several times (protocol 2). Its blocks are linked (protocol 4): the agent flushes
//!    whenever its queue runs dry, and a small block compressed alone shrinks little.
//! 4. **Walk.** The agent sends walk frames in the manifest's walk order: per source `Source`,
//!    then a directory's non-directories sorted by name, then each subdirectory (`Dir` … `DirEnd`)
//!    sorted by name, then `SourceEnd`; at the end `WalkEnd` with the excluded counts (by
//!    pattern, cache and marker directories, large files) and the
//!    metadata of the directories above the sources. A regular file's `File` frame carries
//!    only the quick check's fields and whether it has holes (`proto::file_meta`, protocol 4):
//!    its access time and the rest come with its `FileEnd` if it is sent. Its extended
//!    attributes come in the `File` frame when its ctime is not older than `xattrs_since`
//!    (every file when none was given): `setfattr`/`setfacl` change nothing else. Walk frames are numbered from 0 in the
//!    order sent; a regular file's number is its id.
//! 5. **Transfer.** For each regular file the server applies the local quick check against its
//!    previous snapshot of the host (type, mode, owner, size, mtime to the ns, and the
//!    extended attributes where the `File` frame carries them) and hard-links when unchanged:
//!    nothing more crosses the network. Otherwise it sends `Send { id, how }`: whole
//!    (`Data` frames with offsets, holes skipped, each LZ4-compressed when that saves an eighth)
//!    or, when the previous snapshot holds a copy of at least [`delta::MIN_DELTA_SIZE`], a
//!    `fast_rsync` signature of that copy, to which the agent answers with `Delta` frames
//!    (librsync deltas, one per 8 MiB window of the new content). Then `FileEnd` with the
//!    content's BLAKE3 and the metadata seen after reading (a file that changed while read is
//!    stored as read and reported, as locally); the server checks the hash of what it
//!    rebuilt and asks again for the whole file if a delta rebuilt something else (MD4 block
//!    hashes can collide). `FileError` for a file that vanished or cannot be read.
//! 6. **Flow.** The server has at most [`pull::MAX_INFLIGHT`] requests outstanding and tells the
//!    agent with `Ack { upto }` which walk frames it has completed; the agent walks at most
//!    [`proto::WINDOW`] frames ahead, so memory stays flat on both sides however big the tree.
//!    The agent serves requests in order, on its own thread, so data never waits behind the walk.
//! 7. **Trust.** The server trusts nothing it receives: names must be single components,
//!    every directory it writes into is reached from the snapshot root without following a
//!    symlink (the ancestors of `WalkEnd` included, `crate::fs::beneath`), and device nodes are created
//!    only when the host's plan allows them (`devices`); see the README's threat model.
//! 8. **End.** After `WalkEnd` and the last file, the server sends `Done` and closes; the
//!    agent exits 0. A connection that ends before that fails the run, and nothing is published.

pub mod agent;
pub mod delta;
pub mod proto;
pub mod pull;
pub mod ssh;

#[cfg(test)]
mod tests;
