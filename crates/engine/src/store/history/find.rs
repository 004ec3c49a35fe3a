//! `find` and `versions`: where a file is in the history, and how it changed.
//!
//! `find` walks every snapshot once and matches each path with the exclude rules
//! ([`crate::source::exclude::ExcludeSet`], rsync's); `--path` and `versions` look one path up
//! in each snapshot, component by component, without walking. Two entries are the same
//! version when they are the same inode (the run hard-linked it), or of the same type, size,
//! mtime, permissions and owner with the same content (read only in that rare case: a copy
//! made instead of a link).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;

use super::diff::{hash_at, Info, Kind};
use crate::error::Result;
use crate::fs::beneath::DirCache;
use crate::source::exclude::ExcludeSet;
use crate::store::layout::{HostDir, Snapshot};
use crate::store::walk;

/// What to look for.
pub enum Query {
    /// Paths matching any of these patterns (rsync's exclude rules).
    Patterns(ExcludeSet),
    /// One absolute path.
    Path(PathBuf),
}

/// One match in one snapshot.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    /// `daily/NAME`.
    pub snapshot: String,
    /// The path as it was on the host.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Its type.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Whether the next-newer snapshot holds the same version (`None`: this is the newest
    /// snapshot).
    pub same_as_newer: Option<bool>,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

fn mtime_of(i: &Info) -> Timestamp {
    Timestamp::new(i.mtime.0, i.mtime.1 as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Same version by the quick check (see the module docs); `None` when only the content can
/// tell (different inodes, same type, size, mtime, permissions and owner of a regular file).
fn quick_same(a: &Info, b: &Info) -> Option<bool> {
    if a.id == b.id {
        return Some(true);
    }
    let alike = a.kind == b.kind
        && a.size == b.size
        && a.mtime == b.mtime
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.target == b.target
        && a.rdev == b.rdev;
    match (alike, a.kind) {
        (false, _) => Some(false),
        (true, Kind::File) => None,
        (true, Kind::Dir) => Some(false), // directories are never the same inode; compare their contents with diff
        (true, _) => Some(true),
    }
}

/// Every match in every snapshot (oldest first; within a snapshot in walk order).
pub fn find(host: &HostDir, snapshots: &[Snapshot], query: &Query) -> Result<Vec<Hit>> {
    let per = super::du::parallel(snapshots.len(), &|i| find_in(host, &snapshots[i], query))?;
    let mut hits = Vec::new();
    let mut buf = Vec::new();
    for (i, found) in per.iter().enumerate() {
        let newer: Option<HashMap<&[u8], &Info>> =
            per.get(i + 1).map(|n| n.iter().map(|(p, info)| (p.as_slice(), info)).collect());
        for (rel, info) in found {
            let same = newer.as_ref().map(|m| match m.get(rel.as_slice()) {
                None => false,
                Some(other) => quick_same(info, other)
                    .unwrap_or_else(|| same_content(host, &snapshots[i], &snapshots[i + 1], rel, &mut buf)),
            });
            hits.push(Hit {
                snapshot: snapshots[i].id(),
                path: PathBuf::from("/").join(OsStr::from_bytes(rel)),
                kind: info.kind,
                size: if info.kind == Kind::File { info.size } else { 0 },
                mtime: mtime_of(info),
                same_as_newer: same,
            });
        }
    }
    Ok(hits)
}

/// The matches in one snapshot. A pattern walk reads only directory listings (the type
/// comes with the name); only matches are `stat`ed.
fn find_in(host: &HostDir, s: &Snapshot, query: &Query) -> Result<Vec<(Vec<u8>, Info)>> {
    let dir = host.open_snapshot(s)?;
    let mut found = Vec::new();
    match query {
        Query::Patterns(set) => {
            let mut abs = Vec::new();
            let opts = walk::Opts { skip_meta: true, stat: false };
            walk::walk_with(dir.fd(), b"", &s.path, opts, &mut |v| {
                abs.clear();
                abs.push(b'/');
                abs.extend_from_slice(v.rel);
                let is_dir = v.kind == rustix::fs::FileType::Directory;
                if set.is_excluded(Path::new(OsStr::from_bytes(&abs)), is_dir) {
                    found.push((v.rel.to_vec(), Info::of(v, &v.stat()?)));
                }
                Ok(true)
            })?;
        }
        Query::Path(p) => {
            let rel = walk::rel_of(p)?;
            if !rel.is_empty() {
                if let Some(st) = walk::find_start(dir.fd(), &s.path, &rel)? {
                    let kind = rustix::fs::FileType::from_raw_mode(st.st.st_mode);
                    let v = walk::Visit::of_start(&st, kind);
                    found.push((rel.clone(), Info::of(&v, &st.st)));
                }
            }
        }
    }
    Ok(found)
}

fn same_content(host: &HostDir, a: &Snapshot, b: &Snapshot, rel: &[u8], buf: &mut Vec<u8>) -> bool {
    let hash = |s: &Snapshot, buf: &mut Vec<u8>| {
        let dir = host.open_snapshot(s).ok()?;
        hash_at(&mut DirCache::new(dir.fd()), rel, buf)
    };
    let ha = hash(a, buf);
    ha.is_some() && ha == hash(b, buf)
}

/// One version of a path: the snapshots that hold it, oldest first.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// Its type.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// `daily/NAME` of every snapshot holding this version, oldest first.
    pub snapshots: Vec<String>,
}

/// The distinct versions of one path, oldest first: a new one starts whenever the path
/// changes from one snapshot to the next (or reappears after snapshots without it).
pub fn versions(host: &HostDir, snapshots: &[Snapshot], path: &Path) -> Result<Vec<Version>> {
    let hits = find(host, snapshots, &Query::Path(path.to_path_buf()))?;
    let mut out: Vec<Version> = Vec::new();
    let mut continues = false;
    for s in snapshots {
        let Some(h) = hits.iter().find(|h| h.snapshot == s.id()) else {
            continues = false;
            continue;
        };
        match out.last_mut() {
            Some(v) if continues => v.snapshots.push(h.snapshot.clone()),
            _ => out.push(Version { kind: h.kind, size: h.size, mtime: h.mtime, snapshots: vec![h.snapshot.clone()] }),
        }
        continues = h.same_as_newer == Some(true);
    }
    Ok(out)
}
