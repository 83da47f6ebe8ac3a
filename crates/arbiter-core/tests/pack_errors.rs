//! Every pack problem is reported with its file, its line and the rule's id, all of them at
//! once, and the pack does not load.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::path::Path;

use arbiter_core::Pack;
use arbiter_core::diag::Problem;

const SCHEMA: &str = r#"
entity Agent { level: Long };
entity Tool;
action call appliesTo { principal: [Agent], resource: [Tool], context: { target: String } };
"#;

/// Writes a pack with these policy files (name → text) and optional arbiter.toml.
fn pack(
    policies: &[(&str, &str)],
    config: Option<&str>,
    schema: Option<&str>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    for (name, text) in policies {
        fs::write(dir.path().join("policies").join(name), text).unwrap();
    }
    fs::write(dir.path().join("arbiter.toml"), config.unwrap_or("")).unwrap();
    if let Some(schema) = schema {
        fs::write(dir.path().join("schema.cedarschema"), schema).unwrap();
    }
    dir
}

fn problems(dir: &Path) -> Vec<Problem> {
    match Pack::load(dir) {
        Ok(_) => panic!("the pack loaded, but it has a problem"),
        Err(problems) => problems.0,
    }
}

/// Loads a one-file pack and returns its only problem, rendered.
fn only_problem(policy: &str) -> String {
    let dir = pack(&[("rules.cedar", policy)], None, Some(SCHEMA));
    let found = problems(dir.path());
    assert_eq!(found.len(), 1, "exactly one problem: {found:#?}");
    found[0].to_string()
}

fn assert_located(rendered: &str, line: usize, rule: Option<&str>, says: &str) {
    let place = format!("policies/rules.cedar:{line}");
    assert!(
        rendered.starts_with(&place),
        "`{rendered}` starts with `{place}`"
    );
    if let Some(rule) = rule {
        assert!(
            rendered.contains(&format!("rule `{rule}`")),
            "`{rendered}` names rule {rule}"
        );
    }
    assert!(rendered.contains(says), "`{rendered}` says `{says}`");
}

const OK: &str = "@id(\"ok\")\npermit(principal, action, resource);\n";

#[test]
fn missing_id() {
    let p = only_problem(&format!("{OK}\nforbid(principal, action, resource);\n"));
    assert_located(&p, 4, None, "missing @id");
}

#[test]
fn duplicate_id_names_both_places() {
    let p = only_problem(&format!(
        "{OK}@id(\"ok\")\nforbid(principal, action, resource);\n"
    ));
    assert_located(&p, 3, Some("ok"), "duplicate @id");
    assert!(
        p.contains("policies/rules.cedar:1"),
        "{p} names the first use"
    );
}

#[test]
fn mode_on_a_permit() {
    let p = only_problem("@id(\"p\")\n@mode(\"enforce\")\npermit(principal, action, resource);");
    assert_located(&p, 2, Some("p"), "@mode on a permit");
}

#[test]
fn effect_on_a_permit() {
    let p = only_problem("@id(\"p\")\n@effect(\"deny\")\npermit(principal, action, resource);");
    assert_located(&p, 2, Some("p"), "@effect on a permit");
}

#[test]
fn unknown_mode() {
    let p = only_problem("@id(\"f\")\n@mode(\"enforced\")\nforbid(principal, action, resource);");
    assert_located(
        &p,
        2,
        Some("f"),
        "@mode(\"enforced\") is not one of: audit, warn, enforce",
    );
}

#[test]
fn unknown_effect() {
    let p = only_problem("@id(\"f\")\n@effect(\"block\")\nforbid(principal, action, resource);");
    assert_located(&p, 2, Some("f"), "@effect(\"block\") is not one of");
}

#[test]
fn unknown_on_error() {
    let p = only_problem("@id(\"f\")\n@on_error(\"allow\")\nforbid(principal, action, resource);");
    assert_located(
        &p,
        2,
        Some("f"),
        "@on_error(\"allow\") is not one of: deny, skip",
    );
}

#[test]
fn unknown_severity() {
    let p = only_problem("@id(\"f\")\n@severity(\"urgent\")\nforbid(principal, action, resource);");
    assert_located(&p, 2, Some("f"), "@severity(\"urgent\") is not one of");
}

#[test]
fn throttle_without_limit() {
    let p = only_problem("@id(\"f\")\n@effect(\"throttle\")\nforbid(principal, action, resource);");
    assert_located(&p, 2, Some("f"), "needs @limit");
}

