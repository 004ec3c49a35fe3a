//! Block sharing on btrfs and XFS destinations (loop-mounted images made here, unmounted in
//! a guard): a changed large file is written as a `FICLONE` of its previous copy plus only the
//! changed blocks, so a 1-byte append or a byte changed in the middle of a 64 MiB file grows
//! the used space by less than 1 MiB (statvfs), with the content, the manifest and `verify`
//! right. On ext4 the plain copy is used. A symlink planted as the previous copy or as the
//! chunk sidecar never leads outside; a garbled sidecar, or one whose chunk hashes do not make
//! its file hash, is refused. What is not guaranteed is shown too: a record forged whole, or a
//! previous copy changed with its size and mtime put back, gives a new file as wrong as that
//! copy (as a hard link to it would be), which `verify` then reports.
//! A pulled host's changed large file is written into a clone of its previous copy too.

use std::path::{Path, PathBuf};

use crate::util::*;

const MIB: u64 = 1 << 20;

/// A loop-mounted filesystem image on the test's destination, unmounted on drop (also when
/// the test panics). Declare it after the `Env`, so it is dropped first.
struct Mounted {
    fs: Mount,
}

impl Mounted {
    /// `mkfs` (with `args`) on a sparse image of `mib` MiB in the scratch area, mounted on
    /// `env.dest`.
    fn new(env: &Env, mkfs: &str, args: &[&str], mib: u64) -> Mounted {
        let image = env.dir.path().join(format!("{mkfs}.img"));
        Mounted { fs: Mount::image(&image, mkfs, args, mib, &env.dest) }
    }

    fn xfs(env: &Env) -> Mounted {
        Mounted::new(env, "mkfs.xfs", &["-q", "-f", "-m", "reflink=1"], 400)
    }

    fn btrfs(env: &Env) -> Mounted {
        Mounted::new(env, "mkfs.btrfs", &["-q", "-f"], 400)
    }

    fn ext4(env: &Env) -> Mounted {
        Mounted::new(env, "mkfs.ext4", &["-q", "-F"], 400)
    }

    /// Used bytes of the filesystem (statvfs: blocks minus free blocks), after a sync.
    fn used(&self) -> u64 {
        let out = sh(&format!("sync -f '{0}' && stat -f -c '%b %f %S' '{0}'", self.fs.at.display()));
        let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0] - v[1]) * v[2]
    }
}

