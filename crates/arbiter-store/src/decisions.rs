//! The decision log's records, and reading them back a page at a time.
//!
//! Records are stored whole as JSON, a batch at a time in compressed segments
//! ([`crate::segment`]), each beside a head of what the filters read. Pages run newest
//! first by decision id (a ULID, so by time); a page's cursor is its last id.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use arbiter_core::credential::VerifiedCredential;
use arbiter_core::response::{AuditEntry, Decision, EvalError, Outcome};
use arbiter_core::rule::{Effect, Mode, RuleRef};
use arbiter_core::{DecisionRequest, RequestError};
use jiff::Timestamp;
use rusqlite::{Connection, params_from_iter};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::error::StoreError;
use crate::findings::Firing;
use crate::segment::{self, Filter, Head, Meta, Order, ReadError};
use crate::store::Store;

/// The largest page [`Store::query_decisions`] returns.
pub const MAX_PAGE: u32 = 1000;

/// The values of [`DecisionRecord::decision`].
pub const DECISIONS: &[&str] = &["allow", "deny", "invalid"];

/// How a logged call ended: a decision, or a request refused before it was one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Logged {
    /// The action was allowed.
    Allow,
    /// The action was denied.
    Deny,
    /// The request was refused before a decision (malformed, invalid, not JSON).
    Invalid,
}

impl Logged {
    /// The word, as stored and filtered on: `allow`, `deny` or `invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Logged::Allow => "allow",
            Logged::Deny => "deny",
            Logged::Invalid => "invalid",
        }
    }
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Outcome> for Logged {
    fn from(outcome: Outcome) -> Logged {
        match outcome {
            Outcome::Allow => Logged::Allow,
            Outcome::Deny => Logged::Deny,
        }
    }
}

/// Why a request was refused, as it was answered: `{"code", "message"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The stable error code (`malformed_request`, `invalid_request`, …).
    pub code: String,
    /// What was wrong; never a value from the request.
    pub message: String,
}

impl From<&RequestError> for Refusal {
    fn from(error: &RequestError) -> Refusal {
        Refusal {
            code: error.code().to_owned(),
            message: error.to_string(),
        }
    }
}

/// One decision-log record: enough to replay the request (DESIGN §4).
///
/// Built once, from the engine's [`Decision`] ([`DecisionRecord::decided`]) or from the
/// refusal of a request ([`DecisionRecord::refused`]); the request as logged (credential
/// fingerprinted, `[log] mask` applied) is the caller's to prepare.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// A ULID, so ids sort by time. Requests that were invalid get one too.
    pub decision_id: String,
    /// When the decision was made.
    pub time: Timestamp,
    /// The pack version that decided.
    pub policy_version: String,
    /// The principal's Cedar uid; `None` when the request could not be parsed.
    pub principal: Option<String>,
    /// The action's Cedar uid; `None` when the request could not be parsed.
    pub action: Option<String>,
    /// The resource's Cedar uid; `None` when the request could not be parsed.
    pub resource: Option<String>,
    /// The PEP's session id.
    pub session: Option<String>,
    /// The id of the credential presented.
    pub credential_id: Option<String>,
    /// What the verified credential established: its claims, never the token. What
    /// `context.credential` and `context.in_intent` saw, kept for replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<LoggedCredential>,
    /// `allow`, `deny` or `invalid`.
    pub decision: Logged,
    /// The effect applied, if any.
    pub effect: Option<Effect>,
    /// Enforced rules (or the default-deny scope) that decided a deny.
    pub enforced: Vec<RuleRef>,
    /// Fired `warn` rules.
    pub warnings: Vec<RuleRef>,
    /// Fired `audit` rules, with what each would have done.
    pub audit: Vec<AuditEntry>,
    /// Evaluation errors.
    pub errors: Vec<EvalError>,
    /// Why a deny.
    pub reason: Option<String>,
    /// For an invalid request: why it was refused.
    pub error: Option<Refusal>,
    /// Time spent deciding, in microseconds.
    pub latency_us: u64,
    /// The request as received, context masked.
    pub request: serde_json::Value,
    /// Once a baseline is frozen: whether this principal had never done this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub novel: Option<bool>,
    /// The MCP call the decision was made for, when `arbiter mcp-proxy` asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpCall>,
    /// What the decision adds to findings and readiness beyond the record; kept in
    /// `findings` and `rule_days`, not in the record itself.
    #[serde(skip)]
    pub evidence: DecisionEvidence,
}

