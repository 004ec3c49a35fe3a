//! One suite that every [`Source`] passes: this machine's filesystem, a pulled host (through
//! the real agent over a socket pair), and a btrfs filesystem snapshot. Given the same tree,
//! each must produce the same snapshot (per `rsync -aHAXn`), a manifest holding exactly the
//! source's regular files with their BLAKE3, and the same link decisions on the next run:
//! unchanged files hard-linked to the previous snapshot, changed ones (content, mtime only,
//! mode only) copied, new ones copied. A new `Source` is added to [`sources`] and must pass
//! unchanged (restic's backend test suite is the model).

#![allow(clippy::disallowed_methods)] // scratch trees are built by path

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use hwc_backup_engine::job::Job;
use hwc_backup_engine::plan::{Plan, RemoteHost};
use hwc_backup_engine::run::{self, RunOptions, RunReport};
use hwc_backup_engine::source::remote::agent::{self, AgentConfig};
use hwc_backup_engine::source::remote::ssh::Connection;
use hwc_backup_engine::source::Pull;
use hwc_backup_engine::store::meta::RunState;

const EXCLUDE: &str = "*.skip";

/// Runs one backup of `src` into `dest` as host `host` at the testing clock `when`.
type Runner = fn(src: &Path, dest: &Path, host: &str, when: &str) -> RunReport;

fn plan_for(src: &Path, dest: &Path, host: &str) -> Plan {
    Plan::ad_hoc(host.into(), vec![src.to_path_buf()], dest.to_path_buf(), vec![EXCLUDE.into()])
}

fn opts_at(job: &Job, when: &str) -> RunOptions {
    let mut opts = RunOptions::for_job(job);
    opts.now = Some(when.parse().unwrap());
    opts.prune = false;
    opts
}

fn local(src: &Path, dest: &Path, host: &str, when: &str) -> RunReport {
    let plan = plan_for(src, dest, host);
    run::run(&plan, &opts_at(&plan.local_job(), when), &|_| {})
}

/// The job of a pulled host, as `pull --address … --devices` builds it (the local run keeps
/// device nodes too).
fn pulled_job(src: &Path, dest: &Path, host: &str) -> Job {
    let remote = RemoteHost {
        address: "client.test".into(),
        user: "root".into(),
        port: 22,
        ssh_key_file: None,
        ssh_options: vec![],
        ssh: None,
        agent_command: "hwc-backup agent".into(),
        sources: vec![src.to_path_buf()],
        exclude_patterns: vec![EXCLUDE.into()],
        one_file_system: true,
        devices: true,
        retention: None,
        ..RemoteHost::default()
    };
    Job::pulled_ad_hoc(host, remote, dest.to_path_buf(), "/var/lib/hwc-backup".into()).unwrap()
}

fn pulled(src: &Path, dest: &Path, host: &str, when: &str) -> RunReport {
    let job = pulled_job(src, dest, host);
    let devices = job.pulled().unwrap().remote.devices;
    let config = AgentConfig { allow: vec![src.to_path_buf()], excludes: vec![] };
    let connect = move || {
        let (server, client) = UnixStream::pair().expect("socket pair");
        let cfg = config.clone();
        std::thread::spawn(move || {
            let input = client.try_clone().expect("clone");
            let _ = agent::serve(&cfg, input, client);
        });
        let input = server.try_clone().expect("clone");
        Ok(Connection::from_streams(host, Box::new(input), Box::new(server)))
    };
    run::run_from(&job, &Pull { host, connect: &connect, devices }, &opts_at(&job, when), &|_| {})
}

/// This machine's filesystem read through a read-only btrfs snapshot (the suite's tree is on a
/// loop-mounted btrfs subvolume, see [`Btrfs`]).
fn btrfs_snapshot(src: &Path, dest: &Path, host: &str, when: &str) -> RunReport {
    let mut plan = plan_for(src, dest, host);
    plan.source_snapshots = hwc_backup_engine::plan::SourceSnapshots::Btrfs;
    let r = run::run(&plan, &opts_at(&plan.local_job(), when), &|_| {});
    assert_eq!(r.source_reads.len(), 1, "{:?}", r.source_reads);
    assert_eq!(r.source_reads[0].kind, "btrfs", "{:?}", r.source_reads);
    r
}

