//! The pull path end to end in one process: the agent runs on a thread behind a socket pair,
//! the server side is a real `run::run_from`. (The integration tests do the same through a
//! real sshd.)

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::agent::{self, AgentConfig};
use super::ssh::Connection;
use crate::job::Job;
use crate::plan::{Plan, RemoteHost};
use crate::run::{self, RunOptions, RunReport};
use crate::source::Pull;
use crate::store::meta::RunState;

fn connector(config: AgentConfig) -> impl Fn() -> crate::Result<Connection> + Sync {
    move || {
        let (server, client) = UnixStream::pair().expect("socket pair");
        let cfg = config.clone();
        std::thread::spawn(move || {
            let input = client.try_clone().expect("clone");
            let _ = agent::serve(&cfg, input, client);
        });
        let input = server.try_clone().expect("clone");
        Ok(Connection::from_streams("client", Box::new(input), Box::new(server)))
    }
}

/// The job pulling `host`, as `pull --address … --dest DEST` builds it.
fn pulled_job(host: &str, sources: Vec<PathBuf>, dest: &Path, excludes: Vec<String>) -> Job {
    let remote = RemoteHost {
        address: "client.test".into(),
        user: "root".into(),
        port: 22,
        ssh_key_file: None,
        ssh_options: vec![],
        ssh: None,
        agent_command: "hwc-backup agent".into(),
        sources,
        exclude_patterns: excludes,
        one_file_system: true,
        devices: false,
        retention: None,
        ..RemoteHost::default()
    };
    Job::pulled_ad_hoc(host, remote, dest.to_path_buf(), "/var/lib/hwc-backup".into()).unwrap()
}

fn pull(src: &Path, dest: &Path, host: &str, when: &str, config: AgentConfig) -> RunReport {
    let job = pulled_job(host, vec![src.to_path_buf()], dest, vec!["*.skip".into()]);
    let mut opts = RunOptions::for_job(&job);
    opts.now = Some(when.parse().unwrap());
    opts.prune = false;
    let connect = connector(config);
    run::run_from(&job, &Pull { host, connect: &connect, devices: false }, &opts, &|_| {})
}

fn local(src: &Path, dest: &Path, when: &str) -> RunReport {
    let plan = Plan::ad_hoc("local".into(), vec![src.to_path_buf()], dest.to_path_buf(), vec!["*.skip".into()]);
    let mut opts = RunOptions::for_plan(&plan);
    opts.now = Some(when.parse().unwrap());
    opts.prune = false;
    run::run(&plan, &opts, &|_| {})
}

fn allow(p: &Path) -> AgentConfig {
    AgentConfig { allow: vec![p.to_path_buf()], excludes: vec![] }
}

fn write(p: &Path, data: impl AsRef<[u8]>) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Every entry below `root`: path, type, mode, owner, size, mtime, content or target.
fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).unwrap())
            } else if m.is_file() {
                blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string()
            } else {
                String::new()
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == ".hwc-backup" {
                continue;
            }
            let mtime = if m.is_dir() { 0 } else { m.mtime_nsec() + m.mtime() * 1_000_000_000 };
            out.push(format!("{rel} {:o} {}:{} {} {mtime} {what}", m.mode(), m.uid(), m.gid(), m.len()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn snapshot_dir(dest: &Path, host: &str, report: &RunReport) -> PathBuf {
    assert_ne!(report.state, RunState::Failed, "{report:?}");
    dest.join(host).join(report.snapshot.as_ref().unwrap())
}

fn tree(src: &Path) {
    write(&src.join("a/one.txt"), "one\n");
    write(&src.join("a/b/two.txt"), "two\n");
    write(&src.join("a/skipped.skip"), "no\n");
    write(&src.join("big"), (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>());
    write(&src.join("empty"), "");
    std::os::unix::fs::symlink("a/one.txt", src.join("link")).unwrap();
    std::fs::hard_link(src.join("a/one.txt"), src.join("a/b/one-again")).unwrap();
    std::fs::create_dir_all(src.join("emptydir")).unwrap();
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(5 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"data", 3 << 20).unwrap();
}

#[test]
fn pulled_snapshot_equals_local_and_links_unchanged_files() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
    tree(&src);
    std::fs::create_dir_all(&dest).unwrap();
    let first = pull(&src, &dest, "client", "2025-01-15T02:00:00+01:00[+01:00]", allow(&src));
    let loc = local(&src, &dest, "2025-01-15T02:00:00+01:00[+01:00]");
    let (p1, l1) = (snapshot_dir(&dest, "client", &first), snapshot_dir(&dest, "local", &loc));
    assert_eq!(describe(&p1), describe(&l1));
    assert_eq!(first.counts, loc.counts, "pull and local count alike");
    let manifest = |d: &Path| std::fs::read_to_string(d.join(".hwc-backup/manifest.b3")).unwrap();
    assert_eq!(manifest(&p1), manifest(&l1));
    let inner = |d: &Path| d.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::metadata(inner(&p1).join("a/one.txt")).unwrap().ino(),
        std::fs::metadata(inner(&p1).join("a/b/one-again")).unwrap().ino(),
        "hard links inside a source stay links"
    );
    assert!(std::fs::metadata(inner(&p1).join("sparse")).unwrap().blocks() < 1024, "holes stay holes");

    // Change 64 KiB in the middle of the big file, add and remove a file.
    let big = std::fs::OpenOptions::new().write(true).open(src.join("big")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&big, &vec![7u8; 65536], 1 << 20).unwrap();
    write(&src.join("a/new.txt"), "new\n");
    std::fs::remove_file(src.join("a/b/two.txt")).unwrap();
    let second = pull(&src, &dest, "client", "2025-01-16T02:00:00+01:00[+01:00]", allow(&src));
    let p2 = snapshot_dir(&dest, "client", &second);
    assert_eq!(second.state, RunState::Success, "{second:?}");
    let loc2 = local(&src, &dest, "2025-01-16T02:00:00+01:00[+01:00]");
    assert_eq!(describe(&p2), describe(&snapshot_dir(&dest, "local", &loc2)));
    assert_eq!(second.counts.copied, 2, "the changed and the new file: {:?}", second.counts);
    let ino = |d: &Path, f: &str| std::fs::symlink_metadata(inner(d).join(f)).unwrap().ino();
    assert_eq!(ino(&p1, "a/one.txt"), ino(&p2, "a/one.txt"), "unchanged files are hard links");
    assert_eq!(ino(&p1, "sparse"), ino(&p2, "sparse"));
    assert_ne!(ino(&p1, "big"), ino(&p2, "big"));
    let t = second.transfer.unwrap();
    assert!(t.bytes_received < 400_000, "a 64 KiB change in 3 MiB came as a delta: {t:?}");
    assert_eq!(manifest(&p2), manifest(&snapshot_dir(&dest, "local", &loc2)));
}

#[test]
fn a_small_file_with_a_small_change_comes_as_a_delta() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
    // 48 KiB that do not compress, so only a delta can make the transfer small.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..48 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write(&src.join("notes.db"), &noise);
    std::fs::create_dir_all(&dest).unwrap();
    pull(&src, &dest, "client", "2025-01-15T02:00:00+01:00[+01:00]", allow(&src));
    let f = std::fs::OpenOptions::new().write(true).open(src.join("notes.db")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 2048], 0).unwrap();
    let second = pull(&src, &dest, "client", "2025-01-16T02:00:00+01:00[+01:00]", allow(&src));
    assert_eq!(second.state, RunState::Success, "{second:?}");
    let t = second.transfer.as_ref().unwrap();
    assert!(t.bytes_received < 16 << 10, "2 KiB changed in a 48 KiB file should come as a delta: {t:?}");
    let stored = snapshot_dir(&dest, "client", &second).join(src.strip_prefix("/").unwrap()).join("notes.db");
    assert_eq!(std::fs::read(stored).unwrap(), std::fs::read(src.join("notes.db")).unwrap());
}

