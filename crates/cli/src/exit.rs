//! Every exit code in one place.

use hwc_backup_engine::meta::RunState;

/// How the process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// The work failed (nothing published, a verify error, a refused restore …).
    Failed = 1,
    /// Bad usage or a bad plan: nothing was attempted.
    Usage = 2,
    /// Published with warnings.
    Partial = 3,
    /// Another run holds the lock; nothing was done.
    Locked = 4,
}

impl Exit {
    /// The exit code for a run's final state.
    pub fn from_state(s: RunState) -> Exit {
        match s {
            RunState::Success => Exit::Success,
            RunState::Partial => Exit::Partial,
            RunState::Failed => Exit::Failed,
        }
    }

    /// The exit code for an engine error outside a run.
    pub fn from_error(e: &anyhow::Error) -> Exit {
        match e.downcast_ref::<hwc_backup_engine::Error>() {
            Some(hwc_backup_engine::Error::Config { .. }) => Exit::Usage,
            Some(hwc_backup_engine::Error::Locked { .. }) => Exit::Locked,
            _ => Exit::Failed,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