/// `len` bytes that do not compress or deduplicate.
fn random(len: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ len;
    (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn meta(env: &Env, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(env.host_dir().join(id).join(".hwc-backup/meta.json")).unwrap()).unwrap()
}

fn counts(env: &Env, id: &str, what: &str) -> u64 {
    meta(env, id)["counts"][what].as_u64().unwrap_or_else(|| panic!("no counts.{what}"))
}

/// The manifest's hash of the source's `big` in snapshot `id`.
fn manifest_hash(env: &Env, id: &str) -> String {
    let m = std::fs::read_to_string(env.host_dir().join(id).join(".hwc-backup/manifest.b3")).unwrap();
    let want = format!("{}/big", env.src.strip_prefix("/").unwrap().display());
    let line = m.lines().find(|l| l.ends_with(&want)).unwrap_or_else(|| panic!("no {want} in {m}"));
    line[..64].to_string()
}

fn verify_clean(env: &Env) {
    let o = env.run("verify", &["--all"]);
    assert!(o.status.success(), "verify: {}", show(&o));
}

/// Snapshot `when`, then checks the newest copy of `big` and the manifest against the source.
fn snapshot_and_check(env: &Env, when: &str) -> String {
    // The hard-link store's reflinks (on btrfs, `auto` would make subvolumes: `btrfs_store.rs`).
    env.snapshot_ok(when, &["--store", "hardlink"]);
    let id = env.snapshot_ids().pop().unwrap();
    let src = std::fs::read(env.src.join("big")).unwrap();
    let copy = std::fs::read(env.in_snapshot(&id).join("big")).unwrap();
    assert!(copy == src, "{id}: the copy of big differs from the source");
    assert_eq!(manifest_hash(env, &id), blake3::hash(&src).to_hex().as_str(), "{id}: manifest");
    id
}

fn append(p: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(p).unwrap().write_all(bytes).unwrap();
}

fn poke(p: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
    // A new mtime even within the filesystem's timestamp granularity.
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    f.set_modified(t).unwrap();
}

/// A 1-byte append, then one byte changed in the middle: each costs < 1 MiB and is reflinked.
fn appends_and_middle_changes_cost_blocks(env: &Env, fs: &Mounted) {
    std::fs::write(env.src.join("big"), random(64 * MIB)).unwrap();
    std::fs::write(env.src.join("small"), b"small\n").unwrap();
    let first = snapshot_and_check(env, "2026-01-01T10:00:00Z");
    assert_eq!(counts(env, &first, "reflinked"), 0);
    let sidecar = std::fs::read_to_string(env.host_dir().join(&first).join(".hwc-backup/chunks.v1")).unwrap();
    assert_eq!(sidecar.lines().count(), 2, "a header and one record (big): {sidecar}");

    let before = fs.used();
    append(&env.src.join("big"), b"!");
    let second = snapshot_and_check(env, "2026-01-02T10:00:00Z");
    let grown = fs.used().saturating_sub(before);
    assert_eq!(counts(env, &second, "reflinked"), 1);
    assert!(counts(env, &second, "bytesCopied") < MIB, "bytes written: {}", counts(env, &second, "bytesCopied"));
    assert!(grown < MIB, "a 1-byte append to 64 MiB grew the used space by {grown} bytes");

    let before = fs.used();
    poke(&env.src.join("big"), 30 * MIB + 12345);
    let third = snapshot_and_check(env, "2026-01-03T10:00:00Z");
    let grown = fs.used().saturating_sub(before);
    assert_eq!(counts(env, &third, "reflinked"), 1);
    assert!(grown < MIB, "one byte changed in the middle grew the used space by {grown} bytes");
    // The older copies are untouched by the writes into the clones.
    let first_copy = std::fs::read(env.in_snapshot(&first).join("big")).unwrap();
    assert_eq!(first_copy.len() as u64, 64 * MIB);
    assert_eq!(manifest_hash(env, &first), blake3::hash(&first_copy).to_hex().as_str());
    verify_clean(env);
    // `du` cannot tell shared extents apart, and says so.
    let du: serde_json::Value = serde_json::from_slice(&env.run("du", &["--json"]).stdout).unwrap();
    assert_eq!(du["reflinked"], 2, "{du}");
    let text = String::from_utf8(env.run("du", &[]).stdout).unwrap();
    assert!(text.contains("2 files share blocks with an older copy") && text.contains("upper bounds"), "{text}");
}

#[test]
fn on_xfs_a_changed_large_file_costs_only_its_changed_blocks() {
    let env = Env::new();
    let fs = Mounted::xfs(&env);
    appends_and_middle_changes_cost_blocks(&env, &fs);
}

#[test]
fn on_btrfs_a_changed_large_file_costs_only_its_changed_blocks() {
    let env = Env::new();
    let fs = Mounted::btrfs(&env);
    appends_and_middle_changes_cost_blocks(&env, &fs);
}

#[test]
fn on_ext4_a_changed_large_file_is_copied_plainly() {
    let env = Env::new();
    let fs = Mounted::ext4(&env);
    std::fs::write(env.src.join("big"), random(16 * MIB)).unwrap();
    snapshot_and_check(&env, "2026-01-01T10:00:00Z");
    let before = fs.used();
    append(&env.src.join("big"), b"!");
    let second = snapshot_and_check(&env, "2026-01-02T10:00:00Z");
    assert_eq!(counts(&env, &second, "reflinked"), 0);
    assert_eq!(counts(&env, &second, "bytesCopied"), 16 * MIB + 1);
    assert!(fs.used() - before >= 16 * MIB, "a plain copy takes the whole file's space");
    verify_clean(&env);
}

/// The previous snapshot's `.hwc-backup/chunks.v1`.
fn sidecar_of(env: &Env, id: &str) -> PathBuf {
    env.host_dir().join(id).join(".hwc-backup/chunks.v1")
}

#[test]
fn planted_symlinks_as_previous_copy_or_sidecar_never_lead_outside() {
    let env = Env::new();
    let _fs = Mounted::btrfs(&env);
    let victim = env.dir.path().join("victim");
    let victim_content = random(4 * MIB);
    std::fs::write(&victim, &victim_content).unwrap();
    std::fs::write(env.src.join("big"), random(8 * MIB)).unwrap();
    std::fs::write(env.src.join("other"), random(3 * MIB + 5)).unwrap();
    let first = snapshot_and_check(&env, "2026-01-01T10:00:00Z");

    // The previous copy of `big` and the sidecar become symlinks to the victim outside.
    let prev_copy = env.in_snapshot(&first).join("big");
    std::fs::remove_file(&prev_copy).unwrap();
    std::os::unix::fs::symlink(&victim, &prev_copy).unwrap();
    std::fs::remove_file(sidecar_of(&env, &first)).unwrap();
    std::os::unix::fs::symlink(&victim, sidecar_of(&env, &first)).unwrap();
    append(&env.src.join("big"), b"!");
    append(&env.src.join("other"), b"!");
    let second = snapshot_and_check(&env, "2026-01-02T10:00:00Z");
    let other = std::fs::read(env.in_snapshot(&second).join("other")).unwrap();
    assert!(other == std::fs::read(env.src.join("other")).unwrap(), "other is right without its record");
    assert!(std::fs::read(&victim).unwrap() == victim_content, "the victim is unchanged");
    // `big` was copied plainly (its previous copy is a symlink); `other` was still cloned
    // and compared, the sidecar being refused.
    assert_eq!(counts(&env, &second, "reflinked"), 1);
    let o = env.run("verify", &[&second]);
    assert!(o.status.success(), "verify {second}: {}", show(&o));
}

#[test]
fn a_garbled_or_inconsistent_sidecar_is_refused() {
    let env = Env::new();
    let _fs = Mounted::xfs(&env);
    std::fs::write(env.src.join("big"), random(8 * MIB)).unwrap();
    let mut when = 1;
    let mut next = |env: &Env| {
        when += 1;
        snapshot_and_check(env, &format!("2026-01-{when:02}T10:00:00Z"))
    };
    let mut prev = next(&env);
    for garble in ["flip", "forge", "truncate"] {
        let p = sidecar_of(&env, &prev);
        let text = std::fs::read_to_string(&p).unwrap();
        let (header, record) = text.split_once('\n').unwrap();
        let record = record.strip_suffix('\n').unwrap();
        let fields: Vec<&str> = record.splitn(6, ' ').collect();
        let new_record = match garble {
            // One hex digit of a chunk hash changed: the line's check fails.
            "flip" => {
                let mut r = record.to_string().into_bytes();
                let at = record.find("  ").unwrap() - 3;
                r[at] = if r[at] == b'0' { b'1' } else { b'0' };
                format!("{}\n", String::from_utf8(r).unwrap())
            }
            // The chunk hashes of the content about to be written, with a correct line check:
            // believed, they would leave the old bytes in place; they do not merge into the
            // record's file hash, so the record is refused.
            "forge" => {
                use blake3::hazmat::HasherExt;
                let mut new = std::fs::read(env.src.join("big")).unwrap();
                new[5 * MIB as usize] ^= 0x5a; // the change `poke` is about to make
                let cv = |(i, c): (usize, &[u8])| {
                    let mut h = blake3::Hasher::new();
                    h.set_input_offset(i as u64 * MIB);
                    h.update(c);
                    blake3::Hash::from_bytes(h.finalize_non_root()).to_hex().to_string()
                };
                let chunks: String = new.chunks(MIB as usize).enumerate().map(cv).collect();
                let (_, path) = record.split_once("  ").unwrap();
                let body = format!("{} {} {} {} {chunks}  {path}", fields[1], fields[2], fields[3], fields[4]);
                format!("{} {body}\n", &blake3::hash(body.as_bytes()).to_hex()[..16])
            }
            _ => format!("{}\n", &record[..record.len() / 2]),
        };
        std::fs::write(&p, format!("{header}\n{new_record}")).unwrap();
        poke(&env.src.join("big"), 5 * MIB);
        prev = next(&env);
        assert_eq!(counts(&env, &prev, "reflinked"), 1, "{garble}: still cloned, compared block by block");
        assert!(counts(&env, &prev, "bytesCopied") < MIB, "{garble}: only the changed block written");
    }
    verify_clean(&env);
}

/// A forged chunk record for the content about to be written, every check of it consistent
/// (line check and file hash: they are unkeyed), with `f(content)`.
fn forge_record(env: &Env, id: &str, f: impl Fn(&mut Vec<u8>)) {
    use blake3::hazmat::HasherExt;
    let p = sidecar_of(env, id);
    let text = std::fs::read_to_string(&p).unwrap();
    let (header, record) = text.split_once('\n').unwrap();
    let fields: Vec<&str> = record.trim_end().splitn(6, ' ').collect();
    let mut new = std::fs::read(env.src.join("big")).unwrap();
    f(&mut new);
    let cv = |(i, c): (usize, &[u8])| {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(i as u64 * MIB);
        h.update(c);
        blake3::Hash::from_bytes(h.finalize_non_root()).to_hex().to_string()
    };
    let chunks: String = new.chunks(MIB as usize).enumerate().map(cv).collect();
    let (_, path) = record.trim_end().split_once("  ").unwrap();
    let body = format!("{} {} {} {} {chunks}  {path}", fields[1], fields[2], fields[3], blake3::hash(&new).to_hex());
    std::fs::write(&p, format!("{header}\n{} {body}\n", &blake3::hash(body.as_bytes()).to_hex()[..16])).unwrap();
}

/// The guarantee is "as trustworthy as the previous copy", not more: someone who writes the
/// disk and forges a whole record, or changes the previous copy and puts its size and mtime
/// back, gets old bytes into the new file under the source's manifest hash (a hard link to
/// that copy would carry the same change). Nothing reports it at write time; `verify` does.
#[test]
fn a_forged_record_or_a_tampered_previous_copy_is_caught_by_verify_not_at_write() {
    for (what, at) in [("a forged record", 5 * MIB), ("a tampered previous copy", 6 * MIB)] {
        // Each on a clean history: a verify that finds a damaged copy keeps it from being cloned.
        let env = Env::new();
        let _fs = Mounted::xfs(&env);
        std::fs::write(env.src.join("big"), random(8 * MIB)).unwrap();
        let prev = snapshot_and_check(&env, "2026-01-01T10:00:00Z");
        if what == "a forged record" {
            forge_record(&env, &prev, |c| c[at as usize] ^= 0x5a); // the change `poke` makes
        } else {
            let copy = env.in_snapshot(&prev).join("big");
            let mtime = std::fs::metadata(&copy).unwrap().modified().unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"TAMPERED", 2 * MIB).unwrap();
            f.set_modified(mtime).unwrap();
        }
        poke(&env.src.join("big"), at);
        env.snapshot_ok("2026-01-02T10:00:00Z", &["--store", "hardlink"]);
        let id = env.snapshot_ids().pop().unwrap();
        let src = std::fs::read(env.src.join("big")).unwrap();
        let copy = std::fs::read(env.in_snapshot(&id).join("big")).unwrap();
        assert!(copy != src, "{what}: the new copy keeps the previous copy's bytes");
        assert_eq!(manifest_hash(&env, &id), blake3::hash(&src).to_hex().as_str(), "{what}: hash of the source");
        let o = env.run("verify", &[&id]);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stdout).contains("big"), "{what}: {}", show(&o));
    }
}

