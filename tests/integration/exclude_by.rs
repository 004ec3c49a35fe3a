//! Exclusions users expect (issue 14, item 6): `--exclude-caches` / `excludeCaches` keeps a
//! directory holding a valid `CACHEDIR.TAG` with the tag file only — a tag whose first 43
//! bytes are anything else, or that is a symlink to a valid tag, excludes nothing;
//! `--exclude-if-present NAME` / `excludeIfPresent` keeps a directory holding NAME with NAME
//! only; `--exclude-larger-than SIZE` / `excludeLargerThan` leaves out a (sparse) file over
//! the limit and keeps one at it. Each is counted in the run report and the snapshot's
//! meta.json, and said in the summary; bad values are bad usage (exit 2). The pulled-host
//! case is in `pull.rs` (it needs that module's sshd).

use crate::util::*;

pub const SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// Caches tagged right and wrong, a marked directory, a large sparse file and plain files.
pub fn tagged_tree(src: &std::path::Path) {
    write(&src.join("cache-ok/CACHEDIR.TAG"), format!("{SIGNATURE}\n# This file is a cache directory tag.\n"));
    write(&src.join("cache-ok/blob"), "cached\n");
    write(&src.join("cache-ok/deep/more"), "cached too\n");
    write(&src.join("cache-bad/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc56\n");
    write(&src.join("cache-bad/blob"), "kept: the signature is wrong\n");
    write(&src.join("cache-short/CACHEDIR.TAG"), &SIGNATURE[..42]);
    write(&src.join("cache-short/blob"), "kept: the tag is one byte short\n");
    write(&src.join("cache-link/blob"), "kept: the tag is a symlink\n");
    std::os::unix::fs::symlink(src.join("cache-ok/CACHEDIR.TAG"), src.join("cache-link/CACHEDIR.TAG")).unwrap();
    write(&src.join("marked/.nobackup"), "");
    write(&src.join("marked/secret"), "left out\n");
    write(&src.join("marked/sub/deeper"), "left out\n");
    write(&src.join("plain/keep.txt"), "kept\n");
    write(&src.join("plain/.nobackup-not"), "a different name\n");
    write(&src.join("at-limit"), vec![b'x'; 4096]);
    sh(&format!("truncate -s 5G '{}'", src.join("plain/huge.img").display()));
}

fn meta_counts(env: &Env) -> serde_json::Value {
    let meta = env.host_dir().join("latest/.hwc-backup/meta.json");
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(meta).unwrap()).unwrap()["counts"].clone()
}

/// Checks a snapshot of `tagged_tree` taken with caches, `.nobackup` and `4K`.
pub fn assert_left_out(snap: &std::path::Path, counts: &serde_json::Value) {
    let mut t = tree(snap);
    t.retain(|p| !p.starts_with(".hwc-backup"));
    let expected = [
        "at-limit",
        "cache-bad",
        "cache-bad/CACHEDIR.TAG",
        "cache-bad/blob",
        "cache-link",
        "cache-link/CACHEDIR.TAG",
        "cache-link/blob",
        "cache-ok",
        "cache-ok/CACHEDIR.TAG",
        "cache-short",
        "cache-short/CACHEDIR.TAG",
        "cache-short/blob",
        "marked",
        "marked/.nobackup",
        "plain",
        "plain/.nobackup-not",
        "plain/keep.txt",
    ];
    assert_eq!(t, expected, "counts: {counts}");
    assert_eq!(counts["excludedCaches"], 1, "{counts}");
    assert_eq!(counts["excludedIfPresent"], 1, "{counts}");
    assert_eq!(counts["excludedLarge"], 1, "{counts}");
}

