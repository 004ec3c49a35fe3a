//! Verifying a snapshot against its manifest, and sampling it against the live source.
//!
//! Every file the manifest lists is read again and hashed; a file whose hash differs is
//! "changed" (bit rot, or someone edited the backup), one that is gone is "missing", and a
//! regular file in the tree that the manifest does not list is "unexpected". One pass: the
//! tree is walked in name order beside the manifest (parsed on a thread of its own), and the
//! files to read go, a directory's worth at a time with a descriptor of that directory, to the
//! hashing threads.
//!
//! **By inode, once.** Snapshots share unchanged files as hard links, so verifying many
//! snapshots ([`verify_with`] with an [`Inodes`] shared across the calls) hashes each distinct
//! `(device, inode)` once: the first snapshot that holds it reads it, every later one takes
//! the hash found then and compares it with its own manifest (`filesShared`, no bytes read).
//! The inode of a name comes from the directory listing (`d_ino`), so a file already hashed
//! costs no system call at all — no open, no stat — on the filesystems whose listings give
//! the inode's own number (ext4, XFS, btrfs, tmpfs, F2FS, ZFS); elsewhere each file is opened
//! and its inode taken from `fstat`. A damaged inode is thus reported in every snapshot that holds it, from one read
//! ([`attribute_damage`] lists them per file).
//!
//! **Subsets.** [`Slice`] `i` of `n` is the inodes whose bucket — the first eight bytes of
//! BLAKE3 of the device and inode numbers (little endian), as an integer, modulo `n` — is
//! `i`: every distinct inode is in exactly one slice, so `n` calls with `i = 0 … n-1` check each
//! once, whatever the order of the snapshots or the manifests. `verify --subset N%` uses
//! `n = ⌈100 / N⌉` and keeps the next `i` per drive (`ops::state`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex;

use rustix::fs::{FileType, Mode, OFlags};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fs::beneath::{self, DirCache};
use crate::fs::Name;
use crate::store::layout::{HostDir, Snapshot};
use crate::store::manifest::{cmp_key, Entry, Hash, ManifestReader};
use crate::store::meta::{MANIFEST_FILE, META_DIR};
use crate::store::walk;

/// A snapshot's list of files marked lost by `repair` (`.hwc-backup/lost.json`).
pub const LOST_FILE: &str = "lost.json";

/// The result of verifying one snapshot.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// `daily/NAME`.
    pub snapshot: String,
    /// Files hashed.
    pub files_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Listed in the manifest, not in the tree.
    #[serde(serialize_with = "lossy_paths")]
    pub missing: Vec<PathBuf>,
    /// Content differs from the manifest.
    #[serde(serialize_with = "lossy_paths")]
    pub changed: Vec<PathBuf>,
    /// In the tree, not in the manifest.
    #[serde(serialize_with = "lossy_paths")]
    pub unexpected: Vec<PathBuf>,
    /// Files compared with the live source (`--sample`).
    pub sampled: u64,
    /// Sampled files whose content differs from the live source although size and mtime
    /// match the snapshot's copy (a change the quick check cannot see).
    #[serde(serialize_with = "lossy_paths")]
    pub sample_mismatches: Vec<PathBuf>,
    /// Sampled files that changed on the source after the snapshot (not an error).
    pub sample_changed_since: u64,
    /// Files read and hashed in this snapshot (the others were shared with a snapshot checked
    /// before, or outside the slice).
    #[serde(default)]
    pub files_read: u64,
    /// Bytes read for them.
    #[serde(default)]
    pub bytes_read: u64,
    /// Files whose inode a snapshot checked before had already hashed.
    #[serde(default)]
    pub files_shared: u64,
    /// Files outside the slice of a `--subset` verify (not checked).
    #[serde(default)]
    pub files_skipped: u64,
    /// Damaged files marked lost by `repair` (known, not counted as damage again).
    #[serde(serialize_with = "lossy_paths", default)]
    pub lost: Vec<PathBuf>,
    /// Per changed file: every snapshot verified in the same call that holds the same inode
    /// (filled in by [`attribute_damage`]).
    #[serde(default)]
    pub damage: Vec<SharedDamage>,
    /// The changed files with their inode and expected hash (for the damage record).
    #[serde(skip)]
    pub changed_files: Vec<ChangedFile>,
}

/// A changed file, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedFile {
    /// `/dir/name`, as the manifest lists it.
    pub path: PathBuf,
    /// Device and inode of the damaged copy.
    pub inode: (u64, u64),
    /// What the manifest says its content hashes to.
    pub expected: Hash,
}

/// A changed file and the snapshots that share its inode.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedDamage {
    /// `/dir/name`.
    pub path: String,
    /// Its inode number.
    pub inode: u64,
    /// Every snapshot verified with it that holds this inode (`daily/NAME`).
    pub snapshots: Vec<String>,
}

/// Hashes already taken during one verify of several snapshots, by `(device, inode)`. A file
/// with a single link is in no other snapshot, so once hashed it leaves the table: its memory
/// is that of the shared files (and of the files being hashed right now).
///
/// Several snapshots may be verified at once with one table: a file whose inode another
/// snapshot is hashing right now waits for that result ([`Inodes::wait_for`]) instead of
/// reading it again.
#[derive(Debug, Default)]
pub struct Inodes {
    table: Mutex<HashMap<(u64, u64), Known, BuildInodeHasher>>,
    /// Woken when an inode stops being pending, while anyone waits (`waiters`).
    settled: std::sync::Condvar,
    waiters: AtomicU64,
}

