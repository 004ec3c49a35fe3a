//! `now`: one backup run of this machine, from the plan or from `--source … --dest`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hwc_backup_engine::fs::fsutil;
use hwc_backup_engine::job::Job;
use hwc_backup_engine::plan::Plan;
use hwc_backup_engine::run::{self, human_bytes, RunOptions, RunReport};
use hwc_backup_engine::store::meta::RunState;

use super::parse_now;
use crate::args::NowArgs;
use crate::exit::Exit;
use crate::progress::Progress;

/// The job `now` runs: the plan's own, or one from `--source … --dest` (checked as a plan
/// with those values, so the messages name the same fields).
pub(crate) fn job_for_now(a: &NowArgs) -> Result<Job> {
    let mut job = job_from_args(a)?;
    if let Some(mode) = a.store {
        job.store.destination.store = mode;
    }
    Ok(job)
}

fn job_from_args(a: &NowArgs) -> Result<Job> {
    if a.sources.is_empty() && a.target.dest.is_none() {
        if a.exclude_by.any() {
            bail!(hwc_backup_engine::Error::config(
                "--exclude-caches",
                "--exclude-caches, --exclude-if-present and --exclude-larger-than are for a run without a plan \
                 (--source/--dest); with one, set excludeCaches, excludeIfPresent, excludeLargerThan"
            ));
        }
        if a.source_snapshots.is_some() {
            bail!(hwc_backup_engine::Error::config(
                "--source-snapshots",
                "is for a run without a plan (--source … --dest); a plan sets local.sourceSnapshots"
            ));
        }
        let job = a.target.load_plan("or --source PATH --dest DIR to run without one")?.local_job();
        hwc_backup_engine::source::check_sources(&job)?;
        return Ok(job);
    }
    if a.target.config.is_some() {
        bail!(hwc_backup_engine::Error::config("--config", "give either --config or --source/--dest, not both"));
    }
    let Some(dest) = &a.target.dest else {
        bail!(hwc_backup_engine::Error::config("--dest", "is required with --source"));
    };
    if a.sources.is_empty() {
        bail!(hwc_backup_engine::Error::config("--source", "is required with --dest"));
    }
    a.target.check_host()?;
    let host = a.target.host.clone().unwrap_or_else(fsutil::hostname);
    let min_free_bytes = match a.min_free_gb {
        None => 0,
        Some(gb) => gb.checked_mul(1 << 30).ok_or_else(|| {
            hwc_backup_engine::Error::config(
                "--min-free-gb",
                format!("{gb} GiB is too large (more bytes than 64 bits hold)"),
            )
        })?,
    };
    let mut plan = Plan::ad_hoc(host, a.sources.clone(), dest.clone(), a.excludes.clone());
    crate::commands::exclude_by_args(&a.exclude_by)?;
    plan.exclude_caches = a.exclude_by.exclude_caches;
    plan.exclude_if_present = a.exclude_by.exclude_if_present.clone();
    plan.exclude_larger_than = a.exclude_by.exclude_larger_than.clone();
    plan.destination.require_mount_point = a.require_mount_point;
    plan.destination.min_free_bytes = min_free_bytes;
    if let Some(kind) = a.source_snapshots {
        plan.source_snapshots = kind;
    }
    plan.state_dir = a.target.state_dir.clone().unwrap_or_else(crate::target::default_state_dir);
    plan.validate()?;
    let job = plan.local_job();
    hwc_backup_engine::source::check_sources(&job)?;
    // Like rsync, a one-off run creates its destination. Never when a mount point is
    // required, and never for a plan: there a missing directory means a missing drive.
    let sources_exist = job.sources.paths.iter().all(|s| s.symlink_metadata().is_ok());
    if !job.store.destination.require_mount_point && sources_exist && !a.dry_run {
        create_dest(dest)?;
    }
    Ok(job)
}

/// Creates a one-off run's destination when it is missing — its last component only, as
/// rsync does: a mistyped `--dest /mnt/bakup/x` must not grow a tree on the root filesystem.
#[expect(clippy::disallowed_methods, reason = "the --dest path the user typed; only its last component is created")]
pub(crate) fn create_dest(dest: &Path) -> Result<()> {
    match std::fs::create_dir(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(hwc_backup_engine::Error::config(
            "--dest",
            format!(
                "{}: its parent directory does not exist (only the last component of --dest is created)",
                dest.display()
            )
        )),
        Err(e) => Err(e).with_context(|| format!("cannot create destination {}", dest.display())),
    }
}

