//! Pulling other machines over ssh (`hwc-backup pull` ↔ `hwc-backup agent`): a real OpenSSH
//! `sshd` started by each test on 127.0.0.1 with its own host key, and a client key that
//! `authorized_keys` restricts to the agent command. A pulled snapshot equals the local
//! snapshot of the same tree (rsync and the manifest agree), unchanged files are hard links,
//! a small change in a large file crosses the wire as a small delta, a dropped connection
//! publishes nothing and the next run works, and the restricted key runs nothing else.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::snapshot::{assert_attribute_changes_copied, rich_tree, rsync_differences};
use crate::util::*;

const SSHD: &str = "/usr/sbin/sshd";
pub(crate) const CLIENT: &str = "client";

/// An sshd of our own on a free loopback port, stopped on drop.
pub(crate) struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Sshd {
    /// Starts sshd with a fresh host key and one client key whose `authorized_keys` entry
    /// forces `hwc-backup agent --allow ALLOW`.
    pub(crate) fn start(dir: &Path, allow: &Path) -> Sshd {
        Sshd::start_with(dir, allow, "")
    }

    /// [`Sshd::start`] with `before` (shell commands, e.g. a `ulimit`) ahead of the agent.
    fn start_with(dir: &Path, allow: &Path, before: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run tests/run (the README's test command), which installs openssh-server"
        );
        let dir = dir.join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        // sshd's privilege separation directory (Debian's package creates it at boot only).
        std::fs::create_dir_all("/run/sshd").unwrap();
        for key in ["host_key", "client_key", "other_key"] {
            sh(&format!("ssh-keygen -q -t ed25519 -N '' -C {key} -f '{}'", dir.join(key).display()));
        }
        let pubkey = |k: &str| std::fs::read_to_string(dir.join(format!("{k}.pub"))).unwrap().trim().to_string();
        let command = format!("{before}{} agent --allow {}", bin(), allow.display());
        let restrictions = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding";
        let authorized = format!("command=\"{command}\",{restrictions} {}\n", pubkey("client_key"));
        std::fs::write(dir.join("authorized_keys"), authorized).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {}\n", pubkey("host_key"))).unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel ERROR\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd { dir, port, child };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let log = || std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}: {}", log());
            }
            assert!(Instant::now() < deadline, "sshd did not listen on port {} within 10 s: {}", self.port, log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ssh` options that trust this sshd's host key only.
    fn ssh_options(&self) -> Vec<String> {
        vec![
            format!("UserKnownHostsFile={}", self.dir.join("known_hosts").display()),
            "StrictHostKeyChecking=yes".into(),
        ]
    }

    fn key(&self, name: &str) -> String {
        s(&self.dir.join(name))
    }

    /// `hwc-backup pull` of `env.src` as host `client`, at `when`, with `extra` arguments.
    fn pull(&self, env: &Env, when: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> =
            ["pull", "--address", "127.0.0.1", "--user", "root", "--port"].map(String::from).to_vec();
        args.push(self.port.to_string());
        if !extra.contains(&"--ssh-key") {
            args.extend(["--ssh-key".into(), self.key("client_key")]);
        }
        for o in self.ssh_options() {
            args.extend(["--ssh-option".into(), o]);
        }
        args.extend(["--source".into(), s(&env.src), "--dest".into(), s(&env.dest), "--host".into(), CLIENT.into()]);
        args.extend(["--state-dir".into(), s(&env.state), "--now".into(), when.into(), "--no-prune".into()]);
        args.extend(extra.iter().map(|x| x.to_string()));
        env.cmd(&[]).args(&args).output().expect("run hwc-backup pull")
    }

    pub(crate) fn pull_ok(&self, env: &Env, when: &str, extra: &[&str]) -> serde_json::Value {
        let mut extra = extra.to_vec();
        extra.push("--json");
        let out = self.pull(env, when, &extra);
        assert!(out.status.success(), "pull failed: {}", show(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `env.src` sits inside a snapshot of host `host`.
fn inside(env: &Env, host: &str, id: &str) -> PathBuf {
    env.dest.join(host).join(id).join(env.src.strip_prefix("/").unwrap())
}

fn manifest(env: &Env, host: &str, id: &str) -> Vec<u8> {
    std::fs::read(env.dest.join(host).join(id).join(".hwc-backup/manifest.b3")).unwrap()
}

/// rsync's view of two snapshot trees below their top directory (`var/` for sources under
/// `/var/tmp`), so the directories above the source count too; the snapshot directory itself
/// differs by nature (its own creation time) and is left out.
fn tree_differences(env: &Env, a: &Path, b: &Path) -> String {
    // The source's own tree: its ancestors (/var/tmp …) are copied too, but their mtimes move
    // whenever a test running alongside creates its scratch directory, between the two runs.
    let top = env.src.strip_prefix("/").expect("a source below /");
    let (a, b) = (a.join(top), b.join(top));
    sh(&format!("rsync -aHAXn --itemize-changes --delete '{}/' '{}/'", a.display(), b.display()))
}

#[test]
fn pulled_snapshots_equal_local_ones_and_link_unchanged_files() {
    require("rsync");
    require("setfacl");
    let env = Env::new();
    rich_tree(&env.src);
    let sshd = Sshd::start(env.dir.path(), &env.src);
    let t1 = "2025-01-15T02:00:00+01:00";
    // --devices: the tree holds a device node, which a pull recreates only when told to.
    let report = sshd.pull_ok(&env, t1, &["--devices"]);
    assert_eq!(report["state"], "success", "{report}");
    assert_eq!(report["counts"]["devicesSkipped"], 0, "{report}");
    env.snapshot_ok(t1, &["--no-prune"]);
    let id1 = "daily/2025-01-15_02-00-00";
    let (pulled, local) = (env.dest.join(CLIENT).join(id1), env.dest.join(HOST).join(id1));
    assert_eq!(tree_differences(&env, &local, &pulled), "", "rsync sees differences between local and pulled snapshot");
    assert_eq!(rsync_differences(&env.src, &inside(&env, CLIENT, id1)), "");
    assert_eq!(manifest(&env, CLIENT, id1), manifest(&env, HOST, id1));
    let sparse = std::fs::metadata(inside(&env, CLIENT, id1).join("home/alice/sparse")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "holes stay holes: {} blocks", sparse.blocks());

    // A day later: one file changed, one added, one removed.
    write(&env.src.join("home/alice/notes.txt"), "notes, edited\n");
    write(&env.src.join("home/alice/new.txt"), "new\n");
    std::fs::remove_file(env.src.join("home/alice/docs/empty")).unwrap();
    let t2 = "2025-01-16T02:00:00+01:00";
    let report = sshd.pull_ok(&env, t2, &["--devices"]);
    assert_eq!(report["state"], "success", "{report}");
    env.snapshot_ok(t2, &["--no-prune"]);
    let id2 = "daily/2025-01-16_02-00-00";
    let (pulled2, local2) = (env.dest.join(CLIENT).join(id2), env.dest.join(HOST).join(id2));
    assert_eq!(tree_differences(&env, &local2, &pulled2), "");
    assert_eq!(manifest(&env, CLIENT, id2), manifest(&env, HOST, id2));
    let (a, b) = (inside(&env, CLIENT, id1), inside(&env, CLIENT, id2));
    assert_eq!(ino(&a.join("home/alice/docs/report.pdf")), ino(&b.join("home/alice/docs/report.pdf")));
    assert_eq!(ino(&a.join("home/bob/secret")), ino(&b.join("home/bob/secret")));
    assert_ne!(ino(&a.join("home/alice/notes.txt")), ino(&b.join("home/alice/notes.txt")));
    assert_eq!(report["counts"]["copied"], 2, "the edited and the new file: {report}");
    assert_eq!(std::fs::read_link(env.dest.join(CLIENT).join("latest")).unwrap(), Path::new(id2));
}

/// An ssh wrapper that counts the bytes of both directions into files next to it.
fn counting_ssh(dir: &Path) -> PathBuf {
    let script = dir.join("counting-ssh");
    let d = dir.display();
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nset -o pipefail\n\
             tee >(wc -c > '{d}/to-agent.count') | ssh \"$@\" | tee >(wc -c > '{d}/from-agent.count')\n"
        ),
    )
    .unwrap();
    sh(&format!("chmod +x '{}'", script.display()));
    script
}

#[test]
fn a_small_change_in_a_large_file_crosses_the_wire_as_a_small_delta() {
    let env = Env::new();
    let sshd = Sshd::start(env.dir.path(), &env.src);
    let big = env.src.join("disk.img");
    sh(&format!("head -c 200M /dev/urandom > '{}'", big.display()));
    sshd.pull_ok(&env, "2025-01-15T02:00:00+01:00", &[]);
    sh(&format!("head -c 1M /dev/urandom | dd of='{}' bs=1M seek=100 conv=notrunc status=none", big.display()));
    let counter = env.dir.path().join("counter");
    std::fs::create_dir_all(&counter).unwrap();
    let wrapper = counting_ssh(&counter);
    let report = sshd.pull_ok(&env, "2025-01-16T02:00:00+01:00", &["--ssh-program", &s(&wrapper)]);
    let count = |f: &str| -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(counter.join(f)).unwrap_or_default();
            if let Ok(n) = text.trim().parse() {
                return n;
            }
            assert!(Instant::now() < deadline, "no byte count in {f}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (from_agent, to_agent) = (count("from-agent.count"), count("to-agent.count"));
    assert!(from_agent + to_agent < 5 << 20, "{from_agent} + {to_agent} bytes on the wire for a 1 MiB change");
    assert!(from_agent > 1 << 20, "the changed MiB itself crossed: {from_agent}");
    assert_eq!(report["transfer"]["bytesReceived"], from_agent, "{report}");
    let stored = inside(&env, CLIENT, "daily/2025-01-16_02-00-00").join("disk.img");
    sh(&format!("cmp '{}' '{}'", big.display(), stored.display()));
}

/// `setfattr` and `setfacl` change only a file's ctime, which the quick check does not see:
/// the agent sends the attributes of the files touched since the previous pull's walk began
/// (its own clock, kept as `clientWalkStartedAt`), and the server copies such a file instead
/// of linking the old copy with the old attributes. An attribute removed counts as a change;
/// untouched files stay linked.
#[test]
fn a_pulled_file_whose_only_change_is_an_xattr_or_acl_gets_a_new_copy() {
    require("setfacl");
    require("rsync");
    let env = Env::new();
    for f in ["tagged", "acl", "dropped", "same"] {
        write(&env.src.join(f), format!("{f}\n"));
    }
    let tag_source = |v: &str| set_xattr(&env.src.join("tagged"), "user.tag", v);
    tag_source("one");
    set_xattr(&env.src.join("dropped"), "user.gone", "soon");
    let sshd = Sshd::start(env.dir.path(), &env.src);
    let ids = ["daily/2025-01-15_02-00-00", "daily/2025-01-16_02-00-00", "daily/2025-01-17_02-00-00"];
    sshd.pull_ok(&env, "2025-01-15T02:00:00+01:00", &[]);
    let meta = env.dest.join(CLIENT).join(ids[0]).join(".hwc-backup/meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    assert!(meta["clientWalkStartedAt"].is_string(), "the agent's walk start is recorded: {meta}");
    tag_source("two");
    sh(&format!("setfacl -m u:nobody:r '{}'", s(&env.src.join("acl"))));
    sh(&format!("setfattr -x user.gone '{}'", s(&env.src.join("dropped"))));
    let report = sshd.pull_ok(&env, "2025-01-16T02:00:00+01:00", &[]);
    assert_eq!(report["counts"]["copied"], 3, "the three files whose attributes changed: {report}");
    tag_source("three");
    sshd.pull_ok(&env, "2025-01-17T02:00:00+01:00", &[]);
    let snap = |i: usize| inside(&env, CLIENT, ids[i]);
    assert_attribute_changes_copied(&env.src, &snap);
    assert_ne!(ino(&snap(0).join("dropped")), ino(&snap(1).join("dropped")), "a removed attribute is a change");
    assert_eq!(xattr(&snap(0).join("dropped"), "user.gone"), "soon", "the older snapshot keeps what it had");
}

/// The attribute comparison of a pull reads the previous copy: a symlink planted there, to a
/// victim outside with the source's new attribute, content and mtime, is never followed — the
/// file arrives as a regular file with its attribute, and the victim is unchanged.
#[test]
fn a_symlink_planted_at_a_pulled_previous_copy_is_not_followed_by_the_attribute_check() {
    let env = Env::new();
    let src = env.src.join("tagged");
    write(&src, "tagged\n");
    set_xattr(&src, "user.tag", "one");
    let sshd = Sshd::start(env.dir.path(), &env.src);
    sshd.pull_ok(&env, "2025-01-15T02:00:00+01:00", &[]);
    set_xattr(&src, "user.tag", "two");
    let victim = env.dir.path().join("victim");
    sh(&format!("cp -a '{}' '{}'", s(&src), s(&victim)));
    let planted = inside(&env, CLIENT, "daily/2025-01-15_02-00-00").join("tagged");
    std::fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    sshd.pull_ok(&env, "2025-01-16T02:00:00+01:00", &[]);
    let new = inside(&env, CLIENT, "daily/2025-01-16_02-00-00").join("tagged");
    assert!(std::fs::symlink_metadata(&new).unwrap().file_type().is_file(), "a regular file, pulled");
    assert_eq!((std::fs::read_to_string(&new).unwrap(), xattr(&new, "user.tag")), ("tagged\n".into(), "two".into()));
    assert_eq!(
        (std::fs::read_to_string(&victim).unwrap(), xattr(&victim, "user.tag")),
        ("tagged\n".into(), "two".into())
    );
    assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink(), "the plant is left as it was");
}

/// The agent walks a source as this machine does (`fs::tree`): with far fewer descriptors
/// than the tree has levels (`ulimit -n 40` before the agent, a tree 300 directories deep that
/// branches at every level) it
/// closes the directories high above and reopens them through `..`, so the whole tree arrives,
/// down to the file at its bottom, without a warning. (Holding every level open, as the agent
/// once did, runs out of descriptors and keeps the deep directories empty.)
#[test]
fn the_agent_walks_a_tree_deeper_than_its_descriptor_limit() {
    let env = Env::new();
    let mut deep = env.src.join("deep");
    for i in 0..300 {
        // A branch beside every level: the walk goes back up and down again.
        write(&deep.join("x/file"), format!("{i}\n"));
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    write(&deep.join("bottom.txt"), "bottom\n");
    write(&env.src.join("top.txt"), "top\n");
    let sshd = Sshd::start_with(env.dir.path(), &env.src, "ulimit -n 40; exec ");
    let t1 = "2025-01-15T02:00:00+01:00";
    let report = sshd.pull_ok(&env, t1, &[]);
    assert_eq!(report["state"], "success", "{report}");
    let snap = inside(&env, CLIENT, "daily/2025-01-15_02-00-00");
    let bottom = snap.join(deep.strip_prefix(&env.src).unwrap()).join("bottom.txt");
    assert_eq!(std::fs::read_to_string(&bottom).unwrap(), "bottom\n");
    assert_eq!(rsync_differences(&env.src, &snap), "");
}

#[test]
fn a_dropped_connection_publishes_nothing_and_the_next_run_succeeds() {
    let env = Env::new();
    write(&env.src.join("small"), "small\n");
    let sshd = Sshd::start(env.dir.path(), &env.src);
    sshd.pull_ok(&env, "2025-01-15T02:00:00+01:00", &[]);
    sh(&format!("head -c 20M /dev/urandom > '{}'", env.src.join("new.bin").display()));
    // The connection dies after 40 reads (at most 2.5 MiB) from the agent: in the middle of
    // new.bin. dd passes each read on at once (head would keep the agent's hello in its
    // buffer); exec, so that no shell stays behind holding the pipe open.
    let cut = env.dir.path().join("cut-ssh");
    std::fs::write(&cut, "#!/bin/bash\nexec ssh \"$@\" > >(dd bs=64k count=40 status=none)\n").unwrap();
    sh(&format!("chmod +x '{}'", cut.display()));
    let out = sshd.pull(&env, "2025-01-16T02:00:00+01:00", &["--ssh-program", &s(&cut)]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("host client") && text.contains("connection"), "{}", show(&out));
    let host = env.dest.join(CLIENT);
    let ids: Vec<_> = std::fs::read_dir(host.join("daily")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(ids, vec!["2025-01-15_02-00-00"], "only the earlier snapshot exists");
    assert_eq!(std::fs::read_link(host.join("latest")).unwrap(), Path::new("daily/2025-01-15_02-00-00"));
    assert!(tree(&host.join(".incomplete")).is_empty(), "no half snapshot is left behind");
    let report = sshd.pull_ok(&env, "2025-01-17T02:00:00+01:00", &[]);
    assert_eq!(report["state"], "success", "{report}");
    let stored = inside(&env, CLIENT, "daily/2025-01-17_02-00-00").join("new.bin");
    sh(&format!("cmp '{}' '{}'", env.src.join("new.bin").display(), stored.display()));
}

#[test]
fn the_restricted_key_runs_the_agent_and_nothing_else() {
    let env = Env::new();
    let sshd = Sshd::start(env.dir.path(), &env.src);
    let marker = env.dir.path().join("pwned");
    let ssh = |key: &str, extra: &[&str], command: &str| -> Output {
        let mut c = Command::new("timeout");
        c.args(["20", "ssh"]);
        for o in sshd.ssh_options() {
            c.args(["-o", &o]);
        }
        c.args(["-o", "BatchMode=yes", "-i", &sshd.key(key), "-p", &sshd.port.to_string()]);
        c.args(extra).args(["root@127.0.0.1", command]);
        c.stdin(Stdio::null()).output().unwrap()
    };
    let out = ssh("client_key", &[], &format!("echo pwned; touch '{}'", marker.display()));
    assert!(out.stdout.starts_with(b"HWCB"), "the forced command answered instead: {}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pwned"), "{}", show(&out));
    let out = ssh("client_key", &["-tt"], "sh -c 'touch /tmp/x'");
    assert!(!out.status.success() || out.stdout.starts_with(b"HWCB"), "{}", show(&out));
    assert!(!marker.exists(), "a shell command ran with the restricted key");
    let out = ssh("client_key", &["-N", "-R", "0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes"], "");
    assert!(!out.status.success(), "port forwarding was allowed: {}", show(&out));

    // A key that is not authorized at all: the run fails, saying why.
    let out = sshd.pull(&env, "2025-01-15T02:00:00+01:00", &["--ssh-key", &sshd.key("other_key")]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Permission denied"), "{}", show(&out));
    assert!(!env.dest.join(CLIENT).join("daily").exists());
}

#[test]
fn missing_source_wrong_program_and_wrong_version_are_clear_errors() {
    let env = Env::new();
    let sshd = Sshd::start(env.dir.path(), env.dir.path());
    let missing = env.dir.path().join("gone");
    let mut args = vec!["--source".to_string(), s(&missing)];
    let out = sshd.pull(&env, "2025-01-15T02:00:00+01:00", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(text.contains("the agent refused") && text.contains("gone") && text.contains("cannot be read"), "{text}");

    // Not an agent at all, and an agent of another protocol version, through stand-in programs.
    let fake = |name: &str, body: &str| -> String {
        let p = env.dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
        sh(&format!("chmod +x '{}'", p.display()));
        s(&p)
    };
    let not_found = fake("not-found", "echo 'bash: hwc-backup: command not found' >&2; exit 127");
    args = vec!["--ssh-program".into(), not_found];
    let out = sshd.pull(&env, "2025-01-15T02:00:00+01:00", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("command not found") && text.contains("exited with 127"), "{}", show(&out));
    let old = fake("old-agent", "printf 'HWCB\\0\\0\\0\\011'; cat >/dev/null");
    args = vec!["--ssh-program".into(), old];
    let out = sshd.pull(&env, "2025-01-15T02:00:00+01:00", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("speaks protocol 9") && text.contains("same hwc-backup version"), "{}", show(&out));
    assert!(!env.dest.join(CLIENT).join("daily").exists(), "nothing was published");
}

#[test]
fn a_host_of_the_plan_is_pulled_with_its_own_retention_and_records() {
    let env = Env::new();
    write(&env.src.join("etc/app.conf"), "x = 1\n");
    write(&env.src.join("cache/junk"), "junk\n");
    let sshd = Sshd::start(env.dir.path(), &env.src);
    let mut plan = plan_json(&env);
    plan["hosts"] = serde_json::json!({ CLIENT: {
        "address": "127.0.0.1", "user": "root", "port": sshd.port, "sshKeyFile": sshd.key("client_key"),
        "sshOptions": sshd.ssh_options(), "sources": [s(&env.src)], "excludePatterns": ["cache/"],
        "retention": { "last": 1, "daily": 0, "weekly": 0, "monthly": 0 } } });
    let file = write_plan(&env, "plan.json", &plan.to_string());
    let check = env.cmd(&["config", "check", &s(&file)]).output().unwrap();
    assert!(check.status.success(), "{}", show(&check));
    for when in ["2025-01-15T02:00:00+01:00", "2025-01-16T02:00:00+01:00"] {
        let out =
            env.cmd(&["pull", "--config", &s(&file), "--host", CLIENT, "--now", when, "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    let ids: Vec<_> =
        std::fs::read_dir(env.dest.join(CLIENT).join("daily")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(ids, vec!["2025-01-16_02-00-00"], "keepLast 1 of the host, not the plan's 7 daily");
    let snap = inside(&env, CLIENT, "daily/2025-01-16_02-00-00");
    assert!(snap.join("etc/app.conf").exists() && !snap.join("cache").exists(), "the host's excludes apply");
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state.join(CLIENT).join("last-run.json")).unwrap()).unwrap();
    assert_eq!((last["host"].as_str(), last["state"].as_str()), (Some(CLIENT), Some("success")));
    let out = env.cmd(&["pull", "--config", &s(&file), "--host", "nope"]).output().unwrap();
    assert_eq!(code(&out), 2, "an undeclared host is a usage error: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("client"), "{}", show(&out));

    // The other commands take the host's plan too: `prune --host client` keeps what the
    // host's rule (keepLast 1) keeps, not the plan's 7 daily.
    let when = "2025-01-17T02:00:00+01:00";
    let out =
        env.cmd(&["pull", "--config", &s(&file), "--host", CLIENT, "--now", when, "--no-prune"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = env.cmd(&["prune", "--config", &s(&file), "--host", CLIENT, "--now", when]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let ids: Vec<_> =
        std::fs::read_dir(env.dest.join(CLIENT).join("daily")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(ids, vec!["2025-01-17_02-00-00"], "prune --host used the plan's retention: {}", show(&out));
    let out = env.cmd(&["health", "--config", &s(&file), "--host", CLIENT, "--json"]).output().unwrap();
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(health.to_string().contains("2025-01-17_02-00-00"), "health --host checks the host's snapshots: {health}");
    // What backup-verify-host-<name>.service runs (the module's unit for a pulled host).
    let out = env.cmd(&["verify", "--config", &s(&file), "--host", CLIENT, "--json"]).output().unwrap();
    assert!(out.status.success(), "verify --host: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2025-01-17_02-00-00"), "{}", show(&out));

    // A pull that failed by itself under systemd records its invocation in the host's state
    // directory; OnFailure='s notify-failure for backup-host-client.service must find it there
    // and not notify a second time.
    let mut broken = plan.clone();
    broken["hosts"][CLIENT]["port"] = 1.into();
    let broken = write_plan(&env, "broken.json", &broken.to_string());
    let out = env
        .cmd(&["pull", "--config", &s(&broken), "--host", CLIENT, "--now", "2025-01-18T02:00:00+01:00"])
        .env("INVOCATION_ID", "pull-invocation-1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let out = env
        .cmd(&["notify-failure", "--unit", "backup-host-client.service", "--config", &s(&broken)])
        .env("INVOCATION_ID", "notify-invocation")
        .env("MONITOR_INVOCATION_ID", "pull-invocation-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sent its own notification"),
        "the pull's own notification was not recognised: {}",
        show(&out)
    );
}

#[test]
fn the_agent_refuses_a_bad_configuration_before_speaking() {
    let env = Env::new();
    let bad = write_plan(&env, "agent.json", r#"{ "allow": ["/home"], "colour": 1 }"#);
    for args in [vec!["agent", "--allow", "home"], vec!["agent", "--config", &s(&bad)]] {
        let out = env.cmd(&args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(code(&out), 2, "{}", show(&out));
        assert!(out.stdout.is_empty(), "nothing on the protocol stream: {}", show(&out));
    }
    let good = write_plan(&env, "agent-ok.json", &format!(r#"{{ "allow": ["{}"] }}"#, s(&env.src)));
    let out = env.cmd(&["agent", "--config", &s(&good)]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(code(&out), 1, "the server went away: {}", show(&out));
    assert!(out.stdout.starts_with(b"HWCB"), "{}", show(&out));
}

/// Owner, mode, mtime, ctime (any metadata change shows), xattrs and content of `root` and
/// everything below it.
fn fingerprint(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() { std::fs::read(&p).unwrap() } else { Vec::new() };
        let xattrs = match m.is_symlink() {
            true => Vec::new(),
            false => {
                let f = std::fs::File::open(&p).unwrap();
                hwc_backup_engine::fs::fsops::read_xattrs_fd(std::os::fd::AsFd::as_fd(&f)).unwrap()
            }
        };
        out.push(format!(
            "{} {:o} {}:{} {}.{} {}.{} {xattrs:?} {content:?}",
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
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// A stand-in for `ssh` that plays a hostile agent: it answers the hello, accepts the
/// request and sends `frames` as they are, whatever the server says.
fn hostile_ssh(dir: &Path, name: &str, frames: &[hwc_backup_engine::source::remote::proto::FromAgent]) -> String {
    use hwc_backup_engine::source::remote::proto;
    use std::io::Write;
    let mut bytes = Vec::new();
    proto::send_hello(&mut bytes).unwrap();
    proto::write_frame(&mut bytes, &proto::FromAgent::Ready { walk_started: 0 }).unwrap();
    let mut stream = proto::CompressedWriter::new(&mut bytes);
    for f in frames {
        proto::write_frame(&mut stream, f).unwrap();
    }
    stream.flush().unwrap();
    drop(stream);
    let data = dir.join(format!("{name}.frames"));
    std::fs::write(&data, bytes).unwrap();
    let program = dir.join(name);
    std::fs::write(&program, format!("#!/bin/bash\ncat '{}'\nexec cat >/dev/null\n", data.display())).unwrap();
    sh(&format!("chmod +x '{}'", program.display()));
    s(&program)
}

/// `hwc-backup pull` of `/srv/x` from host `client` through `ssh_program`.
fn pull_through(env: &Env, ssh_program: &str, when: &str, extra: &[&str]) -> Output {
    let mut args: Vec<String> =
        ["pull", "--address", "client.lan", "--user", "root", "--source", "/srv/x"].map(String::from).to_vec();
    args.extend(["--dest".into(), s(&env.dest), "--host".into(), CLIENT.into(), "--state-dir".into(), s(&env.state)]);
    args.extend(["--now".into(), when.into(), "--no-prune".into(), "--ssh-program".into(), ssh_program.into()]);
    args.extend(extra.iter().map(|x| x.to_string()));
    env.cmd(&[]).args(&args).output().expect("run hwc-backup pull")
}

/// Issue 12, items 1 and 3, through the real binary: a hostile agent that makes a name in its
/// snapshot a symlink to a directory of the server and then sends metadata "for" a directory
/// through it, or sends a name with `..`, changes nothing outside `<dest>/<host>/` and the
/// run fails naming the refused entry; its device nodes are only created with `--devices`.
#[test]
fn a_hostile_agent_changes_nothing_outside_its_host_directory() {
    use hwc_backup_engine::source::remote::proto::{FromAgent, Meta};
    let env = Env::new();
    let victim = env.dir.path().join("victim");
    write(&victim.join("target/file"), "precious");
    sh(&format!("setfattr -n user.tag -v mine '{}' 2>/dev/null || true", victim.join("target").display()));
    let before = fingerprint(&victim);
    let evil = Meta {
        mode: 0o47777,
        uid: 4242,
        gid: 4242,
        mtime: 1,
        xattrs: vec![(b"user.pwned".to_vec(), b"1".to_vec())],
        ..Meta::default()
    };
    let link = FromAgent::Symlink { name: b"evil".to_vec(), meta: Meta::default(), target: s(&victim).into_bytes() };
    let attacks = [
        (
            vec![
                FromAgent::Source { index: 0, parent: Vec::new() },
                link.clone(),
                FromAgent::SourceEnd,
                FromAgent::WalkEnd {
                    excluded: 0,
                    excluded_caches: 0,
                    excluded_if_present: 0,
                    excluded_large: 0,
                    ancestors: vec![(b"evil/target".to_vec(), evil.clone())],
                },
            ],
            "refused the directory /evil/target sent at the end of the walk: /evil in the snapshot is a symbolic link",
        ),
        (
            vec![
                FromAgent::Source { index: 0, parent: b"srv".to_vec() },
                FromAgent::Dir { name: b"..".to_vec(), meta: evil.clone() },
            ],
            "invalid file name \"..\"",
        ),
        (
            // A symlink where the server writes the snapshot's metadata after the walk.
            vec![
                FromAgent::Source { index: 0, parent: Vec::new() },
                FromAgent::Dir { name: b".hwc-backup".to_vec(), meta: Meta { mode: 0o40700, ..Meta::default() } },
                FromAgent::Symlink {
                    name: b"meta.tmp".to_vec(),
                    meta: Meta::default(),
                    target: s(&victim.join("target/file")).into_bytes(),
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
            "refused the entry /.hwc-backup",
        ),
    ];
    for (i, (frames, want)) in attacks.into_iter().enumerate() {
        let ssh = hostile_ssh(env.dir.path(), &format!("attack-{i}"), &frames);
        let out = pull_through(&env, &ssh, "2025-01-15T02:00:00+01:00", &[]);
        assert_eq!(code(&out), 1, "{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("host client") && text.contains(want), "{want}: {}", show(&out));
        assert_eq!(fingerprint(&victim), before, "attack {i} changed the victim");
        assert!(!env.dest.join(CLIENT).join("daily").exists(), "nothing was published");
    }

    // Device nodes: counted as skipped, not created, unless --devices.
    let node = |name: &[u8], mode: u32, rdev: u64| FromAgent::Special {
        name: name.to_vec(),
        meta: Meta { mode, rdev, mtime: 1, ..Meta::default() },
    };
    let frames = vec![
        FromAgent::Source { index: 0, parent: b"srv".to_vec() },
        FromAgent::Dir { name: b"x".to_vec(), meta: Meta { mode: 0o40755, ..Meta::default() } },
        node(b"fifo", 0o10644, 0),
        node(b"sda", 0o60666, 8 << 8),
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
    let ssh = hostile_ssh(env.dir.path(), "devices", &frames);
    let out = pull_through(&env, &ssh, "2025-01-15T02:00:00+01:00", &["--json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["counts"]["devicesSkipped"].as_u64(), report["counts"]["specials"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["state"], "success", "{report}");
    let snap = env.dest.join(CLIENT).join("daily/2025-01-15_02-00-00/srv/x");
    assert!(snap.join("fifo").symlink_metadata().is_ok() && snap.join("sda").symlink_metadata().is_err());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sda"), "the skipped node is logged: {}", show(&out));

    let out = pull_through(&env, &ssh, "2025-01-16T02:00:00+01:00", &["--json", "--devices"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["counts"]["devicesSkipped"], 0, "{report}");
    let sda = env.dest.join(CLIENT).join("daily/2025-01-16_02-00-00/srv/x/sda").symlink_metadata().unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_block_device(&sda.file_type()));
    assert_eq!(fingerprint(&victim), before);
}

/// `excludeCaches`, `excludeIfPresent` and `excludeLargerThan` of a pulled host: the agent's
/// walk honours them (from the plan's `hosts.<name>` and from `pull`'s flags alike) and the
/// server counts what they left out.
#[test]
fn a_pulled_host_leaves_out_caches_marked_directories_and_large_files() {
    use crate::exclude_by::{assert_left_out, tagged_tree};
    let env = Env::new();
    tagged_tree(&env.src);
    let sshd = Sshd::start(env.dir.path(), &env.src);
    let report = sshd.pull_ok(
        &env,
        "2025-01-15T02:00:00+01:00",
        &["--exclude-caches", "--exclude-if-present", ".nobackup", "--exclude-larger-than", "4K"],
    );
    assert_left_out(&inside(&env, CLIENT, "daily/2025-01-15_02-00-00"), &report["counts"]);
    // Without them, everything crosses (the sparse file as holes).
    let report = sshd.pull_ok(&env, "2025-01-16T02:00:00+01:00", &[]);
    assert_eq!(report["counts"]["excludedCaches"], 0, "{report}");
    assert!(inside(&env, CLIENT, "daily/2025-01-16_02-00-00").join("cache-ok/blob").exists());
    // From the plan.
    let mut plan = plan_json(&env);
    plan["hosts"] = serde_json::json!({ CLIENT: {
        "address": "127.0.0.1", "user": "root", "port": sshd.port, "sshKeyFile": sshd.key("client_key"),
        "sshOptions": sshd.ssh_options(), "sources": [s(&env.src)],
        "excludeCaches": true, "excludeIfPresent": [".nobackup"], "excludeLargerThan": "4K" } });
    let file = write_plan(&env, "plan.json", &plan.to_string());
    let when = "2025-01-17T02:00:00+01:00";
    let out = env.cmd(&["pull", "--config", &s(&file), "--host", CLIENT, "--now", when, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_left_out(&inside(&env, CLIENT, "daily/2025-01-17_02-00-00"), &report["counts"]);
    let meta = env.dest.join(CLIENT).join("daily/2025-01-17_02-00-00/.hwc-backup/meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    assert_eq!(meta["counts"]["excludedLarge"], 1, "{meta}");
}
