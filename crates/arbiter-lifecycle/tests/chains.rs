//! Chain analysis on packs written for the test: each step's level per identity, the
//! weakest step, bypass flags with their fixes, promotions that raise a chain, and the
//! traffic a real log holds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::{DecisionRequest, Engine, Pack};
use arbiter_lifecycle::chains::{self, Chains, IdentityChain, Level, Query};
use arbiter_store::{DecisionRecord, Durability, LogWriter, PackVersion, Store};
use jiff::Timestamp;
use serde_json::json;

const SCHEMA: &str = r#"
entity Team;
entity Agent in [Team];
entity Config;
entity Endpoint;
action read_config, change_config appliesTo { principal: [Agent], resource: [Config] };
action egress;
action http_request, upload_file in [Action::"egress"]
    appliesTo { principal: [Agent], resource: [Endpoint] };
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Team", "id": "ops"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Agent", "id": "bot"}, "attrs": {}, "parents": [{"type": "Team", "id": "ops"}]},
  {"uid": {"type": "Agent", "id": "helper"}, "attrs": {}, "parents": []}
]"#;

const CONFIG: &str = r#"
[chains.exfiltration]
steps = ["change_config", "egress"]
"#;

fn pack(policies: &str) -> (tempfile::TempDir, Pack) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    fs::write(dir.path().join("entities.json"), ENTITIES).unwrap();
    fs::write(dir.path().join("arbiter.toml"), CONFIG).unwrap();
    fs::write(dir.path().join("policies/rules.cedar"), policies).unwrap();
    let pack = Pack::load(dir.path()).unwrap();
    (dir, pack)
}

const OPEN: &str = "@id(\"open\")\npermit(principal, action, resource);\n";

fn now() -> Timestamp {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

fn analyse(pack: &Pack) -> Chains {
    chains::analyse(pack, None, &Query::default(), now()).unwrap()
}

fn of<'a>(found: &'a Chains, principal: &str) -> &'a IdentityChain {
    found.chains[0]
        .identities
        .iter()
        .find(|i| i.principal == principal)
        .unwrap_or_else(|| panic!("no {principal} in {found:#?}"))
}

fn levels(identity: &IdentityChain) -> Vec<Option<Level>> {
    identity.steps.iter().map(|s| s.level).collect()
}

