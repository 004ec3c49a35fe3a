//! Bad input. Every case must give a clear message (naming the field, the path or the cause),
//! the right non-zero exit code, and create nothing under the destination:
//!
//! - a bad plan (malformed JSON, an unknown field, a negative count, a relative source) is a
//!   usage error: `config check` and `now --config` both exit 2;
//! - a good plan that meets a bad machine (a missing source, a destination that is missing,
//!   not mounted although it must be, or too full) is a failed run: exit 1, while
//!   `config check` accepts the plan (it runs at build time, where sources and drives are not
//!   there, so it must not look at them);
//! - a snapshot or a path that does not exist, for `restore` and `verify`: exit 1, and nothing
//!   is restored.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::util::*;

const USAGE: i32 = 2;
const FAILED: i32 = 1;

/// A clock for runs that are expected to be refused.
const WHEN: &str = "2025-01-15T02:00:00+01:00";

/// stdout and stderr together, where the key words are looked for.
fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts the exit code and that every key word appears in the output.
fn assert_refused(o: &Output, want: i32, words: &[&str], what: &str) {
    assert_eq!(code(o), want, "{what}: wrong exit code\n{}", show(o));
    let t = text(o);
    for w in words {
        assert!(t.contains(w), "{what}: the message does not name {w:?}\n{}", show(o));
    }
}

fn assert_dest_empty(env: &Env, what: &str) {
    assert_eq!(tree(&env.dest), Vec::<String>::new(), "{what}: something was created under the destination");
}

fn config_check(env: &Env, plan: &Path) -> Output {
    env.cmd(&["config", "check"]).arg(plan).output().unwrap()
}

fn now_with_plan(env: &Env, plan: &Path) -> Output {
    env.cmd(&["now", "--config"]).arg(plan).args(["--now", WHEN]).output().unwrap()
}

/// A plan that `config check` must reject with exit 2 and `now` must refuse with exit 2,
/// both naming `words`, without writing under the destination.
fn bad_plan(env: &Env, name: &str, text: &str, words: &[&str]) {
    let plan = write_plan(env, name, text);
    let o = config_check(env, &plan);
    assert_refused(&o, USAGE, words, &format!("config check {name}"));
    let o = now_with_plan(env, &plan);
    assert_refused(&o, USAGE, words, &format!("now --config {name}"));
    // `now` also says which plan it is talking about.
    assert_refused(&o, USAGE, &[&s(&plan)], &format!("now --config {name}"));
    assert_dest_empty(env, name);
}

/// A plan that is valid (`config check` exits 0) but whose run must fail before writing.
fn refused_run(env: &Env, name: &str, plan: &Value, words: &[&str]) -> Output {
    let path = write_plan(env, name, &plan.to_string());
    let o = config_check(env, &path);
    assert_eq!(code(&o), 0, "config check {name} must accept a valid plan: {}", show(&o));
    let before = tree(&plan_dest(plan));
    let o = now_with_plan(env, &path);
    assert_refused(&o, FAILED, words, &format!("now --config {name}"));
    assert_refused(&o, FAILED, &["FAILED", "nothing was published"], &format!("now --config {name}"));
    assert_eq!(tree(&plan_dest(plan)), before, "{name}: the destination changed");
    o
}

fn plan_dest(plan: &Value) -> std::path::PathBuf {
    plan["destination"]["path"].as_str().unwrap().into()
}

/// `now --source … --dest … EXTRA` (the ad-hoc form, no plan) at the clock `WHEN`.
fn ad_hoc(env: &Env, source: &str, dest: &Path, extra: &[&str]) -> Output {
    ad_hoc_at(env, WHEN, source, dest, extra)
}

