//! Fuzz targets for what a caller or a pack author can hand the core: the decision request
//! (through the server's parse and `Engine::decide` on the example pack) and a pack
//! directory (through `Pack::load`).
//!
//! They are bolero targets, so they run under plain `cargo test` on stable: each replays
//! its corpus (`tests/__fuzz__/<target>/corpus`, real inputs kept in the repository) and
//! then a small bounded number of generated inputs. `docs/security.md` (Fuzzing) says how
//! to run one for longer.
//!
//! Three targets check properties the hostile-input probe found broken (an array read as
//! a request, a context value quoted in an error, two parses that read one body two
//! ways); they failed before those fixes and guard them now.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arbiter_core::clock::ManualClock;
use arbiter_core::{DecisionRequest, Engine, Pack, RequestError, TimeSource};
use bolero::check;
use bolero::generator::*;
use serde_json::{Map, Value, json};

/// Generated inputs per target under `cargo test`, on top of the corpus. Small so the
/// workspace test run stays fast; `BOLERO_RANDOM_ITERATIONS` overrides it.
const REQUEST_ITERATIONS: usize = 400;
const PACK_ITERATIONS: usize = 40;

/// One decision may take this long at most, in a debug build on a loaded machine: far
/// more than any real one (milliseconds), far less than a hang.
const DECISION_BOUND: Duration = Duration::from_secs(5);
/// The same for loading one small generated pack.
const LOAD_BOUND: Duration = Duration::from_secs(20);

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines")
}

static PACK: LazyLock<Arc<Pack>> = LazyLock::new(|| {
    Arc::new(Pack::load(example_dir()).unwrap_or_else(|p| panic!("the example pack loads: {p}")))
});

/// Two engines on the example pack, fresh state each: the server's (its clock only) and
/// the offline one (`time` in the request).
fn engines() -> [Engine; 2] {
    let clock = Arc::new(ManualClock::new("2026-11-26T10:00:00Z".parse().unwrap()));
    let online = Engine::new(Arc::clone(&PACK)).with_clock(clock);
    let offline = online.clone().with_time_source(TimeSource::RequestMaySet);
    [online, offline]
}

/// What became of one input.
#[derive(Debug, Default)]
struct Outcome {
    /// The bytes were JSON.
    json: bool,
    /// The request as `DecisionRequest::from_value` (the server's parse) read it.
    parsed: Option<DecisionRequest>,
    /// Whether `from_json` (the CLI's parse) accepted the text too, when it is UTF-8.
    parsed_from_text: Option<bool>,
    /// Every error: the parse's, or each engine's.
    errors: Vec<RequestError>,
    /// Engines that decided it.
    decided: usize,
}

/// Parses `bytes` as the server does (bytes → JSON value → `from_value`) and as the CLI
/// does (`from_json`), then decides what parsed on both engines. Panics if a decision
/// takes longer than [`DECISION_BOUND`], or an error has another status than 400 or 422.
fn parse_and_decide(engines: &[Engine; 2], bytes: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    // The server's parse: strict JSON (duplicate keys refused), then `from_value`.
    let Ok(value) = arbiter_core::json::from_slice(bytes) else {
        return outcome;
    };
    outcome.json = true;
    outcome.parsed_from_text = std::str::from_utf8(bytes)
        .ok()
        .map(|text| DecisionRequest::from_json(text).is_ok());
    let request = match DecisionRequest::from_value(&value) {
        Ok(request) => request,
        Err(e) => {
            outcome.errors.push(e);
            return outcome;
        }
    };
    for engine in engines {
        let start = Instant::now();
        let result = engine.decide(&request);
        let took = start.elapsed();
        assert!(
            took < DECISION_BOUND,
            "a decision took {took:?} on {}",
            String::from_utf8_lossy(bytes)
        );
        match result {
            Ok(decision) => {
                serde_json::to_string(&decision).expect("a decision serializes");
                outcome.decided += 1;
            }
            Err(e) => {
                assert!(!e.code().is_empty() && !e.to_string().is_empty(), "{e:?}");
                outcome.errors.push(e);
            }
        }
    }
    outcome.parsed = Some(request);
    outcome
}

/// The texts of a target's corpus in this repository.
fn corpus(target: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/__fuzz__")
        .join(target)
        .join("corpus");
    let mut texts: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    texts.sort();
    assert!(!texts.is_empty(), "{} is empty", dir.display());
    texts
}

/// How far inputs got, printed at the end of a target (`--nocapture` shows it): a
/// generator whose inputs all stop at the parse tests little.
#[derive(Default)]
struct Tally(std::sync::Mutex<std::collections::BTreeMap<String, usize>>);

impl Tally {
    fn add(&self, outcome: &str) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(outcome.to_owned())
            .or_default() += 1;
    }

    /// One input's outcome: decided by an engine, or its first error.
    fn count(&self, outcome: &Outcome) {
        match (outcome.json, outcome.decided, outcome.errors.first()) {
            (false, _, _) => self.add("not_json"),
            (true, 1.., _) => self.add("decided"),
            (true, 0, Some(e)) => self.add(e.code()),
            (true, 0, None) => unreachable!("an input neither decided nor refused"),
        }
    }

    fn report(&self, target: &str) {
        eprintln!("{target}: {:?}", self.0.lock().unwrap());
    }
}

// ------------------------------------------------------------------ 1. the decision request

