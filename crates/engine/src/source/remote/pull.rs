//! The server side of a pull: builds a snapshot tree from the agent's frames.
//!
//! The destination side is the local build's: directories are created `0700` and get their
//! metadata once complete, unchanged files are hard links to the previous snapshot after the
//! same quick check and link-or-copy decision (`store::place`), and every result goes through
//! `snapshot::Writer` in walk order (counts, warnings, the manifest and its streaming merge
//! with the previous one). What differs is where entries come from, and that file contents
//! arrive later than their walk frames: each entry takes a slot in an in-order queue, and a
//! file's slot completes when its `FileEnd` arrives, so up to [`MAX_INFLIGHT`] files are in
//! transfer while the walk goes on.
//!
//! Everything the agent sends is checked before use: names are single path components,
//! directories are only ever reached one component at a time from the snapshot root without
//! following a symlink (`beneath`, for the ancestors of `WalkEnd`; everything else is made by
//! this side with `mkdirat` and opened `O_NOFOLLOW`), file ids and offsets must match
//! requests, deltas may only reference the previous copy, and device nodes are made only when
//! the host's plan allows (`PullOptions::devices`). A `File` frame must have a regular file's
//! mode, and only a regular file of the previous snapshot is linked, cloned or read (opened
//! `O_NOFOLLOW | O_NONBLOCK` and checked once open). What the agent can make this side hold or
//! do is bounded by what it sends, not by what it claims: warnings are cut and counted beyond
//! the kept ones (`record::Writer::warn`), walk frames held while transfers run are bounded in
//! bytes ([`MAX_DEFERRED_BYTES`]), directories cost their own name however deep, and a hole
//! (hashed as zeros) never reaches beyond the size the walk sent. A hostile client can spoil
//! its own snapshot, never write outside it.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use rustix::fs::FileType;

use super::proto::{self, FromAgent, How, Meta, Request, ToAgent};
use super::ssh::Connection;
use super::{agent, delta};
use crate::error::{Error, Result};
use crate::fs::beneath;
use crate::fs::fsops;
use crate::fs::Dir;
use crate::store::manifest::{entry_path, Hash, ManifestWriter};
use crate::store::meta::{Warning, META_DIR};
use crate::store::place::{self, Avoid, Placement};
use crate::store::record::{
    bounded_warning, dup_dir, split_base, BuildResult, FileResult, LinkBase, Outcome, Progress, Writer,
};

/// Files in transfer at once.
pub const MAX_INFLIGHT: usize = 64;

/// The most bytes of walk frames held while the walk waits for transfers: the frame count
/// alone (twice the flow-control window) would let frames of up to 16 MiB each, which LZ4
/// shrinks to a few KiB on the wire, fill hundreds of GiB. A real walk's frames are a name
/// and metadata, about a hundred bytes each: twice the window of them is some 3 MiB.
pub const MAX_DEFERRED_BYTES: usize = 64 << 20;

/// The most bytes of directories' extended attributes held at once: a directory's metadata
/// waits on the stack until its `DirEnd` and then in the queue until it is applied, and an
/// agent may nest directories without end, each with a frame's worth of attributes. A real
/// directory's attributes are a few hundred bytes (an ACL, a label).
pub const MAX_HELD_DIR_XATTRS: usize = 64 << 20;

/// The bytes of `meta`'s extended attributes (names and values).
fn xattr_bytes(meta: &Meta) -> usize {
    meta.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum()
}

pub use crate::store::record::Transfer;

/// What to pull.
pub struct PullOptions<'a> {
    /// The host's name (for messages).
    pub host: &'a str,
    /// Absolute source paths on the host.
    pub sources: &'a [PathBuf],
    /// Exclude patterns.
    pub excludes: &'a [String],
    /// Exclusions by tag file, marker file and size.
    pub exclude_by: &'a crate::source::markers::ExcludeBy,
    /// Stay on each source's filesystem.
    pub one_file_system: bool,
    /// Recreate device nodes (`hosts.<name>.devices`); otherwise they are counted in
    /// `devicesSkipped` and logged, not created.
    pub devices: bool,
    /// Set to stop early (the run then fails).
    pub cancel: &'a AtomicBool,
    /// How unchanged files are shared with the previous snapshot: hard links, or reflinks
    /// into a fresh btrfs subvolume (`store::btrfs`). Never `Keep`: a pull fills an empty tree.
    pub method: place::Method,
}

/// Pulls one snapshot tree into `work` (an empty directory) over `conn`, writing its
/// manifest to `manifest`. Errors are fatal: nothing of `work` may be published.
pub fn build(
    mut conn: Connection,
    opts: &PullOptions,
    work_dir: &Dir,
    manifest: ManifestWriter,
    base: Option<LinkBase>,
    progress: Progress,
) -> Result<BuildResult> {
    let work = work_dir.path();
    let (reader, writer) = conn.take_streams();
    let mut input = BufReader::with_capacity(1 << 16, reader);
    let mut output = BufWriter::with_capacity(1 << 16, writer);
    // The previous pull's walk start on the agent's clock: files older than it have not
    // changed an attribute since (`Request::xattrs_since`).
    let xattrs_since = base.as_ref().and_then(|b| b.settled_before);
    let agent_walk_started = match start(&mut input, &mut output, opts, xattrs_since) {
        Ok(t) => t,
        Err(e) => {
            drop(output); // closes ssh's stdin, so that it ends before we read its account
            return Err(explain(e, &mut conn));
        }
    };
    let work_fd = dup_dir(work_dir)?;
    let (base_fd, cursor, avoid) = split_base(base);
    let recorder = Writer::new(manifest, cursor, work.to_path_buf(), progress);
    let (tx, rx) = crossbeam_channel::unbounded::<ToAgent>();
    let sender = std::thread::spawn(move || send_frames(rx, output));
    let mut p = Puller::new(opts, proto::compressed_reader(input), tx, recorder, work, work_fd, (base_fd, avoid));
    let pulled = p.run();
    let Puller { out, writer, .. } = p;
    let _ = out.send(ToAgent::Done);
    drop(out);
    let _ = sender.join();
    if let Err(e) = pulled {
        return Err(explain(e, &mut conn));
    }
    let (counts, warnings, per_source) = writer.finish()?;
    conn.finish();
    let (bytes_received, bytes_sent) = conn.counts();
    let files_per_source = per_source.into_iter().map(|(i, n)| (opts.sources[i].clone(), n)).collect();
    Ok(BuildResult {
        counts,
        warnings,
        files_per_source,
        transfer: Some(Transfer { bytes_received, bytes_sent }),
        client_walk_started: Some(agent_walk_started),
    })
}

