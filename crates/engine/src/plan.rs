//! The plan: the JSON document that the NixOS module renders and the runner executes.
//!
//! `docs/plan.md` is the reference for every field. Parsing is strict: unknown fields are
//! rejected, and every error names the field as a JSON path (`retention.daily`) and the value,
//! because the person reading the message is editing `configuration.nix`, not this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::{Job, Kind, LocalJob, PulledJob, Reporting, Sources, Store};

/// The only plan version this runner understands.
pub const PLAN_VERSION: u32 = 1;

/// A validated plan.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// Format version; must be [`PLAN_VERSION`].
    pub version: u32,
    /// The directory name under the destination (normally the hostname).
    pub host: String,
    /// Where snapshots go.
    pub destination: Destination,
    /// Absolute paths to back up.
    pub sources: Vec<PathBuf>,
    /// rsync-style exclude patterns.
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
    /// Keep directories tagged with a valid `CACHEDIR.TAG` without their contents.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_caches: bool,
    /// Keep directories holding one of these names without their contents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
    /// Leave out regular files larger than this (`4G`, `512M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_larger_than: Option<String>,
    /// Whether to stay on the filesystem of each source.
    #[serde(default = "yes")]
    pub one_file_system: bool,
    /// Read the sources from read-only filesystem snapshots taken just before the walk.
    #[serde(default)]
    pub source_snapshots: SourceSnapshots,
    /// The btrfs program (btrfs-progs) that takes and deletes source snapshots; `None` = `btrfs`
    /// on PATH.
    #[serde(default)]
    pub btrfs: Option<PathBuf>,
    /// The lvm program (lvm2) that takes and removes LVM source snapshots (`lvm lvcreate`,
    /// `lvm lvs`, `lvm lvremove`); `None` = `lvm` on PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm: Option<PathBuf>,
    /// The zfs program that takes and destroys ZFS source snapshots; `None` = `zfs` on PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zfs: Option<PathBuf>,
    /// The size of each LVM snapshot (its copy-on-write space): `lvcreate -L` (`2G`, `512M`)
    /// or, with a `%`, `lvcreate -l` (`10%ORIGIN`, `50%FREE`); `None` = `10%ORIGIN`. Not used
    /// for thin volumes, whose snapshots take space from their pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_snapshot_size: Option<String>,
    /// Services stopped or frozen while the filesystem snapshots are taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiesce: Vec<Quiesce>,
    /// Which snapshots to keep.
    #[serde(default)]
    pub retention: Retention,
    /// Programs to run around the snapshot.
    #[serde(default)]
    pub hooks: Hooks,
    /// Pushing the newest snapshot to a cloud remote.
    #[serde(default)]
    pub cloud: Cloud,
    /// Who to tell, and when.
    #[serde(default)]
    pub notifications: Notifications,
    /// What counts as healthy.
    #[serde(default)]
    pub health: Health,
    /// Prometheus textfile output.
    #[serde(default)]
    pub metrics: Metrics,
    /// Database dumps taken before the snapshot.
    #[serde(default)]
    pub databases: Databases,
    /// Other machines this one pulls snapshots from over ssh, by name (each into
    /// `<destination>/<name>/`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, RemoteHost>,
    /// Offsite copies: restic repositories fed from this machine's newest snapshot, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offsite: BTreeMap<String, Offsite>,
    /// Directory for JSON-lines logs.
    #[serde(default = "default_log_dir")]
    pub log_dir: PathBuf,
    /// Directory for state kept between runs (last run, last verify).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// Which filesystem snapshots the local sources are read from (`sourceSnapshots`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceSnapshots {
    /// btrfs, ZFS or LVM, whichever holds a source's filesystem, where a snapshot can be
    /// taken; the others are read live, said once per run.
    Auto,
    /// A read-only btrfs snapshot of every source's subvolume; a source that cannot have one
    /// fails the run.
    Btrfs,
    /// A ZFS snapshot of every source's dataset (`zfs snapshot`), mounted read-only in the
    /// state directory; a source that cannot have one fails the run.
    Zfs,
    /// An LVM snapshot of every source's logical volume (`lvcreate -s`), mounted read-only in
    /// the state directory; a source that cannot have one fails the run.
    Lvm,
    /// Read the live filesystem (a plan without the field).
    #[default]
    None,
}

impl SourceSnapshots {
    /// The plan's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceSnapshots::Auto => "auto",
            SourceSnapshots::Btrfs => "btrfs",
            SourceSnapshots::Zfs => "zfs",
            SourceSnapshots::Lvm => "lvm",
            SourceSnapshots::None => "none",
        }
    }

    /// Refuses the kinds this runner cannot take (none since ZFS and LVM landed; kept so
    /// that a kind added to the plan before its code is refused, not ignored).
    pub fn supported(self) -> Result<()> {
        Ok(())
    }
}

/// A service held still while the filesystem snapshots are taken (`quiesce[]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quiesce {
    /// The systemd unit, e.g. `postgresql.service`.
    pub unit: String,
    /// Stop it, or freeze its processes.
    pub mode: QuiesceMode,
}

/// How a unit is held still.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QuiesceMode {
    /// `systemctl stop`, then `systemctl start`.
    Stop,
    /// `systemctl freeze`, then `systemctl thaw` (the cgroup freezer).
    Freeze,
}

impl Quiesce {
    fn validate(&self, i: usize) -> Result<()> {
        let ok = !self.unit.is_empty()
            && self.unit.len() <= 256
            && !self.unit.starts_with('-')
            && self.unit.contains('.')
            && self.unit.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b));
        if !ok {
            return Err(Error::config(
                format!("quiesce[{i}].unit"),
                format!("{:?} is not a systemd unit name (e.g. \"postgresql.service\")", self.unit),
            ));
        }
        Ok(())
    }
}

impl std::str::FromStr for SourceSnapshots {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("{s:?} is not one of auto, btrfs, zfs, lvm, none"))
    }
}

/// The destination of the snapshots.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The mount point (or any directory) that holds `<host>/`.
    pub path: PathBuf,
    /// Refuse to run unless `path` is a mount point, so an unplugged drive never fills the
    /// root filesystem.
    #[serde(default = "yes")]
    pub require_mount_point: bool,
    /// Refuse to run with less free space than this.
    #[serde(default)]
    pub min_free_bytes: u64,
    /// Instead of refusing, remove the oldest snapshots until `min_free_bytes` are free
    /// (`local.makeRoom`, see `store::make_room`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub make_room: bool,
    /// How snapshots are stored (`local.store`, see `store::btrfs`): hard links, btrfs
    /// subvolumes, or whichever the destination allows.
    #[serde(default, skip_serializing_if = "StoreMode::is_auto")]
    pub store: StoreMode,
}

/// How a snapshot is stored (`destination.store`, `local.store`, `--store`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// btrfs subvolumes when the destination is btrfs and the runner may create subvolumes
    /// there, else hard links.
    #[default]
    Auto,
    /// A directory per snapshot, unchanged files hard-linked to the previous one.
    Hardlink,
    /// A subvolume per snapshot, made as a snapshot of the previous one; refused elsewhere.
    Btrfs,
}

impl StoreMode {
    /// The default, left out of a written plan.
    pub fn is_auto(&self) -> bool {
        *self == StoreMode::Auto
    }
}

impl std::str::FromStr for StoreMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("{s:?} is not one of auto, hardlink, btrfs"))
    }
}

/// A retention count: a number of periods, or every period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Keep this many periods.
    N(u32),
    /// Keep every period (restic's `-1`).
    Unlimited,
}

impl Count {
    /// restic's encoding: `-1` for unlimited.
    pub fn as_i64(self) -> i64 {
        match self {
            Count::N(n) => i64::from(n),
            Count::Unlimited => -1,
        }
    }
}

