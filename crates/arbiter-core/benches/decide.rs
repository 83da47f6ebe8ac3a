//! arbiter's whole decision against raw Cedar on the same requests, side by side in one
//! run, for packs of 10, 100 and 1,000 rules (DESIGN §7):
//!
//! - `raw_cedar`: what a bare Cedar PDP does per request: build the context and request
//!   from the same JSON against the schema, then `is_authorized` over the whole set;
//! - `arbiter`: `Engine::decide`, the full decision (validation, reserved context,
//!   session, throttles, the sliced evaluation, the response);
//! - `raw_cedar_on_slice`: raw Cedar on exactly the slice arbiter evaluates, so
//!   `arbiter − raw_cedar_on_slice` is everything arbiter adds around Cedar.
//!
//! A second group, `session_context`, measures the session record that rules reading
//! `context.session` make arbiter build, on a 100-rule pack with such rules.
//!
//! `cargo bench -p arbiter-core --bench decide`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark"
)]

use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::sync::Arc;

use arbiter_core::request::{DecisionRequest, EntityRef};
use arbiter_core::{Engine, Pack};
use cedar_policy::{Authorizer, Context, EntityUid, PolicySet, Request};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

#[path = "decide/peers.rs"]
mod peers;

const ACTIONS: usize = 50;
const GROUPS: usize = 5;

/// Which actions a rule is on.
#[derive(Debug, Clone, Copy)]
enum On {
    Any,
    Group(usize),
    Tool(usize),
}

/// What a rule says, past its scope.
#[derive(Debug, Clone, Copy)]
enum Says {
    /// `principal.tier >= t && context.n < 1000`
    Permit(i64),
    /// `context.n > x && resource.risk > 2 && context.target like "*.internal"`
    Forbid(i64),
}

/// Rule `i` of a pack: its principal type, its actions and its condition. The peers'
/// policies are written from the same shapes.
fn shape(i: usize) -> (&'static str, On, Says) {
    let on = match i % 25 {
        0 => On::Any,
        5 | 10 | 15 | 20 => On::Group(i % GROUPS),
        _ => On::Tool(i % ACTIONS),
    };
    let principal = if i.is_multiple_of(2) {
        "Agent"
    } else {
        "Service"
    };
    let says = if i.is_multiple_of(3) {
        Says::Forbid(50 + (i % 50) as i64)
    } else {
        Says::Permit((i % 4) as i64)
    };
    (principal, on, says)
}

