//! `offsite`, `restore --offsite` and `verify --offsite`: the restic repositories.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use hwc_backup_engine::copies::offsite::{self, OffsiteReport, Restic};
use hwc_backup_engine::job::Store;
use hwc_backup_engine::ops::{self, Live, Systemd};
use hwc_backup_engine::plan::{Count, Offsite, OffsiteCheck, OffsiteKeep};
use hwc_backup_engine::run::human_bytes;
use hwc_backup_engine::store::restore::RestoreOptions;
use hwc_backup_engine::Error;

use super::print_json;
use crate::args::{OffsiteArgs, RepoArgs, RestoreArgs, Target};
use crate::exit::Exit;
use crate::ops::warn;

/// The name an offsite given on the command line is recorded under.
pub(crate) const AD_HOC_NAME: &str = "default";

/// `hwc-backup offsite [NAME…]`: copy the newest snapshot to the plan's offsites, or without
/// a plan to `--repository` from `--dest DIR --host NAME`.
pub(crate) fn offsite(a: OffsiteArgs) -> Result<Exit> {
    let reports = if a.repo.repository.is_some() || a.target.dest.is_some() {
        if a.target.config.is_some() {
            bail!(Error::config("--config", "give either --config or --repository/--dest, not both"));
        }
        if !a.names.is_empty() {
            bail!(Error::config("NAME", "names an offsite of a plan; without one give only --repository"));
        }
        let (store, o) = ad_hoc(&a)?;
        vec![offsite::copy(&store, AD_HOC_NAME, &o)]
    } else {
        let job = a.target.load_plan("or --repository R --password-file F --dest DIR --host NAME")?.local_job();
        let r = ops::after_run::offsite_job(&job, &a.names, &Systemd::from_env(), &Live)?;
        warn(&r.warnings);
        r.offsite
    };
    if a.json {
        print_json(&reports)?;
    } else {
        for o in &reports {
            print_offsite(o);
        }
    }
    Ok(if reports.iter().all(|o| o.ok) { Exit::Success } else { Exit::Failed })
}

