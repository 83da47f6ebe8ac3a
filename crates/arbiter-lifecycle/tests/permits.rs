//! Suggested permits: they parse, validate, carry unique `baseline.` ids, and permit
//! exactly what was observed: every observed request, nothing of another action, and
//! other resources only where a type was generalized.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::Path;
use std::str::FromStr;

use arbiter_core::Pack;
use arbiter_lifecycle::permits::{MAX_LISTED, Suggestion, suggest};
use arbiter_store::Observed;
use cedar_policy::{
    Authorizer, Context, Decision, EntityUid, PolicySet, Request, Schema, ValidationMode, Validator,
};
use jiff::Timestamp;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/agents-and-pipelines"
);

/// A rule already in the pack with the id the support bot's first permit would get.
const TAKEN: &str = r#"// Taken from an earlier suggestion.
@id("baseline.support-bot.1")
permit (
  principal == Agent::"support-bot",
  action == Action::"read_ticket",
  resource == Ticket::"T-1"
);
"#;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The example pack, copied, with [`TAKEN`] added.
fn example_pack() -> (tempfile::TempDir, Pack) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(EXAMPLE), dir.path());
    fs::write(dir.path().join("policies/earlier-baseline.cedar"), TAKEN).unwrap();
    let pack = Pack::load(dir.path()).unwrap_or_else(|p| panic!("{p}"));
    (dir, pack)
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// `count` requests of `principal` doing `action` on `resource`, on 2026-11-26.
fn seen(principal: &str, action: &str, resource: &str, count: u64) -> Observed {
    Observed {
        principal: principal.to_owned(),
        action: format!(r#"Action::"{action}""#),
        resource: resource.to_owned(),
        resource_type: resource.split("::").next().unwrap().to_owned(),
        count,
        first_seen: at("2026-11-26T09:00:00Z"),
        last_seen: at("2026-11-26T17:30:00Z"),
        allowed: count,
        default_denied_in_audit: 0,
    }
}

const SUPPORT: &str = r#"Agent::"support-bot""#;
const OPS: &str = r#"Agent::"ops-copilot""#;
const DEPLOY: &str = r#"CiJob::"deploy-prod""#;
const BILLING: &str = r#"Service::"billing-api""#;
const WEIRD: &str = r#"Agent::"we\"ird\\bot""#;

/// Several principals, actions and resource types; seven secrets of one type, five
/// endpoints (as many as are listed), and rows the schema rejects.
fn synthetic() -> Vec<Observed> {
    let mut rows = vec![
        seen(SUPPORT, "read_ticket", r#"Ticket::"T-1""#, 40),
        seen(SUPPORT, "read_ticket", r#"Ticket::"T-2""#, 12),
        seen(SUPPORT, "comment_ticket", r#"Ticket::"T-1""#, 3),
        seen(SUPPORT, "comment_ticket", r#"Ticket::"T-2""#, 1),
        seen(OPS, "create_token", r#"Service::"billing-api-staging""#, 9),
        seen(OPS, "update_config", r#"Config::"staging/billing-api""#, 2),
        seen(DEPLOY, "deploy", BILLING, 30),
        seen(DEPLOY, "read_secret", r#"Secret::"prod/db-password""#, 30),
        seen(DEPLOY, "http_request", r#"Endpoint::"api.github.com""#, 5),
        seen(
            DEPLOY,
            "http_request",
            r#"Endpoint::"registry.npmjs.org""#,
            5,
        ),
        seen(DEPLOY, "upload_file", r#"Endpoint::"api.github.com""#, 1),
        seen(BILLING, "create_token", r#"Service::"ledger-api""#, 500),
        seen(BILLING, "read_ticket", r#"Ticket::"T-2""#, 1),
        seen(WEIRD, "read_ticket", r#"Ticket::"say \"hi\"""#, 1),
        // Rejected: not in the schema, not a uid, not applicable, a group.
        seen(OPS, "drop_database", r#"Secret::"prod/db-password""#, 1),
        seen("not a uid", "read_ticket", r#"Ticket::"T-1""#, 1),
        seen(DEPLOY, "comment_ticket", r#"Ticket::"T-1""#, 2),
        seen(DEPLOY, "comment_ticket", r#"Ticket::"T-2""#, 2),
        seen(OPS, "secret_read", r#"Secret::"prod/db-password""#, 1),
    ];
    for n in 0..7 {
        rows.push(seen(
            OPS,
            "read_secret",
            &format!(r#"Secret::"staging/s-{n}""#),
            1,
        ));
    }
    for host in [
        "a.example",
        "b.example",
        "c.example",
        "d.example",
        "e.example",
    ] {
        rows.push(seen(
            OPS,
            "http_request",
            &format!(r#"Endpoint::"{host}""#),
            1,
        ));
    }
    rows
}

/// The rows of [`synthetic`] the schema rejects.
fn rejected(o: &Observed) -> bool {
    o.principal == "not a uid"
        || o.action == r#"Action::"drop_database""#
        || o.action == r#"Action::"secret_read""#
        || (o.principal == DEPLOY && o.action == r#"Action::"comment_ticket""#)
}

/// The rows the schema accepts: those the suggestion must permit.
fn admitted(rows: &[Observed]) -> Vec<(EntityUid, EntityUid, EntityUid)> {
    rows.iter()
        .filter(|o| !rejected(o))
        .map(|o| (uid(&o.principal), uid(&o.action), uid(&o.resource)))
        .collect()
}

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn policy_set(suggestion: &Suggestion) -> PolicySet {
    PolicySet::from_str(&suggestion.cedar).unwrap_or_else(|e| panic!("{e}\n{}", suggestion.cedar))
}

fn decide(
    pack: &Pack,
    set: &PolicySet,
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
) -> Decision {
    // The permits read no context; requests are not checked against the schema's context
    // types, only (by the callers) against what the action applies to.
    let request = Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        Context::empty(),
        None,
    )
    .unwrap();
    Authorizer::new()
        .is_authorized(&request, set, pack.entities())
        .decision()
}

/// Whether the schema lets `action` apply to this principal and resource.
fn applies(
    schema: &Schema,
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
) -> bool {
    let principals = schema
        .principals_for_action(action)
        .is_some_and(|mut types| types.any(|t| t == principal.type_name()));
    let resources = schema
        .resources_for_action(action)
        .is_some_and(|mut types| types.any(|t| t == resource.type_name()));
    principals && resources
}

fn rule_ids(set: &PolicySet) -> Vec<String> {
    set.policies()
        .map(|p| {
            p.annotation("id")
                .expect("every permit has an @id")
                .to_owned()
        })
        .collect()
}

#[test]
fn the_suggestion_parses_and_validates_strictly_with_unique_baseline_ids() {
    let (_dir, pack) = example_pack();
    let suggestion = suggest(&pack, &synthetic()).unwrap();
    let set = policy_set(&suggestion);

    assert_eq!(set.policies().count(), suggestion.policies);
    let result =
        Validator::new(pack.schema().unwrap().clone()).validate(&set, ValidationMode::Strict);
    assert!(result.validation_passed(), "{result}\n{}", suggestion.cedar);

    let ids = rule_ids(&set);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("baseline.")), "{ids:?}");
    assert!(
        ids.iter().all(|id| pack.rule(id).is_none()),
        "an id the pack has: {ids:?}"
    );
    assert!(
        ids.contains(&"baseline.support-bot.1-2".to_owned()),
        "{ids:?}"
    );
}

#[test]
fn the_suggestion_permits_every_observed_request() {
    let (_dir, pack) = example_pack();
    let rows = synthetic();
    let set = policy_set(&suggest(&pack, &rows).unwrap());

    for (principal, action, resource) in admitted(&rows) {
        assert_eq!(
            decide(&pack, &set, &principal, &action, &resource),
            Decision::Allow,
            "{principal} {action} {resource}"
        );
    }
}

#[test]
fn the_suggestion_permits_no_action_that_was_not_observed() {
    let (_dir, pack) = example_pack();
    let schema = pack.schema().unwrap();
    let rows = synthetic();
    let admitted = admitted(&rows);
    let set = policy_set(&suggest(&pack, &rows).unwrap());
    // What each principal did, by resource type.
    let done: HashSet<(String, String, String)> = admitted
        .iter()
        .map(|(p, a, r)| (p.to_string(), a.to_string(), r.type_name().to_string()))
        .collect();

    let mut checked = 0;
    for (principal, _, resource) in &admitted {
        for action in schema.actions() {
            let key = (
                principal.to_string(),
                action.to_string(),
                resource.type_name().to_string(),
            );
            if done.contains(&key) || !applies(schema, principal, action, resource) {
                continue;
            }
            assert_eq!(
                decide(&pack, &set, principal, action, resource),
                Decision::Deny,
                "{principal} {action} {resource}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} requests checked");
}

#[test]
fn the_suggestion_permits_other_resources_only_of_a_type_seen_more_than_five_times() {
    let (_dir, pack) = example_pack();
    let schema = pack.schema().unwrap();
    let rows = synthetic();
    let admitted = admitted(&rows);
    let set = policy_set(&suggest(&pack, &rows).unwrap());

    let mut resources: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for (p, a, r) in &admitted {
        resources
            .entry((p.to_string(), a.to_string(), r.type_name().to_string()))
            .or_default()
            .insert(r.to_string());
    }
    let principals: BTreeSet<&EntityUid> = admitted.iter().map(|(p, _, _)| p).collect();
    let mut all_resources: BTreeSet<EntityUid> =
        admitted.iter().map(|(_, _, r)| r.clone()).collect();
    all_resources.insert(uid(r#"Secret::"never-seen""#));
    all_resources.insert(uid(r#"Ticket::"never-seen""#));

    for principal in principals {
        for action in schema.actions() {
            for resource in &all_resources {
                if !applies(schema, principal, action, resource) {
                    continue;
                }
                let group = (
                    principal.to_string(),
                    action.to_string(),
                    resource.type_name().to_string(),
                );
                let expected = match resources.get(&group) {
                    Some(seen) if seen.len() > MAX_LISTED => Decision::Allow,
                    Some(seen) if seen.contains(&resource.to_string()) => Decision::Allow,
                    _ => Decision::Deny,
                };
                assert_eq!(
                    decide(&pack, &set, principal, action, resource),
                    expected,
                    "{principal} {action} {resource}"
                );
            }
        }
    }
}

#[test]
fn rows_the_schema_rejects_are_skipped_and_noted() {
    let (_dir, pack) = example_pack();
    let suggestion = suggest(&pack, &synthetic()).unwrap();
    assert_eq!(
        suggestion.notes,
        [
            r#"skipped 1 request(s) on 1 observed (principal, action, resource): the action Action::"drop_database" is not in the pack's schema"#,
            r#"skipped 1 request(s) on 1 observed (principal, action, resource): the principal "not a uid" is not a Cedar entity uid"#,
            r#"skipped 1 request(s) on 1 observed (principal, action, resource): the schema does not let principals of type Agent perform Action::"secret_read""#,
            r#"skipped 4 request(s) on 2 observed (principal, action, resource): the schema does not let principals of type CiJob perform Action::"comment_ticket""#,
        ]
    );
    assert!(!suggestion.cedar.contains("drop_database"));
    assert!(
        !suggestion
            .cedar
            .contains("CiJob::\"deploy-prod\",\n    action == Action::\"comment_ticket\"")
    );
}

#[test]
fn a_small_suggestion_reads_as_expected() {
    let (_dir, pack) = example_pack();
    let mut first = seen(SUPPORT, "read_ticket", r#"Ticket::"T-1""#, 40);
    first.allowed = 38;
    first.default_denied_in_audit = 2;
    let rows = [
        first,
        seen(SUPPORT, "read_ticket", r#"Ticket::"T-2""#, 12),
        seen(SUPPORT, "comment_ticket", r#"Ticket::"T-1""#, 3),
        seen(SUPPORT, "comment_ticket", r#"Ticket::"T-2""#, 1),
        seen(WEIRD, "read_ticket", r#"Ticket::"say \"hi\"""#, 1),
    ];

    let suggestion = suggest(&pack, &rows).unwrap();

    assert_eq!(suggestion.policies, 2);
    assert!(suggestion.notes.is_empty(), "{:?}", suggestion.notes);
    assert_eq!(
        suggestion.cedar,
        r#"// Least-privilege permits suggested by `arbiter baseline` from the decisions
// identities were seen making. Review them before adding them to the pack.
// 57 request(s) by 2 principal(s), from 2026-11-26T09:00:00Z to 2026-11-26T17:30:00Z.

// Agent::"support-bot": Action::"comment_ticket", Action::"read_ticket" on Ticket::"T-1", Ticket::"T-2"
// 56 request(s), first seen 2026-11-26T09:00:00Z, last seen 2026-11-26T17:30:00Z; 2 of them matched no permit (a default-deny scope in audit or warn let them through)
@id("baseline.support-bot.1-2")
permit (
    principal == Agent::"support-bot",
    action in [Action::"comment_ticket", Action::"read_ticket"],
    resource is Ticket
)
when { [Ticket::"T-1", Ticket::"T-2"].contains(resource) };

// Agent::"we\"ird\\bot": Action::"read_ticket" on Ticket::"say \"hi\""
// 1 request(s), first seen 2026-11-26T09:00:00Z, last seen 2026-11-26T17:30:00Z
@id("baseline.we-ird-bot.1")
permit (
    principal == Agent::"we\"ird\\bot",
    action == Action::"read_ticket",
    resource == Ticket::"say \"hi\""
);
"#
    );
}

#[test]
fn nothing_observed_suggests_an_empty_file() {
    let (_dir, pack) = example_pack();
    let suggestion = suggest(&pack, &[]).unwrap();
    assert_eq!(suggestion.policies, 0);
    assert_eq!(policy_set(&suggestion).policies().count(), 0);
}

/// An action that is also a group never shares a permit: `action in [..]` would take its
/// members too.
#[test]
fn an_action_group_is_permitted_alone_and_not_its_members() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("schema.cedarschema"),
        r#"entity User;
entity Doc;
action view appliesTo { principal: [User], resource: [Doc] };
action view_all in [view] appliesTo { principal: [User], resource: [Doc] };
action edit, comment appliesTo { principal: [User], resource: [Doc] };
"#,
    )
    .unwrap();
    fs::write(dir.path().join("arbiter.toml"), "").unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    fs::write(
        dir.path().join("policies/docs.cedar"),
        "@id(\"docs.edit\")\npermit (principal, action == Action::\"edit\", resource);\n",
    )
    .unwrap();
    let pack = Pack::load(dir.path()).unwrap_or_else(|p| panic!("{p}"));
    let rows = [
        seen(r#"User::"u""#, "view", r#"Doc::"a""#, 1),
        seen(r#"User::"u""#, "edit", r#"Doc::"a""#, 1),
        seen(r#"User::"u""#, "comment", r#"Doc::"a""#, 1),
    ];

    let suggestion = suggest(&pack, &rows).unwrap();
    let set = policy_set(&suggestion);

    assert_eq!(suggestion.policies, 2, "{}", suggestion.cedar);
    let (user, doc) = (uid(r#"User::"u""#), uid(r#"Doc::"a""#));
    for action in ["view", "edit", "comment"] {
        let action = uid(&format!(r#"Action::"{action}""#));
        assert_eq!(decide(&pack, &set, &user, &action, &doc), Decision::Allow);
    }
    let view_all = uid(r#"Action::"view_all""#);
    assert_eq!(decide(&pack, &set, &user, &view_all, &doc), Decision::Deny);
}
