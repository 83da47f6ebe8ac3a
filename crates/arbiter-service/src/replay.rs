//! Replay (DESIGN §4): a logged request decided again by a candidate pack, through the
//! same engine as `serve`, with time, sessions and throttles re-simulated from the
//! logged times, and compared with what was logged ([`replay_window`]), or two packs
//! compared on the same logged requests ([`drift_window`], for `arbiter diff`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arbiter_core::clock::{Clock, ManualClock};
use arbiter_core::credential::{
    CredentialFailure, CredentialVerifier, Revoked, VerifiedCredential,
};
use arbiter_core::response::Outcome;
use arbiter_core::state::Baseline;
use arbiter_core::{Decision, DecisionRequest, Engine, Pack, RequestError, TimeSource};
use arbiter_store::{
    DecisionRecord, Logged, LoggedCredential, MASK_PREFIX, Store, StoreError, StoredDecision,
};
use serde_json::Value;

/// How a replayed decision compares with the logged one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The same outcome, the same deciding rules and effect.
    Same,
    /// Allowed when logged, denied (or throttled) now.
    Breaks,
    /// Denied when logged, allowed now.
    Loosens,
    /// The same outcome, decided by other rules or with another effect.
    Shifts,
    /// Logged as invalid, and the candidate's schema accepts it now.
    NowValid,
    /// Decided when logged, and the candidate refuses the request now.
    NowInvalid(String),
    /// The candidate's answer may depend on a value the log holds only masked: it is not
    /// replayed faithfully, and not guessed at. Names the masked path.
    Unreplayable(String),
}

/// One logged request, replayed.
#[derive(Debug)]
pub struct Replayed {
    /// The logged decision's id.
    pub decision_id: String,
    /// How it compares.
    pub change: Change,
    /// The candidate's answer.
    pub answer: Result<Decision, RequestError>,
}

/// A candidate pack, deciding logged requests in logged order.
#[derive(Debug)]
pub struct Replay {
    engine: Engine,
    /// The candidate's policy text, read once: which masked paths it names.
    policy_text: String,
    clock: Arc<ManualClock>,
    credentials: Arc<LoggedCredentials>,
    baseline: Arc<LoggedBaseline>,
}

impl Replay {
    /// A replay of `candidate`, with fresh sessions and throttles: start it at the
    /// beginning of the window replayed.
    pub fn new(candidate: Arc<Pack>) -> Replay {
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH));
        let credentials = Arc::new(LoggedCredentials::default());
        let baseline = Arc::new(LoggedBaseline::default());
        let engine = Engine::new(candidate)
            .with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .with_time_source(TimeSource::ClockOnly)
            .with_credentials(Arc::clone(&credentials) as Arc<dyn CredentialVerifier>)
            .with_baseline(Arc::clone(&baseline) as Arc<dyn Baseline>);
        let policy_text = engine.pack().policies().to_string();
        Replay {
            engine,
            policy_text,
            clock,
            credentials,
            baseline,
        }
    }

    /// The candidate pack.
    pub fn pack(&self) -> &Arc<Pack> {
        self.engine.pack()
    }

    /// Decides `record`'s request again, at its logged time, with the credential it
    /// presented as the log says it verified, and compares.
    pub fn replay(&self, record: &DecisionRecord) -> Replayed {
        let answer = self.decide_at(record, &record.request);
        let change = match (
            &answer,
            masked_path_read(&self.policy_text, &record.request),
        ) {
            (Ok(_), Some(path)) => Change::Unreplayable(path),
            (Ok(decision), None) => compare(record, decision),
            (Err(_), _) if record.decision == Logged::Invalid => Change::Same,
            (Err(error), _) => Change::NowInvalid(error.code().to_owned()),
        };
        Replayed {
            decision_id: record.decision_id.clone(),
            change,
            answer,
        }
    }

    /// Decides a live decision again, in shadow: `request` is the request as it came
    /// (before `[log] mask`, so nothing is unreplayable), `record` the decision answered
    /// and logged. At the decision's time, with its credential as it verified, and its
    /// pair novel or not as it was.
    pub fn shadow(&self, record: &DecisionRecord, request: &Value) -> Replayed {
        let answer = self.decide_at(record, request);
        let change = match &answer {
            Ok(decision) => compare(record, decision),
            Err(_) if record.decision == Logged::Invalid => Change::Same,
            Err(error) => Change::NowInvalid(error.code().to_owned()),
        };
        Replayed {
            decision_id: record.decision_id.clone(),
            change,
            answer,
        }
    }

    /// The candidate's answer to `request`, in `record`'s circumstances.
    fn decide_at(
        &self,
        record: &DecisionRecord,
        request: &Value,
    ) -> Result<Decision, RequestError> {
        self.clock.set(record.time);
        self.credentials.present(record);
        self.baseline.present(record);
        DecisionRequest::from_value(request).and_then(|request| self.engine.decide(&request))
    }
}

