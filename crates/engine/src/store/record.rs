//! The recorder: what every build — the local walk (`source::local`) and a pulled host
//! (`source::remote::pull`) — feeds its results into, so that both count, warn, inherit hashes and
//! write the manifest alike, and neither imports the other.
//!
//! A build decides per entry what happened (`Outcome`: linked to the previous snapshot,
//! copied, a symlink, …) and hands it to the `Writer` in walk order; the writer keeps the
//! counts, the warnings, the files per source, and the manifest (inheriting the hash of each
//! linked file from the previous manifest by a streaming merge, see `manifest`).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fs::fsops;
use crate::fs::Dir;
use crate::store::delta::{ChunkCursor, ChunkWriter, Record};
use crate::store::manifest::{Cursor, Hash, ManifestWriter};
use crate::store::meta::{Counts, Warning, MAX_WARNINGS_KEPT, META_DIR};
use crate::store::place::Avoid;

/// Bytes that crossed the connection during a pull.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// From the agent.
    pub bytes_received: u64,
    /// To the agent.
    pub bytes_sent: u64,
}

/// The previous complete snapshot, used as the link base, held open.
pub struct LinkBase<'a> {
    /// Its directory (opened through the host directory, never through a symlink).
    pub dir: &'a Dir,
    /// Its manifest, for inheriting the hashes of linked files.
    pub manifest: Cursor,
    /// Its damaged inodes (from the drive's damage record), never hard-linked.
    pub avoid: Avoid,
    /// Seconds since the epoch before which a source file's ctime says its inode is as the
    /// link base read it (its `walkStartedAt`, less a second for the kernel's coarse clock):
    /// an unchanged file whose ctime is not older gets its extended attributes compared with
    /// the previous copy's, since `setfattr` and `setfacl` change nothing the quick check
    /// sees. For a pulled host it is the base's `clientWalkStartedAt` (the agent's clock),
    /// sent to the agent, which then sends the attributes of the files changed since. `None`
    /// (a base of an older version): compare wherever the quick check passes.
    pub settled_before: Option<i64>,
}

/// What a build produced.
#[derive(Debug, Default)]
pub struct BuildResult {
    /// The counts.
    pub counts: Counts,
    /// The first [`MAX_WARNINGS_KEPT`] warnings, in walk order, each cut to
    /// [`MAX_WARNING_LEN`] (`counts.warnings` has the total).
    pub warnings: Vec<Warning>,
    /// Regular files found under each source, for the shrink guard.
    pub files_per_source: BTreeMap<PathBuf, u64>,
    /// Bytes that crossed the network, for a pull (`None` for a local build).
    pub transfer: Option<Transfer>,
    /// When a pulled host's agent started its walk, on its own clock, seconds (`None` for a
    /// local build): the next pull's `LinkBase::settled_before`.
    pub client_walk_started: Option<i64>,
}

/// The longest path or message of a warning that is kept, in bytes: a pulled host's agent
/// sends its own (up to a frame's 16 MiB each), and a thousand of them are kept.
pub const MAX_WARNING_LEN: usize = 4096;

/// Called now and then with the counts so far.
pub type Progress<'a> = &'a (dyn Fn(&Counts) + Sync);

/// A descriptor of its own for an open directory (the walk moves and closes descriptors).
pub(crate) fn dup_dir(d: &Dir) -> Result<OwnedFd> {
    d.fd().try_clone_to_owned().ctx("duplicate descriptor of", d.path())
}

/// The link base's chunk sidecar (`store::delta`), read through the door; a missing one finds
/// nothing, a garbled or planted one finds nothing from its first bad line on.
pub(crate) fn chunk_cursor(base: Option<&LinkBase>) -> ChunkCursor {
    let meta = base.and_then(|b| b.dir.try_open_dir(&crate::fs::Name::fixed(META_DIR)).ok().flatten());
    ChunkCursor::open_in(meta.as_ref())
}

/// The new snapshot's chunk sidecar, in its `.hwc-backup/` (created by the run).
pub(crate) fn chunk_writer(work: &Dir) -> Result<ChunkWriter> {
    ChunkWriter::create_in(&work.open_dir(&crate::fs::Name::fixed(META_DIR))?)
}

/// The link base's directory descriptor, manifest cursor and damaged inodes (none and empty
/// without one).
pub(crate) fn split_base(base: Option<LinkBase>) -> (Option<OwnedFd>, Cursor, Avoid) {
    match base {
        Some(b) => (dup_dir(b.dir).ok(), b.manifest, b.avoid),
        None => (None, Cursor::empty(), Avoid::default()),
    }
}

pub(crate) struct FileResult {
    pub(crate) name: CString,
    pub(crate) outcome: Outcome,
}

