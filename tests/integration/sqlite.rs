//! SQLite databases (`databases.sqlite`) copied into the staging directory while another
//! process keeps writing them (WAL mode and rollback journal): every stored copy is a sound database (`PRAGMA
//! integrity_check`) holding one commit's state — two tables that every transaction grows
//! together hold the same number of rows. Debian's real `sqlite3` makes the copies; python's
//! sqlite3 module is the writer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::*;

/// Keeps inserting one row into `a` and one into `b` per transaction, in the journal mode
/// given (`wal` or `delete`, the rollback journal), until killed. Prints `ready` once the
/// database holds `prefill` rows per table.
const WRITER: &str = r#"
import sqlite3, sys, os, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
db.execute("PRAGMA journal_mode=" + sys.argv[3])
db.execute("CREATE TABLE IF NOT EXISTS a (id INTEGER PRIMARY KEY, payload BLOB)")
db.execute("CREATE TABLE IF NOT EXISTS b (id INTEGER PRIMARY KEY, payload BLOB)")
prefill = int(sys.argv[2])
db.execute("BEGIN")
for i in range(prefill):
    db.execute("INSERT INTO a (payload) VALUES (?)", (os.urandom(1024),))
    db.execute("INSERT INTO b (payload) VALUES (?)", (os.urandom(1024),))
db.execute("COMMIT")
print("ready", flush=True)
while True:
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO a (payload) VALUES (?)", (os.urandom(512),))
    db.execute("UPDATE a SET payload = ? WHERE id = (SELECT max(id) FROM a) - 100", (os.urandom(512),))
    db.execute("INSERT INTO b (payload) VALUES (?)", (os.urandom(512),))
    db.execute("COMMIT")
    time.sleep(0.001)
"#;

struct Writer(Child);

impl Writer {
    fn start(db: &Path, prefill: u32, journal: &str) -> Writer {
        require("python3");
        let mut child = Command::new("python3")
            .args(["-c", WRITER])
            .arg(db)
            .arg(prefill.to_string())
            .arg(journal)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the writer did not start");
        Writer(child)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").args(["-readonly", "-cmd", ".timeout 60000"]).arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "sqlite3 {} {sql:?}: {}", db.display(), show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sqlite_plan(env: &Env, dbs: &[&Path]) -> PathBuf {
    let mut p = plan_json(env);
    p["databases"] = serde_json::json!({
        "stagingDir": s(&env.src.join("db-dumps")),
        "sqlite": dbs.iter().map(|d| s(d)).collect::<Vec<_>>(),
        "sqlite3": s(Path::new("/usr/bin/sqlite3")),
    });
    write_plan(env, "plan.json", &p.to_string())
}

#[test]
fn sqlite_written_during_the_backup_is_stored_consistent() {
    written_during_the_backup("wal");
}

#[test]
fn sqlite_with_a_rollback_journal_written_during_the_backup_is_stored_consistent() {
    written_during_the_backup("delete");
}

fn written_during_the_backup(journal: &str) {
    require("sqlite3");
    let env = Env::new();
    // The database lives outside the sources: only its copy is backed up.
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let db = app.join("state.db");
    write(&env.src.join("notes"), "n");
    let mut writer = Writer::start(&db, 4000, journal);
    let plan = sqlite_plan(&env, &[&db]);

    let mut counts = Vec::new();
    for i in 0..3 {
        let at = format!("2025-01-1{}T02:00:00Z", i + 1);
        let out = env.cmd(&["now", "--json", "--now", &at, "--config"]).arg(&plan).output().unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap());
        let copy =
            snap.join(env.src.strip_prefix("/").unwrap()).join("db-dumps/sqlite").join(db.strip_prefix("/").unwrap());
        assert!(copy.is_file(), "no copy at {}", copy.display());
        assert_eq!(sqlite3(&copy, "PRAGMA integrity_check"), "ok");
        let a: u64 = sqlite3(&copy, "SELECT count(*) FROM a").parse().unwrap();
        let b: u64 = sqlite3(&copy, "SELECT count(*) FROM b").parse().unwrap();
        assert_eq!(a, b, "the copy mixes two commits: {a} rows in a, {b} in b");
        assert!(a >= 4000, "the copy lost the prefilled rows: {a}");
        // A copy is one file: no -wal or -shm beside it.
        let names: Vec<String> = std::fs::read_dir(copy.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.db"], "{names:?}");
        let log = std::fs::read_to_string(snap.join(".hwc-backup/run.log")).unwrap();
        assert!(log.contains("sqlite dump") && log.contains("state.db"), "{log}");
        counts.push(a);
    }
    // The writer was really writing during the runs.
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    // The writer was not starved out by the copies: still running, still writing.
    assert!(writer.0.try_wait().unwrap().is_none(), "the writer died");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let live: u64 = sqlite3(&db, "SELECT count(*) FROM a").parse().unwrap();
    assert!(live > counts[2], "{live} {counts:?}");
    drop(writer);
}

#[test]
fn missing_sqlite_database_fails_the_run_naming_it() {
    require("sqlite3");
    let env = Env::new();
    write(&env.src.join("notes"), "n");
    let gone = env.dir.path().join("no-such.db");
    let plan = sqlite_plan(&env, &[&gone]);
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = show(&out);
    assert!(err.contains(&s(&gone)) && err.contains("sqlite") && err.contains("No such file"), "{err}");
    // Nothing published.
    assert!(!env.dest.join(HOST).join("latest").exists());

    // A sqlite3 program that is not there is named too.
    let db = env.dir.path().join("there.db");
    sqlite3_write(&db, "CREATE TABLE t (x)");
    let mut p = plan_json(&env);
    p["databases"] = serde_json::json!({ "stagingDir": s(&env.src.join("db-dumps")), "sqlite": [s(&db)],
                                         "sqlite3": "/nonexistent/bin/sqlite3" });
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(show(&out).contains("/nonexistent/bin/sqlite3 does not exist (databases.sqlite3)"), "{}", show(&out));
    assert!(!env.dest.join(HOST).join("latest").exists());
}

fn sqlite3_write(db: &Path, sql: &str) {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "sqlite3 {} {sql:?}: {}", db.display(), show(&out));
}

