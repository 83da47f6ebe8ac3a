//! Readiness (DESIGN §4): for every rule that is not enforced yet, and every default-deny
//! scope in audit or warn, what the evidence says about enforcing it.
//!
//! Time in mode comes from the pack versions the store keeps (every load of every
//! version, with each rule's hash and mode). Evidence counts only what happened since
//! the rule last changed (its hash), so a rule fixed after a `legitimate` finding needs
//! new evidence before it is ready again. The verdict is the first that applies of
//! `erroring`, `noisy`, `needs_review`, `insufficient_evidence`, else `ready`; `reasons`
//! lists every one that applies, in plain words, and `overdue` flags a rule left in
//! audit too long. A rule whose condition errors can look perfectly quiet (no findings,
//! nothing to review): it never ran cleanly, so it is `erroring`, never `ready`.
//!
//! [`assess`] is the one place that gathers that history from a [`Store`]: the CLI's
//! `arbiter readiness`, its promotion gate and the server's `GET /v1/readiness` all call
//! it, at the `now` their caller's clock gives.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arbiter_core::Pack;
use arbiter_core::rule::{Mode, RuleRef};
use arbiter_store::{
    FindingFacts, PackLoad, PackVersion, RuleDay, RuleError, RuleVersion, Store, StoreError,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// The verdict on a rule or scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The evidence says enforcing it matches real behaviour.
    Ready,
    /// Its evaluation errored in scope of a decision since it last changed: it never ran
    /// cleanly, so its quiet says nothing.
    Erroring,
    /// Not long enough in its mode, or too little traffic since it last changed.
    InsufficientEvidence,
    /// Findings nobody has reviewed.
    NeedsReview,
    /// A finding was judged legitimate work since the rule last changed: enforcing it
    /// would break that work.
    Noisy,
}

impl Verdict {
    /// The word as it appears in both outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::Erroring => "erroring",
            Verdict::InsufficientEvidence => "insufficient_evidence",
            Verdict::NeedsReview => "needs_review",
            Verdict::Noisy => "noisy",
        }
    }
}

/// The readiness of one rule or scope, in DESIGN §4's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// The rule id, or `default-deny:<Type>`.
    pub rule: String,
    /// Its mode now (`audit` or `warn`).
    pub mode: Mode,
    /// The verdict.
    pub verdict: Verdict,
    /// Past `@audit_until`, or longer in audit or warn than `[readiness] max_audit_days`.
    pub overdue: bool,
    /// Every reason that applies, in plain words.
    pub reasons: Vec<String>,
    /// What the verdict was drawn from.
    pub evidence: Evidence,
}

/// The numbers behind a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// When the rule entered its current mode (first load of the run of versions in
    /// which it has had this mode); `None` when no server ever loaded it so.
    pub in_mode_since: Option<Timestamp>,
    /// Whole days in the current mode.
    pub days_in_mode: i64,
    /// When its current text was first loaded: evidence counts from here.
    pub last_changed: Option<Timestamp>,
    /// Decisions it was in scope of since it last changed.
    pub evaluations: u64,
    /// Distinct UTC days with such decisions.
    pub days_with_traffic: u64,
    /// The first and last of them.
    pub traffic_first: Option<Timestamp>,
    /// The last in-scope decision.
    pub traffic_last: Option<Timestamp>,
    /// Whether that traffic spans at least one `[readiness] cycle`.
    pub spans_cycle: bool,
    /// How often it would have fired (audit or warn) since it last changed.
    pub would_fire: u64,
    /// Distinct principals it would have fired for since it last changed.
    pub distinct_principals: u64,
    /// Findings since it last changed, by status.
    pub open_findings: u64,
    /// Findings reviewed `expected`.
    pub expected_findings: u64,
    /// Findings reviewed `legitimate`.
    pub legitimate_findings: u64,
    /// Firings, in its findings since it last changed, of decisions that were allowed:
    /// the ones enforcing it would have changed.
    pub decisive: u64,
    /// Days since the oldest unreviewed finding was first seen.
    pub oldest_open_finding_days: Option<i64>,
    /// Evaluation errors since it last changed.
    pub errors: u64,
    /// The first of them, when the log kept it (errors logged before store version 5
    /// are counted, not kept).
    pub first_error: Option<FirstError>,
    /// `@audit_until`, when the rule has one.
    pub audit_until: Option<String>,
}

/// The first evaluation error of a rule since it last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirstError {
    /// When.
    pub at: Timestamp,
    /// The decision it happened in.
    pub decision_id: String,
    /// Cedar's message.
    pub message: String,
}