/// The inode table's hasher. A verify looks inodes up in the order of a snapshot's walk, and
/// a filesystem numbers the files of a tree roughly in the order they were written — the same
/// order — so the hash keeps the inode number itself in its low bits (the table's bucket:
/// neighbours in the walk are neighbours in memory, not one cache miss each) and a mix of it in
/// the top seven (hashbrown's tag byte). Inode numbers are the filesystem's choice, not an
/// attacker's, so nothing is gained from forcing collisions; SipHash cost as much as the rest
/// of a lookup.
type BuildInodeHasher = std::hash::BuildHasherDefault<InodeHasher>;

/// See [`BuildInodeHasher`]: the last two numbers written (device, then inode).
#[derive(Default)]
struct InodeHasher(u64, u64);

impl std::hash::Hasher for InodeHasher {
    fn finish(&self) -> u64 {
        const LOW: u64 = (1 << 57) - 1;
        let (dev, ino) = (self.0, self.1);
        let mix = (ino ^ dev.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (ino.wrapping_add(dev.wrapping_mul(0x51_7cc1_b727_220a)) & LOW) | (mix & !LOW)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        *self = InodeHasher(self.1, n);
    }
}

/// What [`Inodes`] knows of one inode.
#[derive(Clone, Copy, Debug)]
enum Known {
    /// Sent to be hashed; the result is not in yet.
    Pending,
    /// Its hash (`None`: it could not be read) and size.
    Hashed(Option<Hash>, u64),
}

impl Inodes {
    /// None yet.
    pub fn new() -> Inodes {
        Inodes::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Known, BuildInodeHasher>> {
        self.table.lock().expect("inode table poisoned")
    }

    /// What is known of `key` once nobody is hashing it any more (`None`: nothing, the file
    /// that was being hashed could not be opened or had a single link).
    fn wait_for(&self, key: (u64, u64)) -> Option<Known> {
        let mut table = self.lock();
        self.waiters.fetch_add(1, AtomicOrdering::SeqCst);
        while let Some(Known::Pending) = table.get(&key) {
            table = self.settled.wait(table).expect("inode table poisoned");
        }
        self.waiters.fetch_sub(1, AtomicOrdering::SeqCst);
        table.get(&key).copied()
    }

    /// What is known of `key`; when nothing, it is marked as being hashed now, and whoever
    /// marked it must [`Inodes::settle`] it.
    fn claim(&self, key: (u64, u64)) -> Option<Known> {
        let mut table = self.lock();
        let known = table.get(&key).copied();
        if known.is_none() {
            table.insert(key, Known::Pending);
        }
        known
    }

    /// Records the outcome for `key` (`None`: forget it), waking whoever waits for it.
    fn settle(&self, key: (u64, u64), known: Option<Known>) {
        {
            let mut table = self.lock();
            match known {
                Some(k) => table.insert(key, k),
                None => table.remove(&key),
            };
        }
        // A notify is a system call; most inodes have nobody waiting.
        if self.waiters.load(AtomicOrdering::SeqCst) > 0 {
            self.settled.notify_all();
        }
    }
}

/// One slice of the distinct inodes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Which one, `0 … of-1`.
    pub index: u32,
    /// How many slices cover everything.
    pub of: u32,
}

impl Slice {
    /// The number of slices for a subset of `percent` (1 … 100): `⌈100 / percent⌉`.
    pub fn count_for(percent: u32) -> u32 {
        100u32.div_ceil(percent.clamp(1, 100))
    }

    /// Whether the inode `(dev, ino)` is in this slice.
    pub fn holds(&self, inode: (u64, u64)) -> bool {
        bucket(inode) % u64::from(self.of.max(1)) == u64::from(self.index)
    }
}

/// The bucket of an inode: BLAKE3 of its device and inode numbers, little endian, first eight
/// bytes as a little-endian integer.
pub fn bucket((dev, ino): (u64, u64)) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&dev.to_le_bytes());
    b[8..].copy_from_slice(&ino.to_le_bytes());
    let h = blake3::hash(&b);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("eight bytes"))
}

/// How [`verify_with`] checks: inodes already hashed in this call, and the slice.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// Shared across the snapshots of one verify: each inode is read once.
    pub inodes: Option<&'a Inodes>,
    /// Check only this slice of the inodes.
    pub slice: Option<Slice>,
    /// Whether a name's inode may be taken from its directory listing (`d_ino`); `None`: when
    /// the filesystem is one whose listings give it ([`listing_gives_inodes`]).
    pub listing_inodes: Option<bool>,
}

/// Fills in each report's [`VerifyReport::damage`]: per changed file, every report (snapshot)
/// whose changed files include the same inode.
pub fn attribute_damage(reports: &mut [VerifyReport]) {
    let mut holders: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for r in reports.iter() {
        for c in &r.changed_files {
            let list = holders.entry(c.inode).or_default();
            if !list.contains(&r.snapshot) {
                list.push(r.snapshot.clone());
            }
        }
    }
    for r in reports.iter_mut() {
        r.damage = r
            .changed_files
            .iter()
            .map(|c| SharedDamage {
                path: c.path.to_string_lossy().into_owned(),
                inode: c.inode.1,
                snapshots: holders.get(&c.inode).cloned().unwrap_or_default(),
            })
            .collect();
    }
}

