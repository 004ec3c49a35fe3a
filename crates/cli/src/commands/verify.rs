//! `verify`: re-read snapshots against their manifests.

use std::io::Write;

use anyhow::Result;
use hwc_backup_engine::ops::state::{DestinationId, StateDir, VerifyCursor};
use hwc_backup_engine::run::{self, human_bytes};
use hwc_backup_engine::store::layout::{HostDir, Snapshot};
use hwc_backup_engine::store::verify;

use super::print_json;
use crate::args::VerifyArgs;
use crate::exit::Exit;
use crate::progress::Progress;

pub(crate) fn verify_cmd(a: VerifyArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    let snapshots: Vec<Snapshot> = if a.all || a.subset.is_some() {
        t.host.list()?
    } else if !a.snapshots.is_empty() {
        a.snapshots.iter().map(|n| t.host.resolve(n)).collect::<hwc_backup_engine::Result<_>>()?
    } else {
        vec![t.host.resolve(a.snapshot.as_deref().unwrap_or("latest"))?]
    };
    let threads = a.threads.unwrap_or_else(run::default_threads);
    // `--subset`: the slice after the one the last subset verify of this drive checked.
    let cursor_scope = a.subset.map(|_| {
        let dest = t.host.root().parent().unwrap_or(std::path::Path::new("/"));
        StateDir::new(&t.state_dir, &t.host_name).destination(&DestinationId::of(dest))
    });
    let slice = a.subset.zip(cursor_scope.as_ref()).map(|(pct, scope)| {
        let of = verify::Slice::count_for(pct);
        verify::Slice { index: scope.verify_cursor().current(of), of }
    });
    let inodes = verify::Inodes::new();
    let opts = verify::VerifyOptions { inodes: Some(&inodes), slice, listing_inodes: None };
    // A bar of the bytes the snapshots' metadata says they hold (copied and linked).
    let progress = Progress::bytes(!a.json);
    progress.total(snapshots.iter().map(|s| s.meta.counts.bytes_copied + s.meta.counts.bytes_linked).sum());
    let latest = t.host.resolve("latest").ok().map(|s| s.path);
    let outcomes = verify_each(&t.host, &snapshots, threads, opts, &progress, |s| {
        if Some(&s.path) == latest.as_ref() {
            a.sample
        } else {
            0
        }
    });
    let mut reports = Vec::new();
    let mut expired = Vec::new();
    for (s, outcome) in snapshots.iter().zip(outcomes) {
        match outcome? {
            Some(r) => reports.push(r),
            None => expired.push(s.id()),
        }
    }
    progress.finish();
    for id in &expired {
        eprintln!("hwc-backup: note: {id} was expired by a concurrent prune while it was verified; not checked");
    }
    verify::attribute_damage(&mut reports);
    crate::ops::after_verify(&t, &reports);
    if let (Some(scope), Some(slice)) = (&cursor_scope, slice) {
        if let Err(e) = scope.write_verify_cursor(&VerifyCursor::after(slice.index, slice.of)) {
            eprintln!("hwc-backup: warning: the next slice of --subset was not recorded: {e}");
        }
        if !a.json {
            println!("slice {} of {} of the distinct files checked", slice.index + 1, slice.of);
        }
    }
    let clean = reports.iter().all(verify::VerifyReport::is_clean);
    if a.json {
        print_json(&reports)?;
    } else {
        print_verify(&reports)?;
    }
    Ok(if clean { Exit::Success } else { Exit::Failed })
}

/// Snapshots verified at the same time after the first (see [`verify_each`]).
const AT_ONCE: usize = 2;

