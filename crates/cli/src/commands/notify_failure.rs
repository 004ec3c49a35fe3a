//! `notify-failure`: systemd's `OnFailure=` for every backup unit.

use anyhow::Result;
use hwc_backup_engine::ops::notify;
use hwc_backup_engine::ops::{self, Live, Systemd};
use hwc_backup_engine::plan::Plan;

use super::print_json;
use crate::args::NotifyFailureArgs;
use crate::exit::Exit;
use crate::ops::warn;

/// `hwc-backup notify-failure --unit UNIT`: for systemd's `OnFailure=`, so that a runner the
/// OOM killer or a timeout ended still notifies. A failure the run itself notified within
/// the last ten minutes is not sent twice.
pub fn notify_failure(a: NotifyFailureArgs) -> Result<Exit> {
    let plan = a.target.load_plan("")?;
    // A pull's unit: its records and its message are the pulled host's.
    let job = match pulled_host_of_unit(&plan, &a.unit) {
        Some(name) => plan.pulled_job(&name)?,
        None => plan.local_job(),
    };
    let journal = journal_tail(&a.unit);
    let r = ops::after_run::unit_failed(&job, &a.unit, journal.as_deref(), &Systemd::from_env(), &Live);
    if let Some(job) = r.already_notified {
        println!(
            "{} failed; the {job} job finished and sent its own notification ({job} record updated within ten minutes)",
            a.unit
        );
        return Ok(Exit::Success);
    }
    warn(&r.warnings);
    let failed = r.notifications.iter().filter(|d| !d.ok).count();
    if a.json {
        print_json(&r.notifications)?;
    } else {
        println!("notified that {} failed: {} delivered, {failed} failed", a.unit, r.notifications.len() - failed);
    }
    Ok(if failed > 0 { Exit::Failed } else { Exit::Success })
}

/// The last lines of the unit's journal, when journalctl is there and answers.
pub(crate) fn journal_tail(unit: &str) -> Option<String> {
    let journalctl = notify::find_program("journalctl", &["/run/current-system/sw/bin/journalctl"])?;
    let mut child = std::process::Command::new(journalctl)
        .args(["-u", unit, "-n", "20", "--no-pager", "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let status = notify::wait_with_timeout(&mut child, std::time::Duration::from_secs(10)).ok()?;
    let text = reader.join().ok()?;
    (status.success() && !text.trim().is_empty()).then(|| text.trim_end().to_string())
}

/// The pulled host whose unit this is: `backup-host-web1.service` → `web1`, when the plan
/// declares `hosts.web1`.
pub(crate) fn pulled_host_of_unit(plan: &Plan, unit: &str) -> Option<String> {
    let name = unit.strip_prefix("backup-host-")?;
    let name = name.strip_suffix(".service").unwrap_or(name);
    plan.hosts.contains_key(name).then(|| name.to_string())
}