#[test]
fn refused_and_missing_sources_fail_the_run_and_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
    write(&src.join("f"), "x");
    std::fs::create_dir_all(&dest).unwrap();
    let elsewhere = AgentConfig { allow: vec!["/nonexistent-allowed".into()], excludes: vec![] };
    let r = pull(&src, &dest, "client", "2025-01-15T02:00:00+01:00[+01:00]", elsewhere);
    assert_eq!(r.state, RunState::Failed);
    let e = r.error.unwrap();
    assert!(e.contains("host client") && e.contains("not allowed"), "{e}");
    let missing = dir.path().join("missing");
    let r = pull(&missing, &dest, "client", "2025-01-15T02:00:00+01:00[+01:00]", allow(dir.path()));
    let e = r.error.unwrap();
    assert!(e.contains("cannot be read") && e.contains("missing"), "{e}");
    assert!(crate::store::layout::HostDir::open(&dest.join("client")).unwrap().list().unwrap().is_empty());
}

#[test]
fn agent_excludes_apply_on_top_of_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
    write(&src.join("keep"), "k");
    write(&src.join("secret.key"), "s");
    write(&src.join("x.skip"), "s");
    std::fs::create_dir_all(&dest).unwrap();
    let config = AgentConfig { allow: vec![src.clone()], excludes: vec!["*.key".into()] };
    let r = pull(&src, &dest, "client", "2025-01-15T02:00:00+01:00[+01:00]", config);
    let snap = snapshot_dir(&dest, "client", &r).join(src.strip_prefix("/").unwrap());
    assert!(snap.join("keep").exists());
    assert!(!snap.join("secret.key").exists() && !snap.join("x.skip").exists());
    assert_eq!(r.counts.excluded, 2);
}

/// A stand-in agent that answers the hello and the request, then sends `frames` as they are.
fn scripted(frames: Vec<super::proto::FromAgent>) -> impl Fn() -> crate::Result<Connection> + Sync {
    use super::proto;
    use std::io::Write;
    move || {
        let (server, client) = UnixStream::pair().expect("socket pair");
        let frames = frames.clone();
        std::thread::spawn(move || {
            let mut input = client.try_clone().expect("clone");
            let mut output = client;
            proto::send_hello(&mut output).unwrap();
            proto::read_hello(&mut input).unwrap();
            let mut buf = Vec::new();
            let _: Option<proto::ToAgent> = proto::read_frame(&mut input, &mut buf).unwrap();
            proto::write_frame(&mut output, &proto::FromAgent::Ready { walk_started: 0 }).unwrap();
            let mut stream = proto::CompressedWriter::new(&output);
            for f in &frames {
                let _ = proto::write_frame(&mut stream, f);
            }
            let _ = stream.flush();
            let _ = output.shutdown(std::net::Shutdown::Write); // then the connection "drops"
            while let Ok(Some(_)) = proto::read_frame::<proto::ToAgent>(&mut input, &mut buf) {}
        });
        let input = server.try_clone().expect("clone");
        Ok(Connection::from_streams("client", Box::new(input), Box::new(server)))
    }
}

#[test]
fn a_hostile_agent_cannot_write_outside_its_snapshot() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let meta = Meta { mode: 0o100644, ..Meta::default() };
    let file = |name: &[u8]| FromAgent::File { name: name.to_vec(), meta: meta.clone(), link: None, xattrs: None };
    let source = FromAgent::Source { index: 0, parent: b"srv".to_vec() };
    let dir_meta = Meta { mode: 0o40755, ..Meta::default() };
    for (i, (frames, want)) in [
        (vec![source.clone(), file(b"../../../escaped")], "invalid file name"),
        (vec![source.clone(), FromAgent::Dir { name: b"a/b".to_vec(), meta: dir_meta.clone() }], "invalid file name"),
        (vec![FromAgent::Source { index: 0, parent: b"srv/../..".to_vec() }], "invalid file name"),
        (vec![FromAgent::Source { index: 7, parent: b"srv".to_vec() }], "not requested"),
        (vec![source.clone(), FromAgent::Data { id: 1, offset: 0, lz4: None, bytes: vec![1] }], "not expected"),
        (vec![source.clone(), FromAgent::DirEnd], "DirEnd without a directory"),
        (vec![source.clone(), file(b"f")], "closed in the middle"),
        // A compact File frame (protocol 4) with an impossible mtime is refused as it is read.
        (
            vec![
                source.clone(),
                FromAgent::File {
                    name: b"../../escaped".to_vec(),
                    meta: Meta { mtime_nsec: 2_000_000_000, ..Meta::default() },
                    link: None,
                    xattrs: None,
                },
            ],
            "a file's mtime has 2000000000 nanoseconds",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // A destination each (see a_hostile_agent_cannot_reach_through_its_own_symlinks).
        let dest = dest.join(i.to_string());
        std::fs::create_dir_all(&dest).unwrap();
        let job = pulled_job("client", vec!["/srv/x".into()], &dest, vec![]);
        let mut opts = RunOptions::for_job(&job);
        opts.prune = false;
        let connect = scripted(frames);
        let r = run::run_from(&job, &Pull { host: "client", connect: &connect, devices: false }, &opts, &|_| {});
        assert_eq!(r.state, RunState::Failed);
        let e = r.error.unwrap();
        assert!(e.contains(want), "{want}: {e}");
        assert!(!dest.join("escaped").exists());
        assert!(crate::store::layout::HostDir::open(&dest.join("client")).unwrap().list().unwrap().is_empty());
    }
    assert!(!dir.path().join("escaped").exists() && !dest.join("escaped").exists());
}

