//! The rule-level difference between two packs: what changed, and which way it moves
//! enforcement. Each test loads a BASE and a HEAD pack written for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;

use arbiter_core::Pack;
use arbiter_lifecycle::drift::{Direction, Field, PackDiff, Presence, diff};
use tempfile::TempDir;

const SCHEMA: &str = r#"
entity Agent;
entity CiJob;
entity Doc { public: Bool };
action read appliesTo { principal: [Agent, CiJob], resource: [Doc], context: {} };
"#;

const PERMIT: &str = "@id(\"p\")\npermit (principal, action, resource) when { resource.public };\n";

fn pack(config: &str, policies: &str) -> (TempDir, Pack) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("arbiter.toml"), config).unwrap();
    fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    fs::write(
        dir.path().join("policies/rules.cedar"),
        format!("{PERMIT}{policies}"),
    )
    .unwrap();
    let pack = Pack::load(dir.path()).unwrap_or_else(|p| panic!("{p}"));
    (dir, pack)
}

fn between(base: &str, head: &str) -> PackDiff {
    let (_b, base) = pack("", base);
    let (_h, head) = pack("", head);
    diff(&base, &head)
}

fn forbid(id: &str, notes: &str, condition: &str) -> String {
    format!(
        "@id(\"{id}\")\n{notes}\nforbid (principal is Agent, action, resource) when {{ {condition} }};\n"
    )
}

#[test]
fn the_same_rules_written_otherwise_are_no_change() {
    let base = forbid("f", "@mode(\"enforce\")", "!resource.public");
    let head = format!(
        "// a comment\n{}",
        forbid("f", "@mode(\"enforce\")", "  !resource.public  ")
            .replace("forbid (", "forbid(\n  ")
    );
    let d = between(&base, &head);
    assert!(d.changes.is_empty(), "{:#?}", d.changes);
    assert_ne!(d.base, d.head, "the packs' bytes differ");
}

#[test]
fn moves_away_from_enforcement_are_downgrades_and_come_first() {
    let base = [
        forbid("a.mode", "@mode(\"enforce\")", "true"),
        forbid(
            "b.effect",
            "@mode(\"enforce\")\n@effect(\"revoke\")",
            "true",
        ),
        forbid(
            "c.limit",
            "@mode(\"enforce\")\n@effect(\"throttle\")\n@limit(\"3/1m\")",
            "true",
        ),
        forbid("d.skip", "@mode(\"audit\")", "true"),
        forbid("e.removed", "@mode(\"warn\")", "true"),
        forbid("f.upgrade", "@mode(\"audit\")", "true"),
        forbid("g.condition", "@mode(\"enforce\")", "true"),
    ]
    .concat();
    let head = [
        forbid("a.mode", "@mode(\"warn\")", "true"),
        forbid("b.effect", "@mode(\"enforce\")\n@effect(\"deny\")", "true"),
        forbid(
            "c.limit",
            "@mode(\"enforce\")\n@effect(\"throttle\")\n@limit(\"100/1h\")",
            "true",
        ),
        forbid("d.skip", "@mode(\"audit\")\n@on_error(\"skip\")", "true"),
        forbid("f.upgrade", "@mode(\"enforce\")", "true"),
        forbid("g.condition", "@mode(\"enforce\")", "!resource.public"),
        forbid("h.new-audit", "@mode(\"audit\")", "true"),
    ]
    .concat();
    let d = between(&base, &head);
    let seen: Vec<(&str, Direction)> = d
        .changes
        .iter()
        .map(|c| (c.rule.as_str(), c.direction))
        .collect();
    assert_eq!(
        seen,
        [
            ("a.mode", Direction::Downgrade),
            ("b.effect", Direction::Downgrade),
            // 100/1h is fewer a second than 3/1m: tighter.
            ("c.limit", Direction::Upgrade),
            ("d.skip", Direction::Downgrade),
            ("e.removed", Direction::Downgrade),
            ("f.upgrade", Direction::Upgrade),
            ("g.condition", Direction::Neutral),
            ("h.new-audit", Direction::Neutral),
        ]
        .into_iter()
        .sorted_by_direction()
    );
    assert_eq!((d.downgrades, d.upgrades), (4, 2));
    let removed = d.changes.iter().find(|c| c.rule == "e.removed").unwrap();
    assert_eq!(removed.presence, Presence::Removed);
    assert_eq!(removed.why, ["a rule in `warn` is removed"]);
    let effect = d.changes.iter().find(|c| c.rule == "b.effect").unwrap();
    assert_eq!(
        effect.fields,
        [Field {
            field: "effect".to_owned(),
            base: Some("revoke".to_owned()),
            head: Some("deny".to_owned())
        }]
    );
    let condition = d.changes.iter().find(|c| c.rule == "g.condition").unwrap();
    assert_eq!(condition.fields.len(), 1);
    assert_eq!(condition.fields[0].field, "condition");
    // HEAD's line: the permit (2 lines) and five rules (19 lines) come before it.
    assert_eq!(condition.at, "policies/rules.cedar:22");
}

#[test]
fn a_looser_throttle_and_a_forbid_turned_permit_are_downgrades() {
    let base = [
        forbid(
            "t",
            "@mode(\"enforce\")\n@effect(\"throttle\")\n@limit(\"3/1m\")",
            "true",
        ),
        forbid("k", "@mode(\"enforce\")", "true"),
    ]
    .concat();
    let head = [
        forbid(
            "t",
            "@mode(\"enforce\")\n@effect(\"throttle\")\n@limit(\"30/1m\")",
            "true",
        ),
        "@id(\"k\")\npermit (principal is Agent, action, resource);\n".to_owned(),
    ]
    .concat();
    let d = between(&base, &head);
    assert_eq!(d.downgrades, 2, "{:#?}", d.changes);
    let k = d.changes.iter().find(|c| c.rule == "k").unwrap();
    assert_eq!(k.why, ["from `enforce` to a permit"]);
    assert!(k.fields.iter().any(|f| f.field == "kind"));
    let t = d.changes.iter().find(|c| c.rule == "t").unwrap();
    assert_eq!(t.why, ["its throttle lets more through: 3/1m → 30/1m"]);
}

