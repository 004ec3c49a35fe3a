//! Retention end to end (issue 3), always through the real binary and its testing clock
//! (`--now`), checked against the engine's pure `retention::apply` (itself tested against
//! restic's vectors):
//!
//! - a two-year simulation of nightly runs in Europe/Berlin time (+01:00/+02:00 with the DST
//!   switches) with missed days, outages, several runs on some days and failed runs; after
//!   every run the kept set, the tier directories, `latest`, the trash and the newest content
//!   are checked, and at the end every kept snapshot is restored and verified;
//! - the safety rules, one test each: no pruning after a failed run; in-progress snapshots
//!   neither count nor serve as link bases; the newest complete snapshot is never removed; a
//!   policy that keeps nothing is rejected; pruning refuses when the newest snapshot is older
//!   than the health threshold;
//! - `prune --dry-run --json` lists every snapshot with keep/remove and reasons and changes
//!   nothing;
//! - kill -9 in the middle of a prune (between the renames, and at random moments): the next
//!   prune or run completes it and nothing that should be kept is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use hwc_backup_engine::store::retention::{self, Policy, SnapshotTime, Tier};
use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::Offset;
use jiff::Timestamp;

use crate::util::*;

// --- deterministic randomness -------------------------------------------------------------

/// A 64-bit LCG (Knuth's MMIX constants): deterministic, so every failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Lcg {
        Lcg(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    /// 0..n.
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < per_mille
    }
}

// --- the clock: Europe/Berlin wall time ---------------------------------------------------

/// Last Sunday of March and of October of `year`: the EU summer-time switches.
fn dst_switches(year: i16) -> (Date, Date) {
    let last_sunday = |month| Date::new(year, month, 1).unwrap().nth_weekday_of_month(-1, Weekday::Sunday).unwrap();
    (last_sunday(3), last_sunday(10))
}

/// Europe/Berlin's offset at a wall-clock time: +02:00 from the last Sunday of March 03:00 to
/// the last Sunday of October 03:00 (then 02:00 again), +01:00 otherwise. Hour 2 of both
/// switch days does not exist or exists twice; [`wall_clock`] never produces it.
fn berlin_offset(dt: DateTime) -> Offset {
    let (start, end) = dst_switches(dt.year());
    let d = dt.date();
    let summer = (d > start && d < end) || (d == start && dt.hour() >= 3) || (d == end && dt.hour() < 2);
    Offset::constant(if summer { 2 } else { 1 })
}

/// A Berlin wall-clock time; hour 2 on a switch day moves to 04:00 as cron would skip it.
fn wall_clock(date: Date, hour: i8, minute: i8, second: i8) -> DateTime {
    let (start, end) = dst_switches(date.year());
    let hour = if hour == 2 && (date == start || date == end) { 4 } else { hour };
    date.at(hour, minute, second, 0)
}

fn offset_text(o: Offset) -> String {
    let secs = o.seconds();
    let a = secs.unsigned_abs();
    format!("{}{:02}:{:02}", if secs < 0 { '-' } else { '+' }, a / 3600, a % 3600 / 60)
}

fn parse_offset(text: &str) -> Offset {
    let sign = match &text[..1] {
        "+" => 1,
        "-" => -1,
        _ => panic!("bad offset {text:?}"),
    };
    let (h, m) = text[1..].split_once(':').unwrap_or_else(|| panic!("bad offset {text:?}"));
    Offset::from_seconds(sign * (h.parse::<i32>().unwrap() * 3600 + m.parse::<i32>().unwrap() * 60)).unwrap()
}

/// One moment of the simulated clock: the `--now` text, the time retention sees, and the
/// snapshot directory name a run at this moment gets.
#[derive(Clone, Debug)]
struct Moment {
    arg: String,
    time: SnapshotTime,
    name: String,
}

fn moment_in(dt: DateTime, offset: Offset) -> Moment {
    Moment {
        arg: format!("{}{}", dt.strftime("%Y-%m-%dT%H:%M:%S"), offset_text(offset)),
        time: SnapshotTime::new(offset.to_timestamp(dt).unwrap(), offset),
        name: dt.strftime("%Y-%m-%d_%H-%M-%S").to_string(),
    }
}

/// A moment in Berlin time.
fn berlin(dt: DateTime) -> Moment {
    moment_in(dt, berlin_offset(dt))
}

/// A moment from RFC 3339 text with an offset.
fn at(text: &str) -> Moment {
    let time = SnapshotTime::parse(text).unwrap();
    moment_in(time.civil(), time.offset)
}

// --- what is on disk ------------------------------------------------------------------------

const TIER_DIRS: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];

/// A complete snapshot found under a tier directory.
#[derive(Clone, Debug)]
struct Found {
    tier: String,
    time: SnapshotTime,
}

