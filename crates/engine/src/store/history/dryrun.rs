//! `now --dry-run`: what a run would copy, link and exclude, and the bytes it would need,
//! without writing anything (no lock, no work directory, no hooks, no records).
//!
//! The sources are walked with the run's rules — the exclude patterns (a source itself
//! included), the destination's host directory skipped by device and inode, one file system
//! per source when the plan says so, the directories `excludeCaches`/`excludeIfPresent` tag kept
//! with their tag or marker only, files over `excludeLargerThan` left out, sockets skipped — and each entry is held against the
//! newest complete snapshot (the run's link base) with the run's quick check
//! ([`crate::store::place::unchanged`]: type, permissions, owner, size, mtime). Paths the
//! base holds and the sources no longer do are listed as gone. A source's own files are read
//! as the run reads them (its path is trusted); the base snapshot is read through the host
//! directory's handle, never through a symlink.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Stat};
use serde::Serialize;

use super::diff::{ChangeKind, Kind};
use crate::error::{Error, Result};
use crate::fs::beneath::DirCache;
use crate::fs::{Dir, Name};
use crate::job::Job;
use crate::source::exclude::ExcludeSet;
use crate::source::markers::{ExcludeBy, Tagged};
use crate::store::layout::HostDir;
use crate::store::place::{unchanged, QuickAttrs};
use crate::store::walk::{self, Visit};

/// One path a run would copy, or that it would no longer hold.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    /// The path.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// `added` (the base has nothing there), `modified` (the base's copy differs) or `removed`.
    pub change: ChangeKind,
    /// Its type.
    pub kind: Kind,
    /// Bytes to copy (regular files).
    pub size: u64,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What a run would do.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// The snapshot it would link to (`daily/NAME`), if any.
    pub link_base: Option<String>,
    /// Regular files it would copy.
    pub files_to_copy: u64,
    /// Their bytes: what the run needs on the destination, besides directories and metadata.
    pub bytes_to_copy: u64,
    /// Files and symlinks it would hard-link to the base.
    pub linked: u64,
    /// Their bytes (taking no new space).
    pub bytes_linked: u64,
    /// Symlinks it would create anew.
    pub symlinks_to_copy: u64,
    /// Directories it would create.
    pub directories: u64,
    /// FIFOs and device nodes it would create.
    pub specials: u64,
    /// Entries the exclude patterns (or the destination's own host directory) leave out.
    pub excluded: u64,
    /// Sockets, which are never backed up.
    pub sockets_skipped: u64,
    /// Paths of the base the run would no longer hold.
    pub gone: u64,
    /// Every file and symlink to copy and every path gone, in walk order.
    pub changes: Vec<Planned>,
}

/// Plans a run of `job` (a local one) without writing anything.
pub fn dry_run(job: &Job) -> Result<DryRun> {
    let excludes =
        ExcludeSet::new(&job.sources.exclude_patterns).map_err(|e| Error::config("excludePatterns", e.to_string()))?;
    let host = HostDir::open(&job.store.destination.path.join(job.host()))?;
    let skip = match host.dir() {
        Ok(d) => d.stat_self().ok().map(|st| (st.st_dev, st.st_ino)),
        Err(_) => None,
    };
    let base = host.list()?.pop();
    let base_dir = base.as_ref().map(|b| host.open_snapshot(b)).transpose()?;
    let base_fd = base_dir.as_ref().map(|d| d.fd());
    let mut out = DryRun { link_base: base.as_ref().map(|b| b.id()), ..Default::default() };
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut prev = base_fd.map(DirCache::new);
    for source in &job.sources.paths {
        let rules =
            Rules { excludes: &excludes, by: &job.sources.exclude_by, one_file_system: job.sources.one_file_system };
        plan_source(source, &rules, skip, prev.as_mut(), &mut seen, &mut out)?;
    }
    // What the base holds and the sources no longer do (below the sources only: the base's
    // directories above them are the run's own ancestors).
    if let (Some(b), Some(fd)) = (&base, base_fd) {
        for source in &job.sources.paths {
            let rel = walk::rel_of(source)?;
            walk::walk_path(fd, &b.path, &rel, &mut |v| {
                if seen.contains(v.rel) {
                    return Ok(true);
                }
                let st = v.stat()?;
                out.gone += 1;
                out.changes.push(Planned {
                    path: shown(v.rel),
                    change: ChangeKind::Removed,
                    kind: Kind::of(&st),
                    size: 0,
                });
                Ok(false) // below a gone directory everything is gone too: listed once
            })?;
        }
    }
    Ok(out)
}

fn shown(rel: &[u8]) -> PathBuf {
    PathBuf::from("/").join(OsStr::from_bytes(rel))
}

/// What leaves an entry out of a run.
struct Rules<'a> {
    excludes: &'a ExcludeSet,
    by: &'a ExcludeBy,
    one_file_system: bool,
}

/// The parent of a relative path (`""` for a top-level name).
fn parent_rel(rel: &[u8]) -> &[u8] {
    rel.iter().rposition(|&b| b == b'/').map_or(&[][..], |i| &rel[..i])
}

