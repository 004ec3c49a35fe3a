//! The engine's one error type.
//!
//! Every variant that concerns a file carries the path, and every variant that wraps an I/O
//! failure carries the operation, so a message such as "cannot create hard link
//! /mnt/backup/laptop/.incomplete/…/notes.txt: Too many links" needs no further context.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed on a path.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("read directory", "create hard link" …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: io::Error,
    },
    /// The plan (configuration) is malformed or holds an invalid value.
    #[error("invalid configuration: {field}: {message}")]
    Config {
        /// The field, as a JSON path (`retention.daily`).
        field: String,
        /// What is wrong with it, naming the value.
        message: String,
    },
    /// A check before the run refused to start it; nothing was written.
    #[error("preflight: {0}")]
    Preflight(String),
    /// Another process holds the lock of this host directory.
    #[error("{} is locked by another run ({holder})", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into the lock file.
        holder: String,
    },
    /// A snapshot name that matches nothing (or more than one snapshot).
    #[error("snapshot {name:?}: {message}")]
    Snapshot {
        /// The name as given.
        name: String,
        /// Why it cannot be used.
        message: String,
    },
    /// A guard stopped the run to protect the existing backups.
    #[error("refused: {0}")]
    Guard(String),
    /// A restore would overwrite existing files.
    #[error("{} exists; use --force to overwrite", path.display())]
    WouldOverwrite {
        /// The first existing path found.
        path: PathBuf,
    },
    /// The build stopped because another part of it failed; that failure is the one to
    /// report, and this variant never replaces it.
    #[error("the run was cancelled")]
    Cancelled,
    /// A hook or helper program failed.
    #[error("{what} failed: {message}")]
    Command {
        /// Which command ("preBackup hook", "rclone" …).
        what: String,
        /// Exit status and the tail of its output.
        message: String,
    },
    /// Pulling from a remote host failed: the connection, the agent, or the protocol.
    #[error("host {host}: {message}")]
    Remote {
        /// The host's name in the plan.
        host: String,
        /// What went wrong, with what ssh and the agent said.
        message: String,
    },
    /// The pull agent stopped: the server's request was refused, or the connection failed.
    #[error("agent: {0}")]
    Agent(String),
    /// Metadata on disk could not be parsed.
    #[error("cannot parse {}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Something in the backup destination is not what the layout says it is (a symlink
    /// where a directory of ours belongs, a hard-linked lock file …); nothing was followed.
    #[error("{}: {message}", path.display())]
    Unsafe {
        /// The entry.
        path: PathBuf,
        /// What it is and what was expected.
        message: String,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is, for decisions: the CLI's exit code, whether a run
/// counts as failed or skipped, what a notification suggests. Never recover any of this from
/// an error's message: the wording may change, the kind may not.
///
/// Serialized (in `--json` output, `last-run.json` and the JSON logs) as the camelCase name:
/// `locked`, `preflight`, `noSpace` …
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Another run holds the host's lock; nothing was done ([`Error::Locked`]).
    Locked,
    /// A check before the run refused to start it ([`Error::Preflight`]).
    Preflight,
    /// A guard refused to publish, to protect the existing backups ([`Error::Guard`]).
    Guard,
    /// The destination is full or over quota (an [`Error::Io`] with `ENOSPC`/`EDQUOT`).
    NoSpace,
    /// The run was stopped because another part of it failed ([`Error::Cancelled`]).
    Cancelled,
    /// The plan or an argument is invalid ([`Error::Config`]).
    Config,
    /// Any other filesystem failure ([`Error::Io`]).
    Io,
    /// A pulled host, its agent or the protocol failed ([`Error::Remote`], [`Error::Agent`]).
    Remote,
    /// A hook or helper program failed ([`Error::Command`]).
    Command,
    /// A snapshot name that matches nothing, or several ([`Error::Snapshot`]).
    Snapshot,
    /// A restore would overwrite existing files ([`Error::WouldOverwrite`]).
    WouldOverwrite,
    /// Metadata on disk cannot be parsed ([`Error::Format`]).
    Format,
    /// Something in the destination is not what the layout says, e.g. a planted symlink
    /// ([`Error::Unsafe`]); nothing was followed.
    Unsafe,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::Locked,
        ErrorKind::Preflight,
        ErrorKind::Guard,
        ErrorKind::NoSpace,
        ErrorKind::Cancelled,
        ErrorKind::Config,
        ErrorKind::Io,
        ErrorKind::Remote,
        ErrorKind::Command,
        ErrorKind::Snapshot,
        ErrorKind::WouldOverwrite,
        ErrorKind::Format,
        ErrorKind::Unsafe,
    ];

    /// The name used in JSON (`noSpace`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Locked => "locked",
            ErrorKind::Preflight => "preflight",
            ErrorKind::Guard => "guard",
            ErrorKind::NoSpace => "noSpace",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
            ErrorKind::Remote => "remote",
            ErrorKind::Command => "command",
            ErrorKind::Snapshot => "snapshot",
            ErrorKind::WouldOverwrite => "wouldOverwrite",
            ErrorKind::Format => "format",
            ErrorKind::Unsafe => "unsafe",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Wraps an I/O error with the operation and the path.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Error {
        Error::Io { op, path: path.as_ref().to_path_buf(), source }
    }

    /// Builds a configuration error for `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Config { field: field.into(), message: message.into() }
    }

    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } if self.is_no_space() => ErrorKind::NoSpace,
            Error::Io { .. } => ErrorKind::Io,
            Error::Config { .. } => ErrorKind::Config,
            Error::Preflight(_) => ErrorKind::Preflight,
            Error::Locked { .. } => ErrorKind::Locked,
            Error::Snapshot { .. } => ErrorKind::Snapshot,
            Error::Guard(_) => ErrorKind::Guard,
            Error::WouldOverwrite { .. } => ErrorKind::WouldOverwrite,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Command { .. } => ErrorKind::Command,
            Error::Remote { .. } | Error::Agent(_) => ErrorKind::Remote,
            Error::Format { .. } => ErrorKind::Format,
            Error::Unsafe { .. } => ErrorKind::Unsafe,
        }
    }

    /// Whether another run holds the lock (the run was skipped, not failed).
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Locked { .. })
    }

    /// The underlying I/O error, if this is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether this only says that the build was stopped (see [`Error::Cancelled`]).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    /// Whether this is "no space left on device" (or over quota).
    pub fn is_no_space(&self) -> bool {
        self.io_error().and_then(io::Error::raw_os_error).is_some_and(|e| {
            e == rustix::io::Errno::NOSPC.raw_os_error() || e == rustix::io::Errno::DQUOT.raw_os_error()
        })
    }
}