pub(crate) fn now(a: NowArgs) -> Result<Exit> {
    // Every argument is checked before anything is written.
    let when = parse_now(&a.now)?;
    let min_interval = match &a.min_interval {
        None => None,
        Some(text) => Some(
            hwc_backup_engine::plan::parse_duration(text)
                .map_err(|e| hwc_backup_engine::Error::config("--min-interval", e))?,
        ),
    };
    let pin = match a.pin {
        true => {
            let at = when.as_ref().map_or_else(jiff::Timestamp::now, |z| z.timestamp());
            Some(hwc_backup_engine::store::history::pin::Pin::new(at, None, a.note.clone())?)
        }
        false => None,
    };
    let job = job_for_now(&a)?;
    if a.dry_run {
        return dry_run(&job, a.json);
    }
    if let Some(min) = min_interval {
        let at = when.as_ref().map_or_else(jiff::Timestamp::now, |z| z.timestamp());
        if let Some(reason) = run::too_recent(&job, min, at) {
            // Not a run: nothing recorded, logged or notified.
            if a.json {
                super::print_json(&serde_json::json!({ "host": job.host(), "ran": false, "reason": reason }))?;
            } else {
                println!("backup of {}: {reason}", job.host());
            }
            return Ok(Exit::Success);
        }
    }
    let mut opts = RunOptions::for_job(&job);
    opts.now = when;
    opts.allow_shrink = a.allow_shrink;
    opts.pin = pin;
    opts.itemize = super::VERBOSE.load(std::sync::atomic::Ordering::Relaxed) > 0;
    opts.prune = opts.prune && !a.no_prune;
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    let configured = a.sources.is_empty() && a.target.dest.is_none();
    crate::ops::before_run(&job, configured);
    let progress = Progress::new(!a.json);
    let source = hwc_backup_engine::source::fs_snapshot::local_source(&job);
    let report = run::run_from(&job, source.as_ref(), &opts, &|c| progress.counts(c));
    progress.finish();
    let how =
        crate::ops::Invocation { configured, push_cloud: !a.local_only, allow_shrink: a.allow_shrink, json: a.json };
    let exit = crate::ops::finish_run(&job, &report, &how)?;
    if let (Some(d), false) = (&report.itemized, a.json) {
        print_itemized(d)?;
    }
    Ok(exit)
}

/// `now --dry-run`: what the run would do, writing nothing.
fn dry_run(job: &Job, json: bool) -> Result<Exit> {
    let d = hwc_backup_engine::store::history::dryrun::dry_run(job)?;
    if json {
        super::print_json(&d)?;
        return Ok(Exit::Success);
    }
    let mut out = std::io::stdout().lock();
    if super::VERBOSE.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        for c in &d.changes {
            writeln!(out, "{} {}", c.change.mark(), super::diff::one_line(&c.path))?;
        }
    }
    match &d.link_base {
        Some(b) => writeln!(out, "dry run: nothing written; would link unchanged entries to {b}")?,
        None => writeln!(out, "dry run: nothing written; the first snapshot: everything is copied")?,
    }
    writeln!(
        out,
        "  would copy {} files ({}) and {} symlinks, link {} ({}), create {} directories and {} special files; \
         {} excluded, {} sockets skipped, {} paths of the last snapshot gone",
        d.files_to_copy,
        human_bytes(d.bytes_to_copy),
        d.symlinks_to_copy,
        d.linked,
        human_bytes(d.bytes_linked),
        d.directories,
        d.specials,
        d.excluded,
        d.sockets_skipped,
        d.gone
    )?;
    if d.excluded_caches + d.excluded_if_present + d.excluded_large > 0 {
        writeln!(
            out,
            "  left out: {} cache directories and {} marked directories kept empty, {} files over excludeLargerThan",
            d.excluded_caches, d.excluded_if_present, d.excluded_large
        )?;
    }
    writeln!(out, "  needs about {} on the destination (plus directories and metadata)", human_bytes(d.bytes_to_copy))?;
    Ok(Exit::Success)
}

/// `now -v`: one line per change against the snapshot the run linked to, as rsync's
/// itemize (`+` new, `M` changed, `-` gone, `m` metadata only, `T` type changed).
fn print_itemized(d: &hwc_backup_engine::store::history::diff::Diff) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "changes since {}:", d.from)?;
    for c in &d.changes {
        writeln!(out, "{} {}", c.change.mark(), super::diff::one_line(&c.path))?;
    }
    let s = &d.summary;
    writeln!(
        out,
        "{} new, {} changed, {} gone, {} metadata only, {} type changes",
        s.added, s.modified, s.removed, s.metadata, s.type_changed
    )?;
    Ok(())
}

