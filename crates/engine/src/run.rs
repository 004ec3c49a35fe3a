//! One backup run, start to end: preflight, lock, clean up after interrupted runs, pre-hook,
//! build, guards, publish, prune, post-hook.
//!
//! A run never returns an error: it returns a [`RunReport`] whose `state` is `success`,
//! `partial`, `failed` or `skipped` (another run held the lock), with the error's
//! [`ErrorKind`], because the caller (CLI, metrics, notifications) must report a failed run
//! as carefully as a good one, and decides on the kind, never on the message.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use jiff::{Timestamp, Zoned};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::fs::{Dir, Name};
use crate::job::Job;
use crate::plan::{Destination, Plan};
use crate::source::exclude::ExcludeSet;
use crate::source::local::{BuildOptions, LinkBase, Progress};
use crate::source::{LocalFs, Source};
use crate::store::layout::{self, HostDir};
use crate::store::lock::HostLock;
use crate::store::manifest::{Cursor, ManifestWriter};
use crate::store::meta::{Counts, RunState, SnapshotMeta, Warning, MANIFEST_FILE, MAX_WARNINGS_KEPT, META_DIR};
use crate::store::prune::{self, PrunePlan};

/// How to run, beyond the plan.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The time the run pretends to start at (a testing clock); `None` = now.
    pub now: Option<Zoned>,
    /// Worker threads for the build.
    pub threads: usize,
    /// Allow a source to shrink to nothing or far below the previous snapshot.
    pub allow_shrink: bool,
    /// Prune after the run (the plan's `retention.pruneAfterRun`, unless overridden).
    pub prune: bool,
    /// Pin the new snapshot (`now --pin`): written into its `.hwc-backup/` before it is
    /// published, so no prune can ever see it unpinned.
    pub pin: Option<crate::store::history::pin::Pin>,
    /// List what changed against the link base (`now -v`), in the report's `itemized`.
    pub itemize: bool,
}

impl RunOptions {
    /// Defaults for a plan's own (local) job.
    pub fn for_plan(plan: &Plan) -> RunOptions {
        RunOptions::for_job(&plan.local_job())
    }

    /// Defaults for a job.
    pub fn for_job(job: &Job) -> RunOptions {
        RunOptions {
            now: None,
            threads: default_threads(),
            allow_shrink: false,
            prune: job.store.retention.prune_after_run,
            pin: None,
            itemize: false,
        }
    }
}

/// Worker threads: the machine's cores, at least 2 (a second worker overlaps I/O waits).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// Host name.
    pub host: String,
    /// How it ended.
    pub state: RunState,
    /// Why it failed (or was skipped), when it did.
    pub error: Option<String>,
    /// What kind of failure `error` is: what the CLI's exit code and the notifications
    /// decide on (`locked` for a skipped run).
    pub error_kind: Option<ErrorKind>,
    /// `daily/NAME` of the published snapshot.
    pub snapshot: Option<String>,
    /// Full path of the published snapshot.
    pub snapshot_path: Option<PathBuf>,
    /// Start (UTC).
    pub started_at: Timestamp,
    /// End (UTC).
    pub finished_at: Timestamp,
    /// Counts of the build.
    pub counts: Counts,
    /// The first warnings.
    pub warnings: Vec<Warning>,
    /// Leftovers of interrupted runs that were cleaned up.
    pub cleaned_up: Vec<String>,
    /// What pruning decided, when it ran.
    pub prune: Option<PrunePlan>,
    /// Snapshots removed before the run to make room (`local.makeRoom`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub made_room: Vec<crate::store::make_room::Removal>,
    /// What the pre-hook and the database dumps printed, `(what, output)` in order; also
    /// written into the snapshot as `.hwc-backup/run.log`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub run_log: Vec<(String, String)>,
    /// What the postBackup hook printed (or its error); it runs after the snapshot is sealed.
    pub post_backup_output: Option<String>,
    /// Bytes over the network, for a pulled host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<crate::store::record::Transfer>,
    /// The drive mounted at the destination when the run started (its records are kept per
    /// drive: [`crate::ops::state`]); absent when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<crate::ops::state::DestinationId>,
    /// What changed against the snapshot it was linked to (`now -v`): computed after the
    /// publish and before the prune, which may expire that snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub itemized: Option<crate::store::history::diff::Diff>,
    /// How each source was read (`sourceSnapshots`); empty without filesystem snapshots.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_reads: Vec<crate::source::fs_snapshot::SourceRead>,
    /// The services held still (`quiesce`) and for how long.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_units: Vec<crate::source::quiesce::HeldUnit>,
}

