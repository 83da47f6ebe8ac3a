//! The decision log's records, and reading them back a page at a time.
//!
//! A record is stored whole as JSON beside the columns the filters use; `decision_rules`
//! holds one row per fired rule and mode. Pages run newest first by decision id (a ULID,
//! so by time); a page's cursor is its last id.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use arbiter_core::credential::VerifiedCredential;
use arbiter_core::response::{AuditEntry, Decision, EvalError, Outcome};
use arbiter_core::rule::{Effect, Mode, RuleRef};
use arbiter_core::{DecisionRequest, RequestError};
use jiff::Timestamp;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Transaction, params, params_from_iter};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::error::StoreError;
use crate::findings::Firing;
use crate::store::Store;

/// The largest page [`Store::query_decisions`] returns.
pub const MAX_PAGE: u32 = 1000;

/// The values of [`DecisionRecord::decision`].
pub const DECISIONS: &[&str] = &["allow", "deny", "invalid"];

/// How a logged call ended: a decision, or a request refused before it was one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// A record made ready for the log writer: serialized, its filter columns and its
/// evidence extracted.
///
/// Built in [`LogWriter::append`](crate::LogWriter::append), on the caller's thread, so the
/// writer thread only counts and talks to SQLite.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) decision_id: String,
    pub(crate) time_us: i64,
    pub(crate) policy_version: String,
    pub(crate) principal: Option<String>,
    pub(crate) action: Option<String>,
    /// Only kept when there are `firings`: nothing else on the writer's side needs it.
    pub(crate) resource: Option<String>,
    /// `allow`, `deny` or `invalid`.
    pub(crate) decision: Logged,
    /// Every fired rule with its mode: `decision_rules`, and `fired` in `rule_days`.
    pub(crate) rules: Vec<(String, Mode)>,
    json: String,
    /// The audit and warn firings that findings group; none for an invalid request.
    pub(crate) firings: Vec<Firing>,
    /// The rules whose evaluation errored, each with Cedar's message.
    pub(crate) errored: Vec<(String, String)>,
    /// The rules in scope; `None` for an invalid request.
    pub(crate) in_scope: Option<Arc<[String]>>,
    /// The default-deny scope in scope; `None` for an invalid request.
    pub(crate) scope: Option<String>,
}

impl Row {
    pub(crate) fn new(record: DecisionRecord) -> Result<Row, serde_json::Error> {
        let json = serde_json::to_string(&record)?;
        let rules = record.fired_rules();
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
        Ok(Row {
            json,
            decision_id: record.decision_id,
            time_us: record.time.as_microsecond(),
            policy_version: record.policy_version,
            principal: record.principal,
            action: record.action,
            resource: if firings.is_empty() {
                None
            } else {
                record.resource
            },
            decision: record.decision,
            rules,
            firings,
            errored,
            in_scope,
            scope,
        })
    }

    /// Inserts the row in `tx`, and says whether it did. A decision id already stored is
    /// left as it is, so writing a batch twice changes nothing.
    pub(crate) fn insert(&self, tx: &Transaction<'_>) -> rusqlite::Result<bool> {
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO decisions
                 (decision_id, time_us, principal, action, decision, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                self.decision_id,
                self.time_us,
                self.principal,
                self.action,
                self.decision.as_str(),
                self.json
            ])?;
        if inserted == 0 {
            return Ok(false);
        }
        let mut insert_rule = tx.prepare_cached(
            "INSERT OR IGNORE INTO decision_rules (decision_id, rule, mode) VALUES (?1, ?2, ?3)",
        )?;
        for (rule, mode) in &self.rules {
            insert_rule.execute(params![self.decision_id, rule, mode.as_str()])?;
        }
        Ok(true)
    }
}