/// Arbitrary bytes as a request body. The corpus holds the example pack's requests.
#[test]
fn request_bytes() {
    let engines = engines();
    let engines = AssertUnwindSafe(&engines);
    let tally = Tally::default();
    check!()
        .with_iterations(REQUEST_ITERATIONS)
        .with_max_len(2048)
        .for_each(|bytes: &[u8]| {
            tally.count(&parse_and_decide(&engines, bytes));
        });
    tally.report("request_bytes");
}

/// Requests built from a grammar of the request's fields, with secrets planted in the
/// context and the credential: no panic, and an answer within the bound.
#[test]
fn request_structured() {
    let engines = engines();
    let engines = AssertUnwindSafe(&engines);
    let tally = Tally::default();
    check!().with_iterations(REQUEST_ITERATIONS).run(|| {
        let generated = request::generate();
        let bytes = serde_json::to_vec(&generated.body).unwrap();
        tally.count(&parse_and_decide(&engines, &bytes));
    });
    tally.report("request_structured");
}

/// The corpus's real requests with a few changes each: close enough to the request shape
/// to get past the parse and into the engine.
#[test]
fn request_mutated() {
    let engines = engines();
    let engines = AssertUnwindSafe(&engines);
    let seeds = corpus("request_bytes");
    let tally = Tally::default();
    check!().with_iterations(REQUEST_ITERATIONS).run(|| {
        let seed = seeds.pick();
        let text = mutation::mutate(request::JSON_TOKENS, seed, 2);
        tally.count(&parse_and_decide(&engines, text.as_bytes()));
    });
    tally.report("request_mutated");
}

/// A secret sent in a request never comes back in an error's text: an error names the
/// path and the expected type, never the value.
#[test]
fn request_errors_never_quote_a_secret() {
    let engines = engines();
    let engines = AssertUnwindSafe(&engines);
    check!().with_iterations(REQUEST_ITERATIONS).run(|| {
        let generated = request::generate();
        let bytes = serde_json::to_vec(&generated.body).unwrap();
        for error in parse_and_decide(&engines, &bytes).errors {
            let texts = [error.to_string(), error.to_json().to_string()];
            for marker in &generated.markers {
                for text in &texts {
                    assert!(
                        !text.contains(marker.as_str()),
                        "the secret {marker} is in the error {text}\nrequest: {}",
                        generated.body
                    );
                }
            }
        }
    });
}

/// The server's parse (bytes → JSON value → `from_value`) and the CLI's (`from_json`)
/// accept the same bodies: a PEP and arbiter must not read one body two ways.
#[test]
fn the_server_and_cli_parses_agree() {
    let engines = engines();
    let engines = AssertUnwindSafe(&engines);
    let seeds = corpus("request_bytes");
    check!().with_iterations(REQUEST_ITERATIONS).run(|| {
        let text = mutation::mutate(request::JSON_TOKENS, seeds.pick(), 2);
        let outcome = parse_and_decide(&engines, text.as_bytes());
        if let Some(from_text) = outcome.parsed_from_text {
            assert_eq!(
                outcome.parsed.is_some()
                    || outcome
                        .errors
                        .iter()
                        .any(|e| e.code() != "malformed_request"),
                from_text,
                "from_value and from_json disagree on {text}"
            );
        }
    });
}

/// A request body is a JSON object: a positional array must be refused (serde's derived
/// `Deserialize` accepts a struct as a sequence of its fields).
#[test]
fn a_request_array_is_refused() {
    check!().with_iterations(REQUEST_ITERATIONS).run(|| {
        let generated = request::generate();
        let Value::Object(fields) = &generated.body else {
            return;
        };
        let mut items: Vec<Value> = arbiter_core::request::FIELDS
            .iter()
            .map(|k| fields.get(*k).cloned().unwrap_or(Value::Null))
            .collect();
        let keep = (3usize..=items.len()).any();
        items.truncate(keep);
        let array = Value::Array(items);
        assert!(
            DecisionRequest::from_value(&array).is_err(),
            "an array was accepted as a request: {array}"
        );
        assert!(
            DecisionRequest::from_json(&array.to_string()).is_err(),
            "an array was accepted as a request text: {array}"
        );
    });
}

/// The request grammar: the example pack's entities, actions and context keys, with
/// right and wrong values, and secrets planted where a careless error message would quote
/// them.
mod request {
    use super::*;

    pub struct Generated {
        pub body: Value,
        /// Every secret planted in `body`, as it would appear in text.
        pub markers: Vec<String>,
    }

    const ENTITIES: &[(&str, &str)] = &[
        ("Team", "support"),
        ("Agent", "support-bot"),
        ("Agent", "ops-copilot"),
        ("CiJob", "deploy-prod"),
        ("CiJob", "pr-checks"),
        ("Service", "billing-api"),
        ("Service", "billing-api-staging"),
        ("Secret", "prod/db-password"),
        ("Secret", "staging/db-password"),
        ("Config", "prod/billing-api"),
        ("Config", "staging/billing-api"),
        ("Endpoint", "api.github.com"),
        ("Endpoint", "pastebin.com"),
        ("Ticket", "T-1"),
        ("Agent", "unknown-agent"),
        ("Ghost", "x"),
        ("Action", "read_secret"),
    ];

