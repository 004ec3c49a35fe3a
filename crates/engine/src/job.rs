//! Jobs: what one run, prune, health check, metrics file or notification works on, with
//! exactly the inputs it needs.
//!
//! The plan (`plan::Plan`) is the document the NixOS module renders; it is never handed to a
//! run. It yields one [`Job`] for this machine ([`Plan::local_job`]) and one for each host it
//! pulls ([`Plan::pulled_job`]), and a command given `--dest` without a plan builds a
//! [`Store`] (or a pulled [`Job`]) straight from its arguments.
//!
//! What belongs to this machine — hooks, database dumps, the cloud copy — lives only in
//! [`LocalJob`]; a pulled host's job is a [`PulledJob`], which has no field for them, so a
//! new per-machine setting cannot leak into pulled hosts: it has to be added to `LocalJob`.
//!
//! [`Plan::local_job`]: crate::plan::Plan::local_job
//! [`Plan::pulled_job`]: crate::plan::Plan::pulled_job

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::plan::{
    default_log_dir, parse_duration, Cloud, Databases, Destination, Health, Hooks, Metrics, Notifications, RemoteHost,
    Retention,
};

/// One host's directory at a destination, the rules that judge its snapshots, and where its
/// records are kept: all that prune, health, status and metrics need.
#[derive(Clone, Debug, PartialEq)]
pub struct Store {
    /// The host's name: its directory under the destination and under `state_dir`.
    pub host: String,
    /// Where the snapshots go.
    pub destination: Destination,
    /// Which snapshots to keep.
    pub retention: Retention,
    /// What counts as healthy (`maxAge` also stops pruning of a stale host).
    pub health: Health,
    /// The state directory of all hosts; this host's is [`Store::host_state_dir`].
    pub state_dir: PathBuf,
}

impl Store {
    /// A host directory named on the command line (`--dest DIR [--host NAME]`, no plan): the
    /// built-in retention and health defaults, no mount requirement.
    pub fn ad_hoc(host: String, dest: PathBuf, state_dir: PathBuf) -> Store {
        Store {
            host,
            destination: Destination {
                path: dest,
                require_mount_point: false,
                min_free_bytes: 0,
                make_room: false,
                store: crate::plan::StoreMode::Auto,
            },
            retention: Retention::default(),
            health: Health::default(),
            state_dir,
        }
    }

    /// The directory of this host's snapshots: `<destination>/<host>`.
    pub fn host_dir(&self) -> PathBuf {
        self.destination.path.join(&self.host)
    }

    /// Where state about this host is kept between runs: `<stateDir>/<host>/`.
    pub fn host_state_dir(&self) -> PathBuf {
        self.state_dir.join(&self.host)
    }

    /// The retention policy, validated; a policy that keeps nothing is an error.
    pub fn retention_policy(&self) -> Result<crate::store::retention::Policy> {
        self.retention.policy()
    }

    /// `health.maxAge` as a duration (validated at load).
    pub fn max_age(&self) -> Duration {
        parse_duration(&self.health.max_age).unwrap_or(Duration::from_secs(48 * 3600))
    }

    /// `health.verifyMaxAge` as a duration (validated at load).
    pub fn verify_max_age(&self) -> Option<Duration> {
        self.health.verify_max_age.as_deref().and_then(|v| parse_duration(v).ok())
    }
}

/// What a run reads: absolute paths (on this machine or on the pulled host) and excludes.
#[derive(Clone, Debug, PartialEq)]
pub struct Sources {
    /// Absolute paths to back up.
    pub paths: Vec<PathBuf>,
    /// rsync-style exclude patterns.
    pub exclude_patterns: Vec<String>,
    /// Whether to stay on the filesystem of each source.
    pub one_file_system: bool,
    /// `excludeCaches`, `excludeIfPresent`, `excludeLargerThan` (validated with the plan).
    pub exclude_by: crate::source::markers::ExcludeBy,
}

/// Where a job tells what it did: JSON logs, the metrics file, notifications.
#[derive(Clone, Debug, PartialEq)]
pub struct Reporting {
    /// Directory for JSON-lines logs.
    pub log_dir: PathBuf,
    /// Prometheus textfile output.
    pub metrics: Metrics,
    /// Who to tell, and when.
    pub notifications: Notifications,
}

impl Reporting {
    /// A run without a plan: the defaults, and no failure notifications (nothing is
    /// configured to receive them; the CLI writes no logs or metrics for such a run).
    pub fn ad_hoc() -> Reporting {
        Reporting {
            log_dir: default_log_dir(),
            metrics: Metrics::default(),
            notifications: Notifications { on_failure: false, ..Notifications::default() },
        }
    }
}

/// What ZFS and LVM source snapshots are taken with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeSnapshots {
    /// The lvm program; `None` = `lvm` on PATH.
    pub lvm: Option<std::path::PathBuf>,
    /// The zfs program; `None` = `zfs` on PATH.
    pub zfs: Option<std::path::PathBuf>,
    /// `lvmSnapshotSize`; `None` = `10%ORIGIN`.
    pub lvm_snapshot_size: Option<String>,
}