#[test]
fn an_enforced_last_step_after_an_uncontrolled_one_is_flagged_with_the_rule_to_write() {
    let (_dir, pack) = pack(&format!(
        "{OPEN}\n@id(\"no-egress\")\n@mode(\"enforce\")\n\
         forbid(principal in Team::\"ops\", action in Action::\"egress\", resource);\n"
    ));
    let found = analyse(&pack);
    let bot = of(&found, r#"Agent::"bot""#);
    assert_eq!(
        levels(bot),
        [Some(Level::Uncontrolled), Some(Level::Enforced)]
    );
    assert_eq!(bot.level, Level::Uncontrolled);
    assert_eq!(bot.weakest, ["change_config"]);
    let [bypass] = bot.bypasses.as_slice() else {
        panic!("{bot:#?}")
    };
    assert_eq!(
        (bypass.enforced.as_str(), bypass.weak.as_str()),
        ("egress", "change_config")
    );
    assert_eq!(
        bypass.message,
        r#"`egress` is enforced, but `change_config` just before it is uncontrolled for Agent::"bot""#
    );
    assert!(
        bypass.fix.contains("write an enforced forbid"),
        "{}",
        bypass.fix
    );
    // `helper` is not in the team: the forbid does not reach it, nothing is flagged.
    let helper = of(&found, r#"Agent::"helper""#);
    assert_eq!(
        levels(helper),
        [Some(Level::Uncontrolled), Some(Level::Uncontrolled)]
    );
    assert!(helper.bypasses.is_empty());
}

#[test]
fn an_audit_rule_on_the_weak_step_is_the_fix_and_its_promotion_raises_the_chain() {
    let (_dir, pack) = pack(&format!(
        "{OPEN}\n@id(\"no-egress\")\n@mode(\"enforce\")\n\
         forbid(principal, action in Action::\"egress\", resource);\n\n\
         @id(\"config-freeze\")\n@mode(\"audit\")\n\
         forbid(principal, action == Action::\"change_config\", resource);\n"
    ));
    let found = analyse(&pack);
    let bot = of(&found, r#"Agent::"bot""#);
    assert_eq!(levels(bot), [Some(Level::Audited), Some(Level::Enforced)]);
    assert_eq!(bot.bypasses[0].fix, "promote `config-freeze` (audit)");
    let [promotion] = bot.promotions.as_slice() else {
        panic!("{bot:#?}")
    };
    assert_eq!(
        (promotion.rule.as_str(), promotion.raises_to),
        ("config-freeze", Level::Enforced)
    );
}

#[test]
fn a_group_step_partly_enforced_names_the_actions_left() {
    let (_dir, pack) = pack(&format!(
        "{OPEN}\n@id(\"no-http\")\n@mode(\"enforce\")\n\
         forbid(principal, action == Action::\"http_request\", resource);\n\n\
         @id(\"big-uploads\")\n@mode(\"enforce\")\n\
         forbid(principal, action == Action::\"upload_file\", resource) when {{ context has size }};\n"
    ));
    let found = analyse(&pack);
    let bot = of(&found, r#"Agent::"bot""#);
    let egress = &bot.steps[1];
    assert_eq!(egress.level, Some(Level::PartiallyEnforced));
    assert_eq!(
        egress.actions,
        [r#"Action::"http_request""#, r#"Action::"upload_file""#]
    );
    assert_eq!(
        egress.left,
        [
            r#"Action::"upload_file" on Endpoint: partially-enforced (`big-uploads` denies only when its condition holds)"#
        ]
    );
    let rules: Vec<(&str, &str)> = egress
        .controls
        .iter()
        .map(|c| (c.rule.as_str(), c.covers))
        .collect();
    assert_eq!(rules, [("no-http", "some"), ("big-uploads", "some")]);
}

#[test]
fn an_enforced_default_deny_covers_what_no_permit_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, _) =
        pack("@id(\"read\")\npermit(principal, action == Action::\"read_config\", resource);\n");
    copy(pdir.path(), dir.path());
    fs::write(
        dir.path().join("arbiter.toml"),
        format!("{CONFIG}\n[default_deny]\nprincipal_types = {{ Agent = \"enforce\" }}\n"),
    )
    .unwrap();
    let pack = Pack::load(dir.path()).unwrap();
    let found = analyse(&pack);
    let bot = of(&found, r#"Agent::"bot""#);
    assert_eq!(levels(bot), [Some(Level::Enforced), Some(Level::Enforced)]);
    assert_eq!(bot.steps[0].controls[0].rule, "default-deny:Agent");
}

fn copy(from: &Path, to: &Path) {
    for entry in walk(from) {
        let target = to.join(entry.strip_prefix(from).unwrap());
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(&entry, target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn with_a_log_each_step_counts_the_identitys_requests_and_the_enforced_ones() {
    let (dir, pack) = pack(&format!(
        "{OPEN}\n@id(\"no-http\")\n@mode(\"enforce\")\n\
         forbid(principal, action == Action::\"http_request\", resource);\n"
    ));
    let pack = Arc::new(pack);
    let store = Store::open(&dir.path().join("data")).unwrap();
    store
        .record_pack_version(&PackVersion::of(&pack, now()))
        .unwrap();
    let writer = LogWriter::start(&store, Durability::Sync, 64).unwrap();
    let engine = Engine::new(Arc::clone(&pack));
    let calls = [
        ("bot", "http_request", "Endpoint", 3),
        ("bot", "upload_file", "Endpoint", 2),
        ("bot", "change_config", "Config", 1),
        ("stranger", "http_request", "Endpoint", 1),
    ];
    for (who, action, ty, n) in calls {
        for _ in 0..n {
            let request = DecisionRequest::from_value(&json!({
                "principal": format!("Agent::\"{who}\""),
                "action": format!("Action::\"{action}\""),
                "resource": format!("{ty}::\"x\""),
                "context": {}}))
            .unwrap();
            let d = engine.decide(&request).unwrap();
            let record = DecisionRecord::decided(&d, &request, json!({}), Duration::from_micros(1));
            writer.append(record).await.unwrap();
        }
    }
    writer.shutdown().await.unwrap();
    let query = Query {
        since: Some("2000-01-01T00:00:00Z".parse().unwrap()),
        ..Query::default()
    };
    let found = chains::analyse(&pack, Some(&store), &query, now()).unwrap();
    let bot = of(&found, r#"Agent::"bot""#);
    let traffic: Vec<(u64, u64)> = bot
        .steps
        .iter()
        .map(|s| {
            let t = s.traffic.unwrap();
            (t.requests, t.enforced_in_scope)
        })
        .collect();
    assert_eq!(traffic, [(1, 0), (5, 3)]);
    // A forbid whose scope names a resource: the log's resources are read to count it.
    let (_dir2, narrow) = self::pack(&format!(
        "{OPEN}\n@id(\"no-http\")\n@mode(\"enforce\")\n\
         forbid(principal, action == Action::\"http_request\", resource);\n\n\
         @id(\"no-upload-to-x\")\n@mode(\"enforce\")\n\
         forbid(principal, action == Action::\"upload_file\", resource == Endpoint::\"x\");\n\n\
         @id(\"no-upload-to-y\")\n@mode(\"enforce\")\n\
         forbid(principal, action == Action::\"upload_file\", resource == Endpoint::\"y\");\n"
    ));
    assert!(narrow.enforced_forbids_scope_resources());
    let found = chains::analyse(&narrow, Some(&store), &query, now()).unwrap();
    let egress = of(&found, r#"Agent::"bot""#).steps[1].traffic.unwrap();
    assert_eq!((egress.requests, egress.enforced_in_scope), (5, 5));
    // A principal the entity store does not hold, seen in the log, is analysed too.
    let stranger = of(&found, r#"Agent::"stranger""#);
    assert_eq!(stranger.steps[1].traffic.unwrap().requests, 1);
    // One principal only.
    let query = Query {
        principal: Some(r#"Agent::"helper""#.to_owned()),
        ..query
    };
    let found = chains::analyse(&pack, Some(&store), &query, now()).unwrap();
    assert_eq!(found.chains[0].identities.len(), 1);
    assert_eq!(
        found.chains[0].identities[0].steps[1]
            .traffic
            .unwrap()
            .requests,
        0
    );
}
