//! One file per subcommand: each calls the engine and prints, for people or as JSON.

mod agent;
pub(crate) mod cloud;
mod config;
mod health;
mod notify_failure;
mod now;
mod prune;
mod pull;
mod repair;
mod restore;
pub(crate) mod status;
mod verify;

use std::io::Write;

use anyhow::Result;
use jiff::Zoned;

use crate::args::{Command, ConfigCommand};
use crate::exit::Exit;

pub(crate) use now::{create_dest, print_run};

/// Runs a subcommand.
pub fn run(cmd: Command) -> Result<Exit> {
    match cmd {
        Command::Now(a) => now::now(a),
        Command::Status(a) => status::status(a),
        Command::Restore(a) => restore::restore_cmd(a),
        Command::Verify(a) => verify::verify_cmd(a),
        Command::Prune(a) => prune::prune_cmd(a),
        Command::Repair(a) => repair::repair_cmd(a),
        Command::Config { command: ConfigCommand::Check { file } } => config::config_check(&file),
        Command::Cloud(a) => cloud::cloud(a),
        Command::Health(a) => health::health(a),
        Command::NotifyFailure(a) => notify_failure::notify_failure(a),
        Command::Pull(a) => pull::pull(a),
        Command::Agent(a) => agent::agent(a),
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Parses a `--now` testing clock, keeping the offset the user wrote: it is what the
/// snapshot records and what retention reads its calendar fields in.
pub(crate) fn parse_now(text: &Option<String>) -> Result<Option<Zoned>> {
    let Some(t) = text else { return Ok(None) };
    let bad = |e: jiff::Error| {
        hwc_backup_engine::Error::config(
            "--now",
            format!("{t:?} is not an RFC 3339 time like 2025-01-15T02:00:00+01:00: {e}"),
        )
    };
    let ts: jiff::Timestamp = t.parse().map_err(bad)?;
    let pieces = jiff::fmt::temporal::Pieces::parse(t.as_str()).map_err(bad)?;
    let offset = match pieces.offset() {
        Some(jiff::fmt::temporal::PiecesOffset::Numeric(n)) => n.offset(),
        _ => jiff::tz::Offset::UTC,
    };
    Ok(Some(ts.to_zoned(jiff::tz::TimeZone::fixed(offset))))
}
