//! The client side of a pull: `hwc-backup agent`, started by the server over ssh.
//!
//! Three threads: the **walker** lists the sources (the local walk's rules: sorted names,
//! the same excludes, `oneFileSystem`, sockets counted, problems as warnings), the
//! **server reader** serves file requests in order and takes acknowledgements, and the
//! calling thread **writes** every frame to stdout. The walker never runs more than
//! [`proto::WINDOW`] frames ahead of the server's acknowledgements, so neither side's memory
//! grows with the tree.
//!
//! The agent only ever reads, and only below the paths its own configuration allows (fixed in
//! the `authorized_keys` command, out of the server's reach). A requested source is resolved
//! once, when the request is checked: the allowed path it lies in is opened as configured,
//! and every component below it one directory at a time without following a symlink
//! (`remote::beneath`), so `allowed/link/secret` with `link -> /elsewhere` is refused, not
//! served; the source itself may be a symlink and is then sent as one. The walk then works
//! from those descriptors only, and files are opened again with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` below their source, so a symlink swapped
//! in after the listing cannot lead the agent outside it either.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{Receiver, Sender};
use rustix::fs::{FileType, OFlags, SeekFrom, Stat};

use super::delta;
use super::proto::{self, FromAgent, How, Meta, Request, ToAgent};
use crate::error::{Error, Result};
use crate::fs::beneath;
use crate::fs::fsops;
use crate::fs::tree::{self, At, Entered, Parent, Paths, Tree};
use crate::source::exclude::ExcludeSet;
use crate::source::local::{bytes_cstr, rel_of, source_order, split_last};
use crate::source::markers::ExcludeBy;
use crate::store::manifest::{entry_path, Hash};

/// What the agent may serve, fixed on the client.
#[derive(Clone, Debug, Default)]
pub struct AgentConfig {
    /// Absolute paths the server may request (a source must be one of them or lie inside one).
    pub allow: Vec<PathBuf>,
    /// Patterns excluded in addition to the server's.
    pub excludes: Vec<String>,
}

/// Bytes of file content per `Data` frame.
const CHUNK: usize = 256 << 10;

/// Serves one pull session on `input`/`output` (the ssh session's stdin/stdout). Returns when
/// the server says `Done`; an error when the request is refused or the connection fails.
pub fn serve(config: &AgentConfig, input: impl Read + Send, output: impl Write + Send) -> Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut output = BufWriter::with_capacity(1 << 16, output);
    let lost = |e: io::Error| Error::Agent(format!("the connection to the server failed: {e}"));
    proto::send_hello(&mut output).map_err(lost)?;
    match proto::read_hello(&mut input) {
        Ok(()) => {}
        Err(proto::HelloError::Version(v)) => {
            let m = format!(
                "the server speaks protocol {v}, this agent speaks {}; install the same hwc-backup version on both",
                proto::PROTOCOL
            );
            return refuse(&mut output, m);
        }
        Err(proto::HelloError::NotAnAgent(b)) => {
            return Err(Error::Agent(format!(
                "the peer is not an hwc-backup server (it sent {:?})",
                String::from_utf8_lossy(&b)
            )))
        }
        Err(proto::HelloError::Io(e)) => return Err(lost(e)),
    }
    let mut buf = Vec::new();
    let request = match proto::read_frame::<ToAgent>(&mut input, &mut buf).map_err(lost)? {
        Some(ToAgent::Request(r)) => r,
        Some(other) => return refuse(&mut output, format!("expected a request, got {other:?}")),
        None => return Err(Error::Agent("the server closed the connection before its request".into())),
    };
    let (sources, excludes) = match check_request(config, &request) {
        Ok(x) => x,
        Err(m) => return refuse(&mut output, m),
    };
    // Checked as the plan checks it: the server is trusted with what to leave out, not with
    // names that would reach outside a directory.
    let by = &request.exclude_by;
    let larger = by.larger_than.map(|n| n.to_string());
    if let Err(m) = ExcludeBy::new(by.caches, &by.if_present, larger.as_deref()) {
        return refuse(&mut output, format!("excludeIfPresent: {m}"));
    }
    let walk_started = jiff::Timestamp::now().as_second();
    proto::write_frame(&mut output, &FromAgent::Ready { walk_started }).map_err(lost)?;
    let walk = WalkRules {
        excludes: &excludes,
        one_file_system: request.one_file_system,
        by,
        xattrs_since: request.xattrs_since,
    };
    session(&sources, &walk, input, proto::CompressedWriter::new(output))
}