#[test]
fn a_single_file_and_a_directory_as_sources_pull_like_local() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
    write(&src.join("tree/x"), "x\n");
    write(&src.join("lone.conf"), "lone\n");
    std::fs::create_dir_all(&dest).unwrap();
    let sources = vec![src.join("tree"), src.join("lone.conf")];
    let when: jiff::Zoned = "2025-01-15T02:00:00+01:00[+01:00]".parse().unwrap();
    let run_as = |host: &str, pulled: bool| {
        let job = if pulled {
            pulled_job(host, sources.clone(), &dest, vec![])
        } else {
            Plan::ad_hoc(host.into(), sources.clone(), dest.clone(), vec![]).local_job()
        };
        let mut opts = RunOptions::for_job(&job);
        opts.now = Some(when.clone());
        opts.prune = false;
        let connect = connector(allow(&src));
        if pulled {
            run::run_from(&job, &Pull { host, connect: &connect, devices: false }, &opts, &|_| {})
        } else {
            run::run_from(&job, &crate::source::LocalFs, &opts, &|_| {})
        }
    };
    let (p, l) = (run_as("client", true), run_as("local", false));
    let (pd, ld) = (snapshot_dir(&dest, "client", &p), snapshot_dir(&dest, "local", &l));
    assert_eq!(describe(&pd), describe(&ld));
    assert_eq!(p.counts, l.counts);
    assert!(pd.join(src.strip_prefix("/").unwrap()).join("lone.conf").is_file());
}

/// What an agent sent to a server that asked for every file whole.
struct Served {
    /// The agent refused the request (its message), or failed mid-way.
    error: Option<String>,
    /// Names of every entry sent, and the targets of symlinks.
    names: Vec<String>,
    /// Every content byte sent, all files concatenated.
    content: Vec<u8>,
    /// Warnings sent (path: message).
    warnings: Vec<String>,
    /// `Dir` frames less `DirEnd` frames: 0 when every directory was closed.
    open_dirs: i64,
}