impl RunReport {
    pub(crate) fn new(host: &str, started: Timestamp) -> RunReport {
        RunReport {
            host: host.to_string(),
            state: RunState::Failed,
            error: None,
            error_kind: None,
            snapshot: None,
            snapshot_path: None,
            started_at: started,
            finished_at: started,
            counts: Counts::default(),
            warnings: Vec::new(),
            cleaned_up: Vec::new(),
            prune: None,
            made_room: Vec::new(),
            run_log: Vec::new(),
            post_backup_output: None,
            transfer: None,
            destination: None,
            itemized: None,
            source_reads: Vec::new(),
            held_units: Vec::new(),
        }
    }
}

/// Runs the plan's own job once on this machine's filesystem. See the module docs.
pub fn run(plan: &Plan, opts: &RunOptions, progress: Progress) -> RunReport {
    let job = plan.local_job();
    run_from(&job, crate::source::fs_snapshot::local_source(&job).as_ref(), opts, progress)
}

/// Runs the job once, taking the entries from `source` (this machine, or a pulled host).
/// Hooks and database dumps run only for a local job: a pulled one has none.
pub fn run_from(job: &Job, source: &dyn Source, opts: &RunOptions, progress: Progress) -> RunReport {
    let started = opts.now.clone().unwrap_or_else(Zoned::now);
    let mut report = RunReport::new(job.host(), started.timestamp());
    report.destination = crate::ops::state::DestinationId::mounted(&job.store.destination);
    let result = run_inner(job, source, opts, &started, progress, &mut report);
    match result {
        Err(e) => {
            // Finding the lock held is not a failure: the run that holds it does the work.
            report.state = if e.is_locked() { RunState::Skipped } else { RunState::Failed };
            report.error = Some(e.to_string());
            report.error_kind = Some(e.kind());
        }
        Ok(()) => warn_future_snapshots(job, &mut report),
    }
    report.finished_at = finish_time(opts, &started);
    report
}

/// Why a run need not start: the newest complete snapshot of the job's host directory is
/// younger than `min_interval` at time `now` (`now --min-interval`, so that remounting a
/// drive does not start a second run). `None` when it is older, dated ahead of `now`, or
/// when there is none or the destination cannot be read (the run then finds out why).
pub fn too_recent(job: &Job, min_interval: std::time::Duration, now: Timestamp) -> Option<String> {
    let newest = HostDir::open(&job.store.host_dir()).and_then(|h| h.list()).ok()?.pop()?;
    let age = now.as_second() - newest.time().as_second();
    let younger = age >= 0 && (age as u64) < min_interval.as_secs();
    younger.then(|| {
        format!(
            "the newest snapshot {} is {} old, younger than --min-interval {}; not running",
            newest.id(),
            crate::ops::health::words(std::time::Duration::from_secs(age as u64)),
            crate::ops::health::words(min_interval)
        )
    })
}

/// Adds a warning for every snapshot dated in the future (see [`crate::store::clock`]), which makes
/// a successful run partial.
fn warn_future_snapshots(job: &Job, report: &mut RunReport) {
    let Some(published) = report.snapshot.clone() else { return };
    let all = match HostDir::open(&job.store.host_dir()).and_then(|h| h.list()) {
        Ok(all) => all,
        Err(e) => return tracing::warn!("cannot check the snapshots' dates: {e}"),
    };
    let warnings = crate::store::clock::future_warnings(&all, &published, Timestamp::now());
    if warnings.is_empty() {
        return;
    }
    report.counts.warnings += warnings.len() as u64;
    report.warnings.splice(0..0, warnings);
    report.warnings.truncate(MAX_WARNINGS_KEPT);
    if report.state == RunState::Success {
        report.state = RunState::Partial;
    }
}

fn finish_time(opts: &RunOptions, started: &Zoned) -> Timestamp {
    match &opts.now {
        // With a testing clock, the run "takes" as long as it really took.
        Some(_) => started.timestamp(),
        None => Timestamp::now(),
    }
}