/// Tells the server why, then fails.
fn refuse(output: &mut impl Write, message: String) -> Result<()> {
    let _ = proto::write_frame(output, &FromAgent::Error(message.clone())).and_then(|()| output.flush());
    Err(Error::Agent(message))
}

/// A requested source, resolved when the request is checked: its parent directory and name,
/// reached without following a symlink below the allowed path it lies in, and the
/// directories on the way (for their metadata at the end of the walk).
struct Resolved {
    /// As requested (for messages and excludes).
    path: PathBuf,
    /// The directory holding it.
    parent: Arc<OwnedFd>,
    /// Its name in `parent`.
    name: CString,
    /// Directories strictly between the allowed path and the source, by path below `/`.
    below_allow: Vec<(Vec<u8>, Arc<OwnedFd>)>,
}

/// The sources and excludes of an acceptable request, or why it is refused.
fn check_request(config: &AgentConfig, r: &Request) -> std::result::Result<(Vec<Resolved>, ExcludeSet), String> {
    if config.allow.is_empty() {
        return Err("this agent allows no sources; give it --allow PATH in its authorized_keys command".into());
    }
    let mut sources = Vec::new();
    for s in &r.sources {
        let p = PathBuf::from(OsStr::from_bytes(s));
        let clean = p.is_absolute()
            && !s.contains(&0)
            && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !clean {
            return Err(format!("source {:?} is not a clean absolute path", p.display().to_string()));
        }
        // Spelled one way only (`/a//b/` is `/a/b`), so that paths compare as they should.
        let p: PathBuf = p.components().collect();
        if p.parent().is_none() {
            return Err("source / cannot be pulled; name the directories below it".into());
        }
        // The longest allowed path the source lies in (components compared, so /home2 is not
        // in /home).
        let Some(allowed) = config.allow.iter().filter(|a| p.starts_with(a)).max_by_key(|a| a.components().count())
        else {
            return Err(format!(
                "source {} is not allowed by this agent (allowed: {})",
                p.display(),
                config.allow.iter().map(|a| a.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        sources.push(resolve(&p, allowed)?);
    }
    let all: Vec<String> = r.excludes.iter().chain(&config.excludes).cloned().collect();
    let excludes = ExcludeSet::new(&all).map_err(|e| e.to_string())?;
    Ok((sources, excludes))
}

/// Resolves `path`, which lies in the allowed path `allowed`. The allowed path is the
/// agent's own configuration and is opened as the system resolves it; everything below it
/// comes from the server and is walked one directory at a time without following any
/// symlink. The source itself may be a symlink (it is sent as one).
fn resolve(path: &Path, allowed: &Path) -> std::result::Result<Resolved, String> {
    let unreadable = |e: &dyn std::fmt::Display| {
        format!("source {} cannot be read on {}: {e}", path.display(), crate::fs::fsutil::hostname())
    };
    let below: Vec<&[u8]> =
        path.strip_prefix(allowed).expect("lies in it").components().map(|c| c.as_os_str().as_bytes()).collect();
    let (top, below, name) = match below.split_last() {
        // The allowed path itself: its parent is the agent's configuration too.
        None => {
            let name = path.file_name().expect("not the root").as_bytes();
            (path.parent().expect("not the root").to_path_buf(), Vec::new(), name)
        }
        Some((name, dirs)) => (allowed.components().collect::<PathBuf>(), dirs.to_vec(), *name),
    };
    let top_fd = crate::source::local::open_dir(&top).map_err(|e| unreadable(&e))?;
    let fds = beneath::open_dirs(top_fd.as_fd(), &below).map_err(|refused| {
        let at = top.join(OsStr::from_bytes(&refused.at));
        if refused.is_link() {
            format!(
                "source {} is refused: {} is {}; a source may not lie below a symlink",
                path.display(),
                at.display(),
                refused.why
            )
        } else {
            unreadable(&format!("{} is {}", at.display(), refused.why))
        }
    })?;
    let mut below_allow = Vec::new();
    let mut rel = rel_of(&top);
    for (comp, fd) in below.iter().zip(fds) {
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(comp);
        below_allow.push((rel.clone(), Arc::new(fd)));
    }
    let parent = below_allow.last().map_or_else(|| Arc::new(top_fd), |(_, fd)| fd.clone());
    let name = CString::new(name).expect("checked: no NUL");
    if let Err(e) = fsops::stat_at(parent.as_fd(), &name) {
        return Err(unreadable(&e));
    }
    Ok(Resolved { path: path.to_path_buf(), parent, name, below_allow })
}

/// A regular file the server may still ask for: its source root and path below it.
#[derive(Clone)]
struct FileRef {
    root: Arc<OwnedFd>,
    rel: Vec<u8>,
}

/// What the three threads share.
struct Shared {
    /// The first walk frame the server has not completed.
    acked: Mutex<u64>,
    wake: Condvar,
    stop: AtomicBool,
    files: Mutex<BTreeMap<u64, FileRef>>,
}

impl Shared {
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _guard = self.acked.lock().expect("ack lock poisoned");
        self.wake.notify_all();
    }

    /// Waits until frame `seq` is inside the window; false when the session is stopping.
    fn wait_window(&self, seq: u64) -> bool {
        let mut acked = self.acked.lock().expect("ack lock poisoned");
        while seq >= *acked + proto::WINDOW && !self.stop.load(Ordering::Relaxed) {
            acked = self.wake.wait(acked).expect("ack lock poisoned");
        }
        !self.stop.load(Ordering::Relaxed)
    }

    fn ack(&self, upto: u64) {
        let mut files = self.files.lock().expect("file table poisoned");
        *files = files.split_off(&upto);
        drop(files);
        let mut acked = self.acked.lock().expect("ack lock poisoned");
        *acked = (*acked).max(upto);
        self.wake.notify_all();
    }
}

/// What the walk leaves out, and where it stops.
struct WalkRules<'a> {
    excludes: &'a ExcludeSet,
    one_file_system: bool,
    by: &'a ExcludeBy,
    /// `Request::xattrs_since`.
    xattrs_since: Option<i64>,
}

fn session(sources: &[Resolved], rules: &WalkRules, input: impl Read + Send, output: impl Write + Send) -> Result<()> {
    let shared = Shared {
        acked: Mutex::new(0),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        files: Mutex::new(BTreeMap::new()),
    };
    let (tx, rx) = crossbeam_channel::bounded::<FromAgent>(16);
    std::thread::scope(|scope| {
        let walker = {
            let (tx, shared) = (tx.clone(), &shared);
            scope.spawn(move || {
                let mut w = Walker {
                    out: tx,
                    shared,
                    excludes: rules.excludes,
                    one_file_system: rules.one_file_system,
                    by: rules.by,
                    xattrs_since: rules.xattrs_since,
                    seq: 0,
                    excluded: 0,
                    excluded_by: [0; 3],
                    root_dev: 0,
                    root: None,
                };
                // A panic in the walk is an error the server hears of: otherwise the other
                // threads (and the server) would wait for a walk that never ends.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run(sources)))
                    .unwrap_or_else(|panic| Err(Error::Agent(format!("internal error in the walk: {}", what(&panic)))));
                if let Err(e) = &result {
                    let _ = w.out.send(FromAgent::Error(e.to_string()));
                }
                result
            })
        };
        let reader = {
            let shared = &shared;
            scope.spawn(move || {
                let r = serve_requests(input, tx, shared);
                shared.stop();
                r
            })
        };
        let written = write_frames(rx, output);
        if written.is_err() {
            shared.stop();
        }
        let walked = walker.join().expect("walker panicked");
        let served = reader.join().expect("request thread panicked");
        // The walker's own failure says most; "stopping" only echoes another thread's.
        match walked {
            Err(e) if e.is_cancelled() => served.and(written).and(Err(Error::Agent(STOPPING.into()))),
            walked => walked.and(served).and(written),
        }
    })
}

const STOPPING: &str = "the session is stopping";

/// A panic's message.
fn what(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// Writes frames until every sender is gone, flushing whenever nothing else is queued.
fn write_frames(rx: Receiver<FromAgent>, output: impl Write) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, output);
    let lost = |e: io::Error| Error::Agent(format!("cannot write to the server: {e}"));
    for frame in rx.iter() {
        proto::write_frame(&mut out, &frame).map_err(lost)?;
        if rx.is_empty() {
            out.flush().map_err(lost)?;
        }
    }
    out.flush().map_err(lost)
}

/// Reads the server's frames: file requests (served in order) and acknowledgements.
fn serve_requests(input: impl Read, tx: Sender<FromAgent>, shared: &Shared) -> Result<()> {
    let mut input = input;
    let mut buf = Vec::new();
    loop {
        let frame = proto::read_frame::<ToAgent>(&mut input, &mut buf)
            .map_err(|e| Error::Agent(format!("reading from the server failed: {e}")))?;
        match frame {
            Some(ToAgent::Send { id, how }) => {
                let file = shared.files.lock().expect("file table poisoned").get(&id).cloned();
                let frames = match file {
                    Some(f) => send_file(&f, id, how, &tx),
                    None => Err(format!("the server asked for unknown file {id}")),
                };
                let last = match frames {
                    Ok(end) => end,
                    Err(message) => FromAgent::FileError { id, message },
                };
                if tx.send(last).is_err() {
                    return Ok(()); // the writer stopped; it reports why
                }
            }
            Some(ToAgent::Ack { upto }) => shared.ack(upto),
            Some(ToAgent::Done) => return Ok(()),
            Some(ToAgent::Request(_)) => return Err(Error::Agent("the server sent a second request".into())),
            None => return Err(Error::Agent("the server closed the connection before the end".into())),
        }
    }
}

/// Opens a listed file again, below its source, refusing any symlink on the way.
fn open_beneath(f: &FileRef) -> io::Result<File> {
    use rustix::fs::ResolveFlags;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let path = bytes_cstr(&f.rel);
    let open = |flags| rustix::fs::openat2(f.root.as_fd(), path.as_c_str(), flags, rustix::fs::Mode::empty(), how);
    let fd = match open(flags | OFlags::NOATIME) {
        Err(rustix::io::Errno::PERM) => open(flags),
        // Kernels before 5.6, and paths longer than PATH_MAX: the same, one directory at a time.
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::NAMETOOLONG) => {
            let (dir, name) = split_last(&f.rel);
            let name = bytes_cstr(&name);
            if dir.is_empty() {
                rustix::fs::openat(f.root.as_fd(), name.as_c_str(), flags, rustix::fs::Mode::empty())
            } else {
                let fd = beneath::open_dir(f.root.as_fd(), &dir).map_err(|r| io::Error::other(r.to_string()))?;
                rustix::fs::openat(fd.as_fd(), name.as_c_str(), flags, rustix::fs::Mode::empty())
            }
        }
        other => other,
    }?;
    Ok(fd.into())
}

