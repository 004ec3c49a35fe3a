//! Shared helpers for the end-to-end tests: a scratch directory with a source tree and a
//! destination, the binary under test, and small file utilities.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hwc-backup")
}

/// Fails with a clear message when a tool the test needs is missing: tests must never pass
/// by doing nothing.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run tests/run (the README's test command), which installs it");
}

/// A scratch area: `src/` to back up, `dest/` to back up into, `state/` for run records.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dest: PathBuf,
    pub state: PathBuf,
}

/// The host name used by tests.
pub const HOST: &str = "testhost";

impl Env {
    pub fn new() -> Env {
        // Under /var/tmp rather than /tmp: same filesystem as the rest of the test data on
        // these machines, and not a small tmpfs.
        let dir = tempfile::Builder::new().prefix("hwc-test-").tempdir_in("/var/tmp").expect("temp dir");
        let src = dir.path().join("src");
        let dest = dir.path().join("dest");
        let state = dir.path().join("state");
        for d in [&src, &dest, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        Env { dir, src, dest, state }
    }

    /// `hwc-backup ARGS…`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).env_remove("HWC_BACKUP_CONFIG").env_remove("HWC_BACKUP_LOG");
        c
    }

    /// The common `--dest … --host … --state-dir …` arguments.
    pub fn target_args(&self) -> Vec<String> {
        vec!["--dest".into(), s(&self.dest), "--host".into(), HOST.into(), "--state-dir".into(), s(&self.state)]
    }

    /// `hwc-backup now --source src --dest dest … EXTRA…`, at the testing clock `when`.
    pub fn snapshot_at(&self, when: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["now".into(), "--source".into(), s(&self.src)];
        args.extend(self.target_args());
        args.extend(["--now".into(), when.into()]);
        args.extend(extra.iter().map(|x| x.to_string()));
        let out = self.cmd(&[]).args(&args).output().expect("run hwc-backup");
        out
    }

    /// Like `snapshot_at`, and asserts success.
    pub fn snapshot_ok(&self, when: &str, extra: &[&str]) -> Output {
        let out = self.snapshot_at(when, extra);
        assert!(out.status.success(), "backup failed: {}", show(&out));
        out
    }

    /// `hwc-backup SUB --dest … ARGS…`.
    pub fn run(&self, sub: &str, args: &[&str]) -> Output {
        let mut c = self.cmd(&[sub]);
        c.args(self.target_args()).args(args);
        c.output().expect("run hwc-backup")
    }

    /// The host directory.
    pub fn host_dir(&self) -> PathBuf {
        self.dest.join(HOST)
    }

    /// Where the source tree sits inside a snapshot directory (`daily/NAME`).
    pub fn in_snapshot(&self, id: &str) -> PathBuf {
        self.host_dir().join(id).join(self.src.strip_prefix("/").unwrap())
    }

    /// Snapshot ids (`daily/NAME`) on disk, sorted.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for tier in ["hourly", "daily", "weekly", "monthly", "yearly"] {
            if let Ok(rd) = std::fs::read_dir(self.host_dir().join(tier)) {
                for e in rd {
                    ids.push(format!("{tier}/{}", e.unwrap().file_name().to_string_lossy()));
                }
            }
        }
        ids.sort();
        ids
    }
}

/// A path as a String.
pub fn s(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

/// Writes a file, creating its parents.
pub fn write(p: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The inode of a path (not following symlinks).
pub fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).ino()
}