/// Why a pull stopped, before it becomes an `Error`: connection problems get ssh's account.
enum Stop {
    /// The connection failed or ended early.
    Lost(String),
    /// Anything else, already an error.
    Err(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Err(e)
    }
}

/// The error to report: a lost connection gets ssh's exit status and stderr ("Permission
/// denied (publickey)", "Connection refused", the agent's own last words).
fn explain(stop: Stop, conn: &mut Connection) -> Error {
    match stop {
        Stop::Err(e) => e,
        Stop::Lost(m) => Error::Remote { host: conn.host.clone(), message: with_ssh(m, conn) },
    }
}

fn with_ssh(message: String, conn: &mut Connection) -> String {
    let said = conn.diagnose();
    if said.is_empty() {
        message
    } else {
        format!("{message} ({said})")
    }
}

/// Hello, request, and the agent's answer: the time its walk starts, on its clock.
fn start(
    input: &mut impl Read,
    output: &mut impl Write,
    opts: &PullOptions,
    xattrs_since: Option<i64>,
) -> std::result::Result<i64, Stop> {
    let remote = |m: String| Stop::Err(Error::Remote { host: opts.host.to_string(), message: m });
    let lost = |e: io::Error| Stop::Lost(format!("the connection failed before the agent answered: {e}"));
    proto::send_hello(output).map_err(lost)?;
    match proto::read_hello(input) {
        Ok(()) => {}
        Err(proto::HelloError::Io(e)) => return Err(lost(e)),
        Err(proto::HelloError::NotAnAgent(said)) => {
            // Read no further: a program that is not the agent may wait for input forever.
            return Err(Stop::Lost(format!(
                "the remote command is not `hwc-backup agent`: it answered {:?}",
                String::from_utf8_lossy(&said).trim()
            )));
        }
        Err(proto::HelloError::Version(v)) => {
            return Err(remote(format!(
                "the agent speaks protocol {v}, this server speaks {}; install the same hwc-backup version on both",
                proto::PROTOCOL
            )))
        }
    }
    let request = Request {
        sources: opts.sources.iter().map(|s| s.as_os_str().as_bytes().to_vec()).collect(),
        excludes: opts.excludes.to_vec(),
        one_file_system: opts.one_file_system,
        exclude_by: opts.exclude_by.clone(),
        xattrs_since,
    };
    proto::write_frame(output, &ToAgent::Request(request)).and_then(|()| output.flush()).map_err(lost)?;
    let mut buf = Vec::new();
    match proto::read_frame::<FromAgent>(input, &mut buf) {
        Ok(Some(FromAgent::Ready { walk_started })) => Ok(walk_started),
        Ok(Some(FromAgent::Error(m))) => Err(remote(format!("the agent refused: {m}"))),
        Ok(Some(other)) => Err(remote(format!("protocol error: expected Ready, got {other:?}"))),
        Ok(None) => Err(Stop::Lost("the connection closed before the agent answered".into())),
        Err(e) => Err(lost(e)),
    }
}

/// Writes frames to the agent until the channel closes; a write error ends it quietly (the
/// reading side then sees the connection end and reports).
fn send_frames(rx: crossbeam_channel::Receiver<ToAgent>, output: impl Write) {
    let mut out = output;
    for frame in rx.iter() {
        if proto::write_frame(&mut out, &frame).is_err() {
            return;
        }
        if rx.is_empty() && out.flush().is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// A directory on the way down: where it goes, its previous copy, its metadata.
struct Level {
    dir: Arc<DirPath>,
    dst: Arc<OwnedFd>,
    prev: Option<Arc<OwnedFd>>,
    /// `None` for the parent directory of a source (its metadata comes with `WalkEnd`).
    meta: Option<Meta>,
}

/// A directory's path in the snapshot, kept as its name below its parent: a level costs its
/// own name, where a full path per level (and per queued entry) grew with the square of the
/// depth, and an agent may nest directories as deep as it likes. The path is spelled out
/// when an entry is recorded (`PathCache`) or named in a message.
struct DirPath {
    parent: Option<Arc<DirPath>>,
    /// One component; for a source's parent directory, its whole path (empty: the root).
    name: Vec<u8>,
}

impl DirPath {
    fn top(rel: &[u8]) -> Arc<DirPath> {
        Arc::new(DirPath { parent: None, name: rel.to_vec() })
    }

    fn child(self: &Arc<Self>, name: &[u8]) -> Arc<DirPath> {
        Arc::new(DirPath { parent: Some(self.clone()), name: name.to_vec() })
    }

    /// The snapshot's root directory.
    fn is_root(&self) -> bool {
        self.parent.is_none() && self.name.is_empty()
    }

    /// The path relative to the snapshot root, written into `out`.
    fn write_into(&self, out: &mut Vec<u8>) {
        let mut names = Vec::new();
        let mut at = Some(self);
        while let Some(d) = at {
            names.push(d.name.as_slice());
            at = d.parent.as_deref();
        }
        out.clear();
        for name in names.into_iter().rev().filter(|n| !n.is_empty()) {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(name);
        }
    }

    fn rel(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_into(&mut out);
        out
    }
}

impl Drop for DirPath {
    /// One parent at a time: dropping a chain thousands of levels deep recursively would
    /// overflow the stack.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(p) = next {
            next = Arc::try_unwrap(p).ok().and_then(|mut d| d.parent.take());
        }
    }
}