fn ad_hoc_at(env: &Env, when: &str, source: &str, dest: &Path, extra: &[&str]) -> Output {
    env.cmd(&["now", "--source", source, "--dest"])
        .arg(dest)
        .args(["--host", HOST, "--state-dir"])
        .arg(&env.state)
        .args(["--now", when])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn good_plan_passes_config_check() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let plan = write_plan(&env, "good.json", &plan_json(&env).to_string());
    let o = config_check(&env, &plan);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(text(&o).contains("valid"), "{}", show(&o));
    assert_dest_empty(&env, "config check");
    // The minimal hand-written plan (defaults for every optional section) is good too.
    let minimal = json!({ "version": 1, "host": HOST, "destination": { "path": s(&env.dest) },
                          "sources": [s(&env.src)] });
    let plan = write_plan(&env, "minimal.json", &minimal.to_string());
    let o = config_check(&env, &plan);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_dest_empty(&env, "config check");
}

#[test]
fn malformed_json_is_refused_with_line_and_column() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    // A missing comma at the end of line 3.
    let text = format!(
        "{{\n  \"version\": 1,\n  \"host\": \"{HOST}\"\n  \"destination\": {{ \"path\": \"{}\" }},\n  \"sources\": [\"{}\"]\n}}\n",
        s(&env.dest),
        s(&env.src)
    );
    bad_plan(&env, "malformed.json", &text, &["invalid configuration", "line 4", "column"]);
    // Cut off in the middle.
    let whole = plan_json(&env).to_string();
    bad_plan(&env, "truncated.json", &whole[..whole.len() / 2], &["invalid configuration", "EOF"]);
    // Not JSON at all.
    bad_plan(&env, "yaml.json", "version: 1\nhost: testhost\n", &["invalid configuration", "line 1"]);
}

#[test]
fn unknown_field_is_named_with_its_json_path() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    // A typo inside a section.
    let mut p = plan_json(&env);
    p["destination"].as_object_mut().unwrap().insert("requireMountpoint".into(), json!(true));
    bad_plan(&env, "unknown.json", &p.to_string(), &["destination.requireMountpoint", "unknown field"]);
    // A typo of a section name.
    let mut p = plan_json(&env);
    p.as_object_mut().unwrap().insert("retenion".into(), json!({ "daily": 7 }));
    bad_plan(&env, "unknown-top.json", &p.to_string(), &["retenion", "unknown field"]);
    // Deeper: inside a notification target.
    let mut p = plan_json(&env);
    p["notifications"]["ntfy"] = json!({ "url": "https://ntfy.example/t", "tokenFile": null, "topic": "x" });
    bad_plan(&env, "unknown-deep.json", &p.to_string(), &["notifications.ntfy.topic", "unknown field"]);
}

#[test]
fn negative_count_is_named_with_field_and_value() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let mut p = plan_json(&env);
    p["retention"]["daily"] = json!(-3);
    bad_plan(&env, "negative.json", &p.to_string(), &["retention.daily", "-3", "negative"]);
    let mut p = plan_json(&env);
    p["destination"]["minFreeBytes"] = json!(-1);
    bad_plan(&env, "negative-free.json", &p.to_string(), &["destination.minFreeBytes", "-1"]);
}

#[test]
fn relative_source_is_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let mut p = plan_json(&env);
    p["sources"] = json!([s(&env.src), "home/alice"]);
    bad_plan(&env, "relative.json", &p.to_string(), &["sources[1]", "home/alice", "absolute"]);
    // The ad-hoc form: the same check, the same exit code.
    let o = ad_hoc(&env, "home/alice", &env.dest, &[]);
    assert_refused(&o, USAGE, &["home/alice", "absolute"], "now --source home/alice");
    assert_dest_empty(&env, "now --source home/alice");
}

#[test]
fn missing_source_is_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let missing = env.dir.path().join("no-such-dir");
    let mut p = plan_json(&env);
    p["sources"] = json!([s(&env.src), s(&missing)]);
    refused_run(&env, "missing.json", &p, &[&s(&missing), "No such file"]);
    let o = ad_hoc(&env, &s(&missing), &env.dest, &[]);
    assert_refused(&o, FAILED, &[&s(&missing), "No such file"], "now --source MISSING");
    assert_dest_empty(&env, "now --source MISSING");
}