impl Serialize for Count {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Count::N(n) => s.serialize_u32(*n),
            Count::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Count, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a count from 0 to 4294967295, or \"unlimited\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Count, E> {
                u32::try_from(v).map(Count::N).map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Count, E> {
                if v < 0 {
                    return Err(E::custom(format!("{v} is negative; use 0 to disable the rule or \"unlimited\"")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Count, E> {
                match v {
                    "unlimited" => Ok(Count::Unlimited),
                    _ => Err(E::custom(format!("{v:?} is not a count (a number or \"unlimited\")"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Retention counts, with restic's `forget --keep-*` meaning.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// `--keep-last`.
    #[serde(default = "zero")]
    pub last: Count,
    /// `--keep-hourly`.
    #[serde(default = "zero")]
    pub hourly: Count,
    /// `--keep-daily`.
    #[serde(default = "seven")]
    pub daily: Count,
    /// `--keep-weekly`.
    #[serde(default = "four")]
    pub weekly: Count,
    /// `--keep-monthly`.
    #[serde(default = "six")]
    pub monthly: Count,
    /// `--keep-yearly`.
    #[serde(default = "zero")]
    pub yearly: Count,
    /// `--keep-within`, in restic's duration syntax (`2d`, `1y6m`).
    #[serde(default)]
    pub within: Option<String>,
    /// Prune after every successful or partial run.
    #[serde(default = "yes")]
    pub prune_after_run: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            last: zero(),
            hourly: zero(),
            daily: seven(),
            weekly: four(),
            monthly: six(),
            yearly: zero(),
            within: None,
            prune_after_run: true,
        }
    }
}

impl Retention {
    /// The retention policy, validated; a policy that keeps nothing is an error.
    pub fn policy(&self) -> Result<crate::store::retention::Policy> {
        let r = self;
        let within = match &r.within {
            None => None,
            Some(w) => Some(
                crate::store::retention::Within::parse(w)
                    .map_err(|e| Error::config("retention.within", format!("{w:?}: {e}")))?,
            ),
        };
        let policy = crate::store::retention::Policy {
            last: r.last.as_i64(),
            hourly: r.hourly.as_i64(),
            daily: r.daily.as_i64(),
            weekly: r.weekly.as_i64(),
            monthly: r.monthly.as_i64(),
            yearly: r.yearly.as_i64(),
            within,
            ..Default::default()
        };
        if policy.is_empty() {
            return Err(Error::config(
                "retention",
                "keeps nothing (every count is 0 and no within); set at least one keep count",
            ));
        }
        Ok(policy)
    }
}

/// Programs run around the snapshot.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hooks {
    /// Runs before the snapshot; a non-zero exit fails the run and nothing is published.
    #[serde(default)]
    pub pre_backup: Option<PathBuf>,
    /// Runs after every run with the state and snapshot path in its environment.
    #[serde(default)]
    pub post_backup: Option<PathBuf>,
}

/// How `rclone` transfers to the remote.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Mirror (deletes on the remote what is gone locally).
    #[default]
    Sync,
    /// Copy new and changed files, delete nothing.
    Copy,
    /// Move (rclone removes the local source files).
    Move,
}

/// Cloud push of the newest complete snapshot.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cloud {
    /// Whether to push at all.
    #[serde(default)]
    pub enable: bool,
    /// `remote:path`.
    #[serde(default)]
    pub remote: Option<String>,
    /// rclone verb.
    #[serde(default)]
    pub sync_mode: SyncMode,
    /// rclone `--bwlimit`.
    #[serde(default)]
    pub bandwidth_limit: Option<String>,
    /// rclone `--config`.
    #[serde(default)]
    pub rclone_config_file: Option<PathBuf>,
    /// The rclone binary; `None` means "find it on PATH".
    #[serde(default)]
    pub rclone: Option<PathBuf>,
    /// How many history folders (files replaced or deleted on the remote, one folder per
    /// push) to keep under `<remote>/<host>/history/`; 0 turns history off.
    #[serde(default = "thirty")]
    pub keep_history: u32,
    /// Health: the last successful push must be younger than this.
    #[serde(default = "default_cloud_max_age")]
    pub max_age: String,
}

impl Default for Cloud {
    fn default() -> Self {
        Cloud {
            enable: false,
            remote: None,
            sync_mode: SyncMode::Sync,
            bandwidth_limit: None,
            rclone_config_file: None,
            rclone: None,
            keep_history: thirty(),
            max_age: default_cloud_max_age(),
        }
    }
}

impl Cloud {
    /// `cloud.maxAge` as a duration (validated at load).
    pub fn max_age_duration(&self) -> Duration {
        parse_duration(&self.max_age).unwrap_or(Duration::from_secs(7 * 86400))
    }
}

/// An ntfy target.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ntfy {
    /// Topic URL, written in the plan (world-readable): for topics that are no secret.
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the topic URL, read at each delivery (a topic is a password).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// File holding an access token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// A target given by URL only: inline in the plan, or in a file read at each delivery (exactly
/// one of them).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlTarget {
    /// The URL, written in the plan (world-readable).
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the URL (one line), for URLs that carry a secret.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
}

impl UrlTarget {
    /// A target with an inline URL.
    pub fn inline(url: impl Into<String>) -> UrlTarget {
        UrlTarget { url: Some(url.into()), url_file: None }
    }
}

/// `url` and `urlFile` of a notification target: exactly one, the file an absolute path.
fn validate_url_source(field: &str, url: &Option<String>, url_file: &Option<PathBuf>) -> Result<()> {
    match (url, url_file) {
        (Some(_), Some(_)) => Err(Error::config(field, "sets both url and urlFile; give one")),
        (None, None) => Err(Error::config(field, "sets neither url nor urlFile")),
        (Some(u), None) if u.trim().is_empty() => Err(Error::config(format!("{field}.url"), "is empty")),
        (None, Some(f)) => absolute(&format!("{field}.urlFile"), f),
        (Some(_), None) => Ok(()),
    }
}

impl Notifications {
    /// Each target names its URL once; files are absolute paths.
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = &self.ntfy {
            validate_url_source("notifications.ntfy", &n.url, &n.url_file)?;
            if let Some(t) = &n.token_file {
                absolute("notifications.ntfy.tokenFile", t)?;
            }
        }
        for (field, t) in [("notifications.webhook", &self.webhook), ("notifications.healthchecks", &self.healthchecks)]
        {
            if let Some(t) = t {
                validate_url_source(field, &t.url, &t.url_file)?;
            }
        }
        Ok(())
    }
}

/// A mail target.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Email {
    /// Recipient address.
    pub to: String,
}

/// Notification targets and triggers.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notifications {
    /// Notify after successful runs too.
    #[serde(default)]
    pub on_success: bool,
    /// Notify after failed and partial runs.
    #[serde(default = "yes")]
    pub on_failure: bool,
    /// ntfy.
    #[serde(default)]
    pub ntfy: Option<Ntfy>,
    /// Generic JSON webhook.
    #[serde(default)]
    pub webhook: Option<UrlTarget>,
    /// healthchecks.io-style pings.
    #[serde(default)]
    pub healthchecks: Option<UrlTarget>,
    /// Mail through sendmail.
    #[serde(default)]
    pub email: Option<Email>,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            on_success: false,
            on_failure: true,
            ntfy: None,
            webhook: None,
            healthchecks: None,
            email: None,
        }
    }
}

/// Health thresholds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// The newest complete snapshot must be younger than this; pruning also stops when it is
    /// older, so a broken job cannot let retention eat the history.
    #[serde(default = "default_max_age")]
    pub max_age: String,
    /// At least this many complete snapshots.
    #[serde(default = "one")]
    pub min_backups: u32,
    /// A verify must have run within this long; `None` = a missing verify is not a failure
    /// (a verify that found damage always is).
    #[serde(default)]
    pub verify_max_age: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health { max_age: default_max_age(), min_backups: 1, verify_max_age: None }
    }
}