/// Plays the server against a real agent over a socket pair: requests `sources`, asks for
/// every regular file whole, acknowledges everything, and records what came.
fn drive_agent(config: AgentConfig, sources: &[&Path]) -> Served {
    use super::proto::{self, FromAgent, How, Request, ToAgent};
    use std::io::Write;
    let (server, client) = UnixStream::pair().expect("socket pair");
    let agent = std::thread::spawn(move || {
        let input = client.try_clone().expect("clone");
        let _ = agent::serve(&config, input, client);
    });
    let mut out = server.try_clone().expect("clone");
    let mut input = std::io::BufReader::new(server);
    proto::send_hello(&mut out).unwrap();
    proto::read_hello(&mut input).unwrap();
    let request = Request {
        sources: sources.iter().map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec()).collect(),
        excludes: vec![],
        one_file_system: false,
        exclude_by: Default::default(),
        xattrs_since: None,
    };
    proto::write_frame(&mut out, &ToAgent::Request(request)).unwrap();
    out.flush().unwrap();
    // Frames to the agent go out on a thread of their own (as in the real server): writing
    // them in line with the reading can deadlock with the agent's own writes.
    let (tx, rx) = crossbeam_channel::unbounded::<ToAgent>();
    let sender = std::thread::spawn(move || {
        for frame in rx {
            if proto::write_frame(&mut out, &frame).and_then(|()| out.flush()).is_err() {
                return;
            }
        }
    });
    let mut served = Served { error: None, names: Vec::new(), content: Vec::new(), warnings: Vec::new(), open_dirs: 0 };
    let mut buf = Vec::new();
    match proto::read_frame::<FromAgent>(&mut input, &mut buf).unwrap() {
        Some(FromAgent::Ready { .. }) => {}
        Some(FromAgent::Error(m)) => {
            served.error = Some(m);
            drop(tx);
            sender.join().unwrap();
            agent.join().unwrap();
            return served;
        }
        other => panic!("unexpected answer {other:?}"),
    }
    let mut input = proto::compressed_reader(input);
    let (mut seq, mut pending, mut walked) = (0u64, 0usize, false);
    while !(walked && pending == 0) {
        let Some(frame) = proto::read_frame::<FromAgent>(&mut input, &mut buf).unwrap() else { break };
        if frame.is_walk() {
            match &frame {
                FromAgent::File { name, .. } => {
                    served.names.push(String::from_utf8_lossy(name).into_owned());
                    tx.send(ToAgent::Send { id: seq, how: How::Whole }).unwrap();
                    pending += 1;
                }
                FromAgent::Dir { name, .. } => {
                    served.names.push(String::from_utf8_lossy(name).into_owned());
                    served.open_dirs += 1;
                }
                FromAgent::DirEnd => served.open_dirs -= 1,
                FromAgent::Special { name, .. } => {
                    served.names.push(String::from_utf8_lossy(name).into_owned());
                }
                FromAgent::Warn { path, message } => {
                    served.warnings.push(format!("{}: {message}", String::from_utf8_lossy(path)));
                }
                FromAgent::Symlink { name, target, .. } => {
                    served.names.push(String::from_utf8_lossy(name).into_owned());
                    served.names.push(format!("-> {}", String::from_utf8_lossy(target)));
                }
                FromAgent::WalkEnd { .. } => walked = true,
                _ => {}
            }
            seq += 1;
            tx.send(ToAgent::Ack { upto: seq }).unwrap();
            continue;
        }
        match frame {
            FromAgent::Data { lz4, bytes, .. } => served.content.extend(proto::decompress(lz4, bytes).unwrap()),
            FromAgent::FileEnd { .. } | FromAgent::FileError { .. } => pending -= 1,
            FromAgent::Error(m) => {
                served.error = Some(m);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let _ = tx.send(ToAgent::Done);
    drop(tx);
    sender.join().unwrap();
    drop(input);
    agent.join().unwrap();
    served
}

/// Everything the agent serves lies in its allowed tree: requests through a relative or an
/// absolute symlink (for a file or a whole directory), with `..`, relative, or for a sibling
/// whose name merely starts like the allowed path are refused, and a symlink that is itself
/// requested is sent as a symlink.
#[test]
fn the_agent_serves_nothing_outside_its_allowed_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (allowed, outside) = (root.join("home"), root.join("outside"));
    write(&outside.join("secret.txt"), "SECRET-OUTSIDE-FILE");
    write(&outside.join("dir/inner.txt"), "SECRET-OUTSIDE-DIR");
    write(&root.join("home2/secret.txt"), "SECRET-PREFIX-SIBLING");
    write(&allowed.join("ok/mine.txt"), "mine");
    std::fs::create_dir_all(allowed.join("deep/er")).unwrap();
    std::os::unix::fs::symlink("../outside", allowed.join("rel")).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("abs")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), allowed.join("file-link")).unwrap();
    std::os::unix::fs::symlink("../../../outside", allowed.join("deep/er/up")).unwrap();
    std::os::unix::fs::symlink("../../outside", allowed.join("ok/escape")).unwrap();
    let config = || allow(&allowed);
    let secret = |s: &Served| {
        let text = String::from_utf8_lossy(&s.content);
        let entry = |n: &&String| !n.starts_with("-> ");
        text.contains("SECRET") || s.names.iter().filter(entry).any(|n| n.contains("secret") || n.contains("inner"))
    };

    for (request, why) in [
        (allowed.join("rel/secret.txt"), "is refused"),
        (allowed.join("abs/secret.txt"), "is refused"),
        (allowed.join("rel/dir"), "is refused"),
        (allowed.join("abs/dir"), "is refused"),
        (allowed.join("abs/dir/inner.txt"), "is refused"),
        (allowed.join("deep/er/up/secret.txt"), "is refused"),
        (allowed.join("ok/escape/dir"), "is refused"),
        (allowed.join("../outside/secret.txt"), "not a clean absolute path"),
        (allowed.join("ok/../../outside"), "not a clean absolute path"),
        (PathBuf::from("home/ok"), "not a clean absolute path"),
        (root.join("home2/secret.txt"), "not allowed"),
        (root.join("home2"), "not allowed"),
        (outside.clone(), "not allowed"),
    ] {
        let s = drive_agent(config(), &[&request]);
        let e = s.error.as_deref().unwrap_or_else(|| panic!("{} was served", request.display()));
        assert!(e.contains(why), "{}: {e}", request.display());
        assert!(!secret(&s), "{}", request.display());
    }
    let e = drive_agent(config(), &[&allowed.join("abs/secret.txt")]).error.unwrap();
    assert!(e.contains(&format!("{} is a symbolic link", allowed.join("abs").display())), "names the link: {e}");

    // A requested symlink is sent as a symlink, and symlinks inside a source stay symlinks.
    for (request, target) in
        [("abs", s(&outside)), ("rel", "../outside".into()), ("file-link", s(&outside.join("secret.txt")))]
    {
        let served = drive_agent(config(), &[&allowed.join(request)]);
        assert_eq!(served.error, None);
        assert_eq!(served.names, vec![request.to_string(), format!("-> {target}")]);
        assert!(!secret(&served), "{request}: {:?}", served.names);
    }
    let whole = drive_agent(config(), &[&allowed]);
    assert_eq!(whole.error, None);
    assert!(whole.names.contains(&"mine.txt".to_string()) && whole.names.contains(&"escape".to_string()));
    assert!(!secret(&whole), "{:?}", whole.names);
    assert_eq!(whole.content, b"mine");

    // Another spelling of an allowed path is the same path.
    let served = drive_agent(config(), &[Path::new(&format!("{}//ok/", allowed.display()))]);
    assert_eq!(served.error, None);
    assert_eq!(served.content, b"mine");

    // The allowed path is the agent's own configuration: a symlink there is followed.
    let alias = root.join("alias");
    std::os::unix::fs::symlink(&allowed, &alias).unwrap();
    let served = drive_agent(allow(&alias), &[&alias.join("ok")]);
    assert_eq!(served.error, None);
    assert_eq!(served.content, b"mine");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Owner, mode, times (ctime: any metadata change shows; not atime, which reading changes),
