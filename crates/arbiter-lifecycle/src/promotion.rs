//! The promotion workflow (DESIGN §4, Promote / demote): from what an operator asked to a
//! rule's new `@mode` in its source file and a record of who changed it, why, and against
//! which readiness verdict.
//!
//! It runs in two steps so that a caller can show what would happen before anything does:
//! [`plan`] computes the edit and consults the evidence (a move towards enforcement must
//! be `ready`, or forced with a reason; a move away from it needs no evidence), and
//! [`apply`] writes the file and records the change in the store. A change that cannot be
//! recorded is undone: the record is the audit trail. A dry run is a plan never applied.
//!
//! The clock is the caller's: both steps take `now`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use arbiter_core::Pack;
use arbiter_core::rule::{Mode, RuleRef};
use arbiter_store::{Promotion, Store, StoreError};
use jiff::Timestamp;

use crate::promote::{self, Edit, PromoteError};
use crate::readiness::{self, Readiness, Verdict};

/// What an operator asked for: set a rule's (or a default-deny scope's) mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    /// The rule id, or `default-deny:<PrincipalType>`.
    pub name: String,
    /// The mode to set.
    pub to: Mode,
    /// Go ahead although the evidence does not say the rule is ready (needs a reason).
    pub force: bool,
    /// Why: required to force, recorded whenever given.
    pub reason: Option<String>,
    /// Who asked, for the record.
    pub by: String,
}

/// What the evidence says about going ahead.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Not a promotion: moving away from enforcement needs no evidence.
    NotNeeded,
    /// A promotion the evidence says is ready.
    Ready(Readiness),
    /// A promotion the evidence does not support (or there is none), forced.
    Forced(Option<Readiness>),
    /// A promotion the evidence does not support, not forced.
    Refused(Refusal),
}

/// Why a promotion does not go ahead.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The rule is not ready: its readiness says why.
    NotReady(Box<Readiness>),
    /// There was no store to read evidence from.
    NoEvidence,
    /// A move away from enforcement without a reason: a downgrade is never silent, it
    /// is recorded with who and why.
    NoReason,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotReady(r) => write!(f, "it is {}", r.verdict.as_str()),
            Refusal::NoEvidence => f.write_str("there is no evidence for it"),
            Refusal::NoReason => f.write_str("moving away from enforcement needs a reason"),
        }
    }
}

/// A change worked out and checked, not yet made.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The edit to the pack's source (its diff is what a reviewer sees).
    pub edit: Edit,
    /// Whether the evidence lets it go ahead.
    pub gate: Gate,
    change: ModeChange,
    pack_dir: PathBuf,
}

impl Plan {
    /// The rule id or scope name.
    pub fn name(&self) -> &str {
        &self.change.name
    }

    /// Whether the change moves towards enforcement.
    pub fn promoting(&self) -> bool {
        self.edit.to > self.edit.from
    }

    /// The readiness the gate consulted, if any.
    pub fn readiness(&self) -> Option<&Readiness> {
        match &self.gate {
            Gate::Ready(r) | Gate::Forced(Some(r)) => Some(r),
            Gate::Refused(Refusal::NotReady(r)) => Some(r),
            Gate::NotNeeded
            | Gate::Forced(None)
            | Gate::Refused(Refusal::NoEvidence | Refusal::NoReason) => None,
        }
    }

    /// Why the change is refused, when it is.
    pub fn refusal(&self) -> Option<&Refusal> {
        match &self.gate {
            Gate::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }
}

/// A change made: the file written and the record stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The file edited, relative to the pack.
    pub file: PathBuf,
    /// The record, as the store keeps it (with its `seq`).
    pub promotion: Promotion,
}

/// Why a change could not be planned or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromotionError {
    /// The edit cannot be made: an unknown rule, a permit, the mode already set, a file
    /// that does not read as expected.
    #[error(transparent)]
    Edit(#[from] PromoteError),
    /// The evidence could not be read.
    #[error(transparent)]
    Evidence(#[from] StoreError),
    /// [`apply`] was given a plan the gate refused.
    #[error("`{name}` was not changed: {refusal}")]
    Refused {
        /// The rule id or scope name.
        name: String,
        /// Why.
        refusal: Refusal,
    },
    /// Forcing needs a written reason.
    #[error("`{0}` is not ready: forcing its promotion needs a reason")]
    NoReason(String),
    /// The file could not be written; nothing changed.
    #[error(transparent)]
    Write(io::Error),
    /// The file was written but the change could not be recorded, so it was undone.
    #[error("the change could not be recorded ({cause}); {restored}")]
    Unrecorded {
        /// Why the store refused.
        cause: StoreError,
        /// Whether the file is as it was.
        restored: Restored,
    },
}

/// Whether an unrecorded change was undone.
#[derive(Debug)]
pub enum Restored {
    /// The file holds its old text again.
    Yes,
    /// Writing the old text failed as well: the file holds the new text, unrecorded.
    Failed(io::Error),
}

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Restored::Yes => f.write_str("the file is restored"),
            Restored::Failed(e) => {
                write!(f, "restoring the file failed too ({e}): check it by hand")
            }
        }
    }
}

