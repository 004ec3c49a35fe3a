//! Hooks: a failing pre-hook produces no snapshot and a failed run, and the post-hook still
//! runs (it may have to restart what the pre-hook stopped) and sees the state and the
//! snapshot path; the pre-hook's output is kept in the snapshot's `.hwc-backup/run.log`.

use std::path::{Path, PathBuf};

use crate::util::*;

/// An executable shell script.
fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    sh(&format!("chmod 755 '{}'", p.display()));
    p
}

fn hooked_plan(env: &Env, pre: &Path, post: &Path) -> PathBuf {
    let mut p = plan_json(env);
    p["hooks"] = serde_json::json!({ "preBackup": s(pre), "postBackup": s(post) });
    write_plan(env, "plan.json", &p.to_string())
}

fn post_hook_env(env: &Env) -> String {
    std::fs::read_to_string(env.dir.path().join("post.env")).expect("the post-hook ran")
}

fn post_script(env: &Env) -> PathBuf {
    let out = env.dir.path().join("post.env");
    script(
        env,
        "post",
        &format!(
            "echo \"state=$HWC_BACKUP_STATE\" > '{o}'\necho \"snapshot=$HWC_BACKUP_SNAPSHOT\" >> '{o}'\n\
             echo \"host=$HWC_BACKUP_HOST\" >> '{o}'\necho post-hook says hi",
            o = out.display()
        ),
    )
}

#[test]
fn failing_pre_hook_means_no_snapshot_and_the_post_hook_sees_failed() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let pre = script(&env, "pre", "echo stopping the database failed >&2\nexit 3");
    let plan = hooked_plan(&env, &pre, &post_script(&env));
    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["state"], "failed");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("preBackup hook") && err.contains("stopping the database failed"), "{err}");
    assert!(env.snapshot_ids().is_empty(), "no snapshot: {:?}", env.snapshot_ids());
    assert!(!env.host_dir().join("latest").exists());
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state.join(HOST).join("last-run.json")).unwrap()).unwrap();
    assert_eq!(last["state"], "failed");
    let post = post_hook_env(&env);
    assert!(
        post.contains("state=failed\n") && post.contains("snapshot=\n") && post.contains("host=testhost"),
        "{post}"
    );
}

#[test]
fn post_hook_sees_success_and_the_snapshot_and_pre_hook_output_is_kept() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    let marker = env.dir.path().join("pre.ran");
    let pre = script(&env, "pre", &format!("echo pre-hook flushed caches\ntouch '{}'", marker.display()));
    let plan = hooked_plan(&env, &pre, &post_script(&env));
    let out = env.cmd(&["now", "--json", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(marker.exists());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snap = r["snapshotPath"].as_str().unwrap();
    let post = post_hook_env(&env);
    assert!(post.contains("state=success\n"), "{post}");
    assert!(post.contains(&format!("snapshot={snap}\n")), "{post}");
    assert!(Path::new(snap).join("a").exists() || env.in_snapshot(r["snapshot"].as_str().unwrap()).join("a").exists());
    let log = std::fs::read_to_string(Path::new(snap).join(".hwc-backup/run.log")).unwrap();
    assert!(log.contains("== preBackup hook") && log.contains("pre-hook flushed caches"), "{log}");
    // The post-hook runs after the snapshot is sealed; its output is in the run report.
    assert!(r["postBackupOutput"].as_str().unwrap_or("").contains("post-hook says hi"), "{r}");
    // Verify still passes: run.log lives in the metadata directory, outside the manifest's tree.
    let v = env.run("verify", &[]);
    assert_eq!(code(&v), 0, "{}", show(&v));
}