/// Every implementation of `Source`, by the host name its snapshots go under.
fn sources() -> Vec<(&'static str, Runner)> {
    vec![("local", local), ("pulled", pulled), ("btrfs", btrfs_snapshot)]
}

/// A btrfs image loop-mounted at `at`, unmounted on drop (tests run as root; the kernel and
/// btrfs-progs are the CI machine's).
struct Btrfs {
    at: PathBuf,
}

impl Btrfs {
    fn new(dir: &Path) -> Btrfs {
        let img = dir.join("btrfs.img");
        std::fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
        let run = |cmd: &mut std::process::Command| {
            let o = cmd.output().unwrap();
            assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        run(std::process::Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&img));
        let at = dir.join("mnt");
        std::fs::create_dir(&at).unwrap();
        run(std::process::Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&at));
        Btrfs { at }
    }

    fn subvolume(&self, name: &str) -> PathBuf {
        let p = self.at.join(name);
        let o = std::process::Command::new("btrfs").args(["-q", "subvolume", "create"]).arg(&p).output().unwrap();
        assert!(o.status.success(), "btrfs subvolume create: {}", String::from_utf8_lossy(&o.stderr));
        p
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        if !std::process::Command::new("umount").arg(&self.at).status().is_ok_and(|s| s.success()) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

fn write(p: &Path, data: impl AsRef<[u8]>) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A tree with every kind of entry a snapshot preserves.
fn tree(src: &Path) {
    write(&src.join("same.txt"), "unchanged\n");
    write(&src.join("content.txt"), "before\n");
    write(&src.join("mtime.txt"), "only its mtime changes\n");
    write(&src.join("mode.txt"), "only its mode changes\n");
    write(&src.join("gone.txt"), "removed before the second run\n");
    write(&src.join("deep/er/still/file"), "deep\n");
    write(&src.join("empty"), "");
    write(&src.join("excluded.skip"), "never in a snapshot\n");
    write(&src.join("big"), (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>());
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(5 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"data", 3 << 20).unwrap();
    std::os::unix::fs::symlink("same.txt", src.join("link")).unwrap();
    std::fs::hard_link(src.join("same.txt"), src.join("deep/same-again")).unwrap();
    std::fs::create_dir_all(src.join("emptydir")).unwrap();
    std::fs::set_permissions(src.join("deep/er"), std::fs::Permissions::from_mode(0o750)).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(src.join("fifo")).status().unwrap().success());
}

/// The changes between the two runs, and what each must do to the link decision.
fn change(src: &Path) {
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&src.join("content.txt"), "after!\n"); // same size, new content and mtime
    let mtime = src.join("mtime.txt");
    assert!(std::process::Command::new("touch").args(["-d", "2030-01-01"]).arg(&mtime).status().unwrap().success());
    std::fs::set_permissions(src.join("mode.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    write(&src.join("new.txt"), "new\n");
}

const LINKED: [&str; 5] = ["same.txt", "deep/same-again", "deep/er/still/file", "big", "sparse"];
const COPIED: [&str; 4] = ["content.txt", "mtime.txt", "mode.txt", "new.txt"];

/// `(hash, path)` of every manifest line.
fn manifest(snapshot: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(snapshot.join(".hwc-backup/manifest.b3")).unwrap();
    text.lines()
        .map(|l| {
            let (hash, path) = l.split_once("  ").expect("b3sum format");
            (path.to_string(), hash.to_string())
        })
        .collect()
}

/// What the manifest must hold: every regular file of the source (not excluded), hashed here.
fn expected_manifest(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![src.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p);
            } else if md.is_file() && !p.to_string_lossy().ends_with(".skip") {
                let rel = p.strip_prefix("/").unwrap().to_string_lossy().into_owned();
                out.insert(rel, blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string());
            }
        }
    }
    out
}

