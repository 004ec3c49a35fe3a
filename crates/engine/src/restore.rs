//! Restoring a file or directory from a snapshot.
//!
//! `restore(snapshot, /home/u/.config, /tmp/cfg)` recreates what `/home/u/.config` was at
//! snapshot time as `/tmp/cfg`, with owner, mode, times, xattrs/ACLs, symlinks, special files
//! and hard links. Nothing existing is overwritten unless `force` is set; that check covers
//! the whole tree before the first byte is written. Files are written under a temporary
//! name and renamed into place, so an interrupted restore never leaves a half-written file
//! where a good one was.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fsops;
use crate::layout::Snapshot;
use crate::meta::META_DIR;

/// How to restore.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Overwrite existing files.
    pub force: bool,
    /// Only report what would be written.
    pub dry_run: bool,
}

/// What a restore did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// `daily/NAME`.
    pub snapshot: String,
    /// The path as it was on the host.
    pub source: PathBuf,
    /// Where it went.
    pub target: PathBuf,
    /// Every path written (or that would be), in order.
    pub written: Vec<PathBuf>,
    /// Of those, the ones that existed before (only with `force`).
    pub overwritten: Vec<PathBuf>,
    /// Bytes of file content.
    pub bytes: u64,
}

/// The path inside a snapshot of a path as it was on the host.
pub fn path_in_snapshot(snapshot: &Snapshot, host_path: &Path) -> Result<PathBuf> {
    if !host_path.is_absolute() {
        return Err(Error::Snapshot {
            name: snapshot.id(),
            message: format!("{} is not an absolute path", host_path.display()),
        });
    }
    let rel = host_path.strip_prefix("/").expect("absolute");
    if rel.starts_with(META_DIR) || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::Snapshot {
            name: snapshot.id(),
            message: format!("{} is not a backed-up path", host_path.display()),
        });
    }
    let inside = snapshot.path.join(rel);
    match std::fs::symlink_metadata(&inside) {
        Ok(_) => Ok(inside),
        Err(_) => Err(Error::Snapshot {
            name: snapshot.id(),
            message: format!(
                "{} is not in this snapshot (sources: {})",
                host_path.display(),
                join_paths(&snapshot.meta.sources)
            ),
        }),
    }
}

fn join_paths(p: &[PathBuf]) -> String {
    p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Restores `host_path` from `snapshot` to `target`.
pub fn restore(snapshot: &Snapshot, host_path: &Path, target: &Path, opts: RestoreOptions) -> Result<RestoreReport> {
    let from = path_in_snapshot(snapshot, host_path)?;
    let mut report = RestoreReport {
        snapshot: snapshot.id(),
        source: host_path.to_path_buf(),
        target: target.to_path_buf(),
        ..Default::default()
    };
    plan_tree(&from, target, &mut report)?;
    if !opts.force {
        if let Some(first) = report.overwritten.first() {
            return Err(Error::WouldOverwrite { path: first.clone() });
        }
    }
    if opts.dry_run {
        return Ok(report);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).ctx("create directory", parent)?;
    }
    let mut links = HashMap::new();
    copy_tree(&from, target, &mut links, &mut Vec::new())?;
    Ok(report)
}

/// Lists what a restore writes, and which of those paths exist already.
fn plan_tree(from: &Path, to: &Path, report: &mut RestoreReport) -> Result<()> {
    let md = std::fs::symlink_metadata(from).ctx("inspect", from)?;
    let existing = std::fs::symlink_metadata(to).ok();
    if let Some(e) = &existing {
        // A directory over a directory merges; anything else replaces.
        if !(md.is_dir() && e.is_dir()) {
            report.overwritten.push(to.to_path_buf());
        }
    }
    report.written.push(to.to_path_buf());
    if md.is_file() {
        report.bytes += md.len();
    }
    if md.is_dir() {
        for entry in sorted_entries(from)? {
            plan_tree(&from.join(&entry), &to.join(&entry), report)?;
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .ctx("read directory", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .ctx("read directory", dir)?;
    names.sort();
    Ok(names)
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths")
}

/// Copies one entry (recursively for directories), keeping hard links among restored files.
fn copy_tree(from: &Path, to: &Path, links: &mut HashMap<(u64, u64), PathBuf>, buf: &mut Vec<u8>) -> Result<()> {
    let st = rustix::fs::lstat(from).ctx("inspect", from)?;
    let (from_dir, name) = split(from);
    let (to_dir, to_name) = split(to);
    let src_dir = std::fs::File::open(&from_dir).ctx("open directory", &from_dir)?;
    let dst_dir = std::fs::File::open(&to_dir).ctx("open directory", &to_dir)?;
    match fsops::file_type(&st) {
        rustix::fs::FileType::Directory => {
            if !to.is_dir() {
                remove_existing(to)?;
                std::fs::create_dir(to).ctx("create directory", to)?;
            }
            for entry in sorted_entries(from)? {
                copy_tree(&from.join(&entry), &to.join(&entry), links, buf)?;
            }
            let src = std::fs::File::open(from).ctx("open", from)?;
            let dst = std::fs::File::open(to).ctx("open", to)?;
            fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), &st).ctx("set metadata of", to)?;
        }
        rustix::fs::FileType::RegularFile => {
            if st.st_nlink > 1 {
                if let Some(first) = links.get(&(st.st_dev, st.st_ino)) {
                    remove_existing(to)?;
                    return std::fs::hard_link(first, to).ctx("create hard link", to);
                }
                links.insert((st.st_dev, st.st_ino), to.to_path_buf());
            }
            let tmp_name = format!(".{}.hwc-restore", to_name.to_string_lossy());
            let tmp = to_dir.join(&tmp_name);
            let _ = std::fs::remove_file(&tmp);
            let src = fsops::open_source_file(src_dir.as_fd(), &cstr(Path::new(&name))).ctx("open", from)?;
            let mut dst = fsops::create_file_at(dst_dir.as_fd(), &cstr(Path::new(&tmp_name))).ctx("create", &tmp)?;
            fsops::copy_contents(&src, &st, &mut dst, buf).ctx("copy to", &tmp)?;
            fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), &st).ctx("set metadata of", &tmp)?;
            dst.sync_all().ctx("sync", &tmp)?;
            if to.is_dir() && !to.is_symlink() {
                remove_existing(to)?;
            }
            std::fs::rename(&tmp, to).ctx("rename into place", to)?;
        }
        rustix::fs::FileType::Symlink => {
            remove_existing(to)?;
            fsops::copy_symlink(src_dir.as_fd(), dst_dir.as_fd(), &cstr(Path::new(&name)), &st)
                .ctx("create symlink", to)?;
        }
        rustix::fs::FileType::Socket => {}
        _ => {
            remove_existing(to)?;
            fsops::copy_special(src_dir.as_fd(), dst_dir.as_fd(), &cstr(Path::new(&name)), &st).ctx("create", to)?;
        }
    }
    Ok(())
}

fn split(p: &Path) -> (PathBuf, std::ffi::OsString) {
    let parent = p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    (parent, p.file_name().map(|n| n.to_os_string()).unwrap_or_default())
}

fn remove_existing(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).ctx("remove", p),
        Ok(_) => std::fs::remove_file(p).ctx("remove", p),
        Err(_) => Ok(()),
    }
}