/// Database dumps written before the snapshot into a directory the snapshot holds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Databases {
    /// Where the dumps are written; must lie inside one of `sources` so the snapshot holds
    /// them (the module adds it to `sources` for you).
    #[serde(default = "default_staging_dir")]
    pub staging_dir: PathBuf,
    /// PostgreSQL.
    #[serde(default)]
    pub postgresql: Postgresql,
    /// MySQL / MariaDB.
    #[serde(default)]
    pub mysql: Mysql,
    /// SQLite database files, each copied as one consistent snapshot (`VACUUM INTO`, a single
    /// read transaction) into `sqlite/<its absolute path>` below the staging directory.
    #[serde(default)]
    pub sqlite: Vec<PathBuf>,
    /// The `sqlite3` program; `None` = found on PATH.
    #[serde(default)]
    pub sqlite3: Option<PathBuf>,
}

impl Default for Databases {
    fn default() -> Self {
        Databases {
            staging_dir: default_staging_dir(),
            postgresql: Postgresql::default(),
            mysql: Mysql::default(),
            sqlite: Vec::new(),
            sqlite3: None,
        }
    }
}

impl Databases {
    /// Whether any dump is configured.
    pub fn any_enabled(&self) -> bool {
        self.postgresql.enable || self.mysql.enable || !self.sqlite.is_empty()
    }
}

/// PostgreSQL dumps: `pg_dumpall`, or `pg_dump -Fc` per database plus the globals.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Postgresql {
    /// Whether to dump.
    #[serde(default)]
    pub enable: bool,
    /// The system user the dump programs run as (peer authentication on the socket).
    #[serde(default = "default_pg_user")]
    pub user: String,
    /// Databases to dump one by one with `pg_dump -Fc`; empty = everything with `pg_dumpall`.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Server host or socket directory (`-h`); `None` = libpq's default socket.
    #[serde(default)]
    pub host: Option<String>,
    /// Server port (`-p`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Directory holding `pg_dump`/`pg_dumpall`; `None` = found on PATH.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
}

impl Default for Postgresql {
    fn default() -> Self {
        Postgresql {
            enable: false,
            user: default_pg_user(),
            databases: Vec::new(),
            host: None,
            port: None,
            bin_dir: None,
        }
    }
}

/// MySQL / MariaDB dumps with `mysqldump` (or `mariadb-dump`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mysql {
    /// Whether to dump.
    #[serde(default)]
    pub enable: bool,
    /// The system user the dump program runs as (unix_socket authentication).
    #[serde(default = "default_mysql_user")]
    pub user: String,
    /// Databases to dump one file each; empty = `--all-databases` into one file.
    #[serde(default)]
    pub databases: Vec<String>,
    /// An option file with credentials (`--defaults-extra-file`).
    #[serde(default)]
    pub defaults_file: Option<PathBuf>,
    /// The server's socket (`--socket`); `None` = the client's default.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Directory holding `mysqldump`/`mariadb-dump`; `None` = found on PATH.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
}

impl Default for Mysql {
    fn default() -> Self {
        Mysql {
            enable: false,
            user: default_mysql_user(),
            databases: Vec::new(),
            defaults_file: None,
            socket: None,
            bin_dir: None,
        }
    }
}

/// An offsite copy: a restic repository fed from this machine's newest complete snapshot
/// (`offsite.<name>`; `copies::offsite`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Offsite {
    /// Any restic repository string (`/path`, `sftp:`, `s3:`, `b2:`, `rest:`, `rclone:remote:path`).
    pub repository: String,
    /// restic `--password-file`; must exist and be non-empty at run time.
    pub password_file: PathBuf,
    /// `KEY=value` lines added to restic's environment (cloud credentials).
    #[serde(default)]
    pub environment_file: Option<PathBuf>,
    /// `RCLONE_CONFIG` for an `rclone:` repository.
    #[serde(default)]
    pub rclone_config_file: Option<PathBuf>,
    /// The restic binary; `None` = `restic` on PATH.
    #[serde(default)]
    pub restic: Option<PathBuf>,
    /// The rclone binary restic runs for `rclone:` (`-o rclone.program=`); `None` = PATH.
    #[serde(default)]
    pub rclone: Option<PathBuf>,
    /// restic `forget --keep-*` of this offsite (its own, not the local retention).
    #[serde(default)]
    pub keep: OffsiteKeep,
    /// `None`: copied right after each successful or partial local run; else by its own timer.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `restic check`, scheduled by the module.
    #[serde(default)]
    pub check: OffsiteCheck,
    /// restic `--limit-upload`, KiB/s.
    #[serde(default)]
    pub bandwidth_limit: Option<u64>,
    /// Health: the last good copy must be younger than this.
    #[serde(default = "default_cloud_max_age")]
    pub max_age: String,
}

/// The keep rules of an offsite (restic `forget --keep-*`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OffsiteKeep {
    /// `--keep-last`.
    #[serde(default = "zero")]
    pub last: Count,
    /// `--keep-hourly`.
    #[serde(default = "zero")]
    pub hourly: Count,
    /// `--keep-daily`.
    #[serde(default = "seven")]
    pub daily: Count,
    /// `--keep-weekly`.
    #[serde(default = "five")]
    pub weekly: Count,
    /// `--keep-monthly`.
    #[serde(default = "twelve")]
    pub monthly: Count,
    /// `--keep-yearly`.
    #[serde(default = "zero")]
    pub yearly: Count,
    /// `--keep-within`, a restic duration (`1y5m7d2h`).
    #[serde(default)]
    pub within: Option<String>,
}

impl Default for OffsiteKeep {
    fn default() -> Self {
        OffsiteKeep {
            last: zero(),
            hourly: zero(),
            daily: seven(),
            weekly: five(),
            monthly: twelve(),
            yearly: zero(),
            within: None,
        }
    }
}

/// The scheduled `restic check` of an offsite.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OffsiteCheck {
    /// The module's `backup-offsite-check-<name>.timer`; `None` = no scheduled check.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `--read-data-subset` (`"N%"`), rotated; `None` = the structure only.
    #[serde(default = "five_percent")]
    pub read_data_subset: Option<String>,
}

impl Default for OffsiteCheck {
    fn default() -> Self {
        OffsiteCheck { schedule: None, read_data_subset: five_percent() }
    }
}

impl Offsite {
    /// `maxAge` as a duration (validated at load).
    pub fn max_age_duration(&self) -> Duration {
        parse_duration(&self.max_age).unwrap_or(Duration::from_secs(7 * 86400))
    }

    /// Checks one entry of `offsite`; `name` is its key. Errors name `offsite.<name>.<field>`.
    pub fn validate(&self, name: &str) -> Result<()> {
        let f = |field: &str| format!("offsite.{name}.{field}");
        validate_host(name).map_err(|_| {
            Error::config(
                format!("offsite.{name}"),
                format!("{name:?} is not a valid offsite name (letters, digits, '.', '_', '-'; at most 64)"),
            )
        })?;
        validate_repository(&f("repository"), &self.repository)?;
        absolute(&f("passwordFile"), &self.password_file)?;
        for (field, p) in [
            ("environmentFile", &self.environment_file),
            ("rcloneConfigFile", &self.rclone_config_file),
            ("restic", &self.restic),
            ("rclone", &self.rclone),
        ] {
            if let Some(p) = p {
                absolute(&f(field), p)?;
            }
        }
        self.keep.validate(&f("keep"))?;
        for (field, s) in [("schedule", &self.schedule), ("check.schedule", &self.check.schedule)] {
            if let Some(s) = s {
                if s.trim().is_empty() || s.contains(['\n', '\r', '\0']) {
                    return Err(Error::config(f(field), format!("{s:?} is not a systemd calendar expression")));
                }
            }
        }
        if let Some(s) = &self.check.read_data_subset {
            parse_percent(s).map_err(|m| Error::config(f("check.readDataSubset"), m))?;
        }
        if self.bandwidth_limit == Some(0) {
            return Err(Error::config(f("bandwidthLimit"), "0 is not a rate; use null for no limit"));
        }
        if parse_duration(&self.max_age).map_err(|m| Error::config(f("maxAge"), m))?.is_zero() {
            return Err(Error::config(f("maxAge"), format!("{:?} is zero: every copy would be too old", self.max_age)));
        }
        Ok(())
    }
}

