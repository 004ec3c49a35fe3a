//! Database dumps, taken before the snapshot into `databases.stagingDir` (which the plan
//! requires to lie inside a source, so the snapshot holds the dumps):
//!
//! ```text
//! <stagingDir>/postgresql/all.sql          pg_dumpall (no databases listed)
//! <stagingDir>/postgresql/globals.sql      pg_dumpall --globals-only   } databases listed:
//! <stagingDir>/postgresql/<db>.dump        pg_dump -Fc, one per db     } roles + each db
//! <stagingDir>/mysql/all.sql               mysqldump --all-databases (no databases listed)
//! <stagingDir>/mysql/<db>.sql              mysqldump --databases <db>, one per db
//! <stagingDir>/sqlite/<absolute path>       each SQLite file, `VACUUM INTO` (one read transaction)
//! ```
//!
//! A SQLite database is copied by `sqlite3 -readonly SRC "VACUUM INTO 'DEST'"`: one read
//! transaction, so the copy is the database as one commit left it, whatever writes go on
//! meanwhile (WAL or rollback journal). The online-backup API of the `sqlite3` shell
//! (`.backup`) copies a number of pages per step and, as SQLite documents, starts again
//! whenever another process writes between two steps: a large database written every second
//! (Home Assistant's recorder) may never finish. The copy is checked with `PRAGMA quick_check` before it counts.
//!
//! Each engine's dumps are written into a fresh hidden directory and swapped in only when all
//! of them succeeded, so the staging directory holds exactly one consistent set, and a
//! database dropped from the list does not linger. A failed dump is an error: the run fails
//! and publishes nothing, because a snapshot without the database it was meant to hold is
//! the silent failure backups exist to prevent.
//!
//! The dump programs run as the plan's `user` (peer / unix_socket authentication, as
//! `sudo -u postgres pg_dumpall` would); their output goes through a pipe into files this
//! process owns, so the staging directory stays private (0700).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::plan::{Databases, Mysql, Postgresql};

/// One dump file written.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DumpFile {
    /// `postgresql` or `mysql`.
    pub engine: &'static str,
    /// The database, or `None` for a dump of everything (or the globals).
    pub database: Option<String>,
    /// Where it was written (its final place in the staging directory).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// How long the dump took.
    pub seconds: f64,
    /// What the dump program wrote to stderr (warnings), for the snapshot's log.
    pub stderr: String,
}

/// Runs every enabled dump; see the module docs. Returns the files written.
#[expect(
    clippy::disallowed_methods,
    reason = "the staging directory is the plan's, on this machine, not the destination"
)]
pub fn dump_all(d: &Databases) -> Result<Vec<DumpFile>> {
    let mut files = Vec::new();
    if !d.any_enabled() {
        return Ok(files);
    }
    let staging = &d.staging_dir;
    std::fs::create_dir_all(staging).ctx("create directory", staging)?;
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700))
        .ctx("restrict permissions of", staging)?;
    if d.postgresql.enable {
        files.extend(in_fresh_dir(staging, "postgresql", |dir| postgresql(&d.postgresql, dir))?);
    }
    if d.mysql.enable {
        files.extend(in_fresh_dir(staging, "mysql", |dir| mysql(&d.mysql, dir))?);
    }
    if !d.sqlite.is_empty() {
        files.extend(in_fresh_dir(staging, "sqlite", |dir| sqlite(d, dir))?);
    }
    crate::fs::fsutil::sync_dir(staging)?;
    Ok(files)
}

/// Runs `f` into `<staging>/.<engine>.new/`, then swaps that directory in as
/// `<staging>/<engine>/`.
#[expect(
    clippy::disallowed_methods,
    reason = "the staging directory is the plan's, on this machine, not the destination"
)]
fn in_fresh_dir(
    staging: &Path,
    engine: &'static str,
    f: impl FnOnce(&Path) -> Result<Vec<DumpFile>>,
) -> Result<Vec<DumpFile>> {
    let new = staging.join(format!(".{engine}.new"));
    let old = staging.join(format!(".{engine}.old"));
    let live = staging.join(engine);
    // Leftovers of a run that died mid-dump.
    crate::fs::fsutil::remove_tree(&new)?;
    crate::fs::fsutil::remove_tree(&old)?;
    std::fs::create_dir(&new).ctx("create directory", &new)?;
    let mut files = match f(&new) {
        Ok(files) => files,
        Err(e) => {
            let _ = crate::fs::fsutil::remove_tree(&new);
            return Err(e);
        }
    };
    if live.exists() {
        std::fs::rename(&live, &old).ctx("move aside", &live)?;
    }
    std::fs::rename(&new, &live).ctx("move into place", &live)?;
    crate::fs::fsutil::remove_tree(&old)?;
    for file in &mut files {
        if let Ok(rel) = file.path.strip_prefix(&new) {
            file.path = live.join(rel);
        }
    }
    Ok(files)
}

