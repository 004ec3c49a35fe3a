//! Building one snapshot tree: walk the sources, hard-link what is unchanged since the
//! previous snapshot, copy the rest, and write the manifest.
//!
//! # How the work is split
//!
//! Three roles run at once, so that memory stays flat however large the tree is:
//!
//! 1. The **lister** (the calling thread) walks the sources depth-first with names sorted,
//!    creates each destination directory, and hands every directory's non-directory entries
//!    to the workers as one job, numbered in walk order.
//! 2. **Workers** take jobs in parallel: `fstatat` each entry, `fstatat` the same name in the
//!    previous snapshot, and `linkat` or copy. A second worker does not make `link()` faster
//!    on a warm cache but overlaps the waits of a cold one.
//! 3. The **writer** puts results back into walk order, writes the manifest (inheriting the
//!    hash of every linked file from the previous manifest by a streaming merge, see
//!    `manifest`), applies directory metadata once a directory is complete, and counts.
//!
//! The job queue is bounded, so at most a few dozen directories are in flight; no map of the
//! whole tree is ever built. The only per-entry state that outlives a directory is the table
//! of inodes with more than one link, needed to keep hard links inside a source as links.
//!
//! # Errors
//!
//! A problem with one source entry (vanished, unreadable, changed while read) is a warning:
//! the run ends `partial`. A problem with the destination (full, read-only, I/O error) is
//! fatal: the run fails and nothing is published.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{FileType, Stat};

use crate::error::{Error, IoContext, Result};
use crate::fs::fsops;
use crate::fs::tree::{self, At, Entered, Parent, Paths, Tree};
use crate::fs::Dir;
use crate::source::exclude::ExcludeSet;
use crate::source::markers::ExcludeBy;
use crate::store::delta::{ChunkCursor, Record};
use crate::store::manifest::{Hash, ManifestWriter};
use crate::store::meta::Warning;
use crate::store::meta::META_DIR;
use crate::store::place::{self, Placement, QuickAttrs};
use crate::store::record::{chunk_cursor, chunk_writer, dup_dir, split_base, FileResult, Outcome, Writer, Written};
pub use crate::store::record::{BuildResult, LinkBase, Progress};

/// What to snapshot and how.
pub struct BuildOptions<'a> {
    /// Absolute source paths.
    pub sources: &'a [PathBuf],
    /// Exclude patterns, compiled.
    pub excludes: &'a ExcludeSet,
    /// The same patterns as written (a pull sends them to the agent).
    pub exclude_patterns: &'a [String],
    /// Stay on each source's filesystem.
    pub one_file_system: bool,
    /// `excludeCaches`, `excludeIfPresent`, `excludeLargerThan` (`source::markers`).
    pub exclude_by: &'a ExcludeBy,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// The destination's host directory, by device and inode: never entered, whatever path
    /// leads to it (a source that contains the destination must not copy the snapshot being
    /// written). The caller takes it from the directory it holds open, not from a path.
    pub skip_dir: Option<(u64, u64)>,
    /// Set to stop the build early (the run is then failed).
    pub cancel: &'a AtomicBool,
    /// Where the walk reads each original path from, when not from that path itself (a
    /// filesystem snapshot of the sources, `source::fs_snapshot`); `None` = from the paths.
    /// Every recorded path, exclude match and message stays the original one.
    pub roots: Option<&'a dyn Roots>,
    /// How unchanged entries are shared with the previous snapshot (`store::btrfs`): hard
    /// links, or — in a writable btrfs snapshot of it — left where they are, with what
    /// vanished from the sources removed.
    pub method: place::Method,
}

/// Where the walk reads from, for a source seen through filesystem snapshots: the original
/// absolute paths stay what is recorded; only the descriptors come from elsewhere.
pub trait Roots: Sync {
    /// The path to open for the original absolute path `p` (the same path when it is not
    /// seen through a snapshot).
    fn resolve(&self, p: &Path) -> PathBuf;
    /// The path to open instead for the directory `abs` below a source, whose stat as the
    /// walk found it is `st` (a mount point, or a nested subvolume a snapshot shows empty);
    /// `None` = walk it where it was found.
    fn redirect(&self, abs: &Path, st: &Stat) -> Option<PathBuf>;
    /// A name in the directory `abs` that the walk leaves out (the snapshots' own private
    /// directory, which exists only while the run takes and reads its snapshots).
    fn hidden(&self, abs: &Path) -> Option<&CStr>;
}

/// Builds a snapshot tree in `work` (an empty directory, held open) and writes its manifest
/// with `writer`. Returns an error only for fatal problems; see the module docs.
pub fn build(
    opts: &BuildOptions,
    work_dir: &Dir,
    writer: ManifestWriter,
    base: Option<LinkBase>,
    progress: Progress,
) -> Result<BuildResult> {
    let work = work_dir.path();
    let work_fd = dup_dir(work_dir)?;
    let chunks = chunk_cursor(base.as_ref());
    let chunk_out = chunk_writer(work_dir)?;
    let settled_before = base.as_ref().and_then(|b| b.settled_before);
    let (base_fd, cursor, avoid) = split_base(base);
    let shared = Shared {
        avoid,
        settled_before,
        work: work.to_path_buf(),
        work_fd: dup_dir(work_dir)?,
        links: Mutex::new(HashMap::new()),
        cancel: opts.cancel,
        exclude_by: opts.exclude_by,
        method: opts.method,
    };
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(64);
    let (out_tx, out_rx) = crossbeam_channel::unbounded::<(u64, Item)>();

    std::thread::scope(|scope| {
        for _ in 0..opts.threads.max(1) {
            let (rx, tx, shared) = (job_rx.clone(), out_tx.clone(), &shared);
            scope.spawn(move || worker(rx, tx, shared));
        }
        drop(job_rx);
        let writer_handle = {
            let out_rx = out_rx.clone();
            let w = Writer::new(writer, cursor, work.to_path_buf(), progress).with_chunks(chunk_out);
            scope.spawn(move || record_in_order(w, out_rx))
        };
        drop(out_rx);
        let mut lister = Lister::new(opts, work, (job_tx, out_tx), Slots::new(dirs_in_flight()), chunks, None);
        let listed = lister.run(Some(&work_fd), base_fd.as_ref());
        let (excluded, tagged) = (lister.excluded, lister.tagged);
        drop(lister); // closes the channels so workers and the writer finish
        if listed.is_err() {
            opts.cancel.store(true, Ordering::Relaxed);
        }
        let written = writer_handle.join().expect("writer thread panicked");
        // The writer holds the real cause when a worker failed; the lister then only saw
        // the cancellation.
        let (mut counts, mut warnings, per_source) = match (written, listed) {
            (Err(e), Err(l)) if e.is_cancelled() => return Err(l),
            (Err(e), _) => return Err(e),
            (Ok(_), Err(l)) => return Err(l),
            (Ok(w), Ok(())) => w,
        };
        counts.excluded = excluded;
        (counts.excluded_caches, counts.excluded_if_present) = tagged;
        // Excludes that left nothing at all (every source is still there, empty): never a
        // quiet `success`. Excludes matching every source itself are refused before the run.
        if excluded > 0 && counts.files + counts.symlinks + counts.specials + counts.sockets_skipped == 0 {
            counts.warnings += 1;
            warnings.push(Warning {
                path: opts.sources.first().cloned().unwrap_or_default(),
                message: format!(
                    "the excludes left nothing to back up ({excluded} entries excluded, no file kept); \
                     check the exclude patterns"
                ),
            });
        }
        let files_per_source = per_source.into_iter().map(|(i, n)| (opts.sources[i].clone(), n)).collect();
        Ok(BuildResult { counts, warnings, files_per_source, transfer: None, client_walk_started: None })
    })
}

