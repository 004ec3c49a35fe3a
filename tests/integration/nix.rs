//! The Nix side, checked without nixpkgs: every `.nix` file parses; the pure render
//! (`nix/render.nix`, through `tests/nix/eval.nix`) gives the golden plan, unit descriptions,
//! unit files, `authorized_keys` entries, assertions and warnings for each case in
//! `tests/nix/cases/` (an agent-only client has no plan or units); every rendered plan
//! passes `hwc-backup config check`; the unit files pass `systemd-analyze verify` and their
//! calendar and time-span values parse. With `HWC_NIXPKGS_LIB` pointing at a nixpkgs `lib`
//! directory, the module itself is also evaluated with the real `lib.evalModules`.
//!
//! Golden files live in `tests/nix/golden/<case>/`; `UPDATE_GOLDEN=1 cargo test --test
//! integration nix::` rewrites them (review the diff before committing). Cases named
//! `invalid-*` must fail an assertion and only have `checks.json`; all others must pass them.
//!
//! The tools come from Debian's `nix-bin` and `systemd`. When one is missing these tests fail
//! rather than pass without checking anything.

mod unit_file;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{Map, Value};

use unit_file::Kind;

/// The package path the golden files are rendered with (a store path that exists nowhere).
const FAKE_PACKAGE: &str = "/nix/store/00000000000000000000000000000000-hwc-backup-0.1.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn hwc_backup() -> &'static str {
    env!("CARGO_BIN_EXE_hwc-backup")
}

/// Runs a tool that these tests cannot do without; a missing tool is a failure.
fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: run tests/run (the README test command), \
             which installs nix-bin and systemd"
        ),
        Err(err) => panic!("cannot run {program}: {err}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Prints past the test harness's capture, so that a skip is seen in a passing run.
fn announce(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

// -------------------------------------------------------------------------------------------------
// Evaluating the cases
// -------------------------------------------------------------------------------------------------

struct Case {
    name: String,
    path: PathBuf,
    /// `{ plan, units, warnings, failedAssertions }` from tests/nix/eval.nix.
    rendered: Value,
}

impl Case {
    fn is_invalid(&self) -> bool {
        self.name.starts_with("invalid-")
    }

    fn failed_assertions(&self) -> Vec<String> {
        strings(&self.rendered["failedAssertions"])
    }

    fn units(&self) -> Vec<(String, Kind, &Value)> {
        let mut units = Vec::new();
        for (set, kind) in [("services", Kind::Service), ("timers", Kind::Timer)] {
            let Some(map) = self.rendered["units"][set].as_object() else { continue };
            for (name, def) in map {
                units.push((unit_file::file_name(name, kind), kind, def));
            }
        }
        units
    }

    /// The service profiles' units (`profileUnits`: Nextcloud's maintenance mode).
    fn profile_unit_files(&self) -> Vec<(String, String)> {
        let Some(map) = self.rendered["profileUnits"].as_object() else { return Vec::new() };
        map.iter()
            .map(|(name, def)| {
                let file = unit_file::file_name(name, Kind::Service);
                let text = unit_file::render(name, Kind::Service, def)
                    .unwrap_or_else(|err| panic!("{}: {file}: {err}", self.name));
                (file, text)
            })
            .collect()
    }

    fn unit_files(&self) -> Vec<(String, String)> {
        self.units()
            .into_iter()
            .map(|(file, kind, def)| {
                let name = file.rsplit_once('.').map_or(file.as_str(), |(n, _)| n);
                let text =
                    unit_file::render(name, kind, def).unwrap_or_else(|err| panic!("{}: {file}: {err}", self.name));
                (file, text)
            })
            .collect()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map_or_else(Vec::new, |items| items.iter().map(|item| item.as_str().unwrap_or_default().to_owned()).collect())
}

fn case_paths() -> Vec<PathBuf> {
    let dir = repo().join("tests/nix/cases");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "nix"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "expected the seed's examples and edge cases in {}", dir.display());
    paths
}

fn nix_eval(file: &Path, args: &[&str]) -> Value {
    let file = file.to_str().unwrap();
    let mut all = vec!["--eval", "--strict", "--json", file];
    all.extend_from_slice(args);
    let output = run("nix-instantiate", &all);
    assert!(output.status.success(), "nix-instantiate {}\n{}", all.join(" "), text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("nix-instantiate printed JSON")
}

fn render_case(path: &Path, package: &str) -> Case {
    render_case_with(path, package, &[])
}

/// `extra`: more `--argstr NAME VALUE` pairs for tests/nix/eval.nix (e.g. a real `flock`).
fn render_case_with(path: &Path, package: &str, extra: &[(&str, &str)]) -> Case {
    let mut args = vec!["--arg", "case", path.to_str().unwrap(), "--argstr", "package", package];
    for (name, value) in extra {
        args.extend(["--argstr", name, value]);
    }
    let rendered = nix_eval(&repo().join("tests/nix/eval.nix"), &args);
    let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
    Case { name, path: path.to_owned(), rendered }
}

/// Every case, rendered once with the golden package path.
fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| case_paths().iter().map(|path| render_case(path, FAKE_PACKAGE)).collect())
}

fn valid_cases() -> impl Iterator<Item = &'static Case> {
    cases().iter().filter(|case| !case.is_invalid())
}

/// Valid cases with the server half enabled (a plan); an agent-only client has none.
fn cases_with_plan() -> impl Iterator<Item = &'static Case> {
    valid_cases().filter(|case| !case.rendered["plan"].is_null())
}

/// JSON with sorted keys and two-space indentation, ending in a newline.
fn canonical(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sort(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&sort(value)).unwrap() + "\n"
}

// -------------------------------------------------------------------------------------------------
// Golden files
// -------------------------------------------------------------------------------------------------

/// Compares (or, with UPDATE_GOLDEN=1, writes) files under tests/nix/golden and remembers
/// which it saw, so that files no case produces any more are reported too.
struct Golden {
    dir: PathBuf,
    update: bool,
    seen: BTreeSet<PathBuf>,
    problems: Vec<String>,
}

impl Golden {
    fn new() -> Golden {
        Golden {
            dir: repo().join("tests/nix/golden"),
            update: std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1"),
            seen: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    fn check(&mut self, relative: &str, actual: &str) {
        let path = self.dir.join(relative);
        self.seen.insert(path.clone());
        let expected = fs::read_to_string(&path).ok();
        if expected.as_deref() == Some(actual) {
            return;
        }
        if self.update {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, actual).unwrap();
            return;
        }
        let report = match expected {
            None => format!("{relative}: missing; it would be\n{actual}"),
            Some(expected) => format!("{relative}: differs\n{}", line_diff(&expected, actual)),
        };
        self.problems.push(report);
    }

    fn finish(mut self) {
        for path in files_below(&self.dir) {
            if !self.seen.contains(&path) {
                if self.update {
                    fs::remove_file(&path).unwrap();
                } else {
                    self.problems.push(format!("{}: no case produces it", path.display()));
                }
            }
        }
        assert!(
            self.problems.is_empty(),
            "golden files out of date (UPDATE_GOLDEN=1 rewrites them):\n\n{}",
            self.problems.join("\n\n")
        );
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return files };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The lines only in `expected` (-) and only in `actual` (+), in order; enough to read a change.
fn line_diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // Longest common subsequence table, from the end.
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            i += 1;
            j += 1;
        } else if j < new.len() && (i == old.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", new[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", old[i]));
            i += 1;
        }
    }
    out
}

// -------------------------------------------------------------------------------------------------
// Tests that always run
// -------------------------------------------------------------------------------------------------

#[test]
fn every_nix_file_parses() {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && !name.starts_with("result") {
                    walk(&path, found);
                }
            } else if name.ends_with(".nix") {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo(), &mut files);
    let expected = ["flake.nix", "nix/render.nix", "nix/package.nix", "modules/backup.nix"];
    for file in expected {
        assert!(files.contains(&repo().join(file)), "{file} is missing");
    }

    let failures: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let output = run("nix-instantiate", &["--parse", file.to_str().unwrap()]);
            (!output.status.success()).then(|| format!("{}:\n{}", file.display(), text(&output.stderr)))
        })
        .collect();
    assert!(failures.is_empty(), "files that do not parse:\n{}", failures.join("\n"));
}

#[test]
fn render_matches_golden() {
    let mut golden = Golden::new();
    for case in cases() {
        let r = &case.rendered;
        let checks = serde_json::json!({
            "failedAssertions": r["failedAssertions"],
            "warnings": r["warnings"],
        });
        golden.check(&format!("{}/checks.json", case.name), &canonical(&checks));
        if case.is_invalid() {
            continue;
        }
        if !r["plan"].is_null() {
            golden.check(&format!("{}/plan.json", case.name), &canonical(&r["plan"]));
            golden.check(&format!("{}/units.json", case.name), &canonical(&r["units"]));
        }
        for (file, text) in case.unit_files() {
            golden.check(&format!("{}/units/{file}", case.name), &text);
        }
        for (file, text) in case.profile_unit_files() {
            golden.check(&format!("{}/profile-units/{file}", case.name), &text);
        }
        if r["authorizedKeys"].as_object().is_some_and(|keys| !keys.is_empty()) {
            golden.check(&format!("{}/authorized-keys.json", case.name), &canonical(&r["authorizedKeys"]));
        }
    }
    golden.finish();
}