pub(crate) enum Outcome {
    /// A regular file: its size, hash if known, whether it was linked, and a warning when it
    /// was stored but changed while being read.
    Regular {
        size: u64,
        hash: Option<Hash>,
        linked: bool,
        copied_bytes: u64,
        emlink: bool,
        torn: Option<String>,
        /// Written as a reflink of its previous copy plus the changed blocks.
        reflinked: bool,
        /// Its chunk sidecar record (files of more than 1 MiB whose chunk hashes are known).
        record: Option<Box<Record>>,
    },
    Symlink {
        linked: bool,
    },
    Special,
    Socket,
    /// A device node of a pulled host, not recreated (`hosts.<name>.devices` off).
    DeviceSkipped,
    /// A regular file larger than `excludeLargerThan`, left out.
    TooLarge,
    Warning(String),
}

impl Outcome {
    /// A regular file that is a hard link to an existing copy: nothing copied, nothing torn.
    /// `hash` is known when it was computed now; `record` is the carried-over chunk record.
    pub(crate) fn linked(size: u64, hash: Option<Hash>, record: Option<Box<Record>>) -> Outcome {
        Outcome::Regular {
            size,
            hash,
            linked: true,
            copied_bytes: 0,
            emlink: false,
            torn: None,
            reflinked: false,
            record,
        }
    }
}

/// Puts results back in walk order and records them. The pull builder (`remote::pull`)
/// records through it too, so both paths count, warn and write the manifest alike.
pub(crate) struct Writer<'a> {
    manifest: ManifestWriter,
    chunks: Option<ChunkWriter>,
    cursor: Cursor,
    work: PathBuf,
    progress: Progress<'a>,
    counts: Counts,
    warnings: Vec<Warning>,
    files_per_source: BTreeMap<usize, u64>,
    last_progress: Instant,
    buf: Vec<u8>,
}

/// Counts, warnings, and regular files per source index.
pub(crate) type Written = (Counts, Vec<Warning>, BTreeMap<usize, u64>);

impl<'a> Writer<'a> {
    pub(crate) fn new(manifest: ManifestWriter, cursor: Cursor, work: PathBuf, progress: Progress<'a>) -> Writer<'a> {
        Writer {
            manifest,
            chunks: None,
            cursor,
            work,
            progress,
            counts: Counts::default(),
            warnings: Vec::new(),
            files_per_source: BTreeMap::new(),
            last_progress: Instant::now(),
            buf: Vec::new(),
        }
    }

    /// Also writes the chunk sidecar, from the records the build hands in.
    pub(crate) fn with_chunks(mut self, chunks: ChunkWriter) -> Writer<'a> {
        self.chunks = Some(chunks);
        self
    }

    /// Seals the manifest and returns what was recorded.
    pub(crate) fn finish(self) -> Result<Written> {
        self.manifest.finish()?;
        let dropped = self.counts.warnings.saturating_sub(self.warnings.len() as u64);
        if dropped > 0 {
            tracing::warn!(
                "{dropped} more warnings were counted but not kept (only the first {MAX_WARNINGS_KEPT} are)"
            );
        }
        if let Some(c) = self.chunks {
            c.finish()?;
        }
        (self.progress)(&self.counts);
        Ok((self.counts, self.warnings, self.files_per_source))
    }

    /// Counts a completed directory whose metadata was applied with result `applied`.
    pub(crate) fn dir_done(&mut self, applied: std::io::Result<()>, abs: PathBuf) -> Result<()> {
        self.counts.directories += 1;
        if let Err(e) = applied {
            if fsops::is_fatal_dest_error(&e) {
                return Err(Error::io("set metadata of directory", &abs, e));
            }
            self.warn(abs, format!("cannot copy directory metadata: {e}"));
        }
        Ok(())
    }

    /// Reports progress now and then.
    pub(crate) fn tick(&mut self) {
        if self.last_progress.elapsed() > Duration::from_millis(200) {
            self.last_progress = Instant::now();
            (self.progress)(&self.counts);
        }
    }

    /// Counts excluded entries (the pull agent reports them at the end of its walk).
    pub(crate) fn add_excluded(&mut self, n: u64) {
        self.counts.excluded += n;
    }

    /// Counts what `excludeCaches`, `excludeIfPresent` and `excludeLargerThan` left out (the
    /// pull agent reports them at the end of its walk; the local walk counts tagged
    /// directories as it lists them).
    pub(crate) fn add_excluded_by(&mut self, caches: u64, if_present: u64, large: u64) {
        self.counts.excluded_caches += caches;
        self.counts.excluded_if_present += if_present;
        self.counts.excluded_large += large;
    }