/// Paths as JSON strings, with bytes that are not UTF-8 shown as U+FFFD (serde refuses such a
/// path, and one Latin-1 name must not make the whole report unprintable).
pub(crate) fn lossy_paths<S: serde::Serializer>(paths: &[PathBuf], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

impl VerifyReport {
    /// Adds the counts and lists of `other` (another part of the same snapshot's check).
    fn add(&mut self, other: VerifyReport) {
        self.files_checked += other.files_checked;
        self.bytes_checked += other.bytes_checked;
        self.files_read += other.files_read;
        self.bytes_read += other.bytes_read;
        self.files_shared += other.files_shared;
        self.files_skipped += other.files_skipped;
        self.missing.extend(other.missing);
        self.changed.extend(other.changed);
        self.unexpected.extend(other.unexpected);
        self.lost.extend(other.lost);
        self.changed_files.extend(other.changed_files);
    }

    /// Whether anything is wrong.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.changed.is_empty()
            && self.unexpected.is_empty()
            && self.sample_mismatches.is_empty()
    }
}

/// Verifies a snapshot; `sample` random files are also compared with the live source.
///
/// Every path is opened relative to a descriptor of the snapshot directory, one component at
/// a time without following symlinks ([`crate::fs::beneath`]), so paths longer than `PATH_MAX`
/// verify like any other, and the tree is walked by [`walk`] (an explicit stack and one open
/// directory), so its depth is bounded by neither the stack nor the descriptor limit.
pub fn verify(
    host: &HostDir,
    snapshot: &Snapshot,
    threads: usize,
    sample: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport> {
    verify_with(host, snapshot, threads, sample, VerifyOptions::default(), progress)
}

/// [`verify`], reading each inode once across calls that share `opts.inodes`, and only the
/// inodes of `opts.slice` (see the module docs).
///
/// One pass: the tree is walked in name order ([`walk`]) beside the manifest, which is sorted
/// the same way, so that an entry of one and not the other is missing or unexpected at once.
/// Each regular file the manifest lists goes, with its directory's descriptor, to the hashing
/// threads — unless the directory listing's inode number (`d_ino`) names an inode hashed
/// before, whose result is then compared at once without opening the file. On a filesystem
/// whose listings are not known to give the inode's own number ([`listing_gives_inodes`]),
/// every file is opened and the inode taken from `fstat`.
pub fn verify_with(
    host: &HostDir,
    snapshot: &Snapshot,
    threads: usize,
    sample: usize,
    opts: VerifyOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport> {
    // The snapshot, its metadata directory and its manifest are opened through the host
    // directory's handle, never through a symlink planted in the destination.
    let snap_dir = host.open_snapshot(snapshot)?;
    let meta_dir = snap_dir.open_dir(&Name::fixed(META_DIR))?;
    let manifest_name = Name::fixed(MANIFEST_FILE);
    let manifest = meta_dir.child_path(&manifest_name);
    let file = meta_dir
        .open_read(&manifest_name)?
        .ok_or_else(|| Error::io("open", &manifest, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    let reader = ManifestReader::from_file(file, manifest.clone());
    let root = snap_dir.fd().try_clone_to_owned().ctx("duplicate descriptor of", &snapshot.path)?;
    let lost = lost_paths(&meta_dir);
    let mut report = verify_tree(root.as_fd(), &snapshot.path, reader, &lost, threads, sample, opts, progress)?;
    report.snapshot = snapshot.id();
    Ok(report)
}

/// [`verify_with`] of the tree below `root` (the snapshot at `snap_path`, for messages) against
/// the manifest `reader`, with the paths `lost` marked lost by `repair`.
#[allow(clippy::too_many_arguments)]
fn verify_tree(
    root: BorrowedFd,
    snap_path: &Path,
    reader: ManifestReader,
    lost: &HashSet<Vec<u8>>,
    threads: usize,
    sample: usize,
    opts: VerifyOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport> {
    let local = Inodes::new();
    let how = Check {
        inodes: opts.inodes.unwrap_or(&local),
        slice: opts.slice,
        lost,
        listing_inodes: opts.listing_inodes.unwrap_or_else(|| listing_gives_inodes(root)),
        tally: (AtomicU64::new(0), AtomicU64::new(0)),
        progress,
    };
    let shared_report = Mutex::new(VerifyReport::default());
    // Everything that feeds a thread (the batch sender, the parser's receiver) lives inside the
    // scope's closure: whatever way it returns, an error included, they are dropped before the
    // scope joins, so the hashing threads and the parser always end.
    let (mut report, reservoir) = std::thread::scope(|scope| -> Result<(VerifyReport, Vec<Entry>)> {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(64);
        let (entries_tx, entries_rx) = crossbeam_channel::bounded::<Result<Vec<Entry>>>(8);
        let (spent_tx, spent_rx) = crossbeam_channel::bounded::<Vec<Entry>>(16);
        for _ in 0..threads.max(1) {
            let (rx, report, how) = (rx.clone(), &shared_report, &how);
            scope.spawn(move || {
                let mut buf = Vec::new();
                for batch in rx {
                    for job in batch.jobs {
                        hash_job(batch.dir.as_fd(), job, report, &mut buf, how);
                    }
                }
            });
        }
        drop(rx);
        // The manifest is parsed on a thread of its own, beside the walk.
        scope.spawn(move || read_chunks(reader, &entries_tx, &spent_rx));
        let mut merge = Merge {
            feed: Feed { rx: entries_rx, spent: spent_tx, chunk: Vec::new(), pos: 0 },
            current: Entry { dir: Vec::new(), name: Vec::new(), hash: [0; 32] },
            more: true,
            report: VerifyReport::default(),
            reservoir: Vec::new(),
            sample,
            seen: 0,
            batch: None,
            waiting: Vec::new(),
            tx,
            root,
            root_dev: rustix::fs::fstat(root).map_err(|e| Error::io("inspect", snap_path, e.into()))?.st_dev,
            other_devs: HashMap::new(),
        };
        merge.advance()?;
        walk::walk_with(root, b"", snap_path, walk::Opts::NAMES, &mut |v| {
            merge.visit(v, &how, snap_path)?;
            Ok(true)
        })?;
        merge.send()?;
        // Whatever the manifest lists after the last entry of the tree is not in it.
        while merge.more {
            merge.report.missing.push(shown(&merge.current));
            merge.advance()?;
        }
        let Merge { mut report, reservoir, waiting, .. } = merge;
        // Settled once the hashing threads are done with this snapshot's own claims; another
        // snapshot's are settled by its threads.
        resolve_waiting(root, waiting, &mut report, &how);
        Ok((report, reservoir))
    })?;
    report.add(shared_report.into_inner().expect("verify report poisoned"));
    progress(how.tally.0.load(AtomicOrdering::Relaxed), how.tally.1.load(AtomicOrdering::Relaxed));
    report.missing.sort();
    report.lost.sort();
    report.changed.sort();
    report.changed_files.sort_by(|a, b| a.path.cmp(&b.path));
    if !reservoir.is_empty() {
        let live_root = open_root(Path::new("/"))?;
        let (mut snap_dirs, mut live_dirs) = (DirCache::new(root), DirCache::new(live_root.as_fd()));
        for entry in reservoir {
            sample_one(&mut snap_dirs, &mut live_dirs, &entry, &mut report);
        }
    }
    Ok(report)
}

/// The walk of a snapshot beside its manifest (see [`verify_with`]): the manifest's current
/// entry, what the walk settled itself, and the files it hands to the hashing threads.
struct Merge<'a> {
    feed: Feed,
    /// The manifest's entry not yet matched (valid while `more`).
    current: Entry,
    more: bool,
    /// Missing, unexpected, and the files whose inode was hashed before.
    report: VerifyReport,
    /// A uniform sample of the manifest's entries (`--sample`).
    reservoir: Vec<Entry>,
    sample: usize,
    seen: u64,
    /// Files of the directory being walked, not sent yet.
    batch: Option<Batch<'a>>,
    /// Files met again while their inode was still being hashed, resolved once it is.
    waiting: Vec<(Entry, (u64, u64))>,
    tx: crossbeam_channel::Sender<Batch<'a>>,
    /// The snapshot, and its device.
    root: BorrowedFd<'a>,
    root_dev: u64,
    /// Whether the listings of each other filesystem mounted below give inode numbers.
    other_devs: HashMap<u64, bool>,
}

impl<'a> Merge<'a> {
    /// Moves to the manifest's next entry, counting the one left behind into the sample.
    fn advance(&mut self) -> Result<()> {
        if self.more && self.seen > 0 {
            // Reservoir sampling keeps memory at `sample` entries however long the manifest.
            if self.reservoir.len() < self.sample {
                self.reservoir.push(self.current.clone());
            } else if self.sample > 0 {
                let j = fastrand::u64(0..self.seen) as usize;
                if j < self.sample {
                    self.reservoir[j] = self.current.clone();
                }
            }
        }
        self.more = self.feed.next_into(&mut self.current)?;
        self.seen += u64::from(self.more);
        Ok(())
    }

    /// One entry of the tree: the manifest's entries before it are missing; the one equal to
    /// it is checked (a regular file) or missing (anything else); a regular file the manifest
    /// does not list is unexpected.
    fn visit(&mut self, v: &walk::Visit, how: &Check<'a>, snap_path: &Path) -> Result<()> {
        let name = v.name.to_bytes();
        let dir = v.rel.len().checked_sub(name.len() + 1).map_or(&b""[..], |end| &v.rel[..end]);
        let regular = v.kind == FileType::RegularFile;
        loop {
            let order = self.more.then(|| cmp_key(&self.current.dir, &self.current.name, dir, name));
            match order {
                Some(std::cmp::Ordering::Less) => {
                    self.report.missing.push(shown(&self.current));
                    self.advance()?;
                }
                Some(std::cmp::Ordering::Equal) => {
                    if regular {
                        self.check(v, dir, how, snap_path)?;
                    } else {
                        // Replaced by a directory, a symlink or anything else.
                        self.report.missing.push(shown(&self.current));
                    }
                    return self.advance();
                }
                _ => {
                    if regular {
                        self.report.unexpected.push(Path::new("/").join(OsStr::from_bytes(v.rel)));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The current entry, a regular file at `v`: settled at once when its inode was hashed
    /// before (or is outside the slice), else handed to the hashing threads.
    fn check(&mut self, v: &walk::Visit, dir: &[u8], how: &Check<'a>, snap_path: &Path) -> Result<()> {
        let key = self.listing_gives_inodes(v, how).then_some((v.dev, v.ino));
        if key.is_some_and(|key| how.slice.is_some_and(|s| !s.holds(key))) {
            self.report.files_skipped += 1;
            return Ok(());
        }
        // The batch is ready before an inode is claimed: a claim must always reach a
        // hashing thread, which settles it (another snapshot may be waiting for it).
        if !matches!(&self.batch, Some(b) if b.dir_rel == dir && b.jobs.len() < 64) {
            self.send()?;
            let dir_fd = rustix::io::fcntl_dupfd_cloexec(v.dir, 0)
                .map_err(|e| Error::io("duplicate descriptor of", walk::show(snap_path, dir), e.into()))?;
            self.batch = Some(Batch { dir: dir_fd, dir_rel: dir.to_vec(), jobs: Vec::new() });
        }
        if let Some(key) = key {
            match how.inodes.claim(key) {
                Some(Known::Hashed(hash, len)) => {
                    if let Some(len) = record(&mut self.report, &self.current, Seen::Shared(hash, len), key, how) {
                        how.done(len, false);
                    }
                    return Ok(());
                }
                Some(Known::Pending) => {
                    self.waiting.push((self.current.clone(), key));
                    if self.waiting.len() >= WAITING_MAX {
                        // Bounded memory: the files met ahead of the other snapshot's (or this
                        // one's) hashing are settled now; this snapshot's own claims first go
                        // to its hashing threads, so that none is waited for unsent.
                        self.send()?;
                        let waiting = std::mem::take(&mut self.waiting);
                        resolve_waiting(self.root, waiting, &mut self.report, how);
                    }
                    return Ok(());
                }
                None => {}
            }
        }
        let job = Job { entry: self.current.clone(), claim: Claim { inodes: how.inodes, key } };
        self.batch.as_mut().expect("set above").jobs.push(job);
        Ok(())
    }

    /// Whether the listing's `d_ino` of `v` may stand for its inode: on the snapshot's own
    /// filesystem as decided for it, on another one mounted below by its own type.
    fn listing_gives_inodes(&mut self, v: &walk::Visit, how: &Check) -> bool {
        if !how.listing_inodes || v.dev == self.root_dev {
            return how.listing_inodes;
        }
        *self.other_devs.entry(v.dev).or_insert_with(|| listing_gives_inodes(v.dir))
    }

    /// Sends the files gathered so far to the hashing threads.
    fn send(&mut self) -> Result<()> {
        if let Some(batch) = self.batch.take() {
            // Fails only when every hashing thread has panicked, which the scope re-raises.
            let _ = self.tx.send(batch);
        }
        Ok(())
    }
}

/// Entries parsed per message from the manifest's thread.
const CHUNK: usize = 512;

/// Parses the manifest into chunks of entries for [`Feed`], reusing the chunks it hands back;
/// stops at the end, at an error (sent on), or when the feed is gone.
fn read_chunks(
    mut reader: ManifestReader,
    out: &crossbeam_channel::Sender<Result<Vec<Entry>>>,
    spent: &crossbeam_channel::Receiver<Vec<Entry>>,
) {
    loop {
        let mut chunk = spent.try_recv().unwrap_or_default();
        chunk.resize_with(CHUNK, || Entry { dir: Vec::new(), name: Vec::new(), hash: [0; 32] });
        let mut n = 0;
        while n < CHUNK {
            match reader.next_into(&mut chunk[n]) {
                Ok(true) => n += 1,
                Ok(false) => break,
                Err(e) => {
                    let _ = out.send(Err(e));
                    return;
                }
            }
        }
        chunk.truncate(n);
        if out.send(Ok(chunk)).is_err() || n < CHUNK {
            return;
        }
    }
}

/// The manifest's entries as [`read_chunks`] sends them, one at a time.
struct Feed {
    rx: crossbeam_channel::Receiver<Result<Vec<Entry>>>,
    spent: crossbeam_channel::Sender<Vec<Entry>>,
    chunk: Vec<Entry>,
    pos: usize,
}

impl Feed {
    /// The next entry, swapped into `entry` (whose buffers go back for reuse); `false` at
    /// the end.
    fn next_into(&mut self, entry: &mut Entry) -> Result<bool> {
        while self.pos == self.chunk.len() {
            let Ok(next) = self.rx.recv() else { return Ok(false) };
            let spent = std::mem::replace(&mut self.chunk, next?);
            let _ = self.spent.try_send(spent);
            self.pos = 0;
        }
        std::mem::swap(entry, &mut self.chunk[self.pos]);
        self.pos += 1;
        Ok(true)
    }
}

/// Files of one directory for the hashing threads, with their own descriptor of it.
struct Batch<'a> {
    dir: OwnedFd,
    dir_rel: Vec<u8>,
    jobs: Vec<Job<'a>>,
}

/// A file to hash: its manifest entry and its claim on the inode the listing gave.
struct Job<'a> {
    entry: Entry,
    claim: Claim<'a>,
}

/// An inode marked as being hashed ([`Inodes::claim`]); `key: None` when the listing gave no
/// inode. Settled with the hash by the thread that hashes it; a claim dropped unsettled — the
/// file could not be opened, its thread panicked, its batch was never taken — is settled
/// with nothing, so that no snapshot waits for it forever.
struct Claim<'a> {
    inodes: &'a Inodes,
    key: Option<(u64, u64)>,
}

impl Claim<'_> {
    /// Settles the claim, if still held, with nothing.
    fn release(&mut self) {
        if let Some(key) = self.key.take() {
            self.inodes.settle(key, None);
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Files waiting for another's hash, at most, before the walk settles them.
const WAITING_MAX: usize = 4096;

/// Settles the files met while their inode was being hashed: with that result once it is in,
/// or — when there is none after all (the other name was replaced meanwhile, or had a single
/// link) — by reading the file here.
fn resolve_waiting(root: BorrowedFd, waiting: Vec<(Entry, (u64, u64))>, report: &mut VerifyReport, how: &Check) {
    let mut dirs = DirCache::new(root);
    let mut buf = Vec::new();
    for (entry, key) in waiting {
        let seen = match how.inodes.wait_for(key) {
            Some(Known::Hashed(hash, len)) => Seen::Shared(hash, len),
            _ => match open_entry(&mut dirs, &entry) {
                Ok(f) => {
                    let len = f.metadata().map_or(0, |m| m.len());
                    Seen::Read(crate::fs::fsops::hash_file(&f, &mut buf).ok(), len)
                }
                Err(_) => Seen::Gone,
            },
        };
        if let Some(len) = record(report, &entry, seen, key, how) {
            how.done(len, false);
        }
    }
}

/// Whether directory listings of the filesystem holding `dir` give each entry's own inode
/// number: the local filesystems a backup drive uses, whose `d_ino` is the inode's `st_ino`.
/// Elsewhere (overlayfs, FUSE, network and FAT filesystems, whose numbers may be made up or
/// differ from `stat`'s) every file is opened.
fn listing_gives_inodes(dir: BorrowedFd) -> bool {
    use crate::fs::fstype::{self, BTRFS, EXT4, F2FS, TMPFS, XFS, ZFS};
    fstype::of(dir).is_ok_and(|t| [EXT4, XFS, BTRFS, TMPFS, F2FS, ZFS].contains(&t))
}

/// How one file of a snapshot turned out.
enum Seen {
    /// Read and hashed here (`None`: unreadable), with its size.
    Read(Option<Hash>, u64),
    /// Hashed before, through another snapshot or name.
    Shared(Option<Hash>, u64),
    /// Outside the slice.
    Skipped,
    /// Not there, or not a regular file.
    Gone,
}

/// Hashes one file in a hashing thread (or finds its inode hashed before, when the listing
/// gave none) and records the outcome.
fn hash_job(dir: BorrowedFd, job: Job, report: &Mutex<VerifyReport>, buf: &mut Vec<u8>, how: &Check) {
    let Job { entry, mut claim } = job;
    let key = claim.key;
    let inodes = how.inodes;
    let outcome = open_at(dir, &entry.name).and_then(|f| {
        let st = rustix::fs::fstat(&f)?;
        let (inode, len) = ((st.st_dev, st.st_ino), st.st_size as u64);
        // Only a file with more than one link can be met again: the table keeps those alone.
        let shared = st.st_nlink > 1;
        if key != Some(inode) {
            // Either the listing gave no inode, or this name now holds another one than it
            // listed (replaced meanwhile): the inode just opened decides.
            claim.release();
            if how.slice.is_some_and(|s| !s.holds(inode)) {
                return Ok((Seen::Skipped, inode));
            }
            if shared {
                if let Some(Known::Hashed(hash, len)) = inodes.lock().get(&inode).copied() {
                    return Ok((Seen::Shared(hash, len), inode));
                }
            }
        }
        let hash = crate::fs::fsops::hash_file(&f, buf).ok();
        if shared || key == Some(inode) {
            claim.key = None;
            inodes.settle(inode, shared.then_some(Known::Hashed(hash, len)));
        }
        Ok((Seen::Read(hash, len), inode))
    });
    // Not opened: the claim, if any, is settled with nothing.
    drop(claim);
    let (seen, inode) = outcome.unwrap_or_else(|_: std::io::Error| (Seen::Gone, key.unwrap_or_default()));
    let checked = record(&mut report.lock().expect("verify report poisoned"), &entry, seen, inode, how);
    if let Some(len) = checked {
        how.done(len, true);
    }
}

/// Adds one file's outcome to the report; its size when its content was checked.
fn record(r: &mut VerifyReport, entry: &Entry, seen: Seen, inode: (u64, u64), how: &Check) -> Option<u64> {
    let (hash, len) = match seen {
        Seen::Skipped => {
            r.files_skipped += 1;
            return None;
        }
        Seen::Gone => {
            r.missing.push(shown(entry));
            return None;
        }
        Seen::Read(hash, len) => {
            r.files_read += 1;
            r.bytes_read += len;
            (hash, len)
        }
        Seen::Shared(hash, len) => {
            r.files_shared += 1;
            (hash, len)
        }
    };
    let Some(hash) = hash else {
        r.missing.push(shown(entry));
        return None;
    };
    r.files_checked += 1;
    r.bytes_checked += len;
    if hash != entry.hash {
        if how.lost.contains(entry.rel_path().as_os_str().as_bytes()) {
            r.lost.push(shown(entry));
        } else {
            r.changed.push(shown(entry));
            r.changed_files.push(ChangedFile { path: shown(entry), inode, expected: entry.hash });
        }
    }
    Some(len)
}

fn open_root(path: &Path) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty()).ctx("open directory", path)
}

/// Opens the regular file `entry` below the directories of `dirs`, never following a symlink
/// and never blocking on a FIFO put in its place.
fn open_entry(dirs: &mut DirCache, entry: &Entry) -> std::io::Result<std::fs::File> {
    open_at(dirs.dir(&entry.dir)?, &entry.name)
}

/// Opens the regular file `name` in `dir` (see [`open_entry`]).
fn open_at(dir: BorrowedFd, name: &[u8]) -> std::io::Result<std::fs::File> {
    let name = beneath::component(name)?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir, &name, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(fd.into())
}

/// `/dir/name` of an entry, as reported.
fn shown(entry: &Entry) -> PathBuf {
    Path::new("/").join(entry.rel_path())
}

/// What [`check`] shares across files: the inodes hashed so far, the slice, and the paths
/// marked lost in this snapshot.
struct Check<'a> {
    inodes: &'a Inodes,
    slice: Option<Slice>,
    lost: &'a HashSet<Vec<u8>>,
    /// Whether the walk's `d_ino` may stand for the inode ([`listing_gives_inodes`]).
    listing_inodes: bool,
    /// Files and bytes checked so far in this snapshot, by every thread, for `progress`.
    tally: (AtomicU64, AtomicU64),
    progress: &'a (dyn Fn(u64, u64) + Sync),
}

impl Check<'_> {
    /// Counts a file checked; tells `progress` when `now` (or every 1024 files).
    fn done(&self, bytes: u64, now: bool) {
        let files = self.tally.0.fetch_add(1, AtomicOrdering::Relaxed) + 1;
        let bytes = self.tally.1.fetch_add(bytes, AtomicOrdering::Relaxed) + bytes;
        if now || files % 1024 == 0 {
            (self.progress)(files, bytes);
        }
    }
}

/// The paths (`dir/name` bytes, as the manifest has them) that `repair` marked lost in this
/// snapshot; none when there is no readable list.
fn lost_paths(meta_dir: &crate::fs::Dir) -> HashSet<Vec<u8>> {
    let Ok(Some(bytes)) = meta_dir.read_file(&Name::fixed(LOST_FILE), 64 << 20) else { return HashSet::new() };
    let Ok(list) = serde_json::from_slice::<Vec<LostEntry>>(&bytes) else { return HashSet::new() };
    list.into_iter().filter_map(|e| hex_decode(&e.raw)).collect()
}

/// One entry of `lost.json`.
#[derive(Clone, Debug, serde::Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LostEntry {
    /// `/dir/name`, for people (bytes that are not UTF-8 as U+FFFD).
    pub path: String,
    /// `dir/name` as the manifest has it, hex.
    pub raw: String,
    /// The content hash the manifest expects, hex.
    pub hash: String,
    /// Why no good copy was found.
    pub reason: String,
    /// When it was marked.
    pub marked_at: jiff::Timestamp,
}

/// Lower-case hex of bytes.
pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of lower- or upper-case hex; `None` when it is not hex.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn sample_one(snap_dirs: &mut DirCache, live_dirs: &mut DirCache, entry: &Entry, report: &mut VerifyReport) {
    let live = shown(entry);
    let mut buf = Vec::new();
    report.sampled += 1;
    // The live system may reach a source through a symlink (`/home -> /data/home`) where the
    // snapshot holds a directory: then the path is opened as any program would.
    let opened = open_entry(live_dirs, entry).or_else(|_| std::fs::File::open(&live));
    let Ok(f) = opened else {
        report.sample_changed_since += 1; // gone from the source since: not an error
        return;
    };
    // "Changed since" means the quick check would see a change (mtime or size differ from
    // the snapshot's copy) and the next run will copy it. Same mtime and size but different
    // content is what the quick check can never catch, so that is reported.
    let stamp = |m: std::fs::Metadata| (m.len(), m.modified().ok());
    let snap_copy = open_entry(snap_dirs, entry).and_then(|f| f.metadata()).ok().map(stamp);
    let modified_after = f.metadata().ok().map(stamp) != snap_copy;
    match crate::fs::fsops::hash_file(&f, &mut buf) {
        Ok(h) if h == entry.hash => {}
        Ok(_) if modified_after => report.sample_changed_since += 1,
        _ => report.sample_mismatches.push(live),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::ManifestWriter;
    use rustix::fs::AtFlags;

    /// Deeper than the stack could recurse comfortably and than the descriptor limit
    /// (`ulimit -n`, 1024 by default) would allow with one descriptor per level.
    const DEPTH: usize = 30_000;

    fn dir_flags() -> OFlags {
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    }

    /// Removes a chain of `DEPTH` directories `d/d/…` below `root` bottom up, one descriptor
    /// at a time (std's `remove_dir_all` holds one per level).
    fn remove_chain(root: BorrowedFd) {
        let mut cur = beneath::reopen(root).unwrap();
        let mut depth = 0;
        while let Ok(next) = rustix::fs::openat(&cur, c"d", dir_flags(), Mode::empty()) {
            cur = next;
            depth += 1;
        }
        let _ = rustix::fs::unlinkat(&cur, c"f", AtFlags::empty());
        for _ in 0..depth {
            cur = rustix::fs::openat(&cur, c"..", dir_flags(), Mode::empty()).unwrap();
            rustix::fs::unlinkat(&cur, c"d", AtFlags::REMOVEDIR).unwrap();
        }
    }

    #[test]
    fn slices_partition_the_inodes() {
        for percent in [1, 5, 25, 30, 50, 100] {
            let of = Slice::count_for(percent);
            assert_eq!(of, 100u32.div_ceil(percent));
            let mut per_slice = vec![0u32; of as usize];
            for ino in 0..2000u64 {
                let holders: Vec<u32> = (0..of).filter(|&index| Slice { index, of }.holds((42, ino))).collect();
                assert_eq!(holders.len(), 1, "inode {ino} of {of} slices: {holders:?}");
                per_slice[holders[0] as usize] += 1;
            }
            // A hash spreads them: no slice is empty for a few thousand inodes.
            assert!(of > 100 || per_slice.iter().all(|&n| n > 0), "{percent}%: {per_slice:?}");
        }
        assert_eq!(bucket((1, 2)), bucket((1, 2)));
        assert_ne!(bucket((1, 2)), bucket((2, 1)));
    }

    /// Two snapshots sharing files as hard links (one of them damaged), checked with one
    /// inode table: the same findings and reads whether inodes come from the listing or from
    /// opening every file.
    #[test]
    fn inodes_from_the_listing_or_from_fstat_give_the_same_report() {
        let t = tempfile::tempdir().unwrap();
        let (s1, s2) = (t.path().join("s1"), t.path().join("s2"));
        for s in [&s1, &s2] {
            std::fs::create_dir_all(s.join(META_DIR)).unwrap();
            std::fs::create_dir_all(s.join("d")).unwrap();
        }
        // In manifest order: a directory's files before its subdirectories'.
        let files: [(&[u8], &[u8], &[u8]); 4] =
            [(b"", b"top", b"top\n"), (b"d", b"a", b"alpha\n"), (b"d", b"b", b"beta\n"), (b"d", b"c", b"gamma\n")];
        for (dir, name, body) in files {
            let rel = |s: &Path| s.join(OsStr::from_bytes(dir)).join(OsStr::from_bytes(name));
            std::fs::write(rel(&s1), body).unwrap();
            // `d/c` is the newer snapshot's own copy; the others are shared.
            if name == b"c" {
                std::fs::write(rel(&s2), body).unwrap();
            } else {
                std::fs::hard_link(rel(&s1), rel(&s2)).unwrap();
            }
        }
        for s in [&s1, &s2] {
            let mut w = ManifestWriter::create(&s.join(META_DIR).join(MANIFEST_FILE)).unwrap();
            for (dir, name, body) in files {
                w.add(dir, name, blake3::hash(body).as_bytes()).unwrap();
            }
            w.finish().unwrap();
        }
        // Damage to a shared file, and an unexpected file in the newer snapshot.
        std::fs::write(s1.join("d/b"), b"BETA\n").unwrap();
        std::fs::write(s2.join("d/z"), b"who?\n").unwrap();
        let summary = |listing: bool| {
            let inodes = Inodes::new();
            let opts = VerifyOptions { inodes: Some(&inodes), slice: None, listing_inodes: Some(listing) };
            [&s1, &s2].map(|s| {
                let root = open_root(s).unwrap();
                let reader = ManifestReader::open(&s.join(META_DIR).join(MANIFEST_FILE)).unwrap();
                let r = verify_tree(root.as_fd(), s, reader, &HashSet::new(), 2, 0, opts, &|_, _| {}).unwrap();
                (r.files_checked, r.files_read, r.files_shared, r.changed, r.missing, r.unexpected)
            })
        };
        let from_listing = summary(true);
        assert_eq!(from_listing, summary(false));
        let [first, second] = &from_listing;
        assert_eq!((first.0, first.1, first.2), (4, 4, 0), "{first:?}");
        assert_eq!((second.0, second.1, second.2), (4, 1, 3), "{second:?}");
        for r in [first, second] {
            assert_eq!(r.3, vec![PathBuf::from("/d/b")], "{r:?}");
        }
        assert_eq!(second.5, vec![PathBuf::from("/d/z")]);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex_encode(b"a/\xff"), "612fff");
        assert_eq!(hex_decode("612fff").unwrap(), b"a/\xff");
        assert_eq!(hex_decode("6"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn verifies_a_tree_thirty_thousand_levels_deep() {
        // On a tmpfs where there is one: 30 000 mkdir and rmdir cost seconds on a disk.
        let t = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let snap = t.path().join("snap");
        std::fs::create_dir_all(snap.join(META_DIR)).unwrap();
        let root = open_root(&snap).unwrap();
        let mut cur = beneath::reopen(root.as_fd()).unwrap();
        for _ in 0..DEPTH {
            rustix::fs::mkdirat(&cur, c"d", Mode::from_raw_mode(0o755)).unwrap();
            cur = rustix::fs::openat(&cur, c"d", dir_flags(), Mode::empty()).unwrap();
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
        let f: std::fs::File = rustix::fs::openat(&cur, c"f", flags, Mode::from_raw_mode(0o644)).unwrap().into();
        std::io::Write::write_all(&mut &f, b"deep\n").unwrap();
        drop((f, cur));
        let dir = vec![&b"d"[..]; DEPTH].join(&b'/');
        let manifest = snap.join(META_DIR).join(MANIFEST_FILE);
        let mut w = ManifestWriter::create(&manifest).unwrap();
        w.add(&dir, b"f", blake3::hash(b"deep\n").as_bytes()).unwrap();
        w.finish().unwrap();

        let lost = HashSet::new();
        let check = |manifest: &Path| {
            let reader = ManifestReader::open(manifest).unwrap();
            verify_tree(root.as_fd(), &snap, reader, &lost, 2, 0, VerifyOptions::default(), &|_, _| {}).unwrap()
        };
        let r = check(&manifest);
        assert_eq!((r.files_checked, r.changed.len(), r.missing.len(), r.unexpected.len()), (1, 0, 0, 0), "{r:?}");
        // With an empty manifest the file is unexpected, and named in full.
        let empty = t.path().join("empty.b3");
        ManifestWriter::create(&empty).unwrap().finish().unwrap();
        let r = check(&empty);
        assert_eq!(r.unexpected.len(), 1);
        assert_eq!(r.unexpected[0].as_os_str().len(), 1 + DEPTH * 2 + 1);
        remove_chain(root.as_fd());
    }
}