    /// An action of the example schema: the principal and resource types it applies to,
    /// and its context's keys and types.
    struct Action {
        name: &'static str,
        principals: &'static [&'static str],
        resources: &'static [&'static str],
        context: &'static [(&'static str, Kind)],
    }

    const ANY: &[&str] = &["Agent", "CiJob", "Service"];

    const ACTIONS: &[Action] = &[
        Action {
            name: "read_secret",
            principals: ANY,
            resources: &["Secret"],
            context: &[],
        },
        Action {
            name: "create_token",
            principals: ANY,
            resources: &["Service"],
            context: &[("ttl_s", Kind::Long), ("scopes", Kind::SetOfString)],
        },
        Action {
            name: "update_config",
            principals: ANY,
            resources: &["Config"],
            context: &[("key", Kind::String), ("value", Kind::String)],
        },
        Action {
            name: "deploy",
            principals: &["Agent", "CiJob"],
            resources: &["Service"],
            context: &[("version", Kind::String)],
        },
        Action {
            name: "http_request",
            principals: ANY,
            resources: &["Endpoint"],
            context: &[("method", Kind::String), ("path", Kind::String)],
        },
        Action {
            name: "upload_file",
            principals: ANY,
            resources: &["Endpoint"],
            context: &[("filename", Kind::String), ("bytes", Kind::Long)],
        },
        Action {
            name: "read_ticket",
            principals: &["Agent", "Service"],
            resources: &["Ticket"],
            context: &[],
        },
        Action {
            name: "comment_ticket",
            principals: &["Agent"],
            resources: &["Ticket"],
            context: &[("body", Kind::String)],
        },
        // Groups and an unknown action: refused, but through other paths.
        Action {
            name: "secret_read",
            principals: ANY,
            resources: &["Secret"],
            context: &[],
        },
        Action {
            name: "nope",
            principals: ANY,
            resources: &["Secret"],
            context: &[("x", Kind::String)],
        },
    ];

    #[derive(Clone, Copy)]
    enum Kind {
        String,
        Long,
        SetOfString,
    }

    const RESERVED: &[&str] = &["session", "credential", "in_intent", "novel", "now"];

    /// Tokens the mutator inserts into request JSON.
    pub const JSON_TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\\",
        "null",
        "true",
        "1e999",
        "-0",
        "\"__extn\"",
        "\"__entity\"",
        "{\"fn\":\"ip\",\"arg\":\"x\"}",
        "\"context\":",
        "\"session\":",
        "\"credential\":",
        "\"entities\":",
        "\"time\":",
        "Action::",
        "\\u0000",
        "\\ud800",
        "\"principal\":\"Agent::\\\"x\\\"\"",
        "é",
    ];

    const WORDS: &[&str] = &[
        "",
        "GET",
        "POST",
        "/",
        "https://evil.example/x",
        "a\"b",
        "\\",
        "\u{0}",
        "é",
        "Agent::\"x\"",
        "::",
        "2026-11-26T10:00:00Z",
        "10.0.0.1/8",
        "1.5",
        "1h",
    ];

    struct Gen {
        markers: Vec<String>,
        salt: u64,
        /// Whether [`Gen::secret`] plants a marker: only in the context and the
        /// credential, the fields that may carry secrets. Elsewhere (ids, `time`,
        /// `session`) quoting the value back is fine.
        planting: bool,
        /// Whether this request goes off the schema (wrong types, missing and unknown
        /// fields, bad values); otherwise it is one the engine decides.
        wild: bool,
    }

    impl Gen {
        /// A fresh secret: text that no error message could contain by chance.
        fn secret(&mut self) -> String {
            if !self.planting {
                return self.text();
            }
            let marker = format!("SECRET-{:016x}-{}", self.salt, self.markers.len());
            self.markers.push(marker.clone());
            marker
        }

        /// A numeric secret: digits no message could contain by chance.
        fn secret_number(&mut self) -> Value {
            if !self.planting {
                return json!(any::<i64>());
            }
            let n = 7_300_000_000_000_000_i64 + (self.salt % 1_000_000_000_000) as i64;
            let n = n + self.markers.len() as i64;
            self.markers.push(n.to_string());
            json!(n)
        }

        /// Text that is no secret.
        fn text(&mut self) -> String {
            match (0u8..5).any() {
                0 => produce_with::<String>().len(0usize..=12).any(),
                _ => (*WORDS.pick()).to_owned(),
            }
        }

        /// An entity of one of `types` (from `entities.json`, or an id it does not know).
        fn entity_of(&mut self, types: &[&str]) -> Value {
            let ty = *types.pick();
            let known: Vec<&str> = ENTITIES
                .iter()
                .filter(|(t, _)| *t == ty)
                .map(|(_, id)| *id)
                .collect();
            let id = match known.as_slice() {
                [] => "unknown".to_owned(),
                ids if (0u8..6).any() != 0 => (*ids.pick()).to_owned(),
                _ => self.text(),
            };
            if any::<bool>() {
                json!(format!("{ty}::{}", Value::String(id)))
            } else {
                json!({"type": ty, "id": id})
            }
        }

        fn entity_ref(&mut self, wanted: Option<&str>) -> Value {
            let (ty, id) = *ENTITIES.pick();
            let ty = match wanted {
                Some(w) if any::<bool>() => w,
                _ => ty,
            };
            match (0u8..10).any() {
                0..=4 => json!(format!("{ty}::{}", Value::String(id.to_owned()))),
                5..=6 => json!({"type": ty, "id": id}),
                7 => json!({"type": ty, "id": self.text()}),
                8 => json!(self.text()),
                _ => self.value(1),
            }
        }

        /// Any context value: Cedar's JSON forms, right and wrong, nested at most
        /// `depth` deep.
        fn value(&mut self, depth: u8) -> Value {
            let leaf = depth == 0;
            match (0u8..if leaf { 8 } else { 12 }).any() {
                0 => Value::String(self.secret()),
                1 => Value::String(self.text()),
                2 => json!(any::<i64>()),
                3 => self.secret_number(),
                4 => json!(any::<bool>()),
                5 => match (0u8..4).any() {
                    0 => json!(1.5),
                    1 => json!(u64::MAX),
                    2 => json!(-0.0),
                    _ => Value::Null,
                },
                6 => {
                    let fun = *[
                        "ip", "decimal", "datetime", "duration", "offset", "nope", "",
                    ]
                    .pick();
                    let arg = if any::<bool>() {
                        Value::String(self.secret())
                    } else {
                        Value::String(self.text())
                    };
                    match (0u8..4).any() {
                        0 => json!({"__extn": {"fn": fun, "arg": arg}}),
                        1 => json!({"__extn": {"fn": fun, "args": [arg]}}),
                        2 => json!({"__extn": arg}),
                        _ => json!({"fn": fun, "arg": arg}),
                    }
                }
                7 => {
                    let (ty, id) = *ENTITIES.pick();
                    match (0u8..4).any() {
                        0 => json!({"__entity": {"type": ty, "id": self.secret()}}),
                        1 => json!({"__entity": {"type": self.secret(), "id": id}}),
                        2 => json!({"__entity": {"type": ty, "id": id}}),
                        _ => json!({"__entity": self.secret()}),
                    }
                }
                8..=9 => {
                    let n = (0usize..4).any();
                    Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
                }
                _ => {
                    let n = (0usize..4).any();
                    let mut map = Map::new();
                    for _ in 0..n {
                        let key = self.text();
                        let value = self.value(depth - 1);
                        map.insert(key, value);
                    }
                    Value::Object(map)
                }
            }
        }

        /// A value of the schema's kind, or, now and then, any value in its place.
        fn typed(&mut self, kind: Kind) -> Value {
            if self.wild && (0u8..3).any() == 0 {
                return self.value(3);
            }
            match kind {
                Kind::String => Value::String(self.text()),
                Kind::Long => match (0u8..3).any() {
                    0 => self.secret_number(),
                    _ => json!((-10i64..100_000).any()),
                },
                Kind::SetOfString => {
                    let n = (0usize..4).any();
                    Value::Array((0..n).map(|_| Value::String(self.text())).collect())
                }
            }
        }

        fn context(&mut self, keys: &[(&str, Kind)]) -> Value {
            let mut map = Map::new();
            for (key, kind) in keys {
                if !self.wild || (0u8..6).any() != 0 {
                    let value = self.typed(*kind);
                    map.insert((*key).to_owned(), value);
                }
            }
            let extra = if self.wild { (0usize..3).any() } else { 0 };
            for _ in 0..extra {
                let key = match (0u8..3).any() {
                    0 => (*RESERVED.pick()).to_owned(),
                    _ => self.text(),
                };
                let value = self.value(3);
                map.insert(key, value);
            }
            Value::Object(map)
        }

        fn entities(&mut self) -> Value {
            match (0u8..4).any() {
                0 => json!([]),
                1 => self.value(2),
                _ => {
                    let n = (1usize..3).any();
                    Value::Array(
                        (0..n)
                            .map(|_| {
                                let uid = self.entity_ref(None);
                                let attrs = self.value(2);
                                json!({"uid": uid, "attrs": attrs, "parents": []})
                            })
                            .collect(),
                    )
                }
            }
        }

        fn credential(&mut self) -> Value {
            match (0u8..5).any() {
                0 => Value::String(self.secret()),
                1 => {
                    let s = self.secret();
                    Value::String(format!("eyJhbGciOiJFZERTQSJ9.{s}.{s}"))
                }
                2 if self.planting => {
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                    let header = b64.encode(r#"{"alg":"EdDSA","kid":"k1"}"#);
                    let secret = self.secret();
                    let claims = b64.encode(
                        json!({"iss": "arbiter", "sub": "Agent::\"support-bot\"", "aud": "arbiter", "jti": secret})
                            .to_string(),
                    );
                    // The encoded claims are as secret as the token.
                    self.markers.push(claims.clone());
                    Value::String(format!("{header}.{claims}.c2ln"))
                }
                3 => Value::String(self.text()),
                _ => self.value(1),
            }
        }

        fn request(&mut self) -> Value {
            let action = ACTIONS.pick();
            let wild = self.wild;
            let mut body = Map::new();
            let principal = if wild && (0u8..4).any() == 0 {
                self.entity_ref(None)
            } else {
                self.entity_of(action.principals)
            };
            body.insert("principal".into(), principal);
            let action_ref = match (0u8..8).any() {
                0 if wild => self.entity_ref(Some("Action")),
                0..=2 => json!({"type": "Action", "id": action.name}),
                _ => json!(format!("Action::\"{}\"", action.name)),
            };
            body.insert("action".into(), action_ref);
            let resource = if wild && (0u8..4).any() == 0 {
                self.entity_ref(None)
            } else {
                self.entity_of(action.resources)
            };
            body.insert("resource".into(), resource);
            if !action.context.is_empty() || any::<bool>() {
                self.planting = true;
                let context = match (0u8..8).any() {
                    0 if wild => self.value(2),
                    _ => self.context(action.context),
                };
                self.planting = false;
                body.insert("context".into(), context);
            }
            if (0u8..3).any() == 0 {
                let session = match (0u8..6).any() {
                    0 if wild => json!(""),
                    1 if wild => json!("x".repeat(257)),
                    2 if wild => json!("a\u{7}b"),
                    3 if wild => self.value(0),
                    _ => json!(format!("s{}", (0u8..3).any())),
                };
                body.insert("session".into(), session);
            }
            if (0u8..3).any() == 0 {
                self.planting = true;
                let credential = self.credential();
                self.planting = false;
                body.insert("credential".into(), credential);
            }
            if wild && (0u8..4).any() == 0 {
                body.insert("entities".into(), self.entities());
            }
            if (0u8..3).any() == 0 {
                let time = match (0u8..4).any() {
                    0 if wild => json!(self.text()),
                    1 if wild => self.value(0),
                    _ => json!(format!("2026-11-26T{:02}:00:00Z", (0u8..24).any())),
                };
                body.insert("time".into(), time);
            }
            // Drop a required field, or add an unknown one, now and then.
            match (0u8..12).any() {
                0 if wild => {
                    let field = *["principal", "action", "resource"].pick();
                    body.remove(field);
                }
                1 if wild => {
                    let key = self.text();
                    let value = self.value(1);
                    body.insert(key, value);
                }
                _ => {}
            }
            Value::Object(body)
        }
    }

    pub fn generate() -> Generated {
        let mut generator = Gen {
            markers: Vec::new(),
            salt: any::<u64>(),
            planting: false,
            wild: any::<bool>(),
        };
        let body = generator.request();
        Generated {
            body,
            markers: generator.markers,
        }
    }
}

