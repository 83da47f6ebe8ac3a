//! Records and waits shared by the integration tests.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::time::Duration;

use arbiter_store::{DecisionQuery, DecisionRecord, Logged, Store};
use jiff::Timestamp;
use serde_json::json;
use ulid::Ulid;

/// 2026-11-26T10:00:00Z.
pub const BASE_MS: i64 = 1_795_687_200_000;

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
