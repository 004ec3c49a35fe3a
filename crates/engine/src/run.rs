//! One backup run, start to end: preflight, lock, clean up after interrupted runs, pre-hook,
//! build, guards, publish, prune, post-hook.
//!
//! A run never returns an error: it returns a [`RunReport`] whose `state` is `success`,
//! `partial` or `failed`, because the caller (CLI, metrics, notifications) must report a
//! failed run as carefully as a good one.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use jiff::{Timestamp, Zoned};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::exclude::ExcludeSet;
use crate::layout::{self, HostDir};
use crate::lock::HostLock;
use crate::meta::{Counts, RunState, SnapshotMeta, Warning, MANIFEST_FILE, MAX_WARNINGS_KEPT, META_DIR};
use crate::plan::Plan;
use crate::prune::{self, PrunePlan};
use crate::snapshot::{BuildOptions, LinkBase, Progress};
use crate::source::{LocalFs, Source};

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
}

impl RunOptions {
    /// Defaults for a plan.
    pub fn for_plan(plan: &Plan) -> RunOptions {
        RunOptions { now: None, threads: default_threads(), allow_shrink: false, prune: plan.retention.prune_after_run }
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
    /// Why it failed, when it did.
    pub error: Option<String>,
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
    /// What the pre-hook and the database dumps printed, `(what, output)` in order; also
    /// written into the snapshot as `.hwc-backup/run.log`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub run_log: Vec<(String, String)>,
    /// What the postBackup hook printed (or its error); it runs after the snapshot is sealed.
    pub post_backup_output: Option<String>,
    /// Bytes over the network, for a pulled host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<crate::remote::pull::Transfer>,
}

impl RunReport {
    fn new(host: &str, started: Timestamp) -> RunReport {
        RunReport {
            host: host.to_string(),
            state: RunState::Failed,
            error: None,
            snapshot: None,
            snapshot_path: None,
            started_at: started,
            finished_at: started,
            counts: Counts::default(),
            warnings: Vec::new(),
            cleaned_up: Vec::new(),
            prune: None,
            run_log: Vec::new(),
            post_backup_output: None,
            transfer: None,
        }
    }
}

/// Runs the plan once on this machine's filesystem. See the module docs.
pub fn run(plan: &Plan, opts: &RunOptions, progress: Progress) -> RunReport {
    run_from(plan, &LocalFs, opts, progress)
}

/// Runs the plan once, taking the entries from `source` (this machine, or a pulled host).
pub fn run_from(plan: &Plan, source: &dyn Source, opts: &RunOptions, progress: Progress) -> RunReport {
    let started = opts.now.clone().unwrap_or_else(Zoned::now);
    let mut report = RunReport::new(&plan.host, started.timestamp());
    let result = run_inner(plan, source, opts, &started, progress, &mut report);
    if let Err(e) = result {
        report.state = RunState::Failed;
        report.error = Some(e.to_string());
    }
    report.finished_at = finish_time(opts, &started);
    report
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
pub fn preflight(plan: &Plan) -> Result<()> {
    LocalFs.preflight(plan)?;
    preflight_destination(plan)
}

/// The destination's part of [`preflight`].
pub fn preflight_destination(plan: &Plan) -> Result<()> {
    let dest = &plan.destination.path;
    match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::Preflight(format!("destination {} is not a directory", dest.display()))),
        Err(e) => return Err(Error::Preflight(format!("destination {} is not available: {e}", dest.display()))),
    }
    if plan.destination.require_mount_point && !crate::fsutil::is_mount_point(dest)? {
        return Err(Error::Preflight(format!(
            "destination {} is not a mount point (is the backup drive plugged in and mounted?); \
             refusing to write to the filesystem below it",
            dest.display()
        )));
    }
    let free = crate::fsutil::free_bytes(dest)?;
    if free < plan.destination.min_free_bytes {
        return Err(Error::Preflight(format!(
            "destination {} has {} free, less than the required {}",
            dest.display(),
            human_bytes(free),
            human_bytes(plan.destination.min_free_bytes)
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
    plan: &Plan,
    source: &dyn Source,
    opts: &RunOptions,
    started: &Zoned,
    progress: Progress,
    report: &mut RunReport,
) -> Result<()> {
    let excludes =
        ExcludeSet::new(&plan.exclude_patterns).map_err(|e| Error::config("excludePatterns", e.to_string()))?;
    let policy = plan.retention_policy()?;
    source.preflight(plan)?;
    preflight_destination(plan)?;
    let host = HostDir::new(plan.host_dir());
    match std::fs::create_dir(host.root()) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::io("create directory", host.root(), e))
        }
        _ => {}
    }
    let lock = HostLock::acquire(&host.lock_path(), "backup")?;
    report.cleaned_up = clean_leftovers(&host)?;
    // Repairs a `latest` left pointing nowhere by an interruption between two renames.
    host.refresh_latest()?;
    // A failed pre-hook or dump fails the run but still reaches the post-hook below, which
    // may have to restart what the pre-hook stopped.
    let published = prepare(plan, report)
        .and_then(|()| build_and_publish(plan, source, opts, started, &excludes, &host, progress, report));
    if published.is_ok() && opts.prune {
        let snapshots = host.list()?;
        let now = started.timestamp();
        let p = prune::plan(&snapshots, &policy, now, &plan.health.max_age);
        prune::execute(&host, &p)?;
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
    if let Some(hook) = &plan.hooks.post_backup {
        let state = if published.is_ok() { report.state.as_str() } else { "failed" };
        let snap = report.snapshot_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        match run_hook(
            hook,
            "postBackup hook",
            &[("HWC_BACKUP_HOST", &plan.host), ("HWC_BACKUP_STATE", state), ("HWC_BACKUP_SNAPSHOT", &snap)],
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

/// What must happen before the sources are read: the pre-hook, then the database dumps
/// (into a staging directory inside a source). What they print is kept in the report and,
/// by `build_into`, in the snapshot's `.hwc-backup/run.log`.
fn prepare(plan: &Plan, report: &mut RunReport) -> Result<()> {
    if let Some(hook) = &plan.hooks.pre_backup {
        let out = run_hook(hook, "preBackup hook", &[("HWC_BACKUP_HOST", plan.host.as_str())])?;
        report.run_log.push((format!("preBackup hook {}", hook.display()), out));
    }
    for d in crate::dumps::dump_all(plan)? {
        let what = format!("{} dump {} ({} bytes, {:.1}s)", d.engine, d.path.display(), d.bytes, d.seconds);
        report.run_log.push((what, d.stderr));
    }
    Ok(())
}

/// Moves leftovers of interrupted runs into the trash and names them.
fn clean_leftovers(host: &HostDir) -> Result<Vec<String>> {
    let dir = host.incomplete_dir();
    let mut cleaned = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cleaned),
        Err(e) => return Err(Error::io("read directory", &dir, e)),
    };
    for entry in entries {
        let entry = entry.ctx("read directory", &dir)?;
        let path = entry.path();
        if let Err(e) = prune::trash_path(host, &path) {
            // A disk out of space or inodes may not even fit the trash directory: delete in
            // place (we hold the lock), or every later run would fail on this leftover.
            tracing::warn!("{e}; deleting {} in place", path.display());
            crate::fsutil::remove_tree(&path)?;
        }
        cleaned.push(entry.file_name().to_string_lossy().into_owned());
    }
    if !cleaned.is_empty() {
        tracing::info!("cleaned up {} leftover(s) of interrupted runs: {}", cleaned.len(), cleaned.join(", "));
        prune::empty_trash(host)?;
    }
    Ok(cleaned)
}

#[allow(clippy::too_many_arguments)]
fn build_and_publish(
    plan: &Plan,
    source: &dyn Source,
    opts: &RunOptions,
    started: &Zoned,
    excludes: &ExcludeSet,
    host: &HostDir,
    progress: Progress,
    report: &mut RunReport,
) -> Result<()> {
    let existing = host.list()?;
    let name = layout::unique_name(started, &existing);
    let base = existing.last();
    let incomplete = host.incomplete_dir();
    std::fs::create_dir_all(&incomplete).ctx("create directory", &incomplete)?;
    let work = incomplete.join(&name);
    std::fs::create_dir(&work).ctx("create directory", &work)?;
    let result = build_into(plan, source, opts, started, &name, excludes, host, base, &work, progress, report);
    if result.is_err() {
        // Nothing half-written stays behind; if even this fails, the next run cleans up.
        if prune::trash_path(host, &work).and_then(|_| prune::empty_trash(host)).is_err() {
            let _ = crate::fsutil::remove_tree(&work);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn build_into(
    plan: &Plan,
    source: &dyn Source,
    opts: &RunOptions,
    started: &Zoned,
    name: &str,
    excludes: &ExcludeSet,
    host: &HostDir,
    base: Option<&layout::Snapshot>,
    work: &Path,
    progress: Progress,
    report: &mut RunReport,
) -> Result<()> {
    let meta_dir = work.join(META_DIR);
    std::fs::create_dir(&meta_dir).ctx("create directory", &meta_dir)?;
    crate::jsonlog::write_snapshot_log(&meta_dir, &report.run_log)?;
    let cancel = AtomicBool::new(false);
    let bopts = BuildOptions {
        sources: &plan.sources,
        excludes,
        exclude_patterns: &plan.exclude_patterns,
        one_file_system: plan.one_file_system,
        threads: opts.threads,
        skip_dir: Some(host.root()),
        cancel: &cancel,
    };
    let manifest = meta_dir.join(MANIFEST_FILE);
    let base_manifest = base.map(|b| b.path.join(META_DIR).join(MANIFEST_FILE));
    let link_base = base.zip(base_manifest.as_deref()).map(|(b, m)| LinkBase { dir: &b.path, manifest: m });
    let built = source.build(&bopts, work, &manifest, link_base, progress)?;
    report.counts = built.counts.clone();
    report.transfer = built.transfer.clone();
    report.warnings = built.warnings.iter().take(MAX_WARNINGS_KEPT).cloned().collect();
    if !opts.allow_shrink {
        if let Some(b) = base {
            shrink_guard(&b.meta, &built.files_per_source, &plan.sources)?;
        }
    }
    let state = if built.counts.warnings > 0 { RunState::Partial } else { RunState::Success };
    let name = name.to_string();
    let meta = SnapshotMeta {
        format: 1,
        tool: format!("hwc-backup {}", env!("CARGO_PKG_VERSION")),
        host: plan.host.clone(),
        name: name.clone(),
        state,
        started_at: started.timestamp(),
        finished_at: finish_time(opts, started),
        utc_offset: started.offset(),
        sources: plan.sources.clone(),
        exclude_patterns: plan.exclude_patterns.clone(),
        link_base: base.map(layout::Snapshot::id),
        counts: built.counts.clone(),
        files_per_source: built.files_per_source.clone(),
        warnings: report.warnings.clone(),
        nixos_system: source.nixos_system(),
    };
    meta.write(&meta_dir)?;
    // One syncfs makes every copied byte durable before the snapshot becomes visible, so a
    // power cut can never leave a published snapshot with empty files.
    let fd = std::fs::File::open(work).ctx("open", work)?;
    rustix::fs::syncfs(&fd).ctx("sync filesystem of", work)?;
    let daily = host.tier_dir(crate::retention::Tier::Daily);
    std::fs::create_dir_all(&daily).ctx("create directory", &daily)?;
    let target = daily.join(&name);
    std::fs::rename(work, &target).ctx("publish snapshot", &target)?;
    crate::fsutil::sync_dir(&daily)?;
    host.set_latest(&format!("daily/{name}"))?;
    report.state = state;
    report.snapshot = Some(format!("daily/{name}"));
    report.snapshot_path = Some(target);
    Ok(())
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