/// The path of the directory whose entries were recorded last, spelled out once for all of
/// them.
#[derive(Default)]
struct PathCache {
    dir: Option<Arc<DirPath>>,
    rel: Vec<u8>,
}

impl PathCache {
    fn of(&mut self, dir: &Arc<DirPath>) -> &[u8] {
        if !self.dir.as_ref().is_some_and(|d| Arc::ptr_eq(d, dir)) {
            dir.write_into(&mut self.rel);
            self.dir = Some(dir.clone());
        }
        &self.rel
    }
}

/// One walk frame's result, recorded when everything before it is.
struct Slot {
    seq: u64,
    kind: SlotKind,
}

enum SlotKind {
    File { source: usize, dir: Arc<DirPath>, dst: Arc<OwnedFd>, name: CString, outcome: Option<Outcome> },
    Dir { dst: Arc<OwnedFd>, meta: Meta, dir: Arc<DirPath> },
    Warn(Warning),
}

/// A file in transfer.
struct Inflight {
    dir: Arc<DirPath>,
    dst: Arc<OwnedFd>,
    name: CString,
    sink: Sink,
    /// The previous copy, while a delta is expected.
    base: Option<(File, u64)>,
    emlink: bool,
    link: Option<(u64, u64)>,
    /// A write failed in a way that only concerns this file.
    failed: Option<String>,
}

/// The first copy of a multiply-linked source inode.
struct First {
    dst: Arc<OwnedFd>,
    name: CString,
    hash: Option<Hash>,
    done: bool,
}

struct Puller<'a, R: Read> {
    opts: &'a PullOptions<'a>,
    input: R,
    buf: Vec<u8>,
    out: Sender<ToAgent>,
    writer: Writer<'a>,
    work: PathBuf,
    work_fd: OwnedFd,
    base_fd: Option<OwnedFd>,
    /// The link base's damaged inodes, never hard-linked.
    avoid: Avoid,
    stack: Vec<Level>,
    paths: PathCache,
    source: usize,
    queue: VecDeque<Slot>,
    inflight: HashMap<u64, Inflight>,
    /// Walk frames read while the walk waits, with their sizes.
    deferred: VecDeque<(FromAgent, usize)>,
    deferred_bytes: usize,
    /// Bytes of extended attributes of directories entered and not yet applied.
    held_dir_xattrs: usize,
    links: HashMap<(u64, u64), First>,
    /// The number of the next walk frame.
    seq: u64,
    acked: u64,
}

type Step = std::result::Result<(), Stop>;

impl<'a, R: Read> Puller<'a, R> {
    fn new(
        opts: &'a PullOptions<'a>,
        input: R,
        out: Sender<ToAgent>,
        writer: Writer<'a>,
        work: &Path,
        work_fd: OwnedFd,
        (base_fd, avoid): (Option<OwnedFd>, Avoid),
    ) -> Self {
        Puller {
            opts,
            input,
            buf: Vec::new(),
            out,
            writer,
            work: work.to_path_buf(),
            work_fd,
            base_fd,
            avoid,
            stack: Vec::new(),
            paths: PathCache::default(),
            source: 0,
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            held_dir_xattrs: 0,
            links: HashMap::new(),
            seq: 0,
            acked: 0,
        }
    }

    fn remote(&self, message: impl Into<String>) -> Stop {
        Stop::Err(Error::Remote { host: self.opts.host.to_string(), message: message.into() })
    }

    fn protocol(&self, message: impl std::fmt::Display) -> Stop {
        self.remote(format!("protocol error: {message}"))
    }