/// What only this machine's own job has: programs around the snapshot, database dumps, and
/// the cloud copy.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalJob {
    /// Which filesystem snapshots the sources are read from.
    pub source_snapshots: crate::plan::SourceSnapshots,
    /// Services held still while the snapshots are taken.
    pub quiesce: Box<[crate::plan::Quiesce]>,
    /// The btrfs program; `None` = `btrfs` on PATH.
    pub btrfs: Option<Box<std::path::Path>>,
    /// The lvm and zfs programs and `lvmSnapshotSize` (boxed, to keep [`Kind`] small).
    pub volume_snapshots: Box<VolumeSnapshots>,
    /// Programs to run around the snapshot.
    pub hooks: Hooks,
    /// Database dumps taken before the snapshot.
    pub databases: Box<Databases>,
    /// Pushing the newest snapshot to a cloud remote.
    pub cloud: Cloud,
    /// Offsite restic copies of the newest snapshot, by name (`plan.offsite`). A pulled
    /// host's job has none: its snapshots are this server's to copy only through its own plan.
    pub offsite: std::collections::BTreeMap<String, crate::plan::Offsite>,
}

/// What only a pulled host's job has: how to reach its agent. Deliberately nothing else —
/// no hooks, dumps or cloud copy, which are this machine's.
#[derive(Clone, Debug, PartialEq)]
pub struct PulledJob {
    /// The host's entry in the plan (`hosts.<name>`): address, user, ssh settings.
    pub remote: RemoteHost,
}

/// Whose job it is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// This machine's backup of its own filesystem.
    Local(LocalJob),
    /// Another machine's backup, pulled over ssh.
    Pulled(PulledJob),
}

/// One backup job: a host's store, its sources, where it reports, and what only its kind has.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The host directory and its rules.
    pub store: Store,
    /// What to back up.
    pub sources: Sources,
    /// Logs, metrics and notifications.
    pub reporting: Reporting,
    /// Local or pulled, with the inputs only that kind has.
    pub kind: Kind,
}

impl Job {
    /// The host's name.
    pub fn host(&self) -> &str {
        &self.store.host
    }

    /// This machine's own inputs, for the local job.
    pub fn local(&self) -> Option<&LocalJob> {
        match &self.kind {
            Kind::Local(l) => Some(l),
            Kind::Pulled(_) => None,
        }
    }

    /// The pulled host's inputs, for a pulled job.
    pub fn pulled(&self) -> Option<&PulledJob> {
        match &self.kind {
            Kind::Pulled(p) => Some(p),
            Kind::Local(_) => None,
        }
    }

    /// The cloud copy, when this is the local job and it is enabled.
    pub fn cloud(&self) -> Option<&Cloud> {
        self.local().map(|l| &l.cloud).filter(|c| c.enable)
    }

    /// The offsite copies, when this is the local job (empty otherwise).
    pub fn offsites(&self) -> Vec<(&str, &crate::plan::Offsite)> {
        self.local().map(|l| l.offsite.iter().map(|(k, v)| (k.as_str(), v)).collect()).unwrap_or_default()
    }

    /// A pull without a plan (`pull --address … --dest DIR --host NAME`): everything from the
    /// arguments, the built-in retention and health defaults. `remote` is checked as a plan's
    /// `hosts.<name>` entry would be, so the messages name the same fields.
    pub fn pulled_ad_hoc(name: &str, remote: RemoteHost, dest: PathBuf, state_dir: PathBuf) -> Result<Job> {
        crate::plan::absolute("destination.path", &dest)?;
        remote.validate_entry(name)?;
        crate::plan::absolute("stateDir", &state_dir)?;
        let retention = remote.retention.clone().unwrap_or_default();
        Ok(Job {
            store: Store { retention, ..Store::ad_hoc(name.to_string(), dest, state_dir) },
            sources: remote.sources(),
            reporting: Reporting::ad_hoc(),
            kind: Kind::Pulled(PulledJob { remote }),
        })
    }
}

impl RemoteHost {
    /// This host's sources, as its job reads them.
    pub fn sources(&self) -> Sources {
        Sources {
            paths: self.sources.clone(),
            exclude_patterns: self.exclude_patterns.clone(),
            one_file_system: self.one_file_system,
            // Validated with the plan; a host built in code without validation gets none.
            exclude_by: self.exclude_by().unwrap_or_default(),
        }
    }
}