/// A restic repository string: non-empty, never an option, one line.
pub fn validate_repository(field: &str, repo: &str) -> Result<()> {
    if repo.trim().is_empty() || repo.starts_with('-') || repo.contains(['\n', '\r', '\0']) {
        return Err(Error::config(field, format!("{repo:?} is not a restic repository")));
    }
    Ok(())
}

/// `"N%"` with 0 < N ≤ 100, as restic's `--read-data-subset` takes it; returns N.
pub fn parse_percent(text: &str) -> std::result::Result<f64, String> {
    let bad = || format!("{text:?} is not a percentage like \"5%\" (more than 0, at most 100)");
    let n: f64 = text.strip_suffix('%').ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
    if !(n > 0.0 && n <= 100.0) {
        return Err(bad());
    }
    Ok(n)
}

impl OffsiteKeep {
    /// The `forget` options, in restic's syntax (an unlimited count is a huge one: restic
    /// before 0.17 has no `-1`).
    pub fn forget_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, c) in [
            ("--keep-last", self.last),
            ("--keep-hourly", self.hourly),
            ("--keep-daily", self.daily),
            ("--keep-weekly", self.weekly),
            ("--keep-monthly", self.monthly),
            ("--keep-yearly", self.yearly),
        ] {
            match c {
                Count::N(0) => {}
                Count::N(n) => args.extend([flag.to_string(), n.to_string()]),
                Count::Unlimited => args.extend([flag.to_string(), i32::MAX.to_string()]),
            }
        }
        if let Some(w) = &self.within {
            args.extend(["--keep-within".to_string(), w.clone()]);
        }
        args
    }

    fn validate(&self, field: &str) -> Result<()> {
        if let Some(w) = &self.within {
            let ok = !w.is_empty()
                && w.chars().last().is_some_and(|c| "ymdh".contains(c))
                && w.chars().all(|c| c.is_ascii_digit() || "ymdh".contains(c))
                && w.chars().next().is_some_and(|c| c.is_ascii_digit());
            if !ok {
                return Err(Error::config(
                    format!("{field}.within"),
                    format!("{w:?} is not a restic duration like \"1y5m7d2h\""),
                ));
            }
        }
        if self.forget_args().is_empty() {
            return Err(Error::config(
                field,
                "keeps nothing (every count is 0 and no within); restic forget would refuse to choose",
            ));
        }
        Ok(())
    }
}

/// Metrics output.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// node-exporter textfile collector directory.
    #[serde(default)]
    pub textfile_dir: Option<PathBuf>,
}

/// A machine pulled over ssh (`hwc-backup pull --host NAME`): where its agent is, and what
/// to take from it. Everything else (destination, notifications, health) is the plan's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteHost {
    /// Host name or address to connect to.
    pub address: String,
    /// The user the agent runs as there.
    pub user: String,
    /// The ssh port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// The private key for this host; `None`: ssh's default keys.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
    /// Extra ssh `-o` options, `Key=value` (e.g. `UserKnownHostsFile=/etc/…`).
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// The ssh program; `None`: `ssh` on PATH.
    #[serde(default)]
    pub ssh: Option<PathBuf>,
    /// The command asked for on the host (its `authorized_keys` entry may force its own).
    #[serde(default = "default_agent_command")]
    pub agent_command: String,
    /// Absolute paths on the host.
    pub sources: Vec<PathBuf>,
    /// rsync-style exclude patterns.
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
    /// As the plan's `excludeCaches`, walked by the agent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_caches: bool,
    /// As the plan's `excludeIfPresent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
    /// As the plan's `excludeLargerThan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_larger_than: Option<String>,
    /// Stay on the filesystem of each source.
    #[serde(default = "yes")]
    pub one_file_system: bool,
    /// Recreate the host's device nodes in its snapshots; off: they are counted as
    /// `devicesSkipped` and not created (a pulled host must not plant usable device nodes on
    /// the server).
    #[serde(default)]
    pub devices: bool,
    /// Retention for this host; `None`: the plan's.
    #[serde(default)]
    pub retention: Option<Retention>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `excludeCaches`, `excludeIfPresent` and `excludeLargerThan` checked; `field` names them
/// (with their `hosts.<name>.` prefix).
fn exclude_by(
    caches: bool,
    if_present: &[String],
    larger_than: Option<&str>,
    field: &dyn Fn(&str) -> String,
) -> Result<crate::source::markers::ExcludeBy> {
    use crate::source::markers::{parse_size, ExcludeBy};
    if let Some(s) = larger_than {
        parse_size(s).map_err(|m| Error::config(field("excludeLargerThan"), m))?;
    }
    ExcludeBy::new(caches, if_present, larger_than).map_err(|m| Error::config(field("excludeIfPresent"), m))
}

impl RemoteHost {
    /// This host's `excludeCaches`, `excludeIfPresent` and `excludeLargerThan`.
    pub fn exclude_by(&self) -> Result<crate::source::markers::ExcludeBy> {
        exclude_by(self.exclude_caches, &self.exclude_if_present, self.exclude_larger_than.as_deref(), &|f| f.into())
    }
}

fn default_ssh_port() -> u16 {
    22
}
fn default_agent_command() -> String {
    "hwc-backup agent".into()
}

impl RemoteHost {
    /// How to reach the agent.
    pub fn ssh_target(&self) -> crate::source::remote::ssh::SshTarget {
        crate::source::remote::ssh::SshTarget {
            address: self.address.clone(),
            user: self.user.clone(),
            port: self.port,
            key_file: self.ssh_key_file.clone(),
            options: self.ssh_options.clone(),
            program: self.ssh.clone().unwrap_or_else(|| "ssh".into()),
            remote_command: self.agent_command.clone(),
        }
    }

    /// Checks the values the types do not constrain; `name` is the key under `hosts`.
    pub fn validate(&self, name: &str, plan: &Plan) -> Result<()> {
        if name == plan.host {
            return Err(Error::config(
                format!("hosts.{name}"),
                format!("{name:?} is this machine's own host name; its snapshots would share one directory"),
            ));
        }
        self.validate_entry(name)
    }