/// What `now --dry-run` is told by the walk of [`plan`]: the same walk as [`build`]'s, with
/// the same rules (excludes, one file system, the destination's host directory skipped,
/// `excludeCaches`/`excludeIfPresent`), so that they exist once; nothing is written.
pub trait Planner {
    /// A directory the run would create (`abs`, its original path), once its entries are done.
    fn directory(&mut self, abs: &Path);
    /// The non-directory entries `names` of one source directory (open as `src`, original path
    /// `abs`, `rel` in the snapshot), that the excludes keep, with the link base's copy of the
    /// directory when it has one.
    fn entries(
        &mut self,
        rel: &[u8],
        abs: &Path,
        src: std::os::fd::BorrowedFd,
        prev: Option<std::os::fd::BorrowedFd>,
        names: &[CString],
    ) -> Result<()>;
}

/// What [`plan`]'s walk left out, as a run counts it: entries the exclude patterns (or the
/// host directory) left out, and directories kept without their contents for a
/// `CACHEDIR.TAG` and for a marker file.
pub struct Planned {
    /// `excluded`.
    pub excluded: u64,
    /// `excludedCaches`.
    pub excluded_caches: u64,
    /// `excludedIfPresent`.
    pub excluded_if_present: u64,
}

/// Walks the sources as [`build`] does, telling `planner` what it finds instead of copying
/// or linking anything: no work tree, no workers, no manifest. `base` is the link base's
/// directory (opened through the host directory), walked alongside as the build walks it.
/// `opts.roots` and `opts.threads` do not matter here.
pub fn plan(opts: &BuildOptions, base: Option<&Dir>, planner: &mut dyn Planner) -> Result<Planned> {
    let base_fd = base.map(dup_dir).transpose()?;
    // Nobody listens: a dry run has no workers and no writer (warnings go nowhere).
    let (job_tx, _) = crossbeam_channel::bounded::<Job>(0);
    let (out_tx, _) = crossbeam_channel::unbounded::<(u64, Item)>();
    let mut lister =
        Lister::new(opts, Path::new(""), (job_tx, out_tx), Slots::new(1), ChunkCursor::empty(), Some(planner));
    lister.run(None, base_fd.as_ref())?;
    let (excluded_caches, excluded_if_present) = lister.tagged;
    Ok(Planned { excluded: lister.excluded, excluded_caches, excluded_if_present })
}

pub(crate) fn open_dir(p: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx("open directory", p)
}

/// Inodes with several links in a source: (dev, ino) → where the first one went (its
/// directory relative to the work tree, "" for the root, and its name), and its hash.
type LinkTable = HashMap<(u64, u64), (Vec<u8>, CString, Option<Hash>)>;

/// State shared by the workers.
struct Shared<'a> {
    work: PathBuf,
    /// The work tree, open: the later names of a source hard link are linked to the first one
    /// through it, one component at a time (`fs::beneath`), never by a path.
    work_fd: OwnedFd,
    links: Mutex<LinkTable>,
    cancel: &'a AtomicBool,
    /// `excludeLargerThan` ([`ExcludeBy::too_large`], which a dry run asks too).
    exclude_by: &'a ExcludeBy,
    /// Damaged inodes of the link base, never hard-linked.
    avoid: place::Avoid,
    /// How unchanged entries are shared.
    method: place::Method,
    /// See `LinkBase::settled_before`.
    settled_before: Option<i64>,
}

/// One directory's non-directory entries.
struct Job {
    seq: u64,
    source: usize,
    /// The directory relative to the snapshot root.
    rel: Arc<Vec<u8>>,
    /// Its absolute source path (for messages).
    abs: Arc<PathBuf>,
    src: Arc<OwnedFd>,
    dst: Arc<OwnedFd>,
    prev: Option<Arc<OwnedFd>>,
    names: Vec<CString>,
    /// The previous copies' chunk records, by index into `names` (empty when none has one).
    records: Vec<Option<Box<Record>>>,
}

/// One directory's non-directory entries as the lister finds them: a [`Job`] for the workers
/// once numbered, or what a dry run's planner is told (then without `dst`).
struct Listed {
    source: usize,
    rel: Arc<Vec<u8>>,
    abs: Arc<PathBuf>,
    src: Arc<OwnedFd>,
    dst: Option<Arc<OwnedFd>>,
    prev: Option<Arc<OwnedFd>>,
    names: Vec<CString>,
}

/// What comes back to the writer, in walk order by sequence number.
enum Item {
    Files {
        source: usize,
        rel: Arc<Vec<u8>>,
        /// The directory in the snapshot.
        dst: Arc<OwnedFd>,
        results: Vec<FileResult>,
    },
    /// `keep`: the work tree is a writable snapshot of the previous snapshot
    /// (`Method::Keep`), so the directory may already have its metadata.
    DirDone {
        src: Option<Arc<OwnedFd>>,
        dst: Arc<OwnedFd>,
        stat: Box<Stat>,
        abs: PathBuf,
        keep: bool,
        _slot: Slot,
    },
    Warn(Warning),
    Fatal(Error),
}

/// How many complete directories may wait for the writer (each holds up to three
/// descriptors): a quarter of what the process may open, within these bounds. Too few makes
/// the walk wait for the writer (measured: 5 000 waits on a 50 000-file no-change run with a
/// fixed 64); too many runs out of descriptors on a deep tree.
fn dirs_in_flight() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    usize::try_from(soft.saturating_sub(128) / 4).unwrap_or(usize::MAX).clamp(64, 4096)
}

/// A directory's descriptors: in the source, in the work tree (none for a dry run, which
/// writes nothing), in the previous snapshot.
#[derive(Clone)]
struct Fds {
    src: Arc<OwnedFd>,
    dst: Option<Arc<OwnedFd>>,
    prev: Option<Arc<OwnedFd>>,
}

/// A directory the walk entered: its descriptors, its status, its subdirectories to walk.
type EnteredDir = (Fds, Box<Stat>, Vec<CString>);

