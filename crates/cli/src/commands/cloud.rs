//! `cloud`: push the newest snapshot with rclone.

use anyhow::Result;
use hwc_backup_engine::copies::cloud::CloudReport;
use hwc_backup_engine::ops::{self, Live, Systemd};
use hwc_backup_engine::run::human_bytes;

use super::print_json;
use crate::args::CloudArgs;
use crate::exit::Exit;
use crate::ops::warn;

/// `hwc-backup cloud`: push the newest snapshot alone.
pub fn cloud(a: CloudArgs) -> Result<Exit> {
    let job = a.target.load_plan("")?.local_job();
    let pushed = ops::after_run::cloud_job(&job, a.allow_shrink, &Systemd::from_env(), &Live)?;
    if a.json {
        print_json(&pushed.cloud)?;
    } else {
        print_cloud(&pushed.cloud);
    }
    warn(&pushed.warnings);
    Ok(if pushed.cloud.ok { Exit::Success } else { Exit::Failed })
}

pub(crate) fn print_cloud(c: &CloudReport) {
    for n in &c.notes {
        println!("cloud: note: {n}");
    }
    match (&c.error, &c.snapshot) {
        (None, Some(s)) => println!(
            "cloud: pushed {s} to {} ({} files, {}; rclone {})",
            c.destination,
            c.files,
            human_bytes(c.bytes),
            c.verb
        ),
        (None, None) => println!("cloud: pushed to {}", c.destination),
        (Some(e), _) => println!("cloud push FAILED: {e}"),
    }
}