#[test]
fn malformed_limits() {
    for (limit, says) in [
        ("ten/1m", "not a whole number"),
        ("30/1w", "unknown unit `w`"),
        ("30", "not `N/period`"),
        ("0/1m", "at least 1"),
    ] {
        let p = only_problem(&format!(
            "@id(\"f\")\n@effect(\"throttle\")\n@limit(\"{limit}\")\nforbid(principal, action, resource);"
        ));
        assert_located(&p, 3, Some("f"), says);
    }
}

#[test]
fn limit_without_throttle() {
    let p = only_problem("@id(\"f\")\n@limit(\"5/1m\")\nforbid(principal, action, resource);");
    assert_located(&p, 2, Some("f"), "only applies with @effect(\"throttle\")");
}

#[test]
fn malformed_maps() {
    let p = only_problem(
        "@id(\"f\")\n@maps(\"OWASP-NHI:NHI5,,\")\nforbid(principal, action, resource);",
    );
    assert_located(&p, 2, Some("f"), "comma-separated ids");
}

#[test]
fn maps_ids_missing_from_the_catalog() {
    let p = only_problem(
        "@id(\"f\")\n@maps(\"OWASP-NHI:NHI42\")\nforbid(principal, action, resource);",
    );
    assert_located(&p, 2, Some("f"), "`NHI42` is not a control of OWASP-NHI");
    let p = only_problem("@id(\"f\")\n@maps(\"ACME:1\")\nforbid(principal, action, resource);");
    assert_located(&p, 2, Some("f"), "unknown framework `ACME`");
}

#[test]
fn malformed_audit_until() {
    for (date, says) in [
        ("next week", "not a date `YYYY-MM-DD`"),
        ("2026-13-01", "not a valid date"),
    ] {
        let p = only_problem(&format!(
            "@id(\"f\")\n@audit_until(\"{date}\")\nforbid(principal, action, resource);"
        ));
        assert_located(&p, 2, Some("f"), says);
    }
}

#[test]
fn cedar_syntax_errors_are_placed_in_the_file() {
    let p = only_problem(&format!(
        "{OK}\n@id(\"bad\")\nforbid(principal, action, resource) when {{ principal.level > }};"
    ));
    assert_located(&p, 5, None, "unexpected token");
}

#[test]
fn cedar_validation_errors_name_file_line_and_rule() {
    let p = only_problem(&format!(
        "{OK}\n@id(\"typo\")\nforbid(principal, action, resource)\n  when {{ principal.levle > 3 }};"
    ));
    assert_located(&p, 6, Some("typo"), "levle");
}

#[test]
fn reserved_context_keys_are_typed_for_policies() {
    // Policies may use the reserved keys without the schema declaring them...
    let dir = pack(
        &[(
            "rules.cedar",
            "@id(\"s\")\nforbid(principal, action, resource)\n  when { context.session.touched.contains(\"x\") && context.now > datetime(\"2026-01-01\") \
             && context has in_intent && context.in_intent && context.session.age_s > 3 };",
        )],
        None,
        Some(SCHEMA),
    );
    assert!(Pack::load(dir.path()).is_ok());
    // ... and get them typed: a session is not a string.
    let p = only_problem(
        "@id(\"t\")\nforbid(principal, action, resource) when { context.session == \"x\" };",
    );
    assert_located(&p, 2, Some("t"), "");
    // An optional key must be tested with `has` first.
    let p = only_problem("@id(\"o\")\nforbid(principal, action, resource) when { context.novel };");
    assert_located(&p, 2, Some("o"), "novel");
}

#[test]
fn a_schema_may_not_declare_reserved_keys() {
    let schema = SCHEMA.replace("target: String", "target: String, session: String");
    let dir = pack(&[("rules.cedar", OK)], None, Some(&schema));
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.file.ends_with("schema.cedarschema") && p.message.contains("`session`")),
        "{found:#?}"
    );
}

#[test]
fn unknown_keys_in_arbiter_toml() {
    let dir = pack(
        &[("rules.cedar", OK)],
        Some("[defaults]\nmode = \"audit\"\nmood = \"calm\"\n"),
        Some(SCHEMA),
    );
    let found = problems(dir.path());
    let p = found[0].to_string();
    assert!(p.starts_with("arbiter.toml:3"), "{p}");
    assert!(p.contains("unknown field `mood`"), "{p}");
}