/// How `decision` compares with the logged `record`.
pub fn compare(record: &DecisionRecord, decision: &Decision) -> Change {
    let before = match record.decision {
        Logged::Allow => Some(Outcome::Allow),
        Logged::Deny => Some(Outcome::Deny),
        Logged::Invalid => None,
    };
    judged(before, record.effect, &record.enforced, decision)
}

/// How `now` compares with an earlier answer: its outcome (`None`: the request was
/// invalid), effect and deciding rules.
fn judged(
    before: Option<Outcome>,
    effect: Option<arbiter_core::rule::Effect>,
    enforced: &[arbiter_core::rule::RuleRef],
    now: &Decision,
) -> Change {
    match (before, now.decision) {
        (None, _) => Change::NowValid,
        (Some(Outcome::Allow), Outcome::Deny) => Change::Breaks,
        (Some(Outcome::Deny), Outcome::Allow) => Change::Loosens,
        _ if effect != now.effect || enforced != now.enforced.as_slice() => Change::Shifts,
        _ => Change::Same,
    }
}

/// How HEAD's answer to a logged request compares with BASE's answer to it today.
fn between(base: &Replayed, head: &Replayed) -> Change {
    for replayed in [head, base] {
        if let Change::Unreplayable(path) = &replayed.change {
            return Change::Unreplayable(path.clone());
        }
    }
    match (&base.answer, &head.answer) {
        (Ok(b), Ok(h)) => judged(Some(b.decision), b.effect, &b.enforced, h),
        (Err(_), Err(_)) => Change::Same,
        (Err(_), Ok(_)) => Change::NowValid,
        (Ok(_), Err(error)) => Change::NowInvalid(error.code().to_owned()),
    }
}

/// The first masked value of the request whose path a policy of the pack names: the
/// candidate may read it, and the log only has its hash.
fn masked_path_read(policies: &str, request: &Value) -> Option<String> {
    let mut masked = Vec::new();
    collect_masked(request, String::new(), &mut masked);
    if masked.is_empty() {
        return None;
    }
    masked
        .into_iter()
        .find(|path| policies.contains(path.as_str()))
}

fn collect_masked(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::String(text) if text.starts_with(MASK_PREFIX) => out.push(path),
        Value::Object(map) => {
            for (key, value) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect_masked(value, child, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_masked(item, path.clone(), out);
            }
        }
        _ => {}
    }
}

/// The verifier of a replay: a presented credential verifies as the log says it did
/// (its claims), or fails as it failed then. Tokens are never in the log, so they are
/// never verified again.
///
/// What the candidate revokes (a `revoke` effect: the presenting token, its session) is
/// kept for the rest of the replay, so a later request presenting that token fails as
/// `credential:revoked`, as it would have live under the candidate. Nothing is revoked
/// outside the replay. The converse cannot be replayed: a token the pack in force (or an
/// operator) revoked was logged as failing, and still fails.
#[derive(Debug, Default)]
struct LoggedCredentials {
    current: Mutex<Option<Result<VerifiedCredential, CredentialFailure>>>,
    revoked: Mutex<Revocations>,
}

/// What the candidate revoked so far in this replay.
#[derive(Debug, Default)]
struct Revocations {
    tokens: std::collections::HashSet<String>,
    /// Per principal, the cut-off: its tokens issued earlier are revoked.
    principals: std::collections::HashMap<String, jiff::Timestamp>,
    /// `(principal, id)`; `None` for every principal.
    sessions: std::collections::HashSet<(Option<String>, String)>,
}

impl Revocations {
    fn revokes(&self, credential: &VerifiedCredential) -> bool {
        self.tokens.contains(&credential.jti)
            || self
                .principals
                .get(&credential.principal.to_string())
                .is_some_and(|before| credential.issued_at < *before)
    }
}