/// Device and inode of a source directory, its copy, and its previous copy.
type Ids = ((u64, u64), Option<(u64, u64)>, Option<(u64, u64)>);

/// A place in the writer's queue of complete directories, given back when dropped (recorded
/// or discarded).
/// A place in the queue of complete directories waiting for the writer: a token in a bounded
/// channel, so that the walk blocks (without polling) while the queue is full and wakes as
/// soon as the writer drops one.
struct Slot(crossbeam_channel::Receiver<()>);

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}

/// The bounded queue of [`Slot`]s.
#[derive(Clone)]
struct Slots {
    tx: crossbeam_channel::Sender<()>,
    rx: crossbeam_channel::Receiver<()>,
}

impl Slots {
    fn new(n: usize) -> Slots {
        let (tx, rx) = crossbeam_channel::bounded(n);
        Slots { tx, rx }
    }

    /// Waits for a free place; `None` when the build was cancelled meanwhile.
    fn take(&self, cancel: &AtomicBool) -> Option<Slot> {
        loop {
            match self.tx.send_timeout((), Duration::from_millis(50)) {
                Ok(()) => return Some(Slot(self.rx.clone())),
                Err(_) if cancel.load(Ordering::Relaxed) => return None,
                Err(_) => {}
            }
        }
    }
}

struct Lister<'a> {
    opts: &'a BuildOptions<'a>,
    /// The work directory (destination errors name the path there).
    work: &'a Path,
    job_tx: crossbeam_channel::Sender<Job>,
    out_tx: crossbeam_channel::Sender<(u64, Item)>,
    seq: u64,
    root_dev: u64,
    excluded: u64,
    /// Directories kept without their contents: for a `CACHEDIR.TAG`, for a marker file.
    tagged: (u64, u64),
    /// Device and inode of the destination's host directory, never entered.
    skip: Option<(u64, u64)>,
    skip_reported: bool,
    /// Complete directories not yet taken by the writer.
    in_flight: Slots,
    /// The link base's chunk sidecar, read in walk order as jobs are sent.
    chunks: ChunkCursor,
    /// A dry run's planner: told what the walk finds instead of the workers and the writer,
    /// and nothing is written (no work tree: every `dst` is `None`).
    dry: Option<&'a mut dyn Planner>,
}

impl<'a> Lister<'a> {
    /// A lister at the start of a walk: `channels` to the workers and the writer (nobody
    /// listens in a dry run), `in_flight` the complete directories the writer may hold.
    fn new(
        opts: &'a BuildOptions<'a>,
        work: &'a Path,
        channels: (crossbeam_channel::Sender<Job>, crossbeam_channel::Sender<(u64, Item)>),
        in_flight: Slots,
        chunks: ChunkCursor,
        dry: Option<&'a mut dyn Planner>,
    ) -> Lister<'a> {
        let (job_tx, out_tx) = channels;
        Lister {
            opts,
            work,
            job_tx,
            out_tx,
            seq: 0,
            root_dev: 0,
            excluded: 0,
            tagged: (0, 0),
            skip: opts.skip_dir,
            skip_reported: false,
            in_flight,
            chunks,
            dry,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    fn emit(&mut self, item: Item) {
        let seq = self.next_seq();
        let _ = self.out_tx.send((seq, item));
    }

    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.emit(Item::Warn(Warning { path: path.to_path_buf(), message: message.into() }));
    }

    /// The path to open for the original absolute path `p` (see [`Roots`]).
    fn resolve(&self, p: &Path) -> PathBuf {
        self.opts.roots.map_or_else(|| p.to_path_buf(), |r| r.resolve(p))
    }

    /// Walks every source in walk order (see `manifest::cmp_key`), then applies the metadata
    /// of the directories above the sources (`/home` for `/home/alice`).
    fn run(&mut self, work: Option<&OwnedFd>, base: Option<&OwnedFd>) -> Result<()> {
        let mut kinds = Vec::new();
        for s in self.opts.sources {
            let st = rustix::fs::lstat(self.resolve(s)).ctx("inspect source", s)?;
            kinds.push((rel_of(s), fsops::file_type(&st) == FileType::Directory));
        }
        self.sweep_above_sources(work)?;
        let mut ancestors: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
        for i in source_order(kinds) {
            if self.opts.cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            self.source(i, work, base, &mut ancestors)?;
        }
        // Deepest first, so that setting a directory's times is not undone by a child.
        for rel in ancestors.keys().rev() {
            let abs = PathBuf::from(OsStr::from_bytes(&[b"/".as_slice(), rel].concat()));
            let src = open_dir(&self.resolve(&abs))?;
            let st = rustix::fs::fstat(&src).ctx("inspect", &abs)?;
            let open = |work| {
                rustix::fs::openat(
                    work,
                    bytes_cstr(rel).as_c_str(),
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                    rustix::fs::Mode::empty(),
                )
                .ctx("open directory", &abs)
            };
            let dst = work.map(open).transpose()?;
            self.dir_done(Some(Arc::new(src)), dst.map(Arc::new), Box::new(st), abs)?;
        }
        Ok(())
    }

