//! Telling a person: ntfy, healthchecks.io-style pings, a generic JSON webhook, and mail
//! through `sendmail`.
//!
//! Every delivery has a short timeout and its failure is returned as a [`Delivery`], never
//! as an error: a notification server that is down must not turn a good backup into a failed
//! one, and one dead target must not keep the others from hearing about a bad one.
//!
//! Which events go where:
//! - ntfy, webhook and mail obey `notifications.onSuccess` (success) and
//!   `notifications.onFailure` (partial and failed).
//! - healthchecks gets every outcome regardless of those switches, because it is a dead man's
//!   switch: it alerts when the success pings stop. `/start` before a run, the bare URL after
//!   success or partial (the snapshot was published; the body says "partial"), `/fail` after a
//!   failure.
//! - A run *skipped* because another run held the lock (exit 4) is not a failure: it is a
//!   low-priority notice to ntfy, webhook and mail only with `onSuccess` (like a success), and
//!   a healthchecks `/log` ping, which changes nothing there; the run holding the lock sends
//!   its own outcome. (The `/start` sent before the run stays open until the next success
//!   or failure ping: when the holder is a backup run, its own ping closes it; when it is a
//!   manual `prune`, the next scheduled run does, or healthchecks alerts after its grace
//!   time — a stale start, never a failure report.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::error::ErrorKind;
use crate::plan::Notifications;
use crate::store::meta::RunState;

/// How long one HTTP delivery may take, connect to last byte.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `sendmail` may take to accept a message.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened, in the words a person needs at 3 a.m.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The host the backup is of.
    pub host: String,
    /// What ran: `backup`, `cloud`, `health`, or a systemd unit name.
    pub job: String,
    /// How it ended.
    pub state: RunState,
    /// One line saying what happened.
    pub summary: String,
    /// The error, when there is one.
    pub error: Option<String>,
    /// What kind of error it is (see [`ErrorKind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// More lines: counts, failed checks, the tail of the journal.
    pub details: Vec<String>,
    /// Commands to run next (`journalctl -u backup.service`, `backup-status`).
    pub next_steps: Vec<String>,
}

impl Message {
    /// `laptop: backup FAILED`: the title (ASCII, as HTTP headers want).
    pub fn title(&self) -> String {
        let word = match self.state {
            RunState::Success => "succeeded",
            RunState::Partial => "PARTIAL",
            RunState::Failed => "FAILED",
            RunState::Skipped => "skipped",
        };
        let t = format!("hwc-backup {}: {} {word}", self.host, self.job);
        t.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect()
    }

    /// The plain-text body shared by every target.
    pub fn body(&self) -> String {
        let mut b =
            format!("{}\nhost: {}\njob: {}\nstate: {}\n", self.summary, self.host, self.job, self.state.as_str());
        if let Some(e) = &self.error {
            b.push_str(&format!("error: {e}\n"));
        }
        for d in &self.details {
            b.push_str(d);
            b.push('\n');
        }
        if !self.next_steps.is_empty() {
            b.push_str("next:\n");
            for s in &self.next_steps {
                b.push_str(&format!("  {s}\n"));
            }
        }
        b
    }
}

/// The outcome of one delivery.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `ntfy`, `webhook`, `healthchecks`, `email`.
    pub target: &'static str,
    /// Whether it was accepted.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

impl Delivery {
    fn of(target: &'static str, r: Result<(), String>) -> Delivery {
        match r {
            Ok(()) => Delivery { target, ok: true, error: None },
            Err(e) => Delivery { target, ok: false, error: Some(e) },
        }
    }
}

/// Sends `msg` to every configured target that wants it (see the module docs), in parallel.
pub fn notify(n: &Notifications, msg: &Message) -> Vec<Delivery> {
    let wanted = match msg.state {
        RunState::Success | RunState::Skipped => n.on_success,
        RunState::Partial | RunState::Failed => n.on_failure,
    };
    let body = msg.body();
    let title = msg.title();
    std::thread::scope(|s| {
        let mut jobs = Vec::new();
        if let Some(hc) = &n.healthchecks {
            let suffix = match msg.state {
                RunState::Failed => "/fail",
                RunState::Skipped => "/log",
                _ => "",
            };
            let body = &body;
            jobs.push(s.spawn(move || {
                Delivery::of("healthchecks", ping_url(hc, suffix).and_then(|url| post(&url, &[], body.as_bytes())))
            }));
        }
        if wanted {
            if let Some(ntfy) = &n.ntfy {
                let (title, body) = (&title, &body);
                jobs.push(s.spawn(move || Delivery::of("ntfy", send_ntfy(ntfy, msg.state, title, body))));
            }
            if let Some(w) = &n.webhook {
                let payload = webhook_payload(msg, &title, &body);
                jobs.push(s.spawn(move || {
                    let sent = target_url(&w.url, &w.url_file)
                        .and_then(|url| post(&url, &[("Content-Type", "application/json")], &payload));
                    Delivery::of("webhook", sent)
                }));
            }
            if let Some(m) = &n.email {
                let (title, body) = (&title, &body);
                jobs.push(s.spawn(move || Delivery::of("email", send_mail(&m.to, title, body))));
            }
        }
        jobs.into_iter()
            .map(|j| j.join().unwrap_or_else(|_| Delivery::of("internal", Err("delivery thread panicked".into()))))
            .collect()
    })
}

