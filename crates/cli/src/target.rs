//! Resolving which plan and host directory a command works on.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hwc_backup_engine::job::{Job, Store};
use hwc_backup_engine::plan::Plan;
use hwc_backup_engine::store::layout::HostDir;

use crate::args::Target;

/// Where the NixOS module puts the plan.
pub const DEFAULT_CONFIG: &str = "/etc/hwc-backup/config.json";

/// The job, if a plan is used, and the host directory.
pub struct Resolved {
    /// The plan's job for the host (absent with `--dest`): a pulled host's with `--host NAME`
    /// of the plan's `hosts`, else this machine's.
    pub job: Option<Job>,
    /// The job's store, or with `--dest` one built from the arguments (built-in rules).
    pub store: Store,
    /// The host directory.
    pub host: HostDir,
    /// The host name.
    pub host_name: String,
    /// Where state between runs lives.
    pub state_dir: PathBuf,
}

impl Target {
    /// `--host NAME`, when given, must be a plain directory name: never `/`, `..` or empty.
    pub fn check_host(&self) -> Result<()> {
        if let Some(h) = &self.host {
            hwc_backup_engine::plan::check_host_name("--host", h)?;
        }
        Ok(())
    }

    /// `--dest` wins over a plan; without either, the default plan must exist.
    pub fn resolve(&self) -> Result<Resolved> {
        self.check_host()?;
        if let Some(dest) = &self.dest {
            let host_name = self.host.clone().unwrap_or_else(hwc_backup_engine::fs::fsutil::hostname);
            hwc_backup_engine::plan::check_host_name("--host", &host_name)?;
            let host = HostDir::open(&dest.join(&host_name))?;
            let state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
            let dest = host.root().parent().unwrap_or(std::path::Path::new("/")).to_path_buf();
            return Ok(Resolved {
                job: None,
                store: Store::ad_hoc(host_name.clone(), dest, state_dir.clone()),
                host,
                host_name,
                state_dir,
            });
        }
        let plan = self.load_plan("or --dest DIR [--host NAME] to work on a destination without one")?;
        let host_name = self.host.clone().unwrap_or_else(|| plan.host.clone());
        // A host this machine pulls has its own sources, retention and records: `prune --host
        // web1` keeps what web1's rules keep, `health --host web1` checks web1's snapshots.
        let job = if host_name != plan.host && plan.hosts.contains_key(&host_name) {
            plan.pulled_job(&host_name)?
        } else {
            plan.local_job()
        };
        Ok(Resolved {
            host: HostDir::open(&plan.destination.path.join(&host_name))?,
            host_name,
            state_dir: plan.state_dir.clone(),
            store: job.store.clone(),
            job: Some(job),
        })
    }

    /// The plan from `--config` or the default location. `instead` completes the hint when
    /// there is none ("or --dest DIR …", in the options of the command at hand).
    pub fn load_plan(&self, instead: &str) -> Result<Plan> {
        self.check_host()?;
        let path = self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        if self.config.is_none() && !path.exists() {
            let instead = if instead.is_empty() { String::new() } else { format!(", {instead}") };
            bail!(hwc_backup_engine::Error::config(
                "--config",
                format!("no plan at {DEFAULT_CONFIG}; pass --config FILE{instead}")
            ));
        }
        Plan::load(&path).with_context(|| format!("plan {}", path.display()))
    }
}

/// State directory for runs without a plan.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/hwc-backup")
}