/// Sends one file's content; returns its `FileEnd`, or the message of a `FileError`.
fn send_file(f: &FileRef, id: u64, how: How, tx: &Sender<FromAgent>) -> std::result::Result<FromAgent, String> {
    let file = open_beneath(f).map_err(|e| format!("cannot open: {e}"))?;
    let before = rustix::fs::fstat(&file).map_err(|e| format!("cannot inspect: {e}"))?;
    if fsops::file_type(&before) != FileType::RegularFile {
        return Err("is no longer a regular file".into());
    }
    let sent = match how {
        How::Whole => send_whole(&file, &before, id, tx),
        How::Delta(sig) => send_delta(&file, sig, id, tx),
    };
    let (length, hash) = sent.map_err(|e| format!("cannot read: {e}"))?;
    let after = rustix::fs::fstat(&file).map_err(|e| format!("cannot inspect: {e}"))?;
    let mut meta = Meta::of(&after);
    meta.xattrs = fsops::read_xattrs_fd(file.as_fd()).map_err(|e| format!("cannot read extended attributes: {e}"))?;
    Ok(FromAgent::FileEnd { id, length, hash, meta, torn: fsops::changed_while_open(&before, &after) })
}

fn data_frame(id: u64, offset: u64, bytes: &[u8]) -> FromAgent {
    let (lz4, bytes) = proto::maybe_compress(bytes.to_vec());
    FromAgent::Data { id, offset, lz4, bytes }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closing")
}