/// The healthchecks `/start` ping before a run (measures its duration, and alerts if the run
/// never ends). `None` when no healthchecks URL is configured.
pub fn ping_start(n: &Notifications) -> Option<Delivery> {
    let hc = n.healthchecks.as_ref()?;
    Some(Delivery::of("healthchecks", ping_url(hc, "/start").and_then(|url| post(&url, &[], b""))))
}

/// The healthchecks ping URL with `suffix` (`/start`, `/fail`, `/log` or nothing) appended.
fn ping_url(hc: &crate::plan::UrlTarget, suffix: &str) -> Result<String, String> {
    Ok(format!("{}{suffix}", target_url(&hc.url, &hc.url_file)?.trim_end_matches('/')))
}

/// A target's URL: inline in the plan, or read from its file at each delivery (so that a URL
/// holding a secret stays out of the world-readable Nix store). The file holds one line;
/// surrounding whitespace is dropped. A missing, unreadable or empty file is a failed delivery
/// naming the file, never the URL.
fn target_url(url: &Option<String>, url_file: &Option<PathBuf>) -> Result<String, String> {
    match (url, url_file) {
        (_, Some(f)) => read_secret_line(f, "URL file"),
        (Some(u), None) => Ok(u.clone()),
        (None, None) => Err("neither url nor urlFile is set".into()),
    }
}

fn webhook_payload(msg: &Message, title: &str, body: &str) -> Vec<u8> {
    let v = json!({
        "source": "hwc-backup",
        "time": jiff::Timestamp::now().to_string(),
        "host": msg.host,
        "job": msg.job,
        "state": msg.state,
        "title": title,
        "summary": msg.summary,
        "error": msg.error,
        "errorKind": msg.error_kind,
        "details": msg.details,
        "nextSteps": msg.next_steps,
        "message": body,
    });
    serde_json::to_vec(&v).expect("JSON values serialize")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(true)
        .user_agent(concat!("hwc-backup/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(), String> {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send(body).map(|_| ()).map_err(|e| format!("POST {}: {e}", redact(url)))
}

/// URLs of pings carry their secret in the path (healthchecks UUIDs), the query (tokens) or the
/// user info (`user:password@`); logs keep the scheme and host only.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}/…")
        }
        None => "(invalid URL)".into(),
    }
}