fn postgresql(pg: &Postgresql, dir: &Path) -> Result<Vec<DumpFile>> {
    let bin = |name: &str| program(pg.bin_dir.as_deref(), &[name], "databases.postgresql.binDir");
    let mut conn: Vec<String> = vec!["--no-password".into()];
    if let Some(h) = &pg.host {
        conn.extend(["--host".into(), h.clone()]);
    }
    if let Some(p) = pg.port {
        conn.extend(["--port".into(), p.to_string()]);
    }
    let user = RunAs::lookup(&pg.user, "databases.postgresql.user")?;
    let mut files = Vec::new();
    if pg.databases.is_empty() {
        let dumpall = bin("pg_dumpall")?;
        files.push(dump("postgresql", None, &user, &dumpall, &conn, &dir.join("all.sql"))?);
        return Ok(files);
    }
    // Per-database dumps hold no roles; the globals make them restorable on a new server.
    let dumpall = bin("pg_dumpall")?;
    let mut args = conn.clone();
    args.push("--globals-only".into());
    files.push(dump("postgresql", None, &user, &dumpall, &args, &dir.join("globals.sql"))?);
    let pg_dump = bin("pg_dump")?;
    for db in &pg.databases {
        let mut args = conn.clone();
        args.extend(["--format=custom".into(), "--dbname".into(), db.clone()]);
        files.push(dump("postgresql", Some(db), &user, &pg_dump, &args, &dir.join(format!("{db}.dump")))?);
    }
    Ok(files)
}

fn mysql(my: &Mysql, dir: &Path) -> Result<Vec<DumpFile>> {
    // MariaDB renamed the program; either does the same job.
    let bin = program(my.bin_dir.as_deref(), &["mariadb-dump", "mysqldump"], "databases.mysql.binDir")?;
    let mut common: Vec<String> = Vec::new();
    // mysqldump requires the defaults file to be the first option.
    if let Some(f) = &my.defaults_file {
        common.push(format!("--defaults-extra-file={}", f.display()));
    }
    if let Some(s) = &my.socket {
        common.push(format!("--socket={}", s.display()));
    }
    common.extend(
        ["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"].iter().map(|s| s.to_string()),
    );
    let user = RunAs::lookup(&my.user, "databases.mysql.user")?;
    let mut files = Vec::new();
    if my.databases.is_empty() {
        let mut args = common.clone();
        args.push("--all-databases".into());
        files.push(dump("mysql", None, &user, &bin, &args, &dir.join("all.sql"))?);
    }
    for db in &my.databases {
        let mut args = common.clone();
        args.extend(["--databases".into(), db.clone()]);
        files.push(dump("mysql", Some(db), &user, &bin, &args, &dir.join(format!("{db}.sql")))?);
    }
    Ok(files)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the staging directory and the databases are the plan's, on this machine, not the destination"
)]
fn sqlite(d: &Databases, dir: &Path) -> Result<Vec<DumpFile>> {
    let bin = match &d.sqlite3 {
        Some(p) if p.is_file() => p.clone(),
        Some(p) => {
            return Err(Error::Command {
                what: "sqlite3".into(),
                message: format!("{} does not exist (databases.sqlite3)", p.display()),
            })
        }
        None => program(None, &["sqlite3"], "databases.sqlite3")?,
    };
    let mut files = Vec::new();
    for src in &d.sqlite {
        // Checked by the plan: absolute, plain components.
        let out = dir.join(src.strip_prefix("/").unwrap_or(src));
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).ctx("create directory", parent)?;
        }
        files.push(sqlite_copy(&bin, src, &out)?);
    }
    Ok(files)
}