/// The whole content, holes skipped (as the local copy does), hashed with holes as zeros.
fn send_whole(file: &File, st: &Stat, id: u64, tx: &Sender<FromAgent>) -> io::Result<(u64, Hash)> {
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let allocated = u64::try_from(st.st_blocks).unwrap_or(0) * 512;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    if size == 0 || allocated >= size {
        let mut offset = 0u64;
        let mut r = file;
        loop {
            let n = delta::read_full(&mut r, &mut buf)?;
            if n == 0 {
                return Ok((offset, *hasher.finalize().as_bytes()));
            }
            hasher.update(&buf[..n]);
            tx.send(data_frame(id, offset, &buf[..n])).map_err(|_| gone())?;
            offset += n as u64;
        }
    }
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        hash_zeros(&mut hasher, data - pos);
        pos = data;
        if pos >= size {
            break;
        }
        let end = rustix::fs::seek(file, SeekFrom::Hole(pos))?.min(size);
        while pos < end {
            let want = (end - pos).min(CHUNK as u64) as usize;
            let n = delta::read_full_at(file, &mut buf[..want], pos)?;
            if n == 0 {
                break; // it shrank: the rest reads as a hole, and the re-stat reports it
            }
            hasher.update(&buf[..n]);
            tx.send(data_frame(id, pos, &buf[..n])).map_err(|_| gone())?;
            pos += n as u64;
        }
        if pos < end {
            break;
        }
    }
    hash_zeros(&mut hasher, size.saturating_sub(pos));
    Ok((size, *hasher.finalize().as_bytes()))
}

