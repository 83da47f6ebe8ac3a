//! A rule is one Cedar policy of the pack plus what arbiter's annotations say about it.

use std::fmt;
use std::path::PathBuf;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::period::Limit;

/// What happens at the point of action when a forbid fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing happens to the caller; a would-… finding is recorded.
    Audit,
    /// Allowed, with a warning the caller can show.
    Warn,
    /// The rule's effect is applied.
    Enforce,
}

/// What an enforced forbid does. Ordered from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Let N requests through per period, then deny with `retry_after_s`.
    Throttle,
    /// Deny the request.
    Deny,
    /// Deny, revoke the presenting credential and terminate the session.
    Revoke,
}

/// What an evaluation error means for a forbid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The rule counts as satisfied (fail closed).
    Deny,
    /// The rule is ignored.
    Skip,
}

/// How much a rule matters to its owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium (the default).
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

/// Permit or forbid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Widens access; has no mode.
    Permit,
    /// Restricts access with a mode and an effect.
    Forbid,
}

macro_rules! word_enum {
    ($ty:ty { $($word:literal => $variant:path),+ $(,)? }) => {
        impl $ty {
            /// The words this value is written as.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// Parses the word as written in policies and configuration.
            pub fn from_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($variant),)+
                    _ => None,
                }
            }

            /// The word for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($variant => $word,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

word_enum!(Mode { "audit" => Mode::Audit, "warn" => Mode::Warn, "enforce" => Mode::Enforce });
word_enum!(Effect { "throttle" => Effect::Throttle, "deny" => Effect::Deny, "revoke" => Effect::Revoke });
word_enum!(OnError { "deny" => OnError::Deny, "skip" => OnError::Skip });
word_enum!(Severity {
    "low" => Severity::Low,
    "medium" => Severity::Medium,
    "high" => Severity::High,
    "critical" => Severity::Critical,
});
word_enum!(Kind { "permit" => Kind::Permit, "forbid" => Kind::Forbid });

/// What a decision names when it says which control fired: a rule of the pack, or the
/// default-deny scope of a principal type. Written `<id>` and `default-deny:<Type>` on the
/// wire and in the log; a rule id can never start with `default-deny:`, so the two never
/// collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleRef {
    /// A rule, by its `@id`.
    Rule(String),
    /// The default-deny scope of a principal type, by the type's name.
    DefaultDeny(String),
}

impl RuleRef {
    /// The prefix that names a default-deny scope.
    pub const DEFAULT_DENY_PREFIX: &'static str = "default-deny:";

    /// Reads `<id>` or `default-deny:<Type>`.
    pub fn parse(text: &str) -> RuleRef {
        match text.strip_prefix(Self::DEFAULT_DENY_PREFIX) {
            Some(ty) => RuleRef::DefaultDeny(ty.to_owned()),
            None => RuleRef::Rule(text.to_owned()),
        }
    }

    /// The default-deny scope of a principal type.
    pub fn default_deny(principal_type: impl Into<String>) -> RuleRef {
        RuleRef::DefaultDeny(principal_type.into())
    }

    /// The rule's id, when this is a rule.
    pub fn rule_id(&self) -> Option<&str> {
        match self {
            RuleRef::Rule(id) => Some(id),
            RuleRef::DefaultDeny(_) => None,
        }
    }

    /// Whether `text` (`<id>` or `default-deny:<Type>`) names this control.
    pub fn is(&self, text: &str) -> bool {
        match self {
            RuleRef::Rule(id) => id == text,
            RuleRef::DefaultDeny(ty) => text
                .strip_prefix(Self::DEFAULT_DENY_PREFIX)
                .is_some_and(|t| t == ty),
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Rule(id) => f.write_str(id),
            RuleRef::DefaultDeny(ty) => write!(f, "{}{ty}", Self::DEFAULT_DENY_PREFIX),
        }
    }
}

impl From<&str> for RuleRef {
    fn from(text: &str) -> RuleRef {
        RuleRef::parse(text)
    }
}

impl PartialEq<str> for RuleRef {
    fn eq(&self, other: &str) -> bool {
        self.is(other)
    }
}

impl PartialEq<&str> for RuleRef {
    fn eq(&self, other: &&str) -> bool {
        self.is(other)
    }
}

impl PartialEq<String> for RuleRef {
    fn eq(&self, other: &String) -> bool {
        self.is(other)
    }
}

impl Serialize for RuleRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RuleRef::Rule(id) => serializer.serialize_str(id),
            RuleRef::DefaultDeny(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for RuleRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RuleRef, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(RuleRef::parse(&text))
    }
}

/// A framework control a rule maps to, resolved against the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlRef {
    /// The canonical id, e.g. `NIST-CSF-2.0:PR.AA-05`.
    pub id: String,
    /// The id as the rule wrote it, when it differs (an alias or a CSF 1.1 id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    /// The control's title.
    pub title: String,
}

/// One policy of the pack with arbiter's reading of its annotations.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// `@id`, stable and unique in the pack; also the Cedar policy id.
    pub id: String,
    /// Permit or forbid.
    pub kind: Kind,
    /// The mode; `None` for permits.
    pub mode: Option<Mode>,
    /// The effect; `None` for permits.
    pub effect: Option<Effect>,
    /// The throttle limit, with `throttle`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_display")]
    pub limit: Option<Limit>,
    /// What an evaluation error means.
    pub on_error: OnError,
    /// Severity.
    pub severity: Severity,
    /// `@owner`.
    pub owner: Option<String>,
    /// `@reason`, returned to callers on deny and warn.
    pub reason: Option<String>,
    /// `@maps`, resolved.
    pub maps: Vec<ControlRef>,
    /// `@audit_until`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_display")]
    pub audit_until: Option<Date>,
    /// The file the rule is in, relative to the pack.
    pub file: PathBuf,
    /// The 1-based line the policy starts on.
    pub line: usize,
    /// `sha256:` of the policy's source text: changes when the rule changes.
    pub hash: String,
    /// What a warning from this rule says: its `@reason`, or a sentence naming it.
    #[serde(skip)]
    pub(crate) warning: String,
}

impl Rule {
    /// Whether this forbid applies its effect at the point of action.
    pub fn is_enforced(&self) -> bool {
        self.mode == Some(Mode::Enforce)
    }
}

fn as_display<T: fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.collect_str(v),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for word in Mode::WORDS {
            assert_eq!(Mode::from_word(word).map(Mode::as_str), Some(*word));
        }
        for word in Effect::WORDS {
            assert_eq!(Effect::from_word(word).map(Effect::as_str), Some(*word));
        }
        assert_eq!(Mode::from_word("enforced"), None);
    }

    #[test]
    fn rule_refs_round_trip_through_their_text() {
        for text in ["no-delete", "default-deny:Agent", "default-deny:ns::Job"] {
            let parsed = RuleRef::parse(text);
            assert_eq!(parsed.to_string(), text);
            assert!(parsed.is(text));
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(serde_json::from_str::<RuleRef>(&json).unwrap(), parsed);
        }
        assert_eq!(
            RuleRef::parse("default-deny:Agent"),
            RuleRef::DefaultDeny("Agent".into())
        );
        assert!(!RuleRef::default_deny("Agent").is("Agent"));
        assert!(!RuleRef::Rule("Agent".into()).is("default-deny:Agent"));
    }

    #[test]
    fn effects_order_by_strength() {
        assert!(Effect::Revoke > Effect::Deny && Effect::Deny > Effect::Throttle);
    }
}
