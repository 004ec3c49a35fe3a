//! Retention policy: which snapshots to keep, exactly like `restic forget --keep-*`
//! (restic 0.16 and later).
//!
//! This module is pure: it gets snapshot times, a [`Policy`] and the wall clock, and returns a
//! [`Decision`]. It never touches the disk; the caller moves or deletes directories.
//!
//! # Algorithm
//!
//! 1. The snapshots are sorted newest first with a *stable* sort, so snapshots with equal
//!    times keep their input order. The walk below goes once down this list.
//! 2. Every count rule (`last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`) gives each
//!    snapshot a period key: its list position for `last`, else (year, month, day, hour),
//!    (year, month, day), (ISO week-year, ISO week), (year, month) or the year. The calendar
//!    fields are read in the UTC offset *recorded in that snapshot*, not in UTC and not in the
//!    zone of the machine running the policy: a snapshot taken at 00:30+01:00 on March 1 is a
//!    March snapshot, although it is still February in UTC, and when clocks fall back two real
//!    hours share one hourly key. Weeks are ISO weeks (Monday to Sunday) keyed by ISO
//!    week-year, so Mon 2025-12-29 and Thu 2026-01-01 are both in 2026-W01.
//! 3. A count rule keeps a snapshot when it still has count left and the snapshot's key differs
//!    from the key of the last snapshot that rule kept. Walking newest first, this keeps the
//!    newest snapshot of each of the N most recent periods that have a snapshot at all; empty
//!    periods cost nothing. A count of `-1` is unlimited, `0` disables the rule.
//! 4. Every rule that keeps a snapshot uses up one of its own counts for it: rules do not share
//!    or skip snapshots another rule already kept, so `daily 7` and `weekly 4` overlap.
//! 5. The "oldest" rule: when the walk reaches the oldest snapshot and a count rule still has
//!    count left, that rule keeps it even if it shares a period with the rule's last keep; the
//!    reason then reads `"oldest daily snapshot"`. With too few periods, history reaches back
//!    as far as it can.
//! 6. `within D` keeps every snapshot strictly after `reference - D`. `within-daily D` (and the
//!    hourly/weekly/monthly/yearly forms) keep the newest snapshot of each period among those
//!    snapshots, without a count, and also follow the "oldest" rule when the oldest snapshot
//!    is inside their window. The reference is the newest snapshot that is *not in the
//!    future* (strictly before `now`), so a backup job that stopped running never lets
//!    everything expire. `D` is subtracted like Go's `AddDate`: years and
//!    months first, the day overflowing into the next month (March 31 minus one month is
//!    "February 31", i.e. March 3), then days, all in the reference snapshot's recorded offset,
//!    and finally the hours as elapsed time. (restic uses the machine's local zone instead of
//!    the fixed offset when the two agree at that instant, which can move the window start by
//!    the DST difference; a fixed offset keeps the result independent of the machine.)
//! 7. A snapshot is kept when any rule keeps it; its reasons use restic's own strings, in
//!    restic's order: `within`, the count rules from `last` to `yearly`, then the within-period
//!    rules from hourly to yearly.
//!
//! An empty policy keeps nothing, exactly as restic's policy function does; restic's command
//! refuses to run with "no policy was specified", and so must every caller: check
//! [`Policy::is_empty`] (and [`Policy::validate`]) before acting on a [`Decision`].
//!
//! restic's `--keep-tag` has no counterpart here: hwc-backup snapshots carry no tags.

use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::Offset;
use jiff::Timestamp;
use serde::Serialize;

/// When a snapshot was taken: the instant plus the UTC offset the backup host had then.
///
/// The offset is what puts the snapshot in a day, week, month or year (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTime {
    /// The instant the snapshot was taken.
    pub timestamp: Timestamp,
    /// The UTC offset recorded with the snapshot (the backup host's local offset at that time).
    pub offset: Offset,
}

impl SnapshotTime {
    /// A snapshot time from an instant and its recorded offset.
    pub fn new(timestamp: Timestamp, offset: Offset) -> SnapshotTime {
        SnapshotTime { timestamp, offset }
    }

    /// A snapshot time from a zoned datetime, keeping the offset it has at that instant.
    pub fn from_zoned(zoned: &jiff::Zoned) -> SnapshotTime {
        SnapshotTime::new(zoned.timestamp(), zoned.offset())
    }

    /// Parses RFC 3339 text with an offset, e.g. `2025-03-01T00:30:00+01:00` or
    /// `2016-01-18T12:02:03Z`, keeping the written offset.
    pub fn parse(text: &str) -> Result<SnapshotTime, jiff::Error> {
        let timestamp: Timestamp = text.parse()?;
        // The timestamp parse succeeded, so the text has an offset; `Z` (and the "unknown"
        // offset `-00:00`) mean UTC.
        let pieces = jiff::fmt::temporal::Pieces::parse(text)?;
        let offset = pieces.to_numeric_offset().unwrap_or(Offset::UTC);
        Ok(SnapshotTime::new(timestamp, offset))
    }

    /// The calendar date and wall-clock time as recorded, i.e. in the snapshot's own offset.
    pub fn civil(&self) -> DateTime {
        self.offset.to_datetime(self.timestamp)
    }
}

/// A restic duration for the `within*` rules: years, months, days and hours.
///
/// Text form as in restic: `1y2m3d4h`, where `m` means **months**; any subset of the units in
/// any order (`13d23h`, `1y1d1m`). [`fmt::Display`] writes restic's canonical form back
/// (`1y1m1d`), which is also what appears in the keep reasons. A zero duration disables the
/// rule it is given to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Within {
    /// Calendar years to go back.
    pub years: i32,
    /// Calendar months to go back.
    pub months: i32,
    /// Calendar days to go back.
    pub days: i32,
    /// Hours (of elapsed time) to go back.
    pub hours: i32,
}

