//! Repair: replacing damaged files (found by verify, kept in the drive's damage record,
//! `ops::state::DamageRecord`) with a good copy in every snapshot that holds them.
//!
//! A damaged inode is usually shared by many snapshots (hard links). For each one:
//!
//! 1. **A good copy** is looked for: the live source at the same path, when its BLAKE3 equals
//!    the manifest's and the path is one repair may read ([`LiveSources`]: below the plan's
//!    sources for this machine's job, nowhere for a pulled host's); else the same path in an offsite restic copy ([`OffsiteSource`]):
//!    `restic dump` of it, first from the restic snapshots made of the damaged snapshots
//!    themselves (tag `snapshot:<name>`), then from the others, newest first, at most
//!    [`OFFSITE_TRIES`] per repository, into an unnamed file of the host directory
//!    (`O_TMPFILE`: nothing is left behind if the repair stops), kept only when its BLAKE3
//!    equals the manifest's.
//! 2. **Found**: it is copied once into a new file beside the damaged one in the first
//!    snapshot (`O_CREAT|O_EXCL|O_NOFOLLOW`, a `.hwc-repair-…` name), checked by hashing what
//!    was written, given the damaged copy's owner, mode, extended attributes and times, and
//!    fsynced; then hard-linked beside the damaged copy in each other snapshot and renamed
//!    over it, and renamed over it in the first. Each rename is atomic and the new file keeps
//!    being shared, as the damaged one was. A place whose file is no longer the damaged inode
//!    (changed since the verify) is left alone and reported.
//! 3. **Not found**: the file is marked lost in each affected snapshot's
//!    `.hwc-backup/lost.json` ([`crate::store::verify::LostEntry`]); verify then reports it as
//!    lost rather than damaged, and a restore of it warns.
//!
//! Every path in a snapshot is opened below the snapshot's directory handle one component at
//! a time without following a symlink ([`crate::fs::beneath`]); the caller holds the host
//! lock, so no run or prune changes the snapshots meanwhile.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use serde::Serialize;

use crate::copies::offsite::restic::{Restic, ResticSnapshot};
use crate::error::{Error, IoContext, Result};
use crate::fs::{beneath, fsops, Dir, Name};
use crate::ops::state::{DamageRecord, DamagedPlace};
use crate::store::layout::{HostDir, Snapshot};
use crate::store::lock::HostLock;
use crate::store::manifest::Hash;
use crate::store::meta::META_DIR;
use crate::store::verify::{hex_decode, LostEntry, LOST_FILE};

/// What a repair did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// Replaced with a good copy.
    pub repaired: Vec<RepairedFile>,
    /// No good copy: marked lost.
    pub lost: Vec<RepairedFile>,
    /// Could not be handled (left in the damage record).
    pub failed: Vec<RepairedFile>,
}

/// One damaged file and the snapshots it was handled in.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairedFile {
    /// `/dir/name`.
    pub path: String,
    /// `daily/NAME` of each snapshot.
    pub snapshots: Vec<String>,
    /// Where the good copy came from (`source`), why it is lost, or what failed.
    pub note: String,
}

/// An offsite restic repository that good copies may come from.
pub struct OffsiteSource {
    /// Its name in the plan (`offsite.<name>`).
    pub name: String,
    /// How to run restic on it.
    pub restic: Restic,
    /// The host whose restic snapshots count.
    pub host: String,
}

/// Restic snapshots of one repository tried for one damaged file, at most.
pub const OFFSITE_TRIES: usize = 3;

/// Where a good copy comes from.
enum GoodCopy {
    /// The live file at the same path, whose content hashes as the manifest says.
    Source(std::fs::File),
    /// Written from an offsite copy into an unnamed file of the host directory.
    Offsite {
        /// The unnamed file.
        file: std::fs::File,
        /// `offsite NAME (restic snapshot ID)`.
        note: String,
    },
    /// Found in an offsite copy by a dry run, which only hashes what restic gives.
    Seen(String),
}

impl GoodCopy {
    /// Where it came from, as reported.
    fn note(&self) -> String {
        match self {
            GoodCopy::Source(_) => "source".into(),
            GoodCopy::Offsite { note, .. } | GoodCopy::Seen(note) => note.clone(),
        }
    }
}

