//! Copies: what happens after a publish, each fed from the newest complete snapshot, never
//! from live data (design §10, stage 3): the plain-file rclone mirror ([`cloud`]) and the
//! offsite restic repositories ([`offsite`], with its small `restic` wrapper).

pub mod cloud;
pub mod offsite;

/// The last four of `lines` on one line, joined by ` | ` (`(no output)` for none): what an
/// error message quotes of an external program's output.
pub(crate) fn last_lines(lines: &[&str]) -> String {
    let t = lines[lines.len().saturating_sub(4)..].join(" | ");
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}
