//! Records and waits shared by the integration tests.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::time::Duration;

use arbiter_store::{DecisionQuery, DecisionRecord, Logged, LoggedCredential, Store};
use jiff::Timestamp;
use serde_json::json;
use ulid::Ulid;

/// 2026-11-26T10:00:00Z.
pub const BASE_MS: i64 = 1_795_687_200_000;

/// A verified credential `jti`, issued by `https://arbiter.test` for two hours.
pub fn credential(jti: &str) -> LoggedCredential {
    LoggedCredential {
        jti: jti.to_owned(),
        issuer: "https://arbiter.test".to_owned(),
        principal: r#"Agent::"a""#.to_owned(),
        intent: None,
        session: None,
        issued_at: "2026-11-26T09:00:00Z".parse().unwrap(),
        expires_at: "2026-11-26T11:00:00Z".parse().unwrap(),
        attributes: Default::default(),
    }
}

/// Record `n`: made `n` milliseconds after [`BASE_MS`], allowed, no rules fired.
pub fn record(n: u64) -> DecisionRecord {
    let ms = BASE_MS + i64::try_from(n).unwrap();
    let id = Ulid::from_parts(u64::try_from(ms).unwrap(), u128::from(n));
    DecisionRecord {
        decision_id: id.to_string(),
        time: Timestamp::from_millisecond(ms).unwrap(),
        policy_version: "sha256:pack-1".to_owned(),
        principal: Some(r#"Agent::"bot""#.to_owned()),
        action: Some(r#"Action::"read_ticket""#.to_owned()),
        resource: Some(format!(r#"Ticket::"T-{n}""#)),
        session: None,
        credential_id: None,
        credential: None,
        decision: Logged::Allow,
        effect: None,
        enforced: vec![],
        warnings: vec![],
        audit: vec![],
        errors: vec![],
        reason: None,
        error: None,
        latency_us: 12,
        request: json!({
            "principal": r#"Agent::"bot""#,
            "action": r#"Action::"read_ticket""#,
            "resource": format!(r#"Ticket::"T-{n}""#),
            "context": {}
        }),
        evidence: Default::default(),
        novel: None,
        mcp: None,
    }
}

/// Every decision id the query finds, following cursors to the last page.
pub fn all_ids(store: &Store, query: &DecisionQuery) -> Vec<String> {
    let mut query = query.clone();
    if query.limit == 0 {
        query.limit = 1000;
    }
    let mut ids = Vec::new();
    loop {
        let page = store.query_decisions(&query).unwrap();
        ids.extend(page.decisions.into_iter().map(|d| d.decision_id));
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return ids,
        }
    }
}

/// The ids of records `ns`, newest first (the order pages use).
pub fn ids_of(ns: &[u64]) -> Vec<String> {
    let mut ns = ns.to_vec();
    ns.sort_unstable_by(|a, b| b.cmp(a));
    ns.into_iter().map(|n| record(n).decision_id).collect()
}

/// Waits for `condition`, which another thread makes true, failing after ten seconds.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Writes `records` into a new database in `dir` at schema `version` (1 to 6), the way
/// an arbiter of that version did: a `decisions` row and a `decision_rules` row per fired
/// rule each. The evidence tables of that version (findings and day counts from 3, first
/// errors from 5, the hours from 6) are copied from the database in `counted`, a store that logged the same
/// records.
pub fn old_log(
    dir: &std::path::Path,
    version: usize,
    records: &[DecisionRecord],
    counted: &std::path::Path,
) {
    arbiter_store::create_at_version(dir, version).unwrap();
    let db = rusqlite::Connection::open(dir.join(arbiter_store::DB_FILE)).unwrap();
    for r in records {
        db.execute(
            "INSERT INTO decisions (decision_id, time_us, principal, action, decision, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                r.decision_id,
                r.time.as_microsecond(),
                r.principal,
                r.action,
                r.decision.as_str(),
                serde_json::to_string(r).unwrap()
            ],
        )
        .unwrap();
        let fired = r
            .enforced
            .iter()
            .map(|rule| (rule.to_string(), "enforce"))
            .chain(r.warnings.iter().map(|rule| (rule.to_string(), "warn")))
            .chain(r.audit.iter().map(|a| (a.rule.to_string(), "audit")));
        for (rule, mode) in fired {
            db.execute(
                "INSERT OR IGNORE INTO decision_rules (decision_id, rule, mode) VALUES (?1, ?2, ?3)",
                rusqlite::params![r.decision_id, rule, mode],
            )
            .unwrap();
        }
    }
    db.execute(
        "ATTACH DATABASE ?1 AS counted",
        [counted.join(arbiter_store::DB_FILE).to_str().unwrap()],
    )
    .unwrap();
    if version >= 3 {
        db.execute_batch(
            "INSERT INTO findings SELECT * FROM counted.findings;
             INSERT INTO rule_days (rule, day, policy_version, evaluations, fired, errors,
                                    first_us, last_us)
             SELECT rule, day, policy_version, evaluations, fired, errors, first_us, last_us
             FROM counted.rule_days;",
        )
        .unwrap();
    }
    if version >= 5 {
        db.execute_batch("INSERT INTO rule_errors SELECT * FROM counted.rule_errors;")
            .unwrap();
    }
    if version >= 6 {
        db.execute_batch(
            "INSERT INTO outcome_hours SELECT * FROM counted.outcome_hours;
             UPDATE rule_days SET decisive = (SELECT c.decisive FROM counted.rule_days c
                 WHERE c.rule = rule_days.rule AND c.day = rule_days.day
                   AND c.policy_version = rule_days.policy_version);",
        )
        .unwrap();
    }
    db.execute_batch("DETACH DATABASE counted").unwrap();
}