/// Extension to attach an operation and path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_kind() {
        let enospc = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let cases = [
            (Error::io("write", "/x", enospc), ErrorKind::NoSpace),
            (Error::io("write", "/x", io::ErrorKind::PermissionDenied.into()), ErrorKind::Io),
            (Error::config("a", "b"), ErrorKind::Config),
            (Error::Preflight("p".into()), ErrorKind::Preflight),
            (Error::Locked { path: "/l".into(), holder: "h".into() }, ErrorKind::Locked),
            (Error::Snapshot { name: "n".into(), message: "m".into() }, ErrorKind::Snapshot),
            (Error::Guard("g".into()), ErrorKind::Guard),
            (Error::WouldOverwrite { path: "/w".into() }, ErrorKind::WouldOverwrite),
            (Error::Cancelled, ErrorKind::Cancelled),
            (Error::Command { what: "w".into(), message: "m".into() }, ErrorKind::Command),
            (Error::Remote { host: "h".into(), message: "m".into() }, ErrorKind::Remote),
            (Error::Agent("a".into()), ErrorKind::Remote),
            (Error::Format { path: "/f".into(), message: "m".into() }, ErrorKind::Format),
        ];
        for (e, k) in cases {
            assert_eq!(e.kind(), k, "{e}");
            assert_eq!(e.is_locked(), k == ErrorKind::Locked);
        }
    }

    #[test]
    fn kinds_serialize_as_their_names() {
        for k in ErrorKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str(), "{k:?}");
            assert_eq!(serde_json::from_value::<ErrorKind>(k.as_str().into()).unwrap(), k);
        }
    }
}
