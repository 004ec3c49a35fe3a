//! `agent`: the client side of a pull, started by ssh.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hwc_backup_engine::source::remote::agent::{self, AgentConfig};
use hwc_backup_engine::Error;
use serde::Deserialize;

use crate::args::AgentArgs;
use crate::exit::Exit;

/// The agent's configuration file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AgentFile {
    #[serde(default)]
    allow: Vec<PathBuf>,
    #[serde(default)]
    exclude_patterns: Vec<String>,
}

/// `agent`: serves one pull on stdin/stdout. Nothing else may write to stdout.
pub fn agent(a: AgentArgs) -> Result<Exit> {
    let mut config = AgentConfig { allow: a.allow.clone(), excludes: a.excludes.clone() };
    if let Some(path) = &a.config {
        let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: AgentFile =
            serde_json::from_slice(&text).map_err(|e| Error::config(path.display().to_string(), e.to_string()))?;
        config.allow.extend(file.allow);
        config.excludes.extend(file.exclude_patterns);
    }
    for (i, p) in config.allow.iter().enumerate() {
        if !p.is_absolute() {
            bail!(Error::config(
                format!("--allow[{i}]"),
                format!("{:?} is not an absolute path", p.display().to_string())
            ));
        }
    }
    // Raw descriptors: std's stdout is line-buffered, which would flush on every newline byte
    // of file content.
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    agent::serve(&config, stdin, stdout)?;
    Ok(Exit::Success)
}