/// Fails with a config error naming the known hosts when `name` is not one of them.
pub(crate) fn unknown_host(name: &str, known: Vec<&str>) -> Error {
    Error::config(
        "hosts",
        format!("has no host {name:?} (declared: {})", if known.is_empty() { "none".into() } else { known.join(", ") }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Count, Plan};

    /// A plan where this machine has every per-machine setting: hooks, dumps, a cloud copy and
    /// a healthchecks.io check, and pulls one host.
    fn plan_with_everything() -> Plan {
        let v = serde_json::json!({
            "version": 1, "host": "server",
            "destination": { "path": "/mnt/backup" },
            "sources": ["/home", "/var/backup"],
            "hooks": { "preBackup": "/bin/pre", "postBackup": "/bin/post" },
            "databases": { "stagingDir": "/var/backup/db", "postgresql": { "enable": true } },
            "cloud": { "enable": true, "remote": "proton:Backups" },
            "offsite": { "nas": { "repository": "/mnt/nas/restic", "passwordFile": "/run/pw" } },
            "notifications": { "healthchecks": { "url": "https://hc.example/ping/x" },
                               "ntfy": { "url": "https://ntfy.example/backups" } },
            "metrics": { "textfileDir": "/var/lib/prometheus-node-exporter" },
            "hosts": { "web1": { "address": "web1.lan", "user": "root", "sources": ["/srv"],
                                 "excludePatterns": ["*.tmp"],
                                 "retention": { "daily": 3, "weekly": 0, "monthly": 0 } } }
        });
        Plan::parse(&v.to_string()).unwrap()
    }

    #[test]
    fn the_local_job_has_this_machines_settings() {
        let plan = plan_with_everything();
        let job = plan.local_job();
        let local = job.local().expect("the plan's own job is local");
        assert_eq!(local.hooks.pre_backup.as_deref(), Some(std::path::Path::new("/bin/pre")));
        assert!(local.databases.any_enabled());
        assert!(job.cloud().is_some());
        assert_eq!(job.offsites().len(), 1);
        assert!(plan.pulled_job("web1").unwrap().offsites().is_empty(), "a pulled host has no offsite copies");
        assert!(job.reporting.notifications.healthchecks.is_some());
        assert_eq!((job.host(), job.store.host_dir()), ("server", PathBuf::from("/mnt/backup/server")));
        assert_eq!(job.store.host_state_dir(), PathBuf::from("/var/lib/hwc-backup/server"));
        assert_eq!(plan.jobs().first(), Some(&job));
    }

    #[test]
    fn a_pulled_job_cannot_carry_this_machines_hooks_dumps_or_cloud() {
        let plan = plan_with_everything();
        let jobs = plan.jobs();
        assert_eq!(jobs.len(), 2);
        let job = &jobs[1];
        assert_eq!(job, &plan.pulled_job("web1").unwrap());
        // By construction: a pulled job's own inputs are its host entry and nothing else.
        // This pattern names every field of `PulledJob` (no `..`), so adding one — say this
        // machine's hooks — stops this test from compiling until someone decides here.
        let Kind::Pulled(PulledJob { remote }) = &job.kind else { panic!("web1 is pulled: {job:?}") };
        assert_eq!(remote.address, "web1.lan");
        assert!(job.local().is_none() && job.cloud().is_none());
        // The host's own sources, excludes and retention; this plan's destination, health
        // thresholds, state directory, logs and metrics.
        assert_eq!(job.host(), "web1");
        assert_eq!(job.sources, remote.sources());
        assert_eq!(job.sources.exclude_patterns, vec!["*.tmp".to_string()]);
        assert_eq!(job.store.retention.daily, Count::N(3));
        assert_eq!(job.store.host_dir(), PathBuf::from("/mnt/backup/web1"));
        assert_eq!(job.store.host_state_dir(), PathBuf::from("/var/lib/hwc-backup/web1"));
        assert_eq!(job.store.health, plan.health);
        assert_eq!(job.reporting.metrics, plan.metrics);
        // healthchecks.io is the local job's dead man's switch; the other targets stay.
        assert!(job.reporting.notifications.healthchecks.is_none());
        assert_eq!(job.reporting.notifications.ntfy, plan.notifications.ntfy);
    }

    #[test]
    fn a_pull_without_a_plan_is_checked_like_a_hosts_entry() {
        let plan = plan_with_everything();
        let remote = plan.hosts["web1"].clone();
        let job = Job::pulled_ad_hoc("web1", remote.clone(), "/mnt/x".into(), "/state".into()).unwrap();
        assert_eq!((job.host(), job.store.host_dir()), ("web1", PathBuf::from("/mnt/x/web1")));
        assert!(!job.store.destination.require_mount_point);
        assert_eq!(job.store.retention.daily, Count::N(3));
        assert!(job.cloud().is_none() && job.local().is_none());
        let bad = RemoteHost { address: "-oProxyCommand=x".into(), ..remote.clone() };
        let e = Job::pulled_ad_hoc("web1", bad, "/mnt/x".into(), "/state".into()).unwrap_err().to_string();
        assert!(e.contains("hosts.web1.address"), "{e}");
        let e = Job::pulled_ad_hoc("web1", remote, "mnt".into(), "/state".into()).unwrap_err().to_string();
        assert!(e.contains("destination.path"), "{e}");
    }

    #[test]
    fn a_store_from_the_command_line_has_the_built_in_rules() {
        let s = Store::ad_hoc("h".into(), "/mnt/x".into(), "/state".into());
        assert_eq!(s.retention, Retention::default());
        assert_eq!(s.max_age(), Duration::from_secs(48 * 3600));
        assert!(s.retention_policy().is_ok() && !s.destination.require_mount_point);
        assert_eq!(s.host_state_dir(), PathBuf::from("/state/h"));
    }
}