#[test]
fn bad_values_in_arbiter_toml() {
    let config = "[default_deny]\nprincipal_types = { Robot = \"enforce\" }\n\n\
                  [chains.c]\nsteps = [\"call\", \"teleport\"]\n\n[server]\npep_tokens = [\"hunter2\"]\n";
    let dir = pack(&[("rules.cedar", OK)], Some(config), Some(SCHEMA));
    let rendered: Vec<String> = problems(dir.path())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(rendered.len(), 3, "{rendered:#?}");
    assert!(
        rendered
            .iter()
            .any(|p| p.starts_with("arbiter.toml:2") && p.contains("`Robot`"))
    );
    assert!(
        rendered
            .iter()
            .any(|p| p.starts_with("arbiter.toml:5") && p.contains("`teleport`"))
    );
    assert!(
        rendered
            .iter()
            .any(|p| p.starts_with("arbiter.toml:8") && p.contains("never the token itself"))
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = pack(
        &[
            (
                "a.cedar",
                "@id(\"a\")\n@mode(\"loud\")\nforbid(principal, action, resource);",
            ),
            (
                "b.cedar",
                "permit(principal, action, resource);\n@id(\"b\")\n@effect(\"throttle\")\nforbid(principal, action, resource);",
            ),
        ],
        Some("[defaults]\nmode = \"strict\"\n"),
        Some(SCHEMA),
    );
    let rendered: Vec<String> = problems(dir.path())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(rendered.len(), 4, "{rendered:#?}");
    assert!(rendered.iter().any(|p| p.starts_with("arbiter.toml:2")));
    assert!(
        rendered
            .iter()
            .any(|p| p.starts_with("policies/a.cedar:2:1: rule `a`")),
        "{rendered:#?}"
    );
    assert!(
        rendered
            .iter()
            .any(|p| p.starts_with("policies/b.cedar:1") && p.contains("missing @id"))
    );
    assert!(
        rendered
            .iter()
            .any(|p| p.starts_with("policies/b.cedar:3:1: rule `b`"))
    );
}

#[test]
fn a_pack_without_a_schema_loads_with_a_warning() {
    let dir = pack(&[("rules.cedar", OK)], None, None);
    let pack = Pack::load(dir.path()).expect("loads");
    assert!(
        pack.warnings()
            .iter()
            .any(|w| w.message.contains("no schema"))
    );
}

#[test]
fn validator_warnings_do_not_fail_the_pack() {
    // An impossible policy is a Cedar validator warning, not an error.
    let dir = pack(
        &[(
            "rules.cedar",
            "@id(\"never\")\nforbid(principal, action, resource) when { false };",
        )],
        None,
        Some(SCHEMA),
    );
    let pack = Pack::load(dir.path()).expect("loads");
    assert!(
        pack.warnings()
            .iter()
            .any(|w| w.rule.as_deref() == Some("never") && w.line == Some(1)),
        "{:#?}",
        pack.warnings()
    );
}

#[test]
fn unknown_annotations_are_warnings() {
    let dir = pack(
        &[(
            "rules.cedar",
            "@id(\"x\")\n@mdoe(\"enforce\")\nforbid(principal, action, resource);",
        )],
        None,
        Some(SCHEMA),
    );
    let pack = Pack::load(dir.path()).expect("loads");
    assert!(
        pack.warnings()
            .iter()
            .any(|w| w.message.contains("unknown annotation @mdoe"))
    );
}

#[test]
fn templates_are_refused() {
    let p = only_problem("@id(\"t\")\npermit(principal == ?principal, action, resource);");
    assert!(p.starts_with("policies/rules.cedar:"), "{p}");
}

/// A pack with these `[[issuers]]` and a JWKS file `keys.json`, and its problems rendered.
fn issuer_problems(config: &str, jwks: &str) -> Vec<String> {
    let dir = pack(&[("rules.cedar", OK)], Some(config), Some(SCHEMA));
    fs::write(dir.path().join("keys.json"), jwks).unwrap();
    problems(dir.path())
        .iter()
        .map(ToString::to_string)
        .collect()
}

const JWKS: &str =
    r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

#[test]
fn a_good_issuer_loads() {
    let config = r#"
[[issuers]]
name = "ci"
preset = "github-actions"
audience = "arbiter"
algorithms = ["EdDSA"]
jwks_file = "keys.json"
principal = 'Agent::"{repository}"'
"#;
    let dir = pack(&[("rules.cedar", OK)], Some(config), Some(SCHEMA));
    fs::write(dir.path().join("keys.json"), JWKS).unwrap();
    let pack = Pack::load(dir.path()).unwrap();
    let keys = pack.issuer_keys("ci").unwrap();
    assert_eq!(keys.jwks.as_deref(), Some(JWKS));
    assert_eq!(
        pack.config().issuers[0].iss(),
        Some("https://token.actions.githubusercontent.com")
    );
}

#[test]
fn issuer_mistakes_are_each_located() {
    let config = r#"
[credentials]
leeway = "10m"

[[issuers]]
name = "k8s"
preset = "kubernetes"
audience = "arbiter"
jwks_file = "keys.json"
algorithms = ["EdDSA", "HS256"]
principal = 'Robot::"{namespace}/{serviceaccount}"'

[[issuers]]
name = "spiffe"
preset = "spiffe"
issuer = "https://spire"
audience = "arbiter"
jwks_url = "http://spire.example/keys"
principal = 'Agent::"{sub}"'
attributes = { level = "team" }
intents = ["nope"]
"#;
    let found = issuer_problems(config, JWKS);
    let expect = [
        "arbiter.toml: [credentials] leeway = \"10m\" is more than 5m",
        "arbiter.toml:6:8: [[issuers]] `k8s`: `issuer` (the `iss` its tokens carry) is required",
        "arbiter.toml:10:24: [[issuers]] `k8s`: algorithm `HS256` is not accepted",
        "arbiter.toml:11:13: [[issuers]] `k8s` principal: `Robot` is not an entity type",
        "arbiter.toml:18:12: [[issuers]] `spiffe`: jwks_url must be https://",
        "arbiter.toml:19:13: [[issuers]] `spiffe` attributes do not fit the schema's `Agent`",
        "arbiter.toml:21:12: [[issuers]] `spiffe` intents: `nope` is not an [intents] entry",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "expected a problem starting `{e}` in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn a_jwks_file_that_is_not_a_key_set_is_an_error() {
    let config = r#"
[[issuers]]
name = "ci"
preset = "github-actions"
audience = "arbiter"
jwks_file = "keys.json"
principal = 'Agent::"{repository}"'
"#;
    let found = issuer_problems(config, r#"{"keys": []}"#);
    assert_eq!(
        found,
        ["keys.json: not a JWKS: it needs a non-empty `keys` array"]
    );
    let outside = config.replace("keys.json", "../keys.json");
    let found = issuer_problems(&outside, JWKS);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("jwks_file must be a path inside the pack"));
}

#[test]
fn an_intent_longer_than_the_credential_limit_is_an_error() {
    let config =
        "[credentials]\nmax_ttl = \"1h\"\n[intents.long]\nactions = [\"call\"]\nmax_ttl = \"2h\"\n";
    let found = issuer_problems(config, JWKS);
    assert_eq!(
        found,
        [
            "arbiter.toml: [intents.long] max_ttl = \"2h\" is longer than [credentials] max_ttl = \"1h\""
        ]
    );
}

#[test]
fn a_key_set_that_cannot_verify_the_issuers_algorithms_is_an_error() {
    let config = r#"
[[issuers]]
name = "ci"
preset = "github-actions"
audience = "arbiter"
jwks_file = "keys.json"
principal = 'Agent::"{repository}"'
"#;
    let found = issuer_problems(config, JWKS);
    assert_eq!(
        found,
        [
            "keys.json: no key in it can verify RS256 (issuer `ci`): RS256 needs an RSA key of 2048 to 4096 bits, ES256 an EC P-256 key, EdDSA an OKP Ed25519 key"
        ]
    );
}

/// Finding 2 of the hostile-input probe: 1,000 nested parentheses aborted the process
/// (a stack overflow in Cedar's parser). Now a located pack error.
#[test]
fn a_policy_nested_1000_deep_is_a_located_pack_error_not_a_crash() {
    let deep = format!(
        "{OK}@id(\"deep\")\nforbid(principal, action, resource) when {{ {}true{} }};\n",
        "(".repeat(1_000),
        ")".repeat(1_000)
    );
    let p = only_problem(&deep);
    assert_located(&p, 4, Some("deep"), "nest more than 64 deep");
    // A long chain of operators recurses as deep as nesting does.
    let long = format!(
        "{OK}@id(\"long\")\nforbid(principal, action, resource) when {{ {} == 1 }};\n",
        vec!["1"; 5_000].join(" + ")
    );
    let p = only_problem(&long);
    assert_located(&p, 4, Some("long"), "operators in one policy");
}

/// The deepest policy the loader accepts loads (on the loader's own stack, whatever the
/// caller's) and decides without taking the process down.
#[test]
fn the_deepest_accepted_policy_loads_on_a_small_stack() {
    let deep = format!(
        "{OK}@id(\"deep\")\nforbid(principal, action, resource) when {{ {}true{} && {} == 1 }};\n",
        "(".repeat(60),
        ")".repeat(60),
        vec!["1"; 400].join(" + ")
    );
    let dir = pack(&[("rules.cedar", &deep)], None, Some(SCHEMA));
    let path = dir.path().to_owned();
    // A runtime's blocking thread has 2 MiB.
    let loaded = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || Pack::load(&path).map(|p| p.rules().len()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(loaded.unwrap(), 2);
}

/// Finding 5: a pack whose policies/ is gone or empty loaded as a pack that decides
/// nothing. It is an error unless arbiter.toml says it is meant.
#[test]
fn a_pack_with_no_policy_is_invalid_unless_it_says_so() {
    let empty = pack(&[], None, Some(SCHEMA));
    let p = problems(empty.path());
    assert!(
        p.iter()
            .any(|p| p.to_string().contains("the pack has no policy")),
        "{p:#?}"
    );
    let gone = pack(&[], None, Some(SCHEMA));
    fs::remove_dir(gone.path().join("policies")).unwrap();
    assert!(!problems(gone.path()).is_empty());
    let meant = pack(
        &[],
        Some("[defaults]\nallow_no_policies = true\n"),
        Some(SCHEMA),
    );
    assert!(Pack::load(meant.path()).is_ok());
}

// ------------------------------------------------- finding 8: only regular files, bounded

/// Loads the pack in `dir` on another thread, failing the test if it takes longer than a
/// bounded deadline rather than hanging it (a FIFO used to block the loader forever).
fn load_within_deadline(dir: &Path) -> Result<Pack, arbiter_core::diag::Problems> {
    let dir = dir.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Pack::load(&dir));
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the pack loads (or fails) without blocking")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn rendered(problems: &arbiter_core::diag::Problems) -> Vec<String> {
    problems.0.iter().map(ToString::to_string).collect()
}

#[cfg(unix)]
#[test]
fn pack_file_that_is_a_fifo_is_an_error_not_a_hang() {
    let dir = pack(&[("rules.cedar", OK)], None, Some(SCHEMA));
    fs::remove_file(dir.path().join("arbiter.toml")).unwrap();
    mkfifo(&dir.path().join("arbiter.toml"));
    mkfifo(&dir.path().join("policies/more.cedar"));
    let found = rendered(&load_within_deadline(dir.path()).expect_err("refused"));
    assert_eq!(
        found,
        [
            "arbiter.toml: not a regular file (it is a FIFO): only regular files are read",
            "policies/more.cedar: not a regular file (it is a FIFO): only regular files are read",
        ]
    );
}

#[cfg(unix)]
#[test]
fn pack_file_that_is_a_symlink_to_dev_zero_is_an_error_not_an_endless_read() {
    let dir = pack(&[("rules.cedar", OK)], None, Some(SCHEMA));
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("policies/zero.cedar")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("entities.json")).unwrap();
    let found = rendered(&load_within_deadline(dir.path()).expect_err("refused"));
    assert_eq!(
        found,
        [
            "entities.json: not a regular file (it is a character device): only regular files are read",
            "policies/zero.cedar: not a regular file (it is a character device): only regular files are read",
        ]
    );
}

#[test]
fn pack_file_larger_than_16_mib_is_an_error_naming_the_file_and_the_limit() {
    let dir = pack(&[("rules.cedar", OK)], None, Some(SCHEMA));
    let big = fs::File::create(dir.path().join("policies/big.cedar")).unwrap();
    // Sparse: nothing like 16 MiB is written to disk.
    big.set_len(arbiter_core::pack::file::MAX_FILE_BYTES + 1)
        .unwrap();
    let found = rendered(&load_within_deadline(dir.path()).expect_err("refused"));
    assert_eq!(
        found,
        ["policies/big.cedar: larger than the limit of 16777216 bytes (16 MiB)"]
    );
}

#[test]
fn pack_directory_where_a_file_belongs_is_an_error_not_an_absent_file() {
    let dir = pack(&[("rules.cedar", OK)], None, None);
    fs::create_dir(dir.path().join("schema.cedarschema")).unwrap();
    fs::create_dir(dir.path().join("policies/dir.cedar")).unwrap();
    let found = rendered(&load_within_deadline(dir.path()).expect_err("refused"));
    assert_eq!(
        found,
        [
            "schema.cedarschema: not a regular file (it is a directory): only regular files are read",
            "policies/dir.cedar: not a regular file (it is a directory): only regular files are read",
        ]
    );
}

#[cfg(unix)]
#[test]
fn pack_file_that_is_a_symlink_to_a_regular_file_still_loads() {
    let dir = pack(&[], None, Some(SCHEMA));
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("shared.cedar");
    fs::write(&target, OK).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("policies/shared.cedar")).unwrap();
    let pack = load_within_deadline(dir.path()).expect("loads");
    assert!(pack.rule("ok").is_some());
}