/// Checks that must pass before anything is written: sources exist, the destination is
/// there (and mounted, if required), and has room.
pub fn preflight(job: &Job) -> Result<()> {
    LocalFs.preflight(job)?;
    preflight_destination(&job.store.destination)
}

/// The destination's part of [`preflight`].
pub fn preflight_destination(destination: &Destination) -> Result<()> {
    let dest = &destination.path;
    match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::Preflight(format!("destination {} is not a directory", dest.display()))),
        Err(e) => return Err(Error::Preflight(format!("destination {} is not available: {e}", dest.display()))),
    }
    if destination.require_mount_point && !crate::fs::fsutil::is_mount_point(dest)? {
        return Err(Error::Preflight(format!(
            "destination {} is not a mount point (is the backup drive plugged in and mounted?); \
             refusing to write to the filesystem below it",
            dest.display()
        )));
    }
    let free = crate::fs::fsutil::free_bytes(dest)?;
    // With makeRoom the run makes room itself, under the lock (`store::make_room`).
    if free < destination.min_free_bytes && !destination.make_room {
        return Err(Error::Preflight(format!(
            "destination {} has {} free, less than the required {}",
            dest.display(),
            human_bytes(free),
            human_bytes(destination.min_free_bytes)
        )));
    }
    Ok(())
}

/// `12.3 GiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn run_inner(
    job: &Job,
    source: &dyn Source,
    opts: &RunOptions,
    started: &Zoned,
    progress: Progress,
    report: &mut RunReport,
) -> Result<()> {
    let excludes =
        ExcludeSet::new(&job.sources.exclude_patterns).map_err(|e| Error::config("excludePatterns", e.to_string()))?;
    let policy = job.store.retention_policy()?;
    source.preflight(job)?;
    preflight_destination(&job.store.destination)?;
    let dest = Dir::open_trusted(&job.store.destination.path)?;
    let host_name = Name::new(job.host()).map_err(|e| Error::config("host", e.to_string()))?;
    let host = HostDir::create(&dest, &host_name)?;
    let lock = HostLock::acquire(&host, "backup")?;
    // Leftovers first: what they hold is room that makeRoom must not pay for with snapshots.
    report.cleaned_up = clean_leftovers(&host, &lock)?;
    if job.store.destination.make_room {
        let (destination, min_backups) = (&job.store.destination, job.store.health.min_backups);
        report.made_room =
            crate::store::make_room::make_room(&host, &lock, destination, min_backups, started.timestamp())?;
    }
    crate::store::btrfs::seal_published(&host)?;
    // Repairs a `latest` left pointing nowhere by an interruption between two renames.
    host.refresh_latest(&lock)?;
    // A failed pre-hook or dump fails the run but still reaches the post-hook below, which
    // may have to restart what the pre-hook stopped.
    let published = prepare(job, report).and_then(|()| {
        let target = Target { dest: &dest, host: &host, lock: &lock };
        build_and_publish(job, source, opts, started, &excludes, &target, progress, report)
    });
    if published.is_ok() && opts.itemize {
        report.itemized = itemize(&host, report.snapshot.as_deref());
    }
    if published.is_ok() && opts.prune {
        let snapshots = host.list()?;
        let now = started.timestamp();
        let p = prune::plan(&snapshots, &policy, now, &job.store.health.max_age);
        prune::execute(&host, &lock, &p)?;
        if let Some(reason) = &p.refused {
            tracing::warn!("prune refused: {reason}");
        }
        report.prune = Some(p);
        // Where the snapshot lives after pruning may have changed (daily → weekly …).
        if let (Some(name), Ok(all)) = (report.snapshot.clone(), host.list()) {
            if let Some(s) = all.iter().find(|s| Some(s.name.as_str()) == name.split('/').nth(1)) {
                report.snapshot = Some(s.id());
                report.snapshot_path = Some(s.path.clone());
            }
        }
    }
    if let Some(hook) = job.local().and_then(|l| l.hooks.post_backup.as_ref()) {
        let state = if published.is_ok() { report.state.as_str() } else { "failed" };
        let snap = report.snapshot_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        match run_hook(
            hook,
            "postBackup hook",
            &[("HWC_BACKUP_HOST", job.host()), ("HWC_BACKUP_STATE", state), ("HWC_BACKUP_SNAPSHOT", &snap)],
        ) {
            Ok(out) => report.post_backup_output = Some(out),
            Err(e) => {
                tracing::warn!("{e}");
                report.post_backup_output = Some(e.to_string());
            }
        }
    }
    drop(lock);
    // The slow part of expiry, outside the lock.
    if let Err(e) = prune::empty_trash(&host) {
        tracing::warn!("emptying the trash: {e}");
    }
    published
}

