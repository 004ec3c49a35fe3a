//! The connection to an agent: `ssh … hwc-backup agent`, its pipes, and what it said on
//! stderr when something went wrong.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How to reach one host's agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or address.
    pub address: String,
    /// The user the agent runs as on the host.
    pub user: String,
    /// The ssh port.
    pub port: u16,
    /// The private key (`-i`); `None`: ssh's defaults.
    pub key_file: Option<PathBuf>,
    /// Extra `-o` options (`UserKnownHostsFile=…`), before ours so that they win.
    pub options: Vec<String>,
    /// The ssh program.
    pub program: PathBuf,
    /// The command asked for on the host; an `authorized_keys` `command=` replaces it anyway.
    pub remote_command: String,
}

impl SshTarget {
    /// ssh's arguments. Batch mode (a prompt would hang a timer), no pty, no escape
    /// character, no forwarding, keep-alives so that a dead peer ends the run.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        for o in &self.options {
            a.extend(["-o".into(), o.into()]);
        }
        for o in ["BatchMode=yes", "ServerAliveInterval=15", "ServerAliveCountMax=4", "ConnectTimeout=30"] {
            a.extend(["-o".into(), o.into()]);
        }
        a.extend(["-T", "-x", "-a", "-e", "none"].map(OsString::from));
        a.extend(["-p".into(), self.port.to_string().into()]);
        if let Some(k) = &self.key_file {
            a.extend(["-i".into(), k.clone().into_os_string(), "-o".into(), "IdentitiesOnly=yes".into()]);
        }
        a.extend(["-l".into(), self.user.clone().into(), "--".into(), self.address.clone().into()]);
        a.push(self.remote_command.clone().into());
        a
    }

    /// Starts ssh.
    pub fn connect(&self, host: &str) -> Result<Connection> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&self.program)
            .args(self.args())
            // Its own process group, so that stopping it also stops whatever it started (a
            // wrapper script's ssh, a ProxyCommand).
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Remote {
                host: host.to_string(),
                message: format!("cannot start {}: {e}", self.program.display()),
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let lines = tail.clone();
        // Detached: a descendant that keeps stderr open must not hold up the run.
        std::thread::spawn(move || collect_stderr(stderr, &lines));
        let mut c = Connection::from_streams(host, Box::new(stdout), Box::new(stdin));
        c.child = Some(child);
        c.stderr = Some(tail);
        Ok(c)
    }
}

/// Keeps the last lines a program writes on stderr (all of it is read, so it never blocks).
fn collect_stderr(r: impl Read, lines: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(r).split(b'\n').map_while(std::result::Result::ok) {
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut lines = lines.lock().expect("stderr lines poisoned");
        if lines.len() == 10 {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// A boxed reading stream.
pub type BoxRead = Box<dyn Read + Send>;
/// A boxed writing stream.
pub type BoxWrite = Box<dyn Write + Send>;

/// An open connection to an agent: two byte streams, and the ssh process behind them.
pub struct Connection {
    /// The host's name (for messages).
    pub host: String,
    reader: Option<Box<dyn Read + Send>>,
    writer: Option<Box<dyn Write + Send>>,
    child: Option<Child>,
    stderr: Option<Arc<Mutex<VecDeque<String>>>>,
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl Connection {
    /// A connection over any two streams (tests run the agent in-process this way).
    pub fn from_streams(host: &str, reader: Box<dyn Read + Send>, writer: Box<dyn Write + Send>) -> Connection {
        Connection {
            host: host.to_string(),
            reader: Some(reader),
            writer: Some(writer),
            child: None,
            stderr: None,
            received: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The two streams, counting the bytes that pass (once).
    pub fn take_streams(&mut self) -> (Counting<BoxRead>, Counting<BoxWrite>) {
        let r = self.reader.take().expect("streams are taken once");
        let w = self.writer.take().expect("streams are taken once");
        (Counting { inner: r, count: self.received.clone() }, Counting { inner: w, count: self.sent.clone() })
    }

    /// Bytes received and sent so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.received.load(Ordering::Relaxed), self.sent.load(Ordering::Relaxed))
    }

    /// Why the connection ended, from ssh's exit status and stderr; stops ssh if it is still
    /// running after a grace period.
    pub fn diagnose(&mut self) -> String {
        let Some(mut child) = self.child.take() else { return String::new() };
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    stop(&mut child);
                    break child.wait().ok();
                }
            }
        };
        std::thread::sleep(Duration::from_millis(100)); // the last lines of stderr
        let said = self.stderr_text();
        let how = match status.and_then(|s| s.code()) {
            Some(255) => "ssh failed (exit 255)".to_string(),
            Some(c) => format!("the remote command exited with {c}"),
            None => "ssh was killed".to_string(),
        };
        if said.is_empty() {
            how
        } else {
            format!("{how}: {said}")
        }
    }

    /// Waits for ssh to exit after a complete session.
    pub fn finish(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let said = self.stderr_text();
        if !said.is_empty() {
            tracing::info!("ssh to {}: {said}", self.host);
        }
    }

    fn stderr_text(&self) -> String {
        let Some(lines) = &self.stderr else { return String::new() };
        lines.lock().expect("stderr lines poisoned").iter().cloned().collect::<Vec<_>>().join("; ")
    }
}

/// Stops ssh and everything in its process group.
fn stop(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
            let _ = c.wait();
        }
    }
}

/// A stream that counts the bytes passing through it.
pub struct Counting<T> {
    inner: T,
    count: Arc<AtomicU64>,
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