/// A missing destination is a missing drive for a plan (and with `--require-mount-point`):
/// refused, and never created. A one-off run creates its destination like rsync does, but
/// only when it is going to run: not when it fails on a missing source.
#[test]
fn missing_destination_is_not_created() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let gone = env.dir.path().join("backup-drive");
    for require in [true, false] {
        let mut p = plan_json(&env);
        p["destination"]["path"] = json!(s(&gone));
        p["destination"]["requireMountPoint"] = json!(require);
        let path = write_plan(&env, "gone.json", &p.to_string());
        let o = now_with_plan(&env, &path);
        assert_refused(&o, FAILED, &[&s(&gone), "not available"], "now with a missing destination");
        assert!(!gone.exists(), "the run created the missing destination {}", gone.display());
    }
    let o = ad_hoc(&env, &s(&env.src), &gone, &["--require-mount-point"]);
    assert_refused(&o, FAILED, &[&s(&gone), "not available"], "now --dest MISSING --require-mount-point");
    assert!(!gone.exists(), "the run created the missing destination {}", gone.display());

    let missing = env.dir.path().join("no-such-dir");
    let o = ad_hoc(&env, &s(&missing), &gone, &[]);
    assert_refused(&o, FAILED, &[&s(&missing), "No such file"], "now --source MISSING --dest MISSING");
    assert!(!gone.exists(), "a run refused for a missing source created the destination {}", gone.display());

    // Control: a one-off run with everything in place creates it.
    let o = ad_hoc(&env, &s(&env.src), &gone, &[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(gone.join(HOST).join("latest").exists());
}

#[test]
fn unmounted_destination_is_refused_when_a_mount_point_is_required() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = json!(true);
    refused_run(&env, "unmounted.json", &p, &[&s(&env.dest), "not a mount point"]);
    assert_dest_empty(&env, "unmounted.json");
    // The ad-hoc flag.
    let o = ad_hoc(&env, &s(&env.src), &env.dest, &["--require-mount-point"]);
    assert_refused(&o, FAILED, &[&s(&env.dest), "not a mount point"], "now --require-mount-point");
    assert_dest_empty(&env, "now --require-mount-point");

    // Control: once something is mounted there, the same plan and flag run.
    let _fs = Mount::tmpfs(&env.dest, "size=16m");
    let path = write_plan(&env, "mounted.json", &p.to_string());
    let o = now_with_plan(&env, &path);
    assert_eq!(code(&o), 0, "a mounted destination must be accepted: {}", show(&o));
    let o = ad_hoc_at(&env, "2025-01-16T02:00:00+01:00", &s(&env.src), &env.dest, &["--require-mount-point"]);
    assert_eq!(code(&o), 0, "a mounted destination must be accepted: {}", show(&o));
    assert_eq!(env.snapshot_ids().len(), 2, "{:?}", env.snapshot_ids());
}

#[test]
fn too_little_free_space_is_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let _fs = Mount::tmpfs(&env.dest, "size=2m");
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = json!(true);
    p["destination"]["minFreeBytes"] = json!(10u64 << 20);
    refused_run(&env, "small.json", &p, &[&s(&env.dest), "free", "2.0 MiB", "10.0 MiB"]);
    assert_dest_empty(&env, "small.json");
    // The ad-hoc flag, in GiB.
    let o = ad_hoc(&env, &s(&env.src), &env.dest, &["--min-free-gb", "1"]);
    assert_refused(&o, FAILED, &[&s(&env.dest), "free", "1.0 GiB"], "now --min-free-gb 1");
    assert_dest_empty(&env, "now --min-free-gb 1");
}