/// What the store holds that readiness reads.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// Every pack version, with its rules' hashes and modes.
    pub versions: &'a [PackVersion],
    /// Every load of a version, oldest first.
    pub loads: &'a [PackLoad],
    /// Per rule, day and version: evaluations, firings, errors.
    pub days: &'a [RuleDay],
    /// Every finding's facts: rule, principal, status, counts.
    pub findings: &'a [FindingFacts],
    /// The first evaluation error of each rule under each pack version.
    pub errors: &'a [RuleError],
}

/// What the store holds that readiness reads, read once.
#[derive(Debug, Clone)]
pub struct Recorded {
    versions: Vec<PackVersion>,
    loads: Vec<PackLoad>,
    days: Vec<RuleDay>,
    findings: Vec<FindingFacts>,
    errors: Vec<RuleError>,
}

impl Recorded {
    /// Reads it from `store`: everything, or only `only`'s days, findings and errors.
    pub fn read(store: &Store, only: Option<&str>) -> Result<Recorded, StoreError> {
        Ok(Recorded {
            versions: store.pack_versions()?,
            loads: store.pack_loads()?,
            days: store.rule_days(only)?,
            findings: store.finding_facts(only)?,
            errors: store.rule_errors(only)?,
        })
    }

    /// A view of it.
    pub fn history(&self) -> History<'_> {
        History {
            versions: &self.versions,
            loads: &self.loads,
            days: &self.days,
            findings: &self.findings,
            errors: &self.errors,
        }
    }
}

/// The order rules are listed in wherever someone must act on them (`arbiter readiness`,
/// the dashboard): what no one is looking at first (overdue, then erroring, unreviewed
/// findings, noisy), then by name. `verdict` is `None` for an enforced rule.
pub fn attention(
    overdue: bool,
    verdict: Option<Verdict>,
    rule: &str,
) -> (bool, bool, bool, bool, bool, &str) {
    (
        !overdue,
        verdict.is_none(),
        verdict != Some(Verdict::Erroring),
        verdict != Some(Verdict::NeedsReview),
        verdict != Some(Verdict::Noisy),
        rule,
    )
}

/// The `kind` default-deny scopes have in pack versions.
pub const SCOPE_KIND: &str = arbiter_store::SCOPE_KIND;

/// Whether the pack has a rule with this id, or a default-deny scope with this name
/// (`default-deny:<PrincipalType>`). A name that is in the pack but has no readiness is
/// enforced, or a permit.
pub fn in_pack(pack: &Pack, name: &str) -> bool {
    match RuleRef::parse(name) {
        RuleRef::Rule(id) => pack.rule(&id).is_some(),
        RuleRef::DefaultDeny(ty) => pack.default_deny_scopes().contains_key(&ty),
    }
}

/// Readiness of every non-enforced rule and scope of `pack` (or only `only`) at `now`,
/// from the evidence in `store`: its pack versions and loads, its per-day counts and its
/// findings (only `only`'s, when given).
pub fn assess(
    pack: &Pack,
    store: &Store,
    only: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Readiness>, StoreError> {
    let recorded = Recorded::read(store, only)?;
    let history = recorded.history();
    Ok(readiness(pack, history, now, only))
}

/// Readiness of every non-enforced rule and scope of `pack` (or only `only`), at `now`.
pub fn readiness(
    pack: &Pack,
    history: History<'_>,
    now: Timestamp,
    only: Option<&str>,
) -> Vec<Readiness> {
    let current = PackVersion::of(pack, now);
    let config = &pack.config().readiness;
    current
        .rules
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.id))
        .filter_map(|r| {
            let mode = r.mode.as_deref().and_then(Mode::from_word)?;
            (mode != Mode::Enforce).then_some((r, mode))
        })
        .map(|(rule, mode)| {
            let audit_until = pack.rule(&rule.id).and_then(|r| r.audit_until);
            one(rule, mode, audit_until, history, config, now)
        })
        .collect()
}

/// The evidence of every forbid and default-deny scope of `pack`, enforced ones too, at
/// `now`, in the pack's order: what a report shows beside each rule. For an enforced rule
/// the verdict says nothing (nothing is left to promote); its evidence and time in mode
/// still do.
pub fn evidence_of_all(pack: &Pack, history: History<'_>, now: Timestamp) -> Vec<Readiness> {
    let current = PackVersion::of(pack, now);
    let config = &pack.config().readiness;
    current
        .rules
        .iter()
        .filter_map(|r| Some((r, r.mode.as_deref().and_then(Mode::from_word)?)))
        .map(|(rule, mode)| {
            let audit_until = pack.rule(&rule.id).and_then(|r| r.audit_until);
            one(rule, mode, audit_until, history, config, now)
        })
        .collect()
}