impl LoggedCredentials {
    fn present(&self, record: &DecisionRecord) {
        let outcome = match &record.credential {
            Some(claims) => verified(claims),
            None => Err(record
                .reason
                .as_deref()
                .and_then(|r| r.strip_prefix("credential:"))
                .and_then(CredentialFailure::from_word)
                .unwrap_or(CredentialFailure::Malformed)),
        };
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

fn verified(claims: &LoggedCredential) -> Result<VerifiedCredential, CredentialFailure> {
    Ok(VerifiedCredential {
        jti: claims.jti.clone(),
        issuer: claims.issuer.clone(),
        principal: claims
            .principal
            .parse()
            .map_err(|_| CredentialFailure::Malformed)?,
        intent: claims.intent.clone(),
        session: claims.session.clone(),
        issued_at: claims.issued_at,
        expires_at: claims.expires_at,
        attributes: claims.attributes.clone(),
    })
}

/// The baseline of a replay: a (principal, action) pair is `novel` as the log says it was
/// when decided, and a replay adds no pair to any baseline.
#[derive(Debug, Default)]
struct LoggedBaseline {
    novel: Mutex<Option<bool>>,
}

impl LoggedBaseline {
    fn present(&self, record: &DecisionRecord) {
        *self.novel.lock().unwrap_or_else(PoisonError::into_inner) = record.novel;
    }

    fn current(&self) -> Option<bool> {
        *self.novel.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Baseline for LoggedBaseline {
    fn is_frozen(&self) -> bool {
        self.current().is_some()
    }

    fn novel(&self, _principal: &str, _action: &str) -> Option<bool> {
        self.current()
    }

    fn seen(&self, _principal: &str, _action: &str) {}
}

impl CredentialVerifier for LoggedCredentials {
    fn verify(
        &self,
        _token: &str,
        _now: jiff::Timestamp,
    ) -> Result<VerifiedCredential, CredentialFailure> {
        let presented = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or(Err(CredentialFailure::Malformed))?;
        let revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        if revoked.revokes(&presented) {
            return Err(CredentialFailure::Revoked);
        }
        Ok(presented)
    }

    fn revoke(&self, revoked: &Revoked) {
        let mut kept = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        match revoked {
            Revoked::Jti(jti) => {
                kept.tokens.insert(jti.clone());
            }
            Revoked::Principal { principal, before } => {
                let cut = kept.principals.entry(principal.clone()).or_insert(*before);
                *cut = (*cut).max(*before);
            }
            Revoked::Session { principal, id } => {
                kept.sessions.insert((principal.clone(), id.clone()));
            }
        }
    }

    fn session_revoked(&self, principal: &str, id: &str) -> bool {
        let kept = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        kept.sessions
            .iter()
            .any(|(p, i)| i == id && p.as_deref().is_none_or(|p| p == principal))
    }
}

/// What a replay of a window found, grouped for people and for machines.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Records replayed.
    pub replayed: u64,
    /// The walk was stopped (Ctrl-C) before the window's end: the report covers the
    /// records replayed until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// How many of each kind of change.
    pub changes: Counts,
    /// Per rule: the candidate's deciding rule of a break or shift, the logged one of a
    /// loosen; most changes first.
    pub by_rule: Vec<Group>,
    /// Per principal, most changes first.
    pub by_principal: Vec<Group>,
    /// Per masked path the candidate reads: requests not replayed faithfully.
    pub unreplayable: Vec<Group>,
    /// Per rule of the candidate: how often it fired on the window, how often decisively
    /// (the candidate's decision is a deny it is among the reasons for), and for how
    /// many principals. For a new rule, a backtest.
    pub rules: Vec<RuleFirings>,
    #[serde(skip)]
    examples: usize,
    #[serde(skip)]
    principals: std::collections::HashMap<String, std::collections::HashSet<String>>,
    /// Where each key is in `rules`, `by_rule`, `by_principal` and `unreplayable`: a log
    /// of many principals and rules is grouped in time linear in its length.
    #[serde(skip)]
    index: Index,
}

/// Positions of keys in a report's lists.
#[derive(Debug, Default)]
struct Index {
    rules: std::collections::HashMap<String, usize>,
    by_rule: std::collections::HashMap<String, usize>,
    by_principal: std::collections::HashMap<String, usize>,
    unreplayable: std::collections::HashMap<String, usize>,
}

/// How many of each kind of change.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Unchanged.
    pub same: u64,
    /// allow → deny.
    pub breaks: u64,
    /// deny → allow.
    pub loosens: u64,
    /// Same outcome, other deciding rules or effect.
    pub shifts: u64,
    /// Invalid then, valid now.
    pub now_valid: u64,
    /// Valid then, invalid now.
    pub now_invalid: u64,
    /// Depends on a masked value.
    pub unreplayable: u64,
}

/// The changes of one rule, principal or masked path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    /// The rule, principal or path.
    pub key: String,
    /// Its changes.
    pub changes: Counts,
    /// Up to the report's number of example decision ids.
    pub examples: Vec<String>,
}

/// How a candidate rule fired on the window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleFirings {
    /// The rule, or a default-deny scope.
    pub rule: String,
    /// Times it fired, in any mode.
    pub fired: u64,
    /// Times it was among the reasons of a deny.
    pub decisive: u64,
    /// Distinct principals it fired for.
    pub principals: u64,
}