    fn source(
        &mut self,
        i: usize,
        work: Option<&OwnedFd>,
        base: Option<&OwnedFd>,
        ancestors: &mut BTreeMap<Vec<u8>, ()>,
    ) -> Result<()> {
        let path = &self.opts.sources[i];
        // rsync applies the patterns to the source itself too (`--exclude=src` on `/x/src`
        // copies nothing); do the same so the exclude rules have one meaning.
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if self.opts.excludes.is_excluded(path, is_dir) {
            self.excluded += 1;
            return Ok(());
        }
        let rel = rel_of(path);
        let (parent_rel, name) = split_last(&rel);
        // Create the directories above the source (their metadata is applied at the end).
        let mut dst_parent = work.map(|w| rustix::io::dup(w).ctx("duplicate descriptor", path)).transpose()?;
        let mut prev_parent = base.and_then(|b| rustix::io::dup(b).ok());
        let mut so_far = Vec::new();
        for comp in parent_rel.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            if !so_far.is_empty() {
                so_far.push(b'/');
            }
            so_far.extend_from_slice(comp);
            ancestors.insert(so_far.clone(), ());
            let c = bytes_cstr(comp);
            dst_parent = self.make_dir(dst_parent.as_ref(), &c, &so_far)?;
            prev_parent = prev_parent.and_then(|p| fsops::open_dir_at(p.as_fd(), &c).ok());
        }
        if name.is_empty() {
            // The source is `/`: it is the root of the work tree itself.
            let src = open_dir(&self.resolve(path))?;
            let st = rustix::fs::fstat(&src).ctx("inspect source", path)?;
            self.root_dev = st.st_dev;
            let root = Fds { src: Arc::new(src), dst: dst_parent.map(Arc::new), prev: prev_parent.map(Arc::new) };
            return self.walk(i, rel, path, root, st);
        }
        let src_parent_path = path.parent().unwrap_or(Path::new("/"));
        let src_parent = open_dir(&self.resolve(src_parent_path))?;
        let cname = bytes_cstr(&name);
        // A source that is itself the root of a filesystem snapshot is opened there.
        let own = self
            .opts
            .roots
            .map(|r| r.resolve(path))
            .filter(|real| real.parent() != Some(&self.resolve(src_parent_path)));
        let st = match &own {
            Some(real) => rustix::fs::lstat(real).ctx("inspect source", path)?,
            None => fsops::stat_at(src_parent.as_fd(), &cname).map_err(|e| Error::io("inspect source", path, e))?,
        };
        self.root_dev = st.st_dev;
        if fsops::file_type(&st) != FileType::Directory {
            // A single file as a source: one job with one name.
            let job = Listed {
                source: i,
                rel: Arc::new(parent_rel),
                abs: Arc::new(src_parent_path.to_path_buf()),
                src: Arc::new(src_parent),
                dst: dst_parent.map(Arc::new),
                prev: prev_parent.map(Arc::new),
                names: vec![cname],
            };
            return self.send_job(job);
        }
        if self.is_skipped(&st, path) {
            return Ok(());
        }
        let src = match &own {
            Some(real) => open_dir(real)?,
            None => fsops::open_dir_at(src_parent.as_fd(), &cname).map_err(|e| Error::io("open source", path, e))?,
        };
        let dst = self.make_dir(dst_parent.as_ref(), &cname, &rel)?;
        let prev = prev_parent.and_then(|p| fsops::open_dir_at(p.as_fd(), &cname).ok());
        let root = Fds { src: Arc::new(src), dst: dst.map(Arc::new), prev: prev.map(Arc::new) };
        self.walk(i, rel, path, root, st)
    }

    /// Whether `st` is the destination's host directory, which the walk never enters: a
    /// source that contains the destination would otherwise copy the snapshot being written
    /// into itself, level after level. Compared by device and inode, so no spelling of the
    /// path (a symlink, a bind mount) gets past it. Reported once per run.
    fn is_skipped(&mut self, st: &Stat, abs: &Path) -> bool {
        if self.skip != Some((st.st_dev, st.st_ino)) {
            return false;
        }
        self.excluded += 1;
        if !self.skip_reported {
            self.skip_reported = true;
            tracing::warn!(
                "not backing up {}: it is the destination's host directory, excluded automatically",
                abs.display()
            );
        }
        true
    }

    /// A directory that cannot be created in the work tree: the error names it there.
    fn dest_error(&self, rel: &[u8], e: std::io::Error) -> Error {
        Error::io("create directory", self.work.join(OsStr::from_bytes(rel)), e)
    }

    /// In a writable snapshot (`Method::Keep`): removes from the work tree's root and from
    /// every directory above a source (`home` for `/home/alice`) what no source leads to — a
    /// source dropped from the plan, or excluded now. The sources' own trees are swept as
    /// they are walked.
    fn sweep_above_sources(&self, work: Option<&OwnedFd>) -> Result<()> {
        let Some(work) = work.filter(|_| self.opts.method == place::Method::Keep) else { return Ok(()) };
        // Directory above a source (relative, "" = the root) → the names below it that lead
        // to a source; `None` once a source is that directory itself (walked whole).
        let mut allowed: BTreeMap<Vec<u8>, Option<std::collections::HashSet<Vec<u8>>>> = BTreeMap::new();
        allowed.insert(Vec::new(), Some([META_DIR.as_bytes().to_vec()].into_iter().collect()));
        for s in self.opts.sources {
            let is_dir = std::fs::symlink_metadata(self.resolve(s)).is_ok_and(|m| m.is_dir());
            if self.opts.excludes.is_excluded(s, is_dir) {
                continue;
            }
            let rel = rel_of(s);
            if rel.is_empty() {
                allowed.insert(Vec::new(), None);
                continue;
            }
            let mut so_far = Vec::new();
            for comp in rel.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
                if let Some(Some(set)) = allowed.get_mut(&so_far) {
                    set.insert(comp.to_vec());
                }
                if !so_far.is_empty() {
                    so_far.push(b'/');
                }
                so_far.extend_from_slice(comp);
                allowed.entry(so_far.clone()).or_insert_with(|| Some(Default::default()));
            }
            allowed.insert(rel, None);
        }
        for (rel, names) in &allowed {
            let Some(names) = names else { continue };
            let dst = if rel.is_empty() {
                rustix::io::dup(work).ctx("duplicate descriptor", self.work)?
            } else {
                match crate::fs::beneath::open_dir(work.as_fd(), rel) {
                    Ok(fd) => fd,
                    // Not there (or not a directory): the walk creates or replaces it.
                    Err(_) => continue,
                }
            };
            self.sweep(Some(&dst), rel, |n| names.contains(n.to_bytes()))?;
        }
        Ok(())
    }

    /// In a writable snapshot of the previous snapshot (`Method::Keep`): removes every entry
    /// of the work tree's directory `dst` (at `rel`) that `keep` does not name — what vanished
    /// from the source or is excluded now. Nothing in the hard-link store, whose work tree
    /// holds only what the walk put there.
    fn sweep(&self, dst: Option<&OwnedFd>, rel: &[u8], keep: impl Fn(&CStr) -> bool) -> Result<()> {
        let Some(dst) = dst.filter(|_| self.opts.method == place::Method::Keep) else { return Ok(()) };
        let path = self.work.join(OsStr::from_bytes(rel));
        let dir = Dir::from_trusted_fd(rustix::io::dup(dst).ctx("duplicate descriptor", &path)?, path)?;
        for e in dir.entries()? {
            if !keep(e.name.as_cstr()) {
                dir.remove_tree(&e.name)?;
            }
        }
        Ok(())
    }

    /// In a writable snapshot (`Method::Keep`): removes the entry `name` of the work tree's
    /// directory `dst` (at `rel`'s parent), which the walk does not keep.
    fn clear(&self, dst: Option<&OwnedFd>, rel: &[u8], name: &CStr) -> Result<()> {
        let Some(dst) = dst.filter(|_| self.opts.method == place::Method::Keep) else { return Ok(()) };
        clear_entry(dst, &self.work.join(OsStr::from_bytes(rel)), name)
    }

    /// Hands one directory's non-directory entries to the workers (or to a dry run's planner).
    fn send_job(&mut self, job: Listed) -> Result<()> {
        let Some(dst) = job.dst else {
            let planner = self.dry.as_deref_mut().expect("only a dry run has no work tree");
            let prev = job.prev.as_deref().map(|p| p.as_fd());
            return planner.entries(&job.rel, &job.abs, job.src.as_fd(), prev, &job.names);
        };
        // Jobs go out in walk order, so the sidecar is read as a stream alongside.
        let mut records = Vec::new();
        if job.prev.is_some() {
            for (i, name) in job.names.iter().enumerate() {
                if let Some(r) = self.chunks.find(&job.rel, name.to_bytes()) {
                    records.resize_with(i, || None);
                    records.push(Some(Box::new(r)));
                }
            }
        }
        let job = Job {
            seq: self.next_seq(),
            source: job.source,
            rel: job.rel,
            abs: job.abs,
            src: job.src,
            dst,
            prev: job.prev,
            names: job.names,
            records,
        };
        self.job_tx.send(job).map_err(|_| Error::Cancelled)
    }

    /// Walks the directory tree of one source, depth-first in name order ([`tree`]: no
    /// recursion, and at most [`tree::OPEN_LEVELS`] directories of the path open, so the
    /// depth of a tree is bounded neither by the thread's stack nor by the limit on open
    /// descriptors).
    fn walk(&mut self, source: usize, rel: Vec<u8>, path: &Path, root: Fds, st: Stat) -> Result<()> {
        let abs = path.as_os_str().as_bytes().to_vec();
        let subdirs = self.list(source, &rel, &abs, &root)?;
        let start = Entered { open: root, info: Box::new(st), subdirs };
        tree::depth_first(&mut SourceTree { lister: self, source }, start, Paths::new(rel, abs), tree::OPEN_LEVELS)
    }

    /// Starts on the subdirectory `name` of the directory open as `parent` (`rel` and `abs`
    /// already name the subdirectory): creates it in the work tree and lists it. `None` when
    /// there is nothing to walk below it (unreadable, another filesystem, the destination).
    fn enter(
        &mut self,
        source: usize,
        rel: &[u8],
        abs: &[u8],
        parent: &Fds,
        name: &CStr,
    ) -> Result<Option<EnteredDir>> {
        let child_abs = Path::new(OsStr::from_bytes(abs));
        let mut st = match fsops::stat_at(parent.src.as_fd(), name) {
            Ok(st) => st,
            Err(e) => {
                self.warn(child_abs, format!("vanished or unreadable: {e}"));
                self.clear(parent.dst.as_deref(), rel, name)?;
                return Ok(None);
            }
        };
        let redirect = self.opts.roots.and_then(|r| r.redirect(child_abs, &st));
        if let Some(real) = &redirect {
            st = match rustix::fs::lstat(real) {
                Ok(st) => st,
                Err(e) => {
                    self.warn(child_abs, format!("vanished or unreadable: {e}"));
                    return Ok(None);
                }
            };
        }
        if self.is_skipped(&st, child_abs) {
            self.clear(parent.dst.as_deref(), rel, name)?;
            return Ok(None);
        }
        let dst = self.make_dir(parent.dst.as_deref(), name, rel)?.map(Arc::new);
        let opened = match &redirect {
            Some(real) => rustix::fs::open(
                real,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(std::io::Error::from),
            None => fsops::open_dir_at(parent.src.as_fd(), name),
        };
        let src = match opened {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                // Keep the directory with its owner, mode and times, without content.
                self.warn(child_abs, format!("cannot open directory: {e}"));
                self.sweep(dst.as_deref(), rel, |_| false)?;
                self.dir_done(None, dst, Box::new(st), child_abs.to_path_buf())?;
                return Ok(None);
            }
        };
        // A different filesystem below the source (a mount): keep the directory itself, as
        // `rsync -x` does, but not its content.
        if self.opts.one_file_system && st.st_dev != self.root_dev {
            self.sweep(dst.as_deref(), rel, |_| false)?;
            self.dir_done(Some(src), dst, Box::new(st), child_abs.to_path_buf())?;
            return Ok(None);
        }
        let prev = parent.prev.as_ref().and_then(|p| fsops::open_dir_at(p.as_fd(), name).ok()).map(Arc::new);
        let fds = Fds { src, dst, prev };
        let subdirs = self.list(source, rel, abs, &fds)?;
        Ok(Some((fds, Box::new(st), subdirs)))
    }

    /// Lists one directory: its files go to the workers as one job; returns its
    /// subdirectories in name order.
    fn list(&mut self, source: usize, rel: &[u8], abs: &[u8], fds: &Fds) -> Result<Vec<CString>> {
        let abs = Path::new(OsStr::from_bytes(abs));
        let (mut names, mut subdirs) = match self.read_entries(&fds.src, abs) {
            Ok(x) => x,
            Err(e) => {
                self.warn(abs, format!("cannot read directory: {e}"));
                self.sweep(fds.dst.as_deref(), rel, |_| false)?;
                return Ok(Vec::new());
            }
        };
        if let Some(hidden) = self.opts.roots.and_then(|r| r.hidden(abs)) {
            subdirs.retain(|n| n.as_c_str() != hidden);
        }
        if self.opts.method == place::Method::Keep {
            let listed: std::collections::HashSet<&CStr> =
                names.iter().chain(subdirs.iter()).map(CString::as_c_str).collect();
            self.sweep(fds.dst.as_deref(), rel, |n| {
                listed.contains(n) || (rel.is_empty() && n.to_bytes() == META_DIR.as_bytes())
            })?;
        }
        if !names.is_empty() {
            names.sort();
            let job = Listed {
                source,
                rel: Arc::new(rel.to_vec()),
                abs: Arc::new(abs.to_path_buf()),
                src: fds.src.clone(),
                dst: fds.dst.clone(),
                prev: fds.prev.clone(),
                names,
            };
            self.send_job(job)?;
        }
        Ok(subdirs)
    }

    /// Hands a complete directory to the writer, which applies its metadata once everything
    /// before it in walk order is written. Waits while too many are queued: each holds two
    /// descriptors.
    fn dir_done(
        &mut self,
        src: Option<Arc<OwnedFd>>,
        dst: Option<Arc<OwnedFd>>,
        stat: Box<Stat>,
        abs: PathBuf,
    ) -> Result<()> {
        let Some(dst) = dst else {
            if let Some(planner) = self.dry.as_deref_mut() {
                planner.directory(&abs);
            }
            return Ok(());
        };
        let slot = self.in_flight.take(self.opts.cancel).ok_or(Error::Cancelled)?;
        let keep = self.opts.method == place::Method::Keep;
        self.emit(Item::DirDone { src, dst, stat, abs, keep, _slot: slot });
        Ok(())
    }

    /// Creates the directory `name` in the work tree below `parent` (`rel` names it there), or
    /// opens it when it is there; nothing for a dry run. In a writable snapshot of the previous
    /// snapshot (`Method::Keep`) something else may have the name (the source changed a file
    /// into a directory): it is removed first.
    fn make_dir(&self, parent: Option<&OwnedFd>, name: &CStr, rel: &[u8]) -> Result<Option<OwnedFd>> {
        let Some(dir) = parent.map(|p| p.as_fd()) else { return Ok(None) };
        let keep = self.opts.method == place::Method::Keep;
        let make = |dir, name: &CStr| match keep {
            true => fsops::make_dir_at_noatime(dir, name),
            false => fsops::make_dir_at(dir, name),
        };
        let made = match make(dir, name) {
            Err(e)
                if keep
                    && matches!(
                        rustix::io::Errno::from_io_error(&e),
                        Some(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)
                    ) =>
            {
                rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty())
                    .map_err(std::io::Error::from)
                    .and_then(|()| make(dir, name))
            }
            other => other,
        };
        made.map(Some).map_err(|e| self.dest_error(rel, e))
    }

    /// Opens again the directories `ids` closed by [`SourceTree::close`] through `..` of
    /// their child `child`, and checks that they are the same directories as before.
    fn reopen(&self, child: &Fds, ids: Ids, abs: &[u8]) -> Result<Fds> {
        let path = Path::new(OsStr::from_bytes(abs));
        // `None` when `..` is not the directory it was (moved while the backup ran).
        let reopen = |fd: &OwnedFd, id: (u64, u64)| -> Result<Option<OwnedFd>> {
            crate::fs::reopen_parent(fd.as_fd(), id).ctx("open again", path)
        };
        let moved = |what: &'static str| {
            Error::io(what, path, std::io::Error::other("it was moved or replaced while the backup ran"))
        };
        let src = reopen(&child.src, ids.0)?.ok_or_else(|| moved("open again"))?;
        let dst = match (&child.dst, ids.1) {
            (Some(d), Some(id)) => {
                Some(reopen(d, id)?.ok_or_else(|| moved("open again the work tree's copy of"))?.into())
            }
            _ => None,
        };
        let prev = match (&child.prev, ids.2) {
            (Some(p), Some(id)) => reopen(p, id).ok().flatten(),
            _ => None,
        };
        Ok(Fds { src: Arc::new(src), dst, prev: prev.map(Arc::new) })
    }

    /// Reads a directory's names, applies the excludes and tags, and separates
    /// subdirectories (`source::listing`, as the agent does); counts what it left out.
    fn read_entries(&mut self, src: &OwnedFd, abs: &Path) -> std::io::Result<(Vec<CString>, Vec<CString>)> {
        let l = super::listing::list(src.as_fd(), abs, self.opts.excludes, self.opts.exclude_by)?;
        self.excluded += l.excluded;
        self.tagged.0 += l.cache_tagged;
        self.tagged.1 += l.marker_tagged;
        Ok((l.files, l.dirs))
    }
}

