//! Services held still for the instant of the filesystem snapshots (`quiesce`).
//!
//! Before the snapshots, each listed unit that is active is stopped (`systemctl stop`) or
//! frozen (`systemctl freeze`, the cgroup freezer); right after the snapshots exist it is
//! started or thawed again, in reverse order. Without a filesystem snapshot the units stay
//! held for the whole walk (the run says so).
//!
//! They are always started again:
//! - on every return path and on a panic, by [`Held`]'s drop;
//! - after a `kill -9` of the runner, by a transient systemd timer armed *before* the first
//!   unit is touched (`systemd-run --on-active=…`, unit `hwc-backup-unquiesce-<id>-start` /
//!   `-thaw`, `<id>` the unit's `$INVOCATION_ID`, else the runner's pid), which starts or thaws
//!   them when it fires; the runner stops it once it has restarted them itself. If it cannot be
//!   armed, nothing is stopped and the run fails. The module's units start that timer's service
//!   at once from their `ExecStopPost=` when the run did not succeed, so a killed run's services
//!   are back within seconds, not when the timer fires.
//!
//! Every `systemctl` call has a hard timeout ([`CALL_TIMEOUT`]); a unit that does not stop
//! in time fails the run, and what was already held is released.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{Quiesce, QuiesceMode};

/// The longest one `systemctl` call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a unit may stay held before the safety timer releases it: with filesystem
/// snapshots only the instant of taking them; without, the whole walk.
pub fn safety_delay(with_snapshots: bool) -> Duration {
    match with_snapshots {
        true => Duration::from_secs(10 * 60),
        false => Duration::from_secs(24 * 3600),
    }
}

/// What one unit went through, for meta.json and the report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeldUnit {
    /// The unit.
    pub unit: String,
    /// `stop` or `freeze`.
    pub mode: QuiesceMode,
    /// How long it was stopped or frozen, in milliseconds; `None` when it was not active (left
    /// alone).
    pub down_ms: Option<u64>,
    /// Whether it was held for the whole walk (no filesystem snapshot), not just the instant.
    #[serde(default)]
    pub whole_walk: bool,
}

/// Units held now; released (started, thawed) on [`Held::release`] or drop.
pub struct Held {
    held: Vec<(Quiesce, Instant)>,
    report: Vec<HeldUnit>,
    timers: Vec<String>,
    whole_walk: bool,
}

/// Runs `systemctl ARGS` with the hard timeout; `Ok(true)` when it exited 0.
fn systemctl(args: &[&str]) -> Result<bool> {
    run_with_timeout("systemctl", args)
}