#[cfg(unix)]
#[test]
fn issuer_jwks_file_that_is_a_fifo_is_an_error_not_a_hang() {
    let dir = pack(
        &[("rules.cedar", OK)],
        Some(
            r#"
[[issuers]]
name = "ci"
issuer = "https://ci.example"
audience = "arbiter"
algorithms = ["EdDSA"]
jwks_file = "keys.json"
principal = 'Agent::"{sub}"'
"#,
        ),
        Some(SCHEMA),
    );
    mkfifo(&dir.path().join("keys.json"));
    let found = rendered(&load_within_deadline(dir.path()).expect_err("refused"));
    assert_eq!(
        found,
        ["keys.json: not a regular file (it is a FIFO): only regular files are read"]
    );
}

#[cfg(unix)]
#[test]
fn policy_test_file_that_is_a_fifo_is_an_error_not_a_hang() {
    let dir = pack(&[("rules.cedar", OK)], None, Some(SCHEMA));
    fs::create_dir(dir.path().join("tests")).unwrap();
    mkfifo(&dir.path().join("tests/blocked.yaml"));
    let path = dir.path().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(arbiter_core::policy_tests::load_tests(&path));
    });
    let found = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the tests load (or fail) without blocking")
        .expect_err("refused");
    assert_eq!(
        rendered(&found),
        ["tests/blocked.yaml: not a regular file (it is a FIFO): only regular files are read"]
    );
}