    /// The checks of [`RemoteHost::validate`] that do not need the rest of the plan.
    pub fn validate_entry(&self, name: &str) -> Result<()> {
        let f = |field: &str| format!("hosts.{name}.{field}");
        validate_host(name).map_err(|_| {
            Error::config(
                format!("hosts.{name}"),
                format!("{name:?} is not a valid host name (letters, digits, '.', '_', '-'; at most 64)"),
            )
        })?;
        let token = |s: &str| !s.is_empty() && !s.starts_with('-') && !s.chars().any(|c| c.is_whitespace() || c == '@');
        if !token(&self.address) {
            return Err(Error::config(f("address"), format!("{:?} is not a host name or address", self.address)));
        }
        if !token(&self.user) || self.user.contains(['/', ':']) {
            return Err(Error::config(f("user"), format!("{:?} is not a user name", self.user)));
        }
        if self.port == 0 {
            return Err(Error::config(f("port"), "0 is not a port"));
        }
        for (i, o) in self.ssh_options.iter().enumerate() {
            let ok = o.split_once('=').is_some_and(|(k, v)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()) && !v.contains(['\n', '\r'])
            });
            if !ok {
                return Err(Error::config(
                    f(&format!("sshOptions[{i}]")),
                    format!("{o:?} is not an ssh option Key=value"),
                ));
            }
        }
        for (field, p) in [("sshKeyFile", &self.ssh_key_file), ("ssh", &self.ssh)] {
            if let Some(p) = p {
                absolute(&f(field), p)?;
            }
        }
        if self.agent_command.trim().is_empty() || self.agent_command.contains(['\n', '\r', '\0']) {
            return Err(Error::config(f("agentCommand"), format!("{:?} is not a command", self.agent_command)));
        }
        validate_sources(&f("sources"), &self.sources)?;
        crate::source::exclude::ExcludeSet::new(&self.exclude_patterns)
            .map_err(|e| Error::config(f("excludePatterns"), e.to_string()))?;
        exclude_by(self.exclude_caches, &self.exclude_if_present, self.exclude_larger_than.as_deref(), &f)?;
        if let Some(r) = &self.retention {
            r.policy().map_err(|e| match e {
                Error::Config { message, .. } => Error::config(f("retention"), message),
                other => other,
            })?;
        }
        Ok(())
    }
}

/// Sources: non-empty, absolute, each tree once.
fn validate_sources(field: &str, sources: &[PathBuf]) -> Result<()> {
    if sources.is_empty() {
        return Err(Error::config(field, "is empty; list at least one absolute path"));
    }
    for (i, s) in sources.iter().enumerate() {
        absolute(&format!("{field}[{i}]"), s)?;
        if let Some(j) = sources[..i].iter().position(|t| s.starts_with(t) || t.starts_with(s)) {
            return Err(Error::config(
                format!("{field}[{i}]"),
                format!("{} overlaps {field}[{j}] {}; list each tree once", s.display(), sources[j].display()),
            ));
        }
    }
    Ok(())
}

fn yes() -> bool {
    true
}
fn zero() -> Count {
    Count::N(0)
}
fn one() -> u32 {
    1
}
fn thirty() -> u32 {
    30
}
fn default_cloud_max_age() -> String {
    "7d".into()
}
fn default_staging_dir() -> PathBuf {
    "/var/backup/databases".into()
}
fn default_pg_user() -> String {
    "postgres".into()
}
fn default_mysql_user() -> String {
    "root".into()
}
fn four() -> Count {
    Count::N(4)
}
fn six() -> Count {
    Count::N(6)
}
fn seven() -> Count {
    Count::N(7)
}
fn five() -> Count {
    Count::N(5)
}
fn twelve() -> Count {
    Count::N(12)
}
fn five_percent() -> Option<String> {
    Some("5%".into())
}
fn default_max_age() -> String {
    "48h".into()
}
pub(crate) fn default_log_dir() -> PathBuf {
    "/var/log/backup".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/hwc-backup".into()
}