/// Whether the directory `name` in `parent` is tagged by `by` (its tag or markers, looked up
/// without following a symlink).
fn tagged(by: &ExcludeBy, parent: std::os::fd::BorrowedFd, name: &std::ffi::CStr) -> Tagged {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::openat(parent, name, flags, Mode::empty()) else { return Tagged::default() };
    by.tagged(dir.as_fd(), |n| rustix::fs::statat(&dir, n, AtFlags::SYMLINK_NOFOLLOW).is_ok())
}

fn plan_source(
    source: &Path,
    rules: &Rules,
    skip: Option<(u64, u64)>,
    mut prev: Option<&mut DirCache>,
    seen: &mut HashSet<Vec<u8>>,
    out: &mut DryRun,
) -> Result<()> {
    let Rules { excludes, by, one_file_system } = *rules;
    let rel = walk::rel_of(source)?;
    let st = rustix::fs::lstat(source).map_err(|e| Error::io("inspect source", source, e.into()))?;
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    if excludes.is_excluded(source, is_dir) {
        out.excluded += 1;
        return Ok(());
    }
    let root_dev = st.st_dev;
    // A directory source: the directory itself, then (below) everything in it.
    let dir = match is_dir {
        true => {
            let dir = Dir::open_trusted(source)?;
            let here = rustix::fs::fstat(dir.fd()).map_err(|e| Error::io("inspect source", source, e.into()))?;
            if skip == Some((here.st_dev, here.st_ino)) {
                out.excluded += 1;
                return Ok(());
            }
            if !rel.is_empty() {
                seen.insert(rel.clone());
            }
            out.directories += 1;
            Some(dir)
        }
        false => None,
    };
    // Directories whose contents `excludeCaches`/`excludeIfPresent` leave out, by path.
    let mut tagged_dirs: HashMap<Vec<u8>, Tagged> = HashMap::new();
    if let (Some(d), false) = (&dir, by.is_empty()) {
        let t = by.tagged(d.fd(), |n| rustix::fs::statat(d.fd(), n, AtFlags::SYMLINK_NOFOLLOW).is_ok());
        if t.any() {
            tagged_dirs.insert(rel.clone(), t);
        }
    }
    let mut visit = |v: &Visit| -> Result<bool> {
        let st = v.stat()?;
        let kind = v.kind;
        let abs = shown(v.rel);
        if !v.rel.is_empty() && v.rel != rel.as_slice() && excludes.is_excluded(&abs, kind == FileType::Directory) {
            out.excluded += 1;
            return Ok(false);
        }
        if let Some(t) = tagged_dirs.get(parent_rel(v.rel)) {
            if !by.keeps(*t, v.name.to_bytes()) {
                out.excluded += 1;
                return Ok(false);
            }
        }
        if kind == FileType::Directory {
            if skip == Some((st.st_dev, st.st_ino)) {
                out.excluded += 1;
                return Ok(false);
            }
            seen.insert(v.rel.to_vec());
            out.directories += 1;
            if !by.is_empty() {
                let t = tagged(by, v.dir, v.name);
                if t.any() {
                    tagged_dirs.insert(v.rel.to_vec(), t);
                }
            }
            return Ok(!(one_file_system && st.st_dev != root_dev));
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if kind == FileType::RegularFile && by.too_large(size) {
            out.excluded += 1;
            return Ok(false);
        }
        seen.insert(v.rel.to_vec());
        match kind {
            FileType::Socket => {
                out.sockets_skipped += 1;
                return Ok(false);
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                out.specials += 1;
                return Ok(false);
            }
            _ => {}
        }
        let base_st = prev.as_deref_mut().and_then(|p| stat_below(p, v.rel));
        let linked = base_st.as_ref().is_some_and(|b| unchanged(&QuickAttrs::of(&st), b));
        if linked {
            out.linked += 1;
            out.bytes_linked += if kind == FileType::RegularFile { size } else { 0 };
            return Ok(false);
        }
        if kind == FileType::RegularFile {
            out.files_to_copy += 1;
            out.bytes_to_copy += size;
        } else {
            out.symlinks_to_copy += 1;
        }
        let change = if base_st.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        let size = if kind == FileType::RegularFile { size } else { 0 };
        out.changes.push(Planned { path: abs, change, kind: Kind::of(&st), size });
        Ok(false)
    };
    if !is_dir {
        // A single file (or symlink) as a source: look at it in its directory.
        let (parent, name) = Name::split_path(source)
            .ok_or_else(|| Error::config("source", format!("{} does not name a file", source.display())))?;
        let dir = Dir::open_trusted(parent)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let v = Visit { dir: dir.fd(), name: name.as_cstr(), rel: &rel, kind, st: Some(&st) };
        visit(&v)?;
        return Ok(());
    }
    let dir = dir.expect("opened above for a directory");
    let opts = walk::Opts { skip_meta: false, stat: true };
    walk::walk_with(dir.fd().as_fd(), &rel, source, opts, &mut visit)
}

/// The base's entry at `rel`, not following a symlink; `None` when it has none.
fn stat_below(prev: &mut DirCache, rel: &[u8]) -> Option<Stat> {
    let (d, n) = match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let dir = prev.dir(d).ok()?;
    let name = crate::fs::beneath::component(n).ok()?;
    rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW).ok()
}