impl Counts {
    fn add(&mut self, change: &Change) {
        let slot = match change {
            Change::Same => &mut self.same,
            Change::Breaks => &mut self.breaks,
            Change::Loosens => &mut self.loosens,
            Change::Shifts => &mut self.shifts,
            Change::NowValid => &mut self.now_valid,
            Change::NowInvalid(_) => &mut self.now_invalid,
            Change::Unreplayable(_) => &mut self.unreplayable,
        };
        *slot += 1;
    }

    fn differences(&self) -> u64 {
        self.breaks + self.loosens + self.shifts + self.now_valid + self.now_invalid
    }
}

/// What `--fail-on` gates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// Any allow → deny.
    Breaks,
    /// Any deny → allow.
    Loosens,
    /// Any difference at all (unreplayable records are not differences).
    Any,
}

impl Report {
    /// An empty report keeping up to `examples` decision ids per group.
    pub fn new(examples: usize) -> Report {
        Report {
            examples,
            ..Report::default()
        }
    }

    /// Adds one replayed record, compared with what was logged.
    pub fn add(&mut self, record: &DecisionRecord, replayed: &Replayed) {
        self.add_against(record, &record.enforced, replayed);
    }

    /// Adds one replayed record, compared with an answer whose deciding rules were
    /// `before` (a loosen is grouped under them).
    fn add_against(
        &mut self,
        record: &DecisionRecord,
        before: &[arbiter_core::rule::RuleRef],
        replayed: &Replayed,
    ) {
        self.replayed += 1;
        self.changes.add(&replayed.change);
        if let Ok(decision) = &replayed.answer {
            let principal = record.principal.clone().unwrap_or_default();
            let fired = decision
                .enforced
                .iter()
                .chain(decision.warnings.iter().map(|w| &w.rule))
                .chain(decision.audit.iter().map(|a| &a.rule));
            for rule in fired {
                let key = rule.to_string();
                let decisive =
                    decision.decision == Outcome::Deny && decision.enforced.contains(rule);
                let rules = &mut self.rules;
                let position = *self.index.rules.entry(key.clone()).or_insert_with(|| {
                    rules.push(RuleFirings {
                        rule: key.clone(),
                        fired: 0,
                        decisive: 0,
                        principals: 0,
                    });
                    rules.len() - 1
                });
                let entry = self.rules.get_mut(position);
                if let Some(entry) = entry {
                    entry.fired += 1;
                    entry.decisive += u64::from(decisive);
                    let seen = self.principals.entry(key).or_default();
                    if seen.insert(principal.clone()) {
                        entry.principals += 1;
                    }
                }
            }
        }
        let rules: Vec<String> = match (&replayed.change, &replayed.answer) {
            (Change::Same, _) => return,
            (Change::Unreplayable(path), _) => {
                let examples = self.examples;
                group(
                    (&mut self.unreplayable, &mut self.index.unreplayable),
                    path,
                    &replayed.change,
                    &record.decision_id,
                    examples,
                );
                return;
            }
            (Change::Loosens, _) => before.iter().map(ToString::to_string).collect(),
            (_, Ok(decision)) => decision.enforced.iter().map(ToString::to_string).collect(),
            (_, Err(error)) => vec![format!("invalid:{}", error.code())],
        };
        let examples = self.examples;
        for rule in rules {
            group(
                (&mut self.by_rule, &mut self.index.by_rule),
                &rule,
                &replayed.change,
                &record.decision_id,
                examples,
            );
        }
        if let Some(principal) = &record.principal {
            group(
                (&mut self.by_principal, &mut self.index.by_principal),
                principal,
                &replayed.change,
                &record.decision_id,
                examples,
            );
        }
    }

