//! Verifying a snapshot against its manifest, and sampling it against the live source.
//!
//! Every file the manifest lists is read again and hashed; a file whose hash differs is
//! "changed" (bit rot, or someone edited the backup), one that is gone is "missing", and a
//! regular file in the tree that the manifest does not list is "unexpected". Hashing runs on
//! several threads; the manifest and the tree are each read as a stream.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::layout::Snapshot;
use crate::manifest::{Cursor, Entry, ManifestReader};
use crate::meta::{MANIFEST_FILE, META_DIR};

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
    pub missing: Vec<PathBuf>,
    /// Content differs from the manifest.
    pub changed: Vec<PathBuf>,
    /// In the tree, not in the manifest.
    pub unexpected: Vec<PathBuf>,
    /// Files compared with the live source (`--sample`).
    pub sampled: u64,
    /// Sampled files whose content differs from the live source although size and mtime
    /// match the snapshot's copy (a change the quick check cannot see).
    pub sample_mismatches: Vec<PathBuf>,
    /// Sampled files that changed on the source after the snapshot (not an error).
    pub sample_changed_since: u64,
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
pub fn verify(
    snapshot: &Snapshot,
    threads: usize,
    sample: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport> {
    let manifest = snapshot.path.join(META_DIR).join(MANIFEST_FILE);
    let report = Mutex::new(VerifyReport { snapshot: snapshot.id(), ..Default::default() });
    let mut reservoir: Vec<Entry> = Vec::new();
    let mut seen = 0u64;
    let (tx, rx) = crossbeam_channel::bounded::<Entry>(256);
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..threads.max(1) {
            let (rx, report) = (rx.clone(), &report);
            scope.spawn(move || {
                let mut buf = Vec::new();
                for entry in rx {
                    check(&snapshot.path, &entry, report, &mut buf, progress);
                }
            });
        }
        drop(rx);
        let mut reader = ManifestReader::open(&manifest)?;
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
    report.unexpected = unexpected_files(snapshot, &manifest)?;
    for entry in reservoir {
        sample_one(snapshot, &entry, &mut report);
    }
    Ok(report)
}

fn check(
    root: &Path,
    entry: &Entry,
    report: &Mutex<VerifyReport>,
    buf: &mut Vec<u8>,
    progress: &(dyn Fn(u64, u64) + Sync),
) {
    let path = root.join(entry.rel_path());
    let result = std::fs::File::open(&path).and_then(|f| {
        let len = f.metadata()?.len();
        crate::fsops::hash_file(&f, buf).map(|h| (h, len))
    });
    let mut r = report.lock().expect("verify report poisoned");
    match result {
        Ok((hash, len)) => {
            r.files_checked += 1;
            r.bytes_checked += len;
            if hash != entry.hash {
                r.changed.push(Path::new("/").join(entry.rel_path()));
            }
            progress(r.files_checked, r.bytes_checked);
        }
        Err(_) => r.missing.push(Path::new("/").join(entry.rel_path())),
    }
}

/// Walks the tree in manifest order and lists regular files the manifest does not know.
fn unexpected_files(snapshot: &Snapshot, manifest: &Path) -> Result<Vec<PathBuf>> {
    let mut cursor = Cursor::open(manifest);
    let mut out = Vec::new();
    walk(&snapshot.path, &mut Vec::new(), &mut cursor, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &mut Vec<u8>, cursor: &mut Cursor, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(std::ffi::OsStr::from_bytes(rel));
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
        let entry = entry.ctx("read directory", &dir)?;
        let name = entry.file_name().as_bytes().to_vec();
        if rel.is_empty() && name == META_DIR.as_bytes() {
            continue;
        }
        let ft = entry.file_type().ctx("inspect", entry.path())?;
        if ft.is_dir() {
            dirs.push(name);
        } else if ft.is_file() {
            files.push(name);
        }
    }
    files.sort();
    dirs.sort();
    for name in files {
        if cursor.find(rel, &name).is_none() {
            let mut p = rel.clone();
            p.push(b'/');
            p.extend_from_slice(&name);
            out.push(Path::new("/").join(std::ffi::OsStr::from_bytes(&p[usize::from(rel.is_empty())..])));
        }
    }
    for name in dirs {
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name);
        walk(root, rel, cursor, out)?;
        rel.truncate(len);
    }
    Ok(())
}

fn sample_one(snapshot: &Snapshot, entry: &Entry, report: &mut VerifyReport) {
    let live = Path::new("/").join(entry.rel_path());
    let mut buf = Vec::new();
    let Ok(f) = std::fs::File::open(&live) else {
        report.sample_changed_since += 1; // gone from the source since: not an error
        report.sampled += 1;
        return;
    };
    report.sampled += 1;
    // "Changed since" means the quick check would see a change (mtime or size differ from
    // the snapshot's copy) and the next run will copy it. Same mtime and size but different
    // content is what the quick check can never catch, so that is reported.
    let stamp = |m: std::fs::Metadata| (m.len(), m.modified().ok());
    let snap_copy = std::fs::symlink_metadata(snapshot.path.join(entry.rel_path())).ok().map(stamp);
    let modified_after = f.metadata().ok().map(stamp) != snap_copy;
    match crate::fsops::hash_file(&f, &mut buf) {
        Ok(h) if h == entry.hash => {}
        Ok(_) if modified_after => report.sample_changed_since += 1,
        _ => report.sample_mismatches.push(live),
    }
}