fn send_ntfy(ntfy: &crate::plan::Ntfy, state: RunState, title: &str, body: &str) -> Result<(), String> {
    let (priority, tags) = match state {
        RunState::Success => ("default", "white_check_mark"),
        RunState::Partial => ("high", "warning"),
        RunState::Failed => ("urgent", "rotating_light"),
        RunState::Skipped => ("low", "fast_forward"),
    };
    let auth = match &ntfy.token_file {
        Some(f) => Some(format!("Bearer {}", read_secret_line(f, "token file")?)),
        None => None,
    };
    let url = target_url(&ntfy.url, &ntfy.url_file)?;
    let mut headers = vec![("Title", title), ("Priority", priority), ("Tags", tags)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    post(&url, &headers, body.as_bytes())
}

/// A secret of one line (a token, a URL) from `path`, trimmed. `what` names it in errors, which
/// never quote the content.
fn read_secret_line(path: &Path, what: &str) -> Result<String, String> {
    let t = std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    if t.contains(['\n', '\r']) {
        return Err(format!("{what} {} holds more than one line", path.display()));
    }
    Ok(t.to_string())
}

/// `sendmail` from PATH, or where NixOS (setuid wrapper) and Debian put it.
pub fn find_sendmail() -> Option<PathBuf> {
    find_program("sendmail", &["/run/wrappers/bin/sendmail", "/usr/sbin/sendmail", "/usr/lib/sendmail"])
}

/// Finds `name` on `PATH`, else the first of `fallbacks` that exists.
pub fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    from_path.chain(fallbacks.iter().map(PathBuf::from)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn send_mail(to: &str, title: &str, body: &str) -> Result<(), String> {
    let Some(sendmail) = find_sendmail() else {
        return Err("sendmail is not installed (no sendmail on PATH, /run/wrappers/bin or /usr/sbin)".into());
    };
    if to.contains(['\n', '\r']) {
        return Err(format!("recipient {to:?} contains a line break"));
    }
    let mail = format!(
        "To: {to}\nSubject: {title}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
         Auto-Submitted: auto-generated\n\n{body}"
    );
    let mut child = std::process::Command::new(&sendmail)
        .args(["-oi", "-t"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", sendmail.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(mail.as_bytes()).map_err(|e| format!("writing to {}: {e}", sendmail.display()))?;
    }
    let status = wait_with_timeout(&mut child, MAIL_TIMEOUT).map_err(|e| format!("{}: {e}", sendmail.display()))?;
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    Err(format!("{} exited with {status}: {}", sendmail.display(), err.trim()))
}

/// Waits for a child, killing it after `limit`.
pub fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {}s and was killed", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(state: RunState) -> Message {
        Message {
            host: "laptop".into(),
            job: "backup".into(),
            state,
            summary: "backup of laptop failed".into(),
            error: Some("disk full".into()),
            error_kind: Some(ErrorKind::NoSpace),
            details: vec!["files: 3".into()],
            next_steps: vec!["journalctl -u backup.service".into()],
        }
    }

    #[test]
    fn body_says_host_job_state_error_and_next_step() {
        let b = msg(RunState::Failed).body();
        for want in ["host: laptop", "job: backup", "state: failed", "error: disk full", "journalctl -u backup.service"]
        {
            assert!(b.contains(want), "{want} missing from {b}");
        }
        assert_eq!(msg(RunState::Failed).title(), "hwc-backup laptop: backup FAILED");
    }

    #[test]
    fn nothing_configured_sends_nothing() {
        assert!(notify(&Notifications::default(), &msg(RunState::Failed)).is_empty());
        assert!(ping_start(&Notifications::default()).is_none());
    }

    #[test]
    fn a_dead_target_is_a_failed_delivery_not_a_panic() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let n = Notifications {
            webhook: Some(crate::plan::UrlTarget::inline("http://127.0.0.1:1/hook")),
            ..Notifications::default()
        };
        let d = notify(&n, &msg(RunState::Failed));
        assert_eq!(d.len(), 1);
        assert!(!d[0].ok && d[0].error.as_deref().unwrap().contains("127.0.0.1"), "{d:?}");
    }

    #[test]
    fn a_skipped_run_is_a_notice_not_a_failure() {
        let mut m = msg(RunState::Skipped);
        m.error_kind = Some(ErrorKind::Locked);
        assert_eq!(m.title(), "hwc-backup laptop: backup skipped");
        let v: serde_json::Value = serde_json::from_slice(&webhook_payload(&m, "t", "b")).unwrap();
        assert_eq!((v["state"].as_str(), v["errorKind"].as_str()), (Some("skipped"), Some("locked")));
        // Like a success: only to those who want every outcome.
        let n = Notifications {
            webhook: Some(crate::plan::UrlTarget::inline("http://127.0.0.1:1/hook")),
            ..Notifications::default()
        };
        assert!(notify(&n, &m).is_empty());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("https://hc-ping.com/1234-secret"), "https://hc-ping.com/…");
        assert_eq!(redact("https://user:pw@ntfy.example/topic"), "https://ntfy.example/…");
        assert_eq!(redact("https://hooks.example?token=secret"), "https://hooks.example/…");
    }

    #[test]
    fn a_url_file_that_is_missing_or_empty_is_a_failed_delivery_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty-url");
        #[expect(clippy::disallowed_methods, reason = "a test's scratch directory")]
        std::fs::write(&empty, " \n").unwrap();
        for (file, want) in [(dir.path().join("missing-url"), "cannot read URL file"), (empty, "is empty")] {
            let n = Notifications {
                webhook: Some(crate::plan::UrlTarget { url: None, url_file: Some(file.clone()) }),
                ..Notifications::default()
            };
            let d = notify(&n, &msg(RunState::Failed));
            let err = d[0].error.as_deref().unwrap();
            assert!(!d[0].ok && err.contains(want) && err.contains(&file.display().to_string()), "{d:?}");
        }
    }
}