/// Why a `within` duration could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WithinParseError {
    /// A unit letter (or other text) came where a number was expected.
    #[error("invalid duration {text:?}: no number found before {rest:?}")]
    NoNumber {
        /// The whole text given.
        text: String,
        /// The part where the number was expected.
        rest: String,
    },
    /// The text ends with a number that has no unit.
    #[error("invalid duration {text:?}: no unit found after number {number}")]
    NoUnit {
        /// The whole text given.
        text: String,
        /// The number without a unit.
        number: i32,
    },
    /// A number is followed by something other than `y`, `m`, `d` or `h`.
    #[error(
        "invalid duration {text:?}: invalid unit {unit:?} after number {number} \
         (use y, m for months, d, h)"
    )]
    InvalidUnit {
        /// The whole text given.
        text: String,
        /// The unit found.
        unit: char,
        /// The number before it.
        number: i32,
    },
    /// A number is negative (restic's `forget` rejects these too).
    #[error("invalid duration {text:?}: negative values are not allowed")]
    Negative {
        /// The whole text given.
        text: String,
    },
    /// A number does not fit in 32 bits.
    #[error("invalid duration {text:?}: number {digits} is too large")]
    TooLarge {
        /// The whole text given.
        text: String,
        /// The digits of the number.
        digits: String,
    },
}

impl Within {
    /// Parses restic's duration text, e.g. `1y2m3d4h` (y = years, m = months, d = days,
    /// h = hours). Surrounding whitespace is ignored, a unit given twice takes the later
    /// number, and the empty string is the zero duration, as in restic. Unlike restic's
    /// parser, negative numbers are refused here rather than later by the command.
    pub fn parse(text: &str) -> Result<Within, WithinParseError> {
        let mut within = Within::default();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let (number, after) = leading_number(text, rest)?;
            let unit =
                after.chars().next().ok_or_else(|| WithinParseError::NoUnit { text: text.to_owned(), number })?;
            match unit {
                'y' => within.years = number,
                'm' => within.months = number,
                'd' => within.days = number,
                'h' => within.hours = number,
                _ => return Err(WithinParseError::InvalidUnit { text: text.to_owned(), unit, number }),
            }
            rest = &after[unit.len_utf8()..];
        }
        Ok(within)
    }

    /// True when all parts are zero; a zero duration disables its rule.
    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }

    fn has_negative_part(&self) -> bool {
        self.years < 0 || self.months < 0 || self.days < 0 || self.hours < 0
    }
}

/// Splits `rest` into its leading (optionally signed) decimal number and what follows.
fn leading_number<'a>(text: &str, rest: &'a str) -> Result<(i32, &'a str), WithinParseError> {
    let (negative, unsigned) = match rest.strip_prefix('-') {
        Some(unsigned) => (true, unsigned),
        None => (false, rest),
    };
    let end = unsigned.find(|c: char| !c.is_ascii_digit()).unwrap_or(unsigned.len());
    let digits = &unsigned[..end];
    if digits.is_empty() {
        return Err(WithinParseError::NoNumber { text: text.to_owned(), rest: rest.to_owned() });
    }
    let number: i32 =
        digits.parse().map_err(|_| WithinParseError::TooLarge { text: text.to_owned(), digits: digits.to_owned() })?;
    if negative && number != 0 {
        return Err(WithinParseError::Negative { text: text.to_owned() });
    }
    Ok((number, &unsigned[end..]))
}

impl FromStr for Within {
    type Err = WithinParseError;

    fn from_str(text: &str) -> Result<Within, WithinParseError> {
        Within::parse(text)
    }
}

impl fmt::Display for Within {
    /// restic's canonical form: the non-zero parts in the order y, m, d, h (empty when zero).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')];
        for (number, unit) in parts {
            if number != 0 {
                write!(f, "{number}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Within {
    /// Serialized as restic's text (`"1y2m"`), the form users write in the configuration.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A retention policy: restic's `--keep-*` options.
///
/// Counts: `0` disables the rule, `-1` is unlimited, any other negative value is invalid (see
/// [`Policy::validate`]). A `within*` rule that is `None` or zero is disabled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Keep the newest N snapshots (`--keep-last`).
    pub last: i64,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    pub hourly: i64,
    /// Keep the newest snapshot of each of the N newest days that have one.
    pub daily: i64,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    pub weekly: i64,
    /// Keep the newest snapshot of each of the N newest months that have one.
    pub monthly: i64,
    /// Keep the newest snapshot of each of the N newest years that have one.
    pub yearly: i64,
    /// Keep every snapshot within this duration of the newest snapshot (`--keep-within`).
    pub within: Option<Within>,
    /// Keep the newest snapshot of each hour within this duration of the newest snapshot.
    pub within_hourly: Option<Within>,
    /// Keep the newest snapshot of each day within this duration of the newest snapshot.
    pub within_daily: Option<Within>,
    /// Keep the newest snapshot of each ISO week within this duration of the newest snapshot.
    pub within_weekly: Option<Within>,
    /// Keep the newest snapshot of each month within this duration of the newest snapshot.
    pub within_monthly: Option<Within>,
    /// Keep the newest snapshot of each year within this duration of the newest snapshot.
    pub within_yearly: Option<Within>,
}

/// Why a [`Policy`] is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A count is below `-1`.
    #[error("keep {rule} is {value}: negative values other than -1 (unlimited) are not allowed")]
    NegativeCount {
        /// The rule's name (`"last"`, `"daily"`, ...).
        rule: &'static str,
        /// The value given.
        value: i64,
    },
    /// A within duration has a negative part.
    #[error("keep {rule} {within}: durations with negative values are not allowed")]
    NegativeWithin {
        /// The rule's name (`"within"`, `"within-daily"`, ...).
        rule: &'static str,
        /// The duration given.
        within: Within,
    },
}

impl Policy {
    /// True when no rule could keep anything: every count is `0` (or an invalid value below
    /// `-1`, which [`apply`] ignores) and every within rule is unset or zero.
    ///
    /// [`apply`] keeps nothing under such a policy, so callers must refuse to act on it, as
    /// restic does ("no policy was specified, no snapshots will be removed").
    pub fn is_empty(&self) -> bool {
        let no_counts = self.counts().iter().all(|&(_, n)| !count_is_active(n));
        let no_windows = self.windows().iter().all(|(_, w)| w.is_none());
        no_counts && no_windows
    }

    /// Rejects what restic's `forget` rejects: counts below `-1` and negative durations.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (rule, value) in self.counts() {
            if value < -1 {
                return Err(PolicyError::NegativeCount { rule, value });
            }
        }
        for (rule, within) in self.windows() {
            if let Some(within) = within.filter(Within::has_negative_part) {
                return Err(PolicyError::NegativeWithin { rule, within });
            }
        }
        Ok(())
    }

