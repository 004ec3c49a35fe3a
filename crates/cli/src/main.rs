//! The `hwc-backup` binary: parses arguments, calls the engine, prints, exits.

#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod args;
mod commands;
mod exit;
mod ops;
mod progress;
mod target;

use std::process::ExitCode;

use clap::Parser;

use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse_from(args::args_with_argv0_alias()) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { Exit::Usage } else { Exit::Success };
            let _ = e.print();
            return code.into();
        }
    };
    init_logging(cli.verbose);
    commands::VERBOSE.store(cli.verbose, std::sync::atomic::Ordering::Relaxed);
    raise_open_file_limit();
    match commands::run(cli.command) {
        Ok(code) => code.into(),
        Err(e) => {
            // A closed pipe (`hwc-backup status | head`) is not an error worth a message.
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
                return Exit::Success.into();
            }
            eprintln!("hwc-backup: error: {}", error_chain(&e));
            Exit::from_error(&e).into()
        }
    }
}

/// The error and its causes, `: `-separated, without a cause the message before it already
/// ends with (the engine's I/O errors name their OS error in their own text and keep it as
/// their source too: "…: Permission denied (os error 13)" once, not twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Raises the soft limit of open files to the hard limit, as Go's runtime does for every
/// program: the walk keeps a few descriptors per directory waiting for the writer, and a
/// shell's or a unit's soft limit of 1024 would make it wait needlessly. Best effort.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HWC_BACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
