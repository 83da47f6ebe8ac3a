//! Replay (DESIGN §4): a logged request decided again by a candidate pack, through the
//! same engine as `serve`, with time, sessions and throttles re-simulated from the
//! logged times, and compared with what was logged.
//!
//! The first part of issue 11: the re-decision and its comparison. The grouping per rule
//! and principal, the `arbiter replay` command and the parallel walk come next.

use std::sync::{Arc, Mutex, PoisonError};

use arbiter_core::clock::{Clock, ManualClock};
use arbiter_core::credential::{
    CredentialFailure, CredentialVerifier, Revoked, VerifiedCredential,
};
use arbiter_core::response::Outcome;
use arbiter_core::{Decision, DecisionRequest, Engine, Pack, RequestError, TimeSource};
use arbiter_store::{DecisionRecord, Logged, LoggedCredential, MASK_PREFIX};
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
    clock: Arc<ManualClock>,
    credentials: Arc<LoggedCredentials>,
}

impl Replay {
    /// A replay of `candidate`, with fresh sessions and throttles: start it at the
    /// beginning of the window replayed.
    pub fn new(candidate: Arc<Pack>) -> Replay {
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH));
        let credentials = Arc::new(LoggedCredentials::default());
        let engine = Engine::new(candidate)
            .with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .with_time_source(TimeSource::ClockOnly)
            .with_credentials(Arc::clone(&credentials) as Arc<dyn CredentialVerifier>);
        Replay {
            engine,
            clock,
            credentials,
        }
    }

    /// Decides `record`'s request again, at its logged time, with the credential it
    /// presented as the log says it verified, and compares.
    pub fn replay(&self, record: &DecisionRecord) -> Replayed {
        self.clock.set(record.time);
        self.credentials.present(record);
        let answer = DecisionRequest::from_value(&record.request)
            .and_then(|request| self.engine.decide(&request));
        let change = match (
            &answer,
            masked_path_read(self.engine.pack(), &record.request),
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
}

/// How `decision` compares with the logged `record`.
pub fn compare(record: &DecisionRecord, decision: &Decision) -> Change {
    match (record.decision, decision.decision) {
        (Logged::Invalid, _) => Change::NowValid,
        (Logged::Allow, Outcome::Deny) => Change::Breaks,
        (Logged::Deny, Outcome::Allow) => Change::Loosens,
        _ if record.effect != decision.effect || record.enforced != decision.enforced => {
            Change::Shifts
        }
        _ => Change::Same,
    }
}

/// The first masked value of the request whose path a policy of the pack names: the
/// candidate may read it, and the log only has its hash.
fn masked_path_read(pack: &Pack, request: &Value) -> Option<String> {
    let mut masked = Vec::new();
    collect_masked(request, String::new(), &mut masked);
    if masked.is_empty() {
        return None;
    }
    let policies = pack.policies().to_string();
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
/// never verified again; and a replay revokes nothing outside itself.
#[derive(Debug, Default)]
struct LoggedCredentials {
    current: Mutex<Option<Result<VerifiedCredential, CredentialFailure>>>,
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

impl CredentialVerifier for LoggedCredentials {
    fn verify(
        &self,
        _token: &str,
        _now: jiff::Timestamp,
    ) -> Result<VerifiedCredential, CredentialFailure> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or(Err(CredentialFailure::Malformed))
    }

    fn revoke(&self, _revoked: &Revoked) {}
}