/// Which live files repair may take a good copy from. The damage record and the manifests
/// that name a damaged file are on the backup disk, which whoever can write it can shape; the
/// hash check keeps any content but the backed-up one out, and this keeps repair from being
/// asked about files that were never backed up (whether `/etc/shadow` hashes to a guess).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveSources {
    /// Below these absolute paths only: the sources of this machine's job in the plan.
    Below(Vec<PathBuf>),
    /// Any path: a destination named on the command line without a plan, for this machine.
    Anywhere,
    /// None: the snapshots are of another machine (a pulled host), whose files are not here.
    Nowhere(String),
}

impl LiveSources {
    /// `/raw` when repair may read it, or why not. Only plain names count: `..` and `.`
    /// would reach outside a source while the path still starts with it.
    fn allowed(&self, raw: &[u8]) -> std::result::Result<PathBuf, String> {
        use std::path::Component;
        let rel = Path::new(OsStr::from_bytes(raw));
        let live = Path::new("/").join(rel);
        if raw.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) || raw.contains(&b'\0') {
            return Err(format!("the path {} is not a plain path below /; no live file is read", live.display()));
        }
        match self {
            LiveSources::Anywhere => Ok(live),
            LiveSources::Below(roots) if roots.iter().any(|r| live.starts_with(r)) => Ok(live),
            LiveSources::Below(_) => {
                Err(format!("{} is below none of the plan's sources; no live file is read", live.display()))
            }
            LiveSources::Nowhere(why) => Err(why.clone()),
        }
    }
}

/// The offsites' restic snapshots of the host, listed once per repair (or why not).
type Listings = Vec<Option<std::result::Result<Vec<ResticSnapshot>, String>>>;

/// A good copy of the file at `/raw` from the live source, else from an offsite; or why there
/// is none.
#[allow(clippy::too_many_arguments)]
fn find_good_copy(
    host: &HostDir,
    live: &LiveSources,
    offsites: &[OffsiteSource],
    listings: &mut Listings,
    damaged_in: &[&str],
    raw: &[u8],
    expected: &Hash,
    buf: &mut Vec<u8>,
    dry_run: bool,
) -> std::result::Result<GoodCopy, String> {
    let why_source = match live.allowed(raw).and_then(|path| from_source(&path, expected, buf)) {
        Ok(copy) => return Ok(copy),
        Err(why) => why,
    };
    if offsites.is_empty() {
        return Err(format!("{why_source}, and no offsite copy is configured"));
    }
    let mut why_offsites = Vec::new();
    for (i, o) in offsites.iter().enumerate() {
        match from_offsite(host, o, &mut listings[i], damaged_in, raw, expected, dry_run) {
            Ok(copy) => return Ok(copy),
            Err(why) => why_offsites.push(format!("offsite {}: {why}", o.name)),
        }
    }
    Err(format!("{why_source}; {}", why_offsites.join("; ")))
}