/// Verifies `snapshots` with one inode table, each with `sample(s)` files compared with the
/// source; the outcome of each, in their order. The first is verified alone: it reads nearly
/// every inode. The others mostly find their inodes hashed already, and each costs a walk of
/// its tree and a parse of its manifest — work for one core each — so [`AT_ONCE`] of them run
/// side by side (a file whose inode one of them is still hashing waits for that result rather
/// than being read twice).
fn verify_each(
    host: &HostDir,
    snapshots: &[Snapshot],
    threads: usize,
    opts: verify::VerifyOptions,
    progress: &Progress,
    sample: impl Fn(&Snapshot) -> usize + Sync,
) -> Vec<Result<Option<verify::VerifyReport>>> {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    // Files and bytes of the snapshots finished, and of each one in progress (by slot).
    let finished = (AtomicU64::new(0), AtomicU64::new(0));
    let slots: Vec<(AtomicU64, AtomicU64)> = (0..AT_ONCE).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect();
    let one = |i: usize, slot: usize| -> Result<Option<verify::VerifyReport>> {
        let s = &snapshots[i];
        let shown = |f: u64, b: u64| {
            slots[slot].0.store(f, Ordering::Relaxed);
            slots[slot].1.store(b, Ordering::Relaxed);
            let files =
                finished.0.load(Ordering::Relaxed) + slots.iter().map(|c| c.0.load(Ordering::Relaxed)).sum::<u64>();
            let bytes =
                finished.1.load(Ordering::Relaxed) + slots.iter().map(|c| c.1.load(Ordering::Relaxed)).sum::<u64>();
            progress.done(bytes, format!("{files} files verified"));
        };
        let r = verify_where_it_is(host, s, threads, sample(s), opts, &shown);
        if let Ok(Some(r)) = &r {
            finished.0.fetch_add(r.files_checked, Ordering::Relaxed);
            finished.1.fetch_add(r.bytes_checked, Ordering::Relaxed);
        }
        slots[slot].0.store(0, Ordering::Relaxed);
        slots[slot].1.store(0, Ordering::Relaxed);
        r
    };
    if snapshots.is_empty() {
        return Vec::new();
    }
    let mut out = vec![(0, one(0, 0))];
    let next = AtomicUsize::new(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..AT_ONCE.min(snapshots.len() - 1))
            .map(|slot| {
                let (next, one) = (&next, &one);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= snapshots.len() {
                            return done;
                        }
                        done.push((i, one(i, slot)));
                    }
                })
            })
            .collect();
        for w in workers {
            out.extend(w.join().expect("a verify thread panicked"));
        }
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Verifies `s` where it is, reading without the host lock. A prune running meanwhile (alone
/// or after a `now`) may move the snapshot to another tier or expire it, which would show as
/// missing files: damage counts only when the snapshot is still where it was verified. A
/// moved snapshot is found again by name across the tiers and verified again there; one
/// expired meanwhile returns `None`.
///
/// Verify does not take the lock, not even shared: a shared lock would make every backup or
/// prune that starts during a verify (hours, with `--all` on a big disk) skip its work.
pub(crate) fn verify_where_it_is(
    host: &HostDir,
    s: &Snapshot,
    threads: usize,
    sample: usize,
    opts: verify::VerifyOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Option<verify::VerifyReport>> {
    let mut s = s.clone();
    // A snapshot moves at most once per tier; more moves than tiers would be a loop.
    for _ in 0..=hwc_backup_engine::store::layout::TIERS.len() {
        let result = verify::verify_with(host, &s, threads, sample, opts, progress);
        let now = host.list()?.into_iter().find(|now| now.name == s.name);
        if let Ok(mut report) = result.as_ref().cloned() {
            if report.is_clean() {
                // Read through the handle opened at the start: a snapshot that a prune moved
                // meanwhile was verified all the same; name it where it is now.
                if let Some(now) = &now {
                    report.snapshot = now.id();
                }
                return Ok(Some(report));
            }
        }
        match now {
            Some(now) if now.path == s.path => return Ok(Some(result?)),
            Some(now) => {
                tracing::info!("{} moved to {} while it was verified; verifying it there", s.id(), now.id());
                s = now;
            }
            None => return Ok(None),
        }
    }
    Ok(Some(verify::verify_with(host, &s, threads, sample, opts, progress)?))
}

pub(crate) fn print_verify(reports: &[verify::VerifyReport]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let none = Vec::new();
    for r in reports {
        let verdict = if r.is_clean() { "OK" } else { "DAMAGED" };
        writeln!(
            out,
            "{}: {verdict}: {} files ({}) checked",
            r.snapshot,
            r.files_checked,
            human_bytes(r.bytes_checked)
        )?;
        if r.files_shared > 0 || r.files_skipped > 0 {
            writeln!(
                out,
                "  {} files read ({}), {} shared with a snapshot checked before, {} outside this slice",
                r.files_read,
                human_bytes(r.bytes_read),
                r.files_shared,
                r.files_skipped
            )?;
        }
        for d in &r.damage {
            writeln!(out, "  changed: {} (inode {}, in {})", d.path, d.inode, d.snapshots.join(", "))?;
        }
        for p in &r.lost {
            writeln!(out, "  lost (marked by repair): {}", p.display())?;
        }
        for (what, list) in [
            ("changed", if r.damage.is_empty() { &r.changed } else { &none }),
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
