//! Every exit code in one place, decided by a run's state and an error's kind — never by the
//! wording of a message.

use hwc_backup_engine::run::RunReport;
use hwc_backup_engine::store::meta::RunState;
use hwc_backup_engine::ErrorKind;

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
    /// Another run holds the lock; nothing was done. Not a failure: the run is skipped.
    Locked = 4,
}

impl Exit {
    /// The exit code for a run's final state.
    pub fn from_state(s: RunState) -> Exit {
        match s {
            RunState::Success => Exit::Success,
            RunState::Partial => Exit::Partial,
            RunState::Failed => Exit::Failed,
            RunState::Skipped => Exit::Locked,
        }
    }

    /// The exit code for an error of kind `k`.
    pub fn from_kind(k: ErrorKind) -> Exit {
        match k {
            ErrorKind::Config => Exit::Usage,
            ErrorKind::Locked => Exit::Locked,
            _ => Exit::Failed,
        }
    }

    /// The exit code for a run's report. Only `locked` has its own code: any other error
    /// inside a run fails it (1), even one of kind `config` (found by a check that needs the
    /// run, such as a database user that does not exist): 2 means nothing was attempted.
    pub fn from_report(r: &RunReport) -> Exit {
        match r.error_kind {
            Some(ErrorKind::Locked) => Exit::Locked,
            _ => Exit::from_state(r.state),
        }
    }

    /// The exit code for an error outside a run (an engine error, possibly with context).
    pub fn from_error(e: &anyhow::Error) -> Exit {
        e.downcast_ref::<hwc_backup_engine::Error>().map_or(Exit::Failed, |e| Exit::from_kind(e.kind()))
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use hwc_backup_engine::Error;

    #[test]
    fn every_kind_has_its_exit_code() {
        for k in ErrorKind::ALL {
            let want = match k {
                ErrorKind::Locked => 4,
                ErrorKind::Config => 2,
                _ => 1,
            };
            assert_eq!(Exit::from_kind(k) as u8, want, "{k:?}");
        }
    }

    #[test]
    fn errors_map_by_kind_through_context() {
        let locked = Error::Locked { path: "/d/h/.lock".into(), holder: "pid 1".into() };
        let e = Err::<(), _>(locked).context("while doing something").unwrap_err();
        assert_eq!(Exit::from_error(&e), Exit::Locked);
        assert_eq!(Exit::from_error(&anyhow::Error::new(Error::config("x", "y"))), Exit::Usage);
        assert_eq!(Exit::from_error(&anyhow::Error::new(Error::Guard("g".into()))), Exit::Failed);
        assert_eq!(Exit::from_error(&anyhow::anyhow!("is locked by another run")), Exit::Failed);
    }

    #[test]
    fn reports_map_by_state_and_kind() {
        let plan = hwc_backup_engine::plan::Plan::ad_hoc(
            "h".into(),
            vec!["/tmp".into()],
            "/nonexistent-hwc-exit".into(),
            vec![],
        );
        let mut r = hwc_backup_engine::run::run(&plan, &hwc_backup_engine::run::RunOptions::for_plan(&plan), &|_| {});
        assert_eq!((r.state, r.error_kind), (RunState::Failed, Some(ErrorKind::Preflight)));
        assert_eq!(Exit::from_report(&r), Exit::Failed);
        // The wording is irrelevant: only the kind counts.
        r.error = Some("is locked by another run".into());
        assert_eq!(Exit::from_report(&r), Exit::Failed);
        r.state = RunState::Skipped;
        r.error_kind = Some(ErrorKind::Locked);
        r.error = Some("reworded".into());
        assert_eq!(Exit::from_report(&r), Exit::Locked);
        r.state = RunState::Failed;
        r.error_kind = Some(ErrorKind::Config);
        assert_eq!(Exit::from_report(&r), Exit::Failed, "a run was attempted: not a usage error");
        for (state, code) in [(RunState::Success, 0), (RunState::Partial, 3)] {
            r.state = state;
            r.error_kind = None;
            assert_eq!(Exit::from_report(&r) as u8, code);
        }
    }
}