    /// The walk, then the last transfers.
    fn run(&mut self) -> Step {
        loop {
            if self.opts.cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled.into());
            }
            let frame = match self.deferred.pop_front() {
                Some((f, size)) => {
                    self.deferred_bytes -= size;
                    f
                }
                None => self.read()?,
            };
            if !frame.is_walk() {
                self.data(frame)?;
                self.flush()?;
                continue;
            }
            while self.inflight.len() >= MAX_INFLIGHT {
                self.pump()?;
            }
            // The agent may run WINDOW frames ahead of the acknowledgements, which lag the
            // queue's front by at most an eighth of that: beyond twice the window it ignores
            // the flow control, and the queue would grow without bound.
            if self.queue.front().is_some_and(|s| self.seq - s.seq > 2 * proto::WINDOW) {
                return Err(self.protocol("the agent ignores the flow-control window"));
            }
            let end = matches!(frame, FromAgent::WalkEnd { .. });
            self.walk(frame)?;
            self.seq += 1;
            self.flush()?;
            if end {
                break;
            }
        }
        while !self.inflight.is_empty() {
            self.pump()?;
        }
        self.flush()?;
        if !self.queue.is_empty() || !self.stack.is_empty() {
            return Err(self.protocol("the walk ended with directories still open"));
        }
        Ok(())
    }

    fn read(&mut self) -> std::result::Result<FromAgent, Stop> {
        match proto::read_frame::<FromAgent>(&mut self.input, &mut self.buf) {
            Ok(Some(FromAgent::Error(m))) => Err(self.remote(format!("the agent failed: {m}"))),
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(Stop::Lost("the connection closed in the middle of the transfer".into())),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(self.protocol(e)),
            Err(e) => Err(Stop::Lost(format!("the connection failed in the middle of the transfer: {e}"))),
        }
    }

    /// Reads one frame while the walk waits: data is handled, walk frames wait their turn.
    fn pump(&mut self) -> Step {
        let frame = self.read()?;
        if frame.is_walk() {
            if self.deferred.len() as u64 > 2 * proto::WINDOW {
                return Err(self.protocol("the agent ignores the flow-control window"));
            }
            let size = self.buf.len();
            if self.deferred_bytes + size > MAX_DEFERRED_BYTES {
                return Err(self.protocol(format!(
                    "the agent sent more than {} MiB of walk frames while files were in transfer",
                    MAX_DEFERRED_BYTES >> 20
                )));
            }
            self.deferred_bytes += size;
            self.deferred.push_back((frame, size));
            return Ok(());
        }
        self.data(frame)?;
        self.flush()
    }

    fn send(&self, frame: ToAgent) {
        // A closed channel means the sender thread stopped on a broken connection, which the
        // next read reports.
        let _ = self.out.send(frame);
    }

    /// Records every completed slot at the front of the queue, and acknowledges.
    fn flush(&mut self) -> Step {
        while self.queue.front().is_some_and(Slot::is_done) {
            let slot = self.queue.pop_front().expect("front exists");
            self.record(slot)?;
        }
        self.writer.tick();
        let upto = self.queue.front().map_or(self.seq, |s| s.seq);
        if upto >= self.acked + proto::WINDOW / 8 {
            self.acked = upto;
            self.send(ToAgent::Ack { upto });
        }
        Ok(())
    }

    fn record(&mut self, slot: Slot) -> Step {
        match slot.kind {
            SlotKind::File { source, dir, dst, name, outcome } => {
                let outcome = outcome.expect("recorded only when done");
                let rel = self.paths.of(&dir);
                self.writer.file(source, rel, dst.as_fd(), FileResult { name, outcome })?;
            }
            SlotKind::Dir { dst, meta, dir } => {
                self.held_dir_xattrs = self.held_dir_xattrs.saturating_sub(xattr_bytes(&meta));
                let applied = fsops::apply_attrs_fd(dst.as_fd(), &meta.attrs(), &meta.xattrs);
                self.writer.dir_done(applied, abs_of(self.paths.of(&dir), b""))?;
            }
            SlotKind::Warn(w) => self.writer.warn(w.path, w.message),
        }
        Ok(())
    }

    fn push(&mut self, kind: SlotKind) {
        self.queue.push_back(Slot { seq: self.seq, kind });
    }

    fn push_file(&mut self, name: CString, outcome: Option<Outcome>) -> Step {
        let top = self.top()?;
        let (dir, dst) = (top.dir.clone(), top.dst.clone());
        self.push(SlotKind::File { source: self.source, dir, dst, name, outcome });
        Ok(())
    }

    fn top(&self) -> std::result::Result<&Level, Stop> {
        self.stack.last().ok_or_else(|| self.protocol("an entry outside any source"))
    }

    /// One walk frame.
    fn walk(&mut self, frame: FromAgent) -> Step {
        match frame {
            FromAgent::Source { index, parent } => self.begin_source(index, &parent),
            FromAgent::SourceEnd => match self.stack.pop() {
                Some(Level { meta: None, .. }) => Ok(()),
                _ => Err(self.protocol("SourceEnd inside a directory")),
            },
            FromAgent::Dir { name, meta } => self.enter_dir(&name, meta),
            FromAgent::DirEnd => match self.stack.pop() {
                Some(Level { meta: Some(meta), dst, dir, .. }) => {
                    self.push(SlotKind::Dir { dst, meta, dir });
                    Ok(())
                }
                _ => Err(self.protocol("DirEnd without a directory")),
            },
            FromAgent::File { name, meta, link, xattrs } => self.file(&name, meta, link, xattrs),
            FromAgent::Symlink { name, meta, target } => self.symlink(&name, &meta, &target),
            FromAgent::Special { name, meta } => self.special(&name, &meta),
            FromAgent::Socket => self.push_file(CString::default(), Some(Outcome::Socket)),
            FromAgent::Warn { path, message } => {
                // Cut now: a queue of them waits for the transfers before it.
                self.push(SlotKind::Warn(bounded_warning(PathBuf::from(OsStr::from_bytes(&path)), message)));
                Ok(())
            }
            FromAgent::WalkEnd { excluded, excluded_caches, excluded_if_present, excluded_large, ancestors } => {
                self.writer.add_excluded_by(excluded_caches, excluded_if_present, excluded_large);
                self.end_walk(excluded, ancestors)
            }
            other => Err(self.protocol(format!("unexpected {other:?}"))),
        }
    }

    fn begin_source(&mut self, index: u32, parent: &[u8]) -> Step {
        if !self.stack.is_empty() || index as usize >= self.opts.sources.len() {
            return Err(self.protocol("a source inside another, or one that was not requested"));
        }
        if parent.split(|&c| c == b'/').find(|c| !c.is_empty()) == Some(META_DIR.as_bytes()) {
            return Err(self.refused_meta_dir());
        }
        self.source = index as usize;
        let mut dst =
            rustix::io::dup(&self.work_fd).map_err(|e| Error::io("duplicate descriptor", &self.work, e.into()))?;
        let mut prev = self.base_fd.as_ref().and_then(|b| rustix::io::dup(b).ok());
        for comp in parent.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            let c = self.component(comp)?;
            let here = abs_of(parent, b"");
            dst = fsops::make_dir_at(dst.as_fd(), &c).map_err(|e| Error::io("create directory", &here, e))?;
            prev = prev.and_then(|p| fsops::open_dir_at(p.as_fd(), &c).ok());
        }
        let level = Level { dir: DirPath::top(parent), dst: Arc::new(dst), prev: prev.map(Arc::new), meta: None };
        self.stack.push(level);
        Ok(())
    }

    /// A name from the agent, checked to be one path component.
    fn component(&self, name: &[u8]) -> std::result::Result<CString, Stop> {
        let ok = !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/');
        match CString::new(name) {
            Ok(c) if ok => Ok(c),
            _ => Err(self.protocol(format!("invalid file name {:?}", String::from_utf8_lossy(name)))),
        }
    }

    /// The name of an entry of the current directory: one component, and not the snapshot's
    /// own metadata directory (made before the walk and written after it, so an agent must
    /// not get to put anything there, such as a symlink where a temporary file will go).
    fn entry_name(&self, name: &[u8]) -> std::result::Result<CString, Stop> {
        let c = self.component(name)?;
        if self.top()?.dir.is_root() && name == META_DIR.as_bytes() {
            return Err(self.refused_meta_dir());
        }
        Ok(c)
    }

    fn refused_meta_dir(&self) -> Stop {
        self.remote(format!("refused the entry /{META_DIR}: it is the name of the snapshot's own metadata directory"))
    }

    fn enter_dir(&mut self, name: &[u8], meta: Meta) -> Step {
        let c = self.entry_name(name)?;
        let top = self.top()?;
        let dst = fsops::make_dir_at(top.dst.as_fd(), &c).map_err(|e| {
            Error::io("create directory", self.work.join(OsStr::from_bytes(&entry_path(&top.dir.rel(), name))), e)
        })?;
        let prev = top.prev.as_ref().and_then(|p| fsops::open_dir_at(p.as_fd(), &c).ok()).map(Arc::new);
        let dir = top.dir.child(name);
        self.held_dir_xattrs += xattr_bytes(&meta);
        if self.held_dir_xattrs > MAX_HELD_DIR_XATTRS {
            return Err(self.protocol(format!(
                "the agent sent more than {} MiB of extended attributes of directories not yet closed (at {})",
                MAX_HELD_DIR_XATTRS >> 20,
                abs_of(&dir.rel(), b"").display()
            )));
        }
        self.stack.push(Level { dir, dst: Arc::new(dst), prev, meta: Some(meta) });
        Ok(())
    }

    /// A destination error: fatal when it concerns the whole destination, else a warning
    /// about this entry (as in the local build).
    fn dest_err(&self, op: &'static str, name: &CString, e: io::Error) -> std::result::Result<Outcome, Stop> {
        if fsops::is_fatal_dest_error(&e) {
            let rel = self.stack.last().map(|l| l.dir.rel()).unwrap_or_default();
            return Err(Error::io(
                op,
                self.work.join(OsStr::from_bytes(&rel)).join(OsStr::from_bytes(name.to_bytes())),
                e,
            )
            .into());
        }
        Ok(Outcome::Warning(format!("cannot {op}: {e}")))
    }

    fn symlink(&mut self, name: &[u8], meta: &Meta, target: &[u8]) -> Step {
        let c = self.entry_name(name)?;
        let top = self.top()?;
        let (dst, prev) = (top.dst.clone(), top.prev.clone());
        if let Some(p) = &prev {
            // Any failure of the link (even at the link count limit) means a copy.
            let st = fsops::stat_at(p.as_fd(), &c).ok();
            let previous = st.as_ref().map(|st| (p.as_fd(), st, &self.avoid));
            if place::place_by(self.opts.method, previous, &meta.quick(), dst.as_fd(), &c)
                .is_ok_and(|p| p == Placement::Linked)
            {
                return self.push_file(c, Some(Outcome::Symlink { linked: true }));
            }
        }
        let outcome = match fsops::make_symlink(dst.as_fd(), &c, target, &meta.attrs()) {
            Ok(()) => Outcome::Symlink { linked: false },
            Err(e) => self.dest_err("copy symlink", &c, e)?,
        };
        self.push_file(c, Some(outcome))
    }

    fn special(&mut self, name: &[u8], meta: &Meta) -> Step {
        let c = self.entry_name(name)?;
        let dst = self.top()?.dst.clone();
        let device = matches!(FileType::from_raw_mode(meta.mode), FileType::CharacterDevice | FileType::BlockDevice);
        if device && !self.opts.devices {
            let p = abs_of(&self.top()?.dir.rel(), name);
            tracing::warn!(
                "{}: device node of host {} not recreated (hosts.{}.devices / --devices is off)",
                p.display(),
                self.opts.host,
                self.opts.host
            );
            return self.push_file(c, Some(Outcome::DeviceSkipped));
        }
        let outcome = match fsops::make_special(dst.as_fd(), &c, &meta.attrs(), meta.rdev, &meta.xattrs) {
            Ok(()) => Outcome::Special,
            Err(e) => self.dest_err("create special file", &c, e)?,
        };
        self.push_file(c, Some(outcome))
    }

    /// A regular file: a link to its first copy (hard links in the source), a link to the
    /// previous snapshot when unchanged (attributes included, where the agent sent them),
    /// else a transfer.
    fn file(&mut self, name: &[u8], meta: Meta, link: Option<(u64, u64)>, xattrs: Option<fsops::Xattrs>) -> Step {
        if meta.mtime_nsec >= 1_000_000_000 {
            return Err(self.protocol(format!("a file's mtime has {} nanoseconds", meta.mtime_nsec)));
        }
        let c = self.entry_name(name)?;
        if FileType::from_raw_mode(meta.mode) != FileType::RegularFile {
            // Its quick check would pass against a previous symlink or FIFO of that mode, which
            // would then be linked in, and read, as this file.
            return Err(self.protocol(format!(
                "{} is sent as a regular file, but its mode {:o} is not a regular file's",
                abs_of(&self.top()?.dir.rel(), name).display(),
                meta.mode
            )));
        }
        if let Some(key) = link {
            while self.links.get(&key).is_some_and(|f| !f.done) {
                self.pump()?; // the first copy is still in transfer
            }
            if let Some(first) = self.links.get(&key) {
                let linked = rustix::fs::linkat(
                    first.dst.as_fd(),
                    &first.name,
                    self.top()?.dst.as_fd(),
                    &c,
                    rustix::fs::AtFlags::empty(),
                );
                let hash = first.hash;
                let outcome = match linked {
                    Ok(()) => Outcome::linked(meta.size, hash, None),
                    Err(e) => self.dest_err("copy", &c, e.into())?,
                };
                return self.push_file(c, Some(outcome));
            }
        }
        let top = self.top()?;
        let (dst, prev) = (top.dst.clone(), top.prev.clone());
        // Only a regular file is a previous copy: linked, cloned or read as a delta's base.
        let prev_st = prev
            .as_ref()
            .and_then(|p| fsops::stat_at(p.as_fd(), &c).ok())
            .filter(|st| fsops::file_type(st) == FileType::RegularFile);
        // Sent attributes that differ from the previous copy's make it a copy (a delta
        // against that copy: the content is likely the same), as `setfattr` locally does.
        let attrs_differ = match (xattrs, prev.as_ref(), prev_st.as_ref()) {
            (Some(x), Some(p), Some(st)) => place::sent_xattrs_differ(p.as_fd(), &c, &meta.quick(), st, x),
            _ => false,
        };
        let previous =
            prev.as_ref().zip(prev_st.as_ref()).filter(|_| !attrs_differ).map(|(p, st)| (p.as_fd(), st, &self.avoid));
        let emlink = match place::place_by(self.opts.method, previous, &meta.quick(), dst.as_fd(), &c) {
            Ok(Placement::Linked) => return self.linked_to_previous(c, &meta, link, &dst),
            Ok(Placement::Copy { emlink }) => emlink,
            Err(e) => {
                let p = self.work.join(OsStr::from_bytes(&top.dir.rel())).join(OsStr::from_bytes(name));
                return Err(Error::io("create hard link", p, e).into());
            }
        };
        let base = prev_st
            .map(|st| u64::try_from(st.st_size).unwrap_or(0))
            .filter(|&n| n >= delta::MIN_DELTA_SIZE && meta.size >= delta::MIN_DELTA_SIZE)
            .and_then(|n| fsops::open_regular_at(prev?.as_fd(), &c).ok().map(|(f, _)| (f, n)));
        self.transfer(c, &meta, link, dst, base, emlink)
    }

    /// Linked to the previous snapshot; a multiply-linked inode's hash is computed now,
    /// because its other names may be new to the old manifest (as locally).
    fn linked_to_previous(&mut self, c: CString, meta: &Meta, link: Option<(u64, u64)>, dst: &Arc<OwnedFd>) -> Step {
        let mut hash = None;
        if let Some(key) = link {
            let f = fsops::open_regular_at(dst.as_fd(), &c);
            let h = f.and_then(|(f, _)| fsops::hash_file(&f, &mut Vec::new()));
            hash = Some(h.map_err(|e| Error::io("read", self.work.join(OsStr::from_bytes(c.to_bytes())), e))?);
            self.links.insert(key, First { dst: dst.clone(), name: c.clone(), hash, done: true });
        }
        let outcome = Outcome::linked(meta.size, hash, None);
        self.push_file(c, Some(outcome))
    }

    fn transfer(
        &mut self,
        c: CString,
        meta: &Meta,
        link: Option<(u64, u64)>,
        dst: Arc<OwnedFd>,
        base: Option<(File, u64)>,
        emlink: bool,
    ) -> Step {
        let file = match fsops::create_rw_file_at(dst.as_fd(), &c) {
            Ok(f) => f,
            Err(e) => {
                let outcome = self.dest_err("copy", &c, e)?;
                return self.push_file(c, Some(outcome));
            }
        };
        // The signature costs one read of the previous copy; an unreadable one means "whole".
        let sig = base.as_ref().and_then(|(f, n)| delta::signature(f, *n).ok());
        let (how, base) = match sig {
            Some(s) => (How::Delta(s), base),
            None => (How::Whole, None),
        };
        // A large file rebuilt from its previous copy is written into a clone of that copy
        // where the destination can (btrfs, XFS), comparing block by block (`place`).
        let big = |n: u64| n > crate::store::delta::CHUNKED_ABOVE;
        let cloned = base.as_ref().filter(|(_, n)| big(*n) && big(meta.size)).and_then(|(prev, n)| {
            let dev = rustix::fs::fstat(&*dst).ok()?.st_dev;
            place::clone_into(prev, &file, dev).then_some(*n)
        });
        let holes = meta.allocated < meta.size;
        let dir = self.top()?.dir.clone();
        let id = self.seq;
        let sink = Sink {
            file,
            listed: meta.size,
            hasher: blake3::Hasher::new(),
            pos: 0,
            written: 0,
            holes: holes && base.is_some(),
            cloned,
            scratch: Vec::new(),
        };
        let f = Inflight { dir, dst: dst.clone(), name: c.clone(), sink, base, emlink, link, failed: None };
        self.inflight.insert(id, f);
        if let Some(key) = link {
            self.links.insert(key, First { dst, name: c.clone(), hash: None, done: false });
        }
        self.send(ToAgent::Send { id, how });
        self.push_file(c, None)
    }

    fn end_walk(&mut self, excluded: u64, ancestors: Vec<(Vec<u8>, Meta)>) -> Step {
        if !self.stack.is_empty() {
            return Err(self.protocol("the walk ended inside a source"));
        }
        self.writer.add_excluded(excluded);
        for (rel, meta) in ancestors {
            if rel.split(|&c| c == b'/').next() == Some(META_DIR.as_bytes()) {
                return Err(self.refused_meta_dir());
            }
            let abs = abs_of(&rel, b"");
            // Component by component, never through a symlink: the agent may have made any
            // name in the snapshot a symlink to anywhere on this machine.
            let fd = beneath::open_dir(self.work_fd.as_fd(), &rel).map_err(|refused| {
                let at = abs_of(&refused.at, b"");
                self.remote(format!(
                    "refused the directory {} sent at the end of the walk: {} in the snapshot is {}",
                    abs.display(),
                    at.display(),
                    refused.why
                ))
            })?;
            self.held_dir_xattrs += xattr_bytes(&meta);
            self.push(SlotKind::Dir { dst: Arc::new(fd), meta, dir: DirPath::top(&rel) });
        }
        Ok(())
    }

    /// A content frame.
    fn data(&mut self, frame: FromAgent) -> Step {
        match frame {
            FromAgent::Data { id, offset, lz4, bytes } => {
                let bytes = proto::decompress(lz4, bytes).map_err(|e| self.protocol(e))?;
                if self.inflight.get(&id).is_none_or(|f| f.base.is_some()) {
                    return Err(self.protocol(format!("data for file {id}, which is not expected whole")));
                }
                let f = self.inflight.get_mut(&id).expect("checked");
                if f.failed.is_some() {
                    return Ok(()); // left out at its end; nothing more to hash
                }
                let written = f.sink.at(offset, &bytes);
                self.wrote(id, written)
            }
            FromAgent::Delta { id, lz4, bytes } => {
                let bytes = proto::decompress(lz4, bytes).map_err(|e| self.protocol(e))?;
                if self.inflight.get(&id).is_none_or(|f| f.base.is_none()) {
                    return Err(self.protocol(format!("a delta for file {id}, which is not expected")));
                }
                let f = self.inflight.get_mut(&id).expect("checked");
                let (base, len) = f.base.as_ref().expect("checked");
                let sink = &mut f.sink;
                let applied = delta::apply(&bytes, base, *len, &mut |piece| sink.at(sink.pos, piece));
                match applied {
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(self.protocol(e)),
                    other => self.wrote(id, other),
                }
            }
            FromAgent::FileEnd { id, length, hash, meta, torn } => self.file_end(id, length, hash, meta, torn),
            FromAgent::FileError { id, message } => {
                let f = self.inflight.remove(&id).ok_or_else(|| self.protocol(format!("an error for file {id}")))?;
                self.discard(id, f, message)
            }
            other => Err(self.protocol(format!("unexpected {other:?}"))),
        }
    }

    /// After a write into a file in transfer: a destination-wide error is fatal, any other
    /// spoils only this file (reported at its end).
    fn wrote(&mut self, id: u64, result: io::Result<()>) -> Step {
        let Err(e) = result else { return Ok(()) };
        let f = self.inflight.get_mut(&id).expect("in transfer");
        if fsops::is_fatal_dest_error(&e) {
            let p = self.work.join(OsStr::from_bytes(&f.dir.rel())).join(OsStr::from_bytes(f.name.to_bytes()));
            return Err(Error::io("write", p, e).into());
        }
        f.failed.get_or_insert(format!("cannot copy: {e}"));
        Ok(())
    }

    /// A file that cannot be stored: its partial copy goes, a warning stays.
    fn discard(&mut self, id: u64, f: Inflight, message: String) -> Step {
        drop(f.sink);
        let _ = rustix::fs::unlinkat(f.dst.as_fd(), &f.name, rustix::fs::AtFlags::empty());
        if let Some(key) = f.link {
            self.links.remove(&key);
        }
        self.complete(id, Outcome::Warning(message))
    }

    fn file_end(&mut self, id: u64, length: u64, hash: Hash, meta: Meta, torn: bool) -> Step {
        let mut f = self.inflight.remove(&id).ok_or_else(|| self.protocol(format!("the end of file {id}")))?;
        if let Some(m) = f.failed.take() {
            return self.discard(id, f, m);
        }
        let (got, written) = match f.sink.finish(length) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(self.protocol(e)),
            Err(e) => {
                self.inflight.insert(id, f);
                self.wrote(id, Err(e))?;
                let mut f = self.inflight.remove(&id).expect("just inserted");
                let message = f.failed.take().unwrap_or_else(|| "cannot copy".into());
                return self.discard(id, f, message);
            }
        };
        if got != hash {
            return self.refetch(id, f);
        }
        if let Err(e) = fsops::apply_attrs_fd(f.sink.file.as_fd(), &meta.attrs(), &meta.xattrs) {
            let outcome = self.dest_err("copy", &f.name, e)?;
            return self.complete(id, outcome);
        }
        if let Some(first) = f.link.and_then(|k| self.links.get_mut(&k)) {
            first.hash = Some(got);
            first.done = true;
        }
        let torn = torn.then(|| format!("changed while being read; stored as read ({written} bytes)"));
        let outcome = Outcome::Regular {
            size: meta.size,
            hash: Some(got),
            linked: false,
            copied_bytes: written,
            emlink: f.emlink,
            torn,
            reflinked: f.sink.cloned.is_some(),
            record: None,
        };
        self.complete(id, outcome)
    }

    /// A delta rebuilt other content than the agent read (an MD4 collision, or a previous
    /// copy damaged on disk): fetch the whole file. A whole transfer that arrives damaged is a
    /// bug or a broken connection, and fails the run.
    fn refetch(&mut self, id: u64, mut f: Inflight) -> Step {
        if f.base.is_none() {
            let p = abs_of(&f.dir.rel(), f.name.to_bytes());
            return Err(self.remote(format!("{} arrived damaged (its BLAKE3 differs from the agent's)", p.display())));
        }
        tracing::info!(
            "delta of {} rebuilt other content; fetching it whole",
            abs_of(&f.dir.rel(), f.name.to_bytes()).display()
        );
        f.base = None;
        f.sink.reset().map_err(|e| Error::io("truncate", self.work.join(OsStr::from_bytes(&f.dir.rel())), e))?;
        self.inflight.insert(id, f);
        self.send(ToAgent::Send { id, how: How::Whole });
        Ok(())
    }

    fn complete(&mut self, id: u64, outcome: Outcome) -> Step {
        let i = self
            .queue
            .binary_search_by_key(&id, |s| s.seq)
            .map_err(|_| self.protocol(format!("file {id} is not pending")))?;
        match &mut self.queue[i].kind {
            SlotKind::File { outcome: o @ None, .. } => *o = Some(outcome),
            _ => return Err(self.protocol(format!("file {id} completed twice"))),
        }
        Ok(())
    }
}