/// Works out the edit for `change` and whether the evidence lets it go ahead. A
/// promotion's evidence is read from `store` at `now`; without a store (a dry run where
/// no server has written one) a promotion is refused unless forced. Nothing is written.
pub fn plan(
    pack: &Pack,
    store: Option<&Store>,
    change: &ModeChange,
    now: Timestamp,
) -> Result<Plan, PromotionError> {
    let target = RuleRef::parse(&change.name);
    let edit = promote::set_mode(pack, &target, change.to)?;
    let readiness = match store {
        Some(store) if edit.to > edit.from => {
            readiness::assess(pack, store, Some(&change.name), now)?
                .into_iter()
                .next()
        }
        _ => None,
    };
    Ok(gate(edit, readiness, change, pack))
}

/// [`plan`] with the rule's readiness already gathered (`None`: there is no evidence),
/// for a caller that has just shown it: the same edit and the same gate.
pub fn plan_with_readiness(
    pack: &Pack,
    readiness: Option<Readiness>,
    change: &ModeChange,
) -> Result<Plan, PromotionError> {
    let target = RuleRef::parse(&change.name);
    let edit = promote::set_mode(pack, &target, change.to)?;
    Ok(gate(edit, readiness, change, pack))
}

fn gate(edit: Edit, readiness: Option<Readiness>, change: &ModeChange, pack: &Pack) -> Plan {
    let gate = if edit.to > edit.from {
        match readiness {
            Some(r) if r.verdict == Verdict::Ready => Gate::Ready(r),
            readiness if change.force => Gate::Forced(readiness),
            Some(r) => Gate::Refused(Refusal::NotReady(Box::new(r))),
            None => Gate::Refused(Refusal::NoEvidence),
        }
    } else if edit.to < edit.from && !has_reason(change) {
        Gate::Refused(Refusal::NoReason)
    } else {
        Gate::NotNeeded
    };
    Plan {
        edit,
        gate,
        change: change.clone(),
        pack_dir: pack.dir().to_owned(),
    }
}

/// Whether the change says why, in more than blanks.
fn has_reason(change: &ModeChange) -> bool {
    change
        .reason
        .as_deref()
        .is_some_and(|reason| !reason.trim().is_empty())
}

/// Makes a planned change: writes the file, then records who, why, whether it was
/// forced and against which verdict, at `now`. When the record cannot be stored the
/// file is restored and the error says so.
pub fn apply(plan: &Plan, store: &Store, now: Timestamp) -> Result<Applied, PromotionError> {
    let forced = match &plan.gate {
        Gate::Refused(refusal) => {
            return Err(PromotionError::Refused {
                name: plan.name().to_owned(),
                refusal: refusal.clone(),
            });
        }
        Gate::Forced(_) => true,
        Gate::NotNeeded | Gate::Ready(_) => false,
    };
    if (forced || plan.edit.to < plan.edit.from) && !has_reason(&plan.change) {
        return Err(PromotionError::NoReason(plan.name().to_owned()));
    }
    plan.edit
        .write(&plan.pack_dir)
        .map_err(PromotionError::Write)?;
    let record = Promotion {
        seq: 0,
        rule: plan.name().to_owned(),
        from_mode: plan.edit.from.as_str().to_owned(),
        to_mode: plan.edit.to.as_str().to_owned(),
        forced,
        reason: plan.change.reason.clone(),
        by: plan.change.by.clone(),
        at: now,
        verdict: plan
            .readiness()
            .map_or("none", |r| r.verdict.as_str())
            .to_owned(),
    };
    match store.record_promotion(&record) {
        Ok(promotion) => Ok(Applied {
            file: plan.edit.file.clone(),
            promotion,
        }),
        Err(cause) => {
            let restored = match plan.edit.reversed().write(&plan.pack_dir) {
                Ok(()) => Restored::Yes,
                Err(e) => Restored::Failed(e),
            };
            Err(PromotionError::Unrecorded { cause, restored })
        }
    }
}