// ------------------------------------ finding 15: every unknown key, at once, with its line

#[test]
fn every_unknown_key_in_arbiter_toml_is_reported_with_its_line_not_only_the_first() {
    let config = "\
[defaults]
mode = \"audit\"
mood = \"calm\"

[credentials]
max_tll = \"1h\"

[intents.triage]
actions = [\"call\"]
max_ttl = \"10m\"
scope = \"all\"

[readiness]
min_days = \"fourteen\"
";
    let dir = pack(&[("rules.cedar", OK)], Some(config), Some(SCHEMA));
    let rendered: Vec<String> = problems(dir.path())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [
            "arbiter.toml:3:1: unknown field `mood` in [defaults], expected one of `mode`, `on_error`, `allow_no_policies`",
            "arbiter.toml:6:1: unknown field `max_tll` in [credentials], expected one of \
             `required_for`, `max_ttl`, `issuer`, `audience`, `leeway`",
            "arbiter.toml:11:1: unknown field `scope` in [intents.triage], expected `actions` or \
             `max_ttl`",
            // And the rest of the problems, found by the typed parse once they are out.
            "arbiter.toml:14:12: invalid type: string \"fourteen\", expected u32",
        ]
    );
}

/// A key set github-actions' RS256 can use: a 2048-bit RSA key (the public half of
/// `crates/arbiter-identity/tests/fixtures/rsa.pem`).
const JWKS_RS256: &str = concat!(
    r#"{"keys":[{"kty":"RSA","e":"AQAB","n":""#,
    "xG9QctlcLJLu1CGdtmh_48JeMFefPwfgDo6YwzwcZOH54JurhxmPCLTkjZmfqnG-kmjljIOGoHePpI2x",
    "KggAJCe6rXBKSM6A0AHQYpIRi49yoqWauarMoxdoyaVUOJo0W-PQQ8qqhZk3KtrRhmqnQo2keb0j3mg8",
    "sVEINnwFFuvqFkl1Bl7t5EwqNxaR-uEqexhWGMVUlZ0yM4-4JyJffQKa30pmev3yUUCyBCJvsfsIiR4s",
    "wr_T6pWOEJz_IIl-b_EqiXu8ylLkBfGpai0UF_XipaDDmCBH57tnoFvSKBmlheCqdEybAVFPO_1GMnsQ",
    "cLs0UwHkAJXtB45DP07KXQ",
    r#""}]}"#
);