#[test]
fn a_default_deny_scope_lowered_is_a_downgrade_raised_an_upgrade() {
    let (_b, base) = pack(
        "[default_deny]\nmode = \"audit\"\nprincipal_types = { Agent = \"enforce\" }\n",
        "",
    );
    let (_h, head) = pack(
        "[default_deny]\nmode = \"audit\"\nprincipal_types = { CiJob = \"enforce\" }\n",
        "",
    );
    let d = diff(&base, &head);
    let seen: Vec<(&str, Direction)> = d
        .changes
        .iter()
        .map(|c| (c.rule.as_str(), c.direction))
        .collect();
    assert_eq!(
        seen,
        [
            ("default-deny:Agent", Direction::Downgrade),
            ("default-deny:CiJob", Direction::Upgrade),
        ]
    );
    assert_eq!(d.changes[0].at, "arbiter.toml");
    assert_eq!(
        d.changes[0].why,
        ["the default-deny scope of Agent goes from `enforce` to `audit`"]
    );
}

#[test]
fn other_annotations_are_changes_without_a_direction() {
    let base = forbid(
        "o",
        "@mode(\"audit\")\n@owner(\"a\")\n@severity(\"low\")",
        "true",
    );
    let head = forbid(
        "o",
        "@mode(\"audit\")\n@owner(\"b\")\n@severity(\"low\")",
        "true",
    );
    let d = between(&base, &head);
    assert_eq!(d.changes.len(), 1);
    assert_eq!(d.changes[0].direction, Direction::Neutral);
    assert_eq!(
        d.changes[0].fields,
        [Field {
            field: "@owner".to_owned(),
            base: Some("a".to_owned()),
            head: Some("b".to_owned())
        }]
    );
}

/// Downgrades, then upgrades, then the rest; by rule within each (the order `diff`
/// promises).
trait SortedByDirection {
    fn sorted_by_direction(self) -> Vec<(&'static str, Direction)>;
}

impl<I: Iterator<Item = (&'static str, Direction)>> SortedByDirection for I {
    fn sorted_by_direction(self) -> Vec<(&'static str, Direction)> {
        let mut all: Vec<_> = self.collect();
        all.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        all
    }
}

fn pins(on_tool_change: &str, upstreams: &[(&str, &[(&str, &str)])]) -> String {
    let hash = format!("sha256:{}", "a".repeat(64));
    let mut config = format!("[mcp]\non_tool_change = \"{on_tool_change}\"\n");
    for (upstream, tools) in upstreams {
        for (tool, description) in *tools {
            config.push_str(&format!(
                "\n[mcp.pins.{upstream}.{tool}]\ndescription = \"{description}\"\ninput_schema = \"{hash}\"\n"
            ));
        }
    }
    config
}

fn pins_between(base: &str, head: &str) -> PackDiff {
    let (_b, base) = pack(base, "");
    let (_h, head) = pack(head, "");
    diff(&base, &head)
}

#[test]
fn pins_removed_or_decided_are_downgrades_and_pins_added_are_upgrades() {
    let base = pins(
        "refuse",
        &[
            ("srv", &[("echo", "Echoes"), ("add", "Adds")]),
            ("old", &[("x", "X")]),
        ],
    );
    let head = pins(
        "decide",
        &[
            ("srv", &[("echo", "Echoes, and more"), ("sub", "Subtracts")]),
            ("new", &[("y", "Y")]),
        ],
    );
    let d = pins_between(&base, &head);
    assert!(d.changes.is_empty(), "{:#?}", d.changes);
    let seen: Vec<(String, Presence, Direction)> = d
        .pins
        .iter()
        .map(|p| (p.subject(), p.presence, p.direction))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "[mcp] on_tool_change".to_owned(),
                Presence::Changed,
                Direction::Downgrade
            ),
            ("old/x".to_owned(), Presence::Removed, Direction::Downgrade),
            ("new/y".to_owned(), Presence::Added, Direction::Upgrade),
            ("srv/add".to_owned(), Presence::Removed, Direction::Neutral),
            ("srv/echo".to_owned(), Presence::Changed, Direction::Neutral),
            ("srv/sub".to_owned(), Presence::Added, Direction::Neutral),
        ],
        "{:#?}",
        d.pins
    );
    assert_eq!((d.downgrades, d.upgrades), (2, 1));
    let echo = d.pins.iter().find(|p| p.subject() == "srv/echo").unwrap();
    assert_eq!(
        echo.fields,
        [Field {
            field: "description".to_owned(),
            base: Some("Echoes".to_owned()),
            head: Some("Echoes, and more".to_owned()),
        }]
    );
    assert!(
        d.pins[1].why[0].contains("no longer compared"),
        "{:#?}",
        d.pins[1]
    );

    // Back to refuse: an upgrade; the same pins: nothing.
    let d = pins_between(
        &head,
        &pins(
            "refuse",
            &[
                ("srv", &[("echo", "Echoes, and more"), ("sub", "Subtracts")]),
                ("new", &[("y", "Y")]),
            ],
        ),
    );
    assert_eq!(
        (d.downgrades, d.upgrades, d.pins.len()),
        (0, 1, 1),
        "{:#?}",
        d.pins
    );
    assert!(pins_between(&base, &base).pins.is_empty());
}