    /// Counts a warning, and keeps it (cut to [`MAX_WARNING_LEN`]) while fewer than
    /// [`MAX_WARNINGS_KEPT`] are: only those reach the snapshot's metadata, and a pulled
    /// host's agent may send warnings without end.
    pub(crate) fn warn(&mut self, path: PathBuf, message: String) {
        self.counts.warnings += 1;
        if self.warnings.len() < MAX_WARNINGS_KEPT {
            self.warnings.push(bounded_warning(path, message));
        }
    }

    /// Records a non-directory entry `r` of the directory `rel` of source `source`; `dir` is
    /// that directory in the snapshot being built.
    pub(crate) fn file(&mut self, source: usize, rel: &[u8], dir: BorrowedFd, r: FileResult) -> Result<()> {
        let name = r.name.to_bytes();
        match r.outcome {
            Outcome::Regular { size, hash, linked, copied_bytes, emlink, torn, reflinked, record } => {
                if let Some(message) = torn {
                    self.warn(PathBuf::from(OsStr::from_bytes(&[b"/", rel, b"/", name].concat())), message);
                }
                let c = &mut self.counts;
                c.files += 1;
                *self.files_per_source.entry(source).or_default() += 1;
                if linked {
                    c.linked += 1;
                    c.bytes_linked += size;
                } else {
                    c.copied += 1;
                    c.bytes_copied += copied_bytes;
                }
                c.emlink_fallbacks += u64::from(emlink);
                c.reflinked += u64::from(reflinked);
                let hash = match hash.or_else(|| self.cursor.find(rel, name)) {
                    Some(h) => h,
                    None => self.hash_in_snapshot(dir, rel, &r.name)?,
                };
                self.manifest.add(rel, name, &hash)?;
                // A record whose hash is not the manifest's (a linked file whose previous
                // manifest line was missing or differs) is left out rather than trusted.
                if let (Some(w), Some(r)) = (self.chunks.as_mut(), record) {
                    if r.hash == hash {
                        w.add(rel, name, &r)?;
                    }
                }
            }
            Outcome::Symlink { linked } => {
                let c = &mut self.counts;
                c.symlinks += 1;
                c.linked += u64::from(linked);
            }
            Outcome::Special => self.counts.specials += 1,
            Outcome::Socket => self.counts.sockets_skipped += 1,
            Outcome::DeviceSkipped => self.counts.devices_skipped += 1,
            Outcome::TooLarge => self.counts.excluded_large += 1,
            Outcome::Warning(message) => {
                let path = PathBuf::from(OsStr::from_bytes(&[b"/", rel, b"/", name].concat()));
                self.warn(path, message);
            }
        }
        Ok(())
    }

    /// A linked file whose hash the previous manifest lacks: read it once from the snapshot,
    /// by its name in `dir`. Only a regular file is read: a pulled host decides what its
    /// entries are, and a symlink followed or a FIFO opened here would read outside the
    /// snapshot or block the run.
    fn hash_in_snapshot(&mut self, dir: BorrowedFd, rel: &[u8], name: &CStr) -> Result<Hash> {
        let p = self.work.join(OsStr::from_bytes(rel)).join(OsStr::from_bytes(name.to_bytes()));
        let (f, _) = fsops::open_regular_at(dir, name).ctx("read", &p)?;
        fsops::hash_file(&f, &mut self.buf).ctx("read", &p)
    }
}

/// A warning with its path and message cut to [`MAX_WARNING_LEN`] bytes each, saying so.
pub(crate) fn bounded_warning(path: PathBuf, message: String) -> Warning {
    Warning { path: PathBuf::from(OsStr::from_bytes(&cut(path.as_os_str().as_bytes()))), message: cut_str(message) }
}

/// What of a cut path or message is kept: the marker fits in the rest, so that a warning cut
/// once (as it arrives from an agent) is not cut again (as it is recorded).
const KEPT_OF_CUT: usize = MAX_WARNING_LEN - 64;

/// `s` cut to at most [`MAX_WARNING_LEN`] bytes, ending in a marker that says how many were cut.
fn cut(s: &[u8]) -> Vec<u8> {
    if s.len() <= MAX_WARNING_LEN {
        return s.to_vec();
    }
    let mut out = s[..KEPT_OF_CUT].to_vec();
    out.extend_from_slice(format!("… ({} more bytes cut)", s.len() - KEPT_OF_CUT).as_bytes());
    out
}

/// [`cut`] for text, at a character boundary.
fn cut_str(s: String) -> String {
    if s.len() <= MAX_WARNING_LEN {
        return s;
    }
    let end = (0..=KEPT_OF_CUT).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    format!("{}… ({} more bytes cut)", &s[..end], s.len() - end)
}