    /// Most changes first, then by name: the order people read and machines diff.
    pub fn finish(&mut self) {
        for groups in [
            &mut self.by_rule,
            &mut self.by_principal,
            &mut self.unreplayable,
        ] {
            groups.sort_by(|a, b| {
                (b.changes.differences() + b.changes.unreplayable)
                    .cmp(&(a.changes.differences() + a.changes.unreplayable))
                    .then_with(|| a.key.cmp(&b.key))
            });
        }
        self.rules
            .sort_by(|a, b| b.fired.cmp(&a.fired).then_with(|| a.rule.cmp(&b.rule)));
        // The positions no longer hold once sorted; a finished report takes no more.
        self.index = Index::default();
    }

    /// Whether what `fail_on` names happened.
    pub fn fails(&self, fail_on: FailOn) -> bool {
        match fail_on {
            FailOn::Breaks => self.changes.breaks > 0,
            FailOn::Loosens => self.changes.loosens > 0,
            FailOn::Any => self.changes.differences() > 0,
        }
    }
}

fn group(
    (groups, index): (
        &mut Vec<Group>,
        &mut std::collections::HashMap<String, usize>,
    ),
    key: &str,
    change: &Change,
    id: &str,
    examples: usize,
) {
    let position = match index.get(key) {
        Some(i) => *i,
        None => {
            groups.push(Group {
                key: key.to_owned(),
                changes: Counts::default(),
                examples: Vec::new(),
            });
            index.insert(key.to_owned(), groups.len() - 1);
            groups.len() - 1
        }
    };
    if let Some(group) = groups.get_mut(position) {
        group.changes.add(change);
        if group.examples.len() < examples {
            group.examples.push(id.to_owned());
        }
    }
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        self.same += other.same;
        self.breaks += other.breaks;
        self.loosens += other.loosens;
        self.shifts += other.shifts;
        self.now_valid += other.now_valid;
        self.now_invalid += other.now_invalid;
        self.unreplayable += other.unreplayable;
    }
}

impl Report {
    /// Adds what another report of the same window found (for another set of
    /// principals). Examples stay the first ones in log order.
    fn merge(&mut self, other: Report) {
        self.replayed += other.replayed;
        self.changes.merge(&other.changes);
        let examples = self.examples;
        for (mine, index, theirs) in [
            (&mut self.by_rule, &mut self.index.by_rule, other.by_rule),
            (
                &mut self.by_principal,
                &mut self.index.by_principal,
                other.by_principal,
            ),
            (
                &mut self.unreplayable,
                &mut self.index.unreplayable,
                other.unreplayable,
            ),
        ] {
            for group in theirs {
                match index.get(&group.key).and_then(|i| mine.get_mut(*i)) {
                    Some(g) => {
                        g.changes.merge(&group.changes);
                        g.examples.extend(group.examples);
                        g.examples.sort();
                        g.examples.truncate(examples);
                    }
                    None => {
                        index.insert(group.key.clone(), mine.len());
                        mine.push(group);
                    }
                }
            }
        }
        for (rule, principals) in other.principals {
            self.principals.entry(rule).or_default().extend(principals);
        }
        for firing in other.rules {
            match self
                .index
                .rules
                .get(&firing.rule)
                .and_then(|i| self.rules.get_mut(*i))
            {
                Some(r) => {
                    r.fired += firing.fired;
                    r.decisive += firing.decisive;
                }
                None => {
                    self.index
                        .rules
                        .insert(firing.rule.clone(), self.rules.len());
                    self.rules.push(firing);
                }
            }
        }
        for r in &mut self.rules {
            r.principals = self.principals.get(&r.rule).map_or(0, |p| p.len() as u64);
        }
    }
}

/// The window of the log a replay covers.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Decisions at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Decisions before this time.
    pub until: Option<jiff::Timestamp>,
    /// Only this principal's decisions.
    pub principal: Option<String>,
}

/// Records a worker is handed at a time: a hand-over per record woke a worker per
/// record, and the waking cost more than a replay.
const BATCH: usize = 256;

