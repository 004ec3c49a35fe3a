//! Offsite copies with the real restic (Debian's package), into a local-directory repository
//! and into an `rclone:` repository on a local rclone remote: two `now` runs of a tree with
//! owners, modes, symlinks, hard links, xattrs and a sparse file give two restic snapshots
//! with the local snapshots' times, the second uploading only the change; `restic restore`
//! and `hwc-backup restore --offsite` both give the source back (rsync -aHAXn prints nothing).
//! Retention over 60 simulated days equals restic's own `forget --dry-run` selection; a bare
//! machine restores with only the repository and the password; a wrong password, a missing
//! password file, an unreachable and a locked repository each fail clearly, exit 1, keep the
//! local snapshot and notify once; a symlink planted at the restore target is replaced, its
//! victim untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::notify::Listener;
use crate::util::*;

const T1: &str = "2025-01-15T02:00:00+01:00";
const T2: &str = "2025-01-16T02:00:00+01:00";

/// A repository under test: its string and the rclone config (for `rclone:`).
struct Repo {
    repository: String,
    rclone_config: Option<PathBuf>,
    password_file: PathBuf,
}

impl Repo {
    fn local(env: &Env, name: &str) -> Repo {
        Repo { repository: s(&env.dir.path().join(name)), rclone_config: None, password_file: password(env) }
    }

    fn rclone(env: &Env, name: &str) -> Repo {
        require("rclone");
        let conf = env.dir.path().join("rclone.conf");
        std::fs::write(&conf, "[localremote]\ntype = local\n").unwrap();
        Repo {
            repository: format!("rclone:localremote:{}", s(&env.dir.path().join(name))),
            rclone_config: Some(conf),
            password_file: password(env),
        }
    }

    /// The plan's `offsite.<name>` entry.
    fn entry(&self) -> serde_json::Value {
        // The rclone program named as the module names it (`-o rclone.program=`), and an
        // upload limit high enough not to slow the tests (`--limit-upload`).
        let rclone = self.rclone_config.as_ref().map(|_| sh("command -v rclone").trim().to_string());
        serde_json::json!({
            "repository": self.repository, "passwordFile": s(&self.password_file),
            "environmentFile": null, "rcloneConfigFile": self.rclone_config.as_ref().map(|p| s(p)),
            "restic": null, "rclone": rclone, "bandwidthLimit": 1_000_000,
            "keep": { "last": 0, "hourly": 0, "daily": 7, "weekly": 5, "monthly": 12, "yearly": 0, "within": null },
            "schedule": null, "check": { "schedule": null, "readDataSubset": "5%" },
            "maxAge": "7d",
        })
    }

    /// `restic ARGS…` on this repository.
    fn restic(&self, args: &[&str]) -> Output {
        require("restic");
        let mut c = Command::new("restic");
        c.arg("-r").arg(&self.repository).arg("--password-file").arg(&self.password_file).args(args);
        if let Some(conf) = &self.rclone_config {
            c.env("RCLONE_CONFIG", conf);
        }
        c.env("TZ", "UTC").output().unwrap()
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.restic(&["snapshots", "--json"]);
        assert!(out.status.success(), "{}", show(&out));
        let mut list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.sort_by_key(|s| s["time"].as_str().unwrap().to_string());
        list
    }
}

fn password(env: &Env) -> PathBuf {
    let p = env.dir.path().join("restic-password");
    if !p.exists() {
        std::fs::write(&p, "correct horse battery staple\n").unwrap();
    }
    p
}

fn plan_with(env: &Env, offsites: serde_json::Value) -> PathBuf {
    let mut p = plan_json(env);
    p["offsite"] = offsites;
    write_plan(env, "plan.json", &p.to_string())
}

fn now(env: &Env, plan: &Path, when: &str) -> Output {
    env.cmd(&["now", "--config"]).arg(plan).args(["--now", when]).output().unwrap()
}

/// A tree with owners, modes, a symlink, hard links, an xattr, a sparse file and a 3 MiB
/// file of random bytes.
fn fill(src: &Path) {
    write(&src.join("home/alice/notes.txt"), "notes\n");
    write(&src.join("home/alice/private.txt"), "private\n");
    write(&src.join("home/bob/linked-a"), "shared by two names\n");
    write(&src.join(bad_name()), "a name that is not UTF-8\n");
    std::fs::hard_link(src.join("home/bob/linked-a"), src.join("home/bob/linked-b")).unwrap();
    std::os::unix::fs::symlink("../alice/notes.txt", src.join("home/bob/to-notes")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("home/bob/dangling")).unwrap();
    let big = sh("head -c 3145728 /dev/urandom | base64 -w0 | head -c 3145728");
    write(&src.join("srv/big.bin"), big);
    sh(&format!(
        "set -e; cd '{}'
         chown -R 1234:5678 home/alice; chown -h 4321:8765 home/bob/to-notes
         chmod 0600 home/alice/private.txt; chmod 0751 home/alice; chmod 2775 home/bob
         setfattr -n user.origin -v laptop home/alice/notes.txt
         truncate -s 8M srv/sparse.img; printf 'tail' | dd of=srv/sparse.img bs=1 seek=4194304 conv=notrunc status=none
         touch -h -d '2020-02-02 02:02:02' home/bob/to-notes; touch -d '2021-03-03 03:03:03' home/alice/notes.txt",
        src.display()
    ));
}

