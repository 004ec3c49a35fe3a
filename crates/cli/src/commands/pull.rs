//! `pull`: the server side of a pull, one run for one host.

use anyhow::{bail, Result};
use hwc_backup_engine::job::Job;
use hwc_backup_engine::plan::RemoteHost;
use hwc_backup_engine::run::{self, RunOptions};
use hwc_backup_engine::source::Pull;
use hwc_backup_engine::Error;

use super::parse_now;
use crate::args::PullArgs;
use crate::exit::Exit;
use crate::progress::Progress;

/// `pull`: one run for one host, into `<dest>/<host>/` with the local run's guarantees.
pub fn pull(a: PullArgs) -> Result<Exit> {
    // Every argument is checked before anything is written.
    a.target.check_host()?;
    let now = parse_now(&a.now)?;
    let configured = a.address.is_none();
    let mut job = if configured { from_plan(&a)? } else { ad_hoc(&a)? };
    if let Some(mode) = a.store {
        job.store.destination.store = mode;
    }
    let host = &job.pulled().expect("pull builds a pulled host's job").remote;
    let mut opts = RunOptions::for_job(&job);
    opts.now = now;
    opts.allow_shrink = a.allow_shrink;
    opts.prune = opts.prune && !a.no_prune;
    crate::ops::before_run(&job, configured);
    let target = host.ssh_target();
    let connect = || target.connect(job.host());
    let progress = Progress::new(!a.json);
    let report =
        run::run_from(&job, &Pull { host: job.host(), connect: &connect, devices: host.devices }, &opts, &|c| {
            progress.counts(c)
        });
    progress.finish();
    let how = crate::ops::Invocation { configured, push_cloud: false, allow_shrink: a.allow_shrink, json: a.json };
    crate::ops::finish_run(&job, &report, &how)
}

/// `--host NAME` from the plan's `hosts`.
pub(crate) fn from_plan(a: &PullArgs) -> Result<Job> {
    let no_plan_args =
        a.user.is_none() && a.sources.is_empty() && a.target.dest.is_none() && a.ssh_key.is_none() && !a.devices;
    if !no_plan_args {
        bail!(Error::config(
            "--address",
            "is required with --user/--source/--dest/--ssh-key/--devices (a pull without a plan; with one, set hosts.<name>.devices)"
        ));
    }
    if a.exclude_by.any() {
        bail!(Error::config(
            "--exclude-caches",
            "--exclude-caches, --exclude-if-present and --exclude-larger-than are for a pull without a plan; \
             with one, set hosts.<name>.excludeCaches, excludeIfPresent, excludeLargerThan"
        ));
    }
    let Some(name) = &a.target.host else {
        bail!(Error::config("--host", "name the host to pull (a key of the plan's hosts)"));
    };
    let plan = a.target.load_plan("or --address ADDRESS --user USER --source PATH --dest DIR to pull without one")?;
    Ok(plan.pulled_job(name)?)
}

/// A pull without a plan: everything from the arguments, the built-in retention defaults.
pub(crate) fn ad_hoc(a: &PullArgs) -> Result<Job> {
    if a.target.config.is_some() {
        bail!(Error::config("--config", "give either --config or --address/--user/--source/--dest, not both"));
    }
    let missing = |what: &str| Error::config(what, "is required with --address");
    let name = a.target.host.clone().ok_or_else(|| missing("--host"))?;
    let user = a.user.clone().ok_or_else(|| missing("--user"))?;
    let dest = a.target.dest.clone().ok_or_else(|| missing("--dest"))?;
    if a.sources.is_empty() {
        bail!(missing("--source"));
    }
    crate::commands::exclude_by_args(&a.exclude_by)?;
    let host = RemoteHost {
        address: a.address.clone().expect("ad hoc"),
        user,
        port: a.port,
        ssh_key_file: a.ssh_key.clone(),
        ssh_options: a.ssh_options.clone(),
        ssh: a.ssh_program.clone(),
        agent_command: a.agent_command.clone(),
        sources: a.sources.clone(),
        exclude_patterns: a.excludes.clone(),
        exclude_caches: a.exclude_by.exclude_caches,
        exclude_if_present: a.exclude_by.exclude_if_present.clone(),
        exclude_larger_than: a.exclude_by.exclude_larger_than.clone(),
        one_file_system: true,
        devices: a.devices,
        retention: None,
    };
    // Validated as a plan's `hosts.<name>` entry, so the messages name the same fields.
    let state_dir = a.target.state_dir.clone().unwrap_or_else(crate::target::default_state_dir);
    let job = Job::pulled_ad_hoc(&name, host, dest.clone(), state_dir)?;
    crate::commands::create_dest(&dest)?;
    Ok(job)
}