/// Batches queued per worker: with [`BATCH`], the records in memory at once are bounded
/// by `workers × (QUEUED + 2) × BATCH`, whatever the log's size.
const QUEUED: usize = 8;

/// How a walk of the log is run: on how many threads, what stops it, and who hears how
/// far it got.
pub struct Walk<'a> {
    /// Worker threads (at least one).
    pub workers: usize,
    /// Set (by a Ctrl-C handler) to stop the walk early; the report then covers what was
    /// replayed and says it was interrupted.
    pub stop: Option<&'a AtomicBool>,
    /// Told the number of records handed over so far, now and then.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Walk<'_> {
    /// `workers` threads, never stopped, telling no one.
    pub fn on(workers: usize) -> Walk<'static> {
        Walk {
            workers,
            stop: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for Walk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walk")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// Walks `window` of `store`'s log: each worker makes its state with `make` and is handed
/// its principals' records, in logged order, through `each`. Returns every worker's state
/// and whether the walk was stopped.
///
/// Sessions and throttle buckets belong to one principal, so the log is split by
/// principal: each worker sees all it needs. One thread walks the table and hands the
/// stored rows over in batches; the workers read the records (their JSON). Each worker's
/// queue is bounded, so memory stays bounded whatever the log's size.
fn walk_window<W: Send>(
    store: &Store,
    window: &Window,
    walk: &Walk<'_>,
    make: impl Fn() -> W + Sync,
    each: impl Fn(&mut W, &DecisionRecord) + Sync,
) -> Result<(Vec<W>, bool), StoreError> {
    use std::hash::{Hash, Hasher};
    let workers = walk.workers.max(1);
    let stopped = || walk.stop.is_some_and(|s| s.load(Ordering::Relaxed));
    std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (send, receive) = std::sync::mpsc::sync_channel::<Vec<StoredDecision>>(QUEUED);
            queues.push(send);
            let (make, each) = (&make, &each);
            handles.push(scope.spawn(move || {
                let mut state = make();
                for batch in receive {
                    for stored in batch {
                        let record = stored.read(store)?;
                        each(&mut state, &record);
                    }
                }
                Ok::<_, StoreError>(state)
            }));
        }
        let mut batches: Vec<Vec<StoredDecision>> =
            (0..workers).map(|_| Vec::with_capacity(BATCH)).collect();
        let send = |index: usize, batch: Vec<StoredDecision>| {
            queues
                .get(index)
                .is_some_and(|queue| queue.send(batch).is_ok())
        };
        let mut handed = 0u64;
        let mut interrupted = false;
        let walked = store.walk_decisions(
            window.since,
            window.until,
            window.principal.as_deref(),
            |stored| {
                // Once a batch: stop here if told to (this record is not handed over),
                // else say how far the walk got.
                if (handed + 1).is_multiple_of(BATCH as u64) {
                    if stopped() {
                        interrupted = true;
                        return false;
                    }
                    if let Some(progress) = walk.progress {
                        progress(handed);
                    }
                }
                handed += 1;
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                stored.principal.hash(&mut hasher);
                let index = usize::try_from(hasher.finish() % workers as u64).unwrap_or(0);
                let Some(batch) = batches.get_mut(index) else {
                    return false;
                };
                batch.push(stored);
                if batch.len() < BATCH {
                    return true;
                }
                let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
                send(index, full)
            },
        );
        // A stopped walk still replays what it read: the report covers a prefix of the
        // log, not a prefix with holes.
        for (index, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                send(index, batch);
            }
        }
        drop(queues);
        let mut states = Vec::with_capacity(workers);
        let mut failed = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(state)) => states.push(state),
                Ok(Err(error)) => failed = failed.or(Some(error)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        walked?;
        if let Some(error) = failed {
            return Err(error);
        }
        if let Some(progress) = walk.progress {
            progress(handed);
        }
        Ok((states, interrupted))
    })
}

/// Replays `window` of `store`'s log with `candidate`, and reports the changes against
/// what was logged.
pub fn replay_window(
    candidate: &Arc<Pack>,
    store: &Store,
    window: &Window,
    examples: usize,
    walk: &Walk<'_>,
) -> Result<Report, StoreError> {
    let (parts, interrupted) = walk_window(
        store,
        window,
        walk,
        || (Replay::new(Arc::clone(candidate)), Report::new(examples)),
        |(replay, report), record| report.add(record, &replay.replay(record)),
    )?;
    let mut report = Report::new(examples);
    for (_, part) in parts {
        report.merge(part);
    }
    report.interrupted = interrupted;
    report.finish();
    Ok(report)
}