#[test]
fn nearly_full_destination_is_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let _fs = Mount::tmpfs(&env.dest, "size=8m");
    // Fill it to 1 MiB short of full with something that is not ours.
    sh(&format!("dd if=/dev/zero of='{}/filler' bs=1M count=7 status=none", s(&env.dest)));
    let avail = avail_bytes(&env.dest);
    assert!(avail <= 1 << 20, "the filler should leave at most 1 MiB, df says {avail}");
    let before = tree(&env.dest);
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = json!(true);
    p["destination"]["minFreeBytes"] = json!(2u64 << 20);
    refused_run(&env, "full.json", &p, &[&s(&env.dest), "free", "2.0 MiB"]);
    assert_eq!(tree(&env.dest), before);

    // Control: asking for less than what is left lets the (tiny) run through.
    p["destination"]["minFreeBytes"] = json!(256u64 << 10);
    let path = write_plan(&env, "enough.json", &p.to_string());
    let o = now_with_plan(&env, &path);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn snapshot_that_does_not_exist() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let target = env.dir.path().join("restored");

    // No snapshot at all yet: nothing to resolve, and nothing is created by asking.
    let o = env.run("restore", &["latest", &s(&env.src.join("a")), &s(&target)]);
    assert_refused(&o, FAILED, &["latest", "no complete snapshot"], "restore latest (none)");
    let o = env.run("verify", &[]);
    assert_refused(&o, FAILED, &["latest", "no complete snapshot"], "verify (none)");
    assert_dest_empty(&env, "restore/verify without snapshots");
    assert!(!target.exists());

    env.snapshot_ok(WHEN, &[]);
    let before = tree(&env.dest);
    let o = env.run("restore", &["nosuch", "/x", &s(&target)]);
    assert_refused(&o, FAILED, &["\"nosuch\"", "no such snapshot", &s(&env.host_dir())], "restore nosuch");
    let o = env.run("restore", &["daily/2024-01-01_00-00-00", &s(&env.src.join("a")), &s(&target)]);
    assert_refused(&o, FAILED, &["daily/2024-01-01_00-00-00", "no such snapshot"], "restore daily/OLD");
    let o = env.run("verify", &["nosuch"]);
    assert_refused(&o, FAILED, &["\"nosuch\"", "no such snapshot"], "verify nosuch");
    assert_eq!(tree(&env.dest), before, "restore/verify of a missing snapshot changed the destination");
    assert!(!target.exists(), "a failed restore created {}", target.display());
}

#[test]
fn path_that_is_not_in_the_snapshot() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    env.snapshot_ok(WHEN, &[]);
    let before = tree(&env.dest);
    let target = env.dir.path().join("restored");
    // Inside a source, but never there.
    let nope = env.src.join("never-existed.txt");
    let o = env.run("restore", &["latest", &s(&nope), &s(&target)]);
    assert_refused(&o, FAILED, &[&s(&nope), "not in this snapshot", &s(&env.src)], "restore of a missing path");
    // Outside every source.
    let o = env.run("restore", &["latest", "/x", &s(&target)]);
    assert_refused(&o, FAILED, &["/x", "not in this snapshot"], "restore /x");
    // The snapshot's own metadata is not a backed-up path.
    let o = env.run("restore", &["latest", "/.hwc-backup/meta.json", &s(&target)]);
    assert_eq!(code(&o), FAILED, "{}", show(&o));
    // A relative path is not a path as it was on the host.
    let o = env.run("restore", &["latest", "a", &s(&target)]);
    assert_refused(&o, FAILED, &["absolute"], "restore of a relative path");
    assert_eq!(tree(&env.dest), before, "a refused restore changed the destination");
    assert!(!target.exists(), "a refused restore created {}", target.display());
}