fn run_with_timeout(program: &str, args: &[&str]) -> Result<bool> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command { what: "quiesce".into(), message: format!("cannot run {what}: {e}") })?;
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        if let Some(status) =
            child.try_wait().map_err(|e| Error::Command { what: "quiesce".into(), message: format!("{what}: {e}") })?
        {
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                tracing::debug!("{what} exited with {status}: {}", err.trim());
            }
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Command {
                what: "quiesce".into(),
                message: format!("{what} did not finish within {}s", CALL_TIMEOUT.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What names this run's safety timers: the unit's invocation id (which its `ExecStopPost=`
/// knows too), else the process id.
fn run_id() -> String {
    match std::env::var("INVOCATION_ID") {
        Ok(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) => id,
        _ => std::process::id().to_string(),
    }
}

impl Held {
    /// Arms the safety timers, then stops or freezes every active unit of `units`, in order.
    /// On an error, whatever was held is released before returning.
    pub fn hold(units: &[Quiesce], with_snapshots: bool) -> Result<Held> {
        let mut held = Held { held: Vec::new(), report: Vec::new(), timers: Vec::new(), whole_walk: !with_snapshots };
        if units.is_empty() {
            return Ok(held);
        }
        // A systemctl that cannot be run is an error, not "every unit is inactive".
        let mut active: Vec<&Quiesce> = Vec::new();
        for q in units {
            if systemctl(&["is-active", "--quiet", &q.unit])? {
                active.push(q);
            } else {
                held.report.push(HeldUnit { unit: q.unit.clone(), mode: q.mode, down_ms: None, whole_walk: false });
            }
        }
        let delay = safety_delay(with_snapshots).as_secs().to_string();
        // The transient unit runs systemctl by its absolute path: a bare name would be looked up
        // in the service manager's own search path, which on NixOS holds no systemctl.
        let systemctl_path = crate::ops::notify::find_program("systemctl", &["/run/current-system/sw/bin/systemctl"])
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "systemctl".into());
        for (mode, verb) in [(QuiesceMode::Stop, "start"), (QuiesceMode::Freeze, "thaw")] {
            let names: Vec<&str> = active.iter().filter(|q| q.mode == mode).map(|q| q.unit.as_str()).collect();
            if names.is_empty() {
                continue;
            }
            let timer = format!("hwc-backup-unquiesce-{}-{verb}", run_id());
            let on_active = format!("--on-active={delay}");
            let unit_arg = format!("--unit={timer}");
            let mut args = vec![
                unit_arg.as_str(),
                on_active.as_str(),
                "--timer-property=AccuracySec=1s",
                "--description=hwc-backup: release the services a backup run held",
                "--",
                systemctl_path.as_str(),
                verb,
            ];
            args.extend(names);
            if !run_with_timeout("systemd-run", &args)? {
                return Err(Error::Command {
                    what: "quiesce".into(),
                    message: format!(
                        "cannot arm the safety timer {timer} that restarts the quiesced services if this run dies; \
                         nothing was stopped"
                    ),
                });
            }
            held.timers.push(timer);
        }
        for q in active {
            let verb = match q.mode {
                QuiesceMode::Stop => "stop",
                QuiesceMode::Freeze => "freeze",
            };
            let at = Instant::now();
            // Counted as held before the call: a stop that fails half-way is started again.
            held.held.push((q.clone(), at));
            if !systemctl(&[verb, &q.unit])? {
                return Err(Error::Command {
                    what: "quiesce".into(),
                    message: format!("systemctl {verb} {} failed; the services held so far are released", q.unit),
                });
            }
        }
        Ok(held)
    }

    /// Whether any unit is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Marks the units as held for the whole walk (no snapshot could be taken after all).
    pub fn for_whole_walk(mut self) -> Held {
        self.whole_walk = true;
        self
    }

    /// Starts or thaws every held unit, last first, then disarms the safety timers. Returns what
    /// each unit went through; the first failure to restart is an error (the others are still
    /// tried, and the safety timers stay armed).
    pub fn release(mut self) -> Result<Vec<HeldUnit>> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<Vec<HeldUnit>> {
        let mut first_err = None;
        while let Some((q, at)) = self.held.pop() {
            let verb = match q.mode {
                QuiesceMode::Stop => "start",
                QuiesceMode::Freeze => "thaw",
            };
            match systemctl(&[verb, &q.unit]) {
                Ok(true) => {}
                Ok(false) => {
                    first_err.get_or_insert(Error::Command {
                        what: "quiesce".into(),
                        message: format!("systemctl {verb} {} failed after the snapshot", q.unit),
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            let down = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.report.push(HeldUnit { unit: q.unit, mode: q.mode, down_ms: Some(down), whole_walk: self.whole_walk });
        }
        if first_err.is_none() {
            for t in std::mem::take(&mut self.timers) {
                let _ = systemctl(&["stop", &format!("{t}.timer")]);
            }
        }
        self.report.sort_by(|a, b| a.unit.cmp(&b.unit));
        match first_err {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.report)),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.held.is_empty() {
            // Nothing held (or all released): no timer must stay armed.
            for t in std::mem::take(&mut self.timers) {
                let _ = systemctl(&["stop", &format!("{t}.timer")]);
            }
            return;
        }
        if let Err(e) = self.release_inner() {
            tracing::warn!("{e}");
        }
    }
}