/// One source's tree as the build walks it ([`tree::depth_first`], with the path below `/` in
/// `Paths::a` and the absolute path in `Paths::b`): entering a directory makes its copy in the
/// work tree and sends its files to the workers; leaving it hands it to the writer for its
/// metadata.
struct SourceTree<'l, 'a> {
    lister: &'l mut Lister<'a>,
    source: usize,
}

impl<'a> Tree for SourceTree<'_, 'a> {
    type Open = Fds;
    type Closed = Ids;
    type Info = Box<Stat>;

    fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
        let entered = self.lister.enter(self.source, &paths.a, &paths.b, parent.open, name)?;
        Ok(entered.map(|(open, info, subdirs)| Entered { open, info, subdirs }))
    }

    fn leave(&mut self, fds: Fds, stat: Box<Stat>, _: Option<Parent<'_, Self>>, paths: &Paths) -> Result<()> {
        let abs = PathBuf::from(OsStr::from_bytes(&paths.b));
        self.lister.dir_done(Some(fds.src), fds.dst, stat, abs)
    }

    /// Records the identities of the directory's descriptors, checked by `reopen`.
    fn close(&mut self, fds: Fds, _: &Box<Stat>, _: &Fds, at: At) -> Result<Ids> {
        let path = Path::new(OsStr::from_bytes(at.b));
        let id = |fd: &OwnedFd| crate::fs::identity(fd.as_fd()).ctx("inspect", path);
        let prev = fds.prev.as_deref().and_then(|p| id(p).ok());
        let dst = fds.dst.as_deref().map(id).transpose()?;
        Ok((id(&fds.src)?, dst, prev))
    }

    fn reopen(&mut self, child: &Fds, ids: Ids, _: &Box<Stat>, at: At) -> Result<Fds> {
        self.lister.reopen(child, ids, at.b)
    }

    fn check(&self) -> Result<()> {
        match self.lister.opts.cancel.load(Ordering::Relaxed) {
            true => Err(Error::Cancelled),
            false => Ok(()),
        }
    }
}