#[test]
fn unknown_keys_at_the_top_in_an_issuer_and_in_an_inline_table_are_each_reported() {
    let config = r#"
colour = "blue"
log = { mask = ["context.password"], hash = "sha256" }

[[issuers]]
name = "ci"
preset = "github-actions"
audience = "arbiter"
jwks_file = "keys.json"
principal = 'Agent::"{repository}"'
refresh = "1h"
"#;
    let dir = pack(&[("rules.cedar", OK)], Some(config), Some(SCHEMA));
    fs::write(dir.path().join("keys.json"), JWKS_RS256).unwrap();
    let found: Vec<(Option<usize>, String)> = problems(dir.path())
        .into_iter()
        .map(|p| (p.line, p.message))
        .collect();
    let keys: Vec<(Option<usize>, &str)> = found
        .iter()
        .map(|(line, m)| (*line, m.split(',').next().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            (Some(2), "unknown field `colour`"),
            (Some(3), "unknown field `hash` in [log]"),
            (Some(11), "unknown field `refresh` in [[issuers]]"),
        ],
        "{found:#?}"
    );
}

#[test]
fn a_good_mcp_mapping_loads() {
    let config = r#"
[mcp]
resource = { type = "Tool" }

[mcp.tools.run]
action = "call"
args = { target = "context.target" }

[mcp.tools.call]
resource = { type = "Tool", arg = "tool.name" }
"#;
    let dir = pack(&[("rules.cedar", OK)], Some(config), Some(SCHEMA));
    let pack = Pack::load(dir.path()).unwrap();
    let mcp = pack.config().mcp.as_ref().unwrap();
    assert_eq!(
        mcp.tool("run").unwrap().action.as_ref().unwrap().get_ref(),
        "call"
    );
    assert_eq!(
        pack.action_with_id("call").unwrap().to_string(),
        r#"Action::"call""#
    );
    assert!(pack.action_with_id("run").is_none());
}

