//! Conformance with restic's own expected `forget` results.
//!
//! `shared/fixtures/retention/restic-policy-vectors.json` (beside the repository) holds the 103
//! input snapshots and 40 policies of restic's `TestApplyPolicy`, with restic's golden keep
//! lists and reasons (see the README there). Every case without a tag rule must give the same
//! kept snapshots, in the same order, for the same reasons. Tag rules have no counterpart in
//! hwc-backup, so those cases are skipped.

#![allow(clippy::disallowed_methods)] // scratch trees are built by path

use std::collections::BTreeMap;

use serde::Deserialize;

use hwc_backup_engine::store::retention::{apply, Policy, SnapshotTime, Within};

const VECTORS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/retention/restic-policy-vectors.json");

#[derive(Deserialize)]
struct Vectors {
    snapshots: Vec<VectorSnapshot>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct VectorSnapshot {
    time: String,
}

#[derive(Deserialize)]
struct Case {
    index: usize,
    policy: VectorPolicy,
    uses_tags: bool,
    keep_indices: Vec<usize>,
    reasons: Vec<Reason>,
}

/// restic's policy fields; absent means zero / unset. Unknown fields fail the test, so a new
/// kind of rule in the vectors cannot be silently ignored.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct VectorPolicy {
    last: i64,
    hourly: i64,
    daily: i64,
    weekly: i64,
    monthly: i64,
    yearly: i64,
    within: Option<String>,
    within_hourly: Option<String>,
    within_daily: Option<String>,
    within_weekly: Option<String>,
    within_monthly: Option<String>,
    within_yearly: Option<String>,
    tags: Option<Vec<Vec<String>>>,
}

#[derive(Deserialize)]
struct Reason {
    matches: Vec<String>,
}

impl VectorPolicy {
    fn to_policy(&self) -> Result<Policy, String> {
        let within = |text: &Option<String>| -> Result<Option<Within>, String> {
            text.as_deref().map(|t| Within::parse(t).map_err(|e| e.to_string())).transpose()
        };
        Ok(Policy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within: within(&self.within)?,
            within_hourly: within(&self.within_hourly)?,
            within_daily: within(&self.within_daily)?,
            within_weekly: within(&self.within_weekly)?,
            within_monthly: within(&self.within_monthly)?,
            within_yearly: within(&self.within_yearly)?,
        })
    }
}

fn load() -> Vectors {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|error| {
        panic!(
            "cannot read the restic retention vectors at {VECTORS}: {error}\n\
             (shared/ must sit beside the repository, as it does in CI)"
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{VECTORS}: {error}"))
}

/// Runs one case; returns a description of every difference from restic.
fn check(case: &Case, snapshots: &[SnapshotTime]) -> Result<(), String> {
    let policy = case.policy.to_policy()?;
    // restic measures within-rules from the newest snapshot before the wall clock; all inputs
    // are from 2014-2016, so any current clock gives the same reference.
    let decision = apply(snapshots, &policy, jiff::Timestamp::now());
    let kept: Vec<usize> = decision.keep.iter().map(|kept| kept.index).collect();
    let reasons: Vec<&Vec<String>> = decision.keep.iter().map(|kept| &kept.reasons).collect();
    let expected: Vec<&Vec<String>> = case.reasons.iter().map(|r| &r.matches).collect();
    let mut problems = Vec::new();
    if kept != case.keep_indices {
        problems.push(format!("kept {kept:?}, restic keeps {:?}", case.keep_indices));
    }
    if reasons != expected {
        problems.push(format!("reasons {reasons:?}, restic says {expected:?}"));
    }
    let mut all: Vec<usize> = kept.iter().chain(&decision.remove).copied().collect();
    all.sort_unstable();
    if all != (0..snapshots.len()).collect::<Vec<_>>() {
        problems.push("keep + remove is not a partition of the input".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn restic_policy_vectors_without_tags() {
    let vectors = load();
    let snapshots: Vec<SnapshotTime> = vectors
        .snapshots
        .iter()
        .map(|s| SnapshotTime::parse(&s.time).unwrap_or_else(|e| panic!("{}: {e}", s.time)))
        .collect();
    let mut failures = BTreeMap::new();
    let mut checked = 0;
    for case in vectors.cases.iter().filter(|case| !case.uses_tags) {
        assert!(case.policy.tags.is_none(), "case {} has tags but uses_tags is false", case.index);
        checked += 1;
        if let Err(problem) = check(case, &snapshots) {
            failures.insert(case.index, problem);
        }
    }
    assert!(checked > 0, "no case without tags in {VECTORS}");
    let report: Vec<String> = failures.iter().map(|(index, problem)| format!("case {index}: {problem}")).collect();
    assert!(failures.is_empty(), "{} of {checked} restic cases differ:\n{}", failures.len(), report.join("\n"));
    println!("{checked} restic policy cases match");
}
