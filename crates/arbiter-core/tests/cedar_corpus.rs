//! Differential test against Cedar's own integration corpus (`../shared/cedar-corpus/`):
//! with every rule and scope in enforce and errors skipped, arbiter must decide exactly as
//! Cedar recorded — same decision, `enforced` = Cedar's reasons for a deny (or the
//! default-deny scope when no permit matched), same erroring policies.
//!
//! CI runs a fixed sample; `ARBITER_CORPUS=all cargo test --release --test cedar_corpus`
//! runs every test. Without the corpus the test fails and says where it looked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arbiter_core::clock::ManualClock;
use arbiter_core::request::{DecisionRequest, EntityRef, TypedRef};
use arbiter_core::response::Outcome;
use arbiter_core::{Engine, Pack};
use serde_json::Value;

/// Beside the clone. The crate's directory is read at run time (cargo sets it for every
/// test it runs), so that a test binary built in another checkout sharing the target
/// directory still finds this one's corpus; the path it was built with is the fallback.
fn corpus_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../../shared/cedar-corpus")
}

/// Every file of both tarballs, by path inside the archive.
fn read_corpus() -> BTreeMap<String, Vec<u8>> {
    let dir = corpus_dir();
    let mut files = BTreeMap::new();
    for name in ["corpus-tests.tar.gz", "handwritten-tests.tar.gz"] {
        let path = dir.join(name);
        let file = fs::File::open(&path).unwrap_or_else(|e| {
            panic!(
                "the Cedar corpus is needed for this test and was not found at {}: {e}",
                path.display()
            )
        });
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries().expect("a tar archive") {
            let mut entry = entry.expect("an entry");
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .expect("a path")
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("readable");
            files.insert(name, bytes);
        }
    }
    files
}

fn text(files: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    String::from_utf8(
        files
            .get(name)
            .unwrap_or_else(|| panic!("{name} is in the corpus"))
            .clone(),
    )
    .expect("utf-8")
}

fn entity(v: &Value) -> EntityRef {
    EntityRef::Typed(TypedRef {
        ty: v["type"].as_str().expect("type").to_owned(),
        id: v["id"].as_str().expect("id").to_owned(),
    })
}