impl Plan {
    /// Reads and validates a plan file.
    pub fn load(path: &Path) -> Result<Plan> {
        // A plan that cannot be read is a bad argument, like one that cannot be parsed.
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config("(file)", format!("cannot read {}: {e}", path.display())))?;
        Plan::parse(&text)
    }

    /// Parses and validates plan text.
    pub fn parse(text: &str) -> Result<Plan> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let plan: Plan = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let field = if field == "." || field == "?" { "(document)".to_string() } else { field };
            Error::config(field, inner.to_string())
        })?;
        plan.validate()?;
        Ok(plan)
    }

    /// A plan for `hwc-backup now --source … --dest …` with no config file: the seed's
    /// defaults (7 daily, 4 weekly, 6 monthly) and no mount requirement.
    pub fn ad_hoc(host: String, sources: Vec<PathBuf>, dest: PathBuf, excludes: Vec<String>) -> Plan {
        Plan {
            version: PLAN_VERSION,
            host,
            destination: Destination {
                path: dest,
                require_mount_point: false,
                min_free_bytes: 0,
                make_room: false,
                store: StoreMode::Auto,
            },
            sources,
            exclude_patterns: excludes,
            exclude_caches: false,
            exclude_if_present: Vec::new(),
            exclude_larger_than: None,
            one_file_system: true,
            source_snapshots: SourceSnapshots::None,
            quiesce: Vec::new(),
            btrfs: None,
            lvm: None,
            zfs: None,
            lvm_snapshot_size: None,
            retention: Retention::default(),
            hooks: Hooks::default(),
            cloud: Cloud::default(),
            notifications: Notifications { on_failure: false, ..Notifications::default() },
            health: Health::default(),
            metrics: Metrics::default(),
            databases: Databases::default(),
            hosts: BTreeMap::new(),
            offsite: BTreeMap::new(),
            log_dir: default_log_dir(),
            state_dir: default_state_dir(),
        }
    }

    /// Checks every value that the types alone do not constrain.
    pub fn validate(&self) -> Result<()> {
        if self.version != PLAN_VERSION {
            return Err(Error::config(
                "version",
                format!("{} is not supported (this runner reads version {PLAN_VERSION})", self.version),
            ));
        }
        validate_host(&self.host)?;
        self.source_snapshots.supported()?;
        for (i, q) in self.quiesce.iter().enumerate() {
            q.validate(i)?;
        }
        absolute("destination.path", &self.destination.path)?;
        if self.sources.is_empty() {
            return Err(Error::config("sources", "is empty; list at least one absolute path"));
        }
        for (i, s) in self.sources.iter().enumerate() {
            absolute(&format!("sources[{i}]"), s)?;
            if let Some(j) = self.sources[..i].iter().position(|t| s.starts_with(t) || t.starts_with(s)) {
                return Err(Error::config(
                    format!("sources[{i}]"),
                    format!("{} overlaps sources[{j}] {}; list each tree once", s.display(), self.sources[j].display()),
                ));
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            if s.starts_with(&self.destination.path) {
                return Err(Error::config(
                    format!("sources[{i}]"),
                    format!(
                        "{} is the destination {} or lies inside it; a snapshot would hold the snapshots \
                         (a source around the destination is fine: its host directory is skipped)",
                        s.display(),
                        self.destination.path.display()
                    ),
                ));
            }
        }
        let excludes = crate::source::exclude::ExcludeSet::new(&self.exclude_patterns)
            .map_err(|e| Error::config("excludePatterns", e.to_string()))?;
        // A pattern that matches every source, whatever its type, leaves nothing to back up.
        if self.sources.iter().all(|s| excludes.is_excluded(s, true) && excludes.is_excluded(s, false)) {
            return Err(excludes_everything(&self.sources));
        }
        self.exclude_by()?;
        self.retention_policy()?;
        for (field, p) in [("hooks.preBackup", &self.hooks.pre_backup), ("hooks.postBackup", &self.hooks.post_backup)] {
            if let Some(p) = p {
                absolute(field, p)?;
            }
        }
        self.validate_cloud()?;
        self.notifications.validate()?;
        if parse_duration(&self.health.max_age).map_err(|m| Error::config("health.maxAge", m))?.is_zero() {
            return Err(Error::config(
                "health.maxAge",
                format!(
                    "{:?} is zero: every snapshot would be too old, and pruning would never run",
                    self.health.max_age
                ),
            ));
        }
        if let Some(v) = &self.health.verify_max_age {
            parse_duration(v).map_err(|m| Error::config("health.verifyMaxAge", m))?;
        }
        self.validate_databases()?;
        for (name, h) in &self.hosts {
            h.validate(name, self)?;
        }
        for (name, o) in &self.offsite {
            o.validate(name)?;
        }
        if let Some(b) = &self.btrfs {
            absolute("btrfs", b)?;
        }
        for (field, p) in [("lvm", &self.lvm), ("zfs", &self.zfs)] {
            if let Some(p) = p {
                absolute(field, p)?;
            }
        }
        if let Some(size) = &self.lvm_snapshot_size {
            crate::source::volume::LvmSize::parse(size).map_err(|why| Error::config("lvmSnapshotSize", why))?;
        }
        absolute("logDir", &self.log_dir)?;
        absolute("stateDir", &self.state_dir)?;
        if let Some(d) = &self.metrics.textfile_dir {
            absolute("metrics.textfileDir", d)?;
        }
        Ok(())
    }

    fn validate_cloud(&self) -> Result<()> {
        let c = &self.cloud;
        if let Some(r) = &c.remote {
            if !r.contains(':') || r.starts_with(':') {
                return Err(Error::config(
                    "cloud.remote",
                    format!("{r:?} is not an rclone remote of the form name:path"),
                ));
            }
        } else if c.enable {
            return Err(Error::config(
                "cloud.remote",
                "is null but cloud.enable is true; name an rclone remote such as \"proton:Backups\"",
            ));
        }
        for (field, p) in [("cloud.rcloneConfigFile", &c.rclone_config_file), ("cloud.rclone", &c.rclone)] {
            if let Some(p) = p {
                absolute(field, p)?;
            }
        }
        parse_duration(&c.max_age).map_err(|m| Error::config("cloud.maxAge", m))?;
        if let Some(b) = &c.bandwidth_limit {
            // rclone would only complain at 02:00; catch a typo at `nixos-rebuild` time.
            if b.trim().is_empty() || b.chars().any(|ch| ch.is_whitespace() && ch != ' ') || b.starts_with('-') {
                return Err(Error::config("cloud.bandwidthLimit", format!("{b:?} is not an rclone --bwlimit value")));
            }
        }
        Ok(())
    }

    fn validate_databases(&self) -> Result<()> {
        let d = &self.databases;
        absolute("databases.stagingDir", &d.staging_dir)?;
        if !d.any_enabled() {
            return Ok(());
        }
        // A dump outside every source would be written and never backed up.
        if !self.sources.iter().any(|s| d.staging_dir.starts_with(s)) {
            return Err(Error::config(
                "databases.stagingDir",
                format!(
                    "{:?} is not inside any of sources, so the snapshot would not hold the dumps; add it to sources",
                    d.staging_dir.display().to_string()
                ),
            ));
        }
        if d.staging_dir.starts_with(&self.destination.path) {
            return Err(Error::config(
                "databases.stagingDir",
                format!("{:?} is inside destination.path", d.staging_dir.display().to_string()),
            ));
        }
        for (engine, user, dbs, bin) in [
            ("postgresql", &d.postgresql.user, &d.postgresql.databases, &d.postgresql.bin_dir),
            ("mysql", &d.mysql.user, &d.mysql.databases, &d.mysql.bin_dir),
        ] {
            if user.is_empty() || user.contains(['/', ':', '\0']) {
                return Err(Error::config(format!("databases.{engine}.user"), format!("{user:?} is not a user name")));
            }
            for (i, db) in dbs.iter().enumerate() {
                // Each name becomes a file name in the staging directory.
                if db.is_empty() || db.starts_with('.') || db.contains(['/', '\0']) {
                    return Err(Error::config(
                        format!("databases.{engine}.databases[{i}]"),
                        format!("{db:?} cannot be used as a database dump file name"),
                    ));
                }
                if dbs[..i].contains(db) {
                    return Err(Error::config(
                        format!("databases.{engine}.databases[{i}]"),
                        format!("{db:?} is listed twice"),
                    ));
                }
            }
            if let Some(b) = bin {
                absolute(&format!("databases.{engine}.binDir"), b)?;
            }
        }
        for (i, db) in d.sqlite.iter().enumerate() {
            let field = format!("databases.sqlite[{i}]");
            absolute(&field, db)?;
            // Each path is mirrored below `sqlite/` in the staging directory: it must name a
            // file, plainly, and once.
            if db.components().any(|c| !matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)))
                || db.parent().is_none()
            {
                return Err(Error::config(
                    field,
                    format!("{:?} is not a plain path of a file", db.display().to_string()),
                ));
            }
            if d.sqlite[..i].contains(db) {
                return Err(Error::config(field, format!("{:?} is listed twice", db.display().to_string())));
            }
            if db.starts_with(&d.staging_dir) {
                return Err(Error::config(
                    field,
                    format!("{:?} is inside databases.stagingDir, which the dumps replace", db.display().to_string()),
                ));
            }
        }
        if let Some(b) = &d.sqlite3 {
            absolute("databases.sqlite3", b)?;
        }
        for (field, p) in
            [("databases.mysql.defaultsFile", &d.mysql.defaults_file), ("databases.mysql.socket", &d.mysql.socket)]
        {
            if let Some(p) = p {
                absolute(field, p)?;
            }
        }
        Ok(())
    }

    /// This machine's `excludeCaches`, `excludeIfPresent` and `excludeLargerThan`.
    pub fn exclude_by(&self) -> Result<crate::source::markers::ExcludeBy> {
        exclude_by(self.exclude_caches, &self.exclude_if_present, self.exclude_larger_than.as_deref(), &|f| f.into())
    }

    /// The retention policy, validated; a policy that keeps nothing is an error.
    pub fn retention_policy(&self) -> Result<crate::store::retention::Policy> {
        self.retention.policy()
    }

    /// The jobs this plan describes: this machine's own, then each pulled host's by name.
    pub fn jobs(&self) -> Vec<Job> {
        let pulled = self.hosts.iter().map(|(name, h)| self.pulled_job_of(name, h));
        std::iter::once(self.local_job()).chain(pulled).collect()
    }

    /// This machine's job: its sources, hooks, dumps and cloud copy.
    pub fn local_job(&self) -> Job {
        Job {
            store: self.store_for(&self.host, &self.retention),
            sources: Sources {
                paths: self.sources.clone(),
                exclude_patterns: self.exclude_patterns.clone(),
                one_file_system: self.one_file_system,
                exclude_by: self.exclude_by().unwrap_or_default(),
            },
            reporting: Reporting {
                log_dir: self.log_dir.clone(),
                metrics: self.metrics.clone(),
                notifications: self.notifications.clone(),
            },
            kind: Kind::Local(LocalJob {
                source_snapshots: self.source_snapshots,
                quiesce: self.quiesce.clone().into(),
                btrfs: self.btrfs.clone().map(PathBuf::into_boxed_path),
                volume_snapshots: Box::new(crate::job::VolumeSnapshots {
                    lvm: self.lvm.clone(),
                    zfs: self.zfs.clone(),
                    lvm_snapshot_size: self.lvm_snapshot_size.clone(),
                }),
                hooks: self.hooks.clone(),
                databases: Box::new(self.databases.clone()),
                cloud: self.cloud.clone(),
                offsite: self.offsite.clone(),
            }),
        }
    }

    /// The job pulling `name` from `hosts`: the host's sources, excludes and retention (or
    /// the plan's), this plan's destination, health thresholds, logs, metrics and
    /// notifications. It has no hooks, dumps or cloud copy: they belong to this machine.
    pub fn pulled_job(&self, name: &str) -> Result<Job> {
        match self.hosts.get(name) {
            Some(h) => Ok(self.pulled_job_of(name, h)),
            None => Err(crate::job::unknown_host(name, self.hosts.keys().map(String::as_str).collect())),
        }
    }

    fn pulled_job_of(&self, name: &str, h: &RemoteHost) -> Job {
        Job {
            store: self.store_for(name, h.retention.as_ref().unwrap_or(&self.retention)),
            sources: h.sources(),
            reporting: Reporting {
                log_dir: self.log_dir.clone(),
                metrics: self.metrics.clone(),
                // The healthchecks.io check is this machine's own job's dead man's switch: a
                // pull that succeeds must not ping it (that would hide a dead local job), nor
                // one that fails. A pulled host is watched by `health --host NAME`.
                notifications: Notifications { healthchecks: None, ..self.notifications.clone() },
            },
            kind: Kind::Pulled(PulledJob { remote: h.clone() }),
        }
    }

    fn store_for(&self, host: &str, retention: &Retention) -> Store {
        Store {
            host: host.to_string(),
            destination: self.destination.clone(),
            retention: retention.clone(),
            health: self.health.clone(),
            state_dir: self.state_dir.clone(),
        }
    }
}