impl Slot {
    fn is_done(&self) -> bool {
        !matches!(self.kind, SlotKind::File { outcome: None, .. })
    }
}

/// Where a file's content goes: written at offsets, hashed in order with holes as zeros.
struct Sink {
    file: File,
    /// The size the walk sent: no hole reaches beyond it (see [`Sink::hole_to`]).
    listed: u64,
    hasher: blake3::Hasher,
    pos: u64,
    written: u64,
    /// Skip writing all-zero blocks (the source file has holes; the whole transfer skips
    /// them at the agent, a delta rebuild here).
    holes: bool,
    /// The file is a clone (`FICLONE`) of the previous copy, of this length: only blocks that
    /// differ from what it holds are written.
    cloned: Option<u64>,
    /// Scratch space for reading the clone back.
    scratch: Vec<u8>,
}

impl Sink {
    const BLOCK: u64 = 4096;

    fn at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset < self.pos {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "content out of order"));
        }
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "content beyond the largest possible offset"));
        };
        self.hole_to(offset)?;
        self.hasher.update(data);
        if let Some(old_len) = self.cloned {
            self.scratch.resize(data.len(), 0);
            self.written += crate::store::delta::write_differing(&self.file, data, &mut self.scratch, offset, old_len)?;
        } else if self.holes {
            self.write_sparse(offset, data)?;
        } else {
            self.file.write_all_at(data, offset)?;
            self.written += data.len() as u64;
        }
        self.pos = end;
        Ok(())
    }

    /// Hashes the hole from the content so far up to `to` as zeros, if it ends within the
    /// size the walk sent. Every byte of a hole costs hashing, not bandwidth: without this
    /// bound, one frame claiming content at 1 PiB would keep this side hashing for days. A
    /// file that really grew by a hole since it was listed is left out with a warning (the
    /// next run stores it); one that grew by content is stored as read.
    fn hole_to(&mut self, to: u64) -> io::Result<()> {
        if to > self.pos && to > self.listed {
            return Err(io::Error::other(format!(
                "a hole up to byte {to}, beyond the {} bytes the file had when listed",
                self.listed
            )));
        }
        agent::hash_zeros(&mut self.hasher, to.saturating_sub(self.pos));
        Ok(())
    }

    /// Writes `data` at `offset`, leaving out whole aligned blocks of zeros.
    fn write_sparse(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut i = 0usize;
        while i < data.len() {
            let at = offset + i as u64;
            let n = ((Self::BLOCK - at % Self::BLOCK) as usize).min(data.len() - i);
            let piece = &data[i..i + n];
            let whole_block = n as u64 == Self::BLOCK;
            if !(whole_block && piece.iter().all(|&b| b == 0)) {
                self.file.write_all_at(piece, at)?;
                self.written += n as u64;
            }
            i += n;
        }
        Ok(())
    }

    /// The content's hash and the bytes written; the file gets length `length` (a trailing
    /// hole included).
    fn finish(&mut self, length: u64) -> io::Result<(Hash, u64)> {
        if length < self.pos {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "more content than the file's length"));
        }
        self.hole_to(length)?;
        if self.cloned.is_some() && self.pos < length {
            // A trailing hole: what the clone holds there is the old content, not zeros.
            self.file.set_len(self.pos)?;
        }
        self.pos = length;
        self.file.set_len(length)?;
        Ok((*self.hasher.finalize().as_bytes(), self.written))
    }

    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.hasher = blake3::Hasher::new();
        self.pos = 0;
        self.written = 0;
        self.holes = false;
        self.cloned = None;
        Ok(())
    }
}

/// The absolute path on the host of `rel/name` (for messages).
fn abs_of(rel: &[u8], name: &[u8]) -> PathBuf {
    let mut p = vec![b'/'];
    p.extend_from_slice(rel);
    if !name.is_empty() {
        if !rel.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
    }
    PathBuf::from(OsStr::from_bytes(&p))
}
