//! The engine of hwc-backup: hard-linked, rotated, verifiable snapshots.
//!
//! A snapshot is a plain directory tree holding every source under its absolute path, in
//! which each file unchanged since the previous snapshot is a hard link to the previous copy
//! and everything else is a fresh copy. Each snapshot carries its metadata and a BLAKE3
//! manifest, and becomes visible by a single rename, so readers never see half of one.
//!
//! This crate never prints, exits or parses arguments; the `hwc-backup` binary does. Its
//! modules follow the stages of a run (design §10):
//!
//! - [`fs`]: the one door to the backup destination (directory handles, never a symlink).
//! - [`source`]: what a build reads — this machine ([`source::local`]), a pulled host
//!   ([`source::remote`]), the database dumps taken before it, the excludes.
//! - [`store`]: the hard-linked snapshots of each host — layout, lock, retention, manifest,
//!   metadata, the recorder every build writes through and the link-or-copy decision it
//!   makes, verify, restore.
//! - [`copies`]: what is fed from a published snapshot (the rclone mirror, the offsite
//!   restic repositories).
//! - [`ops`]: the records kept between runs and the steps around a job (health, metrics,
//!   notifications, logs).
//!
//! The main entry points:
//!
//! - [`plan::Plan`]: the JSON plan (the contract with the NixOS module), strictly validated.
//! - [`job::Job`]: what a run works on, built by the plan for this machine and each pulled host.
//! - [`run::run`]: one backup run, ending `success`, `partial` or `failed`.
//! - [`store::layout::HostDir`]: listing and resolving snapshots of one host.
//! - [`store::restore::restore`], [`store::verify::verify`], [`store::prune::plan`] /
//!   [`store::prune::execute`].
//! - [`ops`]: the records kept between runs ([`ops::StateDir`]) and what happens after a
//!   run ([`ops::after_run()`]: cloud push, logs, metrics, notifications), in one order.
//!
//! ```no_run
//! use hwc_backup_engine::{plan::Plan, run};
//! let plan = Plan::ad_hoc("laptop".into(), vec!["/home".into()], "/mnt/backup".into(), vec![".cache".into()]);
//! let report = run::run(&plan, &run::RunOptions::for_plan(&plan), &|_| {});
//! println!("{:?}: {:?}", report.state, report.snapshot);
//! ```

#![deny(missing_docs)]
// Tests build their scratch trees by path; the library itself goes through `fs` (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod copies;
pub mod error;
pub mod fs;
pub mod job;
pub mod ops;
pub mod plan;
pub mod run;
pub mod source;
pub mod store;

pub use error::{Error, ErrorKind, Result};