/// The store and offsite of `offsite --repository … --dest DIR --host NAME`.
fn ad_hoc(a: &OffsiteArgs) -> Result<(Store, Offsite)> {
    let (Some(repository), Some(password_file)) = (&a.repo.repository, &a.repo.password_file) else {
        bail!(Error::config("--repository", "without a plan, give --repository R --password-file F --dest DIR"));
    };
    let Some(dest) = &a.target.dest else {
        bail!(Error::config(
            "--dest",
            "is required with --repository (the destination whose newest snapshot is copied)"
        ));
    };
    a.target.check_host()?;
    let host = a.target.host.clone().unwrap_or_else(hwc_backup_engine::fs::fsutil::hostname);
    let n = |v: Option<u32>, d: Count| v.map(Count::N).unwrap_or(d);
    let defaults = OffsiteKeep::default();
    let o = Offsite {
        repository: repository.clone(),
        password_file: absolute(password_file)?,
        environment_file: None,
        rclone_config_file: a.repo.rclone_config.as_ref().map(|p| absolute(p)).transpose()?,
        restic: a.repo.restic.as_ref().map(|p| absolute(p)).transpose()?,
        rclone: None,
        keep: OffsiteKeep {
            last: n(a.keep_last, defaults.last),
            hourly: n(a.keep_hourly, defaults.hourly),
            daily: n(a.keep_daily, defaults.daily),
            weekly: n(a.keep_weekly, defaults.weekly),
            monthly: n(a.keep_monthly, defaults.monthly),
            yearly: n(a.keep_yearly, defaults.yearly),
            within: a.keep_within.clone(),
        },
        schedule: None,
        check: OffsiteCheck::default(),
        bandwidth_limit: None,
        max_age: "7d".into(),
    };
    o.validate(AD_HOC_NAME)?;
    let state_dir = a.target.state_dir.clone().unwrap_or_else(crate::target::default_state_dir);
    Ok((Store::ad_hoc(host, absolute(dest)?, state_dir), o))
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

pub(crate) fn print_offsite(o: &OffsiteReport) {
    for n in &o.notes {
        println!("offsite {}: note: {n}", o.name);
    }
    if let Some(e) = &o.error {
        println!("offsite copy FAILED: {e}");
        return;
    }
    let snap = o.snapshot.as_deref().unwrap_or("?");
    match &o.summary {
        Some(s) => println!(
            "offsite {}: copied {snap} to {} as restic snapshot {} ({} new, {} changed, {} unmodified files; {} added)",
            o.name,
            o.repository,
            s.snapshot_id,
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            human_bytes(s.data_added)
        ),
        None => println!("offsite {}: {snap} is already in {}", o.name, o.repository),
    }
    if !o.forgotten.is_empty() {
        println!(
            "offsite {}: forgot {} restic snapshot(s){}",
            o.name,
            o.forgotten.len(),
            if o.pruned { " and pruned the repository" } else { "" }
        );
    }
}

/// An offsite repository as the command line names it.
struct Named {
    restic: Restic,
    /// The host whose snapshots count (`None`: whichever single host the repository holds).
    host: Option<String>,
    /// The offsite's name (the plan's, or [`AD_HOC_NAME`]).
    name: String,
    /// The local backup destination, when known (`--dest`, or the plan's).
    local_dest: Option<PathBuf>,
}

/// The repository `--offsite NAME` (of the plan) or `--repository` names.
fn repository_of(target: &Target, name: Option<&str>, repo: &RepoArgs) -> Result<Named> {
    if let Some(r) = &repo.repository {
        let Some(pw) = &repo.password_file else {
            bail!(Error::config("--password-file", "is required with --repository"));
        };
        target.check_host()?;
        let mut restic = Restic::new(repo.restic.clone(), r, &absolute(pw)?)?;
        restic.set_rclone(repo.rclone_config.as_ref().map(|p| absolute(p)).transpose()?.as_deref(), None);
        return Ok(Named {
            restic,
            host: target.host.clone(),
            name: AD_HOC_NAME.into(),
            local_dest: target.dest.clone(),
        });
    }
    let plan = target.load_plan("or --repository R --password-file F")?;
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        bail!(Error::config(
            "--offsite",
            format!(
                "names an offsite of the plan (declared: {})",
                plan.offsite.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        ));
    };
    let Some(o) = plan.offsite.get(name) else {
        bail!(Error::config(format!("offsite.{name}"), "is not an offsite of this plan"));
    };
    Ok(Named {
        restic: Restic::of(o)?,
        host: Some(target.host.clone().unwrap_or(plan.host.clone())),
        name: name.to_string(),
        local_dest: Some(target.dest.clone().unwrap_or(plan.destination.path.clone())),
    })
}

/// `restore --offsite`: list, or restore a path of a restic snapshot with the rules of a
/// local restore.
pub(crate) fn restore_offsite(a: RestoreArgs) -> Result<Exit> {
    let name = a.offsite.clone().unwrap_or_default();
    // Without a plan there is no NAME: a value clap took for one is the first operand.
    let (name, mut operands) = if a.repo.repository.is_some() && !name.is_empty() {
        (String::new(), vec![Some(std::ffi::OsString::from(name))])
    } else {
        (name, Vec::new())
    };
    operands.push(a.snapshot.clone().map(Into::into));
    operands.extend(a.paths.iter().cloned().map(|p| Some(p.into_os_string())));
    if !a.includes.is_empty() || !a.excludes.is_empty() || a.delete {
        bail!(Error::config(
            "restore --offsite",
            "--include, --exclude and --delete work on local snapshots only; restore from the offsite into an empty directory first"
        ));
    }
    let operands: Vec<std::ffi::OsString> = operands.into_iter().flatten().collect();
    let Named { restic, host, local_dest, .. } = repository_of(&a.target, Some(&name), &a.repo)?;
    if a.list {
        let list = offsite::list(&restic, host.as_deref())?;
        if a.json {
            print_json(&list)?;
        } else {
            let mut out = std::io::stdout().lock();
            for s in list.iter().rev() {
                writeln!(out, "{}  {}  {}  {}", s.short_id, s.time, s.hostname, s.local_name().unwrap_or("-"))?;
            }
        }
        return Ok(Exit::Success);
    }
    let [snapshot, path, dest] = operands.as_slice() else {
        bail!(Error::config(
            "restore",
            "give --list, or SNAPSHOT PATH DESTINATION (e.g. latest /home/alice/notes.txt /tmp/notes.txt)"
        ));
    };
    let Some(snapshot) = snapshot.to_str() else {
        bail!(Error::config("SNAPSHOT", format!("{snapshot:?} is not a snapshot name")));
    };
    // A target inside the local backup destination is refused as for a local restore.
    let opts = RestoreOptions {
        force: a.force,
        dry_run: a.dry_run,
        also_refuse_inside: local_dest.as_deref(),
        ..Default::default()
    };
    let report = offsite::restore(&restic, host.as_deref(), snapshot, Path::new(path), Path::new(dest), opts)?;
    super::restore::report(&[report], &a, "offsite snapshot ")
}

/// `verify --offsite`: `restic check` of the next part of the data, and a sample of the newest
/// restic snapshot compared with the local manifest.
pub(crate) fn verify_offsite(a: crate::args::VerifyArgs) -> Result<Exit> {
    let name = a.offsite.clone().unwrap_or_default();
    let (restic, host, name, store, job, subset) = if a.repo.repository.is_some() {
        let Named { restic, host, name, .. } = repository_of(&a.target, None, &a.repo)?;
        // With --dest the sample is compared with the local snapshots and the outcome recorded.
        let store = match &a.target.dest {
            Some(_) => Some(a.target.resolve()?.store),
            None => None,
        };
        let host = host.or_else(|| store.as_ref().map(|s| s.host.clone()));
        (restic, host, name, store, None, a.read_data_subset.clone().or(Some("5%".into())))
    } else {
        let Named { restic, host, name, .. } = repository_of(&a.target, Some(&name), &a.repo)?;
        let job = a.target.load_plan("")?.local_job();
        let o = job.offsites().into_iter().find(|(n, _)| *n == name).map(|(_, o)| o.clone());
        let subset = a.read_data_subset.clone().or(o.and_then(|o| o.check.read_data_subset));
        (restic, host, name, Some(job.store.clone()), Some(job), subset)
    };
    if let Some(s) = &subset {
        hwc_backup_engine::plan::parse_percent(s).map_err(|m| Error::config("--read-data-subset", m))?;
    }
    let report =
        offsite::check(&restic, store.as_ref(), &name, host.as_deref(), subset.as_deref(), offsite::SAMPLE_FILES);
    if let Some(job) = &job {
        let (_, warnings) = ops::after_run::after_offsite_check(job, &report, &Systemd::from_env(), &Live);
        warn(&warnings);
    }
    if a.json {
        print_json(&report)?;
    } else {
        for n in &report.notes {
            println!("offsite {}: note: {n}", report.name);
        }
        match &report.error {
            None => println!(
                "offsite {}: {} is clean (data read: {}; {} files of {} equal to the manifest of {})",
                report.name,
                report.repository,
                report.read_data_subset.as_deref().unwrap_or("none"),
                report.sampled,
                report.restic_snapshot.as_deref().unwrap_or("-"),
                report.local_snapshot.as_deref().unwrap_or("-"),
            ),
            Some(e) => println!("offsite check FAILED: {e}"),
        }
    }
    Ok(if report.ok { Exit::Success } else { Exit::Failed })
}