impl Store {
    /// One page of the decision log, newest first.
    ///
    /// Times filter at microsecond precision; `since` is inclusive and `until` exclusive.
    /// Unknown `decision` or `mode` words are [`StoreError::InvalidQuery`]; a cursor that is
    /// not a decision id is [`StoreError::InvalidCursor`].
    pub fn query_decisions(&self, q: &DecisionQuery) -> Result<DecisionPage, StoreError> {
        let limit = q.limit.clamp(1, MAX_PAGE);
        let (sql, args) = select_page(q, limit)?;

        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
        let rows = stmt
            .query_map(params_from_iter(args), |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(err)?;
        let mut decisions = Vec::new();
        for row in rows {
            let (decision_id, json) = row.map_err(err)?;
            let record = serde_json::from_str(&json)
                .map_err(|e| self.corrupt(format!("decision {decision_id}: {e}")))?;
            decisions.push(record);
        }

        let more = decisions.len() > limit as usize;
        decisions.truncate(limit as usize);
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

/// A logged decision as stored: its principal from its column, its record not read yet.
/// A walk of a large log reads rows on one thread and hands them to workers that read the
/// records in parallel ([`StoredDecision::read`]).
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
    /// hand over).
    pub fn count_decisions(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        principal: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut sql = String::from("SELECT count(*) FROM decisions WHERE 1 = 1");
        let mut args = Vec::new();
        if let Some(since) = since {
            sql.push_str(" AND time_us >= ?");
            args.push(SqlValue::Integer(since.as_microsecond()));
        }
        if let Some(until) = until {
            sql.push_str(" AND time_us < ?");
            args.push(SqlValue::Integer(until.as_microsecond()));
        }
        if let Some(principal) = principal {
            sql.push_str(" AND principal = ?");
            args.push(SqlValue::Text(principal.to_owned()));
        }
        let conn = self.connection();
        let count: i64 = conn
            .query_row(&sql, params_from_iter(args), |row| row.get(0))
            .map_err(|cause| self.sqlite_error(cause))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Every logged decision of a window in logged order (the order the log wrote them),
    /// handed to `each` one at a time, unread: memory stays bounded whatever the log's
    /// size. `each` returning `false` stops the walk. Holds the store's shared connection
    /// while it walks: for a reader of its own (`arbiter replay` opens the store
    /// read-only), not for a server's.
    ///
    /// The table is read in row order, which is the order rows were written: a window of
    /// time is first bounded to its rows' range through the time index, so the walk is a
    /// sequential read of the table, never a lookup per row.
    pub fn walk_decisions(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        principal: Option<&str>,
        mut each: impl FnMut(StoredDecision) -> bool,
    ) -> Result<(), StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut filter = String::new();
        let mut args = Vec::new();
        if let Some(since) = since {
            filter.push_str(" AND time_us >= ?");
            args.push(SqlValue::Integer(since.as_microsecond()));
        }
        if let Some(until) = until {
            filter.push_str(" AND time_us < ?");
            args.push(SqlValue::Integer(until.as_microsecond()));
        }
        let mut sql = String::from(
            "SELECT decision_id, principal, record FROM decisions NOT INDEXED WHERE 1 = 1",
        );
        if let Some(principal) = principal {
            // A principal's rows come through its index, then in row order.
            sql = String::from(
                "SELECT decision_id, principal, record FROM decisions WHERE principal = ?",
            );
            args.insert(0, SqlValue::Text(principal.to_owned()));
        } else if !filter.is_empty() {
            let bounds =
                format!("SELECT min(rowid), max(rowid) FROM decisions WHERE 1 = 1{filter}");
            let (low, high): (Option<i64>, Option<i64>) = conn
                .query_row(&bounds, params_from_iter(args.iter()), |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .map_err(err)?;
            let (Some(low), Some(high)) = (low, high) else {
                return Ok(());
            };
            sql.push_str(" AND rowid BETWEEN ? AND ?");
            args.insert(0, SqlValue::Integer(low));
            args.insert(1, SqlValue::Integer(high));
        }
        sql.push_str(&filter);
        sql.push_str(" ORDER BY rowid");
        let mut stmt = conn.prepare(&sql).map_err(err)?;
        let mut rows = stmt.query(params_from_iter(args)).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let stored = StoredDecision {
                decision_id: row.get(0).map_err(err)?,
                principal: row.get(1).map_err(err)?,
                json: row.get(2).map_err(err)?,
            };
            if !each(stored) {
                break;
            }
        }
        Ok(())
    }
}

/// The SQL and arguments for one page: one row more than `limit`, to know whether there
/// is a next page.
fn select_page(q: &DecisionQuery, limit: u32) -> Result<(String, Vec<SqlValue>), StoreError> {
    let mut sql = String::from("SELECT d.decision_id, d.record FROM decisions d WHERE 1 = 1");
    let mut args = Vec::new();
    let mut push = |clause: &str, arg: SqlValue| {
        sql.push_str(clause);
        args.push(arg);
    };

    if let Some(since) = q.since {
        push(
            " AND d.time_us >= ?",
            SqlValue::Integer(since.as_microsecond()),
        );
    }
    if let Some(until) = q.until {
        push(
            " AND d.time_us < ?",
            SqlValue::Integer(until.as_microsecond()),
        );
    }
    if let Some(principal) = &q.principal {
        push(" AND d.principal = ?", SqlValue::Text(principal.clone()));
    }
    if let Some(action) = &q.action {
        push(" AND d.action = ?", SqlValue::Text(action.clone()));
    }
    if let Some(decision) = &q.decision {
        if !DECISIONS.contains(&decision.as_str()) {
            return Err(StoreError::InvalidQuery(format!(
                "decision {decision:?} is not one of {}",
                DECISIONS.join(", ")
            )));
        }
        push(" AND d.decision = ?", SqlValue::Text(decision.clone()));
    }
    let mode = match &q.mode {
        Some(word) => Some(Mode::from_word(word).ok_or_else(|| {
            StoreError::InvalidQuery(format!(
                "mode {word:?} is not one of {}",
                Mode::WORDS.join(", ")
            ))
        })?),
        None => None,
    };
    match (&q.rule, mode) {
        (Some(rule), Some(mode)) => {
            push(
                " AND EXISTS (SELECT 1 FROM decision_rules r
                   WHERE r.decision_id = d.decision_id AND r.rule = ?",
                SqlValue::Text(rule.clone()),
            );
            push(" AND r.mode = ?)", SqlValue::Text(mode.as_str().to_owned()));
        }
        (Some(rule), None) => push(
            " AND EXISTS (SELECT 1 FROM decision_rules r
               WHERE r.decision_id = d.decision_id AND r.rule = ?)",
            SqlValue::Text(rule.clone()),
        ),
        (None, Some(mode)) => push(
            " AND EXISTS (SELECT 1 FROM decision_rules r
               WHERE r.decision_id = d.decision_id AND r.mode = ?)",
            SqlValue::Text(mode.as_str().to_owned()),
        ),
        (None, None) => {}
    }
    if let Some(cursor) = &q.cursor {
        let after = Ulid::from_string(cursor).map_err(|_| StoreError::InvalidCursor {
            cursor: cursor.clone(),
        })?;
        push(" AND d.decision_id < ?", SqlValue::Text(after.to_string()));
    }
    push(
        " ORDER BY d.decision_id DESC LIMIT ?",
        SqlValue::Integer(i64::from(limit) + 1),
    );
    Ok((sql, args))
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
    /// out. The rows are read as they come and counted here: grouping them in SQLite
    /// sorts a million rows, counting them in a map does not.
    /// Without `resources`, the resource is not read (nor parsed out of the record), and
    /// the rows are counted by principal and action alone: much the cheaper.
    pub fn usage_since(
        &self,
        since: Timestamp,
        principal: Option<&str>,
        resources: bool,
    ) -> Result<Vec<Usage>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let since_us = since.as_microsecond();
        // Most of the log in the window: one pass over the table beats an index lookup
        // per row. A narrow window: the time index.
        let (total, in_window): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM decisions),
                        (SELECT count(*) FROM decisions WHERE time_us >= ?1)",
                [since_us],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(err)?;
        let time = if in_window.saturating_mul(5) > total {
            "+time_us"
        } else {
            "time_us"
        };
        let resource = if resources {
            "json_extract(record, '$.resource')"
        } else {
            "''"
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT principal, action, {resource}
                 FROM decisions
                 WHERE {time} >= ?1 AND principal IS NOT NULL AND action IS NOT NULL
                   AND (?2 IS NULL OR principal = ?2)"
            ))
            .map_err(err)?;
        let mut rows = stmt.query(params![since_us, principal]).map_err(err)?;
        let mut counts: HashMap<String, HashMap<String, HashMap<String, u64>>> = HashMap::new();
        while let Some(row) = rows.next().map_err(err)? {
            let text = |i: usize| row.get_ref(i).ok().and_then(|v| v.as_str().ok());
            let (Some(p), Some(a), Some(r)) = (text(0), text(1), text(2)) else {
                continue;
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
        }
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