#[test]
fn sqlite_paths_in_the_plan_are_checked() {
    let env = Env::new();
    let in_staging = s(&env.src.join("d/x.db"));
    for (bad, why) in [
        ("relative.db", "absolute"),
        ("/var/lib/../x.db", ".."),
        ("/", "plain path"),
        (in_staging.as_str(), "inside databases.stagingDir"),
    ] {
        let mut p = plan_json(&env);
        p["databases"] = serde_json::json!({ "stagingDir": s(&env.src.join("d")), "sqlite": [bad] });
        let plan = write_plan(&env, "plan.json", &p.to_string());
        let out = env.cmd(&["config", "check"]).arg(&plan).output().unwrap();
        assert_eq!(code(&out), 2, "{bad}: {}", show(&out));
        let err = show(&out);
        assert!(err.contains("databases.sqlite[0]") && err.contains(why), "{bad}: {err}");
    }
}

/// A WAL database no process has open, owned by a service's user: reading it as root creates
/// its `-wal`/`-shm` files, which must belong to that user (SQLite hands them over), or the
/// service could not open its own database while they exist. The database itself is not
/// changed (`-readonly`).
#[test]
fn a_closed_wal_database_stays_its_owners() {
    require("sqlite3");
    let env = Env::new();
    write(&env.src.join("notes"), "n");
    let app = env.dir.path().join("svc");
    std::fs::create_dir_all(&app).unwrap();
    let db = app.join("svc.db");
    sqlite3_write(&db, "PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)");
    sh(&format!("chown -R nobody '{}'", app.display()));
    let before = std::fs::read(&db).unwrap();
    let plan = sqlite_plan(&env, &[&db]);
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    use std::os::unix::fs::MetadataExt;
    let nobody = std::fs::metadata(&db).unwrap().uid();
    assert_ne!(nobody, 0);
    assert!(app.join("svc.db-shm").exists(), "the read created no -shm: this test checks nothing");
    for entry in std::fs::read_dir(&app).unwrap() {
        let e = entry.unwrap();
        assert_eq!(e.metadata().unwrap().uid(), nobody, "{} belongs to root", e.path().display());
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database was written to");
    let copy = env
        .dest
        .join(HOST)
        .join("latest")
        .join(env.src.strip_prefix("/").unwrap())
        .join("db-dumps/sqlite")
        .join(db.strip_prefix("/").unwrap());
    assert_eq!(sqlite3(&copy, "SELECT count(*) FROM t"), "2");
}
