//! Two backup drives rotated at one mount point (two loop-mounted ext4 images, mounted in
//! turn): each drive's `status` and `health` show only its own runs, verifies and cloud
//! pushes; with no drive mounted they say so and name the last drive seen. And `now
//! --min-interval`, which the run-on-mount unit uses.

use std::path::{Path, PathBuf};

use crate::notify::{notifying_plan, Listener};
use crate::util::*;

/// A filesystem image: `mkfs.ext4` on a 64 MiB file.
struct Image {
    path: PathBuf,
    uuid: String,
}

impl Image {
    fn new(env: &Env, name: &str) -> Image {
        Image::with(env, name, "mkfs.ext4", 64)
    }

    /// `mkfs -q` on a file of `mib` MiB.
    fn with(env: &Env, name: &str, mkfs: &str, mib: u64) -> Image {
        require("blkid");
        let path = env.dir.path().join(format!("{name}.img"));
        let force = if mkfs == "mkfs.ext4" { "-F" } else { "-f" };
        make_image(&path, mkfs, &["-q", force], mib);
        let uuid = sh(&format!("blkid -p -o value -s UUID '{}'", path.display())).trim().to_string();
        assert!(!uuid.is_empty(), "no UUID for {}", path.display());
        Image { path, uuid }
    }
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(out)))
}

fn status(env: &Env, plan: &Path) -> serde_json::Value {
    let out = env.cmd(&["status", "--json", "--config"]).arg(plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    json_of(&out)
}

fn health(env: &Env, plan: &Path) -> (i32, serde_json::Value) {
    let out = env.cmd(&["health", "--json", "--config"]).arg(plan).output().unwrap();
    (code(&out), json_of(&out))
}

fn check<'a>(h: &'a serde_json::Value, name: &str) -> (bool, &'a str) {
    let c = h["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{h:#}"));
    (c["ok"].as_bool().unwrap(), c["message"].as_str().unwrap())
}

fn now(env: &Env, plan: &Path, extra: &[&str]) -> std::process::Output {
    env.cmd(&["now", "--config"]).arg(plan).args(extra).output().unwrap()
}

