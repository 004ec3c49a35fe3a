//! `ExcludeSet` must keep exactly what `rsync --exclude` keeps.
//!
//! Builds a tree in a temporary directory, then for each pattern list asks
//! real rsync what it would copy, with
//! `rsync -a --relative --dry-run --out-format=%n --exclude=P… /abs/src DEST/`
//! (the transfer root is `/`, so patterns see absolute paths, as in a
//! snapshot), and compares those absolute paths with the ones our own walk
//! keeps: a plain recursive walk that asks `ExcludeSet::is_excluded` about
//! every entry and does not descend into excluded directories.
//!
//! Besides hand-written lists covering every rule, deterministic
//! pseudo-random cases are generated, half from wildcard-heavy pieces and half
//! by mutating real paths of the tree (set `HWC_EXCLUDE_FUZZ_CASES` to run
//! more than the default 200).
//!
//! rsync is required: without it the test fails rather than passing
//! vacuously.

#![allow(clippy::disallowed_methods)] // scratch trees are built by path
#![cfg(unix)]

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use hwc_backup_engine::source::exclude::ExcludeSet;

/// Entries of the generated tree, relative to the source root. A trailing
/// `/` makes a directory, `name -> target` a symlink, anything else an empty
/// file; parents are created as needed.
const TREE: &[&str] = &[
    // The seed's default excludes, at several depths, plus near misses.
    "home/alice/.cache/fontconfig/x.cache",
    "home/alice/.cache-keep",
    "home/alice/proj/.cache/",
    "home/alice/a.tmp",
    "home/alice/.tmp",
    "home/alice/a.tmpx",
    "home/alice/dir.tmp/inside",
    "home/alice/.local/share/Trash/files/old.txt",
    "home/alice/.local/share/Trash/info/old.txt.trashinfo",
    "home/alice/.local/share/keyrings/k",
    "home/alice/x.local/share/Trash/kept",
    "home/alice/Trash",
    "home/alice/node_modules/left-pad/index.js",
    "home/alice/proj/node_modules/a/node_modules/b/index.js",
    "home/alice/proj/node_modules_old/keep.js",
    "home/alice/proj/src/__pycache__/m.cpython-312.pyc",
    "home/alice/proj/src/pkg/__pycache__/",
    "home/alice/proj/src/main.rs",
    // Same names as files and as directories, and a symlink to a directory:
    // `build/` must only take the real directories.
    "home/alice/proj/build/out.o",
    "home/alice/proj/src/build",
    "home/alice/proj/other/build -> ../build",
    "home/alice/proj/skipfile",
    "home/alice/proj/skipfile2/",
    "home/alice/proj/dir",
    "home/alice/proj/sub/dir/f",
    // `**` material.
    "home/alice/proj/logs/a.log",
    "home/alice/proj/logs/b.txt",
    "home/alice/proj/logs/deep/c.log",
    "home/alice/proj/c.log",
    "home/alice/logs",
    "srv/app/logs/today.log",
    "srv/abz",
    "srv/a",
    "srv/abc/xyz/done",
    "srv/abc/xyz/donez",
    "srv/ba/cz",
    // Anchoring material.
    "home/alice/skip/inner",
    "home/alice/skipped",
    "home/bob/home/alice/skip/x",
    "home/bob/notes.txt",
    "home/alice/notes.txt",
    "home/alice/- notes.txt",
    // Odd names: spaces, brackets, wildcard characters, backslashes, a
    // newline, `!`, UTF-8 and Latin-1 (non-UTF-8) bytes.
    "home/alice/with space/inner file.txt",
    "home/alice/br[ack]et",
    "home/alice/[x]",
    "home/alice/]",
    "home/alice/q?mark",
    "home/alice/star*",
    "home/alice/back\\slash",
    "home/alice/backslash1",
    "home/alice/new\nline",
    "home/alice/!bang",
    "home/alice/+plus",
    "home/alice/!",
    "home/alice/café",
    "home/alice/a.txt",
    "home/alice/c.txt",
    "home/alice/file7",
    "home/alice/1st",
    "home/alice/Upper",
    "home/alice/trailing ",
    // Deep nesting.
    "usr/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/bottom.txt",
    "usr/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/node_modules/x",
    "usr/d1/d2/d3/d4/d5/d6/d7/d8/d9/deep/logs/z.log",
];

/// Names repeated in a small dense subtree, so that random short patterns
/// hit something.
const DENSE_DIRS: &[&str] = &["a", "ab", "z"];
const DENSE_FILES: &[&str] = &["b", "b.log", "az", "x.tmp"];

