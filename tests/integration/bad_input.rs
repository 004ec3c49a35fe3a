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
    let _fs = Tmpfs::mount(&env.dest, "size=16m");
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
    let _fs = Tmpfs::mount(&env.dest, "size=2m");
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
    let _fs = Tmpfs::mount(&env.dest, "size=8m");
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

/// Unmounts a bind mount when dropped.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_directory_bind_mounted_onto_itself_is_not_a_mounted_drive() {
    // systemd's ReadWritePaths= bind-mounts the destination onto itself inside the unit's
    // sandbox. An unplugged drive's bare mount point must still be refused there.
    let env = Env::new();
    write(&env.src.join("f"), "f");
    let _bind = {
        sh(&format!("mount --bind '{0}' '{0}'", env.dest.display()));
        BindMount(env.dest.clone())
    };
    let mut p = plan_json(&env);
    p["destination"]["requireMountPoint"] = true.into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let o = now_with_plan(&env, &plan);
    assert_refused(&o, 1, &["not a mount point"], "bind mount of itself");
    assert_dest_empty(&env, "bind mount of itself");
}
