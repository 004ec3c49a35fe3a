//! Progress on a terminal for long work; nothing when stderr is not a terminal or with --json.

use std::io::IsTerminal;

use hwc_backup_engine::store::meta::Counts;
use indicatif::{ProgressBar, ProgressStyle};

/// A spinner with a message, or nothing.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Shows progress only on an interactive stderr and when output is for people.
    pub fn new(enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Progress { bar }
    }

    /// Updates the message from snapshot counts.
    pub fn counts(&self, c: &Counts) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "{} files, {} linked, {} copied ({})",
                c.files,
                c.linked,
                c.copied,
                hwc_backup_engine::run::human_bytes(c.bytes_copied)
            ));
        }
    }

    /// Updates the message from verify counts.
    pub fn hashed(&self, files: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{files} files verified ({})", hwc_backup_engine::run::human_bytes(bytes)));
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
