//! A small wrapper around the `restic` program: one repository, its password file, the
//! environment a cloud backend needs, and the few subcommands the offsite copies run.
//!
//! Every command gets the repository and password file as `--repo=…`/`--password-file=…`
//! (a value can never be taken for an option), `RESTIC_*` variables of the caller's
//! environment are removed (so a stray `RESTIC_PASSWORD` cannot pick another key), `TZ=UTC`
//! (restic reads `--time` in its own local zone), and the lines of the environment file.
//! An error names the repository and carries the tail of restic's own stderr.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::Offsite;

/// The tag every snapshot written by hwc-backup carries.
pub const TAG: &str = "hwc-backup";
/// The prefix of the tag naming the local snapshot (`snapshot:2025-01-15_02-00-00`).
pub const SNAPSHOT_TAG: &str = "snapshot:";

/// One restic repository and how to reach it.
#[derive(Clone, Debug)]
pub struct Restic {
    /// The restic binary.
    pub bin: PathBuf,
    /// The repository string.
    pub repository: String,
    /// `--password-file`.
    pub password_file: PathBuf,
    /// Extra environment (from the environment file, and `RCLONE_CONFIG`).
    pub env: Vec<(String, String)>,
    /// `-o rclone.program=`.
    pub rclone_program: Option<PathBuf>,
    /// `--limit-upload`, KiB/s.
    pub limit_upload: Option<u64>,
}

/// restic's `backup --json` summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    /// Files not in the parent.
    #[serde(alias = "files_new")]
    pub files_new: u64,
    /// Files changed since the parent (read and chunked again).
    #[serde(alias = "files_changed")]
    pub files_changed: u64,
    /// Files unchanged since the parent (neither read nor uploaded).
    #[serde(alias = "files_unmodified")]
    pub files_unmodified: u64,
    /// Bytes added to the repository (after deduplication, before compression).
    #[serde(alias = "data_added")]
    pub data_added: u64,
    /// Files processed.
    #[serde(alias = "total_files_processed")]
    pub total_files_processed: u64,
    /// Bytes of the files processed (their sizes, read or not).
    #[serde(alias = "total_bytes_processed")]
    pub total_bytes_processed: u64,
    /// restic's own duration, seconds.
    #[serde(alias = "total_duration")]
    pub total_duration: f64,
    /// The new snapshot's ID.
    #[serde(alias = "snapshot_id")]
    pub snapshot_id: String,
}

/// One snapshot of `restic snapshots --json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResticSnapshot {
    /// Its full ID.
    pub id: String,
    /// Its short ID.
    #[serde(default)]
    pub short_id: String,
    /// Its time (as given with `--time`).
    pub time: String,
    /// `--host`.
    #[serde(default)]
    pub hostname: String,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// The paths backed up (absolute, as restic saw them).
    #[serde(default)]
    pub paths: Vec<String>,
}

impl ResticSnapshot {
    /// The local snapshot's name from the `snapshot:` tag.
    pub fn local_name(&self) -> Option<&str> {
        self.tags.iter().flatten().find_map(|t| t.strip_prefix(SNAPSHOT_TAG))
    }

    /// Its time.
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
    }
}

impl Restic {
    /// The restic of an offsite of the plan: its binary, repository, password file,
    /// environment file and rclone settings.
    pub fn of(o: &Offsite) -> Result<Restic> {
        let mut r = Restic::new(o.restic.clone(), &o.repository, &o.password_file)?;
        if let Some(f) = &o.environment_file {
            r.env.extend(read_env_file(f)?);
        }
        r.set_rclone(o.rclone_config_file.as_deref(), o.rclone.clone());
        r.limit_upload = o.bandwidth_limit;
        Ok(r)
    }

    /// A repository given directly (no plan).
    pub fn new(bin: Option<PathBuf>, repository: &str, password_file: &Path) -> Result<Restic> {
        crate::plan::validate_repository("repository", repository)?;
        let bin =
            match bin {
                Some(b) => b,
                None => crate::ops::notify::find_program("restic", &["/run/current-system/sw/bin/restic"]).ok_or_else(
                    || Error::Command {
                        what: "restic".into(),
                        message: "restic is not installed (not on PATH); install it or set offsite.<name>.restic"
                            .into(),
                    },
                )?,
            };
        Ok(Restic {
            bin,
            repository: repository.to_string(),
            password_file: password_file.to_path_buf(),
            env: Vec::new(),
            rclone_program: None,
            limit_upload: None,
        })
    }

