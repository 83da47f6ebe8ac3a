//! Reading arbiter's annotations on a Cedar policy into a [`Rule`], with a located problem
//! for every one that is missing, misplaced or malformed.

use std::path::Path;

use cedar_policy::{Effect as CedarEffect, Policy};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::diag::Problem;
use crate::period::Limit;
use crate::rule::{Effect, Kind, Mode, OnError, Rule, Severity};

/// The annotations arbiter reads; others are kept by Cedar and reported as warnings.
const KNOWN: [&str; 11] = [
    "id",
    "mode",
    "effect",
    "limit",
    "on_error",
    "severity",
    "owner",
    "reason",
    "maps",
    "audit_until",
    "baseline",
];

/// Annotations that only make sense on a forbid.
const FORBID_ONLY: [&str; 5] = ["mode", "effect", "limit", "on_error", "audit_until"];

/// Where a policy is, to place problems.
pub(crate) struct Located<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub chunk_start: usize,
    pub chunk: &'a str,
    pub line: usize,
}

impl Located<'_> {
    /// A problem on the line of annotation `@name` (or the policy's first line).
    fn problem(&self, name: &str, rule: Option<&str>, message: String) -> Problem {
        let needle = format!("@{name}");
        let problem = Problem::in_file(self.file, message).for_rule(rule);
        match self.chunk.find(&needle) {
            Some(at) => problem.at_offset(self.text, self.chunk_start + at),
            None => problem.at_line(self.line),
        }
    }
}

