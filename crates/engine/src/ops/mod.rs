//! Operating the backup: the records kept between runs ([`state`]) and what happens around
//! a job ([`mod@after_run`]): the cloud push, the JSON logs, the metrics textfile, notifications
//! and healthchecks pings, in one order decided here. The CLI calls these functions and
//! prints what they return; it neither orders these steps nor writes a record itself.

pub mod after_run;
pub mod health;
pub mod jsonlog;
pub mod metrics;
pub mod notify;
pub mod state;

pub use after_run::{after_run, before_run, AfterRun, AfterRunReport, Effects, Live, Systemd};
pub use state::StateDir;