/// Hand-written pattern lists; `{root}` is replaced by the source root's
/// absolute path and `{root1}` by the same path without its first component
/// (for the leading-`**` quirk).
const CASES: &[(&str, &[&str])] = &[
    ("no patterns", &[]),
    ("seed defaults", &[".cache", "*.tmp", ".local/share/Trash", "node_modules", "__pycache__"]),
    (
        "anchored",
        &[
            "{root}/home/alice/skip",
            "{root}/home/alice/proj/logs/",
            "{root}/home/*/notes.txt",
            "/home/alice/notes.txt",
            "{root}/srv/ab?",
        ],
    ),
    ("directory only", &["build/", "skipfile/", "skipfile2/", "Trash/"]),
    ("inner slash", &["alice/notes.txt", "share/Trash", "logs/*.log", "proj/*/index.js"]),
    ("double star", &["**/logs/*.log", "a**z", "proj/**/c.log", "**/d9/**"]),
    ("double star prefix", &["**.log", "**/node_modules/*"]),
    (
        "leading double star and the first component",
        &["**{root}/home/alice/notes.txt", "**{root1}/home/bob/notes.txt", "**/home/alice/a.txt", "**home/alice/c.txt"],
    ),
    ("triple star", &["proj/***", "{root}/usr/***", "dir/***", "logs/***"]),
    (
        "question mark and classes",
        &["caf?", "caf??", "[ab].txt", "file[0-9]", "[!n]otes.txt", "[[:digit:]]*", "[[:upper:]]*", "[]]", "?"],
    ),
    ("escapes", &["br\\[ack\\]et", "star\\*", "q\\?*", "back\\slash", "\\[x]"]),
    ("backslash only escapes with wildcards", &["back\\slash*"]),
    ("literal odd names", &["with space", "new?line", "!bang", "trailing ", "]"]),
    ("rule prefix stripped like rsync", &["- notes.txt", "- !", "-x", "+plus"]),
    // rsync counts the `/` of `[/s]` as a slash, so it compares the last two
    // components with a pattern that can only match one: never a match.
    ("a slash inside a class", &["[/s]rv", "alice/[/n]otes.txt", "[/]"]),
    ("excluding the source root by name", &["src"]),
    ("excluding the source root anchored", &["{root}/"]),
    ("matching everything", &["*"]),
];

#[test]
fn exclude_set_keeps_exactly_what_rsync_keeps() {
    let rsync_version = rsync_version();
    let tmp = tempfile::tempdir().expect("create tempdir");
    // rsync sees real paths; resolve any symlink in the temp dir's path.
    let base = tmp.path().canonicalize().expect("canonicalize tempdir");
    let root = base.join("src");
    build_tree(&root);
    let all = our_walk(&ExcludeSet::new::<&str>(&[]).unwrap(), &root);

    let root_str = root.to_str().expect("temp dir path is UTF-8");
    let root1 = &root_str[root_str[1..].find('/').expect("root has 2 components") + 1..];
    let mut cases: Vec<(String, Vec<String>)> = CASES
        .iter()
        .map(|(name, patterns)| {
            let patterns = patterns.iter().map(|p| p.replace("{root}", root_str).replace("{root1}", root1)).collect();
            ((*name).to_string(), patterns)
        })
        .collect();
    let fuzz_cases = std::env::var("HWC_EXCLUDE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let rel_paths: Vec<&str> =
        all.iter().filter_map(|p| p.strip_prefix(&root).ok()?.to_str()).filter(|p| !p.is_empty()).collect();
    cases.extend(fuzz(fuzz_cases, root_str, &rel_paths));

    // An rsync run takes ~50 ms, mostly its three processes waiting for each
    // other rather than CPU: run several at once, more than there are cores.
    let next_case = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(4, |n| (n.get() * 4).min(16));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next_case.fetch_add(1, Ordering::Relaxed);
                let Some((name, patterns)) = cases.get(i) else {
                    break;
                };
                let set = ExcludeSet::new(patterns).unwrap_or_else(|e| panic!("case {name:?}: {e}"));
                let ours = our_walk(&set, &root);
                let theirs = rsync_keeps(&root, &base.join(format!("dest{i}")), patterns);
                let trivial = ours.is_empty() || ours.len() == all.len();
                let failure = (ours != theirs).then(|| describe(name, patterns, &ours, &theirs));
                results.lock().unwrap().push((i, trivial, failure));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    assert_eq!(results.len(), cases.len(), "a worker died");
    results.sort_by_key(|(i, ..)| *i);
    let failures: Vec<String> = results.iter().filter_map(|(.., f)| f.clone()).collect();
    let nontrivial = results.iter().filter(|(_, trivial, _)| !trivial).count();
    assert!(
        failures.is_empty(),
        "ExcludeSet disagrees with {rsync_version} in {} of {} cases \
         (`-` = rsync copies it but we exclude it, `+` = we keep it but rsync does not):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "{} cases agree with {rsync_version}; {nontrivial} excluded some but not all of the {} entries",
        cases.len(),
        all.len()
    );
    // Guard against a vacuous pass (say, every pattern matching nothing).
    assert!(
        nontrivial * 2 > cases.len(),
        "only {nontrivial} of {} cases excluded some but not all of the {} entries",
        cases.len(),
        all.len()
    );
}

/// Fails (never skips) when rsync is missing.
fn rsync_version() -> String {
    match Command::new("rsync").arg("--version").output() {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("rsync").trim().to_string()
        }
        Ok(out) => panic!("`rsync --version` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!(
            "this test compares exclude patterns against real rsync, which could not be run \
             ({e}); run `tests/run` (README.md, \"The two commands\"), which installs rsync"
        ),
    }
}