#[test]
fn only_invalid_cases_fail_assertions() {
    for case in cases() {
        let failed = case.failed_assertions();
        if case.is_invalid() {
            assert!(!failed.is_empty(), "{} should fail an assertion", case.path.display());
        } else {
            assert!(failed.is_empty(), "{} fails assertions: {failed:#?}", case.path.display());
        }
    }
}

#[test]
fn every_backup_unit_reports_failure_and_survives_a_switch() {
    for case in valid_cases() {
        for (file, kind, def) in case.units() {
            if kind != Kind::Service {
                continue;
            }
            let name = format!("{}: {file}", case.name);
            assert_eq!(def["restartIfChanged"], false, "{name}");
            assert_eq!(def["serviceConfig"]["Type"], "oneshot", "{name}");
            assert_eq!(def["serviceConfig"]["ProtectSystem"], "strict", "{name}");
            if file.starts_with("backup-failure@") {
                assert!(def.get("onFailure").is_none(), "{name}: must not trigger itself");
            } else {
                assert_eq!(def["onFailure"][0], "backup-failure@%n.service", "{name}");
                assert_eq!(def["serviceConfig"]["IOSchedulingClass"], "idle", "{name}");
            }
        }
    }
}

#[test]
fn every_pulled_host_has_a_unit_a_slot_and_the_network() {
    let mut checked = 0;
    for case in cases_with_plan() {
        let Some(hosts) = case.rendered["plan"]["hosts"].as_object() else {
            panic!("{}: the plan has no hosts object", case.name)
        };
        let services = &case.rendered["units"]["services"];
        let timers = &case.rendered["units"]["timers"];
        let mut slots = BTreeSet::new();
        for name in hosts.keys() {
            let unit = format!("backup-host-{name}");
            let def = &services[&unit];
            let what = format!("{}: {unit}", case.name);
            assert!(def.is_object(), "{what}: missing");
            let exec = without_inhibitor(def["serviceConfig"]["ExecStart"].as_str().unwrap());
            let args: Vec<&str> = exec.split_whitespace().collect();
            assert_eq!(args[1], "--no-fork", "{what}: {exec}");
            slots.insert(args[2].to_owned());
            assert!(
                exec.ends_with(&format!("/bin/hwc-backup pull --host {name} --config /etc/hwc-backup/config.json")),
                "{what}: {exec}"
            );
            for key in ["wants", "after"] {
                assert!(strings(&def[key]).contains(&"network-online.target".to_owned()), "{what}: {key}");
            }
            assert_eq!(def["unitConfig"]["RequiresMountsFor"][0], case.rendered["plan"]["destination"]["path"]);
            let scheduled = timers.get("backup").is_some() || case.name == "pull-only";
            assert_eq!(timers.get(&unit).is_some(), scheduled, "{what}: timer");
            // Its own health check and verification, also on a server without local snapshots.
            for (check, command) in [("health-check", "health"), ("verify", "verify")] {
                let unit = format!("backup-{check}-host-{name}");
                let def = &services[&unit];
                let what = format!("{}: {unit}", case.name);
                let exec = without_inhibitor(def["serviceConfig"]["ExecStart"].as_str().unwrap_or_default());
                assert!(
                    exec.ends_with(&format!(
                        "/bin/hwc-backup {command} --host {name} --config /etc/hwc-backup/config.json"
                    )),
                    "{what}: {exec}"
                );
                assert_eq!(strings(&def["onFailure"]), ["backup-failure@%n.service"], "{what}");
            }
            if case.name == "pull-only" {
                for check in ["health-check", "verify"] {
                    assert!(
                        timers.get(format!("backup-{check}-host-{name}")).is_some(),
                        "{}: {check} timer",
                        case.name
                    );
                }
            }
            checked += 1;
        }
        // Three hosts, hostConcurrency = 2: two slots, one of them shared.
        if case.name == "pull-server" {
            assert_eq!(slots.len(), 2, "{slots:?}");
        }
        // No pulled host, no pull unit.
        for prefix in ["backup-host-", "backup-health-check-host-", "backup-verify-host-"] {
            let units = services.as_object().unwrap().keys().filter(|u| u.starts_with(prefix)).count();
            assert_eq!(units, hosts.len(), "{}: {prefix}", case.name);
        }
    }
    assert!(checked >= 4, "only {checked} pulled hosts");
}

/// A plan the runner must refuse, so that `config check` is known to check something.
fn broken_plan() -> Value {
    let mut plan = cases().iter().find(|c| c.name == "quick-start").unwrap().rendered["plan"].clone();
    plan["retention"]["daily"] = Value::String("seven".into());
    plan
}

/// The module's assertion and `config check` agree: a source that is the destination, or
/// lies inside it, is refused by both (the runner with exit 2, naming the source).
#[test]
fn module_and_config_check_refuse_a_source_inside_the_destination() {
    let case = cases().iter().find(|c| c.name == "invalid-source-in-destination").unwrap();
    assert!(
        case.failed_assertions().iter().any(|a| a.contains("must not be the destination")),
        "{:?}",
        case.failed_assertions()
    );
    let dir = tempfile::tempdir().unwrap();
    for inside in ["/mnt/backup", "/mnt/backup/laptop/daily"] {
        let mut plan = case.rendered["plan"].clone();
        plan["sources"][1] = Value::String(inside.into());
        let file = dir.path().join("plan.json");
        fs::write(&file, canonical(&plan)).unwrap();
        let output = run(hwc_backup(), &["config", "check", file.to_str().unwrap()]);
        let said = text(&output.stdout) + &text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{inside}: {said}");
        assert!(said.contains("sources[1]") && said.contains(inside) && said.contains("destination"), "{said}");
    }
}