/// `/home: read from a btrfs snapshot of /home taken at …`, or `read live (why)`.
pub(crate) fn describe_read(r: &hwc_backup_engine::source::fs_snapshot::SourceRead) -> String {
    match (&r.subvolume, &r.taken_at) {
        (Some(sv), Some(t)) => match &r.volume {
            Some(v) => format!(
                "{}: read from a {} snapshot of {v} (mounted at {}) taken at {t}",
                r.source.display(),
                r.kind,
                sv.display()
            ),
            None => format!("{}: read from a {} snapshot of {} taken at {t}", r.source.display(), r.kind, sv.display()),
        },
        _ => format!("{}: read live ({})", r.source.display(), r.note.as_deref().unwrap_or("no filesystem snapshot")),
    }
}

/// How each source was read (filesystem snapshot or live, and the mounts below it) and which
/// services were held still and for how long: the run summary's and `status`'s lines.
pub(crate) fn consistency_lines(
    reads: &[hwc_backup_engine::source::fs_snapshot::SourceRead],
    held: &[hwc_backup_engine::source::quiesce::HeldUnit],
) -> Vec<String> {
    let mut lines = Vec::new();
    for read in reads {
        lines.push(describe_read(read));
        for m in &read.mounts {
            lines.push(format!("  mounted below it: {}", describe_read(m)));
        }
    }
    for h in held {
        let mode = match h.mode {
            hwc_backup_engine::plan::QuiesceMode::Stop => "stopped",
            hwc_backup_engine::plan::QuiesceMode::Freeze => "frozen",
        };
        lines.push(match h.down_ms {
            None => format!("{} was not running; left alone", h.unit),
            Some(ms) if h.whole_walk => format!(
                "{} {mode} for {:.1}s: the whole walk, as no filesystem snapshot was taken",
                h.unit,
                ms as f64 / 1000.0
            ),
            Some(ms) => format!("{} {mode} for {:.3}s while the snapshots were taken", h.unit, ms as f64 / 1000.0),
        });
    }
    lines
}

pub(crate) fn print_run(r: &RunReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let c = &r.counts;
    for name in &r.cleaned_up {
        writeln!(out, "cleaned up the leftover of an interrupted run: {name}")?;
    }
    match r.state {
        RunState::Failed => {
            writeln!(out, "backup of {} FAILED: {}", r.host, r.error.as_deref().unwrap_or("unknown error"))?;
            writeln!(out, "nothing was published; earlier snapshots are untouched")?;
        }
        RunState::Skipped => {
            writeln!(
                out,
                "backup of {} skipped: {}",
                r.host,
                r.error.as_deref().unwrap_or("another run is in progress")
            )?;
            writeln!(out, "nothing was done; the run holding the lock does the work (not a failure)")?;
        }
        state => {
            writeln!(out, "snapshot {} ({})", r.snapshot.as_deref().unwrap_or("?"), state.as_str())?;
            writeln!(
                out,
                "  {} files, {} directories, {} symlinks; {} linked ({}), {} copied ({})",
                c.files,
                c.directories,
                c.symlinks,
                c.linked,
                human_bytes(c.bytes_linked),
                c.copied,
                human_bytes(c.bytes_copied)
            )?;
            if let Some(t) = &r.transfer {
                writeln!(
                    out,
                    "  {} received, {} sent over ssh",
                    human_bytes(t.bytes_received),
                    human_bytes(t.bytes_sent)
                )?;
            }
            if c.excluded_caches + c.excluded_if_present + c.excluded_large > 0 {
                writeln!(
                    out,
                    "  left out: {} cache directories (CACHEDIR.TAG), {} directories with a marker file, {} files over the size limit",
                    c.excluded_caches, c.excluded_if_present, c.excluded_large
                )?;
            }
            for line in consistency_lines(&r.source_reads, &r.held_units) {
                writeln!(out, "  {line}")?;
            }
            if c.reflinked > 0 {
                writeln!(out, "  {} changed files written as reflinks plus their changed blocks", c.reflinked)?;
            }
            if c.emlink_fallbacks > 0 {
                writeln!(out, "  {} files copied because the link-count limit was reached", c.emlink_fallbacks)?;
            }
            for w in r.warnings.iter().take(20) {
                writeln!(out, "  warning: {}: {}", w.path.display(), w.message)?;
            }
            if c.warnings > 20 {
                writeln!(out, "  … {} warnings in all (see the snapshot's meta.json)", c.warnings)?;
            }
        }
    }
    for m in &r.made_room {
        writeln!(out, "made room: removed {} ({})", m.snapshot, m.reason)?;
    }
    if let Some(p) = &r.prune {
        match &p.refused {
            Some(reason) => writeln!(out, "prune refused: {reason}")?,
            None if p.removals() > 0 => writeln!(out, "pruned {} expired snapshot(s)", p.removals())?,
            None => {}
        }
    }
    Ok(())
}