/// `/home/alice` → `home/alice`.
pub(crate) fn rel_of(p: &Path) -> Vec<u8> {
    let b = p.as_os_str().as_bytes();
    let b = b.strip_suffix(b"/").unwrap_or(b);
    b.strip_prefix(b"/").unwrap_or(b).to_vec()
}

/// The order in which sources are walked, as indices into them: the manifest's order
/// ([`crate::store::manifest::cmp_key`]) of each source's path relative to `/` — a directory
/// sorts as a directory, anything else as a name in its parent. Both builds (this machine's
/// walk and the agent's) use it, so their manifests come out in the same order.
pub(crate) fn source_order(sources: impl IntoIterator<Item = (Vec<u8>, bool)>) -> Vec<usize> {
    let mut keys: Vec<(usize, Vec<u8>, Vec<u8>)> = sources
        .into_iter()
        .enumerate()
        .map(|(i, (rel, is_dir))| match is_dir {
            true => (i, rel, Vec::new()),
            false => {
                let (dir, name) = split_last(&rel);
                (i, dir, name)
            }
        })
        .collect();
    keys.sort_by(|a, b| crate::store::manifest::cmp_key(&a.1, &a.2, &b.1, &b.2));
    keys.into_iter().map(|k| k.0).collect()
}

pub(crate) fn split_last(rel: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (rel[..i].to_vec(), rel[i + 1..].to_vec()),
        None => (Vec::new(), rel.to_vec()),
    }
}

pub(crate) fn bytes_cstr(b: &[u8]) -> CString {
    CString::new(b).expect("file names hold no NUL")
}