/// `/raw` of a restic snapshot of offsite `o` whose content hashes to `expected`: tried in the
/// snapshots made of the damaged local snapshots first, then the others, newest first. A dry
/// run hashes what restic gives and keeps nothing.
fn from_offsite(
    host: &HostDir,
    o: &OffsiteSource,
    listing: &mut Option<std::result::Result<Vec<ResticSnapshot>, String>>,
    damaged_in: &[&str],
    raw: &[u8],
    expected: &Hash,
    dry_run: bool,
) -> std::result::Result<GoodCopy, String> {
    let list = listing
        .get_or_insert_with(|| {
            o.restic.check_password_file().map_err(|e| e.to_string())?;
            o.restic.snapshots(Some(&o.host)).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let mut order: Vec<&ResticSnapshot> = list.iter().rev().collect();
    // Stable: the snapshots of the damaged ones first, each group newest first.
    order.sort_by_key(|s| !s.local_name().is_some_and(|n| damaged_in.contains(&n)));
    if order.is_empty() {
        return Err(format!("{} holds no snapshot of {}", o.restic.repository, o.host));
    }
    let path = Path::new("/").join(OsStr::from_bytes(raw));
    let dir = host.dir().map_err(|e| e.to_string())?;
    let mut tried = Vec::new();
    for s in order.into_iter().take(OFFSITE_TRIES) {
        // A dry run only hashes what restic gives; a repair keeps it in an unnamed file of the
        // host directory (the snapshots' filesystem, never /tmp), gone by itself when the
        // repair ends or stops.
        let mut file = match dry_run {
            true => None,
            false => {
                let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
                match rustix::fs::openat(dir.fd(), c".", flags, Mode::from_raw_mode(0o600)) {
                    Ok(fd) => Some(std::fs::File::from(fd)),
                    Err(e) => return Err(format!("cannot create a file for it in {}: {e}", host.root().display())),
                }
            }
        };
        // No more than a repair could write: the free space of the backup disk.
        let limit = crate::fs::fsutil::free_bytes_of(dir).map_err(|e| e.to_string())?;
        let dumped = match &mut file {
            Some(f) => o.restic.dump_into(&s.id, &path, f, limit),
            None => o.restic.dump_hash(&s.id, &path, limit),
        };
        match dumped {
            Ok(Some(h)) if &h == expected => {
                let note = format!("offsite {} (restic snapshot {})", o.name, s.short_id);
                return Ok(match file {
                    Some(file) => GoodCopy::Offsite { file, note },
                    None => GoodCopy::Seen(note),
                });
            }
            Ok(Some(_)) => tried.push(format!("{} holds other content", s.short_id)),
            Ok(None) => tried.push(format!(
                "{}: restic gave more than the {limit} bytes the drive has room for; stopped",
                s.short_id
            )),
            Err(e) => tried.push(format!("{}: {e}", s.short_id)),
        }
    }
    Err(format!("no restic snapshot tried holds it as backed up ({})", tried.join("; ")))
}

/// The live file at `live` when its content hashes to `expected`, or why not.
fn from_source(live: &Path, expected: &Hash, buf: &mut Vec<u8>) -> std::result::Result<GoodCopy, String> {
    // The live system may reach a source through a symlink (`/home -> /data/home`), so the
    // path is resolved as any program would; what counts is the content, checked by its hash.
    // The path comes from the destination's damage record, which whoever can write the disk
    // can shape: it is first reached with `O_PATH` (which opens nothing: no device's open,
    // no FIFO's wait), and read only when it is a regular file outside the kernel's own
    // filesystems (`/proc/kcore` would be read for ever), through that very handle.
    let cannot = |e: std::io::Error| format!("the source {} cannot be read ({e})", live.display());
    let path_fd =
        rustix::fs::open(live, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(|e| cannot(e.into()))?;
    let st = rustix::fs::fstat(&path_fd).map_err(|e| cannot(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(format!("the source {} is not a regular file now", live.display()));
    }
    if crate::fs::fstype::of(&path_fd).is_ok_and(|t| crate::fs::fstype::KERNEL_MADE.contains(&t)) {
        return Err(format!("the source {} is on a filesystem of the kernel's own; not read", live.display()));
    }
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let f: std::fs::File = fsops::reopen_pinned(path_fd.as_fd(), flags).map_err(cannot)?.into();
    match fsops::hash_file(&f, buf) {
        Ok(h) if &h == expected => Ok(GoodCopy::Source(f)),
        Ok(_) => Err(format!("the source {} has changed since the snapshot", live.display())),
        Err(e) => Err(format!("the source {} cannot be read ({e})", live.display())),
    }
}

/// One place of a damaged inode, opened: the directory holding it, its name, and its stat.
struct Opened {
    snapshot: String,
    dir: Dir,
    name: Name,
    st: Stat,
}

/// Repairs every unrepaired file of `damage` in the snapshots of `host`, taking good copies
/// from the live source (where `live` allows) or else from `offsites`; returns what was done and the damage record
/// to keep (repaired places gone, lost ones moved to `lost`, places in snapshots that no
/// longer exist dropped). A dry run reads from the offsites too (hashing what restic gives,
/// keeping nothing), so that it says truly where each copy would come from.
pub fn repair(
    host: &HostDir,
    _lock: &HostLock,
    damage: &DamageRecord,
    live: &LiveSources,
    offsites: &[OffsiteSource],
    dry_run: bool,
) -> Result<(RepairReport, DamageRecord)> {
    let snapshots = host.list()?;
    let by_name: BTreeMap<&str, &Snapshot> = snapshots.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut record = DamageRecord { files: Vec::new(), lost: damage.lost.clone() };
    record.lost.retain(|p| by_name.contains_key(p.snapshot_name()));
    // One group per damaged inode: every place that shares it, in every snapshot and under
    // every name (hard links within a snapshot stay one file after the repair).
    let mut groups: BTreeMap<(u64, u64, String), Vec<&DamagedPlace>> = BTreeMap::new();
    for p in damage.files.iter().filter(|p| by_name.contains_key(p.snapshot_name())) {
        groups.entry((p.dev, p.ino, p.hash.clone())).or_default().push(p);
    }
    let mut report = RepairReport { dry_run, ..Default::default() };
    // Snapshots of the btrfs store are read-only subvolumes: the ones written to are made
    // writable for the repair and read-only again at its end (if it is interrupted, by the
    // next run: `store::btrfs::seal_published`).
    let _unsealed = if dry_run { Unsealed(Vec::new()) } else { unseal(host, &by_name, &groups)? };
    let mut buf = Vec::new();
    let mut serial = 0u32;
    let mut listings: Listings = offsites.iter().map(|_| None).collect();
    for ((_, _, hash_hex), places) in groups {
        let ids: Vec<String> = places.iter().map(|p| by_name[p.snapshot_name()].id()).collect();
        let path = places[0].path.clone();
        let raw_hex = places[0].raw.clone();
        let file = |note: String| RepairedFile { path: path.clone(), snapshots: ids.clone(), note };
        let (Some(raw), Some(expected)) = (hex_decode(&raw_hex), hex_decode(&hash_hex).and_then(|h| h.try_into().ok()))
        else {
            report.failed.push(file("the damage record of this file is not readable".into()));
            continue;
        };
        let damaged_in: Vec<&str> = places.iter().map(|p| p.snapshot_name()).collect();
        match find_good_copy(host, live, offsites, &mut listings, &damaged_in, &raw, &expected, &mut buf, dry_run) {
            Ok(copy) => {
                let note = copy.note();
                if dry_run {
                    report.repaired.push(file(note));
                    record.files.extend(places.iter().map(|p| (*p).clone()));
                    continue;
                }
                serial += 1;
                let results = replace(host, &by_name, &places, &expected, copy, serial, &mut buf);
                let (mut done, mut failed, mut errors) = (Vec::new(), Vec::new(), Vec::new());
                for ((p, r), id) in places.iter().zip(&results).zip(&ids) {
                    match r {
                        Ok(()) => done.push(id.clone()),
                        Err(e) => {
                            record.files.push((*p).clone());
                            failed.push(id.clone());
                            errors.push(e.clone());
                        }
                    }
                }
                if !done.is_empty() {
                    report.repaired.push(RepairedFile { path: path.clone(), snapshots: done, note });
                }
                if !failed.is_empty() {
                    report.failed.push(RepairedFile { path: path.clone(), snapshots: failed, note: errors.join("; ") });
                }
            }
            Err(why) => {
                if dry_run {
                    report.lost.push(file(why));
                    record.files.extend(places.iter().map(|p| (*p).clone()));
                    continue;
                }
                let mut marked = Vec::new();
                let mut failed = None;
                for p in &places {
                    match mark_lost(host, by_name[p.snapshot_name()], p, &why) {
                        Ok(()) => marked.push((*p).clone()),
                        Err(e) => {
                            failed = Some(e.to_string());
                            record.files.push((*p).clone());
                        }
                    }
                }
                record.lost.extend(marked);
                match failed {
                    None => report.lost.push(file(why)),
                    Some(e) => report.failed.push(file(format!("{why}; marking it lost failed: {e}"))),
                }
            }
        }
    }
    Ok((report, record))
}

/// Snapshots made writable for a repair; read-only again when dropped.
struct Unsealed(Vec<Dir>);

impl Drop for Unsealed {
    fn drop(&mut self) {
        for d in &self.0 {
            if let Err(e) = d.set_subvolume_readonly(true) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Clears the read-only flag of every read-only subvolume snapshot that holds a place of
/// `groups`.
fn unseal(
    host: &HostDir,
    by_name: &BTreeMap<&str, &Snapshot>,
    groups: &BTreeMap<(u64, u64, String), Vec<&DamagedPlace>>,
) -> Result<Unsealed> {
    let names: std::collections::BTreeSet<&str> = groups.values().flatten().map(|p| p.snapshot_name()).collect();
    let mut out = Unsealed(Vec::new());
    for n in names {
        let dir = host.open_snapshot(by_name[n])?;
        if dir.is_readonly_subvolume()? {
            dir.set_subvolume_readonly(false)?;
            out.0.push(dir);
        }
    }
    Ok(out)
}

/// Opens the place `p` (a damaged file at `raw` in `s`) and checks it is still the damaged inode.
fn open_place(host: &HostDir, s: &Snapshot, p: &DamagedPlace, raw: &[u8]) -> Result<Opened> {
    let snap = host.open_snapshot(s)?;
    let shown = s.path.join(OsStr::from_bytes(raw));
    let (parent, name) = beneath::split_last(raw);
    let name = Name::new(name).map_err(|e| Error::Unsafe { path: shown.clone(), message: e.to_string() })?;
    let dir = if parent.is_empty() {
        snap
    } else {
        let fd = beneath::open_dir(snap.fd(), parent)
            .map_err(|r| Error::Unsafe { path: shown.clone(), message: format!("not repaired: {r}") })?;
        Dir::from_trusted_fd(fd, s.path.join(OsStr::from_bytes(parent)))?
    };
    let st = dir.stat(&name)?.ok_or_else(|| Error::Unsafe {
        path: shown.clone(),
        message: "is gone since the verify; not repaired".into(),
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || (st.st_dev, st.st_ino) != (p.dev, p.ino) {
        return Err(Error::Unsafe {
            path: shown,
            message: "is no longer the damaged file the verify found (changed since?); not repaired: verify again"
                .into(),
        });
    }
    Ok(Opened { snapshot: s.id(), dir, name, st })
}

/// Writes the good copy beside the first place that can be opened, then puts it in place of
/// every one; the outcome per place, in the order of `places`.
#[allow(clippy::too_many_arguments)]
fn replace(
    host: &HostDir,
    by_name: &BTreeMap<&str, &Snapshot>,
    places: &[&DamagedPlace],
    expected: &Hash,
    copy: GoodCopy,
    serial: u32,
    buf: &mut Vec<u8>,
) -> Vec<std::result::Result<(), String>> {
    let opened: Vec<Result<Opened>> = places
        .iter()
        .map(|p| {
            let raw = hex_decode(&p.raw).ok_or_else(|| Error::Unsafe {
                path: p.path.clone().into(),
                message: "the damage record of this place is not readable".into(),
            })?;
            open_place(host, by_name[p.snapshot_name()], p, &raw)
        })
        .collect();
    let Some(first) = opened.iter().find_map(|o| o.as_ref().ok()) else {
        return opened.into_iter().map(|o| o.map(|_| ()).map_err(|e| e.to_string())).collect();
    };
    let tmp = Name::new(format!(".hwc-repair-{}-{serial}", std::process::id())).expect("a plain name");
    let mut src = match copy {
        GoodCopy::Source(f) | GoodCopy::Offsite { file: f, .. } => f,
        GoodCopy::Seen(_) => {
            return places.iter().map(|_| Err("a dry run's copy cannot be written".into())).collect();
        }
    };
    // Removed after a failure only when this repair created it (a name already taken is an
    // error here, and not ours to delete).
    let mut created = false;
    let written = (|| -> Result<()> {
        let mut dst = first.dir.create_file(&tmp, 0o600)?;
        created = true;
        let tmp_path = first.dir.child_path(&tmp);
        src.seek(SeekFrom::Start(0)).ctx("read", &tmp_path)?;
        let src_st = rustix::fs::fstat(&src).ctx("inspect", &tmp_path)?;
        fsops::copy_plain(&src, &src_st, &mut dst, buf).ctx("write", &tmp_path)?;
        // What was written is what the manifest says (the source may change while read).
        let back = first
            .dir
            .open_read(&tmp)?
            .ok_or_else(|| Error::io("read", &tmp_path, std::io::ErrorKind::NotFound.into()))?;
        if &fsops::hash_file(&back, buf).ctx("read", &tmp_path)? != expected {
            return Err(Error::Unsafe {
                path: tmp_path,
                message: "the good copy changed while it was copied; not repaired: run repair again".into(),
            });
        }
        let damaged = first.dir.open_read(&first.name)?;
        fsops::apply_meta_fd(damaged.as_ref().map(|f| f.as_fd()), dst.as_fd(), &first.st)
            .ctx("set metadata of", &tmp_path)?;
        dst.sync_all().ctx("sync", &tmp_path)?;
        Ok(())
    })();
    if let Err(e) = written {
        if created {
            let _ = first.dir.remove_file(&tmp);
        }
        let message = e.to_string();
        return opened.into_iter().map(|o| Err(o.err().map_or(message.clone(), |e| e.to_string()))).collect();
    }
    // Each other place gets a link of its own name (two names of the inode may share a
    // directory), renamed over it.
    let put = |(i, o): (usize, &Opened)| -> Result<()> {
        let own = match std::ptr::eq(o, first) {
            true => tmp.clone(),
            false => {
                let own = Name::new(format!("{tmp}-{i}")).expect("a plain name");
                rustix::fs::linkat(first.dir.fd(), tmp.as_cstr(), o.dir.fd(), own.as_cstr(), AtFlags::empty())
                    .ctx("create hard link", o.dir.child_path(&own))?;
                own
            }
        };
        // Still the damaged inode at the moment of the rename (the lock keeps runs away).
        let still = o.dir.stat(&o.name)?.is_some_and(|st| (st.st_dev, st.st_ino) == (o.st.st_dev, o.st.st_ino));
        if !still {
            let _ = o.dir.remove_file(&own);
            return Err(Error::Unsafe {
                path: o.dir.child_path(&o.name),
                message: format!("changed during the repair of {}; not repaired", o.snapshot),
            });
        }
        o.dir.rename(&own, &o.dir, &o.name)?;
        o.dir.sync()
    };
    // The first place last: its temporary file is the source of every link.
    let mut results: Vec<std::result::Result<(), String>> = opened
        .iter()
        .enumerate()
        .map(|(i, o)| match o {
            Ok(o) if std::ptr::eq(o, first) => Ok(()),
            Ok(o) => put((i, o)).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        })
        .collect();
    let i = opened.iter().position(|o| o.as_ref().is_ok_and(|o| std::ptr::eq(o, first))).expect("first is opened");
    results[i] = put((i, first)).map_err(|e| e.to_string());
    if results[i].is_err() {
        let _ = first.dir.remove_file(&tmp);
    }
    results
}

/// Adds `p` to the `.hwc-backup/lost.json` of snapshot `s`.
fn mark_lost(host: &HostDir, s: &Snapshot, p: &DamagedPlace, reason: &str) -> Result<()> {
    let snap = host.open_snapshot(s)?;
    let meta = snap.open_dir(&Name::fixed(META_DIR))?;
    let name = Name::fixed(LOST_FILE);
    let mut list: Vec<LostEntry> = match meta.read_file(&name, 64 << 20)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Unsafe {
            path: meta.child_path(&name),
            message: format!("is not a list of lost files ({e}); not changed"),
        })?,
        None => Vec::new(),
    };
    if !list.iter().any(|e| e.raw == p.raw) {
        list.push(LostEntry {
            path: p.path.clone(),
            raw: p.raw.clone(),
            hash: p.hash.clone(),
            reason: reason.to_string(),
            marked_at: jiff::Timestamp::now(),
        });
    }
    let mut text = serde_json::to_vec_pretty(&list).expect("lost lists serialize");
    text.push(b'\n');
    meta.write_atomic(&name, &text)
}

/// The files marked lost in snapshot `s` (`/dir/name`), for a restore's warning; none when the
/// list is missing or unreadable.
pub fn lost_files(host: &HostDir, s: &Snapshot) -> Vec<PathBuf> {
    let Ok(snap) = host.open_snapshot(s) else { return Vec::new() };
    let Ok(meta) = snap.open_dir(&Name::fixed(META_DIR)) else { return Vec::new() };
    let Ok(Some(bytes)) = meta.read_file(&Name::fixed(LOST_FILE), 64 << 20) else { return Vec::new() };
    let list: Vec<LostEntry> = serde_json::from_slice(&bytes).unwrap_or_default();
    list.into_iter()
        .filter_map(|e| hex_decode(&e.raw))
        .map(|raw| Path::new("/").join(OsStr::from_bytes(&raw)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_below_a_source_reach_a_live_file() {
        let below = LiveSources::Below(vec![PathBuf::from("/home/alice"), PathBuf::from("/srv/")]);
        assert_eq!(below.allowed(b"home/alice/x"), Ok(PathBuf::from("/home/alice/x")));
        assert_eq!(below.allowed(b"srv/a/b"), Ok(PathBuf::from("/srv/a/b")));
        for refused in [
            &b"home/alice/../../etc/shadow"[..],
            b"home/alice/./x/../../../etc/shadow",
            b"/home/alice/x",
            b"",
            b"home/alicex/y",
            b"etc/shadow",
            b"home/alice/x\0y",
        ] {
            assert!(below.allowed(refused).is_err(), "{}", String::from_utf8_lossy(refused));
        }
        assert!(LiveSources::Anywhere.allowed(b"etc/hostname").is_ok());
        assert!(LiveSources::Anywhere.allowed(b"etc/../root/x").is_err());
        let why = LiveSources::Nowhere("pulled".into()).allowed(b"home/alice/x").unwrap_err();
        assert_eq!(why, "pulled");
    }
}