fn one(
    rule: &RuleVersion,
    mode: Mode,
    audit_until: Option<jiff::civil::Date>,
    history: History<'_>,
    config: &arbiter_core::config::Readiness,
    now: Timestamp,
) -> Readiness {
    let timeline = Timeline::of(&rule.id, history);
    let in_mode_since = timeline.since(|r| r.mode.as_deref() == Some(mode.as_str()));
    let last_changed = timeline.since(|r| r.hash == rule.hash);
    let versions = timeline.versions_with(|r| r.hash == rule.hash);
    let days_in_mode = in_mode_since.map_or(0, |t| whole_days(now.duration_since(t)));

    let days: Vec<&RuleDay> = history
        .days
        .iter()
        .filter(|d| d.rule == rule.id && versions.contains(d.policy_version.as_str()))
        .filter(|d| last_changed.is_some_and(|c| d.last >= c))
        .collect();
    let evaluations: u64 = days.iter().map(|d| d.evaluations).sum();
    let would_fire: u64 = days.iter().map(|d| d.fired).sum();
    let errors: u64 = days.iter().map(|d| d.errors).sum();
    let first_error = history
        .errors
        .iter()
        .filter(|e| e.rule == rule.id && versions.contains(e.policy_version.as_str()))
        .filter(|e| last_changed.is_some_and(|c| e.first >= c))
        .min_by_key(|e| e.first)
        .map(|e| FirstError {
            at: e.first,
            decision_id: e.decision_id.clone(),
            message: e.message.clone(),
        });
    let days_with_traffic = days
        .iter()
        .filter(|d| d.evaluations > 0)
        .map(|d| d.day)
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let traffic_first = days.iter().map(|d| d.first).min();
    let traffic_last = days.iter().map(|d| d.last).max();
    let cycle =
        SignedDuration::from_secs(i64::try_from(config.cycle.seconds()).unwrap_or(i64::MAX));
    let spans_cycle = match (traffic_first, traffic_last) {
        (Some(first), Some(last)) => last.duration_since(first) >= cycle,
        _ => false,
    };

    // Findings that fired since the rule last changed: a review given later of firings
    // from before the change judges the old rule, not this one.
    let findings: Vec<&FindingFacts> = history
        .findings
        .iter()
        .filter(|f| *f.rule == *rule.id)
        .filter(|f| last_changed.is_some_and(|c| f.last_seen >= c))
        .collect();
    let with_status = |s: &str| findings.iter().filter(|f| f.status == s).count() as u64;
    let open_findings = with_status("open");
    let expected_findings = with_status("expected");
    let legitimate_findings = with_status("legitimate");
    let distinct_principals = findings
        .iter()
        .map(|f| &*f.principal)
        .collect::<HashSet<_>>()
        .len() as u64;
    let decisive = findings.iter().map(|f| f.decisive).sum();
    let oldest_open_finding_days = findings
        .iter()
        .filter(|f| f.status == "open")
        .map(|f| whole_days(now.duration_since(f.first_seen)))
        .max();

    let mut reasons = Vec::new();
    let mut verdicts = HashSet::new();
    if errors > 0 {
        verdicts.insert(Verdict::Erroring);
        let first = match &first_error {
            Some(e) => format!(
                "; the first, at {} (decision {}): {}",
                e.at, e.decision_id, e.message
            ),
            None => String::new(),
        };
        reasons.push(format!(
            "{errors} evaluation error(s) in scope since the rule last changed: it never ran \
             cleanly, so its evidence shows nothing (fix the condition, then gather new \
             evidence){first}"
        ));
    }
    if legitimate_findings > 0 {
        verdicts.insert(Verdict::Noisy);
        reasons.push(format!(
            "{legitimate_findings} finding(s) reviewed as legitimate work since the rule last \
             changed: enforcing it would break them (change the rule, then gather new evidence)"
        ));
    }
    if open_findings > 0 {
        verdicts.insert(Verdict::NeedsReview);
        let age = oldest_open_finding_days.unwrap_or(0);
        reasons.push(format!(
            "{open_findings} finding(s) nobody has reviewed, the oldest first seen {age} day(s) ago"
        ));
    }
    match in_mode_since {
        None => {
            verdicts.insert(Verdict::InsufficientEvidence);
            reasons.push(format!(
                "the last pack a server loaded does not have this rule in {} as it is now: \
                 there is no evidence for it yet",
                mode.as_str()
            ));
        }
        Some(_) if days_in_mode < i64::from(config.min_days) => {
            verdicts.insert(Verdict::InsufficientEvidence);
            reasons.push(format!(
                "in {} for {days_in_mode} day(s), fewer than the {} required",
                mode.as_str(),
                config.min_days
            ));
        }
        Some(_) => {}
    }
    if in_mode_since.is_some() {
        if evaluations == 0 {
            verdicts.insert(Verdict::InsufficientEvidence);
            reasons.push(
                "no decision has been in its scope since it last changed: nothing shows what \
                 enforcing it would do"
                    .to_owned(),
            );
        } else if !spans_cycle {
            verdicts.insert(Verdict::InsufficientEvidence);
            reasons.push(format!(
                "its traffic since it last changed spans less than one {} cycle",
                config.cycle
            ));
        }
    }
    // DESIGN §2: `@audit_until` defaults to `max_audit_days` after the rule was first
    // seen (the first load of the unbroken run in which the pack has had it).
    let first_seen = timeline.since(|_| true);
    let days_seen = first_seen.map_or(0, |t| whole_days(now.duration_since(t)));
    let past_until =
        audit_until.filter(|until| jiff::tz::TimeZone::UTC.to_datetime(now).date() > *until);
    let overdue = past_until.is_some() || days_seen > i64::from(config.max_audit_days);
    if let Some(until) = past_until {
        reasons.push(format!("overdue: past its @audit_until ({until})"));
    } else if overdue {
        reasons.push(format!(
            "overdue: not enforced {days_seen} day(s) after it was first seen, longer than \
             max_audit_days = {}",
            config.max_audit_days
        ));
    }
    let verdict = [
        Verdict::Erroring,
        Verdict::Noisy,
        Verdict::NeedsReview,
        Verdict::InsufficientEvidence,
    ]
    .into_iter()
    .find(|v| verdicts.contains(v))
    .unwrap_or(Verdict::Ready);
    if verdict == Verdict::Ready {
        let fired = if would_fire == 0 {
            "it never would have fired".to_owned()
        } else {
            format!("it would have fired {would_fire} time(s), every finding reviewed as expected")
        };
        reasons.insert(
            0,
            format!("{evaluations} in-scope decision(s) over {days_with_traffic} day(s); {fired}"),
        );
    }
    Readiness {
        rule: rule.id.clone(),
        mode,
        verdict,
        overdue,
        reasons,
        evidence: Evidence {
            in_mode_since,
            days_in_mode,
            last_changed,
            evaluations,
            days_with_traffic,
            traffic_first,
            traffic_last,
            spans_cycle,
            would_fire,
            distinct_principals,
            open_findings,
            expected_findings,
            legitimate_findings,
            decisive,
            oldest_open_finding_days,
            errors,
            first_error,
            audit_until: audit_until.map(|d| d.to_string()),
        },
    }
}

