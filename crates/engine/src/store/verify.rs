//! Verifying a snapshot against its manifest, and sampling it against the live source.
//!
//! Every file the manifest lists is read again and hashed; a file whose hash differs is
//! "changed" (bit rot, or someone edited the backup), one that is gone is "missing", and a
//! regular file in the tree that the manifest does not list is "unexpected". Hashing runs on
//! several threads; the manifest and the tree are each read as a stream.
//!
//! **By inode, once.** Snapshots share unchanged files as hard links, so verifying many
//! snapshots ([`verify_with`] with an [`Inodes`] shared across the calls) hashes each distinct
//! `(device, inode)` once: the first snapshot that holds it reads it, every later one takes
//! the hash found then and compares it with its own manifest (`filesShared`, no bytes read).
//! A damaged inode is thus reported in every snapshot that holds it, from one read
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
use std::sync::Mutex;

use rustix::fs::{FileType, Mode, OFlags};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fs::beneath::{self, DirCache};
use crate::fs::Name;
use crate::store::layout::{HostDir, Snapshot};
use crate::store::manifest::{Cursor, Entry, Hash, ManifestReader};
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

/// Hashes already taken during one verify of several snapshots, by `(device, inode)`
/// (`None`: the inode could not be read). Only files with more than one link are kept (one
/// with a single link is in no other snapshot), so its memory is that of the shared files.
#[derive(Debug, Default)]
pub struct Inodes(Mutex<HashMap<(u64, u64), Option<Hash>>>);

impl Inodes {
    /// None yet.
    pub fn new() -> Inodes {
        Inodes::default()
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
    let open_manifest = || -> Result<ManifestReader> {
        let file = meta_dir
            .open_read(&manifest_name)?
            .ok_or_else(|| Error::io("open", &manifest, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        Ok(ManifestReader::from_file(file, manifest.clone()))
    };
    let root = snap_dir.fd().try_clone_to_owned().ctx("duplicate descriptor of", &snapshot.path)?;
    let lost = lost_paths(&meta_dir);
    let local = Inodes::new();
    let how = Check { inodes: opts.inodes.unwrap_or(&local), slice: opts.slice, lost: &lost };
    let report = Mutex::new(VerifyReport { snapshot: snapshot.id(), ..Default::default() });
    let mut reservoir: Vec<Entry> = Vec::new();
    let mut seen = 0u64;
    let (tx, rx) = crossbeam_channel::bounded::<Entry>(256);
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..threads.max(1) {
            let (rx, report, root, how) = (rx.clone(), &report, root.as_fd(), &how);
            scope.spawn(move || {
                let mut buf = Vec::new();
                let mut dirs = DirCache::new(root);
                for entry in rx {
                    check(&mut dirs, &entry, report, &mut buf, how, progress);
                }
            });
        }
        drop(rx);
        let mut reader = open_manifest()?;
        while let Some(entry) = reader.next_entry()? {
            seen += 1;
            // Reservoir sampling keeps memory at `sample` entries however long the manifest.
            if reservoir.len() < sample {
                reservoir.push(entry.clone());
            } else if sample > 0 {
                let j = fastrand::u64(0..seen) as usize;
                if j < sample {
                    reservoir[j] = entry.clone();
                }
            }
            if tx.send(entry).is_err() {
                break;
            }
        }
        drop(tx);
        Ok(())
    })?;
    let mut report = report.into_inner().expect("verify report poisoned");
    report.unexpected = unexpected_files(&snapshot.path, root.as_fd(), Cursor::from_reader(open_manifest()?))?;
    if !reservoir.is_empty() {
        let live_root = open_root(Path::new("/"))?;
        let (mut snap_dirs, mut live_dirs) = (DirCache::new(root.as_fd()), DirCache::new(live_root.as_fd()));
        for entry in reservoir {
            sample_one(&mut snap_dirs, &mut live_dirs, &entry, &mut report);
        }
    }
    Ok(report)
}

fn open_root(path: &Path) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty()).ctx("open directory", path)
}