/// The result of reading one policy: a rule when it is usable, with problems and warnings.
pub(crate) struct Read {
    pub rule: Option<Rule>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

pub(crate) fn read_rule(
    policy: &Policy,
    at: &Located<'_>,
    config: &Config,
    catalog: &Catalog,
    hash: String,
) -> Read {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let id = match policy.annotation("id") {
        None => {
            problems.push(at.problem(
                "id",
                None,
                "missing @id: every policy needs a stable, unique @id(\"…\")".to_owned(),
            ));
            None
        }
        Some(id) => match check_id(id) {
            Ok(()) => Some(id.to_owned()),
            Err(why) => {
                problems.push(at.problem("id", Some(id), why.to_string()));
                None
            }
        },
    };
    let rule_id = id.as_deref();
    let kind = match policy.effect() {
        CedarEffect::Permit => Kind::Permit,
        CedarEffect::Forbid => Kind::Forbid,
    };
    for (key, _) in policy.annotations() {
        if !KNOWN.contains(&key) {
            warnings.push(at.problem(
                key,
                rule_id,
                format!(
                    "unknown annotation @{key} (arbiter reads: {})",
                    KNOWN.join(", ")
                ),
            ));
        }
        if kind == Kind::Permit && FORBID_ONLY.contains(&key) {
            problems.push(at.problem(
                key,
                rule_id,
                format!(
                    "@{key} on a permit: permits widen access and have no mode or effect; \
                     only forbids take @mode, @effect, @limit, @on_error and @audit_until"
                ),
            ));
        }
    }
    let mut word = |name: &str, words: &[&str]| -> Option<String> {
        let value = policy.annotation(name)?;
        if words.contains(&value) {
            Some(value.to_owned())
        } else {
            problems.push(at.problem(
                name,
                rule_id,
                format!("@{name}(\"{value}\") is not one of: {}", words.join(", ")),
            ));
            None
        }
    };
    let mode = word("mode", Mode::WORDS).and_then(|w| Mode::from_word(&w));
    let effect = word("effect", Effect::WORDS).and_then(|w| Effect::from_word(&w));
    let on_error = word("on_error", OnError::WORDS).and_then(|w| OnError::from_word(&w));
    let severity = word("severity", Severity::WORDS).and_then(|w| Severity::from_word(&w));
    let effect_written = policy.annotation("effect").is_some();
    let effect_value = effect.unwrap_or(Effect::Deny);

    let limit = match policy.annotation("limit") {
        Some(text) => match Limit::parse(text) {
            Ok(limit) => Some(limit),
            Err(why) => {
                problems.push(at.problem("limit", rule_id, format!("@limit: {why}")));
                None
            }
        },
        None => None,
    };
    if kind == Kind::Forbid {
        if effect_value == Effect::Throttle && policy.annotation("limit").is_none() {
            problems.push(
                at.problem(
                    "effect",
                    rule_id,
                    "@effect(\"throttle\") needs @limit(\"N/period\"), e.g. @limit(\"30/1m\")"
                        .to_owned(),
                ),
            );
        }
        if policy.annotation("limit").is_some()
            && effect_written
            && effect_value != Effect::Throttle
            || policy.annotation("limit").is_some() && !effect_written
        {
            problems.push(at.problem(
                "limit",
                rule_id,
                "@limit only applies with @effect(\"throttle\")".to_owned(),
            ));
        }
    }

    let mut maps = Vec::new();
    if let Some(text) = policy.annotation("maps") {
        let ids: Vec<&str> = text.split(',').map(str::trim).collect();
        if ids.iter().any(|s| s.is_empty()) {
            problems.push(at.problem(
                "maps",
                rule_id,
                format!("@maps(\"{text}\"): expected comma-separated ids like `OWASP-NHI:NHI5, NIST-CSF-2.0:PR.AA-05`"),
            ));
        }
        for written in ids.into_iter().filter(|s| !s.is_empty()) {
            match catalog.resolve(written) {
                Ok(found) => maps.extend(found),
                Err(why) => problems.push(at.problem("maps", rule_id, format!("@maps: {why}"))),
            }
        }
    }

    let audit_until = match policy.annotation("audit_until") {
        Some(text) => match parse_date(text) {
            Ok(date) => Some(date),
            Err(why) => {
                problems.push(at.problem("audit_until", rule_id, why.to_string()));
                None
            }
        },
        None => None,
    };
    for free in ["owner", "reason"] {
        if policy.annotation(free).is_some_and(|v| v.trim().is_empty()) {
            problems.push(at.problem(free, rule_id, format!("@{free} is empty")));
        }
    }

    let rule = id.map(|id| {
        let forbid = kind == Kind::Forbid;
        Rule {
            kind,
            mode: forbid.then(|| mode.unwrap_or(config.defaults.mode)),
            effect: forbid.then_some(effect_value),
            limit: if forbid && effect_value == Effect::Throttle {
                limit
            } else {
                None
            },
            on_error: on_error.unwrap_or(config.defaults.on_error),
            severity: severity.unwrap_or(Severity::Medium),
            owner: policy.annotation("owner").map(str::to_owned),
            reason: policy.annotation("reason").map(str::to_owned),
            maps,
            audit_until,
            file: at.file.to_owned(),
            line: at.line,
            warning: policy.annotation("reason").map_or_else(
                || format!("rule {id} would {effect_value} this request"),
                str::to_owned,
            ),
            hash,
            id,
        }
    });
    Read {
        rule,
        problems,
        warnings,
    }
}

/// Why an `@id` cannot name a rule.
#[derive(Debug, thiserror::Error)]
enum IdError {
    #[error("@id is empty")]
    Empty,
    #[error("@id(\"{0}\"): ids starting with `default-deny:` name arbiter's default-deny scopes")]
    Reserved(String),
    #[error("@id(\"{0}\"): ids are at most 200 characters, without spaces or control characters")]
    Shape(String),
}

fn check_id(id: &str) -> Result<(), IdError> {
    if id.trim().is_empty() {
        return Err(IdError::Empty);
    }
    if id.starts_with("default-deny:") {
        return Err(IdError::Reserved(id.to_owned()));
    }
    if id.len() > 200 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(IdError::Shape(id.to_owned()));
    }
    Ok(())
}

/// Why an `@audit_until` is not a date.
#[derive(Debug, thiserror::Error)]
enum DateError {
    #[error("@audit_until(\"{0}\") is not a date `YYYY-MM-DD`")]
    Shape(String),
    #[error("@audit_until(\"{text}\") is not a valid date: {cause}")]
    Invalid { text: String, cause: jiff::Error },
}

fn parse_date(text: &str) -> Result<jiff::civil::Date, DateError> {
    let ok_shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !ok_shape {
        return Err(DateError::Shape(text.to_owned()));
    }
    text.parse::<jiff::civil::Date>()
        .map_err(|cause| DateError::Invalid {
            text: text.to_owned(),
            cause,
        })
}
