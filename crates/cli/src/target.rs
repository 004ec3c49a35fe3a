//! Resolving which plan and host directory a command works on.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hwc_backup_engine::layout::HostDir;
use hwc_backup_engine::plan::Plan;

use crate::args::Target;

/// Where the NixOS module puts the plan.
pub const DEFAULT_CONFIG: &str = "/etc/hwc-backup/config.json";

/// A plan, if one is used, and the host directory.
pub struct Resolved {
    /// The plan (absent with `--dest`).
    pub plan: Option<Plan>,
    /// The host directory.
    pub host: HostDir,
    /// The host name.
    pub host_name: String,
    /// Where state between runs lives.
    pub state_dir: PathBuf,
}

impl Target {
    /// `--dest` wins over a plan; without either, the default plan must exist.
    pub fn resolve(&self) -> Result<Resolved> {
        if let Some(dest) = &self.dest {
            let host_name = self.host.clone().unwrap_or_else(hwc_backup_engine::fsutil::hostname);
            return Ok(Resolved {
                plan: None,
                host: HostDir::open(&dest.join(&host_name))?,
                host_name,
                state_dir: self.state_dir.clone().unwrap_or_else(default_state_dir),
            });
        }
        let plan = self.load_plan()?;
        let host_name = self.host.clone().unwrap_or_else(|| plan.host.clone());
        // A host this machine pulls has its own sources, retention and records: `prune --host
        // web1` keeps what web1's rules keep, `health --host web1` checks web1's snapshots.
        let plan = if host_name != plan.host && plan.hosts.contains_key(&host_name) {
            plan.for_host(&host_name)?.0
        } else {
            plan
        };
        Ok(Resolved {
            host: HostDir::open(&plan.destination.path.join(&host_name))?,
            host_name,
            state_dir: plan.state_dir.clone(),
            plan: Some(plan),
        })
    }

    /// The plan from `--config` or the default location.
    pub fn load_plan(&self) -> Result<Plan> {
        let path = self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        if self.config.is_none() && !path.exists() {
            bail!(hwc_backup_engine::Error::config(
                "--config",
                format!(
                    "no plan at {DEFAULT_CONFIG}; pass --config FILE, or --source PATH --dest DIR to run without one"
                )
            ));
        }
        Plan::load(&path).with_context(|| format!("plan {}", path.display()))
    }
}

/// State directory for runs without a plan.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/hwc-backup")
}