/// The MCP call a decision was made for: what the gateway saw besides the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpCall {
    /// The JSON-RPC method, e.g. `tools/call`.
    pub method: String,
    /// The tool called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The MCP server the call was for.
    pub upstream: String,
    /// Whether the principal was established by a verified credential, or configured for
    /// local use and taken on trust.
    pub identity: McpIdentity,
    /// The call's arguments as logged: an argument the pack's `[mcp]` maps into the
    /// context whole, and whose context path `[log] mask` does not mask, in clear (the
    /// request holds it too); every other argument replaced by its keyed hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

/// How the MCP gateway knows who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpIdentity {
    /// An arbiter token, verified at every decision.
    Verified,
    /// A principal configured for local use: nothing proves it.
    Unverified,
}

/// A verified credential as the log keeps it: the claims the decision saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedCredential {
    /// The token's id.
    pub jti: String,
    /// Who issued it (arbiter's own issuer, or the upstream one it was exchanged from).
    pub issuer: String,
    /// The principal it was issued to (a Cedar uid).
    pub principal: String,
    /// The intent it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// The session it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The principal's attributes it vouches for.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl From<&VerifiedCredential> for LoggedCredential {
    fn from(c: &VerifiedCredential) -> LoggedCredential {
        LoggedCredential {
            jti: c.jti.clone(),
            issuer: c.issuer.clone(),
            principal: c.principal.to_string(),
            intent: c.intent.clone(),
            session: c.session.clone(),
            issued_at: c.issued_at,
            expires_at: c.expires_at,
            attributes: c.attributes.clone(),
        }
    }
}

/// What a decision adds to the lifecycle's evidence, besides its fired rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecisionEvidence {
    /// The rules in scope of the request: the slice it evaluated.
    pub in_scope: Option<Arc<[String]>>,
    /// The default-deny scope of the principal's type, in scope of every decision that
    /// reached the outcome.
    pub scope: Option<RuleRef>,
    /// What each fired `warn` rule would do enforced, as the engine said.
    pub warned: Vec<(RuleRef, Effect)>,
}

impl DecisionRecord {
    /// The record of a decision: the engine's answer, the request it answered, and the
    /// request as it is to be kept (`logged`).
    pub fn decided(
        decision: &Decision,
        request: &DecisionRequest,
        logged: serde_json::Value,
        latency: Duration,
    ) -> DecisionRecord {
        DecisionRecord {
            decision_id: decision.decision_id.clone(),
            time: decision.time,
            policy_version: decision.policy_version.clone(),
            principal: Some(request.principal.to_string()),
            action: Some(request.action.to_string()),
            resource: Some(request.resource.to_string()),
            session: decision.session.clone().or_else(|| request.session.clone()),
            credential_id: decision.credential_id.clone(),
            credential: decision.credential.as_ref().map(LoggedCredential::from),
            decision: decision.decision.into(),
            effect: decision.effect,
            enforced: decision.enforced.clone(),
            warnings: decision.warnings.iter().map(|w| w.rule.clone()).collect(),
            audit: decision.audit.clone(),
            errors: decision.errors.clone(),
            reason: decision.reason.clone(),
            error: None,
            latency_us: micros(latency),
            request: logged,
            novel: decision.novel,
            mcp: None,
            evidence: DecisionEvidence {
                in_scope: decision.in_scope.clone(),
                scope: decision.scope.clone(),
                warned: decision
                    .warnings
                    .iter()
                    .map(|w| (w.rule.clone(), w.would))
                    .collect(),
            },
        }
    }