/// What a change of pack (BASE to HEAD) does to a window of logged traffic.
#[derive(Debug, serde::Serialize)]
pub struct Drift {
    /// HEAD's answers against BASE's answers to the same requests today: what the change
    /// itself does, whatever pack wrote the log.
    pub change: Report,
    /// HEAD replayed against the log.
    pub head: Report,
    /// BASE replayed against the log: its differences are the log's age (an older pack
    /// wrote it), not the change's.
    pub base: Report,
}

/// Decides every logged request of `window` with both `base` and `head`, and reports
/// HEAD against BASE (and each against the log).
pub fn drift_window(
    base: &Arc<Pack>,
    head: &Arc<Pack>,
    store: &Store,
    window: &Window,
    examples: usize,
    walk: &Walk<'_>,
) -> Result<Drift, StoreError> {
    let (parts, interrupted) = walk_window(
        store,
        window,
        walk,
        || {
            (
                Replay::new(Arc::clone(base)),
                Replay::new(Arc::clone(head)),
                [
                    Report::new(examples),
                    Report::new(examples),
                    Report::new(examples),
                ],
            )
        },
        |(base, head, [change, head_report, base_report]), record| {
            let b = base.replay(record);
            let h = head.replay(record);
            base_report.add(record, &b);
            head_report.add(record, &h);
            let before = b.answer.as_ref().map_or(&[][..], |d| d.enforced.as_slice());
            let judged = Replayed {
                decision_id: record.decision_id.clone(),
                change: between(&b, &h),
                answer: h.answer,
            };
            change.add_against(record, before, &judged);
        },
    )?;
    let mut drift = Drift {
        change: Report::new(examples),
        head: Report::new(examples),
        base: Report::new(examples),
    };
    for (_, _, [change, head, base]) in parts {
        drift.change.merge(change);
        drift.head.merge(head);
        drift.base.merge(base);
    }
    for report in [&mut drift.change, &mut drift.head, &mut drift.base] {
        report.interrupted = interrupted;
        report.finish();
    }
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(jti: &str, issued_at: &str) -> DecisionRecord {
        serde_json::from_value(serde_json::json!({
            "decision_id": "01K0000000000000000000000", "time": "2026-11-02T09:00:00Z",
            "policy_version": "sha256:x", "principal": "Agent::\"bot\"", "action": null,
            "resource": null, "session": null, "credential_id": "c",
            "credential": {"jti": jti, "issuer": "i", "principal": "Agent::\"bot\"",
                           "issued_at": issued_at, "expires_at": "2026-11-02T10:00:00Z"},
            "decision": "allow", "effect": null, "enforced": [], "warnings": [], "audit": [],
            "errors": [], "reason": null, "error": null, "latency_us": 1, "request": {}
        }))
        .unwrap()
    }

    #[test]
    fn what_the_candidate_revokes_stays_revoked_for_the_rest_of_the_replay() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let credentials = LoggedCredentials::default();
        credentials.present(&record("j1", "2026-11-02T08:00:00Z"));
        assert!(credentials.verify("t", now).is_ok());
        credentials.revoke(&Revoked::Jti("j1".to_owned()));
        assert_eq!(
            credentials.verify("t", now).unwrap_err(),
            CredentialFailure::Revoked
        );
        // Another token of the principal, until every token issued before 08:30 goes.
        credentials.present(&record("j2", "2026-11-02T08:10:00Z"));
        assert!(credentials.verify("t", now).is_ok());
        credentials.revoke(&Revoked::Principal {
            principal: "Agent::\"bot\"".to_owned(),
            before: "2026-11-02T08:30:00Z".parse().unwrap(),
        });
        assert!(credentials.verify("t", now).is_err());
        credentials.present(&record("j3", "2026-11-02T08:45:00Z"));
        assert!(credentials.verify("t", now).is_ok());
        credentials.revoke(&Revoked::Session {
            principal: Some("Agent::\"bot\"".to_owned()),
            id: "s1".to_owned(),
        });
        assert!(credentials.session_revoked("Agent::\"bot\"", "s1"));
        assert!(!credentials.session_revoked("Agent::\"other\"", "s1"));
    }
}