/// xattrs and content of
/// every entry below and including `root`.
fn fingerprint(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let what = if m.is_symlink() {
            format!("-> {:?}", std::fs::read_link(&p).unwrap())
        } else if m.is_file() {
            blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string()
        } else {
            String::new()
        };
        let xattrs = if m.is_symlink() {
            Vec::new()
        } else {
            let f = std::fs::File::open(&p).unwrap();
            crate::fs::fsops::read_xattrs_fd(std::os::fd::AsFd::as_fd(&f)).unwrap()
        };
        out.push(format!(
            "{} {:o} {}:{} {}.{} {}.{} {xattrs:?} {what}",
            p.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// A directory outside the destination that a hostile agent aims at.
fn victim(root: &Path) -> PathBuf {
    let v = root.join("victim");
    write(&v.join("target/file"), "precious");
    write(&v.join("top.txt"), "precious too");
    // Tagged, so that xattr changes would show (where the filesystem supports user xattrs).
    let _ = rustix::fs::setxattr(v.join("target"), "user.tag", b"mine", rustix::fs::XattrFlags::empty());
    v
}

/// Runs a pull of `/srv/x` against a stand-in agent sending `frames`.
fn hostile(dest: &Path, frames: Vec<super::proto::FromAgent>, devices: bool) -> RunReport {
    let job = pulled_job("client", vec!["/srv/x".into()], dest, vec![]);
    let mut opts = RunOptions::for_job(&job);
    opts.prune = false;
    let connect = scripted(frames);
    run::run_from(&job, &Pull { host: "client", connect: &connect, devices }, &opts, &|_| {})
}

/// Item 1 of issue 12: whatever the agent sends, nothing outside `<dest>/<host>/` changes,
/// and an attempt fails the run with a message naming the refused entry.
#[test]
fn a_hostile_agent_cannot_reach_through_its_own_symlinks() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let v = victim(dir.path());
    let target = v.to_str().unwrap().as_bytes().to_vec();
    let before = fingerprint(&v);
    let evil = Meta {
        mode: 0o47777,
        uid: 4242,
        gid: 4242,
        mtime: 1,
        atime: 1,
        xattrs: vec![(b"user.pwned".to_vec(), b"1".to_vec())],
        ..Meta::default()
    };
    let at_top = FromAgent::Source { index: 0, parent: Vec::new() };
    let srv = FromAgent::Source { index: 0, parent: b"srv".to_vec() };
    let link = |name: &[u8]| FromAgent::Symlink { name: name.to_vec(), meta: Meta::default(), target: target.clone() };
    let end = |rel: &[u8]| FromAgent::WalkEnd {
        excluded: 0,
        excluded_caches: 0,
        excluded_if_present: 0,
        excluded_large: 0,
        ancestors: vec![(rel.to_vec(), evil.clone())],
    };
    let dir_frame = |name: &[u8]| FromAgent::Dir { name: name.to_vec(), meta: evil.clone() };
    let special =
        |name: &[u8]| FromAgent::Special { name: name.to_vec(), meta: Meta { mode: 0o10644, ..evil.clone() } };
    let file = |name: &[u8]| FromAgent::File {
        name: name.to_vec(),
        meta: Meta { mode: 0o106777, ..evil.clone() },
        link: None,
        xattrs: None,
    };
    let mut published = 0;
    for (i, (frames, want)) in [
        // The attack of the issue: a symlink, then an ancestor through it.
        (
            vec![at_top.clone(), link(b"evil"), FromAgent::SourceEnd, end(b"evil/target")],
            "/evil in the snapshot is a symbolic link",
        ),
        (
            vec![at_top.clone(), link(b"evil"), FromAgent::SourceEnd, end(b"evil")],
            "/evil in the snapshot is a symbolic link",
        ),
        (
            vec![srv.clone(), link(b"evil"), FromAgent::SourceEnd, end(b"srv/evil/target")],
            "/srv/evil in the snapshot is a symbolic link",
        ),
        (
            vec![srv.clone(), link(b"evil"), FromAgent::SourceEnd, end(b"srv/evil/target/file")],
            "/srv/evil in the snapshot is a symbolic link",
        ),
        // Through the symlink as a directory of the walk, or as the parent of a source.
        (vec![at_top.clone(), link(b"evil"), dir_frame(b"evil")], "evil"),
        (
            vec![
                at_top.clone(),
                link(b"evil"),
                FromAgent::SourceEnd,
                FromAgent::Source { index: 0, parent: b"evil/target".to_vec() },
            ],
            "evil",
        ),
        // Names that are not one plain component, anywhere.
        (vec![srv.clone(), dir_frame(b"..")], "invalid file name \"..\""),
        (vec![srv.clone(), file(b"../../victim/top.txt")], "invalid file name \"../../victim/top.txt\""),
        (vec![srv.clone(), link(b"a/b")], "invalid file name \"a/b\""),
        (vec![srv.clone(), special(b"")], "invalid file name \"\""),
        (vec![srv.clone(), file(b"a\0b")], "invalid file name"),
        (
            vec![srv.clone(), FromAgent::SourceEnd, end(b"srv/../..")],
            "/srv/.. in the snapshot is not a plain file name",
        ),
        (vec![srv.clone(), FromAgent::SourceEnd, end(b"")], "refused the directory / "),
        (vec![srv.clone(), FromAgent::SourceEnd, end(b"/victim")], "refused the directory //victim"),
        (vec![srv.clone(), FromAgent::SourceEnd, end(b"srv//x")], "/srv/ in the snapshot is not a plain file name"),
        (vec![FromAgent::Source { index: 0, parent: b"srv/../..".to_vec() }], "invalid file name"),
        // The snapshot's own metadata directory, made before the walk and written after it: a
        // symlink planted there as `meta.tmp` would have the server write meta.json through it.
        (
            vec![
                at_top.clone(),
                FromAgent::Dir { name: b".hwc-backup".to_vec(), meta: Meta { mode: 0o40700, ..Meta::default() } },
                FromAgent::Symlink {
                    name: b"meta.tmp".to_vec(),
                    meta: Meta::default(),
                    target: v.join("top.txt").to_str().unwrap().as_bytes().to_vec(),
                },
                FromAgent::DirEnd,
                FromAgent::SourceEnd,
                FromAgent::WalkEnd {
                    excluded: 0,
                    excluded_caches: 0,
                    excluded_if_present: 0,
                    excluded_large: 0,
                    ancestors: vec![],
                },
            ],
            "/.hwc-backup",
        ),
        (vec![FromAgent::Source { index: 0, parent: b".hwc-backup/x".to_vec() }], "/.hwc-backup"),
        (vec![srv.clone(), FromAgent::SourceEnd, end(b".hwc-backup")], "/.hwc-backup"),
        // Walking on and on while a file is never completed: memory must not grow with it.
        (
            [srv.clone(), file(b"never")]
                .into_iter()
                .chain(std::iter::repeat_n(FromAgent::Socket, 2 * super::proto::WINDOW as usize + 2))
                .collect(),
            "ignores the flow-control window",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // A destination each: a child process that another test forks at the wrong moment
        // can hold a just-released lock of this process for a while.
        let dest = dest.join(i.to_string());
        std::fs::create_dir_all(&dest).unwrap();
        let r = hostile(&dest, frames.clone(), false);
        assert_eq!(r.state, RunState::Failed, "{frames:?}");
        let e = r.error.unwrap();
        assert!(e.contains(want), "{want}: {e}");
        assert_eq!(fingerprint(&v), before, "{frames:?}");
        published += crate::store::layout::HostDir::open(&dest.join("client")).unwrap().list().unwrap().len();
    }
    assert_eq!(published, 0, "nothing published");
}

/// Item 3 of issue 12: device nodes of a pulled host are not recreated unless its plan says
/// so (counted as skipped); FIFOs are; a set-id file is stored as it is (the host directory,
/// not the copy, keeps it out of other users' reach).
#[test]
fn device_nodes_of_a_pulled_host_are_skipped_unless_allowed() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let v = victim(dir.path());
    let before = fingerprint(&v);
    let node = |name: &[u8], mode: u32, rdev: u64| FromAgent::Special {
        name: name.to_vec(),
        meta: Meta { mode, rdev, uid: 4242, mtime: 1, ..Meta::default() },
    };
    let content = b"#!/bin/sh\nid\n".to_vec();
    let setid = Meta { mode: 0o106755, size: content.len() as u64, mtime: 1, ..Meta::default() };
    let frames = vec![
        FromAgent::Source { index: 0, parent: b"srv".to_vec() },
        FromAgent::Dir { name: b"x".to_vec(), meta: Meta { mode: 0o40755, ..Meta::default() } },
        node(b"fifo", 0o10644, 0),
        FromAgent::File { name: b"rootshell".to_vec(), meta: setid.clone(), link: None, xattrs: None },
        node(b"sda", 0o60666, rustix::fs::makedev(8, 0)),
        node(b"mem", 0o20666, rustix::fs::makedev(1, 1)),
        FromAgent::Data { id: 3, offset: 0, lz4: None, bytes: content.clone() },
        FromAgent::FileEnd {
            id: 3,
            length: content.len() as u64,
            hash: *blake3::hash(&content).as_bytes(),
            meta: setid,
            torn: false,
        },
        FromAgent::DirEnd,
        FromAgent::SourceEnd,
        FromAgent::WalkEnd {
            excluded: 0,
            excluded_caches: 0,
            excluded_if_present: 0,
            excluded_large: 0,
            ancestors: vec![(b"srv".to_vec(), Meta { mode: 0o40755, ..Meta::default() })],
        },
    ];
    let when = |d: &str| format!("2025-01-{d}T02:00:00+01:00[+01:00]").parse().unwrap();
    let run = |devices: bool, at: jiff::Zoned, dest: &Path| {
        std::fs::create_dir_all(dest).unwrap();
        let job = pulled_job("client", vec!["/srv/x".into()], dest, vec![]);
        let mut opts = RunOptions::for_job(&job);
        opts.prune = false;
        opts.now = Some(at);
        let connect = scripted(frames.clone());
        run::run_from(&job, &Pull { host: "client", connect: &connect, devices }, &opts, &|_| {})
    };
    let off = run(false, when("15"), &dest);
    let snap = snapshot_dir(&dest, "client", &off).join("srv/x");
    assert_eq!(off.state, RunState::Success, "skipping is policy, not a problem: {off:?}");
    assert_eq!((off.counts.devices_skipped, off.counts.specials), (2, 1), "{:?}", off.counts);
    assert!(
        std::fs::symlink_metadata(snap.join("sda")).is_err() && std::fs::symlink_metadata(snap.join("mem")).is_err()
    );
    assert!(std::fs::symlink_metadata(snap.join("fifo")).unwrap().file_type().is_fifo());
    let shell = std::fs::symlink_metadata(snap.join("rootshell")).unwrap();
    assert_eq!((shell.mode() & 0o7777, shell.uid()), (0o6755, 0), "a set-id file is stored as it is");
    assert_eq!(std::fs::read(snap.join("rootshell")).unwrap(), content);

    // Into another destination, so that the file is transferred again (not linked).
    let dest = dir.path().join("dest2");
    let on = run(true, when("16"), &dest);
    let snap = snapshot_dir(&dest, "client", &on).join("srv/x");
    assert_eq!((on.counts.devices_skipped, on.counts.specials), (0, 3), "{:?}", on.counts);
    let sda = std::fs::symlink_metadata(snap.join("sda")).unwrap();
    assert!(sda.file_type().is_block_device() && sda.rdev() == rustix::fs::makedev(8, 0));
    assert!(std::fs::symlink_metadata(snap.join("mem")).unwrap().file_type().is_char_device());
    assert_eq!(fingerprint(&v), before);
}

/// A pulled host's `trusted.*` and `security.*` attributes (other than file capabilities),
/// which would tell this machine's kernel how to treat the copy (an overlayfs redirect, an
/// SELinux label, an IMA hash), are not written; `user.*` and capabilities are.
#[test]
fn a_pulled_host_cannot_set_trusted_or_security_label_attributes() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    // VFS_CAP_REVISION_2, cap_net_bind_service permitted.
    let cap: Vec<u8> = [0x0200_0000u32, 1 << 10, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    let x = |n: &str, v: &[u8]| (n.as_bytes().to_vec(), v.to_vec());
    let planted = vec![
        x("trusted.overlay.redirect", b"/etc"),
        x("trusted.overlay.opaque", b"y"),
        x("security.selinux", b"system_u:object_r:shadow_t:s0"),
        x("security.ima", b"\x03\x02"),
        x("user.tag", b"mine"),
    ];
    let with_cap = [planted.clone(), vec![x("security.capability", &cap)]].concat();
    let fmeta = Meta { mode: 0o100755, size: 3, mtime: 5, xattrs: with_cap, ..Meta::default() };
    let dmeta = Meta { mode: 0o40755, xattrs: planted, ..Meta::default() };
    let frames = vec![
        FromAgent::Source { index: 0, parent: b"srv".to_vec() },
        FromAgent::Dir { name: b"x".to_vec(), meta: dmeta.clone() },
        FromAgent::File {
            name: b"f".to_vec(),
            meta: Meta { mode: 0o100755, size: 3, ..Meta::default() },
            link: None,
            xattrs: None,
        },
        FromAgent::Data { id: 2, offset: 0, lz4: None, bytes: b"abc".to_vec() },
        FromAgent::FileEnd { id: 2, length: 3, hash: *blake3::hash(b"abc").as_bytes(), meta: fmeta, torn: false },
        FromAgent::DirEnd,
        FromAgent::SourceEnd,
        FromAgent::WalkEnd {
            excluded: 0,
            excluded_caches: 0,
            excluded_if_present: 0,
            excluded_large: 0,
            ancestors: vec![(b"srv".to_vec(), dmeta)],
        },
    ];
    let r = hostile(&dest, frames, false);
    assert_eq!(r.state, RunState::Success, "{r:?}");
    let snap = snapshot_dir(&dest, "client", &r);
    let names = |p: &Path| {
        let f = std::fs::File::open(p).unwrap();
        let mut n: Vec<String> = crate::fs::fsops::read_xattrs_fd(std::os::fd::AsFd::as_fd(&f))
            .unwrap()
            .into_iter()
            .map(|(n, _)| String::from_utf8_lossy(&n).into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&snap.join("srv/x/f")), ["security.capability", "user.tag"]);
    assert_eq!(names(&snap.join("srv/x")), ["user.tag"], "a directory");
    assert_eq!(names(&snap.join("srv")), ["user.tag"], "a directory above the sources");
}

/// The agent's walk is this machine's (`fs::tree`): no recursion bounded by the thread's
/// stack and at most `OPEN_LEVELS` directories open, so a tree 10 000 directories deep (paths
/// far beyond PATH_MAX, far more levels than descriptors a process may usually hold) is walked
/// whole, down to the file at its bottom.
#[test]
fn the_agent_walks_a_very_deep_tree() {
    use rustix::fs::{Mode, OFlags};
    const DEPTH: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("deep");
    std::fs::create_dir_all(&top).unwrap();
    let mut fd = crate::source::local::open_dir(&top).unwrap();
    for _ in 0..DEPTH {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    }
    std::fs::write(format!("/proc/self/fd/{}/bottom.txt", std::os::fd::AsRawFd::as_raw_fd(&fd)), "bottom").unwrap();
    drop(fd);
    let served = drive_agent(allow(&top), &[&top]);
    assert_eq!(served.error, None);
    assert!(served.warnings.is_empty(), "{:?}", served.warnings);
    let dirs = served.names.iter().filter(|n| *n == "d").count();
    assert_eq!(dirs, DEPTH, "every level walked");
    assert_eq!(served.open_dirs, 0, "every directory's DirEnd sent");
    assert_eq!(served.content, b"bottom");
    // Removed from the top, one level at a time (a recursive removal might not manage).
    loop {
        match std::fs::rename(top.join("d/d"), top.join("x")) {
            Ok(()) => {
                std::fs::remove_dir(top.join("d")).unwrap();
                std::fs::rename(top.join("x"), top.join("d")).unwrap();
            }
            Err(_) => {
                std::fs::remove_dir_all(top.join("d")).unwrap();
                break;
            }
        }
    }
}

/// Runs `f` on a thread and waits at most `secs` for it: a server that hangs fails the test
/// instead of hanging it (the thread is left behind).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs)).expect("the server side is still busy: it hangs")
}

/// Runs a pull of `/srv/x` at `when` against a stand-in agent sending `frames`.
fn hostile_at(dest: &Path, frames: Vec<super::proto::FromAgent>, when: &str) -> RunReport {
    let job = pulled_job("client", vec!["/srv/x".into()], dest, vec![]);
    let mut opts = RunOptions::for_job(&job);
    opts.prune = false;
    opts.now = Some(when.parse().unwrap());
    let connect = scripted(frames);
    run::run_from(&job, &Pull { host: "client", connect: &connect, devices: false }, &opts, &|_| {})
}

/// `entries` in the directory `/srv/x`, as a complete walk.
fn walk_of(entries: Vec<super::proto::FromAgent>) -> Vec<super::proto::FromAgent> {
    use super::proto::{FromAgent, Meta};
    let dmeta = Meta { mode: 0o40755, ..Meta::default() };
    [
        FromAgent::Source { index: 0, parent: b"srv".to_vec() },
        FromAgent::Dir { name: b"x".to_vec(), meta: dmeta.clone() },
    ]
    .into_iter()
    .chain(entries)
    .chain([
        FromAgent::DirEnd,
        FromAgent::SourceEnd,
        FromAgent::WalkEnd {
            excluded: 0,
            excluded_caches: 0,
            excluded_if_present: 0,
            excluded_large: 0,
            ancestors: vec![(b"srv".to_vec(), dmeta)],
        },
    ])
    .collect()
}

/// Review A, 1: a symlink (or FIFO) of one pull, sent as a `File` of the same mode, owner,
/// size and mtime in the next, passed the quick check: it was hard-linked in as an unchanged
/// file and then read to hash it, through the symlink (a file outside the destination, or
/// /dev/zero for ever) or blocking on the FIFO. A `File` frame must have a regular file's mode.
#[test]
fn a_symlink_or_fifo_sent_again_as_a_file_is_refused_not_read() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("outside-secret");
    std::fs::write(&secret, "server secret\n").unwrap();
    let target = secret.to_str().unwrap().as_bytes().to_vec();
    let lmeta = Meta { mode: 0o120777, size: target.len() as u64, mtime: 1000, ..Meta::default() };
    let fmeta = Meta { mode: 0o10644, size: 0, mtime: 1000, ..Meta::default() };
    let cases = [
        (FromAgent::Symlink { name: b"s".to_vec(), meta: lmeta.clone(), target }, lmeta, "mode 120777"),
        (FromAgent::Special { name: b"s".to_vec(), meta: fmeta.clone() }, fmeta, "mode 10644"),
    ];
    for (i, (first, meta, mode)) in cases.into_iter().enumerate() {
        let dest = dir.path().join(format!("dest{i}"));
        std::fs::create_dir_all(&dest).unwrap();
        let r1 = hostile_at(&dest, walk_of(vec![first]), "2025-01-15T02:00:00+01:00[+01:00]");
        assert_eq!(r1.state, RunState::Success, "{r1:?}");
        let again = FromAgent::File { name: b"s".to_vec(), meta, link: None, xattrs: None };
        let d = dest.clone();
        let r2 = within(30, move || hostile_at(&d, walk_of(vec![again]), "2025-01-16T02:00:00+01:00[+01:00]"));
        assert_eq!(r2.state, RunState::Failed, "{r2:?}");
        let e = r2.error.unwrap();
        assert!(e.contains("/srv/x/s is sent as a regular file") && e.contains(mode), "{e}");
    }
}