/// `home/bob/bad\xffname [x]`: not UTF-8, and a pattern character for restic's --include.
fn bad_name() -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b"home/bob/bad\xffname [x]"))
}

fn rsync_diff(a: &Path, b: &Path) -> String {
    sh(&format!("rsync -aHAXn --itemize-changes --delete '{}/' '{}/'", a.display(), b.display()))
}

fn record(env: &Env, name: &str) -> serde_json::Value {
    let text = std::fs::read(env.state.join(HOST).join(format!("offsite-{name}.json"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn two_runs_and_both_restores(env: &Env, repo: &Repo) {
    fill(&env.src);
    let plan = plan_with(env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("offsite nas: copied daily/2025-01-15_02-00-00"),
        "{}",
        show(&out)
    );
    let first = record(env, "nas");
    // One small change: one file appended to; the 3 MiB file is a hard link now, unchanged.
    sh(&format!("echo more >> '{}'", env.src.join("home/alice/notes.txt").display()));
    sh(&format!("touch -d '2021-04-04 04:04:04' '{}'", env.src.join("home/alice/notes.txt").display()));
    let out = now(env, &plan, T2);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let second = record(env, "nas");

    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let times: Vec<&str> = snaps.iter().map(|s| s["time"].as_str().unwrap()).collect();
    assert_eq!(times, ["2025-01-15T01:00:00Z", "2025-01-16T01:00:00Z"], "the local snapshots' times");
    assert_eq!(snaps[1]["hostname"], HOST);
    let tags: Vec<&str> = snaps[1]["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tags, ["hwc-backup", "snapshot:2025-01-16_02-00-00"]);

    assert!(first["lastSuccessDataAdded"].as_u64().unwrap() > 3_000_000, "{first}");
    let files = second["lastSuccessFiles"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(files[..2], [0, 1], "one changed file, nothing new: {second}");
    assert!(files[2] >= 5, "the rest unmodified (neither read nor uploaded): {second}");
    let added = second["lastSuccessDataAdded"].as_u64().unwrap();
    assert!(added < 64 * 1024, "the second copy uploaded only the change, not {added} bytes: {second}");

    // Plain restic puts everything back at its absolute path.
    let plain = env.dir.path().join("plain-restore");
    let out = repo.restic(&["restore", "latest", "--target", &s(&plain)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(rsync_diff(&env.src, &plain.join(env.src.strip_prefix("/").unwrap())), "");
    assert!(!plain.join(".hwc-backup").exists() && !plain.join("daily").exists(), "no local layout in the repository");

    // hwc-backup restore --offsite, into a fresh directory and then the same again.
    let ours = env.dir.path().join("ours");
    let out = env
        .cmd(&["restore", "--config"])
        .arg(&plan)
        .args(["--offsite", "nas", "latest"])
        .arg(&env.src)
        .arg(&ours)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(rsync_diff(&env.src, &ours), "");
    let leftovers = sh(&format!("ls -A '{}' | grep hwc-offsite-restore || true", env.dir.path().display()));
    assert_eq!(leftovers, "", "the staging directory is removed");
    let listed = env.cmd(&["restore", "--config"]).arg(&plan).args(["--offsite", "nas", "--list"]).output().unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("2025-01-15_02-00-00") && text.contains("2025-01-16_02-00-00"), "{}", show(&listed));
    // An older one, by date fragment: the file as it was before the change.
    let old = env.dir.path().join("old-notes");
    let out = env
        .cmd(&["restore", "--config"])
        .arg(&plan)
        .args(["--offsite", "nas", "2025-01-15"])
        .arg(env.src.join("home/alice/notes.txt"))
        .arg(&old)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "notes\n");
    let odd = env.dir.path().join("odd");
    let out = env
        .cmd(&["restore", "--config"])
        .arg(&plan)
        .args(["--offsite", "nas", "latest"])
        .arg(env.src.join(bad_name()))
        .arg(&odd)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&odd).unwrap(), "a name that is not UTF-8\n");
}

#[test]
fn two_runs_into_a_local_repository_restore_equal_to_the_source() {
    let env = Env::new();
    let repo = Repo::local(&env, "restic-repo");
    two_runs_and_both_restores(&env, &repo);
}

#[test]
fn two_runs_into_an_rclone_repository_restore_equal_to_the_source() {
    let env = Env::new();
    let repo = Repo::rclone(&env, "rclone-repo");
    two_runs_and_both_restores(&env, &repo);
}

#[test]
fn retention_over_sixty_days_is_restics_own_selection() {
    let env = Env::on_tmpfs();
    write(&env.src.join("file"), "x");
    let kept = Repo::local(&env, "kept");
    let mut rules = kept.entry();
    rules["keep"] = serde_json::json!({ "last": 0, "hourly": 0, "daily": 7, "weekly": 4, "monthly": 0, "yearly": 0 });
    let plan = plan_with(&env, serde_json::json!({ "kept": rules }));
    // The same 60 times, hosts and tags written straight into a second repository that
    // forgets nothing: restic's own selection is computed over it.
    let all = Repo::local(&env, "all");
    assert!(all.restic(&["init"]).status.success());
    let start: jiff::Timestamp = "2025-03-01T01:00:00Z".parse().unwrap();
    for day in 0..60 {
        let t = start + jiff::SignedDuration::from_hours(24 * day);
        write(&env.src.join("file"), format!("day {day}"));
        let out = now(&env, &plan, &t.to_string());
        assert_eq!(code(&out), 0, "day {day}: {}", show(&out));
        let time = t.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let out = all.restic(&["backup", "--host", HOST, "--tag", "hwc-backup", "--time", &time, &s(&env.src)]);
        assert!(out.status.success(), "{}", show(&out));
    }
    let out = all.restic(&[
        "forget",
        "--dry-run",
        "--json",
        "--group-by",
        "host",
        "--tag",
        "hwc-backup",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let groups: Vec<serde_json::Value> =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with('[')).unwrap())
            .unwrap();
    let mut want: Vec<String> =
        groups[0]["keep"].as_array().unwrap().iter().map(|s| s["time"].as_str().unwrap().to_string()).collect();
    want.sort();
    let got: Vec<String> = kept.snapshots().iter().map(|s| s["time"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, want);
    assert!((8..=11).contains(&got.len()), "{got:?}");
    // The local retention is the plan's own (daily 7, weekly 4, monthly 6): different.
    assert_ne!(env.snapshot_ids().len(), got.len());
}

#[test]
fn a_bare_machine_restores_with_only_the_repository_and_the_password() {
    let env = Env::new();
    fill(&env.src);
    let repo = Repo::local(&env, "repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    // The drive and the machine are gone: no plan, no destination, no state.
    std::fs::remove_dir_all(&env.dest).unwrap();
    std::fs::remove_dir_all(&env.state).unwrap();
    std::fs::remove_file(&plan).unwrap();
    let fresh = tempfile::Builder::new().prefix("hwc-bare-").tempdir_in("/var/tmp").unwrap();
    let pw = fresh.path().join("pw");
    std::fs::copy(&repo.password_file, &pw).unwrap();
    let newroot = fresh.path().join("newroot");
    let out = Command::new(bin())
        .current_dir(fresh.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .args(["restore", "--offsite", "--repository", &repo.repository, "--password-file", "pw", "latest", "/"])
        .arg(&newroot)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(rsync_diff(&env.src, &newroot.join(env.src.strip_prefix("/").unwrap())), "");
}

/// One failing case: the run exits 1, names the repository and restic's error, keeps the
/// local snapshot, and sends one notification.
fn fails_clearly(env: &Env, l: &Listener, entry: serde_json::Value, when: &str, want: &[&str]) {
    let mut p = plan_json(env);
    p["offsite"] = serde_json::json!({ "nas": entry });
    p["notifications"] =
        serde_json::json!({ "onSuccess": false, "onFailure": true, "webhook": { "url": format!("{}/hook", l.url) } });
    let plan = write_plan(env, "plan.json", &p.to_string());
    let before = l.requests().len();
    let out = now(env, &plan, when);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for w in want {
        assert!(text.contains(w), "{w:?} not in: {text}");
    }
    let name = format!("daily/{}", when[..19].replace('T', "_").replace(':', "-"));
    assert!(env.snapshot_ids().contains(&name), "the local snapshot {name} stays: {:?}", env.snapshot_ids());
    std::thread::sleep(Duration::from_millis(300));
    let sent = l.requests().len() - before;
    assert_eq!(sent, 1, "notified once");
    let last = l.requests().pop().unwrap();
    assert!(last.body.contains("offsite"), "{}", last.body);
    assert_eq!(record(env, "nas")["lastOk"], false);
}

#[test]
fn failures_are_clear_keep_the_snapshot_and_notify_once() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let l = Listener::start();
    let repo = Repo::local(&env, "repo");
    let out = repo.restic(&["init"]);
    assert!(out.status.success(), "{}", show(&out));

    let wrong = env.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not it\n").unwrap();
    let mut e = repo.entry();
    e["passwordFile"] = s(&wrong).into();
    fails_clearly(&env, &l, e, "2025-01-10T02:00:00+01:00", &[&repo.repository, "wrong password"]);

    let mut e = repo.entry();
    e["passwordFile"] = s(&env.dir.path().join("missing")).into();
    fails_clearly(&env, &l, e, "2025-01-11T02:00:00+01:00", &[&repo.repository, "missing", "cannot be read"]);

    let empty = env.dir.path().join("empty-password");
    std::fs::write(&empty, "").unwrap();
    let mut e = Repo::local(&env, "never-created").entry();
    e["passwordFile"] = s(&empty).into();
    fails_clearly(&env, &l, e, "2025-01-12T02:00:00+01:00", &["is empty"]);
    assert!(!env.dir.path().join("never-created").exists(), "no repository with an empty password");

    let unreachable = Repo::rclone(&env, "x");
    let mut e = unreachable.entry();
    e["repository"] = "rclone:nosuchremote:repo".into();
    fails_clearly(&env, &l, e, "2025-01-13T02:00:00+01:00", &["rclone:nosuchremote:repo", "Fatal"]);

    let mut e = repo.entry();
    e["repository"] = "/nonexistent-mount/restic".into();
    fails_clearly(&env, &l, e, "2025-01-14T02:00:00+01:00", &["/nonexistent-mount/restic", "mounted"]);
    assert!(!Path::new("/nonexistent-mount").exists());

    // Locked: `restic key passwd` holds an exclusive lock while it waits for the new password
    // on a FIFO that nobody writes.
    let fifo = env.dir.path().join("fifo");
    sh(&format!("mkfifo '{}'", fifo.display()));
    let mut holder = Command::new("restic")
        .arg("-r")
        .arg(&repo.repository)
        .arg("--password-file")
        .arg(&repo.password_file)
        .args(["key", "passwd", "--new-password-file"])
        .arg(&fifo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let locks = Path::new(&repo.repository).join("locks");
    let start = Instant::now();
    while std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "restic never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    fails_clearly(&env, &l, repo.entry(), "2025-01-15T02:00:00+01:00", &[&repo.repository, "locked"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = repo.restic(&["unlock", "--remove-all"]);
    assert!(out.status.success(), "{}", show(&out));

    // And with everything right again, the next run copies.
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(&env, &plan, "2025-01-16T02:00:00+01:00");
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(repo.snapshots().len(), 1);
}

#[test]
fn a_symlink_planted_at_the_restore_target_is_replaced_and_its_victim_untouched() {
    let env = Env::new();
    // Pattern characters in the name: restic gets it escaped.
    write(&env.src.join("se[c]ret*.txt"), "from the backup\n");
    write(&env.src.join("secret.txt"), "a file the pattern would match\n");
    let repo = Repo::local(&env, "repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let victim = env.dir.path().join("victim");
    std::fs::write(&victim, "victim\n").unwrap();
    let dest = env.dir.path().join("restore-here");
    std::os::unix::fs::symlink(&victim, &dest).unwrap();
    let restore = |extra: &[&str]| {
        env.cmd(&["restore", "--config"])
            .arg(&plan)
            .args(["--offsite", "nas"])
            .args(extra)
            .arg("latest")
            .arg(env.src.join("se[c]ret*.txt"))
            .arg(&dest)
            .output()
            .unwrap()
    };
    // A dry run writes nothing and says what would happen.
    let fresh = env.dir.path().join("dry-run-target");
    let out = env
        .cmd(&["restore", "--config"])
        .arg(&plan)
        .args(["--offsite", "nas", "--dry-run", "latest"])
        .arg(env.src.join("se[c]ret*.txt"))
        .arg(&fresh)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("new "), "{}", show(&out));
    assert!(!fresh.exists(), "a dry run writes nothing");
    let out = restore(&["--dry-run"]);
    assert_eq!(code(&out), 1, "the dry run shows the refusal: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replaced"), "{}", show(&out));
    let out = restore(&[]);
    assert_eq!(code(&out), 1, "refused without --force: {}", show(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    let out = restore(&["--force"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n", "never written through the link");
    assert!(!dest.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "from the backup\n");
}

#[test]
fn verify_rotates_through_the_data_finds_damage_and_health_and_metrics_follow() {
    let env = Env::new();
    fill(&env.src);
    let repo = Repo::local(&env, "repo");
    let mut p = plan_json(&env);
    p["offsite"] = serde_json::json!({ "nas": repo.entry() });
    p["metrics"] = serde_json::json!({ "textfileDir": s(&env.dir.path().join("metrics")) });
    p["health"] = serde_json::json!({ "maxAge": "10000d", "minBackups": 1 });
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let verify = |extra: &[&str]| {
        env.cmd(&["verify", "--config"]).arg(&plan).args(["--offsite", "nas", "--json"]).args(extra).output().unwrap()
    };
    let mut parts = Vec::new();
    for _ in 0..2 {
        let out = verify(&[]);
        assert_eq!(code(&out), 0, "{}", show(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(r["sampled"].as_u64().unwrap() >= 5, "a sample compared with the manifest: {r}");
        assert_eq!(r["localSnapshot"], "daily/2025-01-15_02-00-00");
        parts.push(r["readDataSubset"].as_str().unwrap().to_string());
    }
    assert_eq!(parts, ["1/20", "2/20"], "a different part of the data each time");
    let health = env.cmd(&["health", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&health), 0, "{}", show(&health));
    assert!(String::from_utf8_lossy(&health.stdout).contains("ok   offsite:nas"), "{}", show(&health));
    // status names the offsite's last good copy and its clean check.
    let st = env.cmd(&["status", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&st), 0, "{}", show(&st));
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.lines().any(|l| l.starts_with(&format!("offsite nas ({}): ok at ", repo.repository))
            && l.contains("daily/2025-01-15_02-00-00")
            && l.contains("last check clean")),
        "{text}"
    );
    let st = env.cmd(&["status", "--json", "--config"]).arg(&plan).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["offsite"]["nas"]["lastOk"], true, "{st}");
    let metrics =
        std::fs::read_to_string(env.dir.path().join("metrics").join(format!("hwc_backup_{HOST}.prom"))).unwrap();
    for want in ["hwc_backup_offsite_last_success_timestamp_seconds{", "hwc_backup_offsite_check_ok{", "name=\"nas\""] {
        assert!(metrics.contains(want), "{want} in {metrics}");
    }
    assert!(
        metrics.lines().any(|l| l.starts_with("hwc_backup_offsite_last_attempt_ok{") && l.ends_with(" 1")),
        "{metrics}"
    );

    // Damage one data pack: a check reading all the data finds it.
    let pack = sh(&format!("find '{}/data' -type f -size +100k | head -1", repo.repository));
    let pack = pack.trim();
    assert!(!pack.is_empty());
    sh(&format!("printf 'XXXXXXXX' | dd of='{pack}' bs=1 seek=5000 conv=notrunc status=none"));
    let out = verify(&["--read-data-subset", "100%"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["error"].as_str().unwrap().contains(&repo.repository), "{r}");
    let health = env.cmd(&["health", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&health), 1, "{}", show(&health));
    assert!(String::from_utf8_lossy(&health.stdout).contains("FAIL offsite:nas: the last check"), "{}", show(&health));
    let st = env.cmd(&["status", "--config"]).arg(&plan).output().unwrap();
    assert!(String::from_utf8_lossy(&st.stdout).contains("last check FAILED"), "{}", show(&st));
}

#[test]
fn a_scheduled_offsite_waits_for_its_own_command_and_the_command_works_without_a_plan() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let repo = Repo::local(&env, "repo");
    let mut e = repo.entry();
    e["schedule"] = "weekly".into();
    let plan = plan_with(&env, serde_json::json!({ "nas": e }));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!Path::new(&repo.repository).exists(), "a scheduled offsite is not copied by now");
    let out = env.cmd(&["offsite", "--config"]).arg(&plan).args(["nas", "--json"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r[0]["initialized"].as_bool(), r[0]["snapshot"].as_str()),
        (Some(true), Some("daily/2025-01-15_02-00-00"))
    );
    // Twice: nothing copied again.
    let out = env.cmd(&["offsite", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already in"), "{}", show(&out));
    assert_eq!(repo.snapshots().len(), 1);
    let mut bad = e.clone();
    bad["passwordFile"] = "relative/pw".into();
    let bad_plan = write_plan(
        &env,
        "bad.json",
        &{
            let mut p = plan_json(&env);
            p["offsite"] = serde_json::json!({ "nas": bad });
            p
        }
        .to_string(),
    );
    let out = env.cmd(&["config", "check"]).arg(&bad_plan).output().unwrap();
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offsite.nas.passwordFile"), "{}", show(&out));
    let out = env.cmd(&["offsite", "--config"]).arg(&plan).arg("nope").output().unwrap();
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offsite.nope"), "{}", show(&out));
    // --local-only skips even the unscheduled ones.
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = env.cmd(&["now", "--local-only", "--config"]).arg(&plan).args(["--now", T2]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(repo.snapshots().len(), 1);

    // Without a plan: --repository … --dest … --host …, with its own keep rules.
    let other = Repo::local(&env, "other");
    let out = env
        .run(
            "offsite",
            &["--repository", &other.repository, "--password-file", &s(&other.password_file), "--keep-daily", "1"],
        )
        .output_ok();
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied daily/2025-01-16_02-00-00"), "{}", show(&out));
    let snaps = other.snapshots();
    assert_eq!((snaps.len(), snaps[0]["hostname"].as_str()), (1, Some(HOST)));
    assert!(env.state.join(HOST).join("offsite-default.json").exists());
}

trait OutputOk {
    fn output_ok(self) -> Output;
}

impl OutputOk for Output {
    fn output_ok(self) -> Output {
        assert_eq!(code(&self), 0, "{}", show(&self));
        self
    }
}

/// A copy takes its parent from the record of the last good copy (no listing of the
/// repository); when restic no longer has that snapshot, it chooses one from the listing and
/// still reads nothing unchanged.
#[test]
fn the_parent_comes_from_the_record_and_a_forgotten_one_is_replaced_from_the_list() {
    let env = Env::new();
    fill(&env.src);
    let repo = Repo::local(&env, "repo");
    let mut e = repo.entry();
    e["schedule"] = "weekly".into(); // copied by `offsite` only, so each copy's report is read
    let plan = plan_with(&env, serde_json::json!({ "nas": e }));
    let copy = |when: &str| -> serde_json::Value {
        let out = now(&env, &plan, when);
        assert_eq!(code(&out), 0, "{}", show(&out));
        let out = env.cmd(&["offsite", "--config"]).arg(&plan).args(["nas", "--json"]).output().unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        r[0].clone()
    };
    let unmodified = |r: &serde_json::Value| r["summary"]["filesUnmodified"].as_u64().unwrap();
    let first = copy(T1);
    assert_eq!(first["parent"], serde_json::Value::Null, "{first}");
    let recorded = record(&env, "nas")["lastSuccessResticSnapshot"].as_str().unwrap().to_string();

    let second = copy(T2);
    assert_eq!(second["parent"].as_str(), Some(recorded.as_str()), "the recorded parent: {second}");
    assert!(unmodified(&second) >= 5, "nothing re-read: {second}");
    assert_eq!(second["notes"], serde_json::json!([]), "{second}");

    // The second copy's restic snapshot is forgotten behind our back: the third copy's recorded
    // parent is gone, and the copy falls back to the listing (the first snapshot).
    let gone = second["resticSnapshot"].as_str().unwrap();
    let out = repo.restic(&["forget", gone]);
    assert!(out.status.success(), "{}", show(&out));
    let third = copy("2025-01-17T02:00:00+01:00");
    let first_full = repo.snapshots()[0]["id"].as_str().unwrap().to_string();
    assert_eq!(third["parent"].as_str(), Some(first_full.as_str()), "{third}");
    assert!(third["notes"].to_string().contains("is not in the repository"), "{third}");
    assert!(unmodified(&third) >= 5, "nothing re-read: {third}");
    let names: Vec<String> = repo.snapshots().iter().map(|s| s["tags"][1].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["snapshot:2025-01-15_02-00-00", "snapshot:2025-01-17_02-00-00"], "one copy each");
}

#[test]
fn repair_takes_a_good_copy_from_the_offsite_when_the_source_changed() {
    // Two files damaged in the local snapshot (one flipped bit, size and mtime kept) whose
    // sources changed since: the one the offsite holds as backed up is repaired from there;
    // the other was damaged before the offsite copy was made, so restic holds the damaged
    // content, which repair must refuse (it hashes what restic gives) and mark the file lost.
    let env = Env::new();
    let repo = Repo::local(&env, "restic-repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let thesis = "chapter one, where everything begins\n".repeat(3000);
    write(&env.src.join("home/alice/thesis.txt"), &thesis);
    write(&env.src.join("home/alice/diary.txt"), "day one\n".repeat(500));
    let out = env.cmd(&["now", "--local-only", "--config"]).arg(&plan).args(["--now", T1]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    let (thesis_copy, diary_copy) = (snap.join("home/alice/thesis.txt"), snap.join("home/alice/diary.txt"));
    crate::integrity::flip(&diary_copy, 100);
    let out = env.cmd(&["offsite", "--config"]).arg(&plan).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    crate::integrity::flip(&thesis_copy, 12_345);
    write(&env.src.join("home/alice/thesis.txt"), "rewritten since\n");
    write(&env.src.join("home/alice/diary.txt"), "day two\n");
    let out = env.cmd(&["verify", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "both are damage: {}", show(&out));

    // A dry run says where each copy would come from and changes nothing.
    let out = env.cmd(&["repair", "--dry-run", "--json", "--config"]).arg(&plan).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["repaired"][0]["note"].as_str().unwrap().starts_with("offsite nas (restic snapshot "), "{r}");
    assert!(r["repaired"][0]["path"].as_str().unwrap().ends_with("thesis.txt"), "{r}");
    assert_ne!(std::fs::read_to_string(&thesis_copy).unwrap(), thesis, "the dry run wrote");

    let out = env.cmd(&["repair", "--json", "--config"]).arg(&plan).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["repaired"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["repaired"][0]["note"].as_str().unwrap().starts_with("offsite nas"), "{r}");
    assert_eq!(std::fs::read_to_string(&thesis_copy).unwrap(), thesis);
    assert!(r["lost"][0]["path"].as_str().unwrap().ends_with("diary.txt"), "{r}");
    let why = r["lost"][0]["note"].as_str().unwrap();
    assert!(why.contains("has changed since the snapshot") && why.contains("holds other content"), "{why}");
    // Nothing is left beside the repaired file; verify is clean but for the file marked lost.
    let names: Vec<String> = std::fs::read_dir(snap.join("home/alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let out = env.cmd(&["verify", "--json", "--config"]).arg(&plan).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["lost"][0].as_str().unwrap().ends_with("diary.txt"), "{v}");
}

/// A `restic` that, when asked to restore, first does what a user who owns the target's parent
/// can do to root's staging directory there (`.hwc-offsite-restore-*`): `swap` runs in sh with
/// `$S` its path and `$N` the snapshot's name (the last component of `--target`).
fn restic_that_swaps_the_staging_directory(env: &Env, swap: &str) -> PathBuf {
    let wrapper = env.dir.path().join(format!("restic-swapping-{}", swap.len()));
    let real = sh("command -v restic").trim().to_string();
    write(
        &wrapper,
        format!(
            "#!/bin/sh\nprev=\nfor a; do [ \"$prev\" = --target ] && T=\"$a\"; prev=\"$a\"; done\n\
             if [ -n \"$T\" ]; then N=$(basename \"$T\"); for S in '{parent}'/.hwc-offsite-restore-*; do\n\
             mv \"$S\" \"$S.moved\" || exit 9\n{swap}\ndone; fi\nexec {real} \"$@\"\n",
            parent = s(env.dir.path()),
        ),
    );
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn a_staging_directory_swapped_while_restic_restores_never_redirects_a_write_or_a_removal() {
    let env = Env::new();
    write(&env.src.join("home/alice/evil.sh"), "echo from the backup\n");
    let repo = Repo::local(&env, "repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let restore_with = |restic: &Path, to: &Path| {
        let mut e = repo.entry();
        e["restic"] = s(restic).into();
        let plan = plan_with(&env, serde_json::json!({ "nas": e }));
        env.cmd(&["restore", "--config"])
            .arg(&plan)
            .args(["--offsite", "nas", "latest"])
            .arg(env.src.join("home/alice/evil.sh"))
            .arg(to)
            .output()
            .unwrap()
    };
    // 1. A tree of the user's own under the staging name, a symlink where restic would write.
    let victim = env.dir.path().join("victim-etc");
    std::fs::create_dir_all(&victim).unwrap();
    let swap = format!(
        "mkdir -p \"$S/offsite/daily/$N{src}/home\" && ln -s '{victim}' \"$S/offsite/daily/$N{src}/home/alice\"",
        src = s(&env.src),
        victim = s(&victim)
    );
    let to = env.dir.path().join("restored.sh");
    let out = restore_with(&restic_that_swaps_the_staging_directory(&env, &swap), &to);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&to).unwrap(), "echo from the backup\n");
    let inside: Vec<_> = std::fs::read_dir(&victim).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(inside.is_empty(), "restic wrote through the planted symlink: {inside:?}");
    // 2. A tree the user could rename but not delete, moved under the staging name: left alone.
    let precious = env.dir.path().join("precious");
    write(&precious.join("keep.txt"), "irreplaceable\n");
    let swap = format!("mv '{}' \"$S\"", s(&precious));
    let to = env.dir.path().join("restored-again.sh");
    let out = restore_with(&restic_that_swaps_the_staging_directory(&env, &swap), &to);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&to).unwrap(), "echo from the backup\n");
    let kept = sh(&format!("find '{}' -name keep.txt -exec cat {{}} +", s(env.dir.path())));
    assert_eq!(kept, "irreplaceable\n", "the tree moved under the staging name was removed");
    // The staging directories restic wrote into (moved aside) were emptied.
    let moved = sh(&format!("find '{}'/.hwc-offsite-restore-*.moved -type f", s(env.dir.path())));
    assert_eq!(moved.trim(), "", "{moved}");
}

#[test]
fn an_offsite_restore_into_the_backup_destination_is_refused() {
    let env = Env::new();
    write(&env.src.join("notes.txt"), "notes\n");
    let repo = Repo::local(&env, "repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    for into in [env.dest.join("restored.txt"), env.host_dir().join("daily/restored.txt")] {
        let out = env
            .cmd(&["restore", "--config"])
            .arg(&plan)
            .args(["--offsite", "nas", "latest"])
            .arg(env.src.join("notes.txt"))
            .arg(&into)
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{}: {}", into.display(), show(&out));
        assert!(show(&out).contains("inside the backup destination"), "{}", show(&out));
        assert!(!into.exists());
    }
}

#[test]
fn an_offsite_path_below_a_stored_symlink_is_refused_not_read_live() {
    // The live data a stored symlink points to is "encrypted" after the backup: a restore
    // of a path below the link must not hand that back as the backup.
    let env = Env::new();
    let live = env.dir.path().join("data");
    write(&live.join("report.txt"), "good report\n");
    std::fs::create_dir_all(env.src.join("srv")).unwrap();
    std::os::unix::fs::symlink(&live, env.src.join("srv/link")).unwrap();
    let repo = Repo::local(&env, "repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    write(&live.join("report.txt"), "ENCRYPTED\n");
    let target = env.dir.path().join("out");
    let out = env
        .cmd(&["restore", "--config"])
        .arg(&plan)
        .args(["--offsite", "nas", "latest"])
        .arg(env.src.join("srv/link/report.txt"))
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    // restic restores nothing through the stored link, so the local restore finds nothing there.
    assert!(show(&out).contains("srv/link/report.txt is not in this snapshot"), "{}", show(&out));
    assert!(!target.exists(), "nothing restored");
    assert_eq!(std::fs::read_to_string(live.join("report.txt")).unwrap(), "ENCRYPTED\n");
}

#[test]
fn a_hostile_snapshot_listing_becomes_no_argument_and_no_path() {
    // What a tampered repository (or a restic that is not what it claims) could list: an ID
    // that is an option, a short ID and a tag that climb out of the staging directory. The
    // fake restic records how it is called and fails everything but `snapshots`.
    let cases = [
        ("..", "snapshot:../../x", "is not a single file name"),
        ("1a2b3c4d", "snapshot:../../x", "is not a restic snapshot ID"),
    ];
    for (short_id, tag, refusal) in cases {
        let env = Env::new();
        let calls = env.dir.path().join("calls");
        let listing = format!(
            r#"[{{"id":"--target=/","short_id":"{short_id}","time":"2025-01-15T01:00:00Z","hostname":"testhost","paths":["/x"],"tags":["hwc-backup","{tag}"]}}]"#
        );
        let fake = env.dir.path().join("restic-hostile");
        write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{calls}'\nfor a; do [ \"$a\" = snapshots ] && {{ echo '{listing}'; exit 0; }}; done\nexit 1\n",
                calls = s(&calls)
            ),
        );
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let repo = Repo::local(&env, "repo");
        let mut e = repo.entry();
        e["restic"] = s(&fake).into();
        let plan = plan_with(&env, serde_json::json!({ "nas": e }));
        let target = env.dir.path().join("out");
        let out = env
            .cmd(&["restore", "--config"])
            .arg(&plan)
            .args(["--offsite", "nas", "latest", "/x"])
            .arg(&target)
            .output()
            .unwrap();
        assert_ne!(code(&out), 0, "{}", show(&out));
        assert!(show(&out).contains(refusal), "{refusal}: {}", show(&out));
        let calls = std::fs::read_to_string(&calls).unwrap();
        assert!(!calls.lines().any(|l| l.contains("restore")), "restic was asked to restore: {calls}");
        assert!(!target.exists());
        // Nothing was left beside the target either.
        let left = sh(&format!("ls -A '{}' | grep hwc-offsite || true", s(env.dir.path())));
        assert_eq!(left.trim(), "", "{left}");
    }
}

#[test]
fn an_endless_dump_is_stopped_by_repair_and_by_verify() {
    // A restic whose `dump` never ends (`yes`), as a tampered repository could make it: the
    // offsite check counts a mismatch and ends; repair, on a 64 MiB destination, stops at the
    // room it has and marks the file lost; nothing is left on the destination.
    let env = Env::new();
    let _small = Mount::tmpfs(&env.dest, "size=64m");
    let repo = Repo::local(&env, "restic-repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    write(&env.src.join("home/alice/notes.txt"), "notes\n".repeat(100));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let real = sh("command -v restic").trim().to_string();
    let endless = env.dir.path().join("restic-endless");
    write(&endless, format!("#!/bin/sh\nfor a; do [ \"$a\" = dump ] && exec yes; done\nexec {real} \"$@\"\n"));
    std::fs::set_permissions(&endless, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut e = repo.entry();
    e["restic"] = s(&endless).into();
    let plan = plan_with(&env, serde_json::json!({ "nas": e }));
    let mut check = env.cmd(&["verify", "--config"]);
    check.arg(&plan).args(["--offsite", "nas", "--json"]);
    let out = crate::verify::within_a_minute(&mut check, "verify --offsite of an endless dump");
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("notes.txt"), "a mismatch: {}", show(&out));

    let copy = env.in_snapshot("daily/2025-01-15_02-00-00").join("home/alice/notes.txt");
    crate::integrity::flip(&copy, 3);
    write(&env.src.join("home/alice/notes.txt"), "changed since\n");
    let out = env.cmd(&["verify", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    for dry in [true, false] {
        let mut repair = env.cmd(&["repair", "--json", "--config"]);
        repair.arg(&plan);
        if dry {
            repair.arg("--dry-run");
        }
        let out = crate::verify::within_a_minute(&mut repair, "repair from an endless dump");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(r["lost"][0]["note"].as_str().unwrap_or("").contains("more than the"), "dry {dry}: {}", show(&out));
    }
    let used = sh(&format!("df --output=used -B1 '{}' | tail -1", s(&env.dest)));
    assert!(used.trim().parse::<u64>().unwrap() < 16 << 20, "left on the destination: {used}");
}

#[test]
fn a_symlink_planted_in_the_local_snapshot_does_not_bound_the_offsite_sample() {
    // The local copy of the sampled file replaced by a symlink (its size is the target's
    // length): the offsite copy is still read whole and matches the manifest.
    let env = Env::new();
    write(&env.src.join("home/alice/notes.txt"), "notes\n".repeat(100));
    let repo = Repo::local(&env, "repo");
    let plan = plan_with(&env, serde_json::json!({ "nas": repo.entry() }));
    let out = now(&env, &plan, T1);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let copy = env.in_snapshot("daily/2025-01-15_02-00-00").join("home/alice/notes.txt");
    let victim = env.dir.path().join("victim");
    write(&victim, "x");
    std::fs::remove_file(&copy).unwrap();
    std::os::unix::fs::symlink(&victim, &copy).unwrap();
    let out = env.cmd(&["verify", "--config"]).arg(&plan).args(["--offsite", "nas", "--json"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("notes.txt"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x");
}

/// `hwc-backup ARGS…` under `/usr/bin/time`: its output and its peak resident memory in KiB.
fn with_peak_memory(env: &Env, args: &[&std::ffi::OsStr], what: &str) -> (Output, u64) {
    let report = env.dir.path().join("peak-kib");
    let mut c = std::process::Command::new("/usr/bin/time");
    c.args(["-f", "%M", "-o"]).arg(&report).arg(crate::util::bin()).args(args);
    c.env_remove("HWC_BACKUP_CONFIG").env_remove("HWC_BACKUP_LOG");
    let out = crate::verify::within_a_minute(&mut c, what);
    let kib = std::fs::read_to_string(&report).unwrap().lines().last().unwrap().trim().parse().unwrap();
    (out, kib)
}

#[test]
fn restics_endless_output_or_flooded_stderr_holds_little_memory() {
    // A tampered repository (or a broken restic) can make a listing endless and an error
    // message hundreds of MiB long: the listing is stopped at 64 MiB with an error saying so,
    // and of stderr only the end is kept, which still names restic's own error.
    crate::util::require("/usr/bin/time");
    let env = Env::new();
    let repo = Repo::local(&env, "restic-repo");
    let real = sh("command -v restic").trim().to_string();
    let fake = env.dir.path().join("restic-hostile");
    let mode = env.dir.path().join("restic-mode");
    write(
        &fake,
        format!(
            "#!/bin/sh\nfor a; do [ \"$a\" = snapshots ] || continue\n  case $(cat {mode}) in\n  \
             list) exec yes '{{\"id\":\"00000000\"}}' ;;\n  \
             stderr) head -c 300000000 /dev/zero | tr '\\0' e >&2; echo >&2; \
             echo 'Fatal: planted error' >&2; exit 1 ;;\n  esac\ndone\nexec {real} \"$@\"\n",
            mode = s(&mode)
        ),
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut e = repo.entry();
    e["restic"] = s(&fake).into();
    let plan = plan_with(&env, serde_json::json!({ "nas": e }));
    let out = env.cmd(&["now", "--config"]).arg(&plan).args(["--now", T1, "--local-only"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let arg = |a: &str| std::ffi::OsString::from(a);
    write(&mode, "list");
    let list = [arg("restore"), arg("--config"), plan.clone().into(), arg("--offsite"), arg("nas"), arg("--list")];
    let (out, kib) =
        with_peak_memory(&env, &list.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(), "an endless listing");
    assert_ne!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("printed more than 64 MiB"), "{}", show(&out));
    assert!(kib < 200 << 10, "peak {kib} KiB");
    write(&mode, "stderr");
    let copy = [arg("offsite"), arg("--config"), plan.into()];
    let (out, kib) =
        with_peak_memory(&env, &copy.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(), "a flooded stderr");
    assert_eq!(code(&out), 1, "{}", show(&out));
    // The report (stdout) names restic's own error, and only that much of what it said.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Fatal: planted error") && out.stdout.len() + out.stderr.len() < 1 << 20, "{said}");
    assert!(kib < 100 << 10, "peak {kib} KiB");
}
