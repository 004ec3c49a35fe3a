//! One file per subcommand: each calls the engine and prints, for people or as JSON.

mod agent;
pub(crate) mod cloud;
mod config;
mod diff;
mod du;
mod find;
mod health;
mod notify_failure;
mod now;
mod offsite;
mod pin;
mod prune;
mod pull;
mod repair;
mod restore;
pub(crate) mod status;
mod verify;
mod versions;

use std::io::Write;

use anyhow::Result;
use jiff::Zoned;

use crate::args::{Command, ConfigCommand};
use crate::exit::Exit;

pub(crate) use now::{create_dest, print_run};
pub(crate) use offsite::print_offsite;

/// `-v`/`-vv` as given (0 without), for the commands that print more with it.
pub(crate) static VERBOSE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Runs a subcommand.
pub fn run(cmd: Command) -> Result<Exit> {
    match cmd {
        Command::Now(a) => now::now(a),
        Command::Status(a) => status::status(a),
        Command::Restore(a) if a.offsite.is_some() || a.repo.repository.is_some() => offsite::restore_offsite(a),
        Command::Restore(a) => restore::restore_cmd(a),
        Command::Verify(a) if a.offsite.is_some() || a.repo.repository.is_some() => offsite::verify_offsite(a),
        Command::Verify(a) => verify::verify_cmd(a),
        Command::Prune(a) => prune::prune_cmd(a),
        Command::Repair(a) => repair::repair_cmd(a),
        Command::Config { command: ConfigCommand::Check { file } } => config::config_check(&file),
        Command::Cloud(a) => cloud::cloud(a),
        Command::Offsite(a) => offsite::offsite(a),
        Command::Health(a) => health::health(a),
        Command::NotifyFailure(a) => notify_failure::notify_failure(a),
        Command::Pull(a) => pull::pull(a),
        Command::Agent(a) => agent::agent(a),
        Command::Diff(a) => diff::diff_cmd(a),
        Command::Find(a) => find::find_cmd(a),
        Command::Versions(a) => versions::versions_cmd(a),
        Command::Du(a) => du::du_cmd(a),
        Command::Pin(a) => pin::pin_cmd(a),
        Command::Unpin(a) => pin::unpin_cmd(a),
    }
}

/// Checks `--exclude-if-present` and `--exclude-larger-than`, naming the option at fault.
pub(crate) fn exclude_by_args(a: &crate::args::ExcludeByArgs) -> Result<()> {
    use hwc_backup_engine::source::markers::{parse_size, ExcludeBy};
    if let Some(s) = &a.exclude_larger_than {
        parse_size(s).map_err(|m| hwc_backup_engine::Error::config("--exclude-larger-than", m))?;
    }
    ExcludeBy::new(a.exclude_caches, &a.exclude_if_present, a.exclude_larger_than.as_deref())
        .map_err(|m| hwc_backup_engine::Error::config("--exclude-if-present", m))?;
    Ok(())
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