/// Feeds `n` zero bytes to a hasher (a hole).
pub(crate) fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The content as deltas against the server's signature, one per window.
fn send_delta(file: &File, signature: Vec<u8>, id: u64, tx: &Sender<FromAgent>) -> io::Result<(u64, Hash)> {
    let sig = delta::parse_signature(signature)?;
    let index = sig.index();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; delta::WINDOW];
    let mut length = 0u64;
    let mut r = file;
    loop {
        let n = delta::read_full(&mut r, &mut buf)?;
        if n == 0 {
            return Ok((length, *hasher.finalize().as_bytes()));
        }
        hasher.update(&buf[..n]);
        let (lz4, bytes) = proto::maybe_compress(delta::diff(&index, &buf[..n])?);
        tx.send(FromAgent::Delta { id, lz4, bytes }).map_err(|_| gone())?;
        length += n as u64;
    }
}

/// The walk, in the local lister's order and with its rules (`snapshot::Lister`).
struct Walker<'a> {
    out: Sender<FromAgent>,
    shared: &'a Shared,
    excludes: &'a ExcludeSet,
    one_file_system: bool,
    by: &'a ExcludeBy,
    /// Files whose `ctime` is at or after this carry their xattrs (`Request::xattrs_since`).
    xattrs_since: Option<i64>,
    seq: u64,
    excluded: u64,
    /// Left out by `by`: tagged directories (cache, marker) and large files.
    excluded_by: [u64; 3],
    root_dev: u64,
    /// The directory every file sent is opened below later: the source being walked (its
    /// parent for a source that is a file).
    root: Option<Arc<OwnedFd>>,
}

