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

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::remote::pull::{self, PullOptions};
use crate::remote::ssh::Connection;
use crate::snapshot::{self, BuildOptions, BuildResult, LinkBase, Progress};

/// A source of snapshot entries.
pub trait Source {
    /// Checks what can be checked before anything is written.
    fn preflight(&self, plan: &Plan) -> Result<()>;

    /// Builds the tree of `opts.sources` into `work` and its manifest into `manifest`.
    fn build(
        &self,
        opts: &BuildOptions,
        work: &Path,
        manifest: &Path,
        base: Option<LinkBase>,
        progress: Progress,
    ) -> Result<BuildResult>;

    /// The NixOS system of the machine the entries come from, when known.
    fn nixos_system(&self) -> Option<PathBuf>;
}

/// This machine's filesystem.
pub struct LocalFs;

impl Source for LocalFs {
    fn preflight(&self, plan: &Plan) -> Result<()> {
        for s in &plan.sources {
            if let Err(e) = std::fs::symlink_metadata(s) {
                return Err(Error::Preflight(format!("source {} cannot be read: {e}", s.display())));
            }
        }
        Ok(())
    }

    fn build(
        &self,
        opts: &BuildOptions,
        work: &Path,
        manifest: &Path,
        base: Option<LinkBase>,
        progress: Progress,
    ) -> Result<BuildResult> {
        snapshot::build(opts, work, manifest, base, progress)
    }

    fn nixos_system(&self) -> Option<PathBuf> {
        crate::meta::nixos_system()
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
    fn preflight(&self, _plan: &Plan) -> Result<()> {
        Ok(())
    }

    fn build(
        &self,
        opts: &BuildOptions,
        work: &Path,
        manifest: &Path,
        base: Option<LinkBase>,
        progress: Progress,
    ) -> Result<BuildResult> {
        let conn = (self.connect)()?;
        let popts = PullOptions {
            host: self.host,
            sources: opts.sources,
            excludes: opts.exclude_patterns,
            one_file_system: opts.one_file_system,
            devices: self.devices,
            cancel: opts.cancel,
        };
        pull::build(conn, &popts, work, manifest, base, progress)
    }

    fn nixos_system(&self) -> Option<PathBuf> {
        None
    }
}