    /// The record of a request refused before a decision: why, and what of it is kept
    /// (`logged`: the request as it is to be kept, or only its size when it was not a
    /// request at all). `request` is the parsed request, when it got that far.
    pub fn refused(
        id: Stamp,
        request: Option<&DecisionRequest>,
        refusal: Refusal,
        logged: serde_json::Value,
        latency: Duration,
    ) -> DecisionRecord {
        DecisionRecord {
            decision_id: id.decision_id,
            time: id.time,
            policy_version: id.policy_version,
            principal: request.map(|r| r.principal.to_string()),
            action: request.map(|r| r.action.to_string()),
            resource: request.map(|r| r.resource.to_string()),
            session: request.and_then(|r| r.session.clone()),
            credential_id: None,
            credential: None,
            decision: Logged::Invalid,
            effect: None,
            enforced: Vec::new(),
            warnings: Vec::new(),
            audit: Vec::new(),
            errors: Vec::new(),
            reason: None,
            error: Some(refusal),
            latency_us: micros(latency),
            request: logged,
            novel: None,
            mcp: None,
            evidence: DecisionEvidence::default(),
        }
    }

    /// The rules that fired, with the mode each fired in.
    fn fired_rules(&self) -> Vec<(String, Mode)> {
        let enforced = self
            .enforced
            .iter()
            .map(|rule| (rule.to_string(), Mode::Enforce));
        let warned = self
            .warnings
            .iter()
            .map(|rule| (rule.to_string(), Mode::Warn));
        let audited = self
            .audit
            .iter()
            .map(|entry| (entry.rule.to_string(), Mode::Audit));
        enforced.chain(warned).chain(audited).collect()
    }
}

/// The id, time and pack version of a record that has no decision to take them from.
#[derive(Clone, Debug)]
pub struct Stamp {
    /// A fresh decision id (a ULID).
    pub decision_id: String,
    /// When.
    pub time: Timestamp,
    /// The pack version in force.
    pub policy_version: String,
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}

/// What to read from the decision log. Every filter that is set must match.
#[derive(Clone, Debug, Default)]
pub struct DecisionQuery {
    /// Decisions at or after this time.
    pub since: Option<Timestamp>,
    /// Decisions before this time.
    pub until: Option<Timestamp>,
    /// Decisions where this rule fired (enforced, warned or audited).
    pub rule: Option<String>,
    /// The principal's Cedar uid, exactly.
    pub principal: Option<String>,
    /// The action's Cedar uid, exactly.
    pub action: Option<String>,
    /// `allow`, `deny` or `invalid`.
    pub decision: Option<String>,
    /// `enforce`, `warn` or `audit`: a rule fired in that mode (with `rule`: that rule did).
    pub mode: Option<String>,
    /// Page size, 1 to [`MAX_PAGE`]; values outside are brought into that range.
    pub limit: u32,
    /// Where to continue: the `next` of the previous page.
    pub cursor: Option<String>,
}

/// One page of decisions, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionPage {
    /// The decisions.
    pub decisions: Vec<DecisionRecord>,
    /// The cursor for the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A record made ready for the log writer: serialized, its head and its evidence
/// extracted.
///
/// Built in [`LogWriter::append`](crate::LogWriter::append), on the caller's thread, so the
/// writer thread only counts, compresses and talks to SQLite.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) decision_id: String,
    pub(crate) time_us: i64,
    pub(crate) policy_version: String,
    pub(crate) principal: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) resource: Option<String>,
    /// `allow`, `deny` or `invalid`.
    pub(crate) decision: Logged,
    /// Every fired rule with its mode: the head's, and `fired` in `rule_days`.
    pub(crate) rules: Vec<(String, Mode)>,
    /// What a filter reads of the decision ([`Head`]), as JSON.
    pub(crate) head: String,
    /// The record, as JSON.
    pub(crate) json: String,
    /// The audit and warn firings that findings group; none for an invalid request.
    pub(crate) firings: Vec<Firing>,
    /// The rules whose evaluation errored, each with Cedar's message.
    pub(crate) errored: Vec<(String, String)>,
    /// The rules in scope; `None` for an invalid request.
    pub(crate) in_scope: Option<Arc<[String]>>,
    /// The default-deny scope in scope; `None` for an invalid request.
    pub(crate) scope: Option<String>,
    /// The credential presented, as an identity's summary keeps it.
    pub(crate) presented: Option<Box<Presented>>,
    /// Whether the decision was flagged `novel`.
    pub(crate) novel: bool,
}

/// A credential as an identity's summary keeps it: its id, from the verified claims or
/// else the request's `credential_id`, and who issued it and when it expires when it was
/// verified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Presented {
    pub(crate) jti: String,
    pub(crate) issuer: Option<String>,
    pub(crate) expires_at: Option<String>,
}