/// Writes the corpus test as a pack: every policy gets `@id("policyN")` (Cedar's own ids),
/// and everything is enforced with errors skipped.
fn write_pack(dir: &Path, policies: &str, schema: Option<&str>, entities: &str) -> bool {
    let Ok(set) = cedar_policy::PolicySet::from_str(policies) else {
        return false;
    };
    fs::create_dir_all(dir.join("policies")).unwrap();
    let mut out = String::new();
    let mut ids: Vec<_> = set.policies().map(|p| p.id().to_string()).collect();
    ids.sort_by_key(|id| {
        id.trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    for id in ids {
        let policy = set
            .policy(&cedar_policy::PolicyId::new(&id))
            .expect("listed");
        out.push_str(&format!("@id(\"{id}\")\n{policy}\n"));
    }
    fs::write(dir.join("policies/all.cedar"), out).unwrap();
    fs::write(
        dir.join("arbiter.toml"),
        "[defaults]\nmode = \"enforce\"\non_error = \"skip\"\n\n[default_deny]\nmode = \"enforce\"\n",
    )
    .unwrap();
    if let Some(schema) = schema {
        fs::write(dir.join("schema.cedarschema"), schema).unwrap();
    }
    fs::write(dir.join("entities.json"), entities).unwrap();
    true
}

#[derive(Default)]
struct Tally {
    tests: usize,
    requests: usize,
    mismatches: Vec<String>,
    validation_disagreements: Vec<String>,
    skipped: usize,
    corpus_flag_differs: usize,
}

/// Whether the embedded Cedar validates the policies strictly against the schema and
/// parses the entities with it.
fn cedar_validates(policies: &str, schema: &str) -> bool {
    let Ok((schema, _)) = cedar_policy::Schema::from_cedarschema_str(schema) else {
        return false;
    };
    let Ok(set) = cedar_policy::PolicySet::from_str(policies) else {
        return false;
    };
    cedar_policy::Validator::new(schema)
        .validate(&set, cedar_policy::ValidationMode::Strict)
        .validation_passed()
}

fn run_one(files: &BTreeMap<String, Vec<u8>>, name: &str, tally: &mut Tally) {
    let spec: Value = serde_json::from_str(&text(files, name)).expect("test JSON");
    let policies = text(files, spec["policies"].as_str().unwrap());
    let schema = text(files, spec["schema"].as_str().unwrap());
    let entities = text(files, spec["entities"].as_str().unwrap());
    let should_validate = spec["shouldValidate"].as_bool().unwrap_or(true);
    tally.tests += 1;

    // arbiter's strict validation (of the schema with the reserved keys added) agrees
    // with the Cedar it embeds on whether the policies validate. (The corpus's own flag
    // was recorded by another Cedar release, which made a few warnings errors.)
    let with_schema = tempfile::tempdir().unwrap();
    if !write_pack(with_schema.path(), &policies, Some(&schema), &entities) {
        tally.skipped += 1;
        return;
    }
    let cedar_validates = cedar_validates(&policies, &schema);
    if cedar_validates != should_validate {
        tally.corpus_flag_differs += 1;
    }
    let loaded = Pack::load(with_schema.path());
    if loaded.is_ok() != cedar_validates {
        tally.validation_disagreements.push(format!(
            "{name}: Cedar validates={cedar_validates}, arbiter loaded={}{}",
            loaded.is_ok(),
            loaded
                .as_ref()
                .err()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ));
    }
    // Decisions: with the schema when the policies validate, else without it (Cedar's
    // harness evaluates those policies unvalidated).
    let pack = match loaded {
        Ok(pack) => pack,
        Err(_) => {
            let bare = tempfile::tempdir().unwrap();
            write_pack(bare.path(), &policies, None, &entities);
            match Pack::load(bare.path()) {
                Ok(pack) => pack,
                Err(problems) => {
                    tally.mismatches.push(format!(
                        "{name}: the pack did not load without a schema: {problems}"
                    ));
                    return;
                }
            }
        }
    };
    let pack = Arc::new(pack);
    let clock = Arc::new(ManualClock::new("2026-11-26T00:00:00Z".parse().unwrap()));
    for (n, r) in spec["requests"].as_array().unwrap().iter().enumerate() {
        tally.requests += 1;
        let engine = Engine::new(Arc::clone(&pack)).with_clock(clock.clone());
        let request = DecisionRequest {
            principal: entity(&r["principal"]),
            action: entity(&r["action"]),
            resource: entity(&r["resource"]),
            context: Some(r["context"].clone()),
            session: None,
            credential: None,
            entities: None,
            time: None,
        };
        let where_ = format!(
            "{name} request {n} ({})",
            r["description"].as_str().unwrap_or("")
        );
        let decision = match engine.decide(&request) {
            Ok(d) => d,
            Err(e) => {
                tally.mismatches.push(format!("{where_}: refused: {e}"));
                continue;
            }
        };
        let expected_allow = r["decision"].as_str() == Some("allow");
        let reasons: BTreeSet<String> = r["reason"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let errors: BTreeSet<String> = r["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let got_errors: BTreeSet<String> = decision.errors.iter().map(|e| e.rule.clone()).collect();
        let got_enforced: BTreeSet<String> =
            decision.enforced.iter().map(ToString::to_string).collect();
        let want_enforced: BTreeSet<String> = if expected_allow {
            BTreeSet::new()
        } else if reasons.is_empty() {
            [format!(
                "default-deny:{}",
                r["principal"]["type"].as_str().unwrap()
            )]
            .into()
        } else {
            reasons
        };
        let allowed = decision.decision == Outcome::Allow;
        if allowed != expected_allow || got_enforced != want_enforced || got_errors != errors {
            tally.mismatches.push(format!(
                "{where_}: Cedar {} enforced {want_enforced:?} errors {errors:?}; arbiter {:?} enforced {got_enforced:?} errors {got_errors:?}",
                r["decision"], decision.decision
            ));
        }
    }
}

#[test]
fn arbiter_decides_as_cedar_on_its_integration_corpus() {
    let files = read_corpus();
    let all = std::env::var("ARBITER_CORPUS").is_ok_and(|v| v == "all");
    let tests: Vec<&String> = files
        .keys()
        .filter(|k| {
            k.ends_with(".json") && !k.ends_with(".entities.json") && !k.contains("sample-data")
        })
        .filter(|k| {
            let spec: Value = serde_json::from_slice(&files[*k]).unwrap_or(Value::Null);
            spec.get("requests").is_some()
        })
        .collect();
    assert!(
        tests.len() > 7_000,
        "the corpus has its ~7,800 tests (found {})",
        tests.len()
    );
    // A fixed sample for CI: every handwritten test and every 25th generated one.
    let chosen: Vec<&String> = tests
        .iter()
        .enumerate()
        .filter(|(i, k)| all || !k.starts_with("corpus-tests/") || i % 25 == 0)
        .map(|(_, k)| *k)
        .collect();
    let mut tally = Tally::default();
    for name in chosen {
        run_one(&files, name, &mut tally);
    }
    eprintln!(
        "cedar corpus: {} tests, {} requests, {} decision mismatches, {} validation disagreements, {} unparsable; \
         the embedded Cedar's validation differs from the corpus flag on {} tests",
        tally.tests,
        tally.requests,
        tally.mismatches.len(),
        tally.validation_disagreements.len(),
        tally.skipped,
        tally.corpus_flag_differs
    );
    for m in tally
        .mismatches
        .iter()
        .chain(&tally.validation_disagreements)
        .take(40)
    {
        eprintln!("  {m}");
    }
    assert!(tally.requests > 500, "the sample decided enough requests");
    assert!(
        tally.mismatches.is_empty(),
        "{} decisions differ from Cedar's",
        tally.mismatches.len()
    );
    assert!(
        tally.validation_disagreements.is_empty(),
        "{} validation outcomes differ from Cedar's",
        tally.validation_disagreements.len()
    );
}
