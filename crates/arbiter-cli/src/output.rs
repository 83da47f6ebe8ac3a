//! Human and JSON renderings of packs and decisions, and writing them to standard output
//! without panicking when its reader goes away.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write as _};

use arbiter_core::request::EntityRef;
use arbiter_core::response::Outcome;
use arbiter_core::rule::{Kind, RuleRef};
use arbiter_core::{Decision, DecisionRequest, Pack, RequestError};
use serde_json::{Value, json};

use crate::Failure;

/// Writes to standard output (what `out!` and `outln!` expand to). `println!` panics when
/// the reader has closed the pipe (`arbiter log | head -1`); this returns
/// [`Failure::Closed`] instead, so the command stops there and exits quietly.
pub fn write_stdout(args: fmt::Arguments<'_>) -> Result<(), Failure> {
    io::stdout().lock().write_fmt(args).map_err(stdout_error)
}

/// A failed write to standard output: [`Failure::Closed`] for a broken pipe, an error
/// otherwise (a full disk behind a redirect is worth saying).
pub fn stdout_error(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::Closed
    } else {
        Failure::Input(format!("cannot write to standard output: {e}"))
    }
}

/// Output that is shown but not needed: a closed standard output does not stop the
/// command (a promotion is still written, a verdict still becomes the exit code).
pub fn unless_closed(written: Result<(), Failure>) -> Result<(), Failure> {
    match written {
        Err(Failure::Closed) => Ok(()),
        other => other,
    }
}

/// What `arbiter validate` reports about a pack.
pub struct PackSummary {
    version: String,
    permits: usize,
    forbids: usize,
    by_mode: BTreeMap<String, usize>,
    by_effect: BTreeMap<String, usize>,
    scopes: BTreeMap<String, String>,
    default_scope: String,
    warnings: usize,
}

pub fn summary(pack: &Pack) -> PackSummary {
    let mut by_mode = BTreeMap::new();
    let mut by_effect = BTreeMap::new();
    let mut permits = 0;
    for rule in pack.rules() {
        if rule.kind == Kind::Permit {
            permits += 1;
        }
        if let Some(mode) = rule.mode {
            *by_mode.entry(mode.to_string()).or_insert(0) += 1;
        }
        if let Some(effect) = rule.effect {
            *by_effect.entry(effect.to_string()).or_insert(0) += 1;
        }
    }
    PackSummary {
        version: pack.version().to_owned(),
        permits,
        forbids: pack.rules().len() - permits,
        by_mode,
        by_effect,
        scopes: pack
            .default_deny_scopes()
            .into_iter()
            .map(|(ty, mode)| (RuleRef::DefaultDeny(ty).to_string(), mode.to_string()))
            .collect(),
        default_scope: pack.config().default_deny.mode.to_string(),
        warnings: pack.warnings().len(),
    }
}

impl PackSummary {
    pub fn to_json(&self) -> Value {
        json!({
            "valid": true,
            "policy_version": self.version,
            "rules": self.permits + self.forbids,
            "permits": self.permits,
            "forbids": self.forbids,
            "by_mode": self.by_mode,
            "by_effect": self.by_effect,
            "default_deny": {"mode": self.default_scope, "scopes": self.scopes},
            "warnings": self.warnings,
        })
    }
}

fn counts(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for PackSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pack ok: {} rules ({} permits, {} forbids)",
            self.permits + self.forbids,
            self.permits,
            self.forbids
        )?;
        writeln!(f, "  forbids by mode:   {}", counts(&self.by_mode))?;
        writeln!(f, "  forbids by effect: {}", counts(&self.by_effect))?;
        write!(f, "  default-deny:      ")?;
        if self.scopes.is_empty() {
            writeln!(f, "{} (every principal type)", self.default_scope)?;
        } else {
            let scopes: Vec<String> = self
                .scopes
                .iter()
                .map(|(s, m)| format!("{s} {m}"))
                .collect();
            writeln!(f, "{}", scopes.join(", "))?;
        }
        writeln!(f, "  version:           {}", self.version)?;
        if self.warnings > 0 {
            writeln!(f, "  {} warning(s), printed above", self.warnings)?;
        }
        Ok(())
    }
}

pub fn json_line(result: &Result<Decision, RequestError>) -> String {
    match result {
        Ok(decision) => serde_json::to_string(decision).unwrap_or_else(|e| {
            json!({"error": {"code": "internal", "message": e.to_string()}}).to_string()
        }),
        Err(error) => error.to_json().to_string(),
    }
}

pub fn human_line(
    request: Option<&DecisionRequest>,
    result: &Result<Decision, RequestError>,
    line: Option<usize>,
) -> String {
    let at = line.map(|n| format!("{n}: ")).unwrap_or_default();
    let d = match result {
        Ok(d) => d,
        Err(e) => return format!("{at}INVALID ({}) {e}", e.code()),
    };
    let mut text = match (d.decision, d.effect) {
        (Outcome::Allow, _) => format!("{at}ALLOW"),
        (Outcome::Deny, Some(effect)) => format!("{at}DENY ({effect})"),
        (Outcome::Deny, None) => format!("{at}DENY"),
    };
    if let Some(r) = request {
        text.push_str(&format!(
            "  {} → {} on {}",
            show(&r.principal),
            show(&r.action),
            show(&r.resource)
        ));
    }
    if !d.enforced.is_empty() {
        let e: Vec<String> = d.enforced.iter().map(ToString::to_string).collect();
        text.push_str(&format!("  enforced: {}", e.join(", ")));
    }
    if let Some(retry) = d.retry_after_s {
        text.push_str(&format!("  retry after {retry}s"));
    }
    if !d.warnings.is_empty() {
        let w: Vec<String> = d
            .warnings
            .iter()
            .map(|w| format!("{} ({})", w.rule, w.message))
            .collect();
        text.push_str(&format!("  warned: {}", w.join(", ")));
    }
    if !d.audit.is_empty() {
        let a: Vec<String> = d
            .audit
            .iter()
            .map(|a| format!("{} (would {})", a.rule, a.would))
            .collect();
        text.push_str(&format!("  audited: {}", a.join(", ")));
    }
    if !d.errors.is_empty() {
        let e: Vec<String> = d
            .errors
            .iter()
            .map(|e| format!("{} (as {}: {})", e.rule, e.handled_as, e.message))
            .collect();
        text.push_str(&format!("  errors: {}", e.join(", ")));
    }
    if let Some(reason) = &d.reason {
        text.push_str(&format!("  reason: {reason}"));
    }
    text
}

fn show(entity: &EntityRef) -> String {
    match entity {
        EntityRef::Text(text) => text.clone(),
        EntityRef::Typed(t) => format!("{}::{:?}", t.ty, t.id),
    }
}

/// `text` safe to print to a terminal: control characters (an escape sequence in a
/// principal a caller chose, a newline in an annotation) are shown escaped, never sent.
/// Logged principals and pack annotations are hostile input like any other.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("Agent::\"bot\""), "Agent::\"bot\"");
        assert_eq!(
            printable("Agent::\"\u{1b}[2Jx\nnext\""),
            "Agent::\"\\u{1b}[2Jx\\nnext\""
        );
    }
}