    /// The rclone config file (`RCLONE_CONFIG`) and program for an `rclone:` repository.
    pub fn set_rclone(&mut self, config: Option<&Path>, program: Option<PathBuf>) {
        if let Some(c) = config {
            self.env.push(("RCLONE_CONFIG".into(), c.display().to_string()));
        }
        self.rclone_program = program;
    }

    /// Refuses a password file that is missing or empty, before restic is run (restic would
    /// ask on a terminal, or `init` a repository with an empty password).
    pub fn check_password_file(&self) -> Result<()> {
        let p = &self.password_file;
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() && m.len() > 0 => Ok(()),
            Ok(m) if m.is_file() => Err(Error::config(
                "passwordFile",
                format!("{} is empty; restic needs the repository's password in it", p.display()),
            )),
            Ok(_) => Err(Error::config("passwordFile", format!("{} is not a file", p.display()))),
            Err(e) => Err(Error::config(
                "passwordFile",
                format!("{} cannot be read ({e}); the offsite repository {} needs it", p.display(), self.repository),
            )),
        }
    }

    /// The options every command gets.
    fn global_args(&self) -> Vec<String> {
        let mut a =
            vec![format!("--repo={}", self.repository), format!("--password-file={}", self.password_file.display())];
        if let Some(p) = &self.rclone_program {
            a.push("-o".into());
            a.push(format!("rclone.program={}", p.display()));
        }
        if let Some(l) = self.limit_upload {
            a.push(format!("--limit-upload={l}"));
        }
        a
    }

    /// The command line of `args`, as shown in reports (the password file is named, not read).
    pub fn command_line(&self, args: &[String]) -> Vec<String> {
        std::iter::once(self.bin.display().to_string()).chain(self.global_args()).chain(args.iter().cloned()).collect()
    }

    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RESTIC_") {
                c.env_remove(k);
            }
        }
        c.env("TZ", "UTC");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.args(self.global_args()).args(args).stdin(Stdio::null());
        c
    }

    /// Runs restic (in `cwd` when given); its stdout, or an error naming the repository and
    /// the tail of restic's stderr.
    pub fn run(&self, args: &[String], cwd: Option<&Path>) -> Result<String> {
        self.run_with(args, &[], cwd, &|_| true)
    }

    /// [`Restic::run`] with `extra` arguments after `args`, taken as they are (paths that
    /// need not be UTF-8), keeping only the lines of stdout that `keep` wants.
    ///
    /// What restic prints comes from the repository (a listing of its snapshots) or grows
    /// with the work (`backup --json`'s status lines), and neither is ours to bound: at most
    /// [`MAX_OUTPUT`] bytes of kept lines are held (restic is stopped beyond that, with an
    /// error saying so) and only the last [`STDERR_TAIL`] bytes of stderr.
    fn run_with(
        &self,
        args: &[String],
        extra: &[OsString],
        cwd: Option<&Path>,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<String> {
        use std::io::{BufRead, Read};
        let verb = args.first().cloned().unwrap_or_default();
        let mut cmd = self.command(args);
        cmd.args(extra);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| Error::Command {
            what: format!("restic {verb} ({})", self.repository),
            message: format!("cannot run {}: {e}", self.bin.display()),
        })?;
        let what = || format!("restic {verb} of repository {}", self.repository);
        let stderr = drain_tail(child.stderr.take().expect("piped"), STDERR_TAIL);
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut kept = Vec::new();
        let mut line = Vec::new();
        // `Ok(false)`: more than MAX_OUTPUT bytes of kept lines, or one line longer than that.
        let read = loop {
            line.clear();
            let room = (MAX_OUTPUT - kept.len()) as u64;
            match stdout.by_ref().take(room + 1).read_until(b'\n', &mut line) {
                Ok(0) => break Ok(true),
                Ok(_) if line.len() as u64 > room => break Ok(false),
                Ok(_) if keep(&line) => kept.extend_from_slice(&line),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if !matches!(read, Ok(true)) {
            let _ = child.kill();
        }
        drop(stdout);
        let status = child.wait().map_err(|e| Error::Command { what: what(), message: e.to_string() })?;
        let stderr = stderr.join().unwrap_or_default();
        match read {
            Err(e) => return Err(Error::Command { what: what(), message: format!("cannot read its output: {e}") }),
            Ok(false) => {
                return Err(Error::Command {
                    what: what(),
                    message: format!("restic printed more than {} MiB; stopped", MAX_OUTPUT >> 20),
                })
            }
            Ok(true) => {}
        }
        if status.success() {
            return Ok(String::from_utf8_lossy(&kept).into_owned());
        }
        Err(exited(what(), status, &stderr))
    }

    /// Whether the repository exists (`restic cat config`): `false` when restic says there is
    /// none at that location, an error for anything else (a wrong password, a network).
    pub fn exists(&self) -> Result<bool> {
        match self.run(&["cat".into(), "config".into()], None) {
            Ok(_) => Ok(true),
            Err(e) if is_missing_repository(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `restic init`.
    pub fn init(&self) -> Result<()> {
        self.run(&["init".into()], None).map(|_| ())
    }

    /// The snapshots of `host` tagged by hwc-backup, oldest first.
    ///
    /// Read without a lock (`--no-lock`): a listing changes nothing, and restic's lock costs a
    /// lock file written and removed plus a fixed 200 ms wait before it checks for competing
    /// locks (`waitBeforeLockCheck` in restic's `lock.go`), on every copy. A snapshot that a
    /// concurrent `forget` removes meanwhile is at worst a parent that `backup` then refuses.
    pub fn snapshots(&self, host: Option<&str>) -> Result<Vec<ResticSnapshot>> {
        let mut args: Vec<String> =
            vec!["snapshots".into(), "--no-lock".into(), "--json".into(), format!("--tag={TAG}")];
        if let Some(h) = host {
            args.push(format!("--host={h}"));
        }
        let text = self.run(&args, None)?;
        let mut list: Vec<ResticSnapshot> = serde_json::from_str(text.trim()).map_err(|e| Error::Command {
            what: format!("restic snapshots of repository {}", self.repository),
            message: format!("unexpected output: {e}"),
        })?;
        list.sort_by_key(ResticSnapshot::timestamp);
        Ok(list)
    }

    /// `restic backup --json ARGS`, returning its summary.
    pub fn backup(&self, args: &[String], sources: &[PathBuf], cwd: &Path) -> Result<BackupSummary> {
        let mut all = vec!["backup".to_string(), "--json".into()];
        all.extend(args.iter().cloned());
        let extra: Vec<OsString> =
            std::iter::once(OsString::from("--")).chain(sources.iter().map(|p| p.clone().into_os_string())).collect();
        // Status lines come every few seconds of a long backup; only the summary is used.
        let text = self.run_with(&all, &extra, Some(cwd), &|l| !is_status_line(l))?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| Error::Command {
                what: format!("restic backup to repository {}", self.repository),
                message: "restic printed no summary".into(),
            })
    }

    /// `restic forget` of `host`'s hwc-backup snapshots with `keep`; the IDs removed.
    pub fn forget(&self, host: &str, keep: &[String], dry_run: bool) -> Result<Vec<String>> {
        let mut args: Vec<String> = vec![
            "forget".into(),
            "--json".into(),
            format!("--host={host}"),
            format!("--tag={TAG}"),
            "--group-by=host".into(),
        ];
        if dry_run {
            args.push("--dry-run".into());
        }
        args.extend(keep.iter().cloned());
        let text = self.run(&args, None)?;
        #[derive(Deserialize)]
        struct Group {
            #[serde(default)]
            remove: Option<Vec<ResticSnapshot>>,
        }
        // restic prints the JSON on one line (after "Applying Policy" lines in some versions).
        let groups: Vec<Group> =
            text.lines().find_map(|l| serde_json::from_str(l.trim()).ok()).ok_or_else(|| Error::Command {
                what: format!("restic forget in repository {}", self.repository),
                message: format!("unexpected output {:?}", text.chars().take(200).collect::<String>()),
            })?;
        Ok(groups.into_iter().flat_map(|g| g.remove.unwrap_or_default()).map(|s| s.id).collect())
    }

    /// `restic prune`.
    pub fn prune(&self) -> Result<()> {
        self.run(&["prune".into()], None).map(|_| ())
    }

    /// `restic check`, reading `subset` (`n/t` or `N%`) of the data when given.
    pub fn check(&self, subset: Option<&str>) -> Result<()> {
        let mut args: Vec<String> = vec!["check".into()];
        if let Some(s) = subset {
            args.push(format!("--read-data-subset={s}"));
        }
        self.run(&args, None).map(|_| ())
    }

    /// The BLAKE3 hash of file `path` of snapshot `id` (`restic dump`, streamed); see
    /// [`Restic::dump_into`] for `limit`.
    pub fn dump_hash(&self, id: &str, path: &Path, limit: u64) -> Result<Option<[u8; 32]>> {
        self.dump_into(id, path, &mut std::io::sink(), limit)
    }

    /// Writes file `path` of snapshot `id` to `out` (`restic dump`, streamed) and returns the
    /// BLAKE3 hash of what was written; `None` when restic gave more than `limit` bytes (it is
    /// stopped there: what a repository holds is not ours to trust, and an endless dump would
    /// otherwise fill the disk or hash for ever).
    pub fn dump_into(
        &self,
        id: &str,
        path: &Path,
        out: &mut dyn std::io::Write,
        limit: u64,
    ) -> Result<Option<[u8; 32]>> {
        use std::io::Read;
        let what = || format!("restic dump {} of repository {}", path.display(), self.repository);
        snapshot_id(id, &what)?;
        let mut child = self
            // Reading needs no lock: a dump leaves nothing in the repository.
            .command(&["dump".into(), "--no-lock".into(), id.into()])
            .arg(path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Command { what: what(), message: format!("cannot run {}: {e}", self.bin.display()) })?;
        let mut stdout = child.stdout.take().expect("piped");
        // stderr is drained beside stdout: a restic that says much there before it is done
        // would otherwise block on a full pipe while this waits for the rest of the file.
        let stderr = drain_tail(child.stderr.take().expect("piped"), STDERR_TAIL);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        // `Ok(false)`: more than `limit` bytes came.
        let copied = loop {
            match stdout.read(&mut buf) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    total += n as u64;
                    if total > limit {
                        break Ok(false);
                    }
                    hasher.update(&buf[..n]);
                    if let Err(e) = out.write_all(&buf[..n]) {
                        break Err(format!("cannot write what it gives: {e}"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        if copied != Ok(true) {
            let _ = child.kill();
        }
        drop(stdout);
        let status = child.wait().map_err(|e| Error::Command { what: what(), message: e.to_string() })?;
        let stderr = stderr.join().unwrap_or_default();
        if !copied.map_err(|message| Error::Command { what: what(), message })? {
            return Ok(None);
        }
        if !status.success() {
            return Err(exited(what(), status, &stderr));
        }
        Ok(Some(*hasher.finalize().as_bytes()))
    }

    /// `restic restore ID --target DIR [--include PATH]`.
    pub fn restore(&self, id: &str, target: &Path, include: Option<&Path>) -> Result<()> {
        snapshot_id(id, &|| format!("restic restore into {} from repository {}", target.display(), self.repository))?;
        let args: Vec<String> = vec!["restore".into(), id.into()];
        let mut extra: Vec<OsString> = vec!["--target".into(), target.as_os_str().to_owned()];
        if let Some(p) = include {
            // `--include` takes a pattern: the path's own `*`, `?`, `[` and `\` are escaped.
            let mut pattern = Vec::new();
            for &b in p.as_os_str().as_bytes() {
                if matches!(b, b'*' | b'?' | b'[' | b'\\') {
                    pattern.push(b'\\');
                }
                pattern.push(b);
            }
            extra.extend(["--include".into(), OsString::from_vec(pattern)]);
        }
        self.run_with(&args, &extra, None, &|_| true).map(|_| ())
    }
}

/// At most this much of restic's stdout is held (a listing of 10 000 snapshots is ~6 MiB).
pub const MAX_OUTPUT: usize = 64 << 20;
/// The end of restic's stderr kept for an error message (its last lines say what went wrong).
pub const STDERR_TAIL: usize = 64 << 10;

/// The error of a restic that exited with `status`, naming `what` it did and the end of what
/// it said on stderr.
fn exited(what: String, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
    Error::Command {
        what,
        message: format!("restic exited with {status}: {}", stderr_tail(&String::from_utf8_lossy(stderr))),
    }
}

/// Whether a line of `restic backup --json` is a progress report (`"message_type":"status"`).
fn is_status_line(line: &[u8]) -> bool {
    const STATUS: &[u8] = br#""message_type":"status""#;
    line.windows(STATUS.len()).any(|w| w == STATUS)
}

/// Reads `from` to its end on a thread and gives its last `keep` bytes: a pipe that nobody
/// reads would block the child once full, and a child saying much must not fill the memory.
fn drain_tail(mut from: impl std::io::Read + Send + 'static, keep: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * keep {
                        tail.drain(..tail.len() - keep);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
        tail
    })
}

/// A snapshot ID as restic's JSON gave it, before it becomes an argument: hex digits only (8
/// for a short ID, up to 64), so a hostile repository or listing cannot pass an option such as
/// `--target=/` in its place.
fn snapshot_id(id: &str, what: &dyn Fn() -> String) -> Result<()> {
    match (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        true => Ok(()),
        false => Err(Error::Command { what: what(), message: format!("{id:?} is not a restic snapshot ID") }),
    }
}

/// Whether restic's error says there is no repository at that location (as opposed to a
/// wrong password, a lock or a network error).
pub fn is_missing_repository(e: &Error) -> bool {
    matches!(e, Error::Command { message, .. }
        if message.contains("Is there a repository at the following location?")
            || message.contains("repository does not exist"))
}

/// `KEY=value` lines (blank lines and `#` comments skipped; `export ` and quotes around the
/// value accepted, as systemd's `EnvironmentFile=` reads them).
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config("environmentFile", format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let Some((k, v)) = l.split_once('=') else {
            return Err(Error::config("environmentFile", format!("{} line {}: not KEY=value", path.display(), i + 1)));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::config(
                "environmentFile",
                format!("{} line {}: {k:?} is not a variable name", path.display(), i + 1),
            ));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The last lines of restic's stderr that say what went wrong (`Fatal:` and the lines after
/// it), or the last lines at all.
pub fn stderr_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let from = lines.iter().position(|l| l.starts_with("Fatal:") || l.contains("error")).unwrap_or(0);
    crate::copies::last_lines(&lines[from..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hex_snapshot_ids_become_arguments() {
        let what = || "restic dump".to_string();
        for good in ["1a2b3c4d", &"f".repeat(64)] {
            assert!(snapshot_id(good, &what).is_ok(), "{good}");
        }
        for bad in ["--target=/", "..", "1a2b3c4", &"f".repeat(65), "latest", "1a2b3c4d ", "-1a2b3c4d"] {
            let e = snapshot_id(bad, &what).unwrap_err().to_string();
            assert!(e.contains("is not a restic snapshot ID"), "{bad}: {e}");
        }
    }

    #[test]
    fn env_files_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# creds\nexport AWS_ACCESS_KEY_ID=\"abc\"\n\nB2_ACCOUNT_KEY='x=y'\n").unwrap();
        assert_eq!(
            read_env_file(&f).unwrap(),
            [("AWS_ACCESS_KEY_ID".into(), "abc".into()), ("B2_ACCOUNT_KEY".into(), "x=y".into())]
        );
        std::fs::write(&f, "NOT A LINE\n").unwrap();
        assert!(read_env_file(&f).unwrap_err().to_string().contains("line 1"));
        let err = "open repository\nFatal: wrong password or no key found\n";
        assert_eq!(stderr_tail(err), "Fatal: wrong password or no key found");
        assert_eq!(stderr_tail(""), "(no output)");
    }
}
