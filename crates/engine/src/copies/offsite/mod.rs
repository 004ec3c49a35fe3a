//! Offsite copies: standard restic repositories fed from the newest complete local snapshot.
//!
//! A copy backs up the snapshot directory with restic, run *inside* it (its current
//! directory is the snapshot, opened through the host directory's handle) with the sources
//! as relative paths, so the restic snapshot holds `/home/alice/x`, not
//! `…/daily/NAME/home/alice/x`, and `restic restore latest --target /` puts every file back
//! where it was. Each restic snapshot gets
//!
//! - `--time` = the local snapshot's start, `--host` = the plan's host;
//! - `--tag hwc-backup --tag snapshot:<name>` (the local snapshot's name, how `restore
//!   --offsite` finds it again);
//! - `--parent` = the restic snapshot of the last good copy to this repository (from the
//!   state record, without listing the repository) when it holds an older local snapshot, else
//!   the newest earlier hwc-backup snapshot of this host (`restic snapshots --no-lock`):
//!   restic's own choice matches the list of absolute paths, which differs for every local
//!   snapshot (`…/daily/NAME/…`), so without it every copy would re-read everything;
//! - `--ignore-ctime`: a file unchanged since the previous local snapshot is a hard link to
//!   it, whose ctime changed when the link was made; its size, mtime and inode are the
//!   parent's, so restic neither reads nor uploads it.
//!
//! Then `restic forget` with the offsite's own keep rules, grouped by host and limited to
//! the hwc-backup tag, and `restic prune` only when forget removed a snapshot: prune
//! rewrites packs and is the expensive part; with nothing forgotten there is nothing to free.
//!
//! The outcome of every copy and check is recorded in `<stateDir>/<host>/offsite-<name>.json`
//! ([`OffsiteRecord`]), read by health and metrics. Restore and the repository listing need
//! only the repository and its password (the disaster case: no drive, no state directory).

pub mod restic;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fs::{Dir, Name};
use crate::job::Store;
use crate::ops::state::StateDir;
use crate::plan::Offsite;
use crate::store::layout::{HostDir, Snapshot};
use crate::store::lock::HostLock;
use crate::store::meta::META_DIR;

pub use crate::ops::state::OffsiteRecord;
pub use restic::{BackupSummary, Restic, ResticSnapshot};

/// What one copy did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsiteReport {
    /// The offsite's name (`offsite.<name>`).
    pub name: String,
    /// Host name.
    pub host: String,
    /// Whether the repository now holds the snapshot.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// The repository.
    pub repository: String,
    /// The local snapshot copied (`daily/NAME`).
    pub snapshot: Option<String>,
    /// Its path.
    pub snapshot_path: Option<PathBuf>,
    /// The restic snapshot holding it.
    pub restic_snapshot: Option<String>,
    /// The restic snapshot used as parent.
    pub parent: Option<String>,
    /// The repository was created by this copy (`restic init`).
    pub initialized: bool,
    /// The snapshot was already in the repository: nothing was uploaded.
    pub already_copied: bool,
    /// restic's summary of the backup.
    pub summary: Option<BackupSummary>,
    /// restic snapshots removed by `forget`.
    pub forgotten: Vec<String>,
    /// Whether `prune` ran.
    pub pruned: bool,
    /// Things worth knowing that did not fail the copy.
    pub notes: Vec<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
}

impl OffsiteReport {
    /// A copy of `store`'s host to `offsite` (named `name`) starting now, not done yet.
    pub fn started(store: &Store, name: &str, offsite: &Offsite) -> OffsiteReport {
        let now = Timestamp::now();
        OffsiteReport {
            name: name.to_string(),
            host: store.host.clone(),
            ok: false,
            error: None,
            repository: offsite.repository.clone(),
            snapshot: None,
            snapshot_path: None,
            restic_snapshot: None,
            parent: None,
            initialized: false,
            already_copied: false,
            summary: None,
            forgotten: Vec::new(),
            pruned: false,
            notes: Vec::new(),
            started_at: now,
            finished_at: now,
        }
    }