#[test]
fn rendered_plans_pass_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in cases_with_plan() {
        let file = dir.path().join(format!("{}.json", case.name));
        fs::write(&file, canonical(&case.rendered["plan"])).unwrap();
        let output = run(hwc_backup(), &["config", "check", file.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "hwc-backup config check refuses the plan of {}:\n{}{}",
            case.path.display(),
            text(&output.stdout),
            text(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5);

    let file = dir.path().join("broken.json");
    fs::write(&file, canonical(&broken_plan())).unwrap();
    let output = run(hwc_backup(), &["config", "check", file.to_str().unwrap()]);
    let said = text(&output.stdout) + &text(&output.stderr);
    assert!(
        !output.status.success() && said.contains("retention.daily"),
        "config check accepted a plan with retention.daily = \"seven\" (or did not name the \
         field): {said}"
    );
}

/// The exposure `systemd-analyze security --offline=true` gives each unit of each case stays
/// within its kind's limit (issue 17): what the unit needs, nothing more (README, "Generated
/// units", says what remains exposed and why).
#[test]
fn every_unit_stays_within_its_exposure_limit() {
    let limit = |unit: &str| -> f64 {
        let kinds: [(&str, f64); 9] = [
            ("backup-health-check", 3.0),
            ("backup-failure@", 3.0),
            ("backup-verify", 3.5),
            ("backup-cloud", 4.0),
            ("backup-offsite-", 4.0),
            ("backup-host-", 4.5),
            ("backup-local", 4.5),
            ("backup-on-mount", 4.5),
            ("backup.service", 4.5),
        ];
        kinds.iter().find(|(prefix, _)| unit.starts_with(prefix)).unwrap_or_else(|| panic!("{unit}: which limit?")).1
    };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in valid_cases() {
        let units = dir.path().join(&case.name);
        fs::create_dir_all(&units).unwrap();
        for (file, unit) in case.unit_files().iter().filter(|(f, _)| f.ends_with(".service")) {
            let path = units.join(file);
            fs::write(&path, unit).unwrap();
            let output = run("systemd-analyze", &["security", "--offline=true", "--no-pager", path.to_str().unwrap()]);
            let said = text(&output.stdout);
            let score: f64 = said
                .lines()
                .rev()
                .find_map(|l| {
                    l.split_once("Overall exposure level for ")?.1.split_once(": ")?.1.split(' ').next()?.parse().ok()
                })
                .unwrap_or_else(|| {
                    panic!("{}: {file}: no exposure level in\n{said}{}", case.name, text(&output.stderr))
                });
            assert!(score <= limit(file), "{}: {file}: exposure {score} > {}\n{said}", case.name, limit(file));
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} units");
}

/// The capabilities the units keep are enough for what they run: the runner started as root with
/// exactly the bounding set of the unit (setpriv(1): root's capabilities after exec are its
/// bounding set) snapshots files of another user, and verifies and checks them with only
/// CAP_DAC_READ_SEARCH — which is needed: without it the verification cannot read them.
#[test]
fn units_capabilities_are_enough_for_their_commands() {
    let case = cases().iter().find(|c| c.name == "everything").unwrap();
    let services = &case.rendered["units"]["services"];
    let set = |unit: &str| strings(&services[unit]["serviceConfig"]["CapabilityBoundingSet"]);
    // systemd's names to setpriv's: "~CAP_A CAP_B" drops them, "CAP_A" keeps only it.
    let setpriv = |sets: Vec<String>| -> String {
        let mut spec = Vec::new();
        for s in sets {
            match s.strip_prefix('~') {
                Some(dropped) => spec.extend(dropped.split_whitespace().map(|c| format!("-{}", c[4..].to_lowercase()))),
                None => {
                    spec.push("-all".to_owned());
                    spec.extend(s.split_whitespace().map(|c| format!("+{}", c[4..].to_lowercase())));
                }
            }
        }
        spec.join(",")
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dest, state) = (dir.path().join("src"), dir.path().join("dest"), dir.path().join("state"));
    fs::create_dir_all(src.join("private")).unwrap();
    fs::write(src.join("private/key"), "secret").unwrap();
    let run_as = |bounding: &str, args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--bounding-set", bounding, "--inh-caps", "-all", "--", hwc_backup()]).args(args);
        cmd.args(["--dest", dest.to_str().unwrap(), "--host", "h", "--state-dir", state.to_str().unwrap()]);
        cmd.output().unwrap()
    };
    let owned = Command::new("chown").args(["-R", "1000:1000", src.join("private").to_str().unwrap()]).status();
    assert!(owned.unwrap().success());
    Command::new("chmod").args(["700", src.join("private").to_str().unwrap()]).status().unwrap();
    Command::new("chmod").args(["600", src.join("private/key").to_str().unwrap()]).status().unwrap();

    let snapshot = setpriv(set("backup"));
    let out = run_as(&snapshot, &["now", "--source", src.to_str().unwrap()]);
    assert!(out.status.success(), "now with {snapshot}: {}{}", text(&out.stdout), text(&out.stderr));
    for unit in ["backup-verify", "backup-health-check", "backup-failure@"] {
        let bounding = setpriv(set(unit));
        assert_eq!(bounding, "-all,+dac_read_search", "{unit}");
        let command = if unit == "backup-verify" { "verify" } else { "health" };
        let out = run_as(&bounding, &[command]);
        assert!(out.status.success(), "{unit}: {command} with {bounding}: {}{}", text(&out.stdout), text(&out.stderr));
    }
    // The capability is what makes the difference.
    let out = run_as("-all", &["verify"]);
    assert!(!out.status.success() && text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    // The units must name a binary that exists here: a package directory whose bin/ holds the
    // freshly built hwc-backup.
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("package");
    fs::create_dir_all(package.join("bin")).unwrap();
    std::os::unix::fs::symlink(hwc_backup(), package.join("bin/hwc-backup")).unwrap();

    // The pull units wait for their slot with util-linux's flock(1).
    let flock = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("flock"))
        .chain([PathBuf::from("/usr/bin/flock")])
        .find(|path| path.is_file())
        .expect("flock (util-linux) is not installed");
    let flock = flock.to_str().unwrap();
    // inhibitSleep wraps the long-running units' commands in systemd-inhibit(1).
    let inhibit = Path::new("/usr/bin/systemd-inhibit");
    assert!(inhibit.is_file(), "systemd-inhibit (systemd) is not installed");
    let inhibit = inhibit.to_str().unwrap();

    let mut verified = 0;
    let mut pulls = 0;
    for case in valid_cases() {
        let case =
            render_case_with(&case.path, package.to_str().unwrap(), &[("flock", flock), ("systemdInhibit", inhibit)]);
        let files = case.unit_files();
        if files.is_empty() {
            continue;
        }
        let units = dir.path().join(&case.name);
        fs::create_dir_all(&units).unwrap();
        let mut args = vec!["verify".to_owned(), "--man=no".to_owned()];
        for (file, text) in &files {
            // A postStop job script (ExecStopPost=) must exist too: written here, with its path.
            let store_script = "ExecStopPost=/nix/store/00000000000000000000000000000000-unit-script-";
            let text = match text.lines().find_map(|l| l.strip_prefix(store_script)) {
                Some(rest) => {
                    let script = dir.path().join(format!("{}-{}", case.name, rest.replace('/', "-")));
                    fs::write(&script, "#!/bin/sh\n").unwrap();
                    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
                    text.replace(&format!("{store_script}{rest}"), &format!("ExecStopPost={}", script.display()))
                }
                None => text.clone(),
            };
            fs::write(units.join(file), text).unwrap();
            args.push(units.join(file).to_str().unwrap().to_owned());
        }
        // The template itself, instantiated as OnFailure= would (backup-failure@backup.service).
        if let Some((_, text)) = files.iter().find(|(f, _)| f == "backup-failure@.service") {
            let instance = units.join("backup-failure@backup.service.service");
            fs::write(&instance, text).unwrap();
            args.push(instance.to_str().unwrap().to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run("systemd-analyze", &args);
        // verify exits 0 on unknown keys and bad values: any output at all is a finding.
        let said = text(&output.stdout) + &text(&output.stderr);
        assert!(
            output.status.success() && said.trim().is_empty(),
            "systemd-analyze verify on the units of {}:\n{said}",
            case.name
        );
        verified += files.len();
        pulls += files.iter().filter(|(f, _)| f.starts_with("backup-host-")).count();
    }
    assert!(verified >= 20, "only {verified} unit files verified");
    assert!(pulls >= 6, "only {pulls} pull unit files verified");
}

#[test]
fn unit_command_lines_are_accepted_by_the_cli() {
    // Each ExecStart, pointed at a plan that does not exist: the runner must get past its
    // argument parser (clap prints "Usage:" only for usage errors) and stop at the plan.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let mut commands = BTreeSet::new();
    for case in valid_cases() {
        for (file, kind, def) in case.units() {
            if kind == Kind::Service {
                let exec = without_inhibitor(def["serviceConfig"]["ExecStart"].as_str().unwrap());
                // A pull starts as `<flock> --no-fork <slot lock> <package>/bin/hwc-backup …`.
                let runner = exec.find(FAKE_PACKAGE).unwrap_or_else(|| panic!("{file}: {exec}"));
                if runner > 0 {
                    let wrapper: Vec<&str> = exec[..runner].split_whitespace().collect();
                    assert!(
                        matches!(wrapper.as_slice(), [flock, "--no-fork", lock]
                            if flock.ends_with("/bin/flock") && lock.starts_with("/var/lib/hwc-backup/pull-slot@")),
                        "{}: {file}: {exec}",
                        case.name
                    );
                }
                commands.insert(exec[runner + FAKE_PACKAGE.len()..].replace("%i", "backup.service"));
            }
        }
    }
    assert!(commands.len() >= 6, "{commands:?}");
    for command in &commands {
        let args: Vec<&str> = command
            .split_whitespace()
            .skip(1) // /bin/hwc-backup
            .map(|arg| if arg == "/etc/hwc-backup/config.json" { missing.to_str().unwrap() } else { arg })
            .collect();
        let output = run(hwc_backup(), &args);
        let said = text(&output.stdout) + &text(&output.stderr);
        assert!(
            !output.status.success() && !said.contains("Usage:") && said.contains("missing.json"),
            "`{}`: not accepted as a command line:\n{said}",
            command.trim_start_matches("/bin/")
        );
    }
}

/// The command that `inhibitSleep` runs under `systemd-inhibit --what=sleep --who=hwc-backup
/// "--why=…" --mode=block`, checking the prefix's shape; a command without it as it is.
fn without_inhibitor(exec: &str) -> &str {
    let Some((program, rest)) = exec.split_once(' ') else { return exec };
    if !program.ends_with("/systemd-inhibit") {
        return exec;
    }
    let rest = rest
        .strip_prefix("--what=sleep --who=hwc-backup \"--why=")
        .unwrap_or_else(|| panic!("unexpected systemd-inhibit arguments: {exec}"));
    let (why, rest) =
        rest.split_once("\" --mode=block ").unwrap_or_else(|| panic!("unexpected systemd-inhibit arguments: {exec}"));
    // One double-quoted word of the unit file: nothing that ends it or that systemd expands.
    assert!(!why.is_empty() && !why.contains(['"', '\\', '%', '$']), "--why={why:?} in {exec}");
    rest
}

#[test]
fn long_running_units_keep_the_machine_awake() {
    let mut wrapped = 0;
    for case in valid_cases() {
        let off = fs::read_to_string(&case.path).unwrap().contains("inhibitSleep = false;");
        for (file, kind, def) in case.units() {
            if kind != Kind::Service {
                continue;
            }
            let exec = def["serviceConfig"]["ExecStart"].as_str().unwrap();
            let quick = file.starts_with("backup-failure@") || file.starts_with("backup-health-check");
            let inhibited = exec.starts_with(&format!("{}-systemd-258/bin/systemd-inhibit ", &FAKE_PACKAGE[..43]));
            assert_eq!(inhibited, !off && !quick, "{}: {file}: {exec}", case.name);
            if inhibited {
                let description = def["description"].as_str().unwrap();
                assert!(
                    exec.contains(&format!("\"--why={}\"", description.trim_start_matches("hwc-backup: "))),
                    "{exec}"
                );
                // The prefix is well formed and the runner follows it.
                assert!(
                    without_inhibitor(exec).starts_with(FAKE_PACKAGE)
                        || without_inhibitor(exec).contains("/bin/flock --no-fork ")
                );
                wrapped += 1;
            }
            // onlyOnAC keeps working next to it.
            if file == "backup.service" && case.name == "laptop-external-drive" {
                assert_eq!(def["unitConfig"]["ConditionACPower"], true);
                assert!(inhibited);
            }
        }
    }
    assert!(wrapped >= 30, "only {wrapped} units run under systemd-inhibit");
}

#[test]
fn offsite_units_follow_their_schedules() {
    let mut checked = 0;
    for case in cases_with_plan() {
        let Some(offsites) = case.rendered["plan"]["offsite"].as_object() else {
            panic!("{}: the plan has no offsite object", case.name)
        };
        let services = &case.rendered["units"]["services"];
        let timers = &case.rendered["units"]["timers"];
        for (name, offsite) in offsites {
            let what = format!("{}: offsite {name}", case.name);
            let repository = offsite["repository"].as_str().unwrap();
            let own = format!("backup-offsite-{name}");
            let check = format!("backup-offsite-check-{name}");
            // Who copies: its own unit with a schedule, backup.service without.
            let copier = match offsite["schedule"].as_str() {
                Some(calendar) => {
                    assert_eq!(timers[&own]["timerConfig"]["OnCalendar"], calendar, "{what}");
                    let exec = without_inhibitor(services[&own]["serviceConfig"]["ExecStart"].as_str().unwrap());
                    assert_eq!(
                        exec,
                        format!("{FAKE_PACKAGE}/bin/hwc-backup offsite {name} --config /etc/hwc-backup/config.json")
                    );
                    &services[&own]
                }
                None => {
                    assert!(services.get(&own).is_none() && timers.get(&own).is_none(), "{what}");
                    assert!(services["backup"]["description"].as_str().unwrap().contains("offsite copies"), "{what}");
                    &services["backup"]
                }
            };
            let mut users = vec![copier];
            match offsite["check"]["schedule"].as_str() {
                Some(calendar) => {
                    assert_eq!(timers[&check]["timerConfig"]["OnCalendar"], calendar, "{what}");
                    let exec = without_inhibitor(services[&check]["serviceConfig"]["ExecStart"].as_str().unwrap());
                    assert_eq!(
                        exec,
                        format!("{FAKE_PACKAGE}/bin/hwc-backup verify --offsite {name} --config /etc/hwc-backup/config.json")
                    );
                    users.push(&services[&check]);
                }
                None => assert!(services.get(&check).is_none() && timers.get(&check).is_none(), "{what}"),
            }
            for unit in users {
                let writable = strings(&unit["serviceConfig"]["ReadWritePaths"]);
                let mounts = strings(&unit["unitConfig"]["RequiresMountsFor"]);
                let network = strings(&unit["wants"]).contains(&"network-online.target".to_owned());
                if repository.starts_with('/') {
                    assert!(writable.contains(&format!("-{repository}")), "{what}: {writable:?}");
                    assert!(mounts.contains(&repository.to_owned()), "{what}: {mounts:?}");
                } else {
                    assert!(network, "{what}: a remote repository without network-online.target");
                }
                assert_eq!(unit["environment"]["RESTIC_CACHE_DIR"], "/var/cache/hwc-backup/restic", "{what}");
                assert_eq!(unit["serviceConfig"]["CacheDirectory"], "hwc-backup", "{what}");
            }
            checked += 1;
        }
        let own_units = services.as_object().unwrap().keys().filter(|u| u.starts_with("backup-offsite-")).count();
        let expected = offsites.values().filter(|o| !o["schedule"].is_null()).count()
            + offsites.values().filter(|o| !o["check"]["schedule"].is_null()).count();
        assert_eq!(own_units, expected, "{}", case.name);
    }
    assert!(checked >= 3, "only {checked} offsites");
}

#[test]
fn mount_unit_names_are_systemd_escapes() {
    let paths = [
        "/mnt/backup",
        "/media/backup-drive",
        "/run/media/alice/My:Disk_2.0",
        "/mnt/.hidden/x",
        "/.snapshots",
        "/srv/a+b@c,d~e=f",
        "/mnt/[x](y){z}'q'!&*#",
    ];
    let list = paths.iter().map(|p| serde_json::to_string(p).unwrap()).collect::<Vec<_>>().join(" ");
    let expr = format!(
        "let ctx = {{ cfg = {{ }}; }} // import {root}/nix/render/common.nix ctx // import {root}/nix/render/offsite.nix ctx; \
         in map ctx.escapeSystemdPath [ {list} ]",
        root = repo().display()
    );
    let ours = strings(&nix_eval_expr(&expr));
    for (path, ours) in paths.iter().zip(&ours) {
        let output = run("systemd-escape", &["--path", path]);
        assert!(output.status.success(), "systemd-escape --path {path}: {}", text(&output.stderr));
        assert_eq!(ours, text(&output.stdout).trim_end(), "{path}");
    }
    // The case: backup-on-mount.service is wanted by, and ordered after, the mount unit.
    let case = cases().iter().find(|c| c.name == "run-on-mount").unwrap();
    let unit = &case.rendered["units"]["services"]["backup-on-mount"];
    let mount = text(&run("systemd-escape", &["--path", "--suffix=mount", "/media/backup-drive"]).stdout);
    let mount = mount.trim_end();
    assert_eq!(strings(&unit["wantedBy"]), [mount]);
    assert!(strings(&unit["after"]).contains(&mount.to_owned()));
    let exec = without_inhibitor(unit["serviceConfig"]["ExecStart"].as_str().unwrap());
    assert_eq!(
        exec,
        format!("{FAKE_PACKAGE}/bin/hwc-backup now --min-interval 12h --config /etc/hwc-backup/config.json")
    );
}

/// The system calls in a `SystemCallFilter=` group, its subgroups expanded, as this machine's
/// systemd defines them.
fn syscalls_of(group: &str, seen: &mut BTreeSet<String>) {
    if !seen.insert(group.to_owned()) || !group.starts_with('@') {
        return;
    }
    let output = run("systemd-analyze", &["syscall-filter", group]);
    assert!(output.status.success(), "systemd-analyze syscall-filter {group}: {}", text(&output.stderr));
    for line in text(&output.stdout).lines().skip(1) {
        let item = line.trim();
        if !item.is_empty() && !item.starts_with('#') {
            syscalls_of(item, seen);
        }
    }
}

#[test]
fn units_that_dump_databases_may_switch_users() {
    // The runner starts pg_dump & co. as `databases.*.user`: std's Command calls setgroups,
    // setgid and setuid in the child, as root. The sandbox must leave those calls and
    // CAP_SETUID/CAP_SETGID to it.
    let mut checked = 0;
    for case in valid_cases() {
        let databases = &case.rendered["plan"]["databases"];
        if databases["postgresql"]["enable"] != true && databases["mysql"]["enable"] != true {
            continue;
        }
        let staging = databases["stagingDir"].as_str().unwrap();
        assert!(
            strings(&case.rendered["plan"]["sources"]).iter().any(|s| Path::new(staging).starts_with(s)),
            "{}: no source holds the staging directory {staging}",
            case.name
        );
        for unit in ["backup", "backup-local"] {
            let name = format!("{}: {unit}", case.name);
            let config = &case.rendered["units"]["services"][unit]["serviceConfig"];
            assert!(config.is_object(), "{name}: missing");
            for key in ["User", "DynamicUser", "PrivateUsers", "AmbientCapabilities"] {
                assert!(config.get(key).is_none(), "{name}: {key} would keep the runner from switching users");
            }
            // A bounding set may only drop capabilities (`~…`), and never CAP_SETUID/CAP_SETGID
            // (nor CAP_KILL, with which the runner stops a dump that overran).
            for set in strings(&config["CapabilityBoundingSet"]) {
                let dropped =
                    set.strip_prefix('~').unwrap_or_else(|| panic!("{name}: CapabilityBoundingSet={set} keeps a list"));
                for needed in ["CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"] {
                    assert!(!dropped.split_whitespace().any(|c| c == needed), "{name}: {set} drops {needed}");
                }
            }
            let writable = strings(&config["ReadWritePaths"]);
            assert!(
                writable.iter().any(|p| p.trim_start_matches('-') == staging),
                "{name}: {staging} is not in ReadWritePaths {writable:?}"
            );
            let filters = match &config["SystemCallFilter"] {
                Value::Array(_) => strings(&config["SystemCallFilter"]),
                Value::String(s) => vec![s.clone()],
                other => panic!("{name}: SystemCallFilter = {other}"),
            };
            let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
            for filter in &filters {
                match filter.strip_prefix('~') {
                    Some(deny) => deny.split_whitespace().for_each(|g| syscalls_of(g, &mut denied)),
                    None => filter.split_whitespace().for_each(|g| syscalls_of(g, &mut allowed)),
                }
            }
            for call in ["setgroups", "setgid", "setuid", "setresuid", "setresgid"] {
                assert!(
                    allowed.contains(call) && !denied.contains(call),
                    "{name}: SystemCallFilter {filters:?} does not allow {call}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} cases dump databases");
}

#[test]
fn calendar_and_time_span_values_parse() {
    let mut calendars = BTreeSet::new();
    let mut spans = BTreeSet::new();
    for case in valid_cases() {
        let Some(timers) = case.rendered["units"]["timers"].as_object() else { continue };
        for timer in timers.values() {
            let config = &timer["timerConfig"];
            match &config["OnCalendar"] {
                Value::String(s) => calendars.insert(s.clone()),
                Value::Array(items) => {
                    calendars.extend(items.iter().map(|i| i.as_str().unwrap().to_owned()));
                    true
                }
                other => panic!("{}: OnCalendar = {other}", case.name),
            };
            if let Some(span) = config["RandomizedDelaySec"].as_str() {
                spans.insert(span.to_owned());
            }
        }
    }
    assert!(calendars.len() >= 5, "too few calendar expressions: {calendars:?}");

    for calendar in &calendars {
        let output = run("systemd-analyze", &["calendar", calendar]);
        assert!(output.status.success(), "OnCalendar={calendar} is refused by systemd:\n{}", text(&output.stderr));
    }
    for span in &spans {
        let output = run("systemd-analyze", &["timespan", span]);
        assert!(output.status.success(), "RandomizedDelaySec={span} is refused by systemd:\n{}", text(&output.stderr));
    }
}

#[test]
fn flake_lock_pins_the_input() {
    let url = nix_eval_expr(&format!("(import {}/flake.nix).inputs.nixpkgs.url", repo().display()));
    assert_eq!(url, "github:nixos/nixpkgs/nixos-26.05");

    // The lock's `original` must be what the URL parses to, or Nix re-locks (needing network).
    let lock: Value = serde_json::from_str(&fs::read_to_string(repo().join("flake.lock")).unwrap()).unwrap();
    let node = &lock["nodes"]["nixpkgs"];
    let original = serde_json::json!({
        "owner": "nixos", "repo": "nixpkgs", "ref": "nixos-26.05", "type": "github",
    });
    assert_eq!(node["original"], original);
    let locked = &node["locked"];
    assert_eq!(locked["owner"], "nixos");
    assert_eq!(locked["type"], "github");
    let rev = locked["rev"].as_str().unwrap();
    assert!(rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()), "rev {rev}");
    assert!(locked["narHash"].as_str().unwrap().starts_with("sha256-"));
    assert!(locked["lastModified"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(lock["root"], "root");
    assert_eq!(lock["nodes"]["root"]["inputs"]["nixpkgs"], "nixpkgs");
}

#[test]
fn package_builds_the_workspace_with_the_seed_commands() {
    let package = nix_eval(&repo().join("tests/nix/eval-package.nix"), &[]);
    let root = repo();
    assert_eq!(package["pname"], "hwc-backup");
    assert_eq!(package["mainProgram"], "hwc-backup");
    assert_eq!(package["missing"], serde_json::json!([]), "sources that do not exist");
    assert_eq!(package["lockFile"], root.join("Cargo.lock").to_str().unwrap());

    // The version is the workspace's.
    let cargo = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let version = package["version"].as_str().unwrap();
    assert!(cargo.contains(&format!("version = \"{version}\"")), "version {version}");

    // Every workspace member and every file cargo reads is in the source set.
    let sources: Vec<PathBuf> = strings(&package["sources"]).into_iter().map(PathBuf::from).collect();
    let covered = |path: &Path| sources.iter().any(|s| path.starts_with(s));
    for needed in ["Cargo.toml", "Cargo.lock", "crates/engine", "crates/cli", "tests/integration/main.rs"] {
        assert!(covered(&root.join(needed)), "{needed} is not in the package source");
    }

    let post_install = package["postInstall"].as_str().unwrap();
    for name in ["backup-now", "backup-status", "backup-restore", "backup-verify"] {
        assert!(post_install.contains(name), "{name} is not installed");
    }

    // One license everywhere: meta.license, Cargo.toml and the LICENSE file; no placeholder
    // homepage; maintainers an empty list until someone takes the package on in nixpkgs.
    assert_eq!(package["license"], "mit");
    assert!(cargo.contains("license = \"MIT\""), "Cargo.toml's license is not MIT");
    let license = fs::read_to_string(root.join("LICENSE")).expect("LICENSE");
    assert!(license.starts_with("MIT License"), "LICENSE is not the MIT license");
    assert_eq!(package["hasHomepage"], false);
    assert_eq!(package["maintainers"], serde_json::json!([]));
}

/// The NixOS documentation with the option table (to be merged into README.md).
const OPTION_DOC: &str = "README.md";

#[test]
fn every_option_is_documented() {
    let declared: BTreeSet<String> =
        strings(&nix_eval(&repo().join("tests/nix/options.nix"), &[])).into_iter().collect();
    assert!(declared.len() >= 45, "only {} options declared", declared.len());
    let doc = fs::read_to_string(repo().join(OPTION_DOC)).unwrap();
    // Rows of the option table: "| `local.keepDaily` | int ≥ -1 | `7` | … |".
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once("` |").map(|(n, _)| n.to_owned()))
        .filter(|name| !name.contains(' ') && !name.contains(".timer") && !name.contains(".service"))
        .collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&declared).collect();
    assert!(missing.is_empty(), "options missing from {OPTION_DOC}: {missing:?}");
    assert!(stale.is_empty(), "{OPTION_DOC} documents options that do not exist: {stale:?}");
}

fn nix_eval_expr(expr: &str) -> Value {
    let output = run("nix-instantiate", &["--eval", "--strict", "--json", "-E", expr]);
    assert!(output.status.success(), "nix-instantiate -E {expr}\n{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

// -------------------------------------------------------------------------------------------------
// With a real nixpkgs lib (HWC_NIXPKGS_LIB=/path/to/nixpkgs.lib/lib)
// -------------------------------------------------------------------------------------------------

fn nixpkgs_lib(test: &str) -> Option<String> {
    // The project's copy of nixpkgs' lib, beside the repository (../shared/nixpkgs-lib/lib,
    // where CI and the developers' machines have it), unless the variable names another.
    let beside = repo().join("../shared/nixpkgs-lib/lib");
    let from_env = std::env::var("HWC_NIXPKGS_LIB").ok().filter(|d| !d.is_empty());
    let chosen = from_env.or_else(|| beside.join("default.nix").is_file().then(|| beside.display().to_string()));
    match chosen.ok_or(()) {
        Ok(dir) if !dir.is_empty() => {
            assert!(
                Path::new(&dir).join("default.nix").is_file(),
                "HWC_NIXPKGS_LIB={dir} is not a nixpkgs lib directory (no default.nix)"
            );
            Some(format!("import {dir}"))
        }
        _ => {
            announce(&format!(
                "SKIPPED nix::{test}: set HWC_NIXPKGS_LIB to a nixpkgs `lib` directory \
                 (e.g. of nix-community/nixpkgs.lib) to evaluate the module with lib.evalModules"
            ));
            None
        }
    }
}

fn eval_module(lib: &str, source: (&str, &str)) -> Result<Value, String> {
    let file = repo().join("tests/nix/eval-module.nix");
    let args =
        ["--eval", "--strict", "--json", file.to_str().unwrap(), "--arg", "lib", lib, "--arg", source.0, source.1];
    let output = run("nix-instantiate", &args);
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).unwrap())
    } else {
        Err(text(&output.stderr))
    }
}

#[test]
fn module_matches_the_pure_render() {
    let Some(lib) = nixpkgs_lib("module_matches_the_pure_render") else { return };
    for case in cases() {
        let module = eval_module(&lib, ("case", case.path.to_str().unwrap()))
            .unwrap_or_else(|err| panic!("{}: {err}", case.name));
        let name = &case.name;
        let r = &case.rendered;
        assert_eq!(module["failedAssertions"], r["failedAssertions"], "{name}: assertions");
        if case.is_invalid() {
            continue;
        }
        assert_eq!(module["warnings"], r["warnings"], "{name}: warnings");
        assert_eq!(module["plan"], r["plan"], "{name}: plan");
        assert_eq!(module["systemPackages"], serde_json::json!([FAKE_PACKAGE]), "{name}");
        // Only the client's keys: users.users.<agent.user>.openssh.authorizedKeys.keys.
        assert_eq!(module["authorizedKeys"], r["authorizedKeys"], "{name}: authorizedKeys");
        if r["plan"].is_null() {
            // An agent-only client: no plan, units, checks or directories.
            assert_eq!(module["checks"], serde_json::json!([]), "{name}");
            assert_eq!(module["tmpfiles"], serde_json::json!([]), "{name}");
            continue;
        }
        assert_eq!(module["checks"], serde_json::json!(["hwc-backup-config-check"]), "{name}");
        let mut tmpfiles = vec![
            "d /var/lib/hwc-backup 0700 root root - -".to_owned(),
            "d /var/log/backup 0700 root root - -".to_owned(),
        ];
        let databases = &r["plan"]["databases"];
        if databases["postgresql"]["enable"] == true
            || databases["mysql"]["enable"] == true
            || databases["sqlite"].as_array().is_some_and(|l| !l.is_empty())
        {
            tmpfiles.push(format!("d {} 0700 root root - -", databases["stagingDir"].as_str().unwrap()));
        }
        assert_eq!(module["tmpfiles"], serde_json::json!(tmpfiles), "{name}");
        for set in ["services", "timers"] {
            let mut ours = r["units"][set].as_object().unwrap().clone();
            // The module also defines the service profiles' units (nix/profiles/).
            if set == "services" {
                ours.extend(r["profileUnits"].as_object().cloned().unwrap_or_default());
            }
            let theirs = module["units"][set].as_object().unwrap();
            let names = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(names(theirs), names(&ours), "{name}: {set}");
            // NixOS fills in every other unit option with its default; compare what we set.
            for (unit, def) in &ours {
                for (key, value) in def.as_object().unwrap() {
                    assert_eq!(&theirs[unit][key], value, "{name}: {set}.{unit}.{key}");
                }
            }
        }
    }
}

#[test]
fn module_options_are_typed_described_and_exemplified() {
    let Some(lib) = nixpkgs_lib("module_options_are_typed_described_and_exemplified") else {
        return;
    };
    let quick_start = repo().join("tests/nix/cases/quick-start.nix");
    let module = eval_module(&lib, ("case", quick_start.to_str().unwrap())).unwrap();
    let options = module["options"].as_array().unwrap();
    assert!(options.len() >= 45, "only {} options", options.len());
    for option in options {
        let name = option["name"].as_str().unwrap();
        assert_eq!(option["hasDescription"], true, "{name} has no description");
        assert_eq!(option["hasExample"], true, "{name} has no example");
    }
    // The seed's options, with the defaults its README documents.
    let default = |name: &str| {
        let full = format!("hwc.system.services.backup.{name}");
        let option = options.iter().find(|o| o["name"] == full.as_str());
        option.unwrap_or_else(|| panic!("{full} is not declared"))["default"].clone()
    };
    for (name, expected) in [
        ("enable", "false"),
        ("local.enable", "false"),
        ("local.mountPoint", "\"/mnt/backup\""),
        ("local.useRsync", "true"),
        ("local.keepDaily", "7"),
        ("local.keepWeekly", "4"),
        ("local.keepMonthly", "6"),
        ("local.minSpaceGB", "10"),
        ("cloud.enable", "false"),
        ("cloud.provider", "\"proton-drive\""),
        ("cloud.remotePath", "\"Backups\""),
        ("cloud.syncMode", "\"sync\""),
        ("cloud.bandwidthLimit", "null"),
        ("protonDrive.enable", "false"),
        ("protonDrive.secretName", "\"rclone-proton-config\""),
        ("schedule.enable", "false"),
        ("schedule.frequency", "\"daily\""),
        ("schedule.timeOfDay", "\"02:00\""),
        ("schedule.randomDelay", "\"1h\""),
        ("schedule.onlyOnAC", "true"),
        ("notifications.enable", "false"),
        ("notifications.onSuccess", "false"),
        ("notifications.onFailure", "true"),
        ("preBackupScript", "\"\""),
        ("postBackupScript", "\"\""),
    ] {
        assert_eq!(default(name), expected, "default of {name}");
    }
    for name in ["local.sources", "local.excludePatterns", "package", "hostName"] {
        assert!(default(name).is_string(), "{name} has no default");
    }
}

#[test]
fn module_refuses_bad_values() {
    let Some(lib) = nixpkgs_lib("module_refuses_bad_values") else { return };
    let bad = [
        ("schedule.timeOfDay", "\"25:00\""),
        ("schedule.timeOfDay", "\"2am\""),
        ("local.keepDaily", "(-2)"),
        ("local.keepWithin", "\"2 days\""),
        ("local.minSpaceGB", "(-1)"),
        ("local.sources", "\"/home\""),
        ("cloud.syncMode", "\"mirror\""),
        ("cloud.provider", "\"my remote:\""),
        ("health.maxAge", "\"2 days\""),
        ("notifications.ntfy.tokenFile", "\"token\""),
        ("verify.sample", "(-5)"),
        ("schedule.frequency", "\"\""),
        ("cloud.keepHistory", "(-1)"),
        ("cloud.maxAge", "\"a week\""),
        ("health.verifyMaxAge", "\"1 month\""),
        ("databases.postgresql.port", "70000"),
        ("databases.postgresql.databases", "[ \"../etc\" ]"),
        ("databases.postgresql.user", "\"\""),
        ("databases.mysql.databases", "[ \".hidden\" ]"),
        ("databases.mysql.socket", "\"mysqld.sock\""),
        ("databases.mysql.binDir", "\"bin\""),
        ("hostConcurrency", "0"),
        ("hosts.web1.port", "0"),
        ("hosts.web1.address", "\"-oProxyCommand=sh\""),
        ("hosts.web1.address", "\"root@web1\""),
        ("hosts.web1.user", "\"a b\""),
        ("hosts.web1.sshOptions", "[ \"-v\" ]"),
        ("hosts.web1.sshKeyFile", "\"id_ed25519\""),
        ("hosts.web1.sources", "\"/home\""),
        ("hosts.web1.keepDaily", "(-2)"),
        ("hosts.web1.keepWithin", "\"2 days\""),
        ("hosts.web1.schedule", "\"\""),
        ("agent.user", "\"no body\""),
        ("agent.allowedPaths", "\"/home\""),
        ("agent.allowedPaths", "[ \"/home\\n/etc\" ]"),
        ("agent.excludePatterns", "[ \"*.tmp\\r\" ]"),
        ("agent.authorizedKeys", "[ \"ssh-ed25519 AAAA a\\nssh-rsa AAAA b\" ]"),
        ("offsite.nas.repository", "\"-oInjected=1\""),
        ("offsite.nas.repository", "\"/mnt/nas\\n/restic\""),
        ("offsite.nas.repository", "\"\""),
        ("offsite.nas.passwordFile", "\"restic-password\""),
        ("offsite.nas.environmentFile", "\"s3.env\""),
        ("offsite.nas.keepDaily", "(-2)"),
        ("offsite.nas.keepWithin", "\"2 weeks\""),
        ("offsite.nas.schedule", "\"\""),
        ("offsite.nas.check.schedule", "\"\""),
        ("offsite.nas.check.readDataSubset", "\"5\""),
        ("offsite.nas.check.readDataSubset", "\"05%\""),
        ("offsite.nas.check.readDataSubset", "\"1/5\""),
        ("offsite.nas.check.readDataSubset", "\"2.5%\""),
        ("offsite.nas.bandwidthLimit", "0"),
        ("offsite.nas.bandwidthLimit", "\"1M\""),
        ("offsite.nas.maxAge", "\"a week\""),
        ("local.runOnMount", "\"yes\""),
        ("local.runOnMountMinInterval", "\"6 hours\""),
        ("inhibitSleep", "1"),
    ];
    for (option, value) in bad {
        // A pulled host needs its sources; they are given unless they are what is tested.
        let host = if option.starts_with("hosts.") && option != "hosts.web1.sources" {
            "hosts.web1.sources = [ \"/srv\" ];".to_owned()
        } else {
            // An offsite needs its repository and password file, unless they are what is tested.
            [("repository", "\"/mnt/nas/restic\""), ("passwordFile", "\"/run/agenix/restic-password\"")]
                .iter()
                .filter(|(field, _)| option.starts_with("offsite.nas.") && option != format!("offsite.nas.{field}"))
                .map(|(field, value)| format!("offsite.nas.{field} = {value}; "))
                .collect()
        };
        let definitions = format!(
            "{{ hwc.system.services.backup = {{ enable = true; local.enable = true; {host} {option} = {value}; }}; }}"
        );
        let result = eval_module(&lib, ("definitions", &definitions));
        let err = result.err().unwrap_or_else(|| panic!("{option} = {value} was accepted"));
        assert!(
            err.contains(&format!("hwc.system.services.backup.{option}")),
            "{option} = {value}: the error does not name the option:\n{err}"
        );
    }
}

/// The offsites' secrets are files read at run time: a string in the Nix store, a Nix path literal
/// (which would be copied into the world-readable store) or a relative path is refused, with a
/// message that names the option and shows the agenix and sops-nix way.
#[test]
fn module_refuses_offsite_secrets_in_the_store() {
    let Some(lib) = nixpkgs_lib("module_refuses_offsite_secrets_in_the_store") else { return };
    for field in ["passwordFile", "environmentFile", "rcloneConfigFile"] {
        for value in [
            "\"/nix/store/00000000000000000000000000000000-restic-password\"",
            "./restic-password",
            "\"restic-password\"",
        ] {
            let password = if field == "passwordFile" { "" } else { "passwordFile = \"/run/agenix/restic-password\";" };
            let definitions = format!(
                "{{ hwc.system.services.backup = {{ enable = true; local.enable = true; \
                 offsite.nas = {{ repository = \"rclone:nas:restic\"; {password} {field} = {value}; }}; }}; }}"
            );
            let err = eval_module(&lib, ("definitions", &definitions))
                .err()
                .unwrap_or_else(|| panic!("offsite.nas.{field} = {value} was accepted"));
            for needed in [
                format!("hwc.system.services.backup.offsite.nas.{field}'"),
                "not in the Nix store".to_owned(),
                "config.age.secrets.<name>.path with agenix".to_owned(),
                "config.sops.secrets.<name>.path with sops-nix".to_owned(),
            ] {
                assert!(err.contains(&needed), "{field} = {value}: the error lacks {needed:?}:\n{err}");
            }
        }
    }
    // The same secrets at run-time paths are accepted and rendered as they are.
    let definitions = "{ hwc.system.services.backup = { enable = true; local.enable = true; offsite.nas = { \
                       repository = \"rclone:nas:restic\"; passwordFile = \"/run/secrets/restic\"; \
                       environmentFile = \"/run/agenix/env\"; rcloneConfigFile = \"/run/agenix/rclone\"; }; }; }";
    let module = eval_module(&lib, ("definitions", definitions)).unwrap();
    let nas = &module["plan"]["offsite"]["nas"];
    assert_eq!(nas["passwordFile"], "/run/secrets/restic");
    assert_eq!(nas["environmentFile"], "/run/agenix/env");
    assert_eq!(nas["rcloneConfigFile"], "/run/agenix/rclone");
    assert_eq!(nas["restic"], "/nix/store/00000000000000000000000000000000-restic-0.18.0/bin/restic");
    assert_eq!(nas["rclone"], "/nix/store/00000000000000000000000000000000-rclone-1.70.0/bin/rclone");
    assert_eq!(module["failedAssertions"], serde_json::json!([]));
}

/// Every other option naming a secret file is refused the same way when it would put the secret
/// into the Nix store (a store path, a path literal) or is relative, and accepted as a run-time
/// path, which reaches the plan or the units unchanged.
#[test]
fn module_refuses_secrets_in_the_store() {
    let Some(lib) = nixpkgs_lib("module_refuses_secrets_in_the_store") else { return };
    let options = [
        ("cloud.rcloneConfigFile", "cloud = { enable = true; provider = \"b2\"; };"),
        ("notifications.ntfy.tokenFile", "notifications.ntfy.url = \"https://ntfy.example/t\";"),
        ("notifications.ntfy.urlFile", ""),
        ("notifications.webhook.urlFile", ""),
        ("notifications.healthchecks.urlFile", ""),
        ("databases.mysql.defaultsFile", "databases.mysql.enable = true;"),
        ("hosts.web1.sshKeyFile", "hosts.web1.sources = [ \"/srv\" ];"),
        ("environmentFile", ""),
    ];
    let definitions = |option: &str, value: &str, context: &str| {
        format!(
            "{{ hwc.system.services.backup = {{ enable = true; local.enable = true; notifications.enable = true; \
             {context} {option} = {value}; }}; }}"
        )
    };
    for (option, context) in options {
        for value in ["\"/nix/store/00000000000000000000000000000000-secret\"", "./secret", "\"secret\""] {
            let err = eval_module(&lib, ("definitions", &definitions(option, value, context)))
                .err()
                .unwrap_or_else(|| panic!("{option} = {value} was accepted"));
            for needed in [
                format!("hwc.system.services.backup.{option}'"),
                "not in the Nix store".to_owned(),
                "config.age.secrets.<name>.path with agenix".to_owned(),
                "config.sops.secrets.<name>.path with sops-nix".to_owned(),
            ] {
                assert!(err.contains(&needed), "{option} = {value}: the error lacks {needed:?}:\n{err}");
            }
        }
        let module = eval_module(&lib, ("definitions", &definitions(option, "\"/run/agenix/secret\"", context)))
            .unwrap_or_else(|err| panic!("{option} = \"/run/agenix/secret\": {err}"));
        assert_eq!(module["failedAssertions"], serde_json::json!([]), "{option}");
        let found = match option {
            "environmentFile" => module["units"]["services"]["backup"]["serviceConfig"]["EnvironmentFile"].clone(),
            "hosts.web1.sshKeyFile" => module["plan"]["hosts"]["web1"]["sshKeyFile"].clone(),
            "databases.mysql.defaultsFile" => module["plan"]["databases"]["mysql"]["defaultsFile"].clone(),
            _ => {
                let path: Vec<&str> = option.split('.').collect();
                path.iter().fold(&module["plan"], |v, k| &v[*k]).clone()
            }
        };
        assert_eq!(found, "/run/agenix/secret", "{option}: {}", module["plan"]);
    }
}

/// The scalar settings of every unit, `[Unit]` and `[Timer]` as `[Service]`, are `lib.mkDefault`: a
/// machine changes one with a plain definition (no `lib.mkForce`), and list settings add up.
#[test]
fn module_unit_settings_are_overridable_without_mk_force() {
    let Some(lib) = nixpkgs_lib("module_unit_settings_are_overridable_without_mk_force") else { return };
    let definitions =
        "{ hwc.system.services.backup = { enable = true; local.enable = true; schedule.enable = true; }; \
                       systemd.services.backup.unitConfig.ConditionACPower = false; \
                       systemd.services.backup.unitConfig.RequiresMountsFor = [ \"/srv/extra\" ]; \
                       systemd.services.backup.serviceConfig.NoNewPrivileges = false; \
                       systemd.timers.backup.timerConfig.Persistent = false; }";
    let module = eval_module(&lib, ("definitions", definitions)).unwrap_or_else(|err| panic!("{err}"));
    let backup = &module["units"]["services"]["backup"];
    assert_eq!(backup["unitConfig"]["ConditionACPower"], false);
    assert_eq!(backup["serviceConfig"]["NoNewPrivileges"], false);
    assert_eq!(module["units"]["timers"]["backup"]["timerConfig"]["Persistent"], false);
    let mounts = strings(&backup["unitConfig"]["RequiresMountsFor"]);
    assert!(mounts.contains(&"/mnt/backup".to_owned()) && mounts.contains(&"/srv/extra".to_owned()), "{mounts:?}");
    // Without the override the module's own values stand.
    let plain = "{ hwc.system.services.backup = { enable = true; local.enable = true; schedule.enable = true; }; }";
    let module = eval_module(&lib, ("definitions", plain)).unwrap();
    assert_eq!(module["units"]["services"]["backup"]["unitConfig"]["ConditionACPower"], true);
    assert_eq!(module["units"]["timers"]["backup"]["timerConfig"]["Persistent"], true);
    // The programs the runner starts by name (ionice, blkid, getent) are on every unit's PATH,
    // which NixOS builds from `path` alone.
    for (name, unit) in module["units"]["services"].as_object().unwrap() {
        let path = strings(&unit["path"]);
        for package in ["util-linux-2.41-bin", "getent-glibc-2.40"] {
            assert!(path.iter().any(|p| p.ends_with(package)), "{name}: path {path:?} lacks {package}");
        }
    }
}

/// A switch starts no backup: the activation marks the module's timers as fired now, so a timer
/// that switch-to-configuration restarts with a changed calendar does not catch up at once
/// (Persistent=true reads the stamp when the timer starts). At boot it changes nothing.
#[test]
fn module_activation_keeps_a_switch_from_firing_timers() {
    let Some(lib) = nixpkgs_lib("module_activation_keeps_a_switch_from_firing_timers") else { return };
    let case = repo().join("tests/nix/cases/everything.nix");
    let module = eval_module(&lib, ("case", case.to_str().unwrap())).unwrap();
    let text = module["activation"]["hwc-backup-timers"].as_str().expect("no activation script").to_owned();
    let timers: Vec<String> =
        module["units"]["timers"].as_object().unwrap().keys().map(|t| format!("{t}.timer")).collect();
    assert!(timers.len() >= 3, "{timers:?}");
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("timers");
    fs::create_dir_all(&stamps).unwrap();
    assert!(text.contains("stamps=/var/lib/systemd/timers"), "{text}");
    let script = dir.path().join("activate.sh");
    fs::write(&script, text.replace("stamps=/var/lib/systemd/timers", &format!("stamps={}", stamps.display())))
        .unwrap();
    let old = "200001010000";
    let age = |name: &str| {
        let meta = fs::metadata(stamps.join(format!("stamp-{name}"))).ok()?;
        Some(meta.modified().unwrap().elapsed().unwrap_or_default().as_secs())
    };
    let activate = |action: Option<&str>| {
        for name in timers.iter().skip(1).map(String::as_str).chain(["other.timer"]) {
            run("touch", &["-t", old, stamps.join(format!("stamp-{name}")).to_str().unwrap()]);
        }
        let _ = fs::remove_file(stamps.join(format!("stamp-{}", timers[0])));
        let mut cmd = Command::new("bash");
        cmd.arg("-eu").arg(&script).env_remove("NIXOS_ACTION");
        if let Some(a) = action {
            cmd.env("NIXOS_ACTION", a);
        }
        assert!(cmd.status().unwrap().success(), "{action:?}");
    };
    for action in ["switch", "test"] {
        activate(Some(action));
        for t in &timers[1..] {
            assert!(age(t).unwrap() < 600, "{action}: the stamp of {t} was not renewed");
        }
        assert!(age("other.timer").unwrap() > 3600, "{action}: another unit's timer was touched");
        assert_eq!(age(&timers[0]), None, "{action}: a timer that never fired got a stamp");
    }
    for action in [None, Some("boot"), Some("dry-activate")] {
        activate(action);
        for t in &timers[1..] {
            assert!(age(t).unwrap() > 3600, "{action:?}: the stamp of {t} was renewed, no catch-up at boot");
        }
    }
}

#[test]
fn module_finds_the_agenix_secret_path() {
    let Some(lib) = nixpkgs_lib("module_finds_the_agenix_secret_path") else { return };
    let file = repo().join("tests/nix/eval-module.nix");
    let case = repo().join("tests/nix/cases/dual-backup.nix");
    // A stand-in for agenix: age.secrets.<name>.path, decrypted somewhere unusual.
    let agenix = r#"[ ({ lib, ... }: {
        options.age.secrets = lib.mkOption {
          type = lib.types.attrsOf (lib.types.submodule ({ name, ... }: {
            options.path = lib.mkOption { type = lib.types.str; default = "/run/agenix/${name}"; };
          }));
          default = { };
        };
        config.age.secrets.rclone-proton-config.path = "/run/keys/rclone.conf";
      }) ]"#;
    let args = [
        "--eval",
        "--strict",
        "--json",
        file.to_str().unwrap(),
        "--arg",
        "lib",
        &lib,
        "--arg",
        "case",
        case.to_str().unwrap(),
        "--arg",
        "extraModules",
        agenix,
    ];
    let output = run("nix-instantiate", &args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let module: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(module["plan"]["cloud"]["rcloneConfigFile"], "/run/keys/rclone.conf");
    assert_eq!(module["warnings"], serde_json::json!([]));

    // An offsite to Proton Drive takes the same secret as its rclone config; when agenix is
    // there but the secret is not declared, the module says so.
    let proton = repo().join("tests/nix/cases/offsite-proton.nix");
    let eval = |agenix: &str| -> Value {
        let mut args = args;
        args[9] = proton.to_str().unwrap();
        args[12] = agenix;
        let output = run("nix-instantiate", &args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let module = eval(agenix);
    assert_eq!(module["plan"]["offsite"]["proton"]["rcloneConfigFile"], "/run/keys/rclone.conf");
    assert_eq!(module["warnings"], serde_json::json!([]));
    let undeclared = agenix.replace("config.age.secrets.rclone-proton-config.path = \"/run/keys/rclone.conf\";", "");
    assert_ne!(undeclared, agenix);
    let module = eval(&undeclared);
    assert_eq!(module["plan"]["offsite"]["proton"]["rcloneConfigFile"], "/run/agenix/rclone-proton-config");
    let warnings = strings(&module["warnings"]);
    assert!(
        warnings.iter().any(
            |w| w.contains("age.secrets.\"rclone-proton-config\" is not declared") && w.contains("offsites proton")
        ),
        "{warnings:?}"
    );
}

#[test]
fn module_takes_the_dump_programs_from_the_database_services() {
    let Some(lib) = nixpkgs_lib("module_takes_the_dump_programs_from_the_database_services") else { return };
    let file = repo().join("tests/nix/eval-module.nix");
    // Stand-ins for NixOS's services.postgresql and services.mysql: enable and package.
    let services = r#"[ ({ lib, ... }: {
        options.services = lib.genAttrs [ "postgresql" "mysql" ] (name: {
          enable = lib.mkEnableOption name;
          package = lib.mkOption {
            type = lib.types.package;
            default = { type = "derivation"; name = name; outPath = "/nix/store/00000000000000000000000000000000-${name}-1.0"; };
          };
        });
      }) ]"#;
    let eval = |definitions: &str| -> Value {
        let args = [
            "--eval",
            "--strict",
            "--json",
            file.to_str().unwrap(),
            "--arg",
            "lib",
            &lib,
            "--arg",
            "definitions",
            definitions,
            "--arg",
            "extraModules",
            services,
        ];
        let output = run("nix-instantiate", &args);
        assert!(output.status.success(), "{definitions}\n{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let backup = "hwc.system.services.backup = { enable = true; local.enable = true; \
                  databases.postgresql.enable = true; databases.mysql.enable = true; };";

    // With the servers on this machine, their own clients dump them, without a warning.
    let module = eval(&format!("{{ services.postgresql.enable = true; services.mysql.enable = true; {backup} }}"));
    let databases = &module["plan"]["databases"];
    let store = "/nix/store/00000000000000000000000000000000";
    assert_eq!(databases["postgresql"]["binDir"], format!("{store}-postgresql-1.0/bin"));
    assert_eq!(databases["mysql"]["binDir"], format!("{store}-mysql-1.0/bin"));
    assert_eq!(module["warnings"], serde_json::json!([]));
    // The staging directory is added to the sources and created by tmpfiles.
    assert_eq!(module["plan"]["sources"], serde_json::json!(["/home", "/etc/nixos", "/var/backup/databases"]));
    assert!(
        strings(&module["tmpfiles"]).contains(&"d /var/backup/databases 0700 root root - -".to_owned()),
        "{}",
        module["tmpfiles"]
    );
    assert_eq!(module["failedAssertions"], serde_json::json!([]));

    // Without them (a remote server), the clients are to be named; the module says so.
    let module = eval(&format!("{{ {backup} }}"));
    let databases = &module["plan"]["databases"];
    assert_eq!(databases["postgresql"]["binDir"], Value::Null);
    assert_eq!(databases["mysql"]["binDir"], Value::Null);
    let warnings = strings(&module["warnings"]);
    for option in ["databases.postgresql.binDir", "databases.mysql.binDir"] {
        assert!(warnings.iter().any(|w| w.contains(option)), "no warning about {option}: {warnings:?}");
    }

    // Dumps off: the binDir defaults stay in the plan, nothing else changes.
    let module = eval(
        "{ services.postgresql.enable = true; hwc.system.services.backup = { enable = true; local.enable = true; }; }",
    );
    assert_eq!(module["plan"]["sources"], serde_json::json!(["/home", "/etc/nixos"]));
    assert_eq!(module["tmpfiles"].as_array().unwrap().len(), 2);
}

#[test]
fn flake_outputs_with_nixpkgs_lib() {
    let Some(lib) = nixpkgs_lib("flake_outputs_with_nixpkgs_lib") else { return };
    let file = repo().join("tests/nix/eval-flake.nix");
    let flake = nix_eval(&file, &["--arg", "lib", &lib]);
    let vm_tests: Vec<String> = fs::read_dir(repo().join("tests/nixos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nix") && n != "default.nix" && n != "common.nix")
        .map(|n| format!("vm-{}", n.trim_end_matches(".nix")))
        .collect();
    assert!(vm_tests.len() >= 4, "{vm_tests:?}");
    for system in ["x86_64-linux", "aarch64-linux"] {
        assert_eq!(flake["packages"][system], serde_json::json!(["default", "hwc-backup"]));
        assert_eq!(flake["devShells"][system], serde_json::json!(["default"]));
        let checks = strings(&flake["checks"][system]);
        for check in ["package", "module-eval", "devShell"].iter().map(|s| s.to_string()).chain(vm_tests.clone()) {
            assert!(checks.contains(&check), "checks.{system} lacks {check}: {checks:?}");
        }
    }
    assert_eq!(flake["nixosModules"], serde_json::json!(["default", "hwc-backup"]));
    assert_eq!(flake["overlay"], serde_json::json!(["hwc-backup"]));
    // nixosModules.default builds the package with the user's pkgs (callPackage), or takes
    // the user's pkgs.hwc-backup (the overlay): never this flake's own nixpkgs.
    assert!(
        flake["modulePackage"].as_str().unwrap().ends_with("-hwc-backup-aarch64-linux"),
        "{}",
        flake["modulePackage"]
    );
    assert!(
        flake["modulePackageFromOverlay"].as_str().unwrap().ends_with("-hwc-backup-from-user-pkgs-aarch64-linux"),
        "{}",
        flake["modulePackageFromOverlay"]
    );
    for system in ["x86_64-linux", "aarch64-linux"] {
        assert_eq!(flake["formatter"][system], "nixfmt", "formatter.{system}");
    }
}

/// The service profiles' units (nix/profiles/, `profileUnits`) pass `systemd-analyze verify`,
/// stay within a low exposure (they run the service's own tool as the service's user), and
/// each is quiesced by the plan of its case: what makes Nextcloud's maintenance mode follow
/// the snapshot.
#[test]
fn profile_units_verify_and_are_quiesced() {
    let dir = tempfile::tempdir().unwrap();
    let occ = dir.path().join("occ");
    fs::create_dir_all(occ.join("bin")).unwrap();
    fs::write(occ.join("bin/nextcloud-occ"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(occ.join("bin/nextcloud-occ"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // What the units require, as NixOS's nextcloud module defines it.
    let setup = dir.path().join("nextcloud-setup.service");
    fs::write(&setup, "[Service]\nType=oneshot\nExecStart=/bin/true\n").unwrap();
    let mut checked = 0;
    for case in valid_cases() {
        let quiesced: Vec<String> = case.rendered["plan"]["quiesce"]
            .as_array()
            .map(|q| q.iter().map(|u| u["unit"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        for (file, unit) in case.profile_unit_files() {
            assert!(quiesced.contains(&file), "{}: {file} is not quiesced: {quiesced:?}", case.name);
            let path = dir.path().join(&file);
            let fake = format!("{}-nextcloud-occ", &FAKE_PACKAGE[..43]);
            fs::write(&path, unit.replace(&fake, occ.to_str().unwrap())).unwrap();
            let output =
                run("systemd-analyze", &["verify", "--man=no", path.to_str().unwrap(), setup.to_str().unwrap()]);
            let said = text(&output.stdout) + &text(&output.stderr);
            assert!(output.status.success() && said.trim().is_empty(), "{}: {file}:\n{said}", case.name);
            let output = run("systemd-analyze", &["security", "--offline=true", "--no-pager", path.to_str().unwrap()]);
            let said = text(&output.stdout);
            let score: f64 = said
                .lines()
                .find_map(|l| {
                    l.split_once("Overall exposure level for ")?.1.split_once(": ")?.1.split(' ').next()?.parse().ok()
                })
                .unwrap_or_else(|| panic!("{file}: no exposure level in\n{said}"));
            assert!(score <= 2.5, "{}: {file}: exposure {score}\n{said}", case.name);
            checked += 1;
        }
    }
    assert!(checked >= 1, "no case has a profile unit");
}