fn rsync_differences(from: &Path, to: &Path) -> String {
    let out = std::process::Command::new("rsync")
        .args(["-aHAXn", "--itemize-changes", "--delete", "--exclude", EXCLUDE])
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()))
        .output()
        .expect("rsync is installed (tests/run installs it)");
    assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshot_of(dest: &Path, host: &str, r: &RunReport) -> PathBuf {
    assert_eq!(r.state, RunState::Success, "{host}: {:?}", r.error);
    dest.join(host).join(r.snapshot.as_ref().unwrap())
}

#[test]
fn every_source_gives_the_same_snapshot_manifest_and_link_decisions() {
    let tmp = tempfile::Builder::new().prefix("hwc-conformance-").tempdir_in("/var/tmp").unwrap();
    let btrfs = Btrfs::new(tmp.path());
    let (src, dest) = (btrfs.subvolume("src"), tmp.path().join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    tree(&src);
    let inner = |snapshot: &Path| snapshot.join(src.strip_prefix("/").unwrap());

    let first: Vec<_> = sources()
        .into_iter()
        .map(|(host, run)| {
            (host, run, snapshot_of(&dest, host, &run(&src, &dest, host, "2025-01-15T02:00:00+01:00[+01:00]")))
        })
        .collect();
    let want = expected_manifest(&src);
    for (host, _, s1) in &first {
        assert_eq!(rsync_differences(&src, &inner(s1)), "", "{host}: the snapshot differs from the source");
        assert_eq!(manifest(s1), want, "{host}: the manifest is not the source's files and hashes");
        assert!(std::fs::metadata(inner(s1).join("sparse")).unwrap().blocks() < 1024, "{host}: holes stay holes");
        assert_eq!(
            std::fs::metadata(inner(s1).join("same.txt")).unwrap().ino(),
            std::fs::metadata(inner(s1).join("deep/same-again")).unwrap().ino(),
            "{host}: hard links inside a source stay links"
        );
    }

    change(&src);
    let want = expected_manifest(&src);
    let mut decisions = Vec::new();
    for (host, run, s1) in &first {
        let r2 = run(&src, &dest, host, "2025-01-16T02:00:00+01:00[+01:00]");
        let s2 = snapshot_of(&dest, host, &r2);
        assert_eq!(rsync_differences(&src, &inner(&s2)), "", "{host}: the second snapshot differs from the source");
        assert_eq!(manifest(&s2), want, "{host}: the second manifest");
        let ino = |s: &Path, f: &str| std::fs::symlink_metadata(inner(s).join(f)).unwrap().ino();
        for f in LINKED {
            assert_eq!(ino(s1, f), ino(&s2, f), "{host}: unchanged {f} must be a hard link to the previous copy");
        }
        for f in COPIED {
            let before = std::fs::symlink_metadata(inner(s1).join(f)).ok().map(|m| m.ino());
            assert_ne!(before, Some(ino(&s2, f)), "{host}: changed {f} must be a new copy");
        }
        assert!(!inner(&s2).join("gone.txt").exists(), "{host}: a removed file is gone");
        decisions.push((host, r2.counts.linked, r2.counts.copied, r2.counts.files, r2.counts.excluded));
    }
    let subvolumes = std::process::Command::new("btrfs").args(["subvolume", "list", "-o"]).arg(&src).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&subvolumes.stdout), "", "no source snapshot is left behind");
    assert!(!src.join(".hwc-backup-source-snapshots").exists(), "nor its private directory");
    // Every source counts alike.
    let counted: Vec<_> = decisions.iter().map(|d| (d.1, d.2, d.3, d.4)).collect();
    assert!(counted.windows(2).all(|w| w[0] == w[1]), "the sources count differently: {decisions:?}");
}
