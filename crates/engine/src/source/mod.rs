//! Where a snapshot's entries come from.
//!
//! A run (`run`) does the same for every host: preflight, lock, clean up, build into
//! `.incomplete/`, guards, metadata, `syncfs`, publish, prune. Only the build's source of
//! entries differs, so that is this one interface, chosen once per run:
//!
//! - [`LocalFs`]: this machine's filesystem, through the parallel walk of `snapshot` (one
//!   `fstatat` and one `linkat` per unchanged file; nothing here sits on its hot path);
//! - [`Pull`]: another machine's `hwc-backup agent` over ssh (`remote`), which reuses the
//!   destination side of the local build (manifest writer and cursor, metadata application,
//!   counts and warnings).

pub mod dumps;
pub mod exclude;
pub mod fs_snapshot;
mod listing;
pub mod local;
pub mod markers;
pub mod quiesce;
pub mod remote;
pub mod volume;

use std::path::{Path, PathBuf};

use self::local::{BuildOptions, BuildResult, LinkBase, Progress};
use crate::error::{Error, Result};
use crate::fs::Dir;
use crate::job::Job;
use crate::source::remote::pull::{self, PullOptions};
use crate::source::remote::ssh::Connection;
use crate::store::manifest::ManifestWriter;

/// A source of snapshot entries.
pub trait Source {
    /// Checks what can be checked before anything is written.
    fn preflight(&self, job: &Job) -> Result<()>;

    /// Builds the tree of `opts.sources` into `work` (held open; nothing below it is ever
    /// reached by path) and its manifest with `manifest`.
    fn build(
        &self,
        opts: &BuildOptions,
        work: &Dir,
        manifest: ManifestWriter,
        base: Option<LinkBase>,
        progress: Progress,
    ) -> Result<BuildResult>;

    /// The NixOS system of the machine the entries come from, when known.
    fn nixos_system(&self) -> Option<PathBuf>;

    /// How each source was read by the last build (filesystem snapshot or live); empty when
    /// the source takes no filesystem snapshots.
    fn source_reads(&self) -> Vec<fs_snapshot::SourceRead> {
        Vec::new()
    }

    /// The services the last build held still, and for how long; empty when none.
    fn held_units(&self) -> Vec<quiesce::HeldUnit> {
        Vec::new()
    }
}

/// This machine's filesystem.
pub struct LocalFs;

impl Source for LocalFs {
    fn preflight(&self, job: &Job) -> Result<()> {
        for s in &job.sources.paths {
            if let Err(e) = std::fs::symlink_metadata(s) {
                return Err(Error::Preflight(format!("source {} cannot be read: {e}", s.display())));
            }
        }
        check_sources(job)
    }

    fn build(
        &self,
        opts: &BuildOptions,
        work: &Dir,
        manifest: ManifestWriter,
        base: Option<LinkBase>,
        progress: Progress,
    ) -> Result<BuildResult> {
        local::build(opts, work, manifest, base, progress)
    }

    fn nixos_system(&self) -> Option<PathBuf> {
        crate::store::meta::nixos_system()
    }
}

/// Another machine's agent, reached by `connect` (ssh in production, an in-process agent in
/// tests).
pub struct Pull<'a> {
    /// The host's name.
    pub host: &'a str,
    /// Opens a connection to the agent.
    pub connect: &'a (dyn Fn() -> Result<Connection> + Sync),
    /// Recreate the host's device nodes (`hosts.<name>.devices`, `pull --devices`).
    pub devices: bool,
}

impl Source for Pull<'_> {
    /// The agent checks its sources when asked; a missing one fails the run then, before any
    /// file is written.
    fn preflight(&self, _job: &Job) -> Result<()> {
        Ok(())
    }

    fn build(
        &self,
        opts: &BuildOptions,
        work: &Dir,
        manifest: ManifestWriter,
        base: Option<LinkBase>,
        progress: Progress,
    ) -> Result<BuildResult> {
        let conn = (self.connect)()?;
        let popts = PullOptions {
            host: self.host,
            sources: opts.sources,
            excludes: opts.exclude_patterns,
            exclude_by: opts.exclude_by,
            one_file_system: opts.one_file_system,
            devices: self.devices,
            cancel: opts.cancel,
            method: opts.method,
        };
        pull::build(conn, &popts, work, manifest, base, progress)
    }

    fn nixos_system(&self) -> Option<PathBuf> {
        None
    }
}

/// What the job's validation cannot see without the filesystem, checked before anything is
/// written (a `config` error: exit 2): a source that is the destination or lies inside it
/// by another spelling (a symlink, a bind mount), compared by device and inode; and excludes
/// that match every source. Sources that do not exist are left to the preflight.
pub fn check_sources(job: &Job) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let dest = id(&job.store.destination.path);
    let excludes = crate::source::exclude::ExcludeSet::new(&job.sources.exclude_patterns)
        .map_err(|e| Error::config("excludePatterns", e.to_string()))?;
    let mut all_excluded = true;
    for (i, s) in job.sources.paths.iter().enumerate() {
        let Ok(md) = std::fs::symlink_metadata(s) else {
            all_excluded = false;
            continue;
        };
        all_excluded &= excludes.is_excluded(s, md.is_dir());
        // A symlink as a source is stored as a symlink, never followed.
        if !md.is_dir() || dest.is_none() {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(s) else { continue };
        if let Some(a) = real.ancestors().find(|a| id(a) == dest) {
            return Err(Error::config(
                format!("sources[{i}]"),
                format!(
                    "{} ({}) lies inside the destination {} ({}); a snapshot would hold the snapshots",
                    s.display(),
                    real.display(),
                    job.store.destination.path.display(),
                    a.display()
                ),
            ));
        }
    }
    if all_excluded {
        return Err(crate::plan::excludes_everything(&job.sources.paths));
    }
    Ok(())
}