#[test]
fn caches_markers_and_large_files_are_left_out_and_counted() {
    let env = Env::new();
    tagged_tree(&env.src);
    // Without the options everything is there (the sparse file too, as a hole).
    let report: serde_json::Value =
        serde_json::from_slice(&env.snapshot_ok("2025-01-14T02:00:00+01:00", &["--json"]).stdout).unwrap();
    assert!(env.in_snapshot("daily/2025-01-14_02-00-00").join("cache-ok/blob").exists());
    assert!(env.in_snapshot("daily/2025-01-14_02-00-00").join("plain/huge.img").exists());
    assert_eq!(report["counts"]["excludedCaches"], 0, "{report}");
    let flags = ["--exclude-caches", "--exclude-if-present", ".nobackup", "--exclude-larger-than", "4K"];
    let out = env.snapshot_ok("2025-01-15T02:00:00+01:00", &flags);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("left out: 1 cache directories (CACHEDIR.TAG), 1 directories with a marker file, 1 files over the size limit"),
        "{text}"
    );
    let snap = env.in_snapshot("daily/2025-01-15_02-00-00");
    assert_left_out(&snap, &meta_counts(&env));
    // The tag file is kept as it was.
    assert_eq!(
        std::fs::read_to_string(snap.join("cache-ok/CACHEDIR.TAG")).unwrap(),
        std::fs::read_to_string(env.src.join("cache-ok/CACHEDIR.TAG")).unwrap()
    );
    // The JSON report carries the same counts.
    let mut json_flags = flags.to_vec();
    json_flags.push("--json");
    let out = env.snapshot_ok("2025-01-16T02:00:00+01:00", &json_flags);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_left_out(&env.in_snapshot("daily/2025-01-16_02-00-00"), &report["counts"]);
    // A verify of such a snapshot is clean.
    let out = env.run("verify", &[]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn the_plan_fields_do_the_same_and_bad_values_are_refused() {
    let env = Env::new();
    tagged_tree(&env.src);
    let mut plan = plan_json(&env);
    plan["excludeCaches"] = serde_json::json!(true);
    plan["excludeIfPresent"] = serde_json::json!([".nobackup"]);
    plan["excludeLargerThan"] = serde_json::json!("4KiB");
    let file = write_plan(&env, "plan.json", &plan.to_string());
    let out =
        env.cmd(&["now", "--config", &s(&file), "--now", "2025-01-15T02:00:00+01:00", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_left_out(&env.in_snapshot("daily/2025-01-15_02-00-00"), &report["counts"]);
    // Bad values: exit 2 naming the field or the option, nothing written.
    for (field, value) in [
        ("excludeLargerThan", serde_json::json!("4 gigs")),
        ("excludeIfPresent", serde_json::json!(["a/b"])),
        ("excludeIfPresent", serde_json::json!([".."])),
    ] {
        let mut bad = plan_json(&env);
        bad[field] = value;
        let file = write_plan(&env, "bad.json", &bad.to_string());
        let out = env.cmd(&["config", "check", &s(&file)]).output().unwrap();
        assert_eq!(code(&out), 2, "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(field), "{}", show(&out));
    }
    let before = env.snapshot_ids();
    for (flag, value) in [("--exclude-larger-than", "1.5G"), ("--exclude-if-present", "x/y")] {
        let out = env.snapshot_at("2025-01-17T02:00:00+01:00", &[flag, value]);
        assert_eq!(code(&out), 2, "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag), "{}", show(&out));
    }
    // With a plan, the flags are refused rather than ignored.
    let out = env.cmd(&["now", "--config", &s(&file), "--exclude-caches"]).output().unwrap();
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert_eq!(env.snapshot_ids(), before);
}

#[test]
fn a_dry_run_leaves_out_what_the_run_leaves_out() {
    let env = Env::new();
    tagged_tree(&env.src);
    let flags = ["--exclude-caches", "--exclude-if-present", ".nobackup", "--exclude-larger-than", "4K"];
    let src = env.src.to_str().unwrap().to_string();
    let target = env.target_args();
    let mut args = vec!["--dry-run", "--json", "--source", &src];
    args.extend(target.iter().map(String::as_str));
    args.extend(flags);
    let o = env.cmd(&["now"]).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let dry: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let out = env.snapshot_ok("2025-01-15T02:00:00+01:00", &[&flags[..], &["--json"]].concat());
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_left_out(&env.in_snapshot("daily/2025-01-15_02-00-00"), &run["counts"]);
    assert_eq!(dry["filesToCopy"], run["counts"]["copied"], "dry run {dry}\nrun {run}");
    assert_eq!(dry["bytesToCopy"], run["counts"]["bytesCopied"], "dry run {dry}\nrun {run}");
    // The dry run is the run's own walk: what it leaves out is counted as the run counts it.
    for key in ["excluded", "excludedCaches", "excludedIfPresent", "excludedLarge", "directories", "socketsSkipped"] {
        assert_eq!(dry[key], run["counts"][key], "{key}: dry run {dry}\nrun {run}");
    }
    // Nothing of the left-out entries is listed as something to copy.
    let listed = dry["changes"].to_string();
    for gone in ["cache-ok/blob", "marked/secret", "huge.img"] {
        assert!(!listed.contains(gone), "{gone} in {listed}");
    }
}