/// The changes from the new snapshot's link base to it; `None` without a base (everything
/// is new) or when either cannot be read (a listing is a nicety, never a reason to fail).
fn itemize(host: &HostDir, published: Option<&str>) -> Option<crate::store::history::diff::Diff> {
    let new = host.resolve(published?).ok()?;
    let base = host.resolve(new.meta.link_base.as_deref()?).ok()?;
    match crate::store::history::diff::diff(host, &base, &new, std::path::Path::new("/")) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!("listing the changes against {}: {e}", base.id());
            None
        }
    }
}

/// What must happen before the sources are read: the pre-hook, then the database dumps
/// (into a staging directory inside a source). What they print is kept in the report and,
/// by `build_into`, in the snapshot's `.hwc-backup/run.log`. Only the local job has either.
fn prepare(job: &Job, report: &mut RunReport) -> Result<()> {
    let Some(local) = job.local() else { return Ok(()) };
    if let Some(hook) = &local.hooks.pre_backup {
        let out = run_hook(hook, "preBackup hook", &[("HWC_BACKUP_HOST", job.host())])?;
        report.run_log.push((format!("preBackup hook {}", hook.display()), out));
    }
    for d in crate::source::dumps::dump_all(&local.databases)? {
        let what = format!("{} dump {} ({} bytes, {:.1}s)", d.engine, d.path.display(), d.bytes, d.seconds);
        report.run_log.push((what, d.stderr));
    }
    Ok(())
}

/// Moves leftovers of interrupted runs into the trash and names them. Anything found in
/// `.incomplete/` is a leftover, also a stray file: removed, never a reason to fail every
/// later run.
fn clean_leftovers(host: &HostDir, lock: &HostLock) -> Result<Vec<String>> {
    let incomplete = host.incomplete(lock)?;
    let mut cleaned = Vec::new();
    for entry in incomplete.entries()? {
        if let Err(e) = prune::trash_entry(host, lock, &incomplete, &entry.name) {
            // A disk out of space or inodes may not even fit the trash directory: delete in
            // place (we hold the lock), or every later run would fail on this leftover.
            tracing::warn!("{e}; deleting {} in place", incomplete.child_path(&entry.name).display());
            incomplete.remove_snapshot(&entry.name)?;
        }
        cleaned.push(entry.name.to_string());
    }
    if !cleaned.is_empty() {
        tracing::info!("cleaned up {} leftover(s) of interrupted runs: {}", cleaned.len(), cleaned.join(", "));
        // An entry of the trash that cannot be deleted is named; it must not stop every run.
        if let Err(e) = prune::empty_trash(host) {
            tracing::warn!("emptying the trash: {e}");
        }
    }
    Ok(cleaned)
}

/// Where a run writes: the destination and the host directory, held open, and the lock.
struct Target<'a> {
    dest: &'a Dir,
    host: &'a HostDir,
    lock: &'a HostLock,
}