#[test]
fn mcp_mistakes_are_each_located() {
    let config = r#"
[mcp.tools.call]
resource = { type = "Tool", arg = "x", id = "y" }
args = { target = "args.target", t2 = "context.session.id" }

[mcp.tools.fetch]
action = "nope"
resource = { type = "Url", arg = "a..b" }

[mcp.tools.other]
action = "call"
resource = { type = "Agent" }
args = { a = "context.x", b = "context.x.y" }
mood = 1

[mcp.tools.read_file]
"#;
    let dir = pack(&[("rules.cedar", OK)], Some(config), Some(SCHEMA));
    let found: Vec<String> = problems(dir.path())
        .iter()
        .map(ToString::to_string)
        .collect();
    let expect = [
        "arbiter.toml:3:45: [mcp.tools.call] resource: give `arg` or `id`, not both",
        "arbiter.toml:4:19: [mcp.tools.call] args: `args.target` is not a path into the context (e.g. `context.args.target`)",
        "arbiter.toml:4:39: [mcp.tools.call] args: `context.session` is arbiter's own (reserved)",
        "arbiter.toml:7:10: [mcp.tools.fetch] action: `nope` is not an action of the schema",
        "arbiter.toml:8:21: [mcp.tools.fetch] resource: `Url` is not an entity type of the schema",
        "arbiter.toml:8:34: [mcp.tools.fetch] resource arg: `a..b` is not an argument path",
        "arbiter.toml:12:21: [mcp.tools.other] resource: `Agent` is not a resource type of action `call`",
        "arbiter.toml:13:31: [mcp.tools.other] args: `context.x.y` and `context.x` write to the same place",
        "arbiter.toml:14:1: unknown field `mood` in [mcp.tools.other], expected one of `action`, `resource`, `args`",
        "arbiter.toml:16:12: [mcp.tools.read_file]: the schema has no action `read_file`",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "expected a problem starting `{e}` in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn mcp_pins_load_and_their_mistakes_are_each_located() {
    let hash = format!("sha256:{}", "ab".repeat(32));
    let good = format!(
        r#"
[mcp]
on_tool_change = "decide"

[mcp.pins.everything.echo]
description = "Echoes back the input"
input_schema = "{hash}"

[mcp.pins.everything."get-env"]
input_schema = "{hash}"
annotations = "{hash}"
"#
    );
    let dir = pack(&[("rules.cedar", OK)], Some(&good), None);
    let pack = Pack::load(dir.path()).unwrap();
    let mcp = pack.config().mcp.as_ref().unwrap();
    assert_eq!(
        mcp.on_tool_change,
        arbiter_core::config::OnToolChange::Decide
    );
    let pins = mcp.pins_of("everything").unwrap();
    assert_eq!(pins.len(), 2);
    assert!(mcp.pins_of("other").is_none());

    // Each typed mistake stops the typed parse: one pack each.
    for (config, said) in [
        (
            "[mcp]\non_tool_change = \"ignore\"\n",
            "arbiter.toml:2:18: unknown variant `ignore`, expected `refuse` or `decide`",
        ),
        (
            "[mcp.pins.everything.add]\ndescription = \"Adds\"\n",
            "arbiter.toml:1:1: missing field `input_schema`",
        ),
    ] {
        let dir = self::pack(&[("rules.cedar", OK)], Some(config), None);
        let found: Vec<String> = problems(dir.path())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            found.iter().any(|f| f.starts_with(said)),
            "expected a problem starting `{said}` in {found:#?}"
        );
    }

    let bad = format!(
        r#"
[mcp.pins.everything.echo]
description = "Echoes back the input"
input_schema = "sha256:ABC"
output_schema = "{hash}x"
colour = 1

[mcp.pins.""]

[mcp.tools.x]
args = {{ a = "context.tool_changed" }}
"#
    );
    let dir = self::pack(&[("rules.cedar", OK)], Some(&bad), None);
    let found: Vec<String> = problems(dir.path())
        .iter()
        .map(ToString::to_string)
        .collect();
    let expect = [
        "arbiter.toml:4:16: [mcp.pins.everything.echo] input_schema: `sha256:ABC` is not a pinned hash",
        "arbiter.toml:5:17: [mcp.pins.everything.echo] output_schema:",
        "arbiter.toml:6:1: unknown field `colour` in [mcp.pins.everything.echo]",
        "arbiter.toml:8:11: [mcp.pins] an upstream's name is empty",
        "arbiter.toml:11:14: [mcp.tools.x] args: `context.tool_changed` is arbiter's own (reserved)",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "expected a problem starting `{e}` in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn deciding_changed_tools_whose_action_cannot_say_so_is_a_located_warning() {
    let config = format!(
        "[mcp]\non_tool_change = \"decide\"\n\n[mcp.pins.srv.call]\ninput_schema = \"sha256:{}\"\n",
        "0".repeat(64)
    );
    let dir = pack(&[("rules.cedar", OK)], Some(&config), Some(SCHEMA));
    let pack = Pack::load(dir.path()).unwrap();
    let warnings: Vec<String> = pack.warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "arbiter.toml:4:15: [mcp.pins.srv.call]: with `on_tool_change = \"decide\"`, a change of this tool is still refused: the context of action `call` does not declare `tool_changed: Bool`"
        )),
        "{warnings:#?}"
    );
    // Declared, no warning.
    let schema = SCHEMA.replace(
        "context: { target: String }",
        "context: { target: String, tool_changed?: Bool }",
    );
    let dir = self::pack(&[("rules.cedar", OK)], Some(&config), Some(&schema));
    let pack = Pack::load(dir.path()).unwrap();
    assert!(
        pack.warnings()
            .iter()
            .all(|w| !w.to_string().contains("tool_changed")),
        "{:#?}",
        pack.warnings()
    );
}

#[test]
fn the_mcp_namespace_separator_is_checked_and_located() {
    let good = "[mcp]\nnamespace_separator = \"--\"\n";
    let dir = pack(&[("rules.cedar", OK)], Some(good), Some(SCHEMA));
    let loaded = Pack::load(dir.path()).unwrap();
    assert_eq!(loaded.config().mcp.as_ref().unwrap().separator(), "--");
    for bad in ["\"\"", "\"/\"", "\"a b\"", "\"__________\""] {
        let config = format!("\n[mcp]\nnamespace_separator = {bad}\n");
        let dir = pack(&[("rules.cedar", OK)], Some(&config), Some(SCHEMA));
        let found: Vec<String> = problems(dir.path())
            .iter()
            .map(ToString::to_string)
            .collect();
        let [one] = found.as_slice() else {
            panic!("{bad}: {found:#?}")
        };
        assert!(
            one.starts_with("arbiter.toml:3:23: [mcp] namespace_separator:"),
            "{one}"
        );
    }
}