/// The time and offset recorded in a snapshot's `.hwc-backup/meta.json`.
fn recorded_time(snapshot: &Path) -> Option<SnapshotTime> {
    let text = std::fs::read(snapshot.join(".hwc-backup/meta.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let started: Timestamp = v["startedAt"].as_str().expect("startedAt").parse().unwrap();
    Some(SnapshotTime::new(started, parse_offset(v["utcOffset"].as_str().expect("utcOffset"))))
}

/// Every complete snapshot (a tier entry with a readable meta.json), by directory name.
/// Panics when a name is in two tiers: a snapshot must never be duplicated.
fn found(host: &Path) -> BTreeMap<String, Found> {
    let mut all = BTreeMap::new();
    for tier in TIER_DIRS {
        for name in entries(&host.join(tier)) {
            let Some(time) = recorded_time(&host.join(tier).join(&name)) else { continue };
            let previous = all.insert(name.clone(), Found { tier: tier.to_string(), time });
            assert!(previous.is_none(), "{name} is in two tiers: {previous:?} and {tier}");
        }
    }
    all
}

/// Names in a directory, sorted; empty when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Where `latest` points (`daily/NAME`).
fn latest(host: &Path) -> Option<String> {
    std::fs::read_link(host.join("latest")).ok().map(|p| s(&p))
}

// --- what the pure function says --------------------------------------------------------

/// The policy of runs without a plan: 7 daily, 4 weekly, 6 monthly.
fn default_policy() -> Policy {
    Policy { daily: 7, weekly: 4, monthly: 6, ..Policy::default() }
}

/// The pure function's verdict for one snapshot.
#[derive(Clone, Debug, PartialEq)]
struct Verdict {
    keep: bool,
    tier: Option<Tier>,
    reasons: Vec<String>,
}

/// `retention::apply` on named snapshots. They are passed oldest first, ties by name, the
/// order in which the engine lists them, so that even equal times give the engine's answer.
fn decide(snapshots: &BTreeMap<String, SnapshotTime>, policy: &Policy, now: Timestamp) -> BTreeMap<String, Verdict> {
    let mut list: Vec<(&String, &SnapshotTime)> = snapshots.iter().collect();
    list.sort_by(|a, b| a.1.timestamp.cmp(&b.1.timestamp).then_with(|| a.0.cmp(b.0)));
    let times: Vec<SnapshotTime> = list.iter().map(|(_, t)| **t).collect();
    let decision = retention::apply(&times, policy, now);
    let mut out = BTreeMap::new();
    for k in &decision.keep {
        let verdict = Verdict { keep: true, tier: Some(retention::tier_for(k)), reasons: k.reasons.clone() };
        out.insert(list[k.index].0.clone(), verdict);
    }
    for &i in &decision.remove {
        out.insert(list[i].0.clone(), Verdict { keep: false, tier: None, reasons: Vec::new() });
    }
    assert_eq!(out.len(), snapshots.len(), "apply must decide every snapshot once");
    out
}

/// The kept names with their tiers.
fn kept(verdicts: &BTreeMap<String, Verdict>) -> BTreeMap<String, Tier> {
    verdicts.iter().filter(|(_, v)| v.keep).map(|(n, v)| (n.clone(), v.tier.unwrap())).collect()
}

fn times_of(found: &BTreeMap<String, Found>) -> BTreeMap<String, SnapshotTime> {
    found.iter().map(|(n, f)| (n.clone(), f.time)).collect()
}

/// The newest of named snapshots, ties by name (as the engine's `latest`).
fn newest(times: &BTreeMap<String, SnapshotTime>) -> Option<&String> {
    times.iter().max_by(|a, b| a.1.timestamp.cmp(&b.1.timestamp).then_with(|| a.0.cmp(b.0))).map(|(n, _)| n)
}

/// Asserts that the tiers hold exactly `want` (name → tier), with the recorded times in
/// `times`, and that `latest` points at the newest of them.
fn assert_disk(host: &Path, want: &BTreeMap<String, Tier>, times: &BTreeMap<String, SnapshotTime>, ctx: &str) {
    let disk = found(host);
    let lost: Vec<&String> = want.keys().filter(|n| !disk.contains_key(*n)).collect();
    assert!(lost.is_empty(), "{ctx}: snapshots that retention keeps are GONE: {lost:?}\non disk: {disk:?}");
    let extra: Vec<&String> = disk.keys().filter(|n| !want.contains_key(*n)).collect();
    assert!(extra.is_empty(), "{ctx}: snapshots that retention removes are still there: {extra:?}");
    for (name, tier) in want {
        let f = &disk[name];
        assert_eq!(f.tier, tier.as_str(), "{ctx}: {name} is in {}/ but its finest keeping rule is {tier}", f.tier);
        assert_eq!(Some(&f.time), times.get(name), "{ctx}: {name} records another time than it was taken at");
    }
    let kept_times: BTreeMap<String, SnapshotTime> = want.keys().map(|n| (n.clone(), times[n])).collect();
    let want_latest = newest(&kept_times).map(|n| format!("{}/{n}", want[n].as_str()));
    assert_eq!(latest(host), want_latest, "{ctx}: latest must point at the newest complete snapshot");
}

/// Output of a `hwc-backup` run, asserting its exit code.
fn expect_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}: {}", show(out));
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `hwc-backup prune` on the test host with `--now` and extra arguments.
fn prune(env: &Env, now: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--now", now];
    args.extend_from_slice(extra);
    env.run("prune", &args)
}

/// `prune --dry-run --json` parsed.
fn dry_run_json(env: &Env, now: &str) -> (Output, serde_json::Value) {
    let out = prune(env, now, &["--dry-run", "--json"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("prune --json is not JSON ({e}): {}", show(&out)));
    (out, v)
}

// --- 1. the simulation --------------------------------------------------------------------

/// What the simulation remembers about a snapshot that should exist.
#[derive(Clone, Debug)]
struct Rec {
    time: SnapshotTime,
    tier: Tier,
    /// The content of `a.txt` (edited every run) and `notes/b.txt` (every fifth run) when it was taken.
    a: String,
    b: String,
}

/// How a run of the simulation is meant to end.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Succeeds,
    /// An extra `--source` that does not exist: preflight fails before the lock.
    MissingSource,
    /// The source is emptied: the shrink guard fails the run after the build, under the lock.
    EmptiedSource,
}

#[test]
fn two_years_of_nightly_runs_match_the_pure_function_after_every_run() {
    // On tmpfs when there is one: ~700 runs each sync the filesystem several times, and on a
    // busy disk that alone takes minutes; what is tested here is the logic, not the disk.
    let env = Env::on_tmpfs();
    let host = env.host_dir();
    let policy = default_policy();
    let mut rng = Lcg::new(20_250_115);
    write(&env.src.join("a.txt"), "start\n");
    write(&env.src.join("notes/b.txt"), "b0\n");
    for i in 0..4 {
        write(&env.src.join(format!("static/s{i}")), format!("static {i}\n"));
    }
    let missing = s(&env.dir.path().join("unplugged-disk"));
    let held = env.dir.path().join("held-src");

    // The schedule: two years of nights, 2023-01-02 to 2025-01-15 (two DST switches each way,
    // a leap day, ISO week-years that start in December), run at 02:00 Berlin time mostly.
    let (first, last) = (Date::constant(2023, 1, 2), Date::constant(2025, 1, 15));
    let mut schedule: Vec<(Moment, Fate)> = Vec::new();
    let (mut day, mut outage, mut missed_days) = (first, 0u32, 0u32);
    while day <= last {
        let this = day;
        day = day.tomorrow().unwrap();
        if outage > 0 || (this != last && rng.chance(10)) {
            // A holiday or a dead disk: 3 to 10 days without runs.
            outage = if outage > 0 { outage - 1 } else { 2 + rng.below(8) };
            missed_days += 1;
            continue;
        }
        if this != last && rng.chance(80) {
            missed_days += 1; // the laptop was off that night
            continue;
        }
        let mut times = BTreeSet::new();
        times.insert(if this == last || rng.chance(750) {
            wall_clock(this, 2, 0, 0)
        } else {
            // Late or early: includes 00:xx, which is still the previous day in UTC.
            wall_clock(this, rng.below(24) as i8, rng.below(60) as i8, rng.below(60) as i8)
        });
        if this != last && rng.chance(120) {
            for _ in 0..1 + rng.below(2) {
                times.insert(wall_clock(this, rng.below(24) as i8, rng.below(60) as i8, rng.below(60) as i8));
            }
        }
        for dt in times {
            let fate = match rng.below(1000) {
                _ if this == last => Fate::Succeeds,
                0..=24 => Fate::MissingSource,
                25..=49 => Fate::EmptiedSource,
                _ => Fate::Succeeds,
            };
            schedule.push((berlin(dt), fate));
        }
    }

    let started = Instant::now();
    let mut model: BTreeMap<String, Rec> = BTreeMap::new();
    let (mut successes, mut failures, mut failures_that_would_have_pruned, mut removed_total) = (0, 0, 0, 0);
    let (mut max_kept, mut tiers_seen, mut offsets_kept, mut oldest_reasons) = (0, BTreeSet::new(), BTreeSet::new(), 0);
    let mut offset_mattered = 0;
    for (run, (m, fate)) in schedule.iter().enumerate() {
        let ctx = format!("run {run} at {} ({fate:?})", m.arg);
        let times: BTreeMap<String, SnapshotTime> = model.iter().map(|(n, r)| (n.clone(), r.time)).collect();
        match fate {
            Fate::Succeeds => {
                let a = format!("a: run {run} at {}\n", m.arg);
                write(&env.src.join("a.txt"), &a);
                if run % 5 == 0 {
                    write(&env.src.join("notes/b.txt"), format!("b: run {run}\n"));
                }
                let out = env.snapshot_at(&m.arg, &[]);
                expect_exit(&out, 0, &ctx);
                let b = std::fs::read_to_string(env.src.join("notes/b.txt")).unwrap();
                model.insert(m.name.clone(), Rec { time: m.time, tier: Tier::Daily, a, b });
                successes += 1;
            }
            Fate::MissingSource | Fate::EmptiedSource => {
                // Would a successful run at this moment have removed something?
                let mut with_new = times.clone();
                with_new.insert(m.name.clone(), m.time);
                if decide(&with_new, &policy, m.time.timestamp).values().any(|v| !v.keep) {
                    failures_that_would_have_pruned += 1;
                }
                let out = if *fate == Fate::MissingSource {
                    env.snapshot_at(&m.arg, &["--source", &missing])
                } else {
                    std::fs::rename(&env.src, &held).unwrap();
                    std::fs::create_dir(&env.src).unwrap();
                    let out = env.snapshot_at(&m.arg, &[]);
                    std::fs::remove_dir(&env.src).unwrap();
                    std::fs::rename(&held, &env.src).unwrap();
                    out
                };
                expect_exit(&out, 1, &ctx);
                let why = if *fate == Fate::MissingSource { "cannot be read" } else { "is empty but held" };
                assert!(stdout(&out).contains("FAILED") && stdout(&out).contains(why), "{ctx}: {}", show(&out));
                failures += 1;
            }
        }
        // The pure function's answer, applied to the model.
        if *fate == Fate::Succeeds {
            let times: BTreeMap<String, SnapshotTime> = model.iter().map(|(n, r)| (n.clone(), r.time)).collect();
            let verdicts = decide(&times, &policy, m.time.timestamp);
            // Would the answer differ if the offsets were ignored (everything read in UTC)?
            let in_utc = times.iter().map(|(n, t)| (n.clone(), SnapshotTime::new(t.timestamp, Offset::UTC))).collect();
            if kept(&decide(&in_utc, &policy, m.time.timestamp)).keys().ne(kept(&verdicts).keys()) {
                offset_mattered += 1;
            }
            for (name, v) in &verdicts {
                if v.keep {
                    let rec = model.get_mut(name).unwrap();
                    rec.tier = v.tier.unwrap();
                    oldest_reasons += v.reasons.iter().filter(|r| r.starts_with("oldest")).count();
                } else {
                    model.remove(name);
                    removed_total += 1;
                }
            }
        }
        let times: BTreeMap<String, SnapshotTime> = model.iter().map(|(n, r)| (n.clone(), r.time)).collect();
        let want: BTreeMap<String, Tier> = model.iter().map(|(n, r)| (n.clone(), r.tier)).collect();
        assert_disk(&host, &want, &times, &ctx);
        assert!(entries(&host.join(".trash")).is_empty(), "{ctx}: the trash is emptied after every run");
        assert!(entries(&host.join(".incomplete")).is_empty(), "{ctx}: nothing in progress is left behind");
        let newest_name = newest(&times).unwrap();
        let newest_rec = &model[newest_name];
        let in_newest = env.in_snapshot(&format!("{}/{newest_name}", newest_rec.tier.as_str()));
        assert_eq!(std::fs::read_to_string(in_newest.join("a.txt")).unwrap(), newest_rec.a, "{ctx}");
        max_kept = max_kept.max(model.len());
        tiers_seen.extend(model.values().map(|r| r.tier));
        offsets_kept.extend(model.values().map(|r| r.time.offset.seconds()));
    }
    let elapsed = started.elapsed();

    // Every kept snapshot still restores, with the content it was taken with, and verifies.
    let restored = env.dir.path().join("restored");
    for (name, rec) in &model {
        let id = format!("{}/{name}", rec.tier.as_str());
        for (file, want) in [("a.txt", &rec.a), ("notes/b.txt", &rec.b)] {
            let to = restored.join(name).join(file.replace('/', "_"));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let out = env.run("restore", &[&id, &s(&env.src.join(file)), &s(&to)]);
            expect_exit(&out, 0, &format!("restore {file} from {id}"));
            assert_eq!(&std::fs::read_to_string(&to).unwrap(), want, "{file} restored from {id}");
        }
    }
    let out = env.run("verify", &["--all"]);
    expect_exit(&out, 0, "verify --all after two years");

    eprintln!(
        "retention simulation: {} runs ({successes} ok, {failures} failed, {failures_that_would_have_pruned} of \
         them where a good run would have pruned), {missed_days} nights without a run, {removed_total} snapshots \
         expired, at most {max_kept} kept, {} kept at the end, {offset_mattered} runs where reading the times in UTC \
         would have kept another set; {:.1} s ({:.1} ms per run)",
        schedule.len(),
        model.len(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / schedule.len() as f64
    );
    // The schedule must really exercise what it claims to.
    assert!(schedule.len() >= 600, "{} runs", schedule.len());
    assert!(failures >= 20 && failures_that_would_have_pruned >= 10, "{failures} / {failures_that_would_have_pruned}");
    assert!(missed_days >= 50, "{missed_days}");
    assert!(oldest_reasons > 0, "the 'oldest' rule never applied");
    assert!(offset_mattered > 0, "the recorded offsets never made a difference");
    assert_eq!(tiers_seen, BTreeSet::from([Tier::Daily, Tier::Weekly, Tier::Monthly]));
    assert_eq!(offsets_kept, BTreeSet::from([3600, 7200]), "both Berlin offsets were kept at some time");
    let final_tiers: BTreeSet<Tier> = model.values().map(|r| r.tier).collect();
    assert_eq!(final_tiers, BTreeSet::from([Tier::Daily, Tier::Weekly, Tier::Monthly]));
}

// --- 2. safety --------------------------------------------------------------------------------

/// A small source: one file edited per run and some that never change.
fn small_source(env: &Env) {
    write(&env.src.join("a.txt"), "a\n");
    write(&env.src.join("static/keep"), "unchanged\n");
}

/// `count` runs with `--no-prune` at 02:00+01:00 on consecutive days from `first`.
fn nights_without_pruning(env: &Env, first: Date, count: usize) -> Vec<Moment> {
    let mut day = first;
    let mut moments = Vec::new();
    for i in 0..count {
        write(&env.src.join("a.txt"), format!("night {i}\n"));
        let m = moment_in(day.at(2, 0, 0, 0), Offset::constant(1));
        env.snapshot_ok(&m.arg, &["--no-prune"]);
        moments.push(m);
        day = day.tomorrow().unwrap();
    }
    moments
}

#[test]
fn a_failed_run_prunes_nothing() {
    let env = Env::new();
    small_source(&env);
    nights_without_pruning(&env, Date::constant(2025, 1, 1), 20);
    let host = env.host_dir();
    let before = env.snapshot_ids();
    let latest_before = latest(&host);
    assert_eq!(before.len(), 20);
    let next = at("2025-01-21T02:00:00+01:00");
    // A good run now would expire snapshots: the failures below are not vacuous.
    let mut with_new = times_of(&found(&host));
    with_new.insert(next.name.clone(), next.time);
    let would_remove = decide(&with_new, &default_policy(), next.time.timestamp).values().filter(|v| !v.keep).count();
    assert!(would_remove >= 5, "{would_remove}");

    // Fails in preflight (a source is missing).
    let missing = s(&env.dir.path().join("missing"));
    let out = env.snapshot_at(&next.arg, &["--source", &missing]);
    expect_exit(&out, 1, "run with a missing source");
    assert!(stdout(&out).contains("FAILED"), "{}", show(&out));
    assert_eq!(env.snapshot_ids(), before, "a run that failed in preflight pruned");
    assert_eq!(latest(&host), latest_before);

    // Fails after the build, under the lock, where pruning would happen (the shrink guard).
    let held = env.dir.path().join("held");
    std::fs::rename(&env.src, &held).unwrap();
    std::fs::create_dir(&env.src).unwrap();
    let out = env.snapshot_at(&next.arg, &[]);
    std::fs::remove_dir(&env.src).unwrap();
    std::fs::rename(&held, &env.src).unwrap();
    expect_exit(&out, 1, "run with an emptied source");
    assert!(stdout(&out).contains("is empty but held"), "{}", show(&out));
    assert!(!stdout(&out).contains("pruned"), "{}", show(&out));
    assert_eq!(env.snapshot_ids(), before, "a run that failed its guard pruned");
    assert_eq!(latest(&host), latest_before);
    let last_run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state.join(HOST).join("last-run.json")).unwrap()).unwrap();
    assert_eq!(last_run["state"], "failed");
    assert_eq!(last_run["prune"], serde_json::Value::Null, "a failed run reports no prune");

    // The same moment with a good run prunes exactly what the pure function says.
    let out = env.snapshot_ok(&next.arg, &[]);
    assert!(stdout(&out).contains(&format!("pruned {would_remove} expired snapshot(s)")), "{}", show(&out));
    let want = kept(&decide(&with_new, &default_policy(), next.time.timestamp));
    assert_disk(&host, &want, &with_new, "the good run after the failures");
}