impl Presented {
    fn of(credential: Option<&LoggedCredential>, credential_id: Option<&str>) -> Option<Presented> {
        match credential {
            Some(c) => Some(Presented {
                jti: c.jti.clone(),
                issuer: Some(c.issuer.clone()),
                expires_at: Some(c.expires_at.to_string()),
            }),
            None => credential_id.map(|jti| Presented {
                jti: jti.to_owned(),
                issuer: None,
                expires_at: None,
            }),
        }
    }
}

impl Row {
    pub(crate) fn new(record: DecisionRecord) -> Result<Row, serde_json::Error> {
        let json = serde_json::to_string(&record)?;
        Row::with_json(record, json)
    }

    /// The bytes the row's text takes: its head and its record.
    pub(crate) fn bytes(&self) -> usize {
        self.head.len() + self.json.len()
    }

    /// A record the log already holds as `json` (a log being migrated), kept byte for
    /// byte.
    pub(crate) fn stored(json: String) -> Result<Row, serde_json::Error> {
        let record = serde_json::from_str(&json)?;
        Row::with_json(record, json)
    }

    fn with_json(record: DecisionRecord, json: String) -> Result<Row, serde_json::Error> {
        let rules = record.fired_rules();
        let time_us = record.time.as_microsecond();
        let head = Head::line(
            &record.decision_id,
            time_us,
            record.principal.as_deref(),
            record.action.as_deref(),
            record.resource.as_deref(),
            record.decision,
            &rules,
        )?;
        let errored = record
            .errors
            .iter()
            .map(|e| (e.rule.clone(), e.message.clone()))
            .collect();
        let invalid = record.decision == Logged::Invalid;
        let firings = if invalid {
            Vec::new()
        } else {
            Firing::of(&record)
        };
        let DecisionEvidence {
            in_scope, scope, ..
        } = record.evidence;
        let (in_scope, scope) = if invalid {
            (None, None)
        } else {
            (in_scope, scope.map(|s| s.to_string()))
        };
        let presented = Presented::of(record.credential.as_ref(), record.credential_id.as_deref())
            .map(Box::new);
        Ok(Row {
            head,
            json,
            presented,
            novel: record.novel == Some(true),
            decision_id: record.decision_id,
            time_us,
            policy_version: record.policy_version,
            principal: record.principal,
            action: record.action,
            resource: record.resource,
            decision: record.decision,
            rules,
            firings,
            errored,
            in_scope,
            scope,
        })
    }
}

impl Store {
    /// A segment that could not be read, as the store reports it.
    pub(crate) fn read_error(&self, e: ReadError) -> StoreError {
        match e {
            ReadError::Sqlite(cause) => self.sqlite_error(cause),
            ReadError::Corrupt(detail) => self.corrupt(detail),
        }
    }

