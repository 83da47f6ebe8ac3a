//! `arbiter test`: policy tests as data. A test is `{name, steps: [{request, expect}]}`;
//! the steps of a test share session and throttle state, as a server's requests would, and
//! `expect` is a partial match on the decision.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diag::{Problem, Problems};
use crate::engine::{Engine, TimeSource};
use crate::pack::Pack;
use crate::request::DecisionRequest;

/// One test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Its name.
    pub name: String,
    /// Requests in order, each with what its decision must show.
    pub steps: Vec<Step>,
}

/// One request and what its decision must show.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The request.
    pub request: DecisionRequest,
    /// A partial decision: listed fields only; `enforced`, `warnings`, `audit` and `errors`
    /// are compared as sets. `error: <code>` expects the request to be refused.
    pub expect: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileShape {
    List(Vec<TestCase>),
    Wrapped { tests: Vec<TestCase> },
    One(TestCase),
}

/// The tests of one file.
#[derive(Debug, Clone)]
pub struct TestFile {
    /// The file, relative to the pack.
    pub path: PathBuf,
    /// Its tests.
    pub tests: Vec<TestCase>,
}

const EXPECT_KEYS: [&str; 9] = [
    "decision",
    "effect",
    "retry_after_s",
    "enforced",
    "warnings",
    "audit",
    "errors",
    "reason",
    "error",
];
const SET_KEYS: [&str; 4] = ["enforced", "warnings", "audit", "errors"];

/// Loads `PACK/tests/*.yaml` (and `*.yml`), reporting every broken file at once.
pub fn load_tests(pack_dir: &Path) -> Result<Vec<TestFile>, Problems> {
    let dir = pack_dir.join("tests");
    let mut problems = Vec::new();
    let mut paths: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => {
            let mut paths = Vec::new();
            for entry in entries {
                match entry {
                    Ok(e)
                        if e.path()
                            .extension()
                            .is_some_and(|x| x == "yaml" || x == "yml") =>
                    {
                        paths.push(e.path());
                    }
                    Ok(_) => {}
                    // A test file skipped unseen would make a failing suite pass.
                    Err(e) => {
                        problems.push(Problem::in_file("tests", format!("cannot read: {e}")));
                    }
                }
            }
            paths
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Problems(vec![Problem::in_file(
                "tests",
                format!("cannot read: {e}"),
            )]));
        }
    };
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let relative = path.strip_prefix(pack_dir).unwrap_or(&path).to_owned();
        match load_file(&path, &relative) {
            Ok(file) => files.push(file),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(Problems(problems))
    }
}