/// Review A, 4: content at an offset far beyond the file's listed size made this side hash
/// the hole before it as zeros, for days (`Data { offset: 1 << 50 }`, `FileEnd { length:
/// 1 << 50 }`); an offset whose end overflows made it hash 16 EiB. Now such a file is left
/// out with a warning naming the cause.
#[test]
fn a_hole_beyond_the_listed_size_is_refused_not_hashed() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let file = FromAgent::File {
        name: b"f".to_vec(),
        meta: Meta { mode: 0o100644, size: 1, ..Meta::default() },
        link: None,
        xattrs: None,
    };
    // The file is the walk's third frame, so its id is 2.
    let end = |length| FromAgent::FileEnd { id: 2, length, hash: [0; 32], meta: Meta::default(), torn: false };
    let data = |offset, bytes: &[u8]| FromAgent::Data { id: 2, offset, lz4: None, bytes: bytes.to_vec() };
    let cases = [
        (
            vec![file.clone(), data(1 << 50, b"x"), end((1 << 50) + 1)],
            "a hole up to byte 1125899906842624, beyond the 1 bytes",
        ),
        (vec![file.clone(), end(1 << 50)], "a hole up to byte 1125899906842624, beyond the 1 bytes"),
        (vec![file.clone(), data(u64::MAX, b"xy"), end(1)], "content beyond the largest possible offset"),
    ];
    for (i, (entries, warning)) in cases.into_iter().enumerate() {
        let dest = dir.path().join(i.to_string());
        std::fs::create_dir_all(&dest).unwrap();
        let d = dest.clone();
        let r = within(30, move || hostile_at(&d, walk_of(entries), "2025-01-15T02:00:00+01:00[+01:00]"));
        assert_eq!(r.state, RunState::Partial, "{r:?}");
        assert!(r.warnings.iter().any(|x| x.path == Path::new("/srv/x/f") && x.message.contains(warning)), "{r:?}");
        assert_eq!(r.counts.files, 0, "left out: {r:?}");
    }
}