/// A platform-like pack: 50 tool actions in 5 capability groups, agents and services, and
/// `rules` policies spread over them (one in five on a whole group, a few on any action).
/// With `enforce`, every rule and the default-deny scope are in enforce, so arbiter
/// decides as Cedar does (DESIGN §3 step 6): the pack the peers are compared on.
fn write_pack(dir: &std::path::Path, rules: usize, chains: bool, enforce: bool) {
    let mut schema = String::from(
        "entity Team;\nentity Agent in [Team] { tier: Long };\nentity Service in [Team] { tier: Long };\n\
         entity Tool { risk: Long };\n",
    );
    let groups: Vec<String> = (0..GROUPS).map(|g| format!("cap{g}")).collect();
    writeln!(schema, "action {};", groups.join(", ")).unwrap();
    for a in 0..ACTIONS {
        writeln!(
            schema,
            "action tool{a} in [cap{}] appliesTo {{ principal: [Agent, Service], resource: [Tool], \
             context: {{ n: Long, target: String }} }};",
            a % GROUPS
        )
        .unwrap();
    }
    let mut policies = String::new();
    for i in 0..rules {
        let (principal, on, says) = shape(i);
        let action = match on {
            On::Any => "action".to_owned(),
            On::Group(g) => format!("action in [Action::\"cap{g}\"]"),
            On::Tool(a) => format!("action == Action::\"tool{a}\""),
        };
        let principal = format!("principal is {principal}");
        match says {
            _ if chains && i % 9 == 0 => {
                // Agent-chain rules read the session: their slices carry the touched set.
                writeln!(
                    policies,
                    "@id(\"chain-{i}\")\n@mode(\"audit\")\nforbid({principal}, {action}, resource is Tool)\n  \
                     when {{ context.session.touched.contains(\"cap1\") && context.n > 100 }};\n"
                )
                .unwrap();
            }
            Says::Forbid(above) => {
                let mode = if enforce {
                    "enforce"
                } else {
                    ["audit", "warn", "enforce"][(i / 3) % 3]
                };
                writeln!(
                    policies,
                    "@id(\"forbid-{i}\")\n@mode(\"{mode}\")\nforbid({principal}, {action}, resource is Tool)\n  \
                     when {{ context.n > {above} && resource.risk > 2 && context.target like \"*.internal\" }};\n",
                )
                .unwrap();
            }
            Says::Permit(tier) => {
                writeln!(
                    policies,
                    "@id(\"permit-{i}\")\npermit({principal}, {action}, resource is Tool)\n  \
                     when {{ principal.tier >= {tier} && context.n < 1000 }};\n",
                )
                .unwrap();
            }
        }
    }
    let mut entities = String::from("[");
    entities.push_str(r#"{"uid":{"type":"Team","id":"platform"},"attrs":{},"parents":[]}"#);
    for k in 0..10 {
        write!(
            entities,
            r#",{{"uid":{{"type":"Agent","id":"agent{k}"}},"attrs":{{"tier":{}}},"parents":[{{"type":"Team","id":"platform"}}]}}"#,
            k % 4
        )
        .unwrap();
        write!(
            entities,
            r#",{{"uid":{{"type":"Service","id":"svc{k}"}},"attrs":{{"tier":{}}},"parents":[]}}"#,
            k % 4
        )
        .unwrap();
        write!(
            entities,
            r#",{{"uid":{{"type":"Tool","id":"t{k}"}},"attrs":{{"risk":{}}},"parents":[]}}"#,
            k % 5
        )
        .unwrap();
    }
    entities.push(']');
    fs::create_dir_all(dir.join("policies")).unwrap();
    fs::write(dir.join("schema.cedarschema"), schema).unwrap();
    fs::write(dir.join("policies/rules.cedar"), policies).unwrap();
    fs::write(dir.join("entities.json"), entities).unwrap();
    let mode = if enforce { "enforce" } else { "audit" };
    fs::write(
        dir.join("arbiter.toml"),
        format!("[default_deny]\nmode = \"{mode}\"\n"),
    )
    .unwrap();
}

fn requests() -> Vec<DecisionRequest> {
    (0..64)
        .map(|i| DecisionRequest {
            principal: EntityRef::Text(if i % 2 == 0 {
                format!("Agent::\"agent{}\"", i % 10)
            } else {
                format!("Service::\"svc{}\"", i % 10)
            }),
            action: EntityRef::Text(format!("Action::\"tool{}\"", (i * 7) % ACTIONS)),
            resource: EntityRef::Text(format!("Tool::\"t{}\"", i % 10)),
            context: Some(serde_json::json!({"n": (i * 13) % 120, "target": "db.internal"})),
            session: Some(format!("s{}", i % 8)),
            credential: None,
            entities: None,
            time: None,
        })
        .collect()
}

/// A bare Cedar PDP's work for one request.
fn raw_cedar(
    pack: &Pack,
    policies: &PolicySet,
    req: &DecisionRequest,
    authorizer: &Authorizer,
) -> bool {
    let uid = |e: &EntityRef| match e {
        EntityRef::Text(t) => t.parse::<EntityUid>().unwrap(),
        EntityRef::Typed(_) => unreachable!("the benchmark writes text references"),
    };
    let action = uid(&req.action);
    let schema = pack.schema();
    let context =
        Context::from_json_value(req.context.clone().unwrap(), schema.map(|s| (s, &action)))
            .unwrap();
    let request = Request::new(
        uid(&req.principal),
        action,
        uid(&req.resource),
        context,
        schema,
    )
    .unwrap();
    authorizer
        .is_authorized(&request, policies, pack.entities())
        .decision()
        == cedar_policy::Decision::Allow
}

fn load(rules: usize, chains: bool, enforce: bool) -> (tempfile::TempDir, Arc<Pack>) {
    let dir = tempfile::tempdir().unwrap();
    write_pack(dir.path(), rules, chains, enforce);
    let pack = Arc::new(Pack::load(dir.path()).unwrap_or_else(|p| panic!("{p}")));
    (dir, pack)
}

fn bench(c: &mut Criterion) {
    let requests = requests();
    let authorizer = Authorizer::new();
    let mut group = c.benchmark_group("decide");
    for rules in [10, 100, 1_000] {
        let (_dir, pack) = load(rules, false, false);
        let engine = Engine::new(Arc::clone(&pack));
        let slices: Vec<PolicySet> = requests
            .iter()
            .map(|r| engine.explain(r).unwrap().slice)
            .collect();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("raw_cedar", rules), |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(raw_cedar(&pack, pack.policies(), &requests[i], &authorizer))
            });
        });
        group.bench_function(BenchmarkId::new("arbiter", rules), |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(engine.decide(&requests[i]).unwrap())
            });
        });
        group.bench_function(BenchmarkId::new("raw_cedar_on_slice", rules), |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(raw_cedar(&pack, &slices[i], &requests[i], &authorizer))
            });
        });
    }
    group.finish();

    // Agent-chain rules read `context.session`: their slices carry the session record.
    // Its cost, against the same requests outside any session (an empty record).
    let mut group = c.benchmark_group("session_context");
    let sessionless: Vec<DecisionRequest> = requests
        .iter()
        .cloned()
        .map(|mut r| {
            r.session = None;
            r
        })
        .collect();
    let (_dir, pack) = load(100, true, false);
    let engine = Engine::new(Arc::clone(&pack));
    let mut i = 0;
    group.bench_function("arbiter_in_sessions", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            black_box(engine.decide(&requests[i]).unwrap())
        });
    });
    group.bench_function("arbiter_sessionless", |b| {
        b.iter(|| {
            i = (i + 1) % sessionless.len();
            black_box(engine.decide(&sessionless[i]).unwrap())
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(40);
    targets = bench, peers::bench
}
criterion_main!(benches);
