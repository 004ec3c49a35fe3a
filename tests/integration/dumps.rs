//! Database dumps against real servers started by the test (Debian's PostgreSQL as user
//! `postgres`, Debian's MariaDB as user `mysql`), each listening only on a unix socket in the
//! test's directory: the dump lands in the snapshot and restores into a fresh database with
//! the same rows; a failing dump fails the run and publishes nothing; `pg_dumpall` mode dumps
//! everything.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// Debian's newest `/usr/lib/postgresql/<version>/bin`.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run tests/run (it installs postgresql)")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server binaries under /usr/lib/postgresql").1
}

/// A PostgreSQL cluster in `<dir>/pg`, run by `postgres`, stopped on drop.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
}

impl Postgres {
    fn start(dir: &Path) -> Postgres {
        require("runuser");
        let bin = pg_bin();
        let root = dir.join("pg");
        let (data, socket) = (root.join("data"), root.join("sock"));
        std::fs::create_dir_all(&socket).unwrap();
        sh(&format!("chmod 755 '{}' && chown -R postgres:postgres '{}'", dir.display(), root.display()));
        let pg = Postgres { bin, data, socket };
        pg.as_postgres(&["initdb", "-D", &s(&pg.data), "--auth=peer", "--username=postgres", "--no-sync"]);
        let opts = format!("-k {} -c listen_addresses= -c fsync=off", s(&pg.socket));
        pg.as_postgres(&["pg_ctl", "-D", &s(&pg.data), "-o", &opts, "-w", "-l", &s(&root.join("log")), "start"]);
        pg
    }

    /// Runs a PostgreSQL program as `postgres`; returns stdout.
    fn as_postgres(&self, args: &[&str]) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(args[0]))
            .args(&args[1..])
            .current_dir("/")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        self.as_postgres(&["psql", "-h", &s(&self.socket), "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &s(&self.data), "-m", "immediate", "stop"])
            .current_dir("/")
            .output();
    }
}

fn dump_plan(env: &Env, pg: &Postgres, databases: &[&str]) -> PathBuf {
    let mut p = plan_json(env);
    p["databases"] = serde_json::json!({
        "stagingDir": s(&env.src.join("db-dumps")),
        "postgresql": { "enable": true, "user": "postgres", "databases": databases,
                        "host": s(&pg.socket), "port": null, "binDir": s(&pg.bin) },
    });
    write_plan(env, "plan.json", &p.to_string())
}

const ROWS: &str = "1|alice|2024-01-02 03:04:05+00\n2|bob|2024-05-06 07:08:09+00\n3|zoë 🙂|\n";

#[test]
fn postgresql_dump_lands_in_the_snapshot_and_restores() {
    let env = Env::new();
    let pg = Postgres::start(env.dir.path());
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "SET TIME ZONE 'UTC'; CREATE TABLE people (id int PRIMARY KEY, name text, seen timestamptz);
         INSERT INTO people VALUES (1, 'alice', '2024-01-02 03:04:05+00'), (2, 'bob', '2024-05-06 07:08:09+00'),
                                   (3, 'zoë 🙂', NULL)",
    );
    let select = "SET TIME ZONE 'UTC'; SELECT id, name, seen FROM people ORDER BY id";
    assert_eq!(pg.psql("app", select).replace("SET\n", ""), ROWS);
    write(&env.src.join("notes"), "n");

    let plan = dump_plan(&env, &pg, &["app"]);
    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snap = PathBuf::from(r["snapshotPath"].as_str().unwrap());
    let dumped = snap.join(env.src.strip_prefix("/").unwrap()).join("db-dumps/postgresql");
    let dump = dumped.join("app.dump");
    let globals = std::fs::read_to_string(dumped.join("globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE postgres"), "{globals}");
    // The custom format starts with its magic.
    assert_eq!(&std::fs::read(&dump).unwrap()[..5], b"PGDMP");
    let log = std::fs::read_to_string(snap.join(".hwc-backup/run.log")).unwrap();
    assert!(log.contains("postgresql dump") && log.contains("app.dump"), "{log}");

    // Restore into a fresh database: pg_restore reads the snapshot's file on stdin (the
    // staging directory is private to root, as the snapshot keeps it).
    pg.psql("postgres", "CREATE DATABASE restored");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "runuser -u postgres -- '{}' -h '{}' -d restored --no-owner < '{}'",
            pg.bin.join("pg_restore").display(),
            pg.socket.display(),
            dump.display()
        ))
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", show(&out));
    assert_eq!(pg.psql("restored", select).replace("SET\n", ""), ROWS);

    // The staging directory holds exactly the last set (a database dropped from the list
    // does not linger) and nothing half-written.
    let staging = env.src.join("db-dumps");
    assert_eq!(tree(&staging), ["postgresql", "postgresql/app.dump", "postgresql/globals.sql"]);
}