/// Review A, 2: warnings from the agent are cut to `MAX_WARNING_LEN` bytes as they arrive
/// (a 16 MiB message LZ4-compresses to some 64 KiB on the wire), and the recorder keeps only
/// the first `MAX_WARNINGS_KEPT` while counting them all.
#[test]
fn warnings_from_the_agent_are_cut_and_only_the_first_ones_kept() {
    use super::proto::FromAgent;
    use crate::store::record::MAX_WARNING_LEN;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let long = FromAgent::Warn { path: vec![b'p'; 3 * MAX_WARNING_LEN], message: "é".repeat(2 * MAX_WARNING_LEN) };
    let r = hostile_at(&dest, walk_of(vec![long]), "2025-01-15T02:00:00+01:00[+01:00]");
    assert_eq!(r.state, RunState::Partial, "{r:?}");
    let w = &r.warnings[0];
    let kept = MAX_WARNING_LEN - 64;
    let marker = format!("… ({} more bytes cut)", 4 * MAX_WARNING_LEN - kept);
    assert!(w.message.len() <= MAX_WARNING_LEN && w.message.ends_with(&marker), "{}", w.message);
    let path = w.path.to_str().unwrap();
    let marker = format!("… ({} more bytes cut)", 3 * MAX_WARNING_LEN - kept);
    assert!(path.len() <= MAX_WARNING_LEN && path.ends_with(&marker), "{path}");

    // The recorder itself, for the local walk too: run.rs keeps only the first ones anyway.
    let meta = crate::fs::Dir::open_trusted(dir.path()).unwrap();
    let manifest = crate::store::manifest::ManifestWriter::create_in(&meta, &crate::fs::Name::fixed("m")).unwrap();
    let cursor = crate::store::manifest::Cursor::empty();
    let mut writer = crate::store::record::Writer::new(manifest, cursor, dir.path().to_path_buf(), &|_| {});
    let n = crate::store::meta::MAX_WARNINGS_KEPT + 500;
    for i in 0..n {
        writer.warn(PathBuf::from(format!("/w{i}")), "m".repeat(3 * MAX_WARNING_LEN));
    }
    let (counts, warnings, _) = writer.finish().unwrap();
    assert_eq!(counts.warnings, n as u64);
    assert_eq!(warnings.len(), crate::store::meta::MAX_WARNINGS_KEPT);
    assert!(warnings.iter().all(|w| w.message.len() <= MAX_WARNING_LEN));
}

