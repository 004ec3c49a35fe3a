//! End-to-end tests: they drive the real `hwc-backup` binary on real directories.
//!
//! One test binary (as ripgrep does) with one module per area. Each module opens with a
//! comment saying what it covers. Shared helpers live in `util`.

// Tests build their scratch trees by path (clippy.toml bans that in the product only).
#![allow(clippy::disallowed_methods)]

mod util;

mod bad_input;
mod btrfs_store;
mod cloud;
mod crash;
mod dumps;
mod exclude_by;
mod excludes;
mod health;
mod history;
mod hooks;
mod hostile_layout;
mod integrity;
mod make_room;
mod metrics;
mod nix;
mod notify;
mod offsite;
mod pull;
mod reflink;
mod restore;
mod restore_select;
mod retention_sim;
mod rotating_drives;
mod runstate;
mod snapshot;
mod source_snapshots;
mod sqlite;
mod verify;
