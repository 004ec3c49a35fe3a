//! Copies: what happens after a publish, each fed from the newest complete snapshot, never
//! from live data (design §10, stage 3). Today the plain-file rclone mirror (`cloud`); the
//! offsite restic repositories join it as a file of their own.

pub mod cloud;
pub mod offsite;