/// The error for excludes that leave no source to back up.
pub fn excludes_everything(sources: &[PathBuf]) -> Error {
    let list: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
    Error::config("excludePatterns", format!("exclude every source ({}); nothing would be backed up", list.join(", ")))
}

/// Checks a host name given on the command line (`--host`): it becomes a directory name
/// under the destination, so `/` and `..` must never get through.
pub fn check_host_name(option: &str, host: &str) -> Result<()> {
    validate_host(host).map_err(|e| match e {
        Error::Config { message, .. } => Error::config(option, message),
        other => other,
    })
}

fn validate_host(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= 64
        && host != "."
        && host != ".."
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "host",
            format!("{host:?} is not a valid host name (letters, digits, '.', '_', '-'; at most 64)"),
        ))
    }
}

pub(crate) fn absolute(field: &str, p: &Path) -> Result<()> {
    if !p.is_absolute() {
        return Err(Error::config(field, format!("{:?} is not an absolute path", p.display().to_string())));
    }
    if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::config(field, format!("{:?} contains '..'", p.display().to_string())));
    }
    Ok(())
}

/// Parses a duration such as `48h`, `7d`, `1h30m` or `90s` (units `s`, `m`, `h`, `d`, `w`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like \"48h\", \"7d\" or \"1h30m\"");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return Err(bad()),
        };
        total = total.checked_add(n.checked_mul(unit).ok_or_else(bad)?).ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 && !text.trim().starts_with('0') {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "version": 1, "host": "laptop",
            "destination": { "path": "/mnt/backup" },
            "sources": ["/home"]
        })
    }

    fn err_of(v: serde_json::Value) -> String {
        Plan::parse(&v.to_string()).unwrap_err().to_string()
    }

    #[test]
    fn minimal_plan_gets_defaults() {
        let p = Plan::parse(&minimal().to_string()).unwrap();
        assert!(p.destination.require_mount_point);
        assert_eq!(p.retention.daily, Count::N(7));
        assert_eq!(p.retention.weekly, Count::N(4));
        assert_eq!(p.retention.monthly, Count::N(6));
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let mut v = minimal();
        v["destination"]["mountpoint"] = true.into();
        let e = err_of(v);
        assert!(e.contains("destination") && e.contains("mountpoint"), "{e}");
    }

    #[test]
    fn negative_count_names_field_and_value() {
        let mut v = minimal();
        v["retention"] = serde_json::json!({ "daily": -3 });
        let e = err_of(v);
        assert!(e.contains("retention.daily") && e.contains("-3"), "{e}");
    }

    #[test]
    fn relative_source_and_overlap_rejected() {
        let mut v = minimal();
        v["sources"] = serde_json::json!(["home"]);
        assert!(err_of(v).contains("sources[0]"));
        let mut v = minimal();
        v["sources"] = serde_json::json!(["/home", "/home/alice"]);
        assert!(err_of(v).contains("overlaps"));
    }

    #[test]
    fn policy_keeping_nothing_rejected() {
        let mut v = minimal();
        v["retention"] = serde_json::json!({ "daily": 0, "weekly": 0, "monthly": 0 });
        assert!(err_of(v).contains("keeps nothing"));
    }

    #[test]
    fn cloud_needs_remote() {
        let mut v = minimal();
        v["cloud"] = serde_json::json!({ "enable": true });
        assert!(err_of(v).contains("cloud.remote"));
    }

    #[test]
    fn new_sections_default_and_validate() {
        let p = Plan::parse(&minimal().to_string()).unwrap();
        assert_eq!(p.cloud.keep_history, 30);
        assert_eq!(p.cloud.max_age, "7d");
        assert!(!p.databases.any_enabled());
        let mut v = minimal();
        v["cloud"] = serde_json::json!({ "maxAge": "soon" });
        assert!(err_of(v).contains("cloud.maxAge"));
        let mut v = minimal();
        v["health"] = serde_json::json!({ "verifyMaxAge": "x" });
        assert!(err_of(v).contains("health.verifyMaxAge"));
    }

    #[test]
    fn database_staging_dir_must_be_backed_up() {
        let mut v = minimal();
        v["databases"] = serde_json::json!({ "postgresql": { "enable": true } });
        let e = err_of(v);
        assert!(e.contains("databases.stagingDir") && e.contains("/var/backup/databases"), "{e}");
        let mut v = minimal();
        v["databases"] = serde_json::json!({ "stagingDir": "/home/dumps",
            "postgresql": { "enable": true, "databases": ["app", "../etc"] } });
        let e = err_of(v);
        assert!(e.contains("databases.postgresql.databases[1]") && e.contains("../etc"), "{e}");
        let mut v = minimal();
        v["databases"] = serde_json::json!({ "stagingDir": "/home/dumps", "mysql": { "enable": true, "colour": 1 } });
        assert!(err_of(v).contains("colour"));
        let mut v = minimal();
        v["databases"] = serde_json::json!({ "stagingDir": "/home/dumps", "postgresql": { "enable": true } });
        Plan::parse(&v.to_string()).unwrap();
    }

    #[test]
    fn hosts_are_validated_strictly() {
        let mut v = minimal();
        v["hosts"] = serde_json::json!({ "web1": { "address": "web1.lan", "user": "root",
            "sources": ["/srv", "/etc"], "retention": { "daily": 3, "weekly": 0, "monthly": 0 } } });
        let p = Plan::parse(&v.to_string()).unwrap();
        let hp = p.pulled_job("web1").unwrap();
        let h = &hp.pulled().unwrap().remote;
        assert_eq!((hp.host(), h.port, h.agent_command.as_str()), ("web1", 22, "hwc-backup agent"));
        assert_eq!(hp.sources.paths, vec![PathBuf::from("/srv"), PathBuf::from("/etc")]);
        assert_eq!(hp.store.retention.daily, Count::N(3));
        assert!(!h.devices, "device nodes of a pulled host are off by default");
        assert!(p.pulled_job("nope").unwrap_err().to_string().contains("web1"));
        for (host, want) in [
            (
                serde_json::json!({ "address": "-oProxyCommand=x", "user": "root", "sources": ["/srv"] }),
                "hosts.web1.address",
            ),
            (serde_json::json!({ "address": "a", "user": "root", "sources": [] }), "hosts.web1.sources"),
            (serde_json::json!({ "address": "a", "user": "root", "sources": ["/a", "/a/b"] }), "overlaps"),
            (serde_json::json!({ "address": "a", "user": "root", "sources": ["/a"], "port": 0 }), "hosts.web1.port"),
            (
                serde_json::json!({ "address": "a", "user": "root", "sources": ["/a"], "sshOptions": ["-F x"] }),
                "sshOptions[0]",
            ),
            (serde_json::json!({ "address": "a", "user": "root", "sources": ["/a"], "colour": 1 }), "colour"),
            (serde_json::json!({ "address": "a", "user": "root", "sources": ["/a"], "devices": "yes" }), "devices"),
            (
                serde_json::json!({ "address": "a", "user": "root", "sources": ["/a"],
                "retention": { "daily": 0, "weekly": 0, "monthly": 0 } }),
                "hosts.web1.retention",
            ),
        ] {
            let mut v = minimal();
            v["hosts"] = serde_json::json!({ "web1": host });
            let e = err_of(v);
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut v = minimal();
        v["hosts"] = serde_json::json!({ "laptop": { "address": "a", "user": "u", "sources": ["/a"] } });
        assert!(err_of(v).contains("own host name"));
    }

    #[test]
    fn sources_in_the_destination_zero_max_age_and_excluding_everything_rejected() {
        for source in ["/mnt/backup", "/mnt/backup/laptop", "/mnt/backup/./laptop/daily"] {
            let mut v = minimal();
            v["sources"] = serde_json::json!(["/home", source]);
            let e = err_of(v);
            assert!(e.contains("sources[1]") && e.contains("destination"), "{source}: {e}");
        }
        // Around the destination is fine: the walk skips the host directory.
        let mut v = minimal();
        v["sources"] = serde_json::json!(["/",]);
        Plan::parse(&v.to_string()).unwrap();
        let mut v = minimal();
        v["sources"] = serde_json::json!(["/mnt/backup2"]);
        Plan::parse(&v.to_string()).unwrap();
        let mut v = minimal();
        v["health"] = serde_json::json!({ "maxAge": "0h" });
        assert!(err_of(v).contains("health.maxAge"));
        let mut v = minimal();
        v["excludePatterns"] = serde_json::json!(["home"]);
        assert!(err_of(v).contains("every source"));
        let mut v = minimal();
        v["excludePatterns"] = serde_json::json!(["home/"]);
        Plan::parse(&v.to_string()).unwrap(); // a directory-only pattern: checked at run time
        assert!(check_host_name("--host", "../other/h").unwrap_err().to_string().contains("--host"));
        check_host_name("--host", "web1.lan").unwrap();
    }

    #[test]
    fn offsites_default_validate_and_name_their_fields() {
        let mut v = minimal();
        v["offsite"] = serde_json::json!({ "nas": { "repository": "/mnt/nas/restic", "passwordFile": "/run/pw" } });
        let p = Plan::parse(&v.to_string()).unwrap();
        let o = &p.offsite["nas"];
        assert_eq!((o.keep.daily, o.keep.weekly, o.keep.monthly), (Count::N(7), Count::N(5), Count::N(12)));
        assert_eq!((o.check.read_data_subset.as_deref(), o.max_age.as_str()), (Some("5%"), "7d"));
        assert_eq!(o.keep.forget_args(), ["--keep-daily", "7", "--keep-weekly", "5", "--keep-monthly", "12"]);
        assert_eq!(p.local_job().offsites().len(), 1);
        assert!(Plan::parse(&minimal().to_string()).unwrap().offsite.is_empty(), "optional");
        let base = serde_json::json!({ "repository": "rclone:proton:b", "passwordFile": "/run/pw" });
        for (name, patch, want) in [
            ("../x", serde_json::json!({}), "offsite.../x"),
            ("nas", serde_json::json!({ "repository": "-o x" }), "offsite.nas.repository"),
            ("nas", serde_json::json!({ "repository": "" }), "offsite.nas.repository"),
            ("nas", serde_json::json!({ "passwordFile": "pw" }), "offsite.nas.passwordFile"),
            ("nas", serde_json::json!({ "environmentFile": "env" }), "offsite.nas.environmentFile"),
            ("nas", serde_json::json!({ "rclone": "rclone" }), "offsite.nas.rclone"),
            ("nas", serde_json::json!({ "keep": { "daily": -2 } }), "offsite.nas.keep.daily"),
            ("nas", serde_json::json!({ "keep": { "within": "soon" } }), "offsite.nas.keep.within"),
            ("nas", serde_json::json!({ "keep": { "daily": 0, "weekly": 0, "monthly": 0 } }), "offsite.nas.keep"),
            ("nas", serde_json::json!({ "check": { "readDataSubset": "200%" } }), "offsite.nas.check.readDataSubset"),
            ("nas", serde_json::json!({ "check": { "readDataSubset": "5" } }), "offsite.nas.check.readDataSubset"),
            ("nas", serde_json::json!({ "bandwidthLimit": 0 }), "offsite.nas.bandwidthLimit"),
            ("nas", serde_json::json!({ "maxAge": "0d" }), "offsite.nas.maxAge"),
            ("nas", serde_json::json!({ "schedule": "" }), "offsite.nas.schedule"),
            ("nas", serde_json::json!({ "colour": 1 }), "colour"),
        ] {
            let mut o = base.clone();
            for (k, val) in patch.as_object().unwrap() {
                o[k] = val.clone();
            }
            let mut v = minimal();
            v["offsite"] = serde_json::json!({ name: o });
            let e = err_of(v);
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut v = minimal();
        v["offsite"] = serde_json::json!({ "b2": { "repository": "b2:bucket:h", "passwordFile": "/run/pw",
            "keep": { "last": 3, "daily": "unlimited", "within": "1y6m" }, "check": { "readDataSubset": null },
            "bandwidthLimit": 512, "schedule": "weekly" } });
        let p = Plan::parse(&v.to_string()).unwrap();
        let args = p.offsite["b2"].keep.forget_args();
        assert!(args.windows(2).any(|w| w == ["--keep-daily", "2147483647"]), "{args:?}");
        assert!(args.ends_with(&["--keep-within".into(), "1y6m".into()]), "{args:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("48h").unwrap(), Duration::from_secs(172800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604800));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn source_snapshots_and_quiesce_are_checked() {
        let p = Plan::parse(&minimal().to_string()).unwrap();
        assert_eq!(p.source_snapshots, SourceSnapshots::None, "a plan without the field reads live");
        let mut v = minimal();
        v["sourceSnapshots"] = "btrfs".into();
        v["quiesce"] = serde_json::json!([{ "unit": "postgresql.service", "mode": "freeze" }]);
        let p = Plan::parse(&v.to_string()).unwrap();
        assert_eq!(p.source_snapshots, SourceSnapshots::Btrfs);
        assert_eq!(p.local_job().local().unwrap().quiesce[0].mode, QuiesceMode::Freeze);
        for kind in ["zfs", "lvm"] {
            v["sourceSnapshots"] = kind.into();
            assert!(Plan::parse(&v.to_string()).is_ok(), "{kind}");
        }
        for good in ["10%ORIGIN", "2G", "512m", "1.5g", "50%FREE", "100%VG"] {
            v["lvmSnapshotSize"] = good.into();
            assert!(Plan::parse(&v.to_string()).is_ok(), "{good}");
        }
        for bad in ["", "10%", "%ORIGIN", "2 G", "-1G", "10%SOURCE", "G", "2GB"] {
            v["lvmSnapshotSize"] = bad.into();
            let e = err_of(v.clone());
            assert!(e.contains("lvmSnapshotSize"), "{bad:?}: {e}");
        }
        v["lvmSnapshotSize"] = serde_json::Value::Null;
        v["lvm"] = "lvm".into();
        assert!(err_of(v.clone()).contains("lvm"));
        v["lvm"] = serde_json::Value::Null;
        v["sourceSnapshots"] = "auto".into();
        for bad in ["", "-x.service", "a b.service", "nosuffix", "x;y.service"] {
            v["quiesce"] = serde_json::json!([{ "unit": bad, "mode": "stop" }]);
            let e = err_of(v.clone());
            assert!(e.contains("quiesce[0].unit"), "{bad:?}: {e}");
        }
        v["quiesce"] = serde_json::json!([{ "unit": "a.service", "mode": "pause" }]);
        assert!(err_of(v.clone()).contains("quiesce"));
        v["quiesce"] = serde_json::json!([]);
        v["btrfs"] = "bin/btrfs".into();
        assert!(err_of(v).contains("btrfs"));
        assert_eq!("btrfs".parse::<SourceSnapshots>(), Ok(SourceSnapshots::Btrfs));
        assert!("ext4".parse::<SourceSnapshots>().is_err());
    }
}