/// A directory being walked: its fd, its absolute path, its path below the source root.
struct Here<'a> {
    fd: &'a OwnedFd,
    abs: &'a Path,
    rel: &'a [u8],
}

impl Walker<'_> {
    fn send(&mut self, frame: FromAgent) -> Result<()> {
        if !self.shared.wait_window(self.seq) {
            return Err(Error::Cancelled);
        }
        self.seq += 1;
        self.out.send(frame).map_err(|_| Error::Cancelled)
    }

    fn warn(&mut self, path: &Path, message: String) -> Result<()> {
        self.send(FromAgent::Warn { path: path.as_os_str().as_bytes().to_vec(), message })
    }

    fn run(&mut self, sources: &[Resolved]) -> Result<()> {
        let mut kinds = Vec::new();
        for s in sources {
            let st = fsops::stat_at(s.parent.as_fd(), &s.name).map_err(|e| Error::io("inspect source", &s.path, e))?;
            kinds.push((rel_of(&s.path), fsops::file_type(&st) == FileType::Directory));
        }
        let mut ancestors: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
        for i in source_order(kinds) {
            self.source(i as u32, &sources[i], &mut ancestors)?;
        }
        let mut metas = Vec::new();
        // The directories below an allowed path as they were reached when the request was
        // checked (never through a symlink); those above it by their path.
        let reached: BTreeMap<&[u8], &Arc<OwnedFd>> =
            sources.iter().flat_map(|s| s.below_allow.iter().map(|(rel, fd)| (rel.as_slice(), fd))).collect();
        for rel in ancestors.keys().rev() {
            let abs = PathBuf::from(OsStr::from_bytes(&[b"/".as_slice(), rel].concat()));
            let opened;
            let fd = match reached.get(rel.as_slice()) {
                Some(fd) => fd.as_ref(),
                None => {
                    opened = crate::source::local::open_dir(&abs)?;
                    &opened
                }
            };
            let st = rustix::fs::fstat(fd).map_err(|e| Error::io("inspect", &abs, e.into()))?;
            let mut meta = Meta::of(&st);
            meta.xattrs = fsops::read_xattrs_fd(fd.as_fd()).map_err(|e| Error::io("read xattrs of", &abs, e))?;
            metas.push((rel.clone(), meta));
        }
        let (excluded, [excluded_caches, excluded_if_present, excluded_large]) = (self.excluded, self.excluded_by);
        self.send(FromAgent::WalkEnd {
            excluded,
            excluded_caches,
            excluded_if_present,
            excluded_large,
            ancestors: metas,
        })
    }

    fn source(&mut self, index: u32, source: &Resolved, ancestors: &mut BTreeMap<Vec<u8>, ()>) -> Result<()> {
        let path = source.path.as_path();
        let (parent, cname) = (&source.parent, &source.name);
        let st = fsops::stat_at(parent.as_fd(), cname).map_err(|e| Error::io("inspect source", path, e))?;
        let is_dir = fsops::file_type(&st) == FileType::Directory;
        if self.excludes.is_excluded(path, is_dir) {
            self.excluded += 1;
            return Ok(());
        }
        let rel = rel_of(path);
        let (parent_rel, name) = split_last(&rel);
        let mut so_far = Vec::new();
        for comp in parent_rel.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            if !so_far.is_empty() {
                so_far.push(b'/');
            }
            so_far.extend_from_slice(comp);
            ancestors.insert(so_far.clone(), ());
        }
        self.send(FromAgent::Source { index, parent: parent_rel })?;
        let parent_path = path.parent().unwrap_or(Path::new("/"));
        self.root_dev = st.st_dev;
        if !is_dir {
            self.root = Some(parent.clone());
            let here = Here { fd: parent, abs: parent_path, rel: &[] };
            self.entry(&here, cname, &st)?;
            return self.send(FromAgent::SourceEnd);
        }
        let src = fsops::open_dir_at(parent.as_fd(), cname).map_err(|e| Error::io("open source", path, e))?;
        let mut meta = Meta::of(&st);
        meta.xattrs = fsops::read_xattrs_fd(src.as_fd()).map_err(|e| Error::io("read xattrs of", path, e))?;
        self.send(FromAgent::Dir { name, meta })?;
        let root = Arc::new(src);
        self.root = Some(root.clone());
        let subdirs = self.files(&Here { fd: &root, abs: path, rel: &[] })?;
        let start = Entered { open: root, info: (), subdirs };
        // Leaving each directory sends its `DirEnd`, the source's own last.
        let paths = Paths::new(Vec::new(), path.as_os_str().as_bytes().to_vec());
        tree::depth_first(self, start, paths, tree::OPEN_LEVELS)?;
        self.send(FromAgent::SourceEnd)
    }

    /// Sends a directory's non-directories, sorted; returns its subdirectories, sorted.
    fn files(&mut self, here: &Here) -> Result<Vec<CString>> {
        let (mut files, dirs) = match self.read_entries(here.fd, here.abs) {
            Ok(x) => x,
            Err(e) => {
                self.warn(here.abs, format!("cannot read directory: {e}"))?;
                return Ok(Vec::new());
            }
        };
        files.sort();
        for name in &files {
            match fsops::stat_at(here.fd.as_fd(), name) {
                Ok(st) => self.entry(here, name, &st)?,
                Err(e) => self.warn(&join(here.abs, name), format!("vanished or unreadable: {e}"))?,
            }
        }
        Ok(dirs)
    }

    /// Sends a subdirectory's `Dir`; returns it open when its entries are to follow (the
    /// caller then sends its `DirEnd`), else sends the `DirEnd` too.
    fn subdir(&mut self, parent: &OwnedFd, name: &CStr, abs: &Path) -> Result<Option<OwnedFd>> {
        let st = match fsops::stat_at(parent.as_fd(), name) {
            Ok(st) => st,
            Err(e) => return self.warn(abs, format!("vanished or unreadable: {e}")).map(|()| None),
        };
        let mut meta = Meta::of(&st);
        let fd = match fsops::open_dir_at(parent.as_fd(), name) {
            Ok(fd) => fd,
            Err(e) => {
                // Kept with its owner, mode and times, without content (as locally).
                self.send(FromAgent::Dir { name: name.to_bytes().to_vec(), meta })?;
                self.warn(abs, format!("cannot open directory: {e}"))?;
                return self.send(FromAgent::DirEnd).map(|()| None);
            }
        };
        match fsops::read_xattrs_fd(fd.as_fd()) {
            Ok(x) => meta.xattrs = x,
            Err(e) => self.warn(abs, format!("cannot copy directory metadata: {e}"))?,
        }
        self.send(FromAgent::Dir { name: name.to_bytes().to_vec(), meta })?;
        if self.one_file_system && st.st_dev != self.root_dev {
            return self.send(FromAgent::DirEnd).map(|()| None);
        }
        Ok(Some(fd))
    }

    /// One non-directory.
    fn entry(&mut self, here: &Here, name: &CStr, st: &Stat) -> Result<()> {
        let bytes = name.to_bytes().to_vec();
        let meta = Meta::of(st);
        match fsops::file_type(st) {
            FileType::RegularFile if self.by.too_large(meta.size) => {
                self.excluded_by[2] += 1;
                Ok(())
            }
            FileType::RegularFile => {
                let rel = entry_path(here.rel, name.to_bytes());
                let root = self.root.clone().expect("a source is being walked");
                let f = FileRef { root, rel };
                self.shared.files.lock().expect("file table poisoned").insert(self.seq, f);
                let link = (st.st_nlink > 1).then_some((st.st_dev, st.st_ino));
                // `setfattr` and `setfacl` move only the ctime: a file touched since the
                // previous walk says what its attributes are now. Unreadable ones are not
                // sent; the content transfer, if any, reports the problem.
                let recent = self.xattrs_since.is_none_or(|t| st.st_ctime >= t);
                let xattrs = recent.then(|| fsops::read_xattrs_at(here.fd.as_fd(), name).ok()).flatten();
                self.send(FromAgent::File { name: bytes, meta, link, xattrs })
            }
            FileType::Symlink => match rustix::fs::readlinkat(here.fd.as_fd(), name, Vec::new()) {
                Ok(target) => self.send(FromAgent::Symlink { name: bytes, meta, target: target.into_bytes() }),
                Err(e) => self.warn(&join(here.abs, name), format!("cannot copy symlink: {e}")),
            },
            FileType::Socket => self.send(FromAgent::Socket),
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                match fsops::read_xattrs_at(here.fd.as_fd(), name) {
                    Ok(xattrs) => self.send(FromAgent::Special { name: bytes, meta: Meta { xattrs, ..meta } }),
                    Err(e) => self.warn(&join(here.abs, name), format!("cannot create special file: {e}")),
                }
            }
            _ => {
                let p = join(here.abs, name);
                self.warn(&p, format!("unsupported file type at {}", p.display()))
            }
        }
    }

    /// A directory's names without the excluded ones, split into non-directories and
    /// directories (sorted): `source::listing`, as this machine's own walk reads them.
    fn read_entries(&mut self, fd: &OwnedFd, abs: &Path) -> io::Result<(Vec<CString>, Vec<CString>)> {
        let l = crate::source::listing::list(fd.as_fd(), abs, self.excludes, self.by)?;
        self.excluded += l.excluded;
        self.excluded_by[0] += l.cache_tagged;
        self.excluded_by[1] += l.marker_tagged;
        Ok((l.files, l.dirs))
    }
}