fn worker(rx: crossbeam_channel::Receiver<Job>, tx: crossbeam_channel::Sender<(u64, Item)>, shared: &Shared) {
    let mut buf = Vec::new();
    for job in rx {
        if shared.cancel.load(Ordering::Relaxed) {
            let _ = tx.send((job.seq, Item::Fatal(Error::Cancelled)));
            continue;
        }
        let mut results = Vec::with_capacity(job.names.len());
        let mut fatal = None;
        for (i, name) in job.names.iter().enumerate() {
            let record = job.records.get(i).and_then(|r| r.as_deref());
            match entry(&job, name, record, shared, &mut buf) {
                Ok(outcome) => results.push(FileResult { name: name.clone(), outcome }),
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        let item = match fatal {
            Some(e) => {
                shared.cancel.store(true, Ordering::Relaxed);
                Item::Fatal(e)
            }
            None => Item::Files { source: job.source, rel: job.rel.clone(), dst: job.dst.clone(), results },
        };
        let _ = tx.send((job.seq, item));
    }
}

/// Handles one non-directory entry. `Err` only for fatal destination errors.
fn entry(job: &Job, name: &CStr, record: Option<&Record>, shared: &Shared, buf: &mut Vec<u8>) -> Result<Outcome> {
    let path = || job.abs.join(OsStr::from_bytes(name.to_bytes()));
    let keep_mode = shared.method == place::Method::Keep;
    let work_path = || shared.work.join(OsStr::from_bytes(&job.rel));
    let st = match fsops::stat_at(job.src.as_fd(), name) {
        Ok(st) => st,
        Err(e) => {
            if keep_mode {
                clear_entry(&job.dst, &work_path(), name)?;
            }
            return Ok(Outcome::Warning(format!("vanished or unreadable: {e}")));
        }
    };
    let prev = job.prev.as_ref().and_then(|p| fsops::stat_at(p.as_fd(), name).ok());
    // A previous copy whose extended attributes differ is not the same entry, whatever the
    // quick check says: it is copied (or, in a writable snapshot, replaced) like a changed one.
    let prev = match (&job.prev, prev) {
        (Some(dir), Some(p))
            if place::xattrs_differ(job.src.as_fd(), dir.as_fd(), name, &st, &p, shared.settled_before) =>
        {
            None
        }
        (_, p) => p,
    };
    if keep_mode {
        // In a writable snapshot of the previous snapshot: what stays is left alone, anything
        // else at this name goes before the entry is written (or left out).
        let ft = fsops::file_type(&st);
        let too_large = shared.exclude_by.too_large(u64::try_from(st.st_size).unwrap_or(0));
        let shareable = matches!(ft, FileType::RegularFile | FileType::Symlink) && !too_large;
        if !(shareable && place::keeps(prev.as_ref(), &QuickAttrs::of(&st), &shared.avoid)) {
            clear_entry(&job.dst, &work_path(), name)?;
        }
    }
    let dest_err = |op, e: std::io::Error| -> Result<Outcome> {
        if fsops::is_fatal_dest_error(&e) {
            Err(Error::io(
                op,
                shared.work.join(OsStr::from_bytes(&job.rel)).join(OsStr::from_bytes(name.to_bytes())),
                e,
            ))
        } else {
            Ok(Outcome::Warning(format!("cannot {op}: {e}")))
        }
    };
    match fsops::file_type(&st) {
        FileType::RegularFile if shared.exclude_by.too_large(u64::try_from(st.st_size).unwrap_or(0)) => {
            Ok(Outcome::TooLarge)
        }
        FileType::RegularFile if st.st_nlink > 1 => {
            regular_multi_link(job, name, &st, prev.as_ref(), record, shared, buf).or_else(|e| dest_err("copy", e))
        }
        FileType::RegularFile => {
            regular(job, name, &st, prev.as_ref(), record, shared, buf).or_else(|e| dest_err("copy", e))
        }
        FileType::Symlink => {
            // Any failure of the link (even at the link count limit) means a copy.
            let placed = place::place_by(
                shared.method,
                previous(job, shared, prev.as_ref()),
                &QuickAttrs::of(&st),
                job.dst.as_fd(),
                name,
            );
            if placed.is_ok_and(|p| p == Placement::Linked) {
                return Ok(Outcome::Symlink { linked: true });
            }
            match fsops::copy_symlink(job.src.as_fd(), name, job.dst.as_fd(), name, &st) {
                Ok(()) => Ok(Outcome::Symlink { linked: false }),
                Err(e) => dest_err("copy symlink", e),
            }
        }
        FileType::Socket => Ok(Outcome::Socket),
        FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
            match fsops::copy_special(job.src.as_fd(), name, job.dst.as_fd(), name, &st) {
                Ok(()) => Ok(Outcome::Special),
                Err(e) => dest_err("create special file", e),
            }
        }
        _ => Ok(Outcome::Warning(format!("unsupported file type at {}", path().display()))),
    }
}

/// The previous snapshot's side of an entry, when it has one.
fn previous<'a>(job: &'a Job, shared: &'a Shared, prev: Option<&'a Stat>) -> Option<place::Previous<'a>> {
    Some((job.prev.as_ref()?.as_fd(), prev?, &shared.avoid))
}

/// A regular file: link it to the previous snapshot when unchanged, else copy it (sharing
/// blocks with the previous copy where the destination can, `place::share`). `record`: the
/// previous copy's chunk sidecar record, if it has one.
fn regular(
    job: &Job,
    name: &CStr,
    st: &Stat,
    prev: Option<&Stat>,
    record: Option<&Record>,
    shared: &Shared,
    buf: &mut Vec<u8>,
) -> std::io::Result<Outcome> {
    let new = QuickAttrs::of(st);
    let emlink = match place::place_by(shared.method, previous(job, shared, prev), &new, job.dst.as_fd(), name)? {
        Placement::Linked => {
            let size = u64::try_from(st.st_size).unwrap_or(0);
            // The same inode: its record goes on, if it describes it.
            let record = record.filter(|r| prev.is_some_and(|p| r.describes(p))).cloned().map(Box::new);
            return Ok(Outcome::linked(size, None, record));
        }
        Placement::Copy { emlink } => emlink,
    };
    let base = place::share_base(previous(job, shared, prev), &new).map(|b| (b, record));
    copy_regular(job, name, st, base, buf).map(|mut o| {
        if let Outcome::Regular { emlink: e, .. } = &mut o {
            *e = emlink;
        }
        o
    })
}