    /// One page of the decision log, newest first.
    ///
    /// Times filter at microsecond precision; `since` is inclusive and `until` exclusive.
    /// Unknown `decision` or `mode` words are [`StoreError::InvalidQuery`]; a cursor that is
    /// not a decision id is [`StoreError::InvalidCursor`].
    ///
    /// Segments are read largest decision id first, and the read stops at the first
    /// segment whose ids are all below the page's last: a page reads the newest segments
    /// that can hold its decisions, whatever the size of the log.
    pub fn query_decisions(&self, q: &DecisionQuery) -> Result<DecisionPage, StoreError> {
        let limit = q.limit.clamp(1, MAX_PAGE) as usize;
        let decision = match &q.decision {
            Some(word) => Some(decision_word(word).ok_or_else(|| {
                StoreError::InvalidQuery(format!(
                    "decision {word:?} is not one of {}",
                    DECISIONS.join(", ")
                ))
            })?),
            None => None,
        };
        let mode = match &q.mode {
            Some(word) => Some(Mode::from_word(word).ok_or_else(|| {
                StoreError::InvalidQuery(format!(
                    "mode {word:?} is not one of {}",
                    Mode::WORDS.join(", ")
                ))
            })?),
            None => None,
        };
        let cursor = match &q.cursor {
            Some(cursor) => Some(
                Ulid::from_string(cursor)
                    .map_err(|_| StoreError::InvalidCursor {
                        cursor: cursor.clone(),
                    })?
                    .to_string(),
            ),
            None => None,
        };
        let filter = Filter {
            since_us: q.since.map(Timestamp::as_microsecond),
            until_us: q.until.map(Timestamp::as_microsecond),
            principal: q.principal.as_deref(),
            action: q.action.as_deref(),
            decision,
            rule: q.rule.as_deref(),
            mode,
            before_id: cursor.as_deref(),
        };

        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let (sql, args) = filter.segments(Order::NewestFirst);
        let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
        let mut segments = stmt.query(params_from_iter(args)).map_err(err)?;
        // The page and one more, largest id first.
        let mut found: Vec<(String, String)> = Vec::new();
        let needle = filter.needle();
        while let Some(row) = segments.next().map_err(err)? {
            let meta = Meta::read(row).map_err(err)?;
            if found.len() > limit && found.last().is_some_and(|(id, _)| meta.last_id < *id) {
                break;
            }
            let decoded = segment::read_with(
                &conn,
                &meta,
                needle.as_deref(),
                &|head| filter.matches(head),
                true,
            )
            .map_err(|e| self.read_error(e))?;
            for (head, record) in decoded.entries() {
                found.push((head.id.clone(), record.to_owned()));
            }
            found.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            found.truncate(limit + 1);
        }
        let more = found.len() > limit;
        found.truncate(limit);
        let mut decisions = Vec::with_capacity(found.len());
        for (decision_id, json) in found {
            let record = serde_json::from_str(&json)
                .map_err(|e| self.corrupt(format!("decision {decision_id}: {e}")))?;
            decisions.push(record);
        }
        let next = if more {
            decisions
                .last()
                .map(|d: &DecisionRecord| d.decision_id.clone())
        } else {
            None
        };
        Ok(DecisionPage { decisions, next })
    }
}

/// The outcome a `decision` filter names.
fn decision_word(word: &str) -> Option<Logged> {
    match word {
        "allow" => Some(Logged::Allow),
        "deny" => Some(Logged::Deny),
        "invalid" => Some(Logged::Invalid),
        _ => None,
    }
}

/// A logged decision as stored: its principal from its head, its record not read yet.
/// A walk of a large log reads segments on one thread and hands decisions to workers
/// that read the records in parallel ([`StoredDecision::read`]).
#[derive(Debug)]
pub struct StoredDecision {
    /// The decision's principal (`None` for a request refused before it named one).
    pub principal: Option<String>,
    decision_id: String,
    json: String,
}

impl StoredDecision {
    /// The decision's id.
    pub fn decision_id(&self) -> &str {
        &self.decision_id
    }

    /// The record, read from its stored JSON.
    pub fn read(&self, store: &Store) -> Result<DecisionRecord, StoreError> {
        serde_json::from_str(&self.json)
            .map_err(|e| store.corrupt(format!("decision {}: {e}", self.decision_id)))
    }
}

impl Store {
    /// How many decisions a window of the log holds (what [`Store::walk_decisions`] will
    /// hand over). A segment wholly inside the window is counted from its row, unread.
    pub fn count_decisions(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        principal: Option<&str>,
    ) -> Result<u64, StoreError> {
        let filter = Filter {
            since_us: since.map(Timestamp::as_microsecond),
            until_us: until.map(Timestamp::as_microsecond),
            principal,
            ..Filter::default()
        };
        let conn = self.connection();
        self.count_in(&conn, &filter)
    }

    /// How many decisions match `filter`, read through `conn`.
    pub(crate) fn count_in(
        &self,
        conn: &Connection,
        filter: &Filter<'_>,
    ) -> Result<u64, StoreError> {
        let metas = segment::candidates(conn, filter, Order::Written)
            .map_err(|cause| self.sqlite_error(cause))?;
        let needle = filter.needle();
        let mut count = 0_u64;
        for meta in metas {
            if filter.time_only() && filter.covers_time(&meta) {
                count += u64::try_from(meta.n).unwrap_or(0);
                continue;
            }
            let decoded = segment::read_with(
                conn,
                &meta,
                needle.as_deref(),
                &|head| filter.matches(head),
                false,
            )
            .map_err(|e| self.read_error(e))?;
            count += decoded.entries().count() as u64;
        }
        Ok(count)
    }

