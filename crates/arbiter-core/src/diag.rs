//! Problems found in a pack or a test file, located by file, line and rule, so that every
//! one of them can be reported at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem (or warning) with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the pack where possible.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The rule's `@id`, when the problem belongs to a rule.
    pub rule: Option<String>,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Problem {
    /// A problem with a whole file.
    pub fn in_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            rule: None,
            message: message.into(),
        }
    }

    /// Places the problem at byte `offset` of `text`.
    pub fn at_offset(mut self, text: &str, offset: usize) -> Self {
        let (line, column) = line_col(text, offset);
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Places the problem on `line`.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// Names the rule the problem belongs to.
    pub fn for_rule(mut self, rule: Option<&str>) -> Self {
        self.rule = rule.map(str::to_owned);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(rule) = &self.rule {
            write!(f, ": rule `{rule}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// 1-based line and column of byte `offset` in `text` (clamped to the text).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before.get(nl + 1..).map_or(0, |s| s.chars().count())
    }) + 1;
    (line, column)
}

/// Turns a Cedar diagnostic (and the ones related to it) into problems, placing each at its
/// first labelled span, shifted by `base` bytes into `text`.
pub fn from_cedar(
    diagnostic: &dyn miette::Diagnostic,
    file: &Path,
    text: &str,
    base: usize,
    rule: Option<&str>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    push_cedar(diagnostic, file, text, base, rule, &mut out);
    out
}

fn push_cedar(
    diagnostic: &dyn miette::Diagnostic,
    file: &Path,
    text: &str,
    base: usize,
    rule: Option<&str>,
    out: &mut Vec<Problem>,
) {
    let mut message = diagnostic.to_string();
    if let Some(help) = diagnostic.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    let mut problem = Problem::in_file(file, message).for_rule(rule);
    if let Some(label) = diagnostic.labels().and_then(|mut labels| labels.next()) {
        problem = problem.at_offset(text, base + label.offset());
    }
    out.push(problem);
    if let Some(related) = diagnostic.related() {
        for inner in related {
            push_cedar(inner, file, text, base, rule, out);
        }
    }
}

/// Every problem that kept a pack (or a test file) from loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            writeln!(f, "error: {problem}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })
    }
}

/// A Cedar error as one line: its message and, when it has one, its help.
pub fn cedar_message(e: &dyn miette::Diagnostic) -> String {
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    message
}

/// A Cedar error about request data as one line, with every quoted value replaced by
/// `…`: Cedar quotes the offending value in backticks, and request data may be what
/// `[log] mask` hides. Names (attributes, types) and entity references stay.
pub fn cedar_message_redacted(e: &dyn miette::Diagnostic) -> String {
    redact_quoted(&cedar_message(e))
}

fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let after = after.get(1..).unwrap_or_default();
        let Some(close) = after.find('`') else {
            // An unbalanced quote: what follows may be a value.
            out.push_str("`…");
            return out;
        };
        let quoted = after.get(..close).unwrap_or_default();
        let is_name = quoted
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && quoted.chars().next().is_some_and(|c| !c.is_ascii_digit());
        let is_uid = quoted.parse::<cedar_policy::EntityUid>().is_ok();
        out.push('`');
        out.push_str(if is_name || is_uid { quoted } else { "…" });
        out.push('`');
        rest = after.get(close + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_names_and_uids_and_drops_values() {
        let said = redact_quoted(
            "in attribute `db` on `Config::\"a\"`, type mismatch: value was expected to have \
             type string, but it actually has type record: `{inner: \"SECRET\"}`",
        );
        assert!(!said.contains("SECRET"), "{said}");
        assert!(
            said.contains("`db`") && said.contains("`Config::\"a\"`"),
            "{said}"
        );
        assert_eq!(redact_quoted("got `42` and `[1, 2]`"), "got `…` and `…`");
        assert_eq!(redact_quoted("open `SECRET"), "open `…");
    }

    #[test]
    fn line_col_counts_from_one() {
        let text = "ab\ncd\nef";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (2, 2));
        assert_eq!(line_col(text, 6), (3, 1));
        assert_eq!(line_col(text, 999), (3, 3));
    }

    #[test]
    fn problems_render_file_line_and_rule() {
        let p = Problem::in_file("policies/a.cedar", "unknown mode `x`")
            .at_line(3)
            .for_rule(Some("r1"));
        assert_eq!(
            p.to_string(),
            "policies/a.cedar:3: rule `r1`: unknown mode `x`"
        );
    }
}
