//! One function per subcommand: call the engine, print for people or as JSON.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use hwc_backup_engine::job::Job;
use hwc_backup_engine::layout::{HostDir, Snapshot};
use hwc_backup_engine::meta::RunState;
use hwc_backup_engine::plan::Plan;
use hwc_backup_engine::run::{self, human_bytes, RunOptions, RunReport};
use hwc_backup_engine::source::LocalFs;
use hwc_backup_engine::{fsutil, prune, restore, verify};
use jiff::Zoned;

use crate::args::{Command, ConfigCommand, NowArgs, PruneArgs, RestoreArgs, StatusArgs, VerifyArgs};
use crate::exit::Exit;
use crate::progress::Progress;

/// Runs a subcommand.
pub fn run(cmd: Command) -> Result<Exit> {
    match cmd {
        Command::Now(a) => now(a),
        Command::Status(a) => status(a),
        Command::Restore(a) => restore_cmd(a),
        Command::Verify(a) => verify_cmd(a),
        Command::Prune(a) => prune_cmd(a),
        Command::Config { command: ConfigCommand::Check { file } } => config_check(&file),
        Command::Cloud(a) => crate::ops::cloud(a),
        Command::Health(a) => crate::ops::health(a),
        Command::NotifyFailure(a) => crate::ops::notify_failure(a),
        Command::Pull(a) => crate::pull::pull(a),
        Command::Agent(a) => crate::pull::agent(a),
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Parses a `--now` testing clock, keeping the offset the user wrote: it is what the
/// snapshot records and what retention reads its calendar fields in.
pub(crate) fn parse_now(text: &Option<String>) -> Result<Option<Zoned>> {
    let Some(t) = text else { return Ok(None) };
    let bad = |e: jiff::Error| {
        hwc_backup_engine::Error::config(
            "--now",
            format!("{t:?} is not an RFC 3339 time like 2025-01-15T02:00:00+01:00: {e}"),
        )
    };
    let ts: jiff::Timestamp = t.parse().map_err(bad)?;
    let pieces = jiff::fmt::temporal::Pieces::parse(t.as_str()).map_err(bad)?;
    let offset = match pieces.offset() {
        Some(jiff::fmt::temporal::PiecesOffset::Numeric(n)) => n.offset(),
        _ => jiff::tz::Offset::UTC,
    };
    Ok(Some(ts.to_zoned(jiff::tz::TimeZone::fixed(offset))))
}

/// The job `now` runs: the plan's own, or one from `--source … --dest` (checked as a plan
/// with those values, so the messages name the same fields).
fn job_for_now(a: &NowArgs) -> Result<Job> {
    if a.sources.is_empty() && a.target.dest.is_none() {
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
    plan.destination.require_mount_point = a.require_mount_point;
    plan.destination.min_free_bytes = min_free_bytes;
    plan.state_dir = a.target.state_dir.clone().unwrap_or_else(crate::target::default_state_dir);
    plan.validate()?;
    let job = plan.local_job();
    hwc_backup_engine::source::check_sources(&job)?;
    // Like rsync, a one-off run creates its destination. Never when a mount point is
    // required, and never for a plan: there a missing directory means a missing drive.
    let sources_exist = job.sources.paths.iter().all(|s| s.symlink_metadata().is_ok());
    if !job.store.destination.require_mount_point && sources_exist {
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

fn now(a: NowArgs) -> Result<Exit> {
    // Every argument is checked before anything is written.
    let when = parse_now(&a.now)?;
    let job = job_for_now(&a)?;
    let mut opts = RunOptions::for_job(&job);
    opts.now = when;
    opts.allow_shrink = a.allow_shrink;
    opts.prune = opts.prune && !a.no_prune;
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    let configured = a.sources.is_empty() && a.target.dest.is_none();
    crate::ops::before_run(&job, configured);
    let progress = Progress::new(!a.json);
    let report = run::run_from(&job, &LocalFs, &opts, &|c| progress.counts(c));
    progress.finish();
    let how =
        crate::ops::Invocation { configured, push_cloud: !a.local_only, allow_shrink: a.allow_shrink, json: a.json };
    crate::ops::finish_run(&job, &report, &how)
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
    if let Some(p) = &r.prune {
        match &p.refused {
            Some(reason) => writeln!(out, "prune refused: {reason}")?,
            None if p.removals() > 0 => writeln!(out, "pruned {} expired snapshot(s)", p.removals())?,
            None => {}
        }
    }
    Ok(())
}

fn status(a: StatusArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    check_host_dir(&t)?;
    let snapshots = t.host.list()?;
    let last_run = hwc_backup_engine::ops::StateDir::new(&t.state_dir, &t.host_name).last_run_report();
    let free = t.host.root().parent().and_then(|d| fsutil::free_bytes(d).ok());
    if a.json {
        let list: Vec<_> = snapshots.iter().map(snapshot_json).collect();
        print_json(&serde_json::json!({
            "host": t.host_name, "hostDir": t.host.root(), "snapshots": list,
            "lastRun": last_run, "freeBytes": free,
        }))?;
        return Ok(Exit::Success);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "host {} at {}", t.host_name, t.host.root().display())?;
    if snapshots.is_empty() {
        writeln!(out, "  no complete snapshots yet")?;
    }
    for tier in hwc_backup_engine::layout::TIERS {
        let of_tier: Vec<&Snapshot> = snapshots.iter().filter(|s| s.tier == tier).collect();
        if of_tier.is_empty() {
            continue;
        }
        writeln!(out, "{} ({}):", tier.as_str(), of_tier.len())?;
        for s in of_tier.iter().rev() {
            writeln!(
                out,
                "  {}  {:<7}  {} new, {} files",
                s.name,
                s.meta.state.as_str(),
                human_bytes(s.meta.counts.bytes_copied),
                s.meta.counts.files
            )?;
        }
    }
    if let Some(lr) = last_run {
        let state = lr["state"].as_str().unwrap_or("?");
        let when = lr["startedAt"].as_str().unwrap_or("?");
        let err = lr["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
        writeln!(out, "last run: {state} at {when}{err}")?;
    }
    if let Some(f) = free {
        writeln!(out, "free at destination: {}", human_bytes(f))?;
    }
    Ok(Exit::Success)
}

/// `status` reports only what is there: a destination that is missing or (when the plan
/// requires it) not mounted, or a host directory that does not exist, is an error that lists
/// the host directories the destination does hold.
fn check_host_dir(t: &crate::target::Resolved) -> Result<()> {
    let root = t.host.root();
    let dest = root.parent().unwrap_or(Path::new("/"));
    let others = || {
        let hosts = host_dirs(dest);
        if hosts.is_empty() {
            "it holds no host directories".to_string()
        } else {
            format!("host directories there: {} (choose one with --host NAME)", hosts.join(", "))
        }
    };
    if let Err(e) = std::fs::metadata(dest) {
        bail!("destination {} is not available ({e}); is the backup drive plugged in and mounted?", dest.display());
    }
    let must_mount = t.store.destination.require_mount_point;
    if must_mount && !fsutil::is_mount_point(dest)? {
        bail!(
            "destination {} is not a mount point (is the backup drive plugged in and mounted?); {}",
            dest.display(),
            others()
        );
    }
    if !root.is_dir() {
        bail!("no host directory {} at {}; {}", t.host_name, dest.display(), others());
    }
    Ok(())
}

/// The directories below `dest` that look like host directories (hold a tier or `latest`).
fn host_dirs(dest: &Path) -> Vec<String> {
    use hwc_backup_engine::fs::{Dir, Name};
    let Ok(dir) = Dir::open_trusted(dest) else { return Vec::new() };
    let marks = ["latest", "daily", "weekly", "monthly", "hourly", "yearly", ".incomplete", ".lock"];
    let is_host = |d: &Dir| marks.iter().any(|m| d.stat(&Name::fixed(m)).is_ok_and(|st| st.is_some()));
    let mut hosts: Vec<String> = dir
        .entries()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind == rustix::fs::FileType::Directory)
        .filter(|e| dir.open_dir(&e.name).is_ok_and(|d| is_host(&d)))
        .map(|e| e.name.to_string())
        .collect();
    hosts.sort();
    hosts
}

fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": s.id(), "tier": s.tier, "name": s.name, "path": s.path, "state": s.meta.state,
        "startedAt": s.meta.started_at, "utcOffset": s.meta.started_local().offset().to_string(),
        "bytesCopied": s.meta.counts.bytes_copied, "bytesLinked": s.meta.counts.bytes_linked,
        "files": s.meta.counts.files, "warnings": s.meta.counts.warnings,
    })
}

fn restore_cmd(a: RestoreArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    if a.list {
        let snapshots = t.host.list()?;
        if a.json {
            print_json(&snapshots.iter().map(snapshot_json).collect::<Vec<_>>())?;
        } else {
            let mut out = std::io::stdout().lock();
            for s in snapshots.iter().rev() {
                writeln!(
                    out,
                    "{}  {}  {}",
                    s.id(),
                    s.meta.started_local().strftime("%Y-%m-%d %H:%M:%S %:z"),
                    s.meta.state.as_str()
                )?;
            }
        }
        return Ok(Exit::Success);
    }
    let (Some(name), Some(path), Some(dest)) = (&a.snapshot, &a.path, &a.destination) else {
        bail!(hwc_backup_engine::Error::config(
            "restore",
            "give --list, or SNAPSHOT PATH DESTINATION (e.g. latest /home/alice/notes.txt /tmp/notes.txt)"
        ));
    };
    let snapshot = t.host.resolve(name)?;
    let opts = restore::RestoreOptions { force: a.force, dry_run: a.dry_run };
    let report = restore::restore(&snapshot, path, dest, opts)?;
    if a.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        let verb = if a.dry_run { "would write" } else { "restored" };
        for c in &report.changes {
            // One line per entry, whatever the name holds: a newline in a name cannot fake
            // another line.
            let shown = c.path.display().to_string().replace('\n', "\\n").replace('\r', "\\r");
            writeln!(out, "{:<9}  {shown}", c.action.as_str())?;
        }
        writeln!(
            out,
            "{verb} {} from {} to {} ({} entries to write, {})",
            report.source.display(),
            report.snapshot,
            report.target.display(),
            report.entries,
            human_bytes(report.bytes)
        )?;
    }
    // Only a dry run gets here with a refusal: it shows it, and fails as the restore would.
    if let Some(first) = report.refused.first() {
        eprintln!(
            "error: refused: {} is a directory and the snapshot has no directory there; restore never deletes a directory",
            first.display()
        );
        return Ok(Exit::Failed);
    }
    if a.dry_run && !a.force {
        if let Some(first) = report.overwritten.first() {
            eprintln!("error: {} exists; use --force to overwrite", first.display());
            return Ok(Exit::Failed);
        }
    }
    Ok(Exit::Success)
}

fn verify_cmd(a: VerifyArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    let snapshots: Vec<Snapshot> =
        if a.all { t.host.list()? } else { vec![t.host.resolve(a.snapshot.as_deref().unwrap_or("latest"))?] };
    let threads = a.threads.unwrap_or_else(run::default_threads);
    let progress = Progress::new(!a.json);
    let latest = t.host.resolve("latest").ok().map(|s| s.path);
    let mut reports = Vec::new();
    let mut expired = Vec::new();
    for s in &snapshots {
        let sample = if Some(&s.path) == latest.as_ref() { a.sample } else { 0 };
        match verify_where_it_is(&t.host, s, threads, sample, &|f, b| progress.hashed(f, b))? {
            Some(r) => reports.push(r),
            None => expired.push(s.id()),
        }
    }
    progress.finish();
    for id in &expired {
        eprintln!("hwc-backup: note: {id} was expired by a concurrent prune while it was verified; not checked");
    }
    crate::ops::after_verify(&t, &reports);
    let clean = reports.iter().all(verify::VerifyReport::is_clean);
    if a.json {
        print_json(&reports)?;
    } else {
        print_verify(&reports)?;
    }
    Ok(if clean { Exit::Success } else { Exit::Failed })
}

/// Verifies `s` where it is, reading without the host lock. A prune running meanwhile (alone
/// or after a `now`) may move the snapshot to another tier or expire it, which would show as
/// missing files: damage counts only when the snapshot is still where it was verified. A
/// moved snapshot is found again by name across the tiers and verified again there; one
/// expired meanwhile returns `None`.
///
/// Verify does not take the lock, not even shared: a shared lock would make every backup or
/// prune that starts during a verify (hours, with `--all` on a big disk) skip its work.
fn verify_where_it_is(
    host: &HostDir,
    s: &Snapshot,
    threads: usize,
    sample: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Option<verify::VerifyReport>> {
    let mut s = s.clone();
    // A snapshot moves at most once per tier; more moves than tiers would be a loop.
    for _ in 0..=hwc_backup_engine::layout::TIERS.len() {
        let result = verify::verify(&s, threads, sample, progress);
        if result.as_ref().is_ok_and(verify::VerifyReport::is_clean) {
            return Ok(Some(result?));
        }
        match host.list()?.into_iter().find(|now| now.name == s.name) {
            Some(now) if now.path == s.path => return Ok(Some(result?)),
            Some(now) => {
                tracing::info!("{} moved to {} while it was verified; verifying it there", s.id(), now.id());
                s = now;
            }
            None => return Ok(None),
        }
    }
    Ok(Some(verify::verify(&s, threads, sample, progress)?))
}

fn print_verify(reports: &[verify::VerifyReport]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for r in reports {
        let verdict = if r.is_clean() { "OK" } else { "DAMAGED" };
        writeln!(
            out,
            "{}: {verdict}: {} files ({}) checked",
            r.snapshot,
            r.files_checked,
            human_bytes(r.bytes_checked)
        )?;
        for (what, list) in [
            ("changed", &r.changed),
            ("missing", &r.missing),
            ("unexpected", &r.unexpected),
            ("differs from live source", &r.sample_mismatches),
        ] {
            for p in list {
                writeln!(out, "  {what}: {}", p.display())?;
            }
        }
        if r.sampled > 0 {
            writeln!(
                out,
                "  sampled {} files against the live source ({} changed there since)",
                r.sampled, r.sample_changed_since
            )?;
        }
    }
    Ok(())
}

fn prune_cmd(a: PruneArgs) -> Result<Exit> {
    let now = parse_now(&a.now)?.map_or_else(jiff::Timestamp::now, |z| z.timestamp());
    let t = a.target.resolve()?;
    // The rules of the job's store, or the built-in ones with `--dest`.
    let policy = t.store.retention_policy()?;
    let max_age = &t.store.health.max_age;
    let host: &HostDir = &t.host;
    let decision = if a.dry_run {
        prune::plan(&host.list()?, &policy, now, max_age)
    } else {
        let lock = hwc_backup_engine::lock::HostLock::acquire(host, "prune")?;
        let d = prune::plan(&host.list()?, &policy, now, max_age);
        prune::execute(host, &lock, &d)?;
        drop(lock);
        prune::empty_trash(host)?;
        d
    };
    if a.json {
        print_json(&decision)?;
    } else {
        let mut out = std::io::stdout().lock();
        for i in &decision.items {
            let action = match (i.keep, i.tier) {
                (true, Some(t)) if format!("{}/{}", t.as_str(), i.name) != i.id => {
                    format!("keep → {}", t.as_str())
                }
                (true, _) => "keep".to_string(),
                (false, _) => "remove".to_string(),
            };
            writeln!(out, "{:<32} {:<16} {}", i.id, action, i.reasons.join(", "))?;
        }
        if let Some(r) = &decision.refused {
            writeln!(out, "prune refused: {r}")?;
        }
    }
    Ok(if decision.refused.is_some() { Exit::Failed } else { Exit::Success })
}

fn config_check(file: &Path) -> Result<Exit> {
    let plan = Plan::load(file).with_context(|| format!("plan {}", file.display()))?;
    println!(
        "{}: valid plan version {} for host {} ({} sources)",
        file.display(),
        plan.version,
        plan.host,
        plan.sources.len()
    );
    Ok(Exit::Success)
}
