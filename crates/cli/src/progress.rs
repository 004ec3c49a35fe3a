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

    /// A bar of bytes with rate and ETA, once [`Progress::total`] is known (a spinner until
    /// then), or nothing.
    pub fn bytes(enabled: bool) -> Progress {
        let p = Progress::new(enabled);
        if let Some(b) = &p.bar {
            b.set_message("looking at what to do");
        }
        p
    }

    /// Whether anything is shown.
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Turns the spinner into a bar of `bytes`.
    pub fn total(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_length(bytes);
            b.set_message("");
        }
    }

    /// Moves the bar to `bytes` done, with `what` beside it.
    pub fn done(&self, bytes: u64, what: String) {
        if let Some(b) = &self.bar {
            // The total is an estimate for verify (sparse files count their holes here).
            if b.length().is_some_and(|l| bytes > l) {
                b.set_length(bytes);
            }
            b.set_position(bytes);
            b.set_message(what);
        }
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

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