    /// The count rules with their names, in restic's evaluation order.
    fn counts(&self) -> [(&'static str, i64); 6] {
        [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
    }

    /// The within rules with their names; zero durations come back as `None` (disabled).
    fn windows(&self) -> [(&'static str, Option<Within>); 6] {
        let active = |w: Option<Within>| w.filter(|w| !w.is_zero());
        [
            ("within", active(self.within)),
            ("within-hourly", active(self.within_hourly)),
            ("within-daily", active(self.within_daily)),
            ("within-weekly", active(self.within_weekly)),
            ("within-monthly", active(self.within_monthly)),
            ("within-yearly", active(self.within_yearly)),
        ]
    }
}

/// restic runs a count rule only for `n > 0` or `n == -1`.
fn count_is_active(count: i64) -> bool {
    count > 0 || count == -1
}

/// A retention tier, ordered from finest (`Hourly`) to coarsest (`Yearly`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Kept by an hourly rule.
    Hourly,
    /// Kept by a daily rule (or only by `last` / `within`).
    Daily,
    /// Kept by a weekly rule.
    Weekly,
    /// Kept by a monthly rule.
    Monthly,
    /// Kept by a yearly rule.
    Yearly,
}

impl Tier {
    /// The lowercase name: `"hourly"`, `"daily"`, `"weekly"`, `"monthly"` or `"yearly"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hourly => "hourly",
            Tier::Daily => "daily",
            Tier::Weekly => "weekly",
            Tier::Monthly => "monthly",
            Tier::Yearly => "yearly",
        }
    }

    /// The tier of a lowercase name (`"daily"` …).
    pub fn from_name(name: &str) -> Option<Tier> {
        [Tier::Hourly, Tier::Daily, Tier::Weekly, Tier::Monthly, Tier::Yearly]
            .into_iter()
            .find(|tier| tier.as_str() == name)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot the policy keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// Position of the snapshot in the slice given to [`apply`].
    pub index: usize,
    /// restic's reasons, in restic's order, e.g. `"within 1m"`, `"daily snapshot"`,
    /// `"oldest yearly snapshot"`, `"weekly within 1m"`, `"last snapshot"`.
    pub reasons: Vec<String>,
}

/// The outcome of [`apply`]: every input snapshot is in exactly one of the two lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshots to keep, newest first.
    pub keep: Vec<Kept>,
    /// Positions (in the slice given to [`apply`]) of the snapshots to remove, newest first.
    pub remove: Vec<usize>,
}

/// Applies `policy` to `snapshots` (in any order) the way `restic forget` does.
///
/// `now` only serves to find the reference for the within rules: the newest snapshot strictly
/// before `now`. Snapshots in the future are still walked (as the newest) and are inside every
/// within window. An empty policy keeps nothing: check [`Policy::is_empty`] first.
#[must_use = "the decision says what to delete; ignoring it keeps everything"]
pub fn apply(snapshots: &[SnapshotTime], policy: &Policy, now: Timestamp) -> Decision {
    let order = newest_first(snapshots);
    let reference = within_reference(snapshots, &order, now);
    let mut rules = Rules::new(policy, &reference);
    let mut decision = Decision::default();
    for (position, &index) in order.iter().enumerate() {
        let oldest = position + 1 == order.len();
        let reasons = rules.offer(&snapshots[index], position, oldest);
        if reasons.is_empty() {
            decision.remove.push(index);
        } else {
            decision.keep.push(Kept { index, reasons });
        }
    }
    decision
}

/// The tier directory a kept snapshot belongs in: the finest tier whose rule keeps it
/// (`within-daily` counts as daily, and so on). A snapshot kept only by `last` or `within`
/// goes to [`Tier::Daily`], where new snapshots start.
pub fn tier_for(kept: &Kept) -> Tier {
    kept.reasons.iter().filter_map(|reason| reason_tier(reason)).min().unwrap_or(Tier::Daily)
}

/// The tier named by a reason: "hourly snapshot", "oldest weekly snapshot", "daily within 7d"
/// name one; "last snapshot" and "within 1m" do not.
fn reason_tier(reason: &str) -> Option<Tier> {
    let reason = reason.strip_prefix("oldest ").unwrap_or(reason);
    let name = reason.split(' ').next()?;
    Tier::from_name(name)
}

/// Input positions sorted newest first; the sort is stable, so equal times keep input order.
fn newest_first(snapshots: &[SnapshotTime]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| snapshots[b].timestamp.cmp(&snapshots[a].timestamp));
    order
}

/// The newest snapshot strictly before `now`, first in walk order on ties.
///
/// restic starts from Go's zero time (0001-01-01T00:00:00Z) and only replaces it with a strictly
/// later snapshot, so with no such snapshot the windows are measured from year 1.
fn within_reference(snapshots: &[SnapshotTime], order: &[usize], now: Timestamp) -> SnapshotTime {
    let go_zero_time = Timestamp::from_second(-62_135_596_800).unwrap_or(Timestamp::MIN);
    let mut reference = SnapshotTime::new(go_zero_time, Offset::UTC);
    for snapshot in order.iter().map(|&index| &snapshots[index]) {
        if snapshot.timestamp > reference.timestamp && snapshot.timestamp < now {
            reference = *snapshot;
        }
    }
    reference
}