#[test]
fn in_progress_snapshots_never_count_and_are_never_link_bases() {
    let env = Env::new();
    small_source(&env);
    let host = env.host_dir();
    let moments = nights_without_pruning(&env, Date::constant(2025, 1, 1), 3);
    let base = format!("daily/{}", moments[2].name);

    // An interrupted run's work, newer than every complete snapshot, with its own meta.json:
    // a full copy of the newest snapshot (new inodes) claiming to start on January 4.
    let fake = at("2025-01-04T02:00:00+01:00");
    let work = host.join(".incomplete").join(&fake.name);
    std::fs::create_dir_all(work.parent().unwrap()).unwrap();
    sh(&format!("cp -a '{}' '{}'", s(&host.join(&base)), s(&work)));
    let meta_path = work.join(".hwc-backup/meta.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["name"] = fake.name.clone().into();
    meta["startedAt"] = fake.time.timestamp.to_string().into();
    meta["finishedAt"] = fake.time.timestamp.to_string().into();
    std::fs::remove_file(&meta_path).unwrap();
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    assert_eq!(recorded_time(&work), Some(fake.time));
    // And a snapshot-named directory in a tier without any metadata (not complete either).
    let no_meta = host.join("daily/2025-01-04_12-00-00");
    write(&no_meta.join(env.src.strip_prefix("/").unwrap()).join("a.txt"), "half\n");

    // prune neither lists them nor counts them (had the fake counted, it would be the newest).
    let now = at("2025-01-04T12:00:00+01:00");
    let (out, plan) = dry_run_json(&env, &now.arg);
    expect_exit(&out, 0, "prune --dry-run");
    let names: BTreeSet<&str> = plan["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, moments.iter().map(|m| m.name.as_str()).collect::<BTreeSet<_>>());
    let out = prune(&env, &now.arg, &[]);
    expect_exit(&out, 0, "prune");
    assert!(work.is_dir(), "prune must not touch work in progress (the next run cleans it up)");
    assert!(no_meta.is_dir(), "prune must not delete what it does not recognize as a snapshot");
    assert_eq!(latest(&host).as_deref(), Some(base.as_str()));

    // The next run cleans the leftover up and links against the newest *complete* snapshot.
    let next = at("2025-01-05T02:00:00+01:00");
    let base_inode = ino(&env.in_snapshot(&base).join("static/keep"));
    let fake_inode = ino(&work.join(env.src.strip_prefix("/").unwrap()).join("static/keep"));
    assert_ne!(base_inode, fake_inode);
    let out = env.snapshot_ok(&next.arg, &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cleanedUp"], serde_json::json!([fake.name]), "{}", show(&out));
    assert!(entries(&host.join(".incomplete")).is_empty());
    assert!(entries(&host.join(".trash")).is_empty());
    let new_id = format!("daily/{}", next.name);
    let new_meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.join(&new_id).join(".hwc-backup/meta.json")).unwrap()).unwrap();
    assert_eq!(new_meta["linkBase"], base.as_str(), "the link base is the newest complete snapshot");
    assert_eq!(ino(&env.in_snapshot(&new_id).join("static/keep")), base_inode, "unchanged files link to it");
    // Retention counted only the complete snapshots.
    let complete = times_of(&found(&host));
    let mut expected: BTreeMap<String, SnapshotTime> = moments.iter().map(|m| (m.name.clone(), m.time)).collect();
    expected.insert(next.name.clone(), next.time);
    assert_eq!(complete, expected);
    assert_disk(&host, &kept(&decide(&expected, &default_policy(), next.time.timestamp)), &expected, "after the run");
    assert_eq!(latest(&host), Some(new_id));
}

#[test]
fn the_newest_complete_snapshot_is_never_removed() {
    // The count rules of restic always keep the first snapshot of their walk, so the newest
    // can only be dropped on a tie: two snapshots of the same instant, taken in different
    // offsets (02:00+01:00 and 03:00+02:00 on the same day; different names). restic walks
    // equal times in input order, so the daily/weekly/monthly rules keep the first and drop
    // the second (not the oldest either: an older snapshot exists), while the engine's (and
    // `latest`'s) newest is the second. The safety rule must keep it.
    let env = Env::new();
    small_source(&env);
    let host = env.host_dir();
    let older = at("2025-01-14T02:00:00+01:00");
    let first = at("2025-01-15T02:00:00+01:00");
    let second = at("2025-01-15T03:00:00+02:00");
    assert_eq!(first.time.timestamp, second.time.timestamp);
    let times: BTreeMap<String, SnapshotTime> =
        [&older, &first, &second].iter().map(|m| (m.name.clone(), m.time)).collect();
    let rule = decide(&times, &default_policy(), second.time.timestamp);
    assert!(!rule[&second.name].keep, "the construct must make the rule drop the newest: {rule:?}");
    assert!(rule[&first.name].keep && rule[&older.name].keep);

    for m in [&older, &first, &second] {
        write(&env.src.join("a.txt"), &m.arg);
        env.snapshot_ok(&m.arg, &[]);
    }
    let newest_id = format!("daily/{}", second.name);
    assert_eq!(env.snapshot_ids().len(), 3, "{:?}", env.snapshot_ids());
    assert!(host.join(&newest_id).is_dir(), "the run's own prune removed the newest snapshot");
    assert_eq!(latest(&host), Some(newest_id.clone()));
    let now = at("2025-01-15T12:00:00+01:00");
    let (out, plan) = dry_run_json(&env, &now.arg);
    expect_exit(&out, 0, "prune --dry-run");
    let item = plan["items"].as_array().unwrap().iter().find(|i| i["id"] == newest_id.as_str()).unwrap().clone();
    assert_eq!(item["keep"], true);
    assert_eq!(item["tier"], "daily");
    assert_eq!(item["reasons"], serde_json::json!(["newest complete snapshot"]));
    expect_exit(&prune(&env, &now.arg, &[]), 0, "prune");
    assert_eq!(env.snapshot_ids().len(), 3);
    assert_eq!(latest(&host), Some(newest_id.clone()));
    assert_eq!(std::fs::read_to_string(env.in_snapshot(&newest_id).join("a.txt")).unwrap(), second.arg);
}

/// Writes a plan for the test host with the given retention and health threshold.
fn write_plan(env: &Env, file: &str, retention: serde_json::Value, max_age: &str) -> String {
    let plan = serde_json::json!({
        "version": 1,
        "host": HOST,
        "destination": { "path": env.dest, "requireMountPoint": false },
        "sources": [env.src],
        "retention": retention,
        "health": { "maxAge": max_age, "minBackups": 1 },
        "logDir": env.dir.path().join("log"),
        "stateDir": env.state,
    });
    let path = env.dir.path().join(file);
    std::fs::write(&path, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    s(&path)
}

#[test]
fn a_policy_that_keeps_nothing_is_rejected() {
    let env = Env::new();
    small_source(&env);
    let zeros = serde_json::json!({ "last": 0, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0 });
    let mut zero_within = zeros.clone();
    zero_within["within"] = "0d".into();
    let now = "2025-01-15T02:00:00+01:00";
    for (file, retention) in [("zeros.json", zeros.clone()), ("zero-within.json", zero_within)] {
        let plan = write_plan(&env, file, retention, "48h");
        let out = env.cmd(&["config", "check", &plan]).output().unwrap();
        expect_exit(&out, 2, &format!("config check {file}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("retention") && err.contains("keeps nothing"), "{}", show(&out));
        let out = env.cmd(&["now", "--config", &plan, "--now", now]).output().unwrap();
        expect_exit(&out, 2, &format!("now --config {file}"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("keeps nothing"), "{}", show(&out));
        let out = env.cmd(&["prune", "--config", &plan, "--now", now]).output().unwrap();
        expect_exit(&out, 2, &format!("prune --config {file}"));
        assert!(entries(&env.dest).is_empty(), "nothing may be created: {:?}", tree(&env.dest));
    }
    // The same plan with one count is good: the rejection is about the policy alone.
    let mut one = zeros;
    one["daily"] = 1.into();
    let plan = write_plan(&env, "one.json", one, "48h");
    expect_exit(&env.cmd(&["config", "check", &plan]).output().unwrap(), 0, "config check one.json");
    expect_exit(&env.cmd(&["now", "--config", &plan, "--now", now]).output().unwrap(), 0, "now --config one.json");
    assert_eq!(env.snapshot_ids(), ["daily/2025-01-15_02-00-00"]);
}

#[test]
fn pruning_refuses_when_the_newest_snapshot_is_older_than_the_health_threshold() {
    let env = Env::new();
    small_source(&env);
    let host = env.host_dir();
    let moments = nights_without_pruning(&env, Date::constant(2025, 1, 1), 12);
    let newest_time = moments.last().unwrap().time.timestamp;
    let before = env.snapshot_ids();
    let times: BTreeMap<String, SnapshotTime> = moments.iter().map(|m| (m.name.clone(), m.time)).collect();

    // Three weeks later the backups have been failing for long: prune refuses and says why.
    let late = "2025-02-02T02:00:00+01:00";
    let out = prune(&env, late, &[]);
    expect_exit(&out, 1, "prune with a stale newest snapshot");
    let text = stdout(&out);
    // 48h may be written as 2d.
    assert!(text.contains("prune refused"), "{}", show(&out));
    assert!(text.contains("health threshold (48h)") || text.contains("health threshold (2d)"), "{}", show(&out));
    assert_eq!(env.snapshot_ids(), before, "a refused prune removed snapshots");
    let out = prune(&env, late, &["--json"]);
    expect_exit(&out, 1, "prune --json with a stale newest snapshot");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["refused"].as_str().unwrap().contains("health threshold"), "{}", show(&out));
    expect_exit(&prune(&env, late, &["--dry-run"]), 1, "prune --dry-run with a stale newest snapshot");
    assert_eq!(env.snapshot_ids(), before);

    // Just inside the threshold it prunes what the pure function says.
    let fresh = newest_time.checked_add(jiff::SignedDuration::from_hours(47)).unwrap();
    let fresh_arg =
        format!("{}", fresh.to_zoned(jiff::tz::TimeZone::fixed(Offset::constant(1))).strftime("%Y-%m-%dT%H:%M:%S%:z"));
    let out = prune(&env, &fresh_arg, &[]);
    expect_exit(&out, 0, "prune within the threshold");
    let want = kept(&decide(&times, &default_policy(), fresh));
    assert!(want.len() < before.len());
    assert_disk(&host, &want, &times, "prune within the threshold");

    // The threshold is the plan's health.maxAge.
    let plan = write_plan(&env, "plan.json", serde_json::json!({ "daily": 2, "weekly": 0, "monthly": 0 }), "7d");
    let six_days = "2025-01-18T02:00:00+01:00";
    let out = env.cmd(&["prune", "--config", &plan, "--now", "2025-01-20T02:00:00+01:00"]).output().unwrap();
    expect_exit(&out, 1, "prune 8 days after the newest with maxAge 7d");
    assert!(stdout(&out).contains("health threshold (7d)"), "{}", show(&out));
    let kept_before = env.snapshot_ids();
    assert_eq!(kept_before.len(), want.len());
    let out = env.cmd(&["prune", "--config", &plan, "--now", six_days]).output().unwrap();
    expect_exit(&out, 0, "prune 6 days after the newest with maxAge 7d");
    assert_eq!(env.snapshot_ids().len(), 2, "daily 2");
}

// --- 3. prune --dry-run --json --------------------------------------------------------------

#[test]
fn prune_dry_run_json_lists_every_snapshot_with_reasons_and_changes_nothing() {
    let env = Env::new();
    small_source(&env);
    let host = env.host_dir();
    let mut rng = Lcg::new(7);
    // About 45 snapshots over four months across the March DST switch, several on some days.
    let mut times = BTreeMap::new();
    let mut day = Date::constant(2025, 2, 1);
    while day <= Date::constant(2025, 5, 31) {
        let this = day;
        day = day.tomorrow().unwrap();
        if !rng.chance(300) {
            continue;
        }
        for _ in 0..1 + rng.below(2) {
            let m = berlin(wall_clock(this, rng.below(24) as i8, rng.below(60) as i8, 0));
            if times.contains_key(&m.name) {
                continue;
            }
            write(&env.src.join("a.txt"), &m.arg);
            env.snapshot_ok(&m.arg, &["--no-prune"]);
            times.insert(m.name, m.time);
        }
    }
    assert!(times.len() >= 30, "{}", times.len());
    let newest_time = times[newest(&times).unwrap()].timestamp;
    let now = newest_time.checked_add(jiff::SignedDuration::from_hours(1)).unwrap().to_string();
    let want = decide(&times, &default_policy(), newest_time.checked_add(jiff::SignedDuration::from_hours(1)).unwrap());
    let removals = want.values().filter(|v| !v.keep).count();
    assert!(removals >= 10, "{removals}");

    let tree_before = tree(&host);
    let latest_before = latest(&host);
    let (out, plan) = dry_run_json(&env, &now);
    expect_exit(&out, 0, "prune --dry-run --json");
    assert_eq!(plan["refused"], serde_json::Value::Null);
    let items = plan["items"].as_array().unwrap();
    assert_eq!(items.len(), times.len(), "every snapshot is listed once");
    let mut previous: Option<Timestamp> = None;
    for item in items {
        let name = item["name"].as_str().unwrap();
        let v = &want[name];
        assert_eq!(item["id"], format!("daily/{name}"), "{item}");
        let time: Timestamp = item["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(time, times[name].timestamp, "{item}");
        assert!(previous.is_none_or(|p| p > time), "items are newest first");
        previous = Some(time);
        assert_eq!(item["keep"], v.keep, "{item}");
        assert_eq!(item["reasons"], serde_json::json!(v.reasons), "{item}: the reasons are restic's");
        match v.tier {
            Some(tier) => assert_eq!(item["tier"], tier.as_str(), "{item}"),
            None => assert_eq!(item["tier"], serde_json::Value::Null, "{item}"),
        }
    }
    // The human form lists every snapshot too, with keep/remove and the reasons.
    let out = prune(&env, &now, &["--dry-run"]);
    expect_exit(&out, 0, "prune --dry-run");
    let text = stdout(&out);
    for (name, v) in &want {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("daily/{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert_eq!(line.contains("keep"), v.keep, "{line}");
        assert_eq!(line.contains("remove"), !v.keep, "{line}");
        for r in &v.reasons {
            assert!(line.contains(r.as_str()), "{line} lacks {r}");
        }
    }
    assert_eq!(tree(&host), tree_before, "a dry run changed the host directory");
    assert_eq!(latest(&host), latest_before);

    // The real prune does what the dry run showed.
    let out = prune(&env, &now, &["--json"]);
    expect_exit(&out, 0, "prune --json");
    let executed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Only the dry run says what each removal frees (it walks every snapshot for that).
    let mut shown = plan.clone();
    shown.as_object_mut().unwrap().remove("freesBytes").expect("the dry run says what it frees");
    for item in shown["items"].as_array_mut().unwrap() {
        let keep = item["keep"] == true;
        assert_eq!(item.as_object_mut().unwrap().remove("freesBytes").is_some(), !keep, "{item}");
    }
    assert_eq!(executed, shown, "the executed plan differs from the dry run");
    assert_disk(&host, &kept(&want), &times, "after the prune");
}

// --- 4. kill -9 during pruning ------------------------------------------------------------

/// The `.trash` directory's (nlink, mtime): it changes with every rename into it.
fn trash_signature(host: &Path) -> Option<(u64, i64, i64)> {
    std::fs::symlink_metadata(host.join(".trash")).ok().map(|m| (m.nlink(), m.mtime(), m.mtime_nsec()))
}

/// When to kill a prune.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This many microseconds after the first rename into the trash is seen.
    AfterFirstRename(u64),
    /// This many microseconds after the start.
    AfterStart(u64),
}

/// Starts `prune` on `dest` and kills it with SIGKILL at `when`. Returns whether it was
/// still running when killed.
fn prune_and_kill(env: &Env, dest: &Path, now: &str, when: KillAt) -> bool {
    let host = dest.join(HOST);
    let before = trash_signature(&host);
    let mut child = env
        .cmd(&["prune", "--dest", &s(dest), "--host", HOST, "--state-dir", &s(&env.state), "--now", now])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let delay = match when {
        KillAt::AfterFirstRename(us) => {
            // Spin (a stat per turn) until the trash changes or the prune ends.
            while trash_signature(&host) == before {
                if child.try_wait().unwrap().is_some() {
                    return false;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "prune did not rename anything in 60 s");
            }
            Duration::from_micros(us)
        }
        KillAt::AfterStart(us) => Duration::from_micros(us),
    };
    let mark = Instant::now();
    while mark.elapsed() < delay {
        std::hint::spin_loop();
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    child.wait().unwrap();
    running
}

/// After an interrupted prune: every snapshot to keep is in a tier (once), everything in the
/// tiers is from the original set, and the trash holds nothing that is kept.
fn assert_nothing_kept_is_lost(
    host: &Path,
    all: &BTreeMap<String, SnapshotTime>,
    keep: &BTreeMap<String, Tier>,
    ctx: &str,
) {
    let disk = found(host);
    for name in keep.keys() {
        assert!(disk.contains_key(name), "{ctx}: kept snapshot {name} is gone");
    }
    for (name, f) in &disk {
        assert_eq!(all.get(name), Some(&f.time), "{ctx}: unknown snapshot {name}");
    }
    for entry in entries(&host.join(".trash")) {
        let name = entry.split('.').next().unwrap();
        assert!(!keep.contains_key(name), "{ctx}: kept snapshot {name} is in the trash as {entry}");
    }
    // `latest` never dangles: with a daily rule the newest stays in daily/.
    let l = latest(host).unwrap_or_else(|| panic!("{ctx}: latest is missing"));
    assert!(host.join(&l).join(".hwc-backup/meta.json").is_file(), "{ctx}: latest -> {l} dangles");
}

#[test]
fn kill_9_during_prune_loses_nothing_and_the_next_run_finishes_it() {
    let env = Env::new();
    small_source(&env);
    let mut rng = Lcg::new(99);
    // 200 snapshots, four a day for 50 days across the March DST switch, none pruned.
    let started = Instant::now();
    let mut all: BTreeMap<String, SnapshotTime> = BTreeMap::new();
    let mut day = Date::constant(2025, 3, 1);
    for _ in 0..50 {
        for hour in [1, 7, 13, 19] {
            let m = berlin(wall_clock(day, hour, rng.below(60) as i8, 0));
            write(&env.src.join("a.txt"), &m.arg);
            env.snapshot_ok(&m.arg, &["--no-prune"]);
            all.insert(m.name, m.time);
        }
        day = day.tomorrow().unwrap();
    }
    eprintln!("kill -9 test: 200 snapshots in {:.1} s", started.elapsed().as_secs_f64());
    let newest_time = all[newest(&all).unwrap()].timestamp;
    let now_ts = newest_time.checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    let now = now_ts.to_string();
    let keep = kept(&decide(&all, &default_policy(), now_ts));
    assert!(all.len() - keep.len() >= 150, "{} to expire", all.len() - keep.len());
    let original = env.dest.join("original");
    std::fs::rename(env.host_dir(), env.dest.join("original")).unwrap();
    let copy = |trial: usize| -> PathBuf {
        let dest = env.dir.path().join(format!("trial-{trial}"));
        std::fs::create_dir_all(&dest).unwrap();
        sh(&format!("cp -a '{}' '{}'", s(&original), s(&dest.join(HOST))));
        dest
    };

    // Reference: an uninterrupted prune, timed.
    let dest = copy(0);
    let t = Instant::now();
    let out = env.cmd(&["prune", "--dest", &s(&dest), "--host", HOST, "--now", &now]).output().unwrap();
    let full = t.elapsed();
    expect_exit(&out, 0, "uninterrupted prune");
    assert_disk(&dest.join(HOST), &keep, &all, "uninterrupted prune");

    // Trials on fresh copies: one to three kills each, then a prune or a run finishes. Six,
    // and more (up to 18) until a kill has landed between two renames: on a loaded machine
    // the renames of one prune (a few ms) can all be over before the kill arrives.
    let mut mid_rename = 0;
    let mut log = Vec::new();
    for trial in 1..=18 {
        if trial > 6 && mid_rename > 0 {
            break;
        }
        let dest = copy(trial);
        let host = dest.join(HOST);
        let kills = 1 + (trial % 3);
        for k in 0..kills {
            let when = match (trial + k) % 3 {
                _ if k == 0 && trial % 2 == 1 => KillAt::AfterFirstRename(0),
                0 | 1 => KillAt::AfterFirstRename(u64::from(rng.below(3000))),
                _ => KillAt::AfterStart(u64::from(rng.below(full.as_micros().max(1) as u32))),
            };
            let expired_before = found(&host).keys().filter(|n| !keep.contains_key(*n)).count();
            let killed = prune_and_kill(&env, &dest, &now, when);
            let expired_after = found(&host).keys().filter(|n| !keep.contains_key(*n)).count();
            let ctx = format!("trial {trial} kill {k} ({when:?})");
            assert_nothing_kept_is_lost(&host, &all, &keep, &ctx);
            if killed && expired_after > 0 && expired_after < expired_before {
                mid_rename += 1;
            }
            log.push(format!(
                "{ctx}: {} expired left in tiers (was {expired_before}), {} in trash{}",
                expired_after,
                entries(&host.join(".trash")).len(),
                if killed { "" } else { "; the prune had already finished" }
            ));
        }
        let ctx = format!("trial {trial}: the finishing run");
        if trial % 2 == 0 {
            let out = env.cmd(&["prune", "--dest", &s(&dest), "--host", HOST, "--now", &now]).output().unwrap();
            expect_exit(&out, 0, &ctx);
            assert_disk(&host, &keep, &all, &ctx);
        } else {
            // `now` an hour later (Berlin time, like the snapshots: in UTC its name could be
            // the name of an existing snapshot): its prune completes the interrupted one.
            let next = berlin(
                Offset::constant(2).to_datetime(now_ts.checked_add(jiff::SignedDuration::from_hours(1)).unwrap()),
            );
            let out = env
                .cmd(&["now", "--source", &s(&env.src), "--dest", &s(&dest), "--host", HOST])
                .args(["--state-dir", &s(&env.state), "--now", &next.arg])
                .output()
                .unwrap();
            expect_exit(&out, 0, &ctx);
            let mut with_new = all.clone();
            with_new.insert(next.name.clone(), next.time);
            let next = next.time.timestamp;
            assert_disk(&host, &kept(&decide(&with_new, &default_policy(), next)), &with_new, &ctx);
        }
        assert!(entries(&host.join(".trash")).is_empty(), "{ctx}: the trash is not empty");
        let _ = std::fs::remove_dir_all(&dest);
    }
    eprintln!(
        "kill -9 test: an uninterrupted prune of 200 takes {:.1} ms\n{}",
        full.as_secs_f64() * 1000.0,
        log.join("\n")
    );
    assert!(mid_rename > 0, "no kill landed between the renames:\n{}", log.join("\n"));
}

#[test]
fn expired_snapshots_are_deleted_at_idle_io_priority() {
    require("ionice");
    let env = Env::new();
    small_source(&env);
    let keep_last = serde_json::json!({ "last": 1, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0,
                                        "pruneAfterRun": false });
    let plan = write_plan(&env, "last.json", keep_last, "48h");
    for now in ["2025-01-15T02:00:00+01:00", "2025-01-15T14:00:00+01:00"] {
        expect_exit(&env.cmd(&["now", "--config", &plan, "--now", now]).output().unwrap(), 0, now);
    }
    let mut c = env.cmd(&["prune", "--config", &plan, "--now", "2025-01-15T15:00:00+01:00"]);
    c.env("HWC_BACKUP_LOG", "debug");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    // The class as the kernel reports it for the deleting thread, read back by `ionice -p`.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("emptying the trash in I/O class idle"),
        "the trash was not emptied at idle I/O priority: {}",
        show(&out)
    );
    assert_eq!(env.snapshot_ids(), vec!["daily/2025-01-15_14-00-00".to_string()]);
    let trash: Vec<_> = std::fs::read_dir(env.host_dir().join(".trash")).map(|d| d.collect()).unwrap_or_default();
    assert!(trash.is_empty(), "the trash still holds {trash:?}");
}