fn whole_days(d: SignedDuration) -> i64 {
    d.as_secs().div_euclid(86_400).max(0)
}

/// One rule's history: for each load, in order, the rule as that version had it.
struct Timeline<'a> {
    loads: Vec<(Timestamp, &'a str, Option<&'a RuleVersion>)>,
}

impl<'a> Timeline<'a> {
    fn of(id: &str, history: History<'a>) -> Timeline<'a> {
        let by_version: BTreeMap<&str, &PackVersion> = history
            .versions
            .iter()
            .map(|v| (v.version.as_str(), v))
            .collect();
        let loads = history
            .loads
            .iter()
            .map(|load| {
                let rule = by_version
                    .get(load.version.as_str())
                    .and_then(|v| v.rules.iter().find(|r| r.id == id));
                (load.loaded_at, load.version.as_str(), rule)
            })
            .collect();
        Timeline { loads }
    }

    /// The first load of the latest unbroken run of loads where the rule satisfies `is`
    /// (the run must reach the last load: a rule that is not so now has no such time).
    fn since(&self, is: impl Fn(&RuleVersion) -> bool) -> Option<Timestamp> {
        let mut since = None;
        for (at, _, rule) in &self.loads {
            match rule {
                Some(r) if is(r) => {
                    since.get_or_insert(*at);
                }
                _ => since = None,
            }
        }
        since
    }

    /// The versions in which the rule satisfies `is`.
    fn versions_with(&self, is: impl Fn(&RuleVersion) -> bool) -> HashSet<&'a str> {
        self.loads
            .iter()
            .filter(|(_, _, r)| r.is_some_and(&is))
            .map(|(_, v, _)| *v)
            .collect()
    }
}