    /// Every logged decision of a window in logged order (the order the log wrote them),
    /// handed to `each` one at a time, unread: memory stays bounded by one segment,
    /// whatever the log's size. `each` returning `false` stops the walk. Holds the store's
    /// shared connection while it walks: for a reader of its own (`arbiter replay` opens
    /// the store read-only), not for a server's.
    ///
    /// Only the segments that can hold the window (and the principal) are read.
    pub fn walk_decisions(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        principal: Option<&str>,
        mut each: impl FnMut(StoredDecision) -> bool,
    ) -> Result<(), StoreError> {
        let filter = Filter {
            since_us: since.map(Timestamp::as_microsecond),
            until_us: until.map(Timestamp::as_microsecond),
            principal,
            ..Filter::default()
        };
        let conn = self.connection();
        self.each_in(&conn, &filter, true, |head, record| {
            each(StoredDecision {
                principal: head.principal.clone(),
                decision_id: head.id.clone(),
                json: record.to_owned(),
            })
        })
    }

    /// Calls `each` with every decision matching `filter` (its head, and its record's
    /// JSON when `records`, else an empty text), in logged order, until it returns
    /// `false`. Without records only the heads are decompressed.
    pub(crate) fn each_in(
        &self,
        conn: &Connection,
        filter: &Filter<'_>,
        records: bool,
        mut each: impl FnMut(&Head, &str) -> bool,
    ) -> Result<(), StoreError> {
        let metas = segment::candidates(conn, filter, Order::Written)
            .map_err(|cause| self.sqlite_error(cause))?;
        let needle = filter.needle();
        for meta in metas {
            let decoded = segment::read_with(
                conn,
                &meta,
                needle.as_deref(),
                &|head| filter.matches(head),
                records,
            )
            .map_err(|e| self.read_error(e))?;
            for (head, record) in decoded.entries() {
                if !each(head, record) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// How often a principal used an action on a resource since a time: what chain analysis
/// counts of the traffic on each step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The principal's Cedar uid, as logged.
    pub principal: String,
    /// The action's Cedar uid, as logged.
    pub action: String,
    /// The resource's Cedar uid, as logged; `None` when it was not asked for.
    pub resource: Option<String>,
    /// Decisions (of any outcome) with these three.
    pub count: u64,
}

impl Store {
    /// Every (principal, action, resource) decided at or after `since`, with how often;
    /// only `principal` when given. Invalid requests, which name no principal, are left
    /// out. Counted from the heads, no record parsed.
    /// Without `resources`, the resource is not read, and the decisions are counted by
    /// principal and action alone.
    pub fn usage_since(
        &self,
        since: Timestamp,
        principal: Option<&str>,
        resources: bool,
    ) -> Result<Vec<Usage>, StoreError> {
        let filter = Filter {
            since_us: Some(since.as_microsecond()),
            principal,
            ..Filter::default()
        };
        let mut counts: HashMap<String, HashMap<String, HashMap<String, u64>>> = HashMap::new();
        let conn = self.connection();
        self.each_in(&conn, &filter, false, |head, _| {
            let resource = if resources {
                head.resource.as_deref()
            } else {
                Some("")
            };
            let (Some(p), Some(a), Some(r)) =
                (head.principal.as_deref(), head.action.as_deref(), resource)
            else {
                return true;
            };
            let by_action = match counts.get_mut(p) {
                Some(found) => found,
                None => counts.entry(p.to_owned()).or_default(),
            };
            let by_resource = match by_action.get_mut(a) {
                Some(found) => found,
                None => by_action.entry(a.to_owned()).or_default(),
            };
            match by_resource.get_mut(r) {
                Some(n) => *n += 1,
                None => {
                    by_resource.insert(r.to_owned(), 1);
                }
            }
            true
        })?;
        let mut usage = Vec::new();
        for (principal, by_action) in counts {
            for (action, by_resource) in by_action {
                for (resource, count) in by_resource {
                    usage.push(Usage {
                        principal: principal.clone(),
                        action: action.clone(),
                        resource: resources.then_some(resource),
                        count,
                    });
                }
            }
        }
        Ok(usage)
    }
}