/// A source's tree as the agent walks it ([`tree::depth_first`], as this machine's walk, with
/// the path below the source in `Paths::a` and the absolute path in `Paths::b`):
/// entering a directory sends its `Dir` and its non-directories, leaving it its `DirEnd`.
impl Tree for Walker<'_> {
    type Open = Arc<OwnedFd>;
    type Closed = (u64, u64);
    type Info = ();

    fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
        let abs = Path::new(OsStr::from_bytes(&paths.b));
        let Some(fd) = self.subdir(parent.open, name, abs)? else { return Ok(None) };
        let fd = Arc::new(fd);
        let subdirs = self.files(&Here { fd: &fd, abs, rel: &paths.a })?;
        Ok(Some(Entered { open: fd, info: (), subdirs }))
    }

    fn leave(&mut self, _: Arc<OwnedFd>, (): (), _: Option<Parent<'_, Self>>, _: &Paths) -> Result<()> {
        self.send(FromAgent::DirEnd)
    }

    fn close(&mut self, open: Arc<OwnedFd>, (): &(), _: &Arc<OwnedFd>, at: At) -> Result<(u64, u64)> {
        crate::fs::identity(open.as_fd()).map_err(|e| Error::io("inspect", show(at), e))
    }

    fn reopen(&mut self, child: &Arc<OwnedFd>, closed: (u64, u64), (): &(), at: At) -> Result<Arc<OwnedFd>> {
        let moved = || io::Error::other("it was moved or replaced while the backup ran");
        let fd = crate::fs::reopen_parent(child.as_fd(), closed).map_err(|e| Error::io("open again", show(at), e))?;
        fd.map(Arc::new).ok_or_else(|| Error::io("open again", show(at), moved()))
    }
}

/// The absolute path of a directory the walk closes or reopens, for messages.
fn show(at: At) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(at.b))
}

fn join(dir: &Path, name: &CStr) -> PathBuf {
    dir.join(OsStr::from_bytes(name.to_bytes()))
}
