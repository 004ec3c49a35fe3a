//! Copies: what happens after a publish, each fed from the newest complete snapshot, never
//! from live data (design §10, stage 3): the plain-file rclone mirror ([`cloud`]) and the
//! offsite restic repositories ([`offsite`], with its small `restic` wrapper).

pub mod cloud;
pub mod offsite;