fn load_file(path: &Path, relative: &Path) -> Result<TestFile, Vec<Problem>> {
    let text = crate::pack::file::read(path)
        .map_err(|e| vec![Problem::in_file(relative, e.to_string())])?;
    let shape: FileShape = serde_yaml_ng::from_str(&text).map_err(|e| {
        let mut p = Problem::in_file(relative, yaml_message(&e));
        if let Some(at) = e.location() {
            p = p.at_line(at.line());
        }
        vec![p]
    })?;
    let tests = match shape {
        FileShape::List(t) | FileShape::Wrapped { tests: t } => t,
        FileShape::One(t) => vec![t],
    };
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    for test in &tests {
        if !names.insert(test.name.as_str()) {
            problems.push(Problem::in_file(
                relative,
                format!(
                    "two tests are named `{}`; names must be unique in a file",
                    test.name
                ),
            ));
        }
        if test.steps.is_empty() {
            problems.push(Problem::in_file(
                relative,
                format!("test `{}` has no steps", test.name),
            ));
        }
        for (n, step) in test.steps.iter().enumerate() {
            let at = format!("test `{}` step {}", test.name, n + 1);
            if step.expect.is_empty() {
                problems.push(Problem::in_file(
                    relative,
                    format!("{at}: `expect` checks nothing"),
                ));
            }
            if step.expect.contains_key("error") && step.expect.len() > 1 {
                problems.push(Problem::in_file(
                    relative,
                    format!("{at}: `expect` has `error` (a refused request) and decision fields; a request is either refused or decided"),
                ));
            }
            for key in step.expect.keys() {
                if !EXPECT_KEYS.contains(&key.as_str()) {
                    problems.push(Problem::in_file(
                        relative,
                        format!(
                            "{at}: unknown expect key `{key}` (known: {})",
                            EXPECT_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(TestFile {
            path: relative.to_owned(),
            tests,
        })
    } else {
        Err(problems)
    }
}

fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    let text = e.to_string();
    if text.contains("did not match any variant of untagged enum FileShape") {
        "expected a list of tests, each `{name, steps: [{request, expect}]}` \
         (unknown or missing fields?)"
            .to_owned()
    } else {
        text
    }
}

/// The result of one test.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// `file::name`.
    pub name: String,
    /// Why it failed, one line per mismatch; empty when it passed.
    pub failures: Vec<String>,
}

impl TestOutcome {
    /// Whether the test passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one test on a fresh engine (fresh sessions and throttles).
pub fn run_test(pack: &Arc<Pack>, file: &Path, test: &TestCase) -> TestOutcome {
    let engine = Engine::new(Arc::clone(pack)).with_time_source(TimeSource::RequestMaySet);
    let mut failures = Vec::new();
    for (n, step) in test.steps.iter().enumerate() {
        let actual = match engine.decide(&step.request) {
            Ok(decision) => serde_json::to_value(&decision).unwrap_or(Value::Null),
            Err(error) => error.to_json(),
        };
        for mismatch in compare(&step.expect, &actual) {
            failures.push(format!("step {}: {mismatch}", n + 1));
        }
    }
    TestOutcome {
        name: format!("{}::{}", file.display(), test.name),
        failures,
    }
}

/// Every way `actual` differs from the partial `expect`.
pub fn compare(expect: &Map<String, Value>, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(error) = actual.get("error") {
        match expect.get("error") {
            Some(code) if Some(code) == error.get("code") => {}
            _ => out.push(format!("the request was refused: {error}")),
        }
        return out;
    }
    for (key, want) in expect {
        let got = actual.get(key).unwrap_or(&Value::Null);
        if key == "error" {
            out.push(format!(
                "expected the request to be refused with `{want}`, but it was decided"
            ));
        } else if SET_KEYS.contains(&key.as_str()) {
            if let Some(why) = compare_sets(want, got) {
                out.push(format!("{key}: {why}"));
            }
        } else if !scalar_matches(want, got) {
            out.push(format!("{key}: expected {want}, got {got}"));
        }
    }
    out
}

fn scalar_matches(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == got,
    }
}

/// Sets of rule entries: an expected element is a rule id or a partial object.
fn compare_sets(want: &Value, got: &Value) -> Option<String> {
    let wanted: Vec<&Value> = match want {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => return Some(format!("expected a list, the test says {other}")),
    };
    let actual: Vec<&Value> = got
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut used = vec![false; actual.len()];
    let mut missing = Vec::new();
    for w in &wanted {
        let hit = actual
            .iter()
            .enumerate()
            .find(|(i, a)| !used.get(*i).copied().unwrap_or(true) && element_matches(w, a));
        match hit {
            Some((i, _)) => {
                if let Some(slot) = used.get_mut(i) {
                    *slot = true;
                }
            }
            None => missing.push(w.to_string()),
        }
    }
    let extra: Vec<String> = actual
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(a, _)| a.to_string())
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("missing {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        why.push(format!("unexpected {}", extra.join(", ")));
    }
    Some(format!("{} (got {got})", why.join("; ")))
}

fn element_matches(want: &Value, got: &Value) -> bool {
    match want {
        Value::String(id) => got == want || got.get("rule") == Some(&Value::String(id.clone())),
        Value::Object(fields) => fields
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| scalar_matches(v, g))),
        other => got == other,
    }
}

/// A summary line like cargo's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.failed == 0 { "ok" } else { "FAILED" };
        write!(
            f,
            "test result: {verdict}. {} passed, {} failed",
            self.passed, self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn partial_match_checks_only_listed_fields() {
        let actual = json!({"decision": "deny", "effect": "deny", "enforced": ["a"], "audit": []});
        assert!(compare(&expect(json!({"decision": "deny"})), &actual).is_empty());
        assert_eq!(
            compare(&expect(json!({"decision": "allow"})), &actual).len(),
            1
        );
    }

    #[test]
    fn lists_compare_as_sets_of_partial_elements() {
        let actual =
            json!({"audit": [{"rule": "b", "would": "deny"}, {"rule": "a", "would": "throttle"}]});
        let same = expect(json!({"audit": [{"rule": "a"}, {"rule": "b", "would": "deny"}]}));
        assert!(compare(&same, &actual).is_empty());
        let fewer = expect(json!({"audit": [{"rule": "a"}]}));
        assert!(
            compare(&fewer, &actual)
                .iter()
                .any(|m| m.contains("unexpected"))
        );
        let wrong = expect(json!({"audit": ["a", {"rule": "b", "would": "revoke"}]}));
        assert!(
            compare(&wrong, &actual)
                .iter()
                .any(|m| m.contains("missing"))
        );
    }

    fn write(yaml: &str) -> Result<Vec<TestFile>, Problems> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tests")).expect("mkdir");
        std::fs::write(dir.path().join("tests/t.yaml"), yaml).expect("write");
        load_tests(dir.path())
    }

    #[test]
    fn tests_that_check_nothing_or_contradict_themselves_are_broken() {
        let step =
            "request: {principal: 'A::\"a\"', action: 'Action::\"x\"', resource: 'R::\"r\"'}";
        let empty = write(&format!(
            "- name: t\n  steps:\n    - {{{step}, expect: {{}}}}\n"
        ));
        assert!(empty.is_err_and(|p| p.to_string().contains("checks nothing")));
        let both = write(&format!(
            "- name: t\n  steps:\n    - {{{step}, expect: {{error: invalid_request, decision: deny}}}}\n"
        ));
        assert!(both.is_err_and(|p| p.to_string().contains("either refused or decided")));
        let twice = write(&format!(
            "- name: t\n  steps:\n    - {{{step}, expect: {{decision: deny}}}}\n- name: t\n  steps:\n    - {{{step}, expect: {{decision: deny}}}}\n"
        ));
        assert!(twice.is_err_and(|p| p.to_string().contains("two tests are named `t`")));
        let fine = write(&format!(
            "- name: t\n  steps:\n    - {{{step}, expect: {{decision: deny}}}}\n"
        ));
        assert!(fine.is_ok_and(|files| files.len() == 1));
    }

    #[test]
    fn refusals_match_by_code() {
        let refused = json!({"error": {"code": "reserved_context_key", "message": "…"}});
        assert!(compare(&expect(json!({"error": "reserved_context_key"})), &refused).is_empty());
        assert!(!compare(&expect(json!({"decision": "deny"})), &refused).is_empty());
        let decided = json!({"decision": "allow"});
        assert!(!compare(&expect(json!({"error": "invalid_request"})), &decided).is_empty());
    }
}
