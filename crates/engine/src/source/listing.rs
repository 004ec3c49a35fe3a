//! Reading one directory of a source as every walk of a source sees it: this machine's build
//! (`local`), its dry run, and the agent of a pulled host (`remote::agent`) list a directory
//! here, so the excludes, `excludeCaches` and `excludeIfPresent` decide the same way on both
//! sides of a pull.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::FileType;

use crate::fs::fsops;
use crate::source::exclude::ExcludeSet;
use crate::source::markers::ExcludeBy;

/// One directory's entries that a walk keeps, and what it left out.
pub(crate) struct Listing {
    /// Everything but directories, in the order the directory gave them.
    pub(crate) files: Vec<CString>,
    /// Subdirectories, sorted by name (the walk order).
    pub(crate) dirs: Vec<CString>,
    /// Entries the exclude patterns left out.
    pub(crate) excluded: u64,
    /// 1 when the directory was kept without its content for a `CACHEDIR.TAG`.
    pub(crate) cache_tagged: u64,
    /// 1 when it was for a marker file (`excludeIfPresent`) and not a cache tag.
    pub(crate) marker_tagged: u64,
}

/// Lists the directory open as `dir`, whose absolute path in the source is `abs` (what the
/// exclude patterns are matched against): `.` and `..` skipped, excluded entries left out, a
/// tagged directory's content reduced to what `by` keeps.
pub(crate) fn list(dir: BorrowedFd, abs: &Path, excludes: &ExcludeSet, by: &ExcludeBy) -> io::Result<Listing> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut excluded = 0u64;
    let mut path = abs.as_os_str().as_bytes().to_vec();
    let base_len = path.len();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let mut ft = entry.file_type();
        if ft == FileType::Unknown {
            ft = fsops::stat_at(dir, name).map(|st| fsops::file_type(&st))?;
        }
        let is_dir = ft == FileType::Directory;
        if !excludes.is_empty() {
            path.truncate(base_len);
            if base_len > 1 {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            if excludes.is_excluded(Path::new(OsStr::from_bytes(&path)), is_dir) {
                excluded += 1;
                continue;
            }
        }
        if is_dir {
            dirs.push(name.to_owned());
        } else {
            files.push(name.to_owned());
        }
    }
    dirs.sort();
    let (mut cache_tagged, mut marker_tagged) = (0, 0);
    if by.caches || !by.if_present.is_empty() {
        let has = |n: &[u8]| files.iter().chain(&dirs).any(|f| f.to_bytes() == n);
        let tagged = by.tagged(dir, has);
        if tagged.any() {
            files.retain(|f| by.keeps(tagged, f.to_bytes()));
            dirs.retain(|f| by.keeps(tagged, f.to_bytes()));
            cache_tagged = u64::from(tagged.cache);
            marker_tagged = u64::from(tagged.marker && !tagged.cache);
        }
    }
    Ok(Listing { files, dirs, excluded, cache_tagged, marker_tagged })
}