    /// Seconds it took.
    pub fn duration_seconds(&self) -> f64 {
        (self.finished_at.as_millisecond() - self.started_at.as_millisecond()).max(0) as f64 / 1000.0
    }
}

/// Copies the newest complete snapshot of `store` to offsite `name`. Never returns an error:
/// a failed copy is a report with `ok: false`, recorded like a good one. The host lock is
/// held meanwhile, so pruning cannot move the snapshot away under restic.
pub fn copy(store: &Store, name: &str, offsite: &Offsite) -> OffsiteReport {
    let mut report = OffsiteReport::started(store, name, offsite);
    let result = Restic::of(offsite).and_then(|r| copy_inner(store, &r, name, offsite, &mut report));
    match result {
        Ok(()) => report.ok = true,
        Err(e) => {
            let untouched =
                report.snapshot.as_ref().map(|s| format!("; the local snapshot {s} is untouched")).unwrap_or_default();
            report.error = Some(format!("offsite {name} ({}): {e}{untouched}", offsite.repository));
        }
    }
    report.finished_at = Timestamp::now();
    if let Err(e) = record(store, &report) {
        report.notes.push(format!("the copy was not recorded: {e}"));
    }
    report
}

fn copy_inner(store: &Store, restic: &Restic, name: &str, offsite: &Offsite, report: &mut OffsiteReport) -> Result<()> {
    restic.check_password_file()?;
    let host = HostDir::open(&store.host_dir())?;
    let _lock = HostLock::acquire(&host, "offsite copy")?;
    let snapshot = host.newest()?.ok_or_else(|| {
        Error::Guard(format!("there is no complete snapshot under {} to copy", host.root().display()))
    })?;
    report.snapshot = Some(snapshot.id());
    report.snapshot_path = Some(snapshot.path.clone());
    // The usual case, a copy of a snapshot newer than the last good copy to this repository:
    // that copy's restic snapshot is the parent, and the listing below (one restic run, a
    // second pass over a slow backend's snapshot files) is not needed. When restic no longer
    // has it (forgotten, another repository at the same place), the copy goes the long way.
    if let Some(parent) = recorded_parent(store, name, &restic.repository, &snapshot) {
        match backup_snapshot(restic, &host, &snapshot, &store.host, Some(&parent)) {
            Ok(summary) => {
                report.parent = Some(parent);
                report.restic_snapshot = Some(summary.snapshot_id.clone());
                report.summary = Some(summary);
                return forget_and_prune(restic, store, offsite, report);
            }
            Err(e) if is_unknown_parent(&e, &parent) => {
                report.notes.push(format!(
                    "the parent the last copy recorded ({}) is not in the repository; chose one from its list",
                    &parent[..parent.len().min(8)]
                ));
            }
            Err(e) => return Err(e),
        }
    }
    // Listing the snapshots is also the test for a repository that does not exist yet: one
    // restic run less per copy over a slow backend.
    let existing = match restic.snapshots(Some(&store.host)) {
        Ok(list) => list,
        Err(e) if restic::is_missing_repository(&e) => {
            refuse_init_without_parent(&restic.repository)?;
            restic.init()?;
            report.initialized = true;
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = existing.iter().find(|s| s.local_name() == Some(snapshot.name.as_str())) {
        report.already_copied = true;
        report.restic_snapshot = Some(s.id.clone());
        report.notes.push(format!("{} is already in the repository as restic snapshot {}", snapshot.id(), s.short_id));
    } else {
        let parent = existing.iter().rev().find(|s| s.timestamp().is_some_and(|t| t <= snapshot.time()));
        report.parent = parent.map(|p| p.id.clone());
        let summary = backup_snapshot(restic, &host, &snapshot, &store.host, report.parent.as_deref())?;
        report.restic_snapshot = Some(summary.snapshot_id.clone());
        report.summary = Some(summary);
    }
    forget_and_prune(restic, store, offsite, report)
}

/// `restic forget` with the offsite's keep rules, and `prune` when it removed something.
fn forget_and_prune(restic: &Restic, store: &Store, offsite: &Offsite, report: &mut OffsiteReport) -> Result<()> {
    report.forgotten = restic.forget(&store.host, &offsite.keep.forget_args(), false)?;
    if !report.forgotten.is_empty() {
        restic.prune()?;
        report.pruned = true;
    }
    Ok(())
}

/// The restic snapshot of the last good copy of this destination's host to `repository`,
/// when that copy was of a local snapshot older than `snapshot` (names sort by time). Not when
/// it was of `snapshot` itself: whether that is still in the repository is for the listing to
/// say.
fn recorded_parent(store: &Store, name: &str, repository: &str, snapshot: &Snapshot) -> Option<String> {
    let rec = StateDir::of(store).offsite(name)?;
    if rec.repository != repository {
        return None;
    }
    let copied = rec.last_success_snapshot?;
    let copied_name = copied.rsplit('/').next()?;
    let id = rec.last_success_restic_snapshot?;
    // restic 0.14 reports the new snapshot's short ID (8 hex digits), later versions the full
    // one; restic takes either.
    let hex = (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && copied_name < snapshot.name.as_str()).then_some(id)
}

/// Whether `restic backup` refused because it does not know the parent `id` (restic 0.14:
/// `Fatal: invalid id "<id>": no matching ID found`; every version names the ID it was given).
fn is_unknown_parent(e: &Error, id: &str) -> bool {
    matches!(e, Error::Command { message, .. } if message.contains(id))
}

/// restic creates a local repository's missing parent directories; a repository on an
/// unmounted drive or NAS (`/mnt/nas/restic` with nothing at `/mnt/nas`) would then be a new,
/// empty repository on the root filesystem. A local repository is created only in a
/// directory that exists.
fn refuse_init_without_parent(repository: &str) -> Result<()> {
    let local = repository.strip_prefix("local:").unwrap_or(repository);
    if !local.starts_with('/') {
        return Ok(());
    }
    let parent = Path::new(local).parent().unwrap_or(Path::new("/"));
    if Dir::open_trusted(parent).is_err() {
        return Err(Error::Preflight(format!(
            "the repository {repository} does not exist and neither does its directory {}: is the drive or NAS \
             mounted? (a repository is only created in a directory that exists)",
            parent.display()
        )));
    }
    Ok(())
}

/// `restic backup` of one local snapshot, run inside it.
fn backup_snapshot(
    restic: &Restic,
    host: &HostDir,
    snapshot: &Snapshot,
    host_name: &str,
    parent: Option<&str>,
) -> Result<BackupSummary> {
    let dir = host.open_snapshot(snapshot)?;
    let sources = relative_sources(&dir, snapshot)?;
    if sources.is_empty() {
        return Err(Error::Guard(format!("snapshot {} holds none of its sources", snapshot.id())));
    }
    let time = snapshot.time().to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%d %H:%M:%S").to_string();
    let mut args = vec![
        format!("--time={time}"),
        format!("--host={host_name}"),
        format!("--tag={}", restic::TAG),
        format!("--tag={}{}", restic::SNAPSHOT_TAG, snapshot.name),
        "--ignore-ctime".to_string(),
    ];
    if let Some(p) = parent {
        args.push(format!("--parent={p}"));
    }
    // restic starts in the snapshot directory itself (the handle opened through the host
    // directory), not in a path that could have been swapped since.
    let cwd = crate::fs::fsops::proc_path(dir.fd(), false);
    restic.backup(&args, &sources, &cwd)
}

/// The snapshot's sources as paths relative to it, those that it holds; `/` becomes every
/// entry of the snapshot but its metadata directory.
fn relative_sources(dir: &Dir, snapshot: &Snapshot) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for s in &snapshot.meta.sources {
        let rel = s.strip_prefix("/").unwrap_or(s);
        if rel.as_os_str().is_empty() {
            for e in dir.entries()? {
                if e.name.as_bytes() != META_DIR.as_bytes() {
                    out.push(PathBuf::from(e.name.as_os_str()));
                }
            }
            continue;
        }
        let held = rustix::fs::statat(dir.fd(), rel, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok();
        if held {
            out.push(rel.to_path_buf());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn record(store: &Store, r: &OffsiteReport) -> Result<()> {
    let state = StateDir::of(store);
    let mut rec = state.offsite(&r.name).unwrap_or_default();
    rec.repository = r.repository.clone();
    rec.last_attempt = Some(r.finished_at);
    rec.last_ok = r.ok;
    rec.last_error = r.error.clone();
    rec.last_duration_seconds = r.duration_seconds();
    if r.ok {
        rec.last_success = Some(r.finished_at);
        rec.last_success_snapshot = r.snapshot.clone();
        rec.last_success_restic_snapshot = r.restic_snapshot.clone();
        let s = r.summary.clone().unwrap_or_default();
        rec.last_success_data_added = s.data_added;
        rec.last_success_bytes_processed = s.total_bytes_processed;
        rec.last_success_files = [s.files_new, s.files_changed, s.files_unmodified];
    }
    state.write_offsite(&r.name, &rec)
}

/// What `verify --offsite` did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The offsite's name.
    pub name: String,
    /// The repository.
    pub repository: String,
    /// Whether restic found the repository clean and every sampled file equal to the manifest.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// The part of the data read (`n/t`), when any.
    pub read_data_subset: Option<String>,
    /// The newest restic snapshot the sample came from.
    pub restic_snapshot: Option<String>,
    /// The local snapshot it was compared with (`daily/NAME`).
    pub local_snapshot: Option<String>,
    /// Files compared.
    pub sampled: u64,
    /// Files whose content in the repository differs from the local manifest.
    pub mismatches: Vec<String>,
    /// Things worth knowing.
    pub notes: Vec<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
}

/// How many files of the newest snapshot `verify --offsite` compares with the manifest.
pub const SAMPLE_FILES: usize = 20;

/// `verify --offsite`: `restic check` reading the next part of the data (`subset` = `N%` of
/// it, as part `n` of `ceil(100/N)`, `n` rotating through a cursor in the record so repeated
/// checks read the whole repository), then up to `sample` files of the newest restic snapshot
/// of `host` compared (`restic dump`, BLAKE3) with the manifest of the local snapshot it was
/// made from, when `store` has it. The outcome is recorded with `store` for health.
pub fn check(
    restic: &Restic,
    store: Option<&Store>,
    name: &str,
    host: Option<&str>,
    subset: Option<&str>,
    sample: usize,
) -> CheckReport {
    let mut report = CheckReport {
        name: name.to_string(),
        repository: restic.repository.clone(),
        ok: false,
        error: None,
        read_data_subset: None,
        restic_snapshot: None,
        local_snapshot: None,
        sampled: 0,
        mismatches: Vec::new(),
        notes: Vec::new(),
        started_at: Timestamp::now(),
        finished_at: Timestamp::now(),
    };
    let state = store.map(StateDir::of);
    let mut rec = state.as_ref().and_then(|s| s.offsite(name)).unwrap_or_default();
    let result = check_inner(restic, store, host, subset, sample, &mut rec, &mut report);
    match result {
        Ok(()) if report.mismatches.is_empty() => report.ok = true,
        Ok(()) => {
            report.error = Some(format!(
                "offsite {name} ({}): {} of {} sampled files differ from the local manifest: {}",
                restic.repository,
                report.mismatches.len(),
                report.sampled,
                report.mismatches.join(", ")
            ))
        }
        Err(e) => report.error = Some(format!("offsite {name} ({}): {e}", restic.repository)),
    }
    report.finished_at = Timestamp::now();
    if let Some(state) = state {
        rec.repository = restic.repository.clone();
        rec.last_check = Some(report.finished_at);
        rec.last_check_ok = Some(report.ok);
        rec.last_check_error = report.error.clone();
        if let Err(e) = state.write_offsite(name, &rec) {
            report.notes.push(format!("the check was not recorded: {e}"));
        }
    }
    report
}

fn check_inner(
    restic: &Restic,
    store: Option<&Store>,
    host: Option<&str>,
    subset: Option<&str>,
    sample: usize,
    rec: &mut OffsiteRecord,
    report: &mut CheckReport,
) -> Result<()> {
    restic.check_password_file()?;
    let part = match subset {
        Some(s) => {
            let pct = crate::plan::parse_percent(s).map_err(|m| Error::config("--read-data-subset", m))?;
            let parts = (100.0 / pct).ceil().max(1.0) as u32;
            let n = rec.check_cursor.clamp(1, parts);
            rec.check_cursor = n % parts + 1;
            Some(format!("{n}/{parts}"))
        }
        None => None,
    };
    report.read_data_subset = part.clone();
    restic.check(part.as_deref())?;
    let list = list(restic, host)?;
    let Some(newest) = list.last() else {
        report.notes.push("the repository holds no snapshot written by hwc-backup: nothing to compare".into());
        return Ok(());
    };
    report.restic_snapshot = Some(newest.short_id.clone());
    let (Some(store), Some(local)) = (store, newest.local_name()) else {
        report.notes.push("no local destination: the sample was not compared with a manifest".into());
        return Ok(());
    };
    let host_dir = HostDir::open(&store.host_dir())?;
    let Some(snapshot) = host_dir.list()?.into_iter().find(|s| s.name == local) else {
        report.notes.push(format!("the local snapshot {local} is gone (pruned?): the sample was not compared"));
        return Ok(());
    };
    report.local_snapshot = Some(snapshot.id());
    let dir = host_dir.open_snapshot(&snapshot)?;
    let meta = dir.open_dir(&Name::fixed(META_DIR))?;
    let file = meta
        .open_read(&Name::fixed(crate::store::meta::MANIFEST_FILE))?
        .ok_or_else(|| Error::Snapshot { name: snapshot.id(), message: "has no manifest".into() })?;
    let mut reader = crate::store::manifest::ManifestReader::from_file(
        file,
        meta.child_path(&Name::fixed(crate::store::meta::MANIFEST_FILE)),
    );
    let mut entries = Vec::new();
    while let Some(e) = reader.next_entry()? {
        entries.push(e);
    }
    if entries.is_empty() || sample == 0 {
        return Ok(());
    }
    // Evenly spread over the manifest, from an offset that moves with every check.
    let step = (entries.len() / sample.min(entries.len())).max(1);
    let offset = (Timestamp::now().as_second().unsigned_abs() as usize) % step;
    for e in entries.iter().skip(offset).step_by(step).take(sample) {
        let path = PathBuf::from("/").join(e.rel_path());
        // The offsite copy of a file larger than the local one is a mismatch at its first
        // byte more: restic is stopped there (an endless dump would hash for ever).
        let limit = local_size(&dir, &e.rel_path()).map_or(u64::MAX, |n| n + 1);
        let hash = restic.dump_hash(&newest.id, &path, limit)?;
        report.sampled += 1;
        if hash != Some(e.hash) {
            report.mismatches.push(path.display().to_string());
        }
    }
    Ok(())
}

/// The size of the regular file `rel` of the snapshot open as `dir`, reached below it without
/// following a symlink; `None` when it cannot be (the comparison then says what differs).
fn local_size(dir: &Dir, rel: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let raw = rel.as_os_str().as_bytes();
    let (parent, name) = crate::fs::beneath::split_last(raw);
    let name = Name::new(name).ok()?;
    let st = if parent.is_empty() {
        dir.stat(&name).ok()??
    } else {
        let fd = crate::fs::beneath::open_dir(dir.fd(), parent).ok()?;
        crate::fs::fsops::stat_at(std::os::fd::AsFd::as_fd(&fd), name.as_cstr()).ok()?
    };
    // A symlink planted in place of the file has a size of its own, not the file's.
    (crate::fs::fsops::file_type(&st) == rustix::fs::FileType::RegularFile).then_some(st.st_size as u64)
}

/// Picks a restic snapshot of hwc-backup by what a user types: `latest`, the local
/// snapshot's name (`2025-01-15_02-00-00` or `daily/2025-01-15_02-00-00`), a restic ID
/// prefix, or an unambiguous fragment of the name or time (`2025-01-15`).
pub fn pick<'a>(list: &'a [ResticSnapshot], wanted: &str) -> Result<&'a ResticSnapshot> {
    let not_found = |message: String| Error::Snapshot { name: wanted.to_string(), message };
    if list.is_empty() {
        return Err(not_found("the repository holds no snapshot written by hwc-backup".into()));
    }
    if wanted == "latest" {
        return Ok(list.last().expect("not empty"));
    }
    let bare = wanted.rsplit('/').next().unwrap_or(wanted);
    if let Some(s) = list.iter().find(|s| s.local_name() == Some(bare)) {
        return Ok(s);
    }
    let matches: Vec<&ResticSnapshot> = list
        .iter()
        .filter(|s| {
            s.id.starts_with(wanted) || s.local_name().is_some_and(|n| n.contains(bare)) || s.time.contains(wanted)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(not_found("no snapshot of the repository matches (see --list)".into())),
        many => Err(not_found(format!(
            "matches {} snapshots ({}); give more of the name",
            many.len(),
            many.iter().map(|s| s.local_name().unwrap_or(&s.short_id)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The snapshots of `host` (every host when `None`) in the repository, oldest first. With
/// `None`, a repository holding several hosts' snapshots is refused: name the host.
pub fn list(restic: &Restic, host: Option<&str>) -> Result<Vec<ResticSnapshot>> {
    restic.check_password_file()?;
    let list = restic.snapshots(host)?;
    if host.is_none() {
        let mut hosts: Vec<&str> = list.iter().map(|s| s.hostname.as_str()).collect();
        hosts.sort();
        hosts.dedup();
        if hosts.len() > 1 {
            return Err(Error::config(
                "--host",
                format!(
                    "the repository {} holds snapshots of several hosts ({}); name one",
                    restic.repository,
                    hosts.join(", ")
                ),
            ));
        }
    }
    Ok(list)
}

/// Restores `host_path` of restic snapshot `wanted` to `target`, with the rules of a local
/// restore ([`crate::store::restore::restore`]): restic restores it into a fresh private
/// (`0700`) staging directory beside the target, then the local restore places it (refusing
/// to overwrite without `force`, never writing through a symlink on the target), and the
/// staging directory is removed, also after a failure.
pub fn restore(
    restic: &Restic,
    host: Option<&str>,
    wanted: &str,
    host_path: &Path,
    target: &Path,
    opts: crate::store::restore::RestoreOptions,
) -> Result<crate::store::restore::RestoreReport> {
    if !host_path.is_absolute() {
        return Err(Error::config("PATH", format!("{} is not an absolute path", host_path.display())));
    }
    let snapshots = list(restic, host)?;
    let chosen = pick(&snapshots, wanted)?.clone();
    let target = std::path::absolute(target).map_err(|e| Error::io("resolve", target, e))?;
    // The nearest existing directory above the target holds the staging directory.
    let mut base = target.parent().unwrap_or(Path::new("/"));
    let parent = loop {
        match Dir::open_trusted(base) {
            Ok(d) => break d,
            Err(_) if base.parent().is_some() => base = base.parent().expect("checked"),
            Err(e) => return Err(e),
        }
    };
    let staging =
        Name::new(format!(".hwc-offsite-restore-{}-{}", std::process::id(), Timestamp::now().as_nanosecond()))
            .map_err(|e| Error::config("DEST", e.to_string()))?;
    let dir = parent.create_new_dir(&staging, 0o700)?;
    let result = restore_staged(restic, &chosen, &dir, host_path, &target, opts);
    // Whoever can rename in the target's parent can move the staging directory away and put
    // a tree of their choosing under its name: it is emptied through its own fd and its name
    // removed only while it is still ours.
    let removed = parent.remove_created_dir(&staging, dir);
    let mut report = result?;
    if !removed? {
        tracing::warn!(
            "the staging directory {} was replaced while restic restored into it; the replacement was left alone",
            parent.child_path(&staging).display()
        );
    }
    report.snapshot = format!("{} ({})", chosen.short_id, chosen.local_name().unwrap_or("?"));
    Ok(report)
}

fn restore_staged(
    restic: &Restic,
    chosen: &ResticSnapshot,
    staging: &Dir,
    host_path: &Path,
    target: &Path,
    opts: crate::store::restore::RestoreOptions,
) -> Result<crate::store::restore::RestoreReport> {
    // `<staging>/offsite/daily/<name>`: the layout a local snapshot has, so the local restore
    // takes it as one, with the staging directory as its "destination" (a target inside it is
    // refused).
    let name = chosen
        .local_name()
        .filter(|n| crate::store::layout::parse_name(n).is_some())
        .unwrap_or(&chosen.short_id)
        .to_string();
    let tier_dir =
        staging.create_new_dir(&Name::fixed("offsite"), 0o700)?.create_new_dir(&Name::fixed("daily"), 0o700)?;
    // restic takes a path and resolves it again for every file it writes, as root: it and the
    // local restore below get the directory pinned by its fd, so that a staging directory
    // renamed away (and replaced by a tree of symlinks) by whoever owns the target's parent
    // never redirects a write.
    let root = tier_dir.pinned_path().join(&name);
    Name::new(&name).map_err(|e| Error::config("SNAPSHOT", e.to_string()))?;
    let include = (host_path != Path::new("/")).then_some(host_path);
    restic.restore(&chosen.id, &root, include)?;
    if Dir::open_trusted(&root).is_err() {
        // restic restored nothing (an empty selection): the local restore says what is missing.
        tier_dir.create_new_dir(&Name::new(&name).map_err(|e| Error::config("SNAPSHOT", e.to_string()))?, 0o700)?;
    }
    let snapshot = Snapshot {
        tier: crate::store::retention::Tier::Daily,
        name: name.clone(),
        path: root,
        meta: synthetic_meta(chosen, &name),
        pin: crate::store::history::pin::PinState::None,
    };
    crate::store::restore::restore(&snapshot, &tier_dir, host_path, target, opts)
}

/// The metadata a local restore reads of a snapshot (its sources, for messages).
fn synthetic_meta(s: &ResticSnapshot, name: &str) -> crate::store::meta::SnapshotMeta {
    let sources = s
        .paths
        .iter()
        .map(|p| match p.split_once(&format!("/{name}/")) {
            Some((_, rest)) => PathBuf::from("/").join(rest),
            None => PathBuf::from(p),
        })
        .collect();
    let t = s.timestamp().unwrap_or(Timestamp::UNIX_EPOCH);
    crate::store::meta::SnapshotMeta {
        format: 1,
        tool: "restic".into(),
        host: s.hostname.clone(),
        name: name.to_string(),
        state: crate::store::meta::RunState::Success,
        started_at: t,
        finished_at: t,
        walk_started_at: None,
        client_walk_started_at: None,
        utc_offset: jiff::tz::Offset::UTC,
        sources,
        exclude_patterns: Vec::new(),
        link_base: None,
        counts: Default::default(),
        files_per_source: Default::default(),
        warnings: Vec::new(),
        nixos_system: None,
        source_reads: Vec::new(),
        held_units: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, name: &str, time: &str) -> ResticSnapshot {
        ResticSnapshot {
            id: id.into(),
            short_id: id[..4].into(),
            time: time.into(),
            hostname: "h".into(),
            tags: Some(vec![restic::TAG.into(), format!("snapshot:{name}")]),
            paths: vec![format!("/mnt/b/h/daily/{name}/home")],
        }
    }

    #[test]
    fn picking_by_latest_name_id_and_fragment() {
        let list = [
            snap("aaaa1111", "2025-01-14_02-00-00", "2025-01-14T02:00:00Z"),
            snap("bbbb2222", "2025-01-15_02-00-00", "2025-01-15T02:00:00Z"),
        ];
        assert_eq!(pick(&list, "latest").unwrap().id, "bbbb2222");
        assert_eq!(pick(&list, "daily/2025-01-14_02-00-00").unwrap().id, "aaaa1111");
        assert_eq!(pick(&list, "aaaa").unwrap().id, "aaaa1111");
        assert_eq!(pick(&list, "2025-01-15").unwrap().id, "bbbb2222");
        assert!(pick(&list, "2025-01").unwrap_err().to_string().contains("matches 2"));
        assert!(pick(&[], "latest").is_err());
        assert_eq!(synthetic_meta(&list[0], "2025-01-14_02-00-00").sources, [PathBuf::from("/home")]);
    }
}