/// Runs a shell command and returns its stdout; panics with its output on failure.
pub fn sh(script: &str) -> String {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "`{script}` failed: {}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Sets the extended attribute `name` of `p` (not following a symlink's target: `p` is a file).
pub fn set_xattr(p: &Path, name: &str, value: &str) {
    rustix::fs::setxattr(p, name, value.as_bytes(), rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
}

/// The extended attribute `name` of `p`, as text.
pub fn xattr(p: &Path, name: &str) -> String {
    let mut buf = [0u8; 256];
    let n = rustix::fs::getxattr(p, name, &mut buf[..])
        .unwrap_or_else(|e| panic!("getxattr {name} on {}: {e}", p.display()));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Every path below `root` (relative, sorted), not following symlinks.
pub fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd {
            let p = e.unwrap().path();
            out.push(s(p.strip_prefix(root).unwrap()));
            if p.symlink_metadata().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A filesystem a test mounted — a tmpfs, or an image on a loop device — unmounted again on
/// drop (lazily when still busy, e.g. a killed child's open file), also when the test panics.
/// Declare it after the `Env` it lives in, so that it is dropped first.
pub struct Mount {
    pub at: PathBuf,
}

impl Mount {
    /// `mount -t tmpfs -o OPTIONS tmpfs DIR`, e.g. `size=2m` or `size=64m,nr_inodes=400`.
    pub fn tmpfs(dir: &Path, options: &str) -> Mount {
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir).output().unwrap();
        assert!(
            o.status.success(),
            "cannot mount a tmpfs on {} (these tests run as root with CAP_SYS_ADMIN): {}",
            dir.display(),
            show(&o)
        );
        Mount { at: dir.to_path_buf() }
    }

    /// [`make_image`], then [`Mount::loop_image`] of it on `at` (an existing directory).
    pub fn image(image: &Path, mkfs: &str, args: &[&str], mib: u64, at: &Path) -> Mount {
        make_image(image, mkfs, args, mib);
        Mount::loop_image(image, at)
    }

    /// `mount -o loop IMAGE AT`.
    pub fn loop_image(image: &Path, at: &Path) -> Mount {
        let image = image.to_str().expect("a UTF-8 image path");
        Mount::with(&["-o", "loop", image], at)
    }

    /// `mount ARGS… AT` (e.g. `-o subvol=NAME DEVICE`).
    pub fn with(args: &[&str], at: &Path) -> Mount {
        let o = Command::new("mount").args(args).arg(at).output().unwrap();
        assert!(o.status.success(), "mount {args:?} {} (tests run as root): {}", at.display(), show(&o));
        Mount { at: at.to_path_buf() }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.at).status().is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a killed child's open file): detach it now, the kernel finishes later.
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// `MKFS ARGS… IMAGE` on a new sparse file of `mib` MiB (the program must be installed:
/// `tests/run` installs it).
pub fn make_image(image: &Path, mkfs: &str, args: &[&str], mib: u64) {
    require(mkfs);
    std::fs::File::create(image).unwrap().set_len(mib << 20).unwrap();
    let o = Command::new(mkfs).args(args).arg(image).output().unwrap();
    assert!(o.status.success(), "{mkfs} {}: {}", image.display(), show(&o));
}

/// Bytes available at `path`, as `df` shows them.
pub fn avail_bytes(path: &Path) -> u64 {
    let out = sh(&format!("df -B1 --output=avail '{}' | tail -n 1", path.display()));
    out.trim().parse().unwrap_or_else(|e| panic!("df output {out:?}: {e}"))
}

/// The exit code of a finished command (panics if a signal ended it).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed by a signal: {}", show(o)))
}

/// A complete, valid plan for `env` (no mount point required, state under `env.state`), as
/// JSON to edit before writing it with `write_plan`.
pub fn plan_json(env: &Env) -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "host": HOST,
        "destination": { "path": s(&env.dest), "requireMountPoint": false, "minFreeBytes": 0 },
        "sources": [s(&env.src)],
        "excludePatterns": [],
        "oneFileSystem": true,
        "retention": { "last": 0, "hourly": 0, "daily": 7, "weekly": 4, "monthly": 6, "yearly": 0,
                       "within": null, "pruneAfterRun": true },
        "hooks": { "preBackup": null, "postBackup": null },
        "cloud": { "enable": false, "remote": null, "syncMode": "sync", "bandwidthLimit": null,
                   "rcloneConfigFile": null, "rclone": null },
        "notifications": { "onSuccess": false, "onFailure": false, "ntfy": null, "webhook": null,
                           "healthchecks": null, "email": null },
        "health": { "maxAge": "48h", "minBackups": 1 },
        "metrics": { "textfileDir": null },
        "logDir": s(&env.dir.path().join("log")),
        "stateDir": s(&env.state),
    })
}

/// Writes a plan (JSON value or raw text) to `<scratch>/NAME` — outside the destination — and
/// returns its path.
pub fn write_plan(env: &Env, name: &str, text: &str) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

impl Env {
    /// Like [`Env::new`], but on a tmpfs (`/dev/shm`) when the machine has a writable one, for
    /// tests that run hundreds of backups to check logic, not the disk (every run syncs the
    /// filesystem, which on a busy disk costs far more than the backup itself).
    pub fn on_tmpfs() -> Env {
        let shm = Path::new("/dev/shm");
        let Ok(dir) = tempfile::Builder::new().prefix("hwc-test-").tempdir_in(shm) else { return Env::new() };
        let src = dir.path().join("src");
        let dest = dir.path().join("dest");
        let state = dir.path().join("state");
        for d in [&src, &dest, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        Env { dir, src, dest, state }
    }
}
