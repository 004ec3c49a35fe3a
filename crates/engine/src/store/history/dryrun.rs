//! `now --dry-run`: what a run would copy, link and exclude, and the bytes it would need,
//! without writing anything (no lock, no work directory, no hooks, no records).
//!
//! The sources are walked by the run's own walk ([`crate::source::local::plan`]), so every
//! rule that leaves an entry out — the exclude patterns (a source itself included), the
//! destination's host directory skipped by device and inode, one file system per source, the
//! directories `excludeCaches`/`excludeIfPresent` tag kept with their tag or marker only — is
//! the run's, in one place; files over `excludeLargerThan` and sockets are left out by the
//! same tests as the run's workers. Each entry is held against the newest complete snapshot
//! (the run's link base, walked alongside as the run walks it) with the run's quick check
//! ([`crate::store::place::unchanged`]: type, permissions, owner, size, mtime). Paths the
//! base holds and the sources no longer do are listed as gone. A source's own files are read
//! as the run reads them (its path is trusted); the base snapshot is read through the host
//! directory's handle, never through a symlink.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rustix::fs::FileType;
use serde::Serialize;

use super::diff::{ChangeKind, Kind};
use crate::error::{Error, Result};
use crate::fs::fsops;
use crate::job::Job;
use crate::source::exclude::ExcludeSet;
use crate::source::local::{self, BuildOptions, Planner};
use crate::source::markers::ExcludeBy;
use crate::store::layout::HostDir;
use crate::store::place::{self, unchanged, QuickAttrs};
use crate::store::walk;

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

/// What a run would do; the counts are named and counted as the run's own.
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
    /// Directories it would create (with those above the sources, as the run counts them).
    pub directories: u64,
    /// FIFOs and device nodes it would create.
    pub specials: u64,
    /// Entries the exclude patterns (or the destination's own host directory) leave out.
    pub excluded: u64,
    /// Directories kept without their contents for a `CACHEDIR.TAG` (`excludeCaches`).
    pub excluded_caches: u64,
    /// Directories kept without their contents for a marker file (`excludeIfPresent`).
    pub excluded_if_present: u64,
    /// Files over `excludeLargerThan`, left out.
    pub excluded_large: u64,
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
    let cancel = AtomicBool::new(false);
    let opts = BuildOptions {
        sources: &job.sources.paths,
        excludes: &excludes,
        exclude_patterns: &job.sources.exclude_patterns,
        one_file_system: job.sources.one_file_system,
        exclude_by: &job.sources.exclude_by,
        threads: 1,
        skip_dir: skip,
        cancel: &cancel,
        roots: None,
        // Nothing is written: how a run would share unchanged entries does not matter here.
        method: crate::store::place::Method::Link,
    };
    let mut planner = DryPlanner {
        by: &job.sources.exclude_by,
        settled_before: base.as_ref().and_then(|b| b.meta.settled_before(false)),
        out: DryRun { link_base: base.as_ref().map(|b| b.id()), ..Default::default() },
        seen: HashSet::new(),
    };
    let left_out = local::plan(&opts, base_dir.as_ref(), &mut planner)?;
    let DryPlanner { mut out, seen, .. } = planner;
    out.excluded = left_out.excluded;
    out.excluded_caches = left_out.excluded_caches;
    out.excluded_if_present = left_out.excluded_if_present;
    // What the base holds and the sources no longer do (below the sources only: the base's
    // directories above them are the run's own ancestors).
    if let (Some(b), Some(dir)) = (&base, &base_dir) {
        for source in &job.sources.paths {
            let rel = walk::rel_of(source)?;
            walk::walk_path(dir.fd(), &b.path, &rel, &mut |v| {
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

/// Counts what the walk finds as the run would record it, and remembers every path the run
/// would hold (for the paths gone).
struct DryPlanner<'a> {
    by: &'a ExcludeBy,
    /// The link base's `LinkBase::settled_before`, as the run has it.
    settled_before: Option<i64>,
    out: DryRun,
    seen: HashSet<Vec<u8>>,
}

impl Planner for DryPlanner<'_> {
    fn directory(&mut self, abs: &Path) {
        self.seen.insert(local::rel_of(abs));
        self.out.directories += 1;
    }

    fn entries(
        &mut self,
        rel: &[u8],
        abs: &Path,
        src: BorrowedFd,
        prev: Option<BorrowedFd>,
        names: &[CString],
    ) -> Result<()> {
        let out = &mut self.out;
        for name in names {
            // Vanished or unreadable: the run warns and records nothing.
            let Ok(st) = fsops::stat_at(src, name) else { continue };
            let kind = fsops::file_type(&st);
            let size = u64::try_from(st.st_size).unwrap_or(0);
            if kind == FileType::RegularFile && self.by.too_large(size) {
                out.excluded_large += 1;
                continue;
            }
            let mut path_rel = rel.to_vec();
            walk::push(&mut path_rel, name.to_bytes());
            self.seen.insert(path_rel);
            match kind {
                FileType::Socket => {
                    out.sockets_skipped += 1;
                    continue;
                }
                FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                    out.specials += 1;
                    continue;
                }
                FileType::RegularFile | FileType::Symlink => {}
                _ => continue,
            }
            let base_st = prev.and_then(|p| fsops::stat_at(p, name).ok());
            // As the run decides (`source::local`): the quick check, then the attributes of
            // a file changed since the base was read.
            let quick_same = base_st.as_ref().is_some_and(|b| unchanged(&QuickAttrs::of(&st), b));
            let attrs_differ = match (prev, base_st.as_ref()) {
                (Some(p), Some(b)) => place::xattrs_differ(src, p, name, &st, b, self.settled_before),
                _ => false,
            };
            if quick_same && !attrs_differ {
                out.linked += 1;
                out.bytes_linked += if kind == FileType::RegularFile { size } else { 0 };
                continue;
            }
            if kind == FileType::RegularFile {
                out.files_to_copy += 1;
                out.bytes_to_copy += size;
            } else {
                out.symlinks_to_copy += 1;
            }
            let change = match base_st {
                None => ChangeKind::Added,
                // Copied for its attributes alone: `diff` will call it a metadata change.
                Some(_) if attrs_differ => ChangeKind::Metadata,
                Some(_) => ChangeKind::Modified,
            };
            let size = if kind == FileType::RegularFile { size } else { 0 };
            let path = abs.join(OsStr::from_bytes(name.to_bytes()));
            out.changes.push(Planned { path, change, kind: Kind::of(&st), size });
        }
        Ok(())
    }
}