/// The calendar period a rule groups snapshots by.
#[derive(Clone, Copy, Debug)]
enum Period {
    /// `last`: every list position is its own period.
    Position,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// The period key, in restic's integer encoding (e.g. YYYYMMDD for days), of the snapshot
    /// at `position` in the walk. The encodings are injective, so equal keys mean equal periods.
    fn key(self, snapshot: &SnapshotTime, position: usize) -> i64 {
        let civil = snapshot.civil();
        let (year, month) = (i64::from(civil.year()), i64::from(civil.month()));
        let (day, hour) = (i64::from(civil.day()), i64::from(civil.hour()));
        match self {
            // A usize position always fits: slices hold far fewer than i64::MAX elements.
            Period::Position => i64::try_from(position).unwrap_or(i64::MAX),
            Period::Hour => year * 1_000_000 + month * 10_000 + day * 100 + hour,
            Period::Day => year * 10_000 + month * 100 + day,
            Period::Week => {
                let week = civil.date().iso_week_date();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Period::Month => year * 100 + month,
            Period::Year => year,
        }
    }

    /// The word restic uses in reasons ("daily snapshot", "daily within 7d").
    fn word(self) -> &'static str {
        match self {
            Period::Position => "last",
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }
}

/// What a bucket rule remembers while walking: the period of its last keep.
#[derive(Debug)]
struct Bucket {
    period: Period,
    last_key: Option<i64>,
}

impl Bucket {
    fn new(period: Period) -> Bucket {
        Bucket { period, last_key: None }
    }

    /// Keeps the snapshot when it opens a new period, or when it is the oldest snapshot (then
    /// the returned prefix is `"oldest "` if it shares the last kept period). `None`: not kept.
    fn take(&mut self, snapshot: &SnapshotTime, position: usize, oldest: bool) -> Option<&'static str> {
        let key = self.period.key(snapshot, position);
        let same_period = self.last_key == Some(key);
        if same_period && !oldest {
            return None;
        }
        self.last_key = Some(key);
        Some(if same_period { "oldest " } else { "" })
    }
}

/// A count rule (`--keep-daily 7`): a bucket plus the number of keeps left (`-1`: unlimited).
#[derive(Debug)]
struct CountRule {
    bucket: Bucket,
    left: i64,
}

impl CountRule {
    fn offer(&mut self, snapshot: &SnapshotTime, position: usize, oldest: bool) -> Option<String> {
        if !count_is_active(self.left) {
            return None;
        }
        let prefix = self.bucket.take(snapshot, position, oldest)?;
        let reason = format!("{prefix}{} snapshot", self.bucket.period.word());
        if self.left > 0 {
            self.left -= 1;
        }
        Some(reason)
    }
}

/// A within-period rule (`--keep-within-daily 7d`): a bucket limited to a time window.
#[derive(Debug)]
struct WindowRule {
    bucket: Bucket,
    within: Within,
    window: Window,
}

impl WindowRule {
    fn offer(&mut self, snapshot: &SnapshotTime, position: usize, oldest: bool) -> Option<String> {
        if !self.window.contains(snapshot) {
            return None;
        }
        let prefix = self.bucket.take(snapshot, position, oldest)?;
        let word = self.bucket.period.word();
        Some(format!("{prefix}{word} within {}", self.within))
    }
}

/// All active rules of a policy, in restic's evaluation order.
#[derive(Debug)]
struct Rules {
    within: Option<(Within, Window)>,
    counts: Vec<CountRule>,
    windows: Vec<WindowRule>,
}

/// The bucket periods in restic's rule order: `last`, then hourly to yearly.
const PERIODS: [Period; 6] = [Period::Position, Period::Hour, Period::Day, Period::Week, Period::Month, Period::Year];

impl Rules {
    fn new(policy: &Policy, reference: &SnapshotTime) -> Rules {
        let [(_, within), windows @ ..] = policy.windows();
        Rules {
            within: within.map(|w| (w, Window::new(reference, &w))),
            counts: count_rules(policy),
            windows: window_rules(windows, reference),
        }
    }

    /// Offers the snapshot at walk `position` to every rule; returns the reasons of the rules
    /// that keep it (empty: remove it). Every matching rule uses up its count.
    fn offer(&mut self, snapshot: &SnapshotTime, position: usize, oldest: bool) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some((within, window)) = &self.within {
            if window.contains(snapshot) {
                reasons.push(format!("within {within}"));
            }
        }
        for rule in &mut self.counts {
            reasons.extend(rule.offer(snapshot, position, oldest));
        }
        for rule in &mut self.windows {
            reasons.extend(rule.offer(snapshot, position, oldest));
        }
        reasons
    }
}

/// The active count rules (`n > 0` or `n == -1`), `last` first.
fn count_rules(policy: &Policy) -> Vec<CountRule> {
    PERIODS
        .into_iter()
        .zip(policy.counts())
        .filter(|&(_, (_, count))| count_is_active(count))
        .map(|(period, (_, left))| CountRule { bucket: Bucket::new(period), left })
        .collect()
}

/// The active within-period rules, hourly first; `windows` are the five durations in that order.
fn window_rules(windows: [(&str, Option<Within>); 5], reference: &SnapshotTime) -> Vec<WindowRule> {
    PERIODS[1..]
        .iter()
        .zip(windows)
        .filter_map(|(&period, (_, within))| {
            let within = within?;
            Some(WindowRule { bucket: Bucket::new(period), within, window: Window::new(reference, &within) })
        })
        .collect()
}

/// The open interval after `reference - within`, as nanoseconds since the Unix epoch.
///
/// Kept as a plain i128 instead of a [`Timestamp`] so that any `i32` duration works: a
/// `9999y` window, or one measured from Go's zero time, reaches before jiff's year -9999.
#[derive(Clone, Copy, Debug)]
struct Window {
    after_nanos: i128,
}