#[test]
fn each_rotated_drive_shows_its_own_history() {
    require("rclone");
    let env = Env::new();
    write(&env.src.join("a.txt"), "a");
    let (a, b) = (Image::new(&env, "a"), Image::new(&env, "b"));
    assert_ne!(a.uuid, b.uuid);
    let remote = env.dir.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let conf = env.dir.path().join("rclone.conf");
    std::fs::write(&conf, "[disk]\ntype = local\n").unwrap();
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = true.into();
    p["metrics"]["textfileDir"] = s(&env.dir.path().join("prom")).into();
    p["cloud"] = serde_json::json!({
        "enable": true, "remote": format!("disk:{}", s(&remote)), "syncMode": "sync", "bandwidthLimit": null,
        "rcloneConfigFile": s(&conf), "rclone": null, "keepHistory": 3, "maxAge": "7d",
    });
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let hook = env.dir.path().join("failing-hook");
    std::fs::write(&hook, "#!/bin/sh\necho 'the database is down' >&2\nexit 3\n").unwrap();
    sh(&format!("chmod 755 '{}'", hook.display()));
    let mut failing = p.clone();
    failing["hooks"]["preBackup"] = s(&hook).into();
    let failing = write_plan(&env, "failing.json", &failing.to_string());
    let prom = || std::fs::read_to_string(env.dir.path().join("prom/hwc_backup_testhost.prom")).unwrap();

    // Drive A: a run with its cloud push, and a clean verify.
    let on_a = Mount::loop_image(&a.path, &env.dest);
    let out = now(&env, &plan, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = env.cmd(&["verify", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let st = status(&env, &plan);
    assert_eq!(st["destination"]["filesystem"], a.uuid.as_str(), "{st:#}");
    assert_eq!(st["lastRun"]["state"], "success");
    let a_snapshot = st["lastRun"]["snapshot"].as_str().unwrap().to_string();
    assert_eq!(st["lastVerify"]["destination"]["filesystem"], a.uuid.as_str());
    assert_eq!(st["cloud"]["lastOk"], true);
    let text =
        String::from_utf8_lossy(&env.cmd(&["status", "--config"]).arg(&plan).output().unwrap().stdout).into_owned();
    assert!(text.contains(&format!("drive {}", a.uuid)) && text.contains("last verify: clean"), "{text}");
    assert!(text.contains("last cloud push: ok"), "{text}");
    drop(on_a);

    // No drive: status and health say so and name drive A; a run fails, recorded for the job.
    let out = env.cmd(&["status", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no backup drive is mounted") && err.contains(&a.uuid), "{err}");
    let (c, h) = health(&env, &plan);
    assert_eq!(c, 1);
    let (ok, m) = check(&h, "destination");
    assert!(!ok && m.contains("not a mount point") && m.contains(&format!("last drive seen there: drive {}", a.uuid)));
    assert_eq!(h["lastSeenDestination"]["destination"]["filesystem"], a.uuid.as_str(), "{h:#}");
    let out = now(&env, &plan, &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let (_, h) = health(&env, &plan);
    let (ok, m) = check(&h, "lastRun");
    assert!(!ok && m.contains("not a mount point"), "the job's last attempt: {m}");

    // Drive B: nothing of A's shows; a good run without the cloud, then a failing one.
    let on_b = Mount::loop_image(&b.path, &env.dest);
    let (_, h) = health(&env, &plan);
    assert_eq!(h["destination"]["filesystem"], b.uuid.as_str(), "{h:#}");
    assert_eq!(check(&h, "lastRun"), (true, "no run recorded"), "{h:#}");
    assert_eq!(check(&h, "verify"), (true, "no verify recorded yet"));
    assert!(check(&h, "cloud").1.contains("never been pushed"), "{h:#}");
    let out = now(&env, &plan, &["--local-only"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = now(&env, &failing, &["--local-only"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let st = status(&env, &plan);
    assert_eq!(st["destination"]["filesystem"], b.uuid.as_str());
    assert_eq!(st["lastRun"]["state"], "failed", "{st:#}");
    assert!(st["lastRun"]["error"].as_str().unwrap().contains("the database is down"), "{st:#}");
    assert!(st["lastVerify"].is_null() && st["cloud"].is_null(), "A's verify and push are not B's: {st:#}");
    assert_eq!(st["snapshots"].as_array().unwrap().len(), 1);
    let (c, h) = health(&env, &plan);
    assert_eq!(c, 1);
    let (ok, m) = check(&h, "lastRun");
    assert!(!ok && m.contains("the database is down"), "{m}");
    assert!(prom().contains("hwc_backup_last_run_state{host=\"testhost\",state=\"failed\"} 1"), "{}", prom());
    drop(on_b);

    // Drive A again: its own last run, verify and push; B's failure is not A's.
    let on_a = Mount::loop_image(&a.path, &env.dest);
    let st = status(&env, &plan);
    assert_eq!(st["destination"]["filesystem"], a.uuid.as_str());
    assert_eq!(
        (st["lastRun"]["state"].as_str(), st["lastRun"]["snapshot"].as_str()),
        (Some("success"), Some(&*a_snapshot))
    );
    assert_eq!(st["lastVerify"]["errors"], 0);
    assert_eq!(st["cloud"]["lastSuccessSnapshot"], a_snapshot.as_str());
    let (c, h) = health(&env, &plan);
    assert_eq!(c, 0, "{h:#}");
    assert!(check(&h, "lastRun").1.ends_with("ended success"), "{h:#}");
    assert!(check(&h, "verify").1.contains("was clean"), "{h:#}");
    assert!(prom().contains("hwc_backup_last_run_state{host=\"testhost\",state=\"success\"} 1"), "{}", prom());
    assert!(prom().contains("hwc_backup_verify_errors{host=\"testhost\"} 0"), "{}", prom());
    let out = now(&env, &plan, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let st = status(&env, &plan);
    assert_eq!(st["snapshots"].as_array().unwrap().len(), 2, "{st:#}");
    assert_eq!(st["lastRun"]["state"], "success");
    drop(on_a);

    // And B still has its failure.
    let _on_b = Mount::loop_image(&b.path, &env.dest);
    let (c, h) = health(&env, &plan);
    assert_eq!(c, 1);
    assert!(check(&h, "lastRun").1.contains("the database is down"), "{h:#}");
    // The records are kept per drive under the state directory, never on the drives.
    let dests = env.state.join(HOST).join("destinations");
    for img in [&a, &b] {
        assert!(dests.join(format!("fs-{}", img.uuid)).join("last-run.json").is_file());
    }
    assert!(dests.join(format!("fs-{}", a.uuid)).join("last-verify.json").is_file());
    assert!(!dests.join(format!("fs-{}", b.uuid)).join("last-verify.json").exists());
    let top: Vec<String> = tree(&env.dest).into_iter().filter(|p| !p.contains('/')).collect();
    assert_eq!(top, ["lost+found", HOST], "nothing but the host directory is written on a drive");
}

/// btrfs gives the files of every subvolume a device number of its own, which names no block
/// device: the drive is found through the source of its mount.
#[test]
fn a_btrfs_drive_is_known_by_its_uuid() {
    let env = Env::new();
    write(&env.src.join("a.txt"), "a");
    let drive = Image::with(&env, "btrfs", "mkfs.btrfs", 128);
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = true.into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let _mounted = Mount::loop_image(&drive.path, &env.dest);
    let out = now(&env, &plan, &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let st = status(&env, &plan);
    assert_eq!(st["destination"]["filesystem"], drive.uuid.as_str(), "{st:#}");
    assert_eq!(st["lastRun"]["state"], "success");
    let dir = env.state.join(HOST).join("destinations").join(format!("fs-{}", drive.uuid));
    assert!(dir.join("last-run.json").is_file(), "{:?}", tree(&env.state));
}

#[test]
fn min_interval_skips_a_run_after_a_recent_snapshot_and_records_nothing() {
    let env = Env::new();
    write(&env.src.join("a.txt"), "a");
    let l = Listener::start();
    let mut p = notifying_plan(&env, &l.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = now(&env, &plan, &["--now", "2025-01-15T02:00:00+01:00"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    l.wait_for(4);
    let requests = l.requests().len();
    let state = env.state.join(HOST);
    let records = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        tree(dir)
            .into_iter()
            .filter(|p| dir.join(p).is_file())
            .map(|p| (p.clone(), std::fs::read(dir.join(p)).unwrap()))
            .collect()
    };
    let before = (records(&state), records(&env.dir.path().join("log")), env.snapshot_ids());

    // 30 minutes later with --min-interval 1h: not run, exit 0, nothing written or sent.
    let out = now(&env, &plan, &["--now", "2025-01-15T02:30:00+01:00", "--min-interval", "1h"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is 30m old, younger than --min-interval 1h") && text.contains("not running"), "{text}");
    let out = now(&env, &plan, &["--now", "2025-01-15T02:30:00+01:00", "--min-interval", "1h", "--json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(json_of(&out)["ran"], false);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(l.requests().len(), requests, "{:#?}", &l.requests()[requests..]);
    assert_eq!((records(&state), records(&env.dir.path().join("log")), env.snapshot_ids()), before);

    // Two hours later it runs.
    let out = now(&env, &plan, &["--now", "2025-01-15T04:00:00+01:00", "--min-interval", "1h"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(env.snapshot_ids().len(), 2);
    // A bad duration is bad usage, before anything is done.
    let out = now(&env, &plan, &["--min-interval", "soon"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-interval"), "{}", show(&out));
    assert_eq!(env.snapshot_ids().len(), 2);
}