#[test]
fn a_directory_bind_mounted_onto_itself_is_not_a_mounted_drive() {
    // systemd's ReadWritePaths= bind-mounts the destination onto itself inside the unit's
    // sandbox. An unplugged drive's bare mount point must still be refused there.
    let env = Env::new();
    write(&env.src.join("f"), "f");
    let dest = s(&env.dest);
    let _bind = Mount::with(&["--bind", &dest], &env.dest);
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = true.into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let o = now_with_plan(&env, &plan);
    assert_refused(&o, 1, &["not a mount point"], "bind mount of itself");
    assert_dest_empty(&env, "bind mount of itself");
}

/// Every entry below `root` with its type, size, mode and mtime: equal before and after
/// means nothing was written there.
fn fingerprint(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    tree(root)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(root.join(&p)).unwrap();
            format!("{p} {:o} {} {}.{}", m.mode(), m.size(), m.mtime(), m.mtime_nsec())
        })
        .collect()
}

/// `--host` becomes a directory name under the destination: `/` and `..` in it are refused
/// by every command that takes it, before anything is read or written —
/// `prune --host ../other/h` used to expire another directory's snapshots.
#[test]
fn every_command_refuses_a_host_with_slash_or_dotdot() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    env.snapshot_ok(WHEN, &[]);
    // Another directory's snapshots, which a prune of "../other/h" would reach.
    let other = env.dest.join("other");
    let o = env
        .cmd(&["now", "--source"])
        .arg(&env.src)
        .arg("--dest")
        .arg(&other)
        .args(["--host", "h", "--state-dir"])
        .arg(&env.state)
        .args(["--now", WHEN])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
    let plan = write_plan(&env, "plan.json", &plan_json(&env).to_string());
    let before = fingerprint(&env.dest);
    let dest = s(&env.dest);
    let state = s(&env.state);
    let src = s(&env.src);
    let planp = s(&plan);
    for host in ["../other/h", "a/b", "..", ".", "/etc"] {
        let with_dest = |cmd: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = cmd.iter().map(|x| x.to_string()).collect();
            v.extend(["--dest", &dest, "--state-dir", &state, "--host", host].map(String::from));
            v
        };
        let with_plan = |cmd: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = cmd.iter().map(|x| x.to_string()).collect();
            v.extend(["--config", &planp, "--host", host].map(String::from));
            v
        };
        let cases = [
            with_dest(&["prune"]),
            with_dest(&["prune", "--dry-run", "--now", "2026-01-01T00:00:00Z"]),
            with_dest(&["status"]),
            with_dest(&["restore", "--list"]),
            with_dest(&["restore", "latest", "/x", "/var/tmp/nowhere"]),
            with_dest(&["verify"]),
            with_dest(&["health"]),
            with_dest(&["now", "--source", &src, "--now", WHEN]),
            with_plan(&["now"]),
            with_plan(&["prune"]),
            with_plan(&["status"]),
            with_plan(&["health"]),
            with_plan(&["cloud"]),
            with_plan(&["notify-failure", "--unit", "backup.service"]),
            with_plan(&["pull"]),
        ];
        for args in cases {
            let o = env.cmd(&[]).args(&args).output().unwrap();
            let what = args.join(" ");
            assert_refused(&o, USAGE, &["--host", &format!("{host:?}"), "not a valid host name"], &what);
            assert_eq!(fingerprint(&env.dest), before, "{what}: the destination changed");
        }
    }
}

