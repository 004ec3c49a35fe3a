//! `config check`: validate a plan.

use std::path::Path;

use anyhow::{Context, Result};
use hwc_backup_engine::plan::Plan;

use crate::exit::Exit;

pub(crate) fn config_check(file: &Path) -> Result<Exit> {
    let plan = Plan::load(file).with_context(|| format!("plan {}", file.display()))?;
    println!(
        "{}: valid plan version {} for host {} ({} sources)",
        file.display(),
        plan.version,
        plan.host,
        plan.sources.len()
    );
    Ok(Exit::Success)
}
