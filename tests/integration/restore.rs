//! Restore: round trips of a directory and a single file from an older snapshot, refusal to
//! overwrite without `--force`, `--dry-run` writing nothing, and `--list`.

use crate::util::*;

fn two_snapshots(env: &Env) {
    write(&env.src.join("home/u/.config/app.toml"), "v1\n");
    write(&env.src.join("home/u/.config/sub/deep"), "deep v1\n");
    write(&env.src.join("home/u/notes.txt"), "notes v1\n");
    sh(&format!(
        "setfattr -n user.k -v v '{}' && ln -s app.toml '{}'",
        env.src.join("home/u/.config/app.toml").display(),
        env.src.join("home/u/.config/link").display()
    ));
    env.snapshot_ok("2025-01-15T02:00:00+01:00", &[]);
    write(&env.src.join("home/u/.config/app.toml"), "v2\n");
    write(&env.src.join("home/u/notes.txt"), "notes v2\n");
    env.snapshot_ok("2025-01-16T02:00:00+01:00", &[]);
}

fn host_path(env: &Env, rel: &str) -> String {
    s(&env.src.join(rel))
}

#[test]
fn restores_a_directory_from_an_older_snapshot() {
    require("rsync");
    let env = Env::new();
    two_snapshots(&env);
    let target = env.dir.path().join("restored-config");
    let out = env.run("restore", &["daily/2025-01-15_02-00-00", &host_path(&env, "home/u/.config"), &s(&target)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(target.join("app.toml")).unwrap(), "v1\n");
    assert_eq!(std::fs::read_to_string(target.join("sub/deep")).unwrap(), "deep v1\n");
    assert_eq!(std::fs::read_link(target.join("link")).unwrap().to_str(), Some("app.toml"));
    // Metadata too: the restored tree equals the snapshot's copy per rsync -aHAX.
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00").join("home/u/.config");
    assert_eq!(
        sh(&format!("rsync -aHAXn --itemize-changes --delete '{}/' '{}/'", snap.display(), target.display())),
        ""
    );
}

#[test]
fn restores_a_single_file_by_unique_prefix_and_latest() {
    let env = Env::new();
    two_snapshots(&env);
    let t1 = env.dir.path().join("old-notes");
    let out = env.run("restore", &["2025-01-15", &host_path(&env, "home/u/notes.txt"), &s(&t1)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&t1).unwrap(), "notes v1\n");
    let t2 = env.dir.path().join("new-notes");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/notes.txt"), &s(&t2)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&t2).unwrap(), "notes v2\n");
}

#[test]
fn refuses_to_overwrite_without_force() {
    let env = Env::new();
    two_snapshots(&env);
    let target = env.dir.path().join("existing.txt");
    write(&target, "precious\n");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/notes.txt"), &s(&target)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n", "nothing may be overwritten");
    // Into an existing directory: the conflict deep inside is found before anything is written.
    let dir = env.dir.path().join("cfg");
    write(&dir.join("sub/deep"), "mine\n");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/.config"), &s(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(!dir.join("app.toml").exists(), "nothing is written when any conflict exists");
    // With --force it replaces.
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/notes.txt"), &s(&target), "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "notes v2\n");
}

#[test]
fn dry_run_writes_nothing_and_lists_what_it_would() {
    let env = Env::new();
    two_snapshots(&env);
    let target = env.dir.path().join("dry");
    let out = env.run("restore", &["latest", &host_path(&env, "home/u/.config"), &s(&target), "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app.toml") && stdout.contains("would write"), "{stdout}");
    assert!(!target.exists(), "--dry-run must not create anything");
}

#[test]
fn list_shows_every_snapshot_newest_first() {
    let env = Env::new();
    two_snapshots(&env);
    let out = env.run("restore", &["--list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("daily/2025-01-16_02-00-00") && lines[1].starts_with("daily/2025-01-15_02-00-00"),
        "{stdout}"
    );
    assert!(lines[0].contains("+01:00"), "times are shown with their offset: {stdout}");
}
