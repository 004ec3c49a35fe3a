//! Notifications against a real HTTP listener on 127.0.0.1 started by the test: the requests
//! for a success, a partial and a failed run, and for `notify-failure` (systemd OnFailure=);
//! mail through a `sendmail` on PATH; a listener that is down or never answers does not fail
//! the backup.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;

/// One HTTP request as the listener saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 that records every request and answers 200.
pub struct Listener {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Listener {
    pub fn start() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stop2) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Some(r) = read_request(conn) {
                    reqs.lock().unwrap().push(r);
                }
            }
        });
        Listener { url: format!("http://{addr}"), requests, stop, addr }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (briefly) until `n` requests arrived; deliveries run in parallel threads that
    /// have all finished when the binary exits, so this is only a guard against slowness.
    pub fn wait_for(&self, n: usize) -> Vec<Request> {
        let start = Instant::now();
        while self.requests().len() < n && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.requests()
    }

    /// The request to `path`, which must have arrived exactly once.
    pub fn one(&self, path: &str) -> Request {
        let r: Vec<Request> = self.requests().into_iter().filter(|r| r.path == path).collect();
        assert_eq!(r.len(), 1, "expected one request to {path}, got {:#?}", self.requests());
        r.into_iter().next().unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_request(conn: TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let mut conn = conn;
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    Some(Request { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// A plan notifying every kind of target at `url` (ntfy with a token, webhook,
/// healthchecks), mail to a fake sendmail, on success too.
pub fn notifying_plan(env: &Env, url: &str) -> serde_json::Value {
    let token = env.dir.path().join("ntfy-token");
    std::fs::write(&token, "tk_secret123\n").unwrap();
    let mut p = plan_json(env);
    p["notifications"] = serde_json::json!({
        "onSuccess": true, "onFailure": true,
        "ntfy": { "url": format!("{url}/backups"), "tokenFile": s(&token) },
        "webhook": { "url": format!("{url}/hook") },
        "healthchecks": { "url": format!("{url}/hc/0f1e") },
        "email": { "to": "admin@example.org" },
    });
    p
}

/// A directory with a `sendmail` that appends each message to `<dir>/mail.txt`.
fn fake_sendmail(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("sendmail");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"ARGS: $*\" >> '{0}/mail.txt'\ncat >> '{0}/mail.txt'\n", dir.display()),
    )
    .unwrap();
    sh(&format!("chmod 755 '{}'", script.display()));
    dir
}

fn with_path(cmd: &mut std::process::Command, dir: &Path) {
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", dir.display()));
}

fn run_now(env: &Env, plan: &Path, bin_dir: &Path) -> std::process::Output {
    let mut c = env.cmd(&["now", "--config"]);
    c.arg(plan);
    with_path(&mut c, bin_dir);
    c.output().unwrap()
}

#[test]
fn success_reaches_every_target() {
    let env = Env::new();
    let l = Listener::start();
    let bin_dir = fake_sendmail(&env);
    write(&env.src.join("a"), "a");
    let plan = write_plan(&env, "plan.json", &notifying_plan(&env, &l.url).to_string());
    let out = run_now(&env, &plan, &bin_dir);
    assert_eq!(code(&out), 0, "{}", show(&out));
    l.wait_for(4);
    let start = l.one("/hc/0f1e/start");
    assert_eq!(start.method, "POST");
    l.one("/hc/0f1e");
    let ntfy = l.one("/backups");
    assert_eq!(ntfy.header("Authorization"), Some("Bearer tk_secret123"));
    assert_eq!(ntfy.header("Title"), Some("hwc-backup testhost: backup succeeded"));
    assert!(ntfy.body.contains("state: success") && ntfy.body.contains("backup-status"), "{}", ntfy.body);
    let hook = l.one("/hook");
    assert_eq!(hook.header("Content-Type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(v["host"], HOST);
    assert_eq!(v["job"], "backup");
    assert_eq!(v["state"], "success");
    assert!(v["summary"].as_str().unwrap().contains("daily/"), "{v}");
    let mail = std::fs::read_to_string(bin_dir.join("mail.txt")).unwrap();
    assert!(mail.contains("ARGS: -oi -t"), "{mail}");
    assert!(mail.contains("To: admin@example.org") && mail.contains("Subject: hwc-backup testhost: backup succeeded"));
    assert!(mail.contains("state: success"), "{mail}");
    assert_eq!(l.requests().len(), 4, "{:#?}", l.requests());
    // The coordinator's JSON log has the job's start and end.
    let log = std::fs::read_to_string(env.dir.path().join("log/backup-coordinator.log")).unwrap();
    let events: Vec<serde_json::Value> = log.lines().map(|x| serde_json::from_str(x).unwrap()).collect();
    assert_eq!(events.first().unwrap()["event"], "job.started");
    assert_eq!(events.last().unwrap()["event"], "job.finished");
    assert_eq!(events.last().unwrap()["state"], "success");
}

#[test]
fn success_is_silent_without_on_success_but_healthchecks_still_pings() {
    let env = Env::new();
    let l = Listener::start();
    write(&env.src.join("a"), "a");
    let mut p = notifying_plan(&env, &l.url);
    p["notifications"]["onSuccess"] = false.into();
    p["notifications"]["email"] = serde_json::Value::Null;
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let paths: Vec<String> = l.wait_for(2).into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/hc/0f1e/start", "/hc/0f1e"]);
}

#[test]
fn failure_says_what_failed_and_what_to_run() {
    let env = Env::new();
    let l = Listener::start();
    let bin_dir = fake_sendmail(&env);
    let mut p = notifying_plan(&env, &l.url);
    p["destination"]["path"] = s(&env.dir.path().join("unplugged")).into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = run_now(&env, &plan, &bin_dir);
    assert_eq!(code(&out), 1, "{}", show(&out));
    l.wait_for(4);
    let fail = l.one("/hc/0f1e/fail");
    assert!(fail.body.contains("unplugged"), "{}", fail.body);
    let ntfy = l.one("/backups");
    assert_eq!(ntfy.header("Title"), Some("hwc-backup testhost: backup FAILED"));
    assert_eq!(ntfy.header("Priority"), Some("urgent"));
    for want in ["host: testhost", "job: backup", "state: failed", "unplugged", "journalctl -u backup.service"] {
        assert!(ntfy.body.contains(want), "{want} missing: {}", ntfy.body);
    }
    let v: serde_json::Value = serde_json::from_str(&l.one("/hook").body).unwrap();
    assert_eq!(v["state"], "failed");
    assert!(v["error"].as_str().unwrap().contains("unplugged"), "{v}");
    assert!(v["nextSteps"].to_string().contains("journalctl"), "{v}");
    let mail = std::fs::read_to_string(bin_dir.join("mail.txt")).unwrap();
    assert!(mail.contains("Subject: hwc-backup testhost: backup FAILED"), "{mail}");
}

#[test]
fn partial_run_notifies_with_the_warnings() {
    // Root reads everything, so the run is made by `nobody` over a directory it cannot open.
    require("setpriv");
    let env = Env::new();
    let l = Listener::start();
    write(&env.src.join("ok"), "ok");
    write(&env.src.join("locked/inside"), "x");
    let mut p = notifying_plan(&env, &l.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    let plan = write_plan(&env, "plan.json", &p.to_string());
    sh(&format!(
        "chmod 000 '{src}/locked' && chown -R nobody '{d}' && chmod 755 '{d}'",
        src = env.src.display(),
        d = env.dir.path().display()
    ));
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin())
        .args(["now", "--config"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", show(&out));
    l.wait_for(4);
    let ntfy = l.one("/backups");
    assert_eq!(ntfy.header("Title"), Some("hwc-backup testhost: backup PARTIAL"));
    assert!(ntfy.body.contains("state: partial") && ntfy.body.contains("locked"), "{}", ntfy.body);
    let v: serde_json::Value = serde_json::from_str(&l.one("/hook").body).unwrap();
    assert_eq!(v["state"], "partial");
    // Published, so healthchecks hears a success, with the details in the body.
    assert!(l.one("/hc/0f1e").body.contains("partial"));
}

#[test]
fn notify_failure_for_systemd_on_failure() {
    let env = Env::new();
    let l = Listener::start();
    let mut p = notifying_plan(&env, &l.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["notify-failure", "--unit", "backup.service", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    l.wait_for(3);
    let ntfy = l.one("/backups");
    assert_eq!(ntfy.header("Title"), Some("hwc-backup testhost: backup.service FAILED"));
    for want in ["backup.service failed", "journalctl -u backup.service", "systemctl status backup.service"] {
        assert!(ntfy.body.contains(want), "{want} missing: {}", ntfy.body);
    }
    let v: serde_json::Value = serde_json::from_str(&l.one("/hook").body).unwrap();
    assert_eq!((v["job"].as_str(), v["state"].as_str()), (Some("backup.service"), Some("failed")));
    l.one("/hc/0f1e/fail");

    // A run that failed and notified by itself is not notified twice by OnFailure=; a run
    // killed before it could record anything is (the first half above).
    let l2 = Listener::start();
    let mut p = notifying_plan(&env, &l2.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    p["destination"]["path"] = "/nonexistent-hwc".into();
    let plan = write_plan(&env, "plan2.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let before = l2.wait_for(4).len();
    let out = env.cmd(&["notify-failure", "--unit", "backup.service", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent its own notification"), "{}", show(&out));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(l2.requests().len(), before, "{:#?}", l2.requests());
}

#[test]
fn on_failure_uses_systemd_invocation_ids() {
    // Under systemd the OnFailure= unit learns which invocation failed. A run that failed
    // and notified itself recorded its INVOCATION_ID; a later invocation killed with -9
    // recorded nothing and must be notified, however recent the earlier failure is.
    let env = Env::new();
    let l = Listener::start();
    let mut p = notifying_plan(&env, &l.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    p["destination"]["path"] = "/nonexistent-hwc".into();
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).env("INVOCATION_ID", "aaa111").output().unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let before = l.wait_for(4).len();
    let on_failure = |id: &str| {
        let mut c = env.cmd(&["notify-failure", "--unit", "backup.service", "--config"]);
        c.arg(&plan).env("INVOCATION_ID", "notify-unit").env("MONITOR_INVOCATION_ID", id).output().unwrap()
    };
    let out = on_failure("aaa111");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent its own notification"), "{}", show(&out));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(l.requests().len(), before, "the same invocation is not notified twice");
    // A dependency failure: the unit never ran, and systemd passes the ID of its previous
    // invocation, long finished. An old record must not silence it.
    let record = env.state.join(HOST).join("finished-invocations");
    std::fs::write(&record, "aaa111 1000000000\n").unwrap();
    let out = on_failure("aaa111");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let before = l.wait_for(before + 3).len();
    // And with no MONITOR_* variables at all.
    let out = env
        .cmd(&["notify-failure", "--unit", "backup.service", "--config"])
        .arg(&plan)
        .env("INVOCATION_ID", "notify-unit")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let before = l.wait_for(before + 3).len();
    let out = on_failure("bbb222");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let after = l.wait_for(before + 3);
    assert!(after.len() > before, "a killed invocation must be notified: {after:#?}");
}

#[test]
fn a_listener_that_is_down_does_not_fail_the_backup() {
    let env = Env::new();
    write(&env.src.join("a"), "a");
    // Nothing listens on a port we bound and released; a second listener accepts and never answers.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let mut p = plan_json(&env);
    p["notifications"] = serde_json::json!({
        "onSuccess": true, "onFailure": true,
        "ntfy": { "url": format!("http://{dead}/t"), "tokenFile": null },
        "webhook": { "url": format!("http://{silent_addr}/hook") },
        "healthchecks": null, "email": null,
    });
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let started = Instant::now();
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "a dead notification target must not fail the backup: {}", show(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "deliveries have short timeouts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ntfy notification not delivered"), "{stderr}");
    assert!(stderr.contains("webhook notification not delivered"), "{stderr}");
    assert_eq!(env.snapshot_ids().len(), 1);
}

/// `urlFile`: the URLs of ntfy, the webhook and healthchecks read from files at run time
/// (trimmed), delivered to the same paths as inline URLs; none of them appears in the output.
#[test]
fn url_files_are_read_at_run_time() {
    let env = Env::new();
    let l = Listener::start();
    write(&env.src.join("a"), "a");
    let secret = |name: &str, url: String| {
        let f = env.dir.path().join(name);
        std::fs::write(&f, format!("  {url}\n")).unwrap();
        s(&f)
    };
    let mut p = notifying_plan(&env, &l.url);
    p["notifications"]["email"] = serde_json::Value::Null;
    let token = p["notifications"]["ntfy"]["tokenFile"].clone();
    p["notifications"]["ntfy"] =
        serde_json::json!({ "urlFile": secret("ntfy-url", format!("{}/topic-s3cret", l.url)), "tokenFile": token });
    p["notifications"]["webhook"] =
        serde_json::json!({ "urlFile": secret("hook-url", format!("{}/hook?token=s3cret", l.url)) });
    p["notifications"]["healthchecks"] =
        serde_json::json!({ "urlFile": secret("hc-url", format!("{}/hc/s3cret-uuid/", l.url)) });
    let plan = write_plan(&env, "plan.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    l.wait_for(4);
    l.one("/hc/s3cret-uuid/start");
    l.one("/hc/s3cret-uuid");
    assert_eq!(l.one("/topic-s3cret").header("Authorization"), Some("Bearer tk_secret123"));
    let hook = l.one("/hook?token=s3cret");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&hook.body).unwrap()["state"], "success");
    assert_eq!(l.requests().len(), 4, "{:#?}", l.requests());
    assert!(!show(&out).contains("s3cret"), "{}", show(&out));

    // A URL file that is missing or empty: the run still succeeds, the delivery fails with
    // the file's name, and the other targets are reached.
    let l2 = Listener::start();
    let empty = secret("empty-url", String::new());
    p["notifications"]["webhook"] = serde_json::json!({ "urlFile": empty });
    p["notifications"]["healthchecks"] = serde_json::json!({ "urlFile": s(&env.dir.path().join("no-such-url")) });
    p["notifications"]["ntfy"] =
        serde_json::json!({ "urlFile": secret("ntfy-url", format!("{}/topic-s3cret", l2.url)), "tokenFile": token });
    let plan = write_plan(&env, "plan2.json", &p.to_string());
    let out = env.cmd(&["now", "--config"]).arg(&plan).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("URL file {empty} is empty")), "{stderr}");
    assert!(stderr.contains("cannot read URL file") && stderr.contains("no-such-url"), "{stderr}");
    l2.wait_for(1);
    l2.one("/topic-s3cret");
}

/// A target naming both an inline URL and a file, or neither, is refused by `config check`.
#[test]
fn a_target_with_two_urls_or_none_is_refused() {
    let env = Env::new();
    for (target, value, words) in [
        ("webhook", serde_json::json!({ "url": "http://x/h", "urlFile": "/run/agenix/h" }), "both url and urlFile"),
        ("healthchecks", serde_json::json!({}), "neither url nor urlFile"),
        ("ntfy", serde_json::json!({ "urlFile": "relative/url" }), "notifications.ntfy.urlFile"),
    ] {
        let mut p = plan_json(&env);
        p["notifications"][target] = value;
        let plan = write_plan(&env, "plan.json", &p.to_string());
        let out = env.cmd(&["config", "check"]).arg(&plan).output().unwrap();
        assert_ne!(code(&out), 0, "{target}: {}", show(&out));
        assert!(show(&out).contains(words), "{target}: {}", show(&out));
    }
}