/// Changes to real inputs, so the generated ones stay close enough to the real shapes to
/// get past the first check.
mod mutation {
    use super::*;

    /// A real input with one to `max` byte-level and token-level changes (the more, the
    /// fewer get past the first check).
    pub fn mutate(tokens: &[&str], text: &str, max: usize) -> String {
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..(1usize..=max).any() {
            let at = (0usize..=bytes.len()).any();
            match (0u8..6).any() {
                0 => {
                    let end = (at..=bytes.len().min(at + 64)).any();
                    bytes.drain(at..end);
                }
                1 => {
                    let token = tokens.pick().as_bytes();
                    bytes.splice(at..at, token.iter().copied());
                }
                2 => {
                    let junk: Vec<u8> = produce_with::<Vec<u8>>().len(1usize..=8).any();
                    bytes.splice(at..at, junk);
                }
                3 => bytes.truncate(at),
                4 => {
                    // Duplicate a slice (a repeated policy, key or entity).
                    let end = (at..=bytes.len().min(at + 200)).any();
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
                _ => {
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= 1 << (0u8..8).any();
                    }
                }
            }
        }
        bytes.truncate(8192);
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        // Duplicated slices can stack brackets: keep the nesting bounded (see
        // `pack::MAX_NESTING`) by giving up on this mutation instead.
        if nesting(&mutated) > nesting(text).max(pack::MAX_NESTING.into()) {
            return text.to_owned();
        }
        mutated
    }