fn build_tree(root: &Path) {
    let mut entries: Vec<OsString> = TREE.iter().map(OsString::from).collect();
    // A Latin-1 name, invalid as UTF-8: `caf?` matches it (one byte) where
    // it does not match the UTF-8 `café` (two bytes).
    entries.push(OsStr::from_bytes(b"home/alice/caf\xe9").to_owned());
    entries.push(OsStr::from_bytes(b"home/alice/l\xe9gacy/f").to_owned());
    let mut dirs = vec![String::from("fz")];
    for _ in 0..3 {
        let mut next = Vec::new();
        for d in &dirs {
            for f in DENSE_FILES {
                entries.push(format!("{d}/{f}").into());
            }
            for sub in DENSE_DIRS {
                next.push(format!("{d}/{sub}"));
            }
        }
        dirs = next;
    }
    entries.extend(dirs.iter().map(|d| format!("{d}/").into()));

    for entry in entries {
        let bytes = entry.as_bytes();
        // See `unescape`.
        assert!(!bytes.windows(2).any(|w| w == b"\\#"), "{entry:?}");
        if let Some(arrow) = bytes.windows(4).position(|w| w == b" -> ") {
            let link = root.join(OsStr::from_bytes(&bytes[..arrow]));
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(OsStr::from_bytes(&bytes[arrow + 4..]), &link).unwrap();
        } else if let Some(dir) = bytes.strip_suffix(b"/") {
            fs::create_dir_all(root.join(OsStr::from_bytes(dir))).unwrap();
        } else {
            let file = root.join(OsStr::from_bytes(bytes));
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, b"").unwrap();
        }
    }
}

/// What a snapshot walk with `set` keeps: absolute paths of the root and
/// every kept entry below it.
fn our_walk(set: &ExcludeSet, root: &Path) -> BTreeSet<PathBuf> {
    fn walk(set: &ExcludeSet, dir: &Path, kept: &mut BTreeSet<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            // `file_type` does not follow symlinks, like `rsync -a`.
            let is_dir = entry.file_type().unwrap().is_dir();
            if set.is_excluded(&path, is_dir) {
                continue;
            }
            kept.insert(path.clone());
            if is_dir {
                walk(set, &path, kept);
            }
        }
    }
    let mut kept = BTreeSet::new();
    // rsync applies the rules to the source argument itself too.
    if !set.is_excluded(root, fs::symlink_metadata(root).unwrap().is_dir()) {
        kept.insert(root.to_path_buf());
        walk(set, root, &mut kept);
    }
    kept
}

/// What `rsync -a --relative --exclude=P… root dest/` would copy, as
/// absolute source paths, limited to the root and below (rsync also creates
/// the root's ancestors, the "implied directories", which rules never
/// exclude).
fn rsync_keeps(root: &Path, dest: &Path, patterns: &[String]) -> BTreeSet<PathBuf> {
    fs::create_dir(dest).unwrap();
    let mut cmd = Command::new("rsync");
    // -8: print non-ASCII bytes as they are; %n: just the name, directories
    // with a trailing `/`.
    cmd.args(["-a", "--relative", "--dry-run", "-8", "--out-format=%n"]);
    for p in patterns {
        cmd.arg(format!("--exclude={p}"));
    }
    let mut dest_arg = dest.as_os_str().to_owned();
    dest_arg.push("/");
    cmd.arg(root).arg(dest_arg);
    // POSIX classes follow LC_CTYPE in rsync; pin the (ASCII) C locale.
    cmd.env("LC_ALL", "C");
    let out = cmd.output().expect("run rsync");
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut name = unescape(line);
            if name.len() > 1 && name.ends_with(b"/") {
                name.pop();
            }
            PathBuf::from(OsString::from_vec(name))
        })
        .filter(|p| p.starts_with(root))
        .collect()
}