/// Copies a regular file, checking afterwards that it did not change while being read; a file
/// that keeps changing is stored as read and reported, never silently.
fn copy_regular(
    job: &Job,
    name: &CStr,
    st: &Stat,
    base: Option<(place::Previous, Option<&Record>)>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Outcome> {
    // The destination's device, for `place::share` (only asked when there is a base).
    let dev = match base {
        Some(_) => rustix::fs::fstat(&*job.dst)?.st_dev,
        None => 0,
    };
    for attempt in 0..2 {
        let (src, before) = match fsops::open_source_file(job.src.as_fd(), name) {
            Ok(opened) => opened,
            Err(e) => return Ok(Outcome::Warning(format!("cannot open: {e}"))),
        };
        if attempt > 0 {
            let _ = rustix::fs::unlinkat(job.dst.as_fd(), name, rustix::fs::AtFlags::empty());
        }
        let mut dst = fsops::create_rw_file_at(job.dst.as_fd(), name)?;
        let shared = base.and_then(|(b, record)| place::share(b, name, record, &src, &dst, dev, buf));
        let reflinked = shared.is_some();
        let copied = match shared {
            Some(d) => d.map(|d| fsops::Copied { hash: d.hash, chunks: d.chunks, bytes_written: d.bytes_written }),
            None => fsops::copy_contents(&src, &before, &mut dst, buf),
        };
        let copied = match copied {
            Ok(c) => c,
            Err(e) if fsops::is_fatal_dest_error(&e) => return Err(e),
            Err(e) => return Ok(Outcome::Warning(format!("cannot read: {e}"))),
        };
        let after = rustix::fs::fstat(&src)?;
        fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), &after)?;
        let size = u64::try_from(after.st_size).unwrap_or(0);
        let torn = fsops::changed_while_open(&before, &after);
        if !torn || attempt == 1 {
            // A file that keeps changing is kept as read and reported; its hash describes
            // what was stored, so verify stays exact, and the next run copies it again
            // because its mtime will not match.
            let torn =
                torn.then(|| format!("changed while being read; stored as read ({} bytes)", copied.bytes_written));
            let _ = st;
            let record = Record::of(&after, copied.hash, copied.chunks).map(Box::new);
            return Ok(Outcome::Regular {
                size,
                hash: Some(copied.hash),
                linked: false,
                copied_bytes: copied.bytes_written,
                emlink: false,
                torn,
                reflinked,
                record,
            });
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// A regular file with several links in the source: the first occurrence is linked or
/// copied as usual; later ones become hard links to it, so the snapshot keeps the source's
/// link structure. Serialised with a lock; such files are rare.
fn regular_multi_link(
    job: &Job,
    name: &CStr,
    st: &Stat,
    prev: Option<&Stat>,
    record: Option<&Record>,
    shared: &Shared,
    buf: &mut Vec<u8>,
) -> std::io::Result<Outcome> {
    let mut links = shared.links.lock().expect("link table poisoned");
    let key = (st.st_dev, st.st_ino);
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if let Some((first_dir, first_name, hash)) = links.get(&key) {
        // The first name's directory, opened beneath the work tree without following any
        // symlink: the work tree is ours, but it lies on the destination.
        let first_at = match first_dir.is_empty() {
            true => rustix::io::dup(&shared.work_fd)?,
            false => crate::fs::beneath::open_dir(shared.work_fd.as_fd(), first_dir)?,
        };
        if shared.method == place::Method::Keep {
            // Kept by `entry` (it passed the quick check) and already a link to the first
            // name's copy, which was kept too: nothing to do. Unlinking and linking it again
            // would change its directory, whose metadata would then be written again.
            let same = |a: &Stat, b: &Stat| (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino);
            if let (Ok(have), Ok(first)) =
                (fsops::stat_at(job.dst.as_fd(), name), fsops::stat_at(first_at.as_fd(), first_name))
            {
                if fsops::file_type(&have) == FileType::RegularFile && same(&have, &first) {
                    return Ok(Outcome::linked(size, *hash, None));
                }
            }
            // Else the previous snapshot's entry at this name is replaced by the link.
            match rustix::fs::unlinkat(job.dst.as_fd(), name, rustix::fs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        rustix::fs::linkat(&first_at, first_name, job.dst.as_fd(), name, rustix::fs::AtFlags::empty())?;
        return Ok(Outcome::linked(size, *hash, None));
    }
    let mut outcome = regular(job, name, st, prev, record, shared, buf)?;
    if let Outcome::Regular { hash, linked: true, .. } = &mut outcome {
        // The writer cannot inherit a hash for the later links from the old manifest (they
        // may be new names), so compute it now.
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
        let f = rustix::fs::openat(job.dst.as_fd(), name, flags, rustix::fs::Mode::empty())?;
        *hash = Some(fsops::hash_file(&std::fs::File::from(f), buf)?);
    }
    if let Outcome::Regular { hash, .. } = &outcome {
        links.insert(key, (job.rel.as_ref().clone(), name.to_owned(), *hash));
    }
    Ok(outcome)
}

/// Removes the entry `name` (whatever it is, a whole directory too, never through a symlink)
/// of the work tree's directory `dst`, at `path`.
fn clear_entry(dst: &OwnedFd, path: &Path, name: &CStr) -> Result<()> {
    let n = crate::fs::Name::new(name.to_bytes())
        .map_err(|e| Error::Unsafe { path: path.to_path_buf(), message: e.to_string() })?;
    let dir = Dir::from_trusted_fd(rustix::io::dup(dst).ctx("duplicate descriptor", path)?, path.to_path_buf())?;
    dir.remove_tree(&n)
}

/// Puts the workers' results back in walk order and records them.
fn record_in_order(mut w: Writer, rx: crossbeam_channel::Receiver<(u64, Item)>) -> Result<Written> {
    let mut pending: BTreeMap<u64, Item> = BTreeMap::new();
    let mut next = 0u64;
    let mut fatal: Option<Error> = None;
    for (seq, item) in rx {
        pending.insert(seq, item);
        while let Some(item) = pending.remove(&next) {
            next += 1;
            // Keep draining after a failure, and let a real cause replace a mere
            // cancellation that happened to come first in walk order.
            match (&fatal, item) {
                (None, item) => fatal = record_item(&mut w, item).err(),
                (Some(f), Item::Fatal(e)) if f.is_cancelled() && !e.is_cancelled() => fatal = Some(e),
                _ => {}
            }
        }
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    w.finish()
}

fn record_item(writer: &mut Writer, item: Item) -> Result<()> {
    match item {
        Item::Files { source, rel, dst, results } => {
            for r in results {
                writer.file(source, &rel, dst.as_fd(), r)?;
            }
        }
        Item::DirDone { src, dst, stat, abs, keep, .. } => {
            let src = src.as_ref().map(|s| s.as_fd());
            let applied = if !keep {
                fsops::apply_meta_fd(src, dst.as_fd(), &stat)
            } else if fsops::meta_matches_fd(src, dst.as_fd(), &stat) {
                // Kept from the previous snapshot with everything it would be given: writing
                // it again would only copy its metadata on write (measured: a no-change run
                // re-applied it to every directory; bench/README.md, issue 19).
                Ok(())
            } else {
                // Kept, but the source's directory changed (or the walk wrote into it): its
                // metadata again, and no extended attribute the source no longer has.
                let extra = src.map_or(Ok(()), |s| fsops::remove_extra_xattrs_fd(s, dst.as_fd()));
                extra.and_then(|()| fsops::apply_meta_fd(src, dst.as_fd(), &stat))
            };
            writer.dir_done(applied, abs)?;
        }
        Item::Warn(w) => writer.warn(w.path, w.message),
        Item::Fatal(e) => return Err(e),
    }
    writer.tick();
    Ok(())
}