/// Copies one SQLite database into `out` (see the module docs).
fn sqlite_copy(bin: &Path, src: &Path, out: &Path) -> Result<DumpFile> {
    let what = format!("sqlite copy of {}", src.display());
    let fail = |message: String| Error::Command { what: what.clone(), message };
    let meta = std::fs::metadata(src).map_err(|e| fail(format!("cannot read {}: {e}", src.display())))?;
    if !meta.is_file() {
        return Err(fail(format!("{} is not a regular file", src.display())));
    }
    // Reading a WAL database creates its -wal and -shm files when no connection has them
    // open (and a read-only connection leaves them). SQLite gives files it creates as root to
    // the database file's owner, so the service can still open them (tested).
    let sql = format!("VACUUM INTO '{}'", out.to_string_lossy().replace('\'', "''"));
    let start = Instant::now();
    let output = Command::new(bin)
        .args(["-readonly", "-bail", "-batch", "-cmd", ".timeout 60000"])
        .arg(src)
        .arg(&sql)
        .stdin(Stdio::null())
        .current_dir("/")
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", bin.display())))?;
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() {
        return Err(fail(format!(
            "{} exited with {}: {}",
            bin.display(),
            output.status,
            if stderr.is_empty() { "(no output)" } else { &stderr }
        )));
    }
    // The copy must be a sound database before it stands for the original.
    let check = Command::new(bin)
        .args(["-readonly", "-bail", "-batch"])
        .arg(out)
        .arg("PRAGMA quick_check")
        .stdin(Stdio::null())
        .current_dir("/")
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", bin.display())))?;
    let verdict = String::from_utf8_lossy(&check.stdout).trim().to_string();
    if !check.status.success() || verdict != "ok" {
        return Err(fail(format!(
            "the copy {} fails PRAGMA quick_check: {} {}",
            out.display(),
            verdict,
            String::from_utf8_lossy(&check.stderr).trim()
        )));
    }
    let f = std::fs::File::open(out).ctx("open", out)?;
    f.sync_all().ctx("sync", out)?;
    let bytes = f.metadata().ctx("inspect", out)?.len();
    stderr.push_str(String::from_utf8_lossy(&check.stderr).trim());
    Ok(DumpFile {
        engine: "sqlite",
        database: Some(src.display().to_string()),
        path: out.to_path_buf(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        stderr,
    })
}

/// Runs one dump program with its stdout into `out`.
fn dump(
    engine: &'static str,
    db: Option<&String>,
    user: &RunAs,
    bin: &Path,
    args: &[String],
    out: &Path,
) -> Result<DumpFile> {
    let what = match db {
        Some(db) => format!("{engine} dump of {db}"),
        None => format!("{engine} dump ({})", out.file_name().unwrap_or_default().to_string_lossy()),
    };
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(out).ctx("create", out)?;
    let start = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(file).stderr(Stdio::piped()).current_dir("/");
    user.apply(&mut cmd);
    let output = cmd
        .output()
        .map_err(|e| Error::Command { what: what.clone(), message: format!("cannot run {}: {e}", bin.display()) })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Command {
            what,
            message: format!(
                "{} exited with {} (as user {}): {}",
                bin.display(),
                output.status,
                user.name,
                if tail.is_empty() { "(no output)".to_string() } else { tail.join(" | ") }
            ),
        });
    }
    let f = std::fs::File::open(out).ctx("open", out)?;
    f.sync_all().ctx("sync", out)?;
    let bytes = f.metadata().ctx("inspect", out)?.len();
    Ok(DumpFile {
        engine,
        database: db.cloned(),
        path: out.to_path_buf(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        stderr,
    })
}

/// A dump program: in `bin_dir` when given, else on PATH.
fn program(bin_dir: Option<&Path>, names: &[&str], field: &str) -> Result<PathBuf> {
    let found = match bin_dir {
        Some(d) => names.iter().map(|n| d.join(n)).find(|p| p.is_file()),
        None => names.iter().find_map(|n| crate::ops::notify::find_program(n, &[])),
    };
    found.ok_or_else(|| Error::Command {
        what: names[0].to_string(),
        message: match bin_dir {
            Some(d) => format!("{} is not in {} ({field})", names.join(" or "), d.display()),
            None => format!("{} is not installed (not on PATH); install it or set {field}", names.join(" or ")),
        },
    })
}

/// Who a dump program runs as.
#[derive(Debug)]
struct RunAs {
    name: String,
    /// `None`: stay who we are (already that user).
    ids: Option<(u32, u32)>,
    home: PathBuf,
}

impl RunAs {
    fn lookup(name: &str, field: &str) -> Result<RunAs> {
        let entry = passwd_entry(name).ok_or_else(|| {
            Error::config(
                field,
                format!("{name:?} is not a user on this system (not in /etc/passwd or `getent passwd`)"),
            )
        })?;
        let (uid, gid, home) = entry;
        let me = rustix::process::geteuid().as_raw();
        let ids = if uid == me {
            None
        } else if me == 0 {
            Some((uid, gid))
        } else {
            return Err(Error::config(
                field,
                format!("{name:?}: running the dump as another user needs root, and hwc-backup runs as uid {me}"),
            ));
        };
        Ok(RunAs { name: name.to_string(), ids, home })
    }

    fn apply(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            // std drops the supplementary groups when root switches uid.
            cmd.uid(uid).gid(gid);
        }
        cmd.env("HOME", &self.home).env("USER", &self.name).env("LOGNAME", &self.name);
    }
}

/// `(uid, gid, home)` of a user: /etc/passwd first, then NSS through `getent`.
fn passwd_entry(name: &str) -> Option<(u32, u32, PathBuf)> {
    let parse = |line: &str| -> Option<(u32, u32, PathBuf)> {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5]))))?
    };
    if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
        if let Some(e) = text.lines().find_map(parse) {
            return Some(e);
        }
    }
    let out = Command::new("getent").args(["passwd", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found() {
        let (uid, gid, home) = passwd_entry("root").unwrap();
        assert_eq!((uid, gid), (0, 0));
        assert!(home.is_absolute());
        assert!(passwd_entry("no-such-user-hwc").is_none());
    }

    #[test]
    fn a_failed_dump_leaves_the_previous_set() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path();
        let ok = in_fresh_dir(staging, "x", |d| {
            std::fs::write(d.join("a.sql"), "one").unwrap();
            Ok(vec![])
        });
        ok.unwrap();
        let bad = in_fresh_dir(staging, "x", |d| {
            std::fs::write(d.join("a.sql"), "half").unwrap();
            Err(Error::Guard("boom".into()))
        });
        assert!(bad.is_err());
        assert_eq!(std::fs::read_to_string(staging.join("x/a.sql")).unwrap(), "one");
        assert!(!staging.join(".x.new").exists());
    }
}