/// Opens the regular file `entry` below the directories of `dirs`, never following a symlink
/// and never blocking on a FIFO put in its place.
fn open_entry(dirs: &mut DirCache, entry: &Entry) -> std::io::Result<std::fs::File> {
    let dir = dirs.dir(&entry.dir)?;
    let name = beneath::component(&entry.name)?;
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

fn check(
    dirs: &mut DirCache,
    entry: &Entry,
    report: &Mutex<VerifyReport>,
    buf: &mut Vec<u8>,
    how: &Check,
    progress: &(dyn Fn(u64, u64) + Sync),
) {
    enum Seen {
        Read(Option<Hash>, u64),
        Shared(Option<Hash>, u64),
        Skipped,
    }
    let result = open_entry(dirs, entry).and_then(|f| {
        let st = rustix::fs::fstat(&f)?;
        let (inode, len) = ((st.st_dev, st.st_ino), st.st_size as u64);
        if how.slice.is_some_and(|s| !s.holds(inode)) {
            return Ok((Seen::Skipped, inode));
        }
        // Only a file with more than one link can be met again: the table holds those alone.
        let shared = st.st_nlink > 1;
        if shared {
            if let Some(known) = how.inodes.0.lock().expect("inode table poisoned").get(&inode) {
                return Ok((Seen::Shared(*known, len), inode));
            }
        }
        let hash = crate::fs::fsops::hash_file(&f, buf).ok();
        if shared {
            how.inodes.0.lock().expect("inode table poisoned").insert(inode, hash);
        }
        Ok((Seen::Read(hash, len), inode))
    });
    let mut r = report.lock().expect("verify report poisoned");
    let (hash, len, inode) = match result {
        Ok((Seen::Skipped, _)) => {
            r.files_skipped += 1;
            return;
        }
        Ok((Seen::Read(hash, len), inode)) => {
            r.files_read += 1;
            r.bytes_read += len;
            (hash, len, inode)
        }
        Ok((Seen::Shared(hash, len), inode)) => {
            r.files_shared += 1;
            (hash, len, inode)
        }
        Err(_) => {
            r.missing.push(shown(entry));
            return;
        }
    };
    let Some(hash) = hash else {
        r.missing.push(shown(entry));
        return;
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
    progress(r.files_checked, r.bytes_checked);
}

/// Walks the tree ([`walk`], in name order, so the manifest cursor only moves forward) and
/// lists regular files the manifest does not know.
fn unexpected_files(snap_path: &Path, root: BorrowedFd, mut cursor: Cursor) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let opts = walk::Opts { skip_meta: true, stat: false };
    walk::walk_with(root, b"", snap_path, opts, &mut |v| {
        if v.kind == FileType::RegularFile {
            let dir = v.rel.len().checked_sub(v.name.to_bytes().len() + 1).map_or(&b""[..], |end| &v.rel[..end]);
            if cursor.find(dir, v.name.to_bytes()).is_none() {
                out.push(Path::new("/").join(OsStr::from_bytes(v.rel)));
            }
        }
        Ok(true)
    })?;
    Ok(out)
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

        let report = Mutex::new(VerifyReport::default());
        let mut reader = ManifestReader::open(&manifest).unwrap();
        let entry = reader.next_entry().unwrap().unwrap();
        let (inodes, lost) = (Inodes::new(), HashSet::new());
        let how = Check { inodes: &inodes, slice: None, lost: &lost };
        check(&mut DirCache::new(root.as_fd()), &entry, &report, &mut Vec::new(), &how, &|_, _| {});
        let r = report.into_inner().unwrap();
        assert_eq!((r.files_checked, r.changed.len(), r.missing.len()), (1, 0, 0), "{r:?}");
        assert_eq!(unexpected_files(&snap, root.as_fd(), Cursor::open(&manifest)).unwrap(), Vec::<PathBuf>::new());
        // Without the manifest the file is unexpected, and named in full.
        let found = unexpected_files(&snap, root.as_fd(), Cursor::open(&t.path().join("none.b3"))).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].as_os_str().len(), 1 + DEPTH * 2 + 1);
        remove_chain(root.as_fd());
    }
}