/// Undoes rsync's output escaping: a byte it will not print (a newline, say)
/// appears as `\#` and three octal digits. A literal `\#` in a name is not
/// escaped, which would be ambiguous; `build_tree` has no such name.
fn unescape(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let octal = line.get(i + 2..i + 5).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (line[i], line.get(i + 1), octal) {
            (b'\\', Some(b'#'), Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 5;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn describe(name: &str, patterns: &[String], ours: &BTreeSet<PathBuf>, theirs: &BTreeSet<PathBuf>) -> String {
    const SHOW: usize = 40;
    let mut out = format!("case {name:?}, patterns {patterns:?}:\n");
    for (sign, only) in [("-", theirs.difference(ours)), ("+", ours.difference(theirs))] {
        let only: Vec<_> = only.collect();
        for p in only.iter().take(SHOW) {
            let _ = writeln!(out, "  {sign} {p:?}");
        }
        if only.len() > SHOW {
            let _ = writeln!(out, "  {sign} ... and {} more", only.len() - SHOW);
        }
    }
    out
}

/// `count` deterministic pseudo-random cases of 1 to 3 patterns each: half
/// made of pieces that exercise every wildcard, half by mutating components
/// of the tree's own paths, so that most of them do match something.
fn fuzz(count: usize, root: &str, rel_paths: &[&str]) -> Vec<(String, Vec<String>)> {
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "a", "b", "z", "ab", "x", ".", "log", "logs", "tmp", "alice", "proj", "fz",
        "node_modules", ".cache", "d1", "build", "*", "*", "*", "**", "**", "***", "?", "?",
        "[ab]", "[!a]", "[^z]", "[a-c]", "[[:alpha:]]", "[]a]", "[/a]", "\\*", "\\a",
        "/", "/", "/", "/", " ", "é",
    ];
    // xorshift64*: no dependency, same sequence everywhere.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rng = |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    };
    let mut cases = Vec::with_capacity(count);
    while cases.len() < count {
        let mut patterns = Vec::new();
        for _ in 0..=rng(3) {
            let mut p = String::new();
            if rng(2) == 0 {
                match rng(8) {
                    0 => p.push('/'),
                    1 => p.push_str(root),
                    2 => p.push_str("- "),
                    _ => {}
                }
                for _ in 0..=rng(4) {
                    p.push_str(PIECES[rng(PIECES.len())]);
                }
            } else {
                // A window of 1 to 3 components of a real path...
                let comps: Vec<&str> = rel_paths[rng(rel_paths.len())].split('/').collect();
                let start = rng(comps.len());
                let end = start + 1 + rng((comps.len() - start).min(3));
                let window = comps[start..end].join("/");
                match rng(6) {
                    0 if start == 0 => {
                        p.push_str(root);
                        p.push('/');
                    }
                    1 => p.push('/'),
                    2 => p.push_str("**/"),
                    _ => {}
                }
                // ...with some characters turned into wildcards.
                for c in window.chars() {
                    match (c, rng(24)) {
                        ('/', 0) => p.push_str("**"),
                        ('/', 1) => p.push_str("/**/"),
                        ('/', _) => p.push('/'),
                        (_, 0) => p.push('?'),
                        (_, 1) => drop(write!(p, "[{c}x]")),
                        (_, 2) => drop(write!(p, "[!{c}]")),
                        (_, 3) => p.push('*'),
                        (_, 4) => p.push_str("**"),
                        (_, 5) => drop(write!(p, "\\{c}")),
                        _ => p.push(c),
                    }
                }
                if rng(6) == 0 {
                    p.push_str("/***");
                }
            }
            if rng(5) == 0 {
                p.push('/');
            }
            patterns.push(p);
        }
        // Only patterns we accept can be compared; the ones we reject are
        // exactly those rsync would never match or would not treat as plain
        // excludes (covered by the unit tests).
        if ExcludeSet::new(&patterns).is_ok() {
            cases.push((format!("fuzz {}", cases.len()), patterns));
        }
    }
    cases
}