#[test]
fn a_pulled_change_is_written_into_a_clone_of_the_previous_copy() {
    use crate::pull::{Sshd, CLIENT};
    let env = Env::new();
    let fs = Mounted::btrfs(&env);
    let sshd = Sshd::start(env.dir.path(), &env.src);
    std::fs::write(env.src.join("big"), random(32 * MIB)).unwrap();
    sshd.pull_ok(&env, "2026-01-01T10:00:00Z", &[]);
    let check = |id: &str| {
        let copy = env.dest.join(CLIENT).join(id).join(env.src.strip_prefix("/").unwrap()).join("big");
        assert!(std::fs::read(copy).unwrap() == std::fs::read(env.src.join("big")).unwrap(), "{id}: big differs");
    };
    for (day, change) in [(2, "append"), (3, "middle")] {
        let before = fs.used();
        match change {
            "append" => append(&env.src.join("big"), b"!"),
            _ => poke(&env.src.join("big"), 20 * MIB + 7),
        }
        let report = sshd.pull_ok(&env, &format!("2026-01-{day:02}T10:00:00Z"), &[]);
        let grown = fs.used().saturating_sub(before);
        assert_eq!(report["counts"]["reflinked"], 1, "{change}: {report}");
        assert!(grown < MIB, "{change}: a pulled change grew the used space by {grown} bytes");
        check(&format!("daily/2026-01-{day:02}_10-00-00"));
    }
    let o = env
        .cmd(&["verify", "--all", "--dest", &s(&env.dest), "--host", CLIENT, "--state-dir", &s(&env.state)])
        .output()
        .unwrap();
    assert!(o.status.success(), "verify: {}", show(&o));
}