impl Window {
    /// Go's `latest.AddDate(-y, -m, -d).Add(-h hours)`, computed in the reference's offset.
    fn new(reference: &SnapshotTime, within: &Within) -> Window {
        let civil = reference.civil();
        let clock = i64::from(civil.hour()) * 3600 + i64::from(civil.minute()) * 60 + i64::from(civil.second());
        let local_seconds = days_back(civil.date(), within) * 86_400 + clock;
        // The date part is wall-clock time in the reference's fixed offset; the hours are
        // elapsed time, subtracted afterwards (Go's `Add`).
        let offset = i64::from(reference.offset.seconds());
        let seconds = local_seconds - offset - i64::from(within.hours) * 3600;
        let after_nanos = i128::from(seconds) * 1_000_000_000 + i128::from(civil.subsec_nanosecond());
        Window { after_nanos }
    }

    /// True when the snapshot is strictly after the window's start.
    fn contains(&self, snapshot: &SnapshotTime) -> bool {
        snapshot.timestamp.as_nanosecond() > self.after_nanos
    }
}

/// Go's `date.AddDate(-years, -months, -days)`, as days since 1970-01-01.
///
/// Go shifts the month (carrying into the year) and then counts the day of the month and the
/// subtracted days from the 1st of that month, so an impossible "February 31" rolls forward
/// into March instead of being clamped to February 28.
fn days_back(date: jiff::civil::Date, within: &Within) -> i64 {
    let month_index = i64::from(date.year()) * 12 + i64::from(date.month()) - 1;
    let months = month_index - i64::from(within.years) * 12 - i64::from(within.months);
    let first_of_month = days_from_civil(months.div_euclid(12), months.rem_euclid(12) + 1, 1);
    first_of_month + i64::from(date.day()) - 1 - i64::from(within.days)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`); valid for any year an `i32` duration can produce.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March so that the leap day is the last day of the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses RFC 3339 text with an offset; test data only.
    fn at(text: &str) -> SnapshotTime {
        SnapshotTime::parse(text).expect("test timestamp")
    }

    fn times(texts: &[&str]) -> Vec<SnapshotTime> {
        texts.iter().map(|text| at(text)).collect()
    }

    /// A `now` after all test data, so the reference is the newest snapshot.
    fn later() -> Timestamp {
        at("2030-01-01T00:00:00Z").timestamp
    }

    fn kept_indices(decision: &Decision) -> Vec<usize> {
        decision.keep.iter().map(|kept| kept.index).collect()
    }

    fn reasons(decision: &Decision) -> Vec<Vec<&str>> {
        decision.keep.iter().map(|kept| kept.reasons.iter().map(String::as_str).collect()).collect()
    }

    fn within(text: &str) -> Option<Within> {
        Some(Within::parse(text).expect("test duration"))
    }

    // --- peers.md §3.1 worked examples -------------------------------------------------------

    #[test]
    fn example_a_oldest_snapshot_kept_while_daily_count_remains() {
        let snapshots = times(&[
            "2025-01-01T09:00:00Z",
            "2025-01-01T21:00:00Z",
            "2025-01-02T09:00:00Z",
            "2025-01-02T21:00:00Z",
            "2025-01-03T09:00:00Z",
            "2025-01-03T21:00:00Z",
        ]);
        let policy = Policy { daily: 5, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        assert_eq!(kept_indices(&decision), [5, 3, 1, 0]);
        assert_eq!(
            reasons(&decision),
            [vec!["daily snapshot"], vec!["daily snapshot"], vec!["daily snapshot"], vec!["oldest daily snapshot"],]
        );
        assert_eq!(decision.remove, [4, 2]);
    }

    #[test]
    fn example_b_daily_and_weekly_counts_overlap() {
        // One snapshot a day at 12:00 from 2025-01-01 to 2025-03-01 (60 days).
        let start = jiff::civil::date(2025, 1, 1);
        let snapshots: Vec<SnapshotTime> = (0..60)
            .map(|n| {
                let day = start.checked_add(jiff::Span::new().days(n)).expect("date");
                let instant = Offset::UTC.to_timestamp(day.at(12, 0, 0, 0)).expect("ts");
                SnapshotTime::new(instant, Offset::UTC)
            })
            .collect();
        assert_eq!(snapshots[59], at("2025-03-01T12:00:00Z"));
        let policy = Policy { daily: 7, weekly: 5, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        let kept_days: Vec<String> =
            decision.keep.iter().map(|kept| snapshots[kept.index].civil().date().to_string()).collect();
        assert_eq!(
            kept_days,
            [
                "2025-03-01",
                "2025-02-28",
                "2025-02-27",
                "2025-02-26",
                "2025-02-25",
                "2025-02-24",
                "2025-02-23",
                "2025-02-16",
                "2025-02-09",
                "2025-02-02",
            ]
        );
        let both = vec!["daily snapshot", "weekly snapshot"];
        let got = reasons(&decision);
        assert_eq!(got[0], both, "Sat Mar 1 opens the week");
        assert_eq!(got[1], ["daily snapshot"]);
        assert_eq!(got[6], both, "Sun Feb 23 is the newest of the previous week");
        assert_eq!(got[9], ["weekly snapshot"]);
        assert_eq!(decision.remove.len(), 50);
    }

    #[test]
    fn example_c_iso_week_spans_the_year_boundary() {
        // Mon Dec 29 2025 and Thu Jan 1 2026 are both in ISO week 2026-W01.
        let snapshots = times(&["2025-12-22T12:00:00Z", "2025-12-29T12:00:00Z", "2026-01-01T12:00:00Z"]);
        let policy = Policy { weekly: 2, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        assert_eq!(kept_indices(&decision), [2, 0]);
        assert_eq!(decision.remove, [1]);
    }

    #[test]
    fn example_d_empty_months_cost_nothing() {
        let snapshots =
            times(&["2025-01-31T23:00:00Z", "2025-03-01T01:00:00Z", "2025-03-15T12:00:00Z", "2025-05-02T12:00:00Z"]);
        let policy = Policy { monthly: 3, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        assert_eq!(kept_indices(&decision), [3, 2, 0]);
        assert_eq!(decision.remove, [1]);
    }

    /// restic's docs example: weekdays Apr 21 – May 2 2025 at 11:00, extra Friday 23:00
    /// snapshots, nothing on Wednesday Apr 30.
    fn docs_example() -> Vec<SnapshotTime> {
        let mut texts = vec![];
        for day in [21, 22, 23, 24, 25, 28, 29] {
            texts.push(format!("2025-04-{day}T11:00:00Z"));
        }
        texts.push("2025-04-25T23:00:00Z".to_owned());
        for day in [1, 2] {
            texts.push(format!("2025-05-0{day}T11:00:00Z"));
        }
        texts.push("2025-05-02T23:00:00Z".to_owned());
        texts.iter().map(|text| at(text)).collect()
    }

    #[test]
    fn example_e_docs_keep_daily() {
        let snapshots = docs_example();
        let policy = Policy { daily: 5, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        // May 2 23:00, May 1, Apr 29, Apr 28, Apr 25 23:00.
        assert_eq!(kept_indices(&decision), [10, 8, 6, 5, 7]);
    }

    #[test]
    fn example_e_docs_keep_within_daily() {
        let snapshots = docs_example();
        let policy = Policy { within_daily: within("7d"), ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        // The window starts Apr 25 23:00 (exclusive), so the Friday 23:00 snapshot is out.
        assert_eq!(kept_indices(&decision), [10, 8, 6, 5]);
        assert!(reasons(&decision).iter().all(|r| r == &["daily within 7d"]));
    }

    // --- offsets and DST (Europe/Berlin) ----------------------------------------------------

    #[test]
    fn day_keys_use_the_recorded_offset_at_spring_forward() {
        // Berlin, 2025-03-30: clocks jump from 02:00+01:00 to 03:00+02:00.
        let snapshots = times(&[
            "2025-03-29T23:30:00+01:00", // 22:30Z Mar 29: day Mar 29 either way
            "2025-03-30T00:30:00+01:00", // 23:30Z Mar 29, but recorded day is Mar 30
            "2025-03-30T01:30:00+01:00", // 00:30Z Mar 30
            "2025-03-30T03:30:00+02:00", // 01:30Z Mar 30, one real hour after 01:30+01:00
        ]);
        let policy = Policy { daily: 2, hourly: 3, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        // Hourly keys 03, 01, 00 on Mar 30 (there is no 02 that day); daily: Mar 30's newest,
        // then Mar 29's newest, which is 23:30+01:00 and not 00:30+01:00.
        assert_eq!(kept_indices(&decision), [3, 2, 1, 0]);
        assert_eq!(
            reasons(&decision),
            [
                vec!["hourly snapshot", "daily snapshot"],
                vec!["hourly snapshot"],
                vec!["hourly snapshot"],
                vec!["daily snapshot"],
            ]
        );

        // Stamped in UTC, 00:30+01:00 is the newest snapshot of Mar 29 and takes its place.
        let in_utc: Vec<SnapshotTime> = snapshots.iter().map(|s| SnapshotTime::new(s.timestamp, Offset::UTC)).collect();
        let daily = Policy { daily: 2, ..Policy::default() };
        assert_eq!(kept_indices(&apply(&snapshots, &daily, later())), [3, 0]);
        assert_eq!(kept_indices(&apply(&in_utc, &daily, later())), [3, 1]);
    }

    #[test]
    fn two_real_hours_share_one_hourly_key_at_fall_back() {
        // Berlin, 2025-10-26: clocks go back from 03:00+02:00 to 02:00+01:00, so the wall-clock
        // hour 02 happens twice (00:00Z-01:00Z and 01:00Z-02:00Z).
        let snapshots = times(&[
            "2025-10-26T01:30:00+02:00", // 23:30Z Oct 25, hour key 01
            "2025-10-26T02:10:00+02:00", // 00:10Z, hour key 02 (first 02)
            "2025-10-26T02:50:00+02:00", // 00:50Z, hour key 02 (first 02)
            "2025-10-26T02:10:00+01:00", // 01:10Z, hour key 02 (second 02)
            "2025-10-26T02:50:00+01:00", // 01:50Z, hour key 02 (second 02)
        ]);
        let policy = Policy { hourly: 2, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        // The four snapshots span two real hours but one key: only the newest is kept, and the
        // second hourly keep goes to 01:30.
        assert_eq!(kept_indices(&decision), [4, 0]);
        assert_eq!(decision.remove, [3, 2, 1]);

        // In UTC the same instants fall in hours 01Z, 00Z and 23Z: a different pair survives.
        let in_utc: Vec<SnapshotTime> = snapshots.iter().map(|s| SnapshotTime::new(s.timestamp, Offset::UTC)).collect();
        assert_eq!(kept_indices(&apply(&in_utc, &policy, later())), [4, 2]);
    }

    #[test]
    fn first_of_month_after_midnight_local_counts_for_that_month() {
        // 2025-03-01T00:30+01:00 is 2025-02-28T23:30Z: March as recorded, February in UTC.
        let snapshots = times(&["2025-02-15T12:00:00+01:00", "2025-03-01T00:30:00+01:00", "2025-03-20T12:00:00+01:00"]);
        let policy = Policy { monthly: 2, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        // March's newest is Mar 20, so Mar 1 is not kept; February's is Feb 15.
        assert_eq!(kept_indices(&decision), [2, 0]);
        assert_eq!(decision.remove, [1]);

        let in_utc: Vec<SnapshotTime> = snapshots.iter().map(|s| SnapshotTime::new(s.timestamp, Offset::UTC)).collect();
        // In UTC the same snapshot is February's newest and Feb 15 goes instead.
        assert_eq!(kept_indices(&apply(&in_utc, &policy, later())), [2, 1]);
    }

    #[test]
    fn within_window_is_computed_in_the_reference_offset() {
        // The reference is 2025-04-01T00:30+02:00 (2025-03-31T22:30Z). One month back in its
        // own offset is 2025-03-01T00:30+02:00 (2025-02-28T22:30Z). Done in UTC it would be
        // "Feb 31" 22:30Z = Mar 3 22:30Z, and the Mar 2 snapshot would fall out.
        let snapshots = times(&["2025-02-28T22:00:00Z", "2025-03-02T12:00:00Z", "2025-04-01T00:30:00+02:00"]);
        let policy = Policy { within: within("1m"), ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        assert_eq!(kept_indices(&decision), [2, 1]);
        assert_eq!(reasons(&decision)[0], ["within 1m"]);
    }

    // --- within arithmetic and reference ----------------------------------------------------

    #[test]
    fn within_month_overflow_rolls_forward_like_go_add_date() {
        // 2025-03-31 minus 1 month is "2025-02-31" = 2025-03-03; in leap 2024 it is 2024-03-02.
        for (reference, inside, outside) in [
            ("2025-03-31T12:00:00Z", "2025-03-03T12:00:01Z", "2025-03-03T12:00:00Z"),
            ("2024-03-31T12:00:00Z", "2024-03-02T12:00:01Z", "2024-03-02T12:00:00Z"),
        ] {
            let snapshots = times(&[outside, inside, reference]);
            let policy = Policy { within: within("1m"), ..Policy::default() };
            let decision = apply(&snapshots, &policy, later());
            assert_eq!(kept_indices(&decision), [2, 1], "reference {reference}");
            assert_eq!(decision.remove, [0], "the boundary itself is outside");
        }
    }

    #[test]
    fn within_hours_are_subtracted_after_the_date() {
        // 2025-03-01T01:00Z minus 1m1h: the date step gives 2025-02-01T01:00Z, then 00:00Z.
        let snapshots = times(&["2025-02-01T00:00:00Z", "2025-02-01T00:00:01Z", "2025-03-01T01:00:00Z"]);
        let policy = Policy { within: within("1m1h"), ..Policy::default() };
        assert_eq!(kept_indices(&apply(&snapshots, &policy, later())), [2, 1]);
    }

    #[test]
    fn within_reference_skips_future_snapshots() {
        let snapshots = times(&[
            "2025-01-01T00:00:00Z",
            "2025-01-10T00:00:00Z",
            "2025-06-01T00:00:00Z", // in the future for `now` below
        ]);
        let now = at("2025-01-10T12:00:00Z").timestamp;
        let policy = Policy { within: within("2d"), ..Policy::default() };
        let decision = apply(&snapshots, &policy, now);
        // Reference Jan 10 (not Jun 1): Jan 10 is inside, the future one is after any start.
        assert_eq!(kept_indices(&decision), [2, 1]);
        assert_eq!(decision.remove, [0]);
    }

    #[test]
    fn snapshot_exactly_at_now_is_not_the_reference() {
        let snapshots = times(&["2025-01-01T00:00:00Z", "2025-01-05T00:00:00Z"]);
        let now = snapshots[1].timestamp;
        let policy = Policy { within: within("1d"), ..Policy::default() };
        // Reference is Jan 1 (strictly before now); Jan 5 is kept as "after the start" anyway.
        assert_eq!(kept_indices(&apply(&snapshots, &policy, now)), [1, 0]);
    }

    #[test]
    fn all_snapshots_in_the_future_measure_from_year_one() {
        // Like restic, with no snapshot before `now` the reference is 0001-01-01T00:00:00Z,
        // so every snapshot is inside any within window.
        let snapshots = times(&["2025-01-01T00:00:00Z", "2025-01-05T00:00:00Z"]);
        let now = at("2024-01-01T00:00:00Z").timestamp;
        let policy = Policy { within: within("1d"), ..Policy::default() };
        assert_eq!(kept_indices(&apply(&snapshots, &policy, now)), [1, 0]);
    }

    #[test]
    fn huge_within_does_not_overflow() {
        let snapshots = times(&["-009000-01-01T00:00:00Z", "2025-01-01T00:00:00Z"]);
        let policy = Policy {
            within: Some(Within { years: i32::MAX, months: i32::MAX, days: i32::MAX, hours: i32::MAX }),
            ..Policy::default()
        };
        assert_eq!(kept_indices(&apply(&snapshots, &policy, later())), [1, 0]);
    }

    #[test]
    fn days_from_civil_matches_jiff() {
        let epoch = jiff::civil::date(1970, 1, 1);
        for (year, month, day) in
            [(1970, 1, 1), (2000, 2, 29), (2016, 1, 18), (1, 1, 1), (-7983, 3, 1), (-9999, 1, 1), (9999, 12, 31)]
        {
            let date = jiff::civil::date(year, month, day);
            let days = epoch.until(date).expect("span").get_days();
            assert_eq!(days_from_civil(year.into(), month.into(), day.into()), i64::from(days), "{date}");
        }
    }

    // --- counting rules ---------------------------------------------------------------------

    #[test]
    fn input_order_does_not_matter_and_ties_keep_input_order() {
        let snapshots =
            times(&["2025-01-02T00:00:00Z", "2025-01-03T00:00:00Z", "2025-01-03T00:00:00Z", "2025-01-01T00:00:00Z"]);
        let policy = Policy { last: 2, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        assert_eq!(kept_indices(&decision), [1, 2]);
        assert_eq!(decision.remove, [0, 3]);
    }

    #[test]
    fn unlimited_count_keeps_every_period_and_the_oldest() {
        let snapshots = times(&["2025-01-01T08:00:00Z", "2025-01-01T09:00:00Z", "2025-01-02T09:00:00Z"]);
        let policy = Policy { daily: -1, ..Policy::default() };
        let decision = apply(&snapshots, &policy, later());
        assert_eq!(kept_indices(&decision), [2, 1, 0]);
        assert_eq!(reasons(&decision)[2], ["oldest daily snapshot"]);
    }

    #[test]
    fn exhausted_count_does_not_keep_the_oldest() {
        let snapshots = times(&["2025-01-01T08:00:00Z", "2025-01-01T09:00:00Z"]);
        let policy = Policy { daily: 1, ..Policy::default() };
        assert_eq!(kept_indices(&apply(&snapshots, &policy, later())), [1]);
    }

    #[test]
    fn empty_policy_keeps_nothing_and_reports_empty() {
        let snapshots = times(&["2025-01-01T08:00:00Z"]);
        let policy = Policy { within: Some(Within::default()), ..Policy::default() };
        assert!(policy.is_empty(), "a zero duration is no rule");
        let decision = apply(&snapshots, &policy, later());
        assert!(decision.keep.is_empty());
        assert_eq!(decision.remove, [0]);
        assert!(!Policy { last: -1, ..Policy::default() }.is_empty());
    }

    #[test]
    fn no_snapshots_no_decision() {
        let policy = Policy { daily: 3, ..Policy::default() };
        assert_eq!(apply(&[], &policy, later()), Decision::default());
    }

    #[test]
    fn validate_rejects_what_restic_rejects() {
        let bad_count = Policy { weekly: -2, ..Policy::default() };
        assert_eq!(bad_count.validate(), Err(PolicyError::NegativeCount { rule: "weekly", value: -2 }));
        assert!(bad_count.is_empty(), "-2 keeps nothing, so callers refuse it");
        let bad_within = Policy { within_daily: Some(Within { days: -1, ..Within::default() }), ..Policy::default() };
        assert!(matches!(bad_within.validate(), Err(PolicyError::NegativeWithin { rule: "within-daily", .. })));
        let good = Policy { last: -1, daily: 7, within: within("1y"), ..Policy::default() };
        assert_eq!(good.validate(), Ok(()));
    }

    // --- tiers ------------------------------------------------------------------------------

    fn kept(reasons: &[&str]) -> Kept {
        Kept { index: 0, reasons: reasons.iter().map(|r| r.to_string()).collect() }
    }

    #[test]
    fn tier_is_the_finest_rule_that_keeps() {
        assert_eq!(tier_for(&kept(&["weekly snapshot"])), Tier::Weekly);
        assert_eq!(tier_for(&kept(&["monthly snapshot", "weekly within 1m"])), Tier::Weekly);
        assert_eq!(tier_for(&kept(&["last snapshot", "oldest yearly snapshot"])), Tier::Yearly);
        assert_eq!(tier_for(&kept(&["hourly within 1d"])), Tier::Hourly);
        assert_eq!(tier_for(&kept(&["within 1m", "last snapshot"])), Tier::Daily);
        assert!(Tier::Hourly < Tier::Daily && Tier::Monthly < Tier::Yearly);
        assert_eq!(Tier::Monthly.as_str(), "monthly");
    }

    #[test]
    fn decision_serializes_for_json_output() {
        let decision = Decision { keep: vec![kept(&["daily snapshot"])], remove: vec![1] };
        let json = serde_json::to_string(&decision).expect("json");
        assert_eq!(json, r#"{"keep":[{"index":0,"reasons":["daily snapshot"]}],"remove":[1]}"#);
        assert_eq!(serde_json::to_string(&Tier::Weekly).expect("json"), r#""weekly""#);
        let policy = Policy { within: within("1y2m"), ..Policy::default() };
        let json = serde_json::to_value(&policy).expect("json");
        assert_eq!(json["within"], "1y2m");
        assert_eq!(json["within_daily"], serde_json::Value::Null);
    }

    // --- Within text --------------------------------------------------------------------------

    #[test]
    fn within_parses_and_displays_restic_text() {
        let parsed = Within::parse("1y2m3d4h").expect("parse");
        let expected = Within { years: 1, months: 2, days: 3, hours: 4 };
        assert_eq!(parsed, expected);
        for (text, display) in [
            ("1m", "1m"),
            ("2y5m7d3h", "2y5m7d3h"),
            ("1y1d1m", "1y1m1d"),
            ("13d23h", "13d23h"),
            ("  7d ", "7d"),
            ("1d2d", "2d"),
            ("9999y", "9999y"),
            ("0d", ""),
            ("", ""),
        ] {
            assert_eq!(Within::parse(text).expect(text).to_string(), display);
        }
        assert!(Within::parse("0y").expect("zero").is_zero());
        assert_eq!("3h".parse::<Within>(), Within::parse("3h"));
    }

    #[test]
    fn within_rejects_bad_text() {
        let error = |text: &str| Within::parse(text).expect_err(text);
        assert!(matches!(error("5"), WithinParseError::NoUnit { number: 5, .. }));
        assert!(matches!(error("d"), WithinParseError::NoNumber { .. }));
        assert!(matches!(error("1d 2h"), WithinParseError::NoNumber { .. }));
        assert!(matches!(error("-"), WithinParseError::NoNumber { .. }));
        assert!(matches!(error("2w"), WithinParseError::InvalidUnit { unit: 'w', .. }));
        // `m` is months, so "5min" reads 5 months and then fails on "in".
        assert!(matches!(error("5min"), WithinParseError::NoNumber { .. }));
        assert!(matches!(error("5s"), WithinParseError::InvalidUnit { unit: 's', .. }));
        assert!(matches!(error("-1d"), WithinParseError::Negative { .. }));
        assert!(matches!(error("99999999999d"), WithinParseError::TooLarge { .. }));
        assert_eq!(
            error("3x").to_string(),
            "invalid duration \"3x\": invalid unit 'x' after number 3 (use y, m for months, d, h)"
        );
    }
}