/// Review A, 2: walk frames read while the walk waits for a transfer are held up to
/// `MAX_DEFERRED_BYTES`, not only up to twice the flow-control window in number (thousands
/// of 16 MiB frames).
#[test]
fn walk_frames_held_during_transfers_are_bounded_in_bytes() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let meta = Meta { mode: 0o100644, size: 5, ..Meta::default() };
    let linked =
        |name: &[u8]| FromAgent::File { name: name.to_vec(), meta: meta.clone(), link: Some((1, 1)), xattrs: None };
    // The second name of a hard link waits for the first copy, which never comes.
    let mut entries = vec![linked(b"a"), linked(b"b")];
    let message = "w".repeat(8 << 20);
    let n = super::pull::MAX_DEFERRED_BYTES / message.len() + 2;
    entries.extend((0..n).map(|_| FromAgent::Warn { path: b"/w".to_vec(), message: message.clone() }));
    let r = hostile_at(&dest, walk_of(entries), "2025-01-15T02:00:00+01:00[+01:00]");
    assert_eq!(r.state, RunState::Failed, "{r:?}");
    assert!(
        r.error.as_ref().unwrap().contains("more than 64 MiB of walk frames while files were in transfer"),
        "{r:?}"
    );
}

/// Review A, 3: each directory level kept its own copy of its full path, so memory grew with
/// the square of the depth (2000 levels of 255-byte names: 500 MiB). Measured in a child
/// process running only this pull, whose peak RSS is its own.
#[test]
fn deep_nesting_from_the_agent_takes_memory_linear_in_depth() {
    use super::proto::{FromAgent, Meta};
    const DEPTH: usize = 2000;
    const NAME: &str = "source::remote::tests::deep_nesting_from_the_agent_takes_memory_linear_in_depth";
    if std::env::var_os("HWC_TEST_DEEP_CHILD").is_some() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let meta = Meta { mode: 0o40755, ..Meta::default() };
        let mut frames = vec![FromAgent::Source { index: 0, parent: b"srv".to_vec() }];
        frames.extend((0..DEPTH).map(|_| FromAgent::Dir { name: vec![b'd'; 255], meta: meta.clone() }));
        let r = hostile(&dest, frames, false);
        assert!(r.error.as_ref().unwrap().contains("closed in the middle"), "{r:?}");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        println!("PEAK_KIB={}", hwm.split_whitespace().nth(1).unwrap());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("HWC_TEST_DEEP_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let peak = stdout.split("PEAK_KIB=").nth(1).and_then(|s| s.split_whitespace().next()).expect("the child reports");
    let peak: u64 = peak.parse().unwrap();
    assert!(peak < 200 << 10, "peak RSS {} MiB for {DEPTH} levels", peak >> 10);
}

/// Each open directory's metadata waits for its `DirEnd`: nested directories that each carry
/// a frame's worth of extended attributes would hold the sum of them all. Beyond
/// `MAX_HELD_DIR_XATTRS` the pull stops, naming the directory.
#[test]
fn directories_attributes_held_while_they_are_open_are_bounded_in_bytes() {
    use super::proto::{FromAgent, Meta};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let big = vec![(b"user.big".to_vec(), vec![b'x'; 15 << 20])];
    let meta = Meta { mode: 0o40755, xattrs: big, ..Meta::default() };
    let n = super::pull::MAX_HELD_DIR_XATTRS / (15 << 20) + 1;
    let mut frames = vec![FromAgent::Source { index: 0, parent: b"srv".to_vec() }];
    frames.extend((0..n).map(|i| FromAgent::Dir { name: format!("d{i}").into_bytes(), meta: meta.clone() }));
    let r = hostile(&dest, frames, false);
    assert_eq!(r.state, RunState::Failed, "{r:?}");
    let e = r.error.as_ref().unwrap();
    assert!(e.contains("more than 64 MiB of extended attributes of directories not yet closed"), "{e}");
    assert!(e.contains(&format!("/d{}", n - 1)), "{e}");
}