#[allow(clippy::too_many_arguments)]
fn build_and_publish(
    job: &Job,
    source: &dyn Source,
    opts: &RunOptions,
    started: &Zoned,
    excludes: &ExcludeSet,
    target: &Target,
    progress: Progress,
    report: &mut RunReport,
) -> Result<()> {
    let host = target.host;
    let existing = host.list()?;
    let name = Name::new(layout::unique_name(started, &existing)).expect("snapshot names are one component");
    let base = existing.last();
    let incomplete = host.incomplete(target.lock)?;
    let base_dir = base.map(|b| host.open_snapshot(b)).transpose()?;
    // A pull fills an empty tree: it has no in-place mode (see `store::btrfs`).
    let in_place = job.pulled().is_none();
    let mode = job.store.destination.store;
    let work = crate::store::btrfs::create_work(mode, &incomplete, &name, base_dir.as_ref(), in_place)?;
    drop(base_dir);
    let result =
        build_into(job, source, opts, started, &name, excludes, target, base, &incomplete, &work, progress, report);
    if result.is_err() {
        drop(work);
        // Nothing half-written stays behind; if even this fails, the next run cleans up.
        let trashed = prune::trash_entry(host, target.lock, &incomplete, &name).and_then(|()| prune::empty_trash(host));
        if trashed.is_err() {
            let _ = incomplete.remove_snapshot(&name);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn build_into(
    job: &Job,
    source: &dyn Source,
    opts: &RunOptions,
    started: &Zoned,
    name: &Name,
    excludes: &ExcludeSet,
    target: &Target,
    base: Option<&layout::Snapshot>,
    incomplete: &Dir,
    work: &crate::store::btrfs::Work,
    progress: Progress,
    report: &mut RunReport,
) -> Result<()> {
    let work_dir = &work.dir;
    if work.method == crate::store::place::Method::Keep {
        // The previous snapshot's metadata, manifest and pin, in the snapshot of it.
        work_dir.remove_tree(&Name::fixed(META_DIR))?;
    }
    let meta_handle = work_dir.create_new_dir(&Name::fixed(META_DIR), 0o755)?;
    crate::ops::jsonlog::write_snapshot_log(&meta_handle, &report.run_log)?;
    let cancel = AtomicBool::new(false);
    let held = target.host.dir()?.stat_self()?;
    let host_identity = (held.st_dev, held.st_ino);
    let bopts = BuildOptions {
        sources: &job.sources.paths,
        excludes,
        exclude_patterns: &job.sources.exclude_patterns,
        one_file_system: job.sources.one_file_system,
        exclude_by: &job.sources.exclude_by,
        threads: opts.threads,
        skip_dir: Some(host_identity),
        cancel: &cancel,
        roots: None,
        method: work.method,
    };
    let manifest = ManifestWriter::create_in(&meta_handle, &Name::fixed(MANIFEST_FILE))?;
    // The link base is opened through the host directory (tier, then name, never through a
    // symlink), so what unchanged files are hard-linked to is the snapshot we listed.
    let base_dir = base.map(|b| target.host.open_snapshot(b)).transpose()?;
    let link_base = base_dir.as_ref().map(|dir| {
        let meta = dir.try_open_dir(&Name::fixed(META_DIR)).ok().flatten();
        let manifest = Cursor::open_in(meta.as_ref(), &Name::fixed(MANIFEST_FILE));
        // Damaged copies a verify found on this drive are never hard-linked into the new snapshot.
        let avoid = crate::ops::state::StateDir::records_now(&job.store).records.damage().inodes().collect();
        let pulled = !matches!(job.kind, crate::job::Kind::Local(_));
        let settled_before = base.and_then(|b| b.meta.settled_before(pulled));
        LinkBase { dir, manifest, avoid, settled_before }
    });
    let walk_started = jiff::Timestamp::now();
    let built = source.build(&bopts, work_dir, manifest, link_base, progress);
    report.source_reads = source.source_reads();
    report.held_units = source.held_units();
    let built = built?;
    report.counts = built.counts.clone();
    report.transfer = built.transfer.clone();
    report.warnings = built.warnings.iter().take(MAX_WARNINGS_KEPT).cloned().collect();
    if !opts.allow_shrink {
        if let Some(b) = base {
            shrink_guard(&b.meta, &built.files_per_source, &job.sources.paths)?;
        }
    }
    let state = if built.counts.warnings > 0 { RunState::Partial } else { RunState::Success };
    let name = name.to_string();
    let name_c = Name::new(&name).expect("checked by the caller");
    let meta = SnapshotMeta {
        format: 1,
        tool: format!("hwc-backup {}", env!("CARGO_PKG_VERSION")),
        host: job.host().to_string(),
        name: name.clone(),
        state,
        started_at: started.timestamp(),
        finished_at: finish_time(opts, started),
        walk_started_at: Some(walk_started),
        client_walk_started_at: built.client_walk_started.and_then(|t| jiff::Timestamp::from_second(t).ok()),
        utc_offset: started.offset(),
        sources: job.sources.paths.clone(),
        exclude_patterns: job.sources.exclude_patterns.clone(),
        link_base: base.map(layout::Snapshot::id),
        counts: built.counts.clone(),
        files_per_source: built.files_per_source.clone(),
        warnings: report.warnings.clone(),
        nixos_system: source.nixos_system(),
        source_reads: report.source_reads.clone(),
        held_units: report.held_units.clone(),
    };
    // The manifest, meta.json and pin.json get no fsyncs of their own: the syncfs below makes
    // them durable with the rest of the snapshot before it is published.
    meta.write_unpublished(&meta_handle)?;
    if let Some(pin) = &opts.pin {
        let mut text = serde_json::to_vec_pretty(pin).expect("a pin serializes");
        text.push(b'\n');
        meta_handle.write_atomic_unsynced(&Name::fixed(crate::store::history::pin::PIN_FILE), &text)?;
    }
    // One syncfs makes every copied byte durable before the snapshot becomes visible, so a
    // power cut can never leave a published snapshot with empty files.
    work_dir.sync_filesystem()?;
    still_mounted(&job.store.destination.path, target.dest)?;
    let daily = target.host.tier_for_write(target.lock, crate::store::retention::Tier::Daily)?;
    incomplete.rename_noreplace(&name_c, &daily, &name_c).map_err(|e| match e {
        Error::Io { source, .. } => Error::io("publish snapshot", daily.child_path(&name_c), source),
        e => e,
    })?;
    if work.subvolume {
        // Read-only from now on; the kernel moves no read-only subvolume into another
        // directory, so the flag follows the rename (see `store::btrfs`). The snapshot is
        // published: a flag that cannot be set is a warning (the next run seals it), not a
        // failed run whose `latest` stays behind.
        if let Err(e) = work_dir.set_subvolume_readonly(true) {
            tracing::warn!("{e}; the next run makes it read-only");
        }
    }
    daily.sync()?;
    let target_path = daily.child_path(&name_c);
    target.host.set_latest(target.lock, &format!("daily/{name}"))?;
    report.state = state;
    report.snapshot = Some(format!("daily/{name}"));
    report.snapshot_path = Some(target_path);
    Ok(())
}

/// Refuses to publish when the destination path no longer leads to the directory the run
/// opened (`umount -l` during the run, a drive pulled and the mount point left bare): the
/// snapshot would land on a detached filesystem, and nothing is ever written below the
/// mount point because everything goes through the handle opened at the start.
fn still_mounted(path: &Path, dest: &Dir) -> Result<()> {
    let held = dest.stat_self()?;
    let now = rustix::fs::stat(path).ok();
    if now.is_some_and(|st| (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)) {
        return Ok(());
    }
    Err(Error::Preflight(format!(
        "destination {} vanished during the run (unmounted?); the snapshot was not published",
        path.display()
    )))
}

/// Refuses a snapshot in which a source that had files before is now empty, or has fewer
/// than half its files (with at least 100 before): the sign of an unmounted disk or a
/// deleted tree, which a backup must not quietly bless.
fn shrink_guard(
    prev: &SnapshotMeta,
    now: &std::collections::BTreeMap<PathBuf, u64>,
    sources: &[PathBuf],
) -> Result<()> {
    for s in sources {
        let before = prev.files_per_source.get(s).copied().unwrap_or(0);
        let after = now.get(s).copied().unwrap_or(0);
        if before > 0 && after == 0 {
            return Err(Error::Guard(format!(
                "source {} is empty but held {before} files in the previous snapshot (unmounted disk?); \
                 run with --allow-shrink if this is intended",
                s.display()
            )));
        }
        if before >= 100 && after * 2 < before {
            return Err(Error::Guard(format!(
                "source {} shrank from {before} to {after} files since the previous snapshot; \
                 run with --allow-shrink if this is intended",
                s.display()
            )));
        }
    }
    Ok(())
}

/// Runs a hook; a non-zero exit is an error carrying the tail of its output.
pub fn run_hook(path: &Path, what: &str, env: &[(&str, &str)]) -> Result<String> {
    let out = std::process::Command::new(path)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            what: what.to_string(),
            message: format!("cannot run {}: {e}", path.display()),
        })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        return Ok(text);
    }
    let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    Err(Error::Command {
        what: what.to_string(),
        message: format!("{} exited with {}: {tail}", path.display(), out.status),
    })
}