    /// The deepest nesting of brackets of any kind, counted naively (strings and
    /// comments included): an upper bound of what a parser recurses on.
    pub fn nesting(text: &str) -> usize {
        let (mut depth, mut deepest) = (0usize, 0usize);
        for c in text.chars() {
            match c {
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }
}

// ------------------------------------------------------------------------ 2. pack loading

/// Packs whose files are the example pack's, mutated, or generated from the grammar of
/// `arbiter.toml`, the schema, annotated policies and entities: `Pack::load` returns the
/// pack or its problems, each placed in a file, and never panics.
#[test]
fn pack_structured() {
    let tally = Tally::default();
    check!().with_iterations(PACK_ITERATIONS).run(|| {
        let files = pack::generate();
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in &files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let start = Instant::now();
        let result = Pack::load(dir.path());
        let took = start.elapsed();
        let shown = || {
            files
                .iter()
                .map(|(p, t)| format!("--- {p}\n{t}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(took < LOAD_BOUND, "loading took {took:?}:\n{}", shown());
        tally.add(if result.is_ok() { "loaded" } else { "problems" });
        if let Err(problems) = result {
            assert!(!problems.0.is_empty(), "no problem given:\n{}", shown());
            for problem in &problems.0 {
                assert!(
                    !problem.file.as_os_str().is_empty(),
                    "a problem without a file: {problem:?}\n{}",
                    shown()
                );
                assert!(!problem.message.is_empty(), "{problem:?}");
            }
            // Displaying them must not panic either.
            let _ = problems.to_string();
        }
    });
    tally.report("pack_structured");
}

/// The pack grammar. Sizes are bounded (a few files of a few kilobytes), and so is the
/// nesting of parentheses in policy text.
mod pack {
    use super::*;

    /// Nesting of generated conditions, at most. Deeply nested parentheses overflow the
    /// stack in Cedar's parser and abort the whole test process (a known finding, being
    /// fixed by bounding nesting before Cedar's parser); until then the generator stays
    /// well below that. Raise it once the bound is in place.
    pub const MAX_NESTING: u8 = 20;

    static REAL: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
        let dir = example_dir();
        let mut files = vec![
            read(&dir, "arbiter.toml"),
            read(&dir, "schema.cedarschema"),
            read(&dir, "entities.json"),
        ];
        let mut policies: Vec<_> = fs::read_dir(dir.join("policies"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        policies.sort();
        for path in policies {
            let name = format!("policies/{}", path.file_name().unwrap().to_str().unwrap());
            files.push((name, fs::read_to_string(path).unwrap()));
        }
        files
    });

    fn read(dir: &Path, name: &str) -> (String, String) {
        (name.to_owned(), fs::read_to_string(dir.join(name)).unwrap())
    }

    fn real(name: &str) -> String {
        REAL.iter().find(|(n, _)| n == name).unwrap().1.clone()
    }

    fn real_policies() -> Vec<String> {
        REAL.iter()
            .filter(|(n, _)| n.starts_with("policies/"))
            .map(|(_, t)| t.clone())
            .collect()
    }

    const TOKENS: &[&str] = &[
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        ";",
        ",",
        "\"",
        "\\",
        "::",
        "@",
        "=",
        "\n",
        "#",
        "//",
        "/*",
        "é",
        "\u{0}",
        "permit",
        "forbid",
        "when",
        "unless",
        "principal",
        "action",
        "resource",
        "context",
        "is",
        "in",
        "has",
        "like",
        "if",
        "then",
        "else",
        "&&",
        "||",
        "!",
        "==",
        "<",
        "-",
        "9223372036854775807",
        "@id(\"x\")",
        "@mode(\"enforce\")",
        "@effect(\"throttle\")",
        "@limit(\"0/0s\")",
        "?principal",
        "Action::\"egress\"",
        "entity",
        "action",
        "appliesTo",
        "Set<",
        "type",
        "namespace",
        "[credentials]",
        "[[issuers]]",
        "\"\"\"",
        "'",
        "true",
        "null",
        "{\"__entity\":",
        "\"uid\"",
        "\"parents\"",
        "\"attrs\"",
    ];

    fn arbitrary_text() -> String {
        produce_with::<String>().len(0usize..=256).any()
    }

    /// One of: the real file, the real file mutated, generated text, arbitrary text.
    fn file(real: String, generated: impl FnOnce() -> String) -> String {
        match (0u8..10).any() {
            0..=2 => real,
            3..=5 => mutation::mutate(TOKENS, &real, 6),
            6..=8 => generated(),
            _ => arbitrary_text(),
        }
    }

    const TYPES: &[&str] = &[
        "Agent",
        "CiJob",
        "Service",
        "Team",
        "Secret",
        "Endpoint",
        "Robot",
        "",
        "Acme::Agent",
    ];
    const ACTIONS: &[&str] = &[
        "read_secret",
        "secret_read",
        "egress",
        "http_request",
        "create_token",
        "token_create",
        "config_change",
        "nope",
        "",
    ];
    const PERIODS: &[&str] = &[
        "1h", "30m", "30s", "7d", "10m", "0s", "5m", "2h", "100000d", "1x", "", "-1h", "36h",
    ];
    const MODES: &[&str] = &["audit", "warn", "enforce", "off", ""];

    fn quoted(s: &str) -> String {
        Value::String(s.to_owned()).to_string()
    }

    fn list(items: &[&str], max: usize) -> String {
        let n = (0usize..=max).any();
        let chosen: Vec<String> = (0..n).map(|_| quoted(items.pick())).collect();
        format!("[{}]", chosen.join(", "))
    }

    /// `arbiter.toml` from its real keys, with right and wrong values.
    fn config(keys_file: &mut Option<String>) -> String {
        let mut out = String::new();
        if any::<bool>() {
            out += &format!(
                "[defaults]\nmode = {}\non_error = {}\n",
                quoted(MODES.pick()),
                quoted(["deny", "skip", "allow"].pick())
            );
        }
        if any::<bool>() {
            out += &format!(
                "[default_deny]\nmode = {}\nprincipal_types = {{ {} = {} }}\n",
                quoted(MODES.pick()),
                ["Agent", "CiJob", "Robot", "\"Acme::Agent\"", "\"\""].pick(),
                quoted(MODES.pick())
            );
        }
        if any::<bool>() {
            out += &format!(
                "[credentials]\nrequired_for = {}\nmax_ttl = {}\nleeway = {}\nissuer = {}\naudience = {}\n",
                list(TYPES, 2),
                quoted(PERIODS.pick()),
                quoted(PERIODS.pick()),
                quoted(["arbiter", "", "x y"].pick()),
                quoted(["arbiter", ""].pick()),
            );
        }
        for _ in 0..(0usize..3).any() {
            out += &format!(
                "[intents.{}]\nactions = {}\nmax_ttl = {}\n",
                ["triage", "staging-maintenance", "x"].pick(),
                list(ACTIONS, 3),
                quoted(PERIODS.pick())
            );
        }
        if any::<bool>() {
            out += &format!(
                "[chains.{}]\nsteps = {}\n",
                ["secret-exposure", "c"].pick(),
                list(ACTIONS, 4)
            );
        }
        if any::<bool>() {
            out += &format!(
                "[readiness]\nmin_days = {}\ncycle = {}\nmax_audit_days = {}\n",
                [0i64, 14, -1, 4_294_967_296].pick(),
                quoted(PERIODS.pick()),
                [0i64, 60, 1].pick()
            );
        }
        if any::<bool>() {
            out += &format!(
                "[log]\nmask = {}\n",
                list(
                    &["context.value", "context.body", "", "principal", "context."],
                    3
                )
            );
        }
        if (0u8..4).any() == 0 {
            out += &format!(
                "[server]\npep_tokens = {}\n",
                list(
                    &[
                        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                        "sha256:xyz",
                        "plain"
                    ],
                    2
                )
            );
        }
        if (0u8..4).any() == 0 {
            out += &format!("[requests]\nentity_types = {}\n", list(TYPES, 2));
        }
        if (0u8..4).any() == 0 {
            out += &format!(
                "[frameworks.{}]\ncontrols = {{ {} = \"t\" }}\n",
                ["ACME", "OWASP-NHI", "x y"].pick(),
                quoted(["C-1", "", "NHI1"].pick())
            );
        }
        out += &issuers(keys_file);
        if (0u8..6).any() == 0 {
            out += &format!("[{}]\nunknown = 1\n", ["defaults", "mystery"].pick());
        }
        out
    }

    /// `[[issuers]]` entries, right and wrong; `keys_file` is set when one names a file
    /// the pack should hold.
    fn issuers(keys_file: &mut Option<String>) -> String {
        let mut out = String::new();
        for _ in 0..(0usize..3).any() {
            let source = match (0u8..4).any() {
                0 => "jwks_url = \"https://keys.example/jwks.json\"".to_owned(),
                1 => "jwks_url = \"http://10.0.0.1/jwks\"".to_owned(),
                _ => {
                    let name = [
                        "keys/upstream.json",
                        "../outside.json",
                        "/etc/passwd",
                        "keys/missing.json",
                    ]
                    .pick();
                    if *name == "keys/upstream.json" {
                        *keys_file = Some((*name).to_owned());
                    }
                    format!("jwks_file = {}", quoted(name))
                }
            };
            out += &format!(
                "[[issuers]]\nname = {}\n{}\n{}audience = {}\n{source}\nalgorithms = {}\nprincipal = {}\nattributes = {{ {} }}\nrequire = {{ repository_owner = \"acme\" }}\n",
                quoted(["github", "k8s", "bad one", ""].pick()),
                [
                    "preset = \"github-actions\"",
                    "preset = \"kubernetes\"",
                    "preset = \"spiffe\"",
                    "preset = \"nope\"",
                    ""
                ]
                .pick(),
                [
                    "issuer = \"https://issuer.example\"\n",
                    "issuer = \"\"\n",
                    ""
                ]
                .pick(),
                quoted(["arbiter", ""].pick()),
                list(&["EdDSA", "ES256", "RS256", "HS256", "none"], 3),
                quoted(
                    [
                        "CiJob::\"{repository}@{ref}\"",
                        "CiJob::\"fixed\"",
                        "Robot::\"{sub}\"",
                        "CiJob::\"{a\"",
                        "CiJob::\"{namespace}/{serviceaccount}\"",
                        "not a template",
                        "Agent::\"{sub}\"",
                    ]
                    .pick()
                ),
                [
                    "repo = \"repository\", ref = \"ref\", env = \"environment\"",
                    "owner = \"sub\"",
                    ""
                ]
                .pick(),
            );
        }
        out
    }

    /// A JWKS-like document for `jwks_file`.
    fn jwks() -> String {
        let n = (0usize..3).any();
        let keys: Vec<Value> = (0..n)
            .map(|_| match (0u8..5).any() {
                0 => json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
                1 => json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
                2 => json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS256"}),
                3 => json!({"kty": "oct", "k": "c2VjcmV0"}),
                _ => json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "use": "enc"}),
            })
            .collect();
        match (0u8..4).any() {
            0 => arbitrary_text(),
            1 => json!({"keys": "nope"}).to_string(),
            _ => json!({ "keys": keys }).to_string(),
        }
    }

    /// A small schema: a few entity types and actions, with or without contexts.
    fn schema() -> String {
        let mut out = String::new();
        for ty in TYPES.iter().take((1usize..6).any()) {
            if ty.is_empty() || ty.contains("::") {
                continue;
            }
            let attrs = [
                "",
                " { env: String }",
                " { tier: Long, owner?: String }",
                " { x: Set<Bool> }",
            ]
            .pick();
            let parents = ["", " in [Team]", " in [Nope]"].pick();
            out += &format!("entity {ty}{parents}{attrs};\n");
        }
        out += "action secret_read, egress;\n";
        for action in ACTIONS.iter().take((0usize..6).any()) {
            if action.is_empty() {
                continue;
            }
            let group = [" in [secret_read]", " in [egress]", ""].pick();
            let context = [
                "",
                "context: { host: String },",
                "context: { session: String },",
                "context: { n: Long, s: Set<String> },",
            ]
            .pick();
            out += &format!(
                "action {action}{group} appliesTo {{ principal: [{}], resource: [{}], {context} }};\n",
                ["Agent", "CiJob", "Agent, CiJob", "Robot"].pick(),
                ["Secret", "Endpoint", "Service"].pick(),
            );
        }
        out
    }

    /// A condition of bounded nesting.
    fn condition(depth: u8) -> String {
        if depth == 0 {
            return [
                "true",
                "resource.env == \"prod\"",
                "principal.tier > 5",
                "context.host == \"pastebin.com\"",
                "context.session.touched.contains(\"secret_read\")",
                "context.now.toTime().toHours() < 8",
                "context.credential.intent == \"triage\"",
                "context.novel",
                "principal in resource.owner",
                "resource has env",
                "ip(\"10.0.0.1\").isLoopback()",
                "decimal(\"1.5\") < decimal(\"2\")",
                "context.nope",
                "1 / 0",
            ]
            .pick()
            .to_string();
        }
        match (0u8..5).any() {
            0 => format!("({})", condition(depth - 1)),
            1 => format!("!({})", condition(depth - 1)),
            2 => format!("{} && {}", condition(depth - 1), condition(0)),
            3 => format!(
                "if {} then {} else {}",
                condition(0),
                condition(depth - 1),
                condition(0)
            ),
            _ => condition(0),
        }
    }

    /// One policy with annotations.
    fn policy(index: usize) -> String {
        let mut out = String::new();
        match (0u8..8).any() {
            0 => {}
            1 => out += "@id(\"dup\")\n",
            2 => out += "@id(\"has space\")\n",
            3 => out += "@id(\"default-deny:Agent\")\n",
            _ => out += &format!("@id(\"rule-{index}\")\n"),
        }
        let annotations: &[(&str, &[&str])] = &[
            ("mode", &["audit", "warn", "enforce", "off"]),
            ("effect", &["deny", "throttle", "revoke", "allow"]),
            (
                "limit",
                &[
                    "3/1m",
                    "5/10s",
                    "0/1m",
                    "1/0s",
                    "x",
                    "99999999999999999999/1d",
                ],
            ),
            ("on_error", &["deny", "skip", "maybe"]),
            ("severity", &["critical", "low", "huge"]),
            ("owner", &["team", ""]),
            ("reason", &["because", ""]),
            (
                "maps",
                &[
                    "OWASP-NHI:NHI2",
                    "NHI-06",
                    "NIST-CSF-2.0:PR.AA-5",
                    "X:Y",
                    ",",
                ],
            ),
            ("audit_until", &["2027-01-31", "2027-13-01", "tomorrow"]),
            ("unknown", &["x"]),
        ];
        for _ in 0..(0usize..4).any() {
            let (name, values) = annotations.pick();
            out += &format!("@{name}({})\n", quoted(values.pick()));
        }
        let kind = ["forbid", "forbid", "permit"].pick();
        let principal = [
            "principal",
            "principal is Agent",
            "principal in Team::\"support\"",
            "principal == ?principal",
            "principal is Robot",
        ]
        .pick();
        let action = [
            "action",
            "action == Action::\"read_secret\"",
            "action in Action::\"egress\"",
            "action in [Action::\"secret_read\", Action::\"nope\"]",
        ]
        .pick();
        let resource = ["resource", "resource is Secret", "resource is Endpoint"].pick();
        out += &format!("{kind} ({principal}, {action}, {resource})");
        if any::<bool>() {
            let depth = (0u8..=MAX_NESTING).any();
            out += &format!("\nwhen {{ {} }}", condition(depth));
        }
        out += ";\n";
        out
    }

    fn policies() -> String {
        (0..(0usize..4).any()).map(policy).collect()
    }

    fn entities() -> String {
        let n = (0usize..4).any();
        let items: Vec<Value> = (0..n)
            .map(|_| {
                let ty = TYPES.pick();
                let attrs = match (0u8..4).any() {
                    0 => json!({}),
                    1 => json!({"env": "prod", "owner": {"__entity": {"type": "Team", "id": "support"}}}),
                    2 => json!({"tier": "high"}),
                    _ => json!({"owner": "x", "model": "m"}),
                };
                json!({"uid": {"type": ty, "id": "e"}, "attrs": attrs, "parents": [{"type": "Team", "id": "support"}]})
            })
            .collect();
        Value::Array(items).to_string()
    }

    /// The files of one pack: path relative to the pack, and text. Half are the example
    /// pack with one file changed (so most of the pack is valid and the validator runs
    /// on the change); the rest mix real, mutated, generated and arbitrary files.
    pub fn generate() -> Vec<(String, String)> {
        if any::<bool>() { one_change() } else { mixed() }
    }

    fn one_change() -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = REAL.clone();
        let mut keys_file = None;
        let which = (0usize..files.len() + 2).any();
        match files.get_mut(which) {
            Some((name, text)) => {
                let mut generated = || match name.as_str() {
                    "arbiter.toml" => config(&mut keys_file),
                    "schema.cedarschema" => schema(),
                    "entities.json" => entities(),
                    _ => policies(),
                };
                *text = match (0u8..10).any() {
                    0..=5 => mutation::mutate(TOKENS, text, 3),
                    6..=8 => generated(),
                    _ => arbitrary_text(),
                };
            }
            // A new policy file, or the example's issuers added.
            None if any::<bool>() => files.push(("policies/new.cedar".to_owned(), policies())),
            None => {
                let toml = &mut files[0].1;
                *toml = format!("{toml}\n{}", issuers(&mut keys_file));
            }
        }
        if let Some(path) = keys_file {
            files.push((path, jwks()));
        }
        files
    }

    fn mixed() -> Vec<(String, String)> {
        let mut files = Vec::new();
        let mut keys_file = None;
        if (0u8..8).any() != 0 {
            let text = match (0u8..10).any() {
                0..=2 => real("arbiter.toml"),
                3..=4 => mutation::mutate(TOKENS, &real("arbiter.toml"), 6),
                5..=8 => config(&mut keys_file),
                _ => arbitrary_text(),
            };
            files.push(("arbiter.toml".to_owned(), text));
        }
        if let Some(path) = keys_file {
            files.push((path, jwks()));
        }
        if (0u8..8).any() != 0 {
            files.push((
                "schema.cedarschema".to_owned(),
                file(real("schema.cedarschema"), schema),
            ));
        }
        if (0u8..6).any() != 0 {
            files.push((
                "entities.json".to_owned(),
                file(real("entities.json"), entities),
            ));
        }
        let reals = real_policies();
        for i in 0..(0usize..4).any() {
            let text = file(reals.pick().clone(), policies);
            files.push((format!("policies/p{i}.cedar"), text));
        }
        files
    }
}