#[test]
fn failing_dump_fails_the_run_and_dumpall_mode() {
    let env = Env::new();
    let pg = Postgres::start(env.dir.path());
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", "CREATE TABLE items (sku text); INSERT INTO items VALUES ('tea-42')");
    write(&env.src.join("notes"), "n");

    let plan = dump_plan(&env, &pg, &["shop", "nosuchdb"]);
    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["state"], "failed");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("postgresql dump of nosuchdb") && err.contains("does not exist"), "{err}");
    assert!(env.snapshot_ids().is_empty(), "{:?}", env.snapshot_ids());
    assert!(!env.src.join("db-dumps/postgresql").exists(), "a failed set is not swapped in");

    // Everything with pg_dumpall.
    let plan = dump_plan(&env, &pg, &[]);
    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = PathBuf::from(r["snapshotPath"].as_str().unwrap())
        .join(env.src.strip_prefix("/").unwrap())
        .join("db-dumps/postgresql/all.sql");
    let sql = std::fs::read_to_string(all).unwrap();
    assert!(sql.contains("CREATE DATABASE shop") && sql.contains("tea-42"), "{}", &sql[..sql.len().min(2000)]);
}

#[test]
fn dump_user_that_does_not_exist_is_a_clear_error() {
    let env = Env::new();
    write(&env.src.join("notes"), "n");
    let mut p = plan_json(&env);
    p["databases"] = serde_json::json!({
        "stagingDir": s(&env.src.join("db")),
        "postgresql": { "enable": true, "user": "no-such-user-hwc" },
    });
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("databases.postgresql.user") && err.contains("no-such-user-hwc"), "{err}");
    assert!(env.snapshot_ids().is_empty());
}

/// A MariaDB server in `<dir>/my`, run as `mysql`, on a unix socket only; stopped on drop.
struct Mariadb {
    child: std::process::Child,
    socket: PathBuf,
}

impl Mariadb {
    fn start(dir: &Path) -> Mariadb {
        require("mariadb-install-db");
        let root = dir.join("my");
        let (data, socket) = (root.join("data"), root.join("mysqld.sock"));
        std::fs::create_dir_all(&data).unwrap();
        sh(&format!("chmod 755 '{}' && chown -R mysql:mysql '{}'", dir.display(), root.display()));
        sh(&format!(
            "mariadb-install-db --no-defaults --user=mysql --datadir='{}' --auth-root-authentication-method=socket \
             --skip-test-db > '{}/install.log' 2>&1",
            data.display(),
            root.display()
        ));
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", root.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", root.join("error.log").display()))
            .arg("--skip-networking")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let db = Mariadb { child, socket };
        let start = std::time::Instant::now();
        while db.try_sql("SELECT 1").is_none() {
            assert!(start.elapsed() < std::time::Duration::from_secs(60), "mariadbd did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        db
    }

    fn client(&self, sql: &str) -> std::process::Output {
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--default-character-set=utf8mb4", "-u", "root", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .unwrap()
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let out = self.client(sql);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sql(&self, sql: &str) -> String {
        let out = self.client(sql);
        assert!(out.status.success(), "{sql}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mysql_dump_lands_in_the_snapshot_and_restores() {
    let env = Env::new();
    let db = Mariadb::start(env.dir.path());
    db.sql(
        "CREATE DATABASE app CHARACTER SET utf8mb4; CREATE TABLE app.people (id int PRIMARY KEY, name text);
         INSERT INTO app.people VALUES (1, 'alice'), (2, 'zoë 🙂')",
    );
    let select = "SELECT id, name FROM app.people ORDER BY id";
    let rows = db.sql(select);
    assert_eq!(rows, "1\talice\n2\tzoë 🙂\n");
    write(&env.src.join("notes"), "n");
    let plan_with = |dbs: &[&str]| {
        let mut p = plan_json(&env);
        p["databases"] = serde_json::json!({
            "stagingDir": s(&env.src.join("db-dumps")),
            "mysql": { "enable": true, "user": "root", "databases": dbs, "socket": s(&db.socket),
                       "defaultsFile": null, "binDir": "/usr/bin" },
        });
        write_plan(&env, "plan.json", &p.to_string())
    };
    let out = env.cmd(&["now", "--json", "--config"]).arg(plan_with(&["app"])).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dump = PathBuf::from(r["snapshotPath"].as_str().unwrap())
        .join(env.src.strip_prefix("/").unwrap())
        .join("db-dumps/mysql/app.sql");
    // Restore into a fresh database of the same name.
    db.sql("DROP DATABASE app");
    sh(&format!(
        "mariadb --no-defaults --default-character-set=utf8mb4 --socket='{}' -u root < '{}'",
        db.socket.display(),
        dump.display()
    ));
    assert_eq!(db.sql(select), rows);

    // A database that does not exist fails the run; nothing new is published.
    let before = env.snapshot_ids();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.cmd(&["now", "--json", "--config"]).arg(plan_with(&["app", "nosuchdb"])).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("mysql dump of nosuchdb") && err.contains("nosuchdb"), "{err}");
    assert_eq!(env.snapshot_ids(), before);
}