/// Numbers out of range are usage errors, never a panic or a check quietly turned off.
#[test]
fn numbers_out_of_range_are_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    // 2^34 GiB is 2^64 bytes: it used to wrap to 0, which turned the free-space check off.
    let o = ad_hoc(&env, &s(&env.src), &env.dest, &["--min-free-gb", "17179869184"]);
    assert_refused(&o, USAGE, &["--min-free-gb", "17179869184", "too large"], "now --min-free-gb 2^34");
    assert_dest_empty(&env, "now --min-free-gb 2^34");
    for n in ["0", "257", "100000"] {
        let o = ad_hoc(&env, &s(&env.src), &env.dest, &["--threads", n]);
        assert_refused(&o, USAGE, &["--threads", n, "1..=256"], &format!("now --threads {n}"));
        assert_dest_empty(&env, &format!("now --threads {n}"));
    }
    env.snapshot_ok(WHEN, &[]);
    let before = fingerprint(&env.dest);
    let o = env.run("verify", &["--threads", "100000"]);
    assert_refused(&o, USAGE, &["--threads", "1..=256"], "verify --threads 100000");
    assert_eq!(fingerprint(&env.dest), before);
    // Control: the limits themselves are accepted.
    let o = ad_hoc_at(&env, "2025-01-16T02:00:00+01:00", &s(&env.src), &env.dest, &["--threads", "256"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let o = env.run("verify", &["--threads", "1"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
}

/// A testing clock that does not parse is refused before the destination is created.
#[test]
fn unparsable_now_is_refused_before_anything_is_written() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let fresh = env.dir.path().join("fresh");
    for bad in ["yesterday", "2025-13-01T00:00:00Z", ""] {
        let o = ad_hoc_at(&env, bad, &s(&env.src), &fresh, &[]);
        assert_refused(&o, USAGE, &["--now", "RFC 3339"], &format!("now --now {bad:?}"));
        assert!(!fresh.exists(), "now --now {bad:?} created the destination");
    }
    env.snapshot_ok(WHEN, &[]);
    let before = fingerprint(&env.dest);
    let o = env.run("prune", &["--now", "yesterday"]);
    assert_refused(&o, USAGE, &["--now", "yesterday"], "prune --now yesterday");
    assert_eq!(fingerprint(&env.dest), before);
}

#[test]
fn config_check_of_a_missing_or_unreadable_file() {
    let env = Env::new();
    let missing = env.dir.path().join("no-such-plan.json");
    let o = config_check(&env, &missing);
    assert_refused(&o, USAGE, &[&s(&missing), "No such file"], "config check MISSING");
    // A directory where the file should be (root reads any file, so no permission case).
    let dir = env.dir.path().join("plan-dir.json");
    std::fs::create_dir(&dir).unwrap();
    let o = config_check(&env, &dir);
    assert_refused(&o, USAGE, &[&s(&dir), "Is a directory"], "config check DIR");
    let o = now_with_plan(&env, &missing);
    assert_refused(&o, USAGE, &[&s(&missing), "No such file"], "now --config MISSING");
    assert_dest_empty(&env, "config check MISSING");
}

#[test]
fn zero_max_age_is_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    for zero in ["0s", "0h", "0d0h"] {
        let mut p = plan_json(&env);
        p["health"]["maxAge"] = json!(zero);
        bad_plan(&env, "zero-age.json", &p.to_string(), &["health.maxAge", zero, "zero"]);
    }
}

/// Excludes that match every source would publish an empty snapshot as a `success`.
#[test]
fn excludes_that_match_every_source_are_refused() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    for pattern in ["*", "src", "/**"] {
        let mut p = plan_json(&env);
        p["excludePatterns"] = json!([pattern]);
        bad_plan(&env, "exclude-all.json", &p.to_string(), &["excludePatterns", "every source", &s(&env.src)]);
        let o = ad_hoc(&env, &s(&env.src), &env.dest, &["--exclude", pattern]);
        assert_refused(&o, USAGE, &["excludePatterns", "every source"], &format!("now --exclude {pattern}"));
        assert_dest_empty(&env, &format!("now --exclude {pattern}"));
    }
    // A directory-only pattern: known to match once the source is seen to be a directory,
    // still before anything is written.
    let o = ad_hoc(&env, &s(&env.src), &env.dest, &["--exclude", "src/"]);
    assert_refused(&o, USAGE, &["excludePatterns", "every source"], "now --exclude src/");
    assert_dest_empty(&env, "now --exclude src/");
    let mut p = plan_json(&env);
    p["excludePatterns"] = json!(["src/"]);
    let plan = write_plan(&env, "exclude-dir.json", &p.to_string());
    let o = now_with_plan(&env, &plan);
    assert_refused(&o, USAGE, &["excludePatterns", "every source"], "now --config (src/)");
    assert_dest_empty(&env, "now --config (src/)");
    // Excludes that keep each source but nothing in it: published, never as a `success`.
    let o = ad_hoc(&env, &s(&env.src), &env.dest, &["--exclude", &format!("{}/*", s(&env.src))]);
    assert_refused(&o, 3, &["partial", "the excludes left nothing to back up"], "now --exclude SRC/*");
    // Control: excluding one of two sources is fine.
    let other = env.dir.path().join("other");
    write(&other.join("b"), "b");
    let o = env
        .cmd(&["now", "--source"])
        .arg(&env.src)
        .arg("--source")
        .arg(&other)
        .arg("--dest")
        .arg(&env.dest)
        .args(["--host", HOST, "--state-dir"])
        .arg(&env.state)
        .args(["--now", "2025-01-16T02:00:00+01:00", "--exclude", "src/"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", show(&o));
}

/// A one-off run creates the last component of `--dest` at most, like rsync: a typo in a
/// parent never grows a tree on the root filesystem.
#[test]
fn ad_hoc_dest_creates_only_the_last_component() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let deep = env.dir.path().join("typo/backups/here");
    let o = ad_hoc(&env, &s(&env.src), &deep, &[]);
    assert_refused(&o, USAGE, &["--dest", &s(&deep), "parent directory does not exist"], "now --dest a/b/c");
    assert!(!env.dir.path().join("typo").exists(), "a missing chain of directories was created");
    let one = env.dir.path().join("new-dest");
    let o = ad_hoc(&env, &s(&env.src), &one, &[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(one.join(HOST).join("latest").exists());
}

/// `status` only reports what is there: a wrong `--host`, a missing destination or one that
/// is not mounted although the plan says it must be fail, listing the host directories that
/// exist; and its hints name only options `status` has.
#[test]
fn status_fails_on_a_wrong_host_or_a_missing_destination() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    env.snapshot_ok(WHEN, &[]);
    let status = |args: &[&str]| env.cmd(&["status"]).args(args).output().unwrap();
    let dest = s(&env.dest);
    let state = s(&env.state);
    let o = status(&["--dest", &dest, "--host", "laptop", "--state-dir", &state]);
    assert_refused(&o, FAILED, &["no host directory laptop", &dest, HOST, "--host NAME"], "status --host wrong");
    let gone = env.dir.path().join("unplugged");
    let o = status(&["--dest", &s(&gone), "--host", HOST]);
    assert_refused(&o, FAILED, &[&s(&gone), "not available", "mounted"], "status --dest missing");
    assert!(!gone.exists());
    // A plan that requires a mount point, on a bare directory: the drive is not there.
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = json!(true);
    let plan = write_plan(&env, "mounted.json", &p.to_string());
    let o = env.cmd(&["status", "--config"]).arg(&plan).output().unwrap();
    assert_refused(&o, FAILED, &[&dest, "not a mount point", HOST], "status, unmounted");
    // No plan at the default place: the hint names options status accepts.
    let o = env.cmd(&["status"]).output().unwrap();
    if !Path::new("/etc/hwc-backup/config.json").exists() {
        assert_refused(&o, USAGE, &["--config FILE", "--dest DIR"], "status without a plan");
        assert!(!text(&o).contains("--source"), "status has no --source: {}", show(&o));
    }
    // Control: the right host works.
    let o = status(&["--dest", &dest, "--host", HOST, "--state-dir", &state]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_dest_empty_of_strangers(&env);
}

/// Nothing but the one host directory was created by the status calls above.
fn assert_dest_empty_of_strangers(env: &Env) {
    let names: Vec<String> =
        std::fs::read_dir(&env.dest).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec![HOST.to_string()]);
}
