//! The `peers` group: arbiter against other policy engines on the same workload, side by
//! side in one run (issue 15).
//!
//! The pack is the `decide` pack with every rule and the default-deny scope in enforce,
//! so arbiter's decision is Cedar's. The same rules are written for each peer:
//!
//! - `raw_cedar`: the whole policy set, the request built from JSON against the schema;
//! - `cedar_split_by_action`: the same, on the policies whose action scope can match
//!   the request's action (a policy set per action, made once);
//! - `regorus_interpreter` and `regorus_vm`: one Rego rule per policy (`permits` and
//!   `forbids` partial sets, `allow` when a permit and no forbid holds), the entities as
//!   `data`, the request as `input`; the VM runs the program compiled from the same
//!   policy;
//! - `casbin`: one policy line per rule, a matcher for the two rule shapes, action
//!   groups as a `g` role hierarchy, and two functions added to its matcher language
//!   (`num` to read a policy's threshold, `ends_with` for `like "*.internal"`). casbin
//!   has no entity store: it is handed the principal's and the resource's attributes
//!   with each request.
//!
//! Before any timing, every engine decides every request and all must agree; the first
//! disagreement aborts the bench.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use arbiter_core::request::{DecisionRequest, EntityRef};
use arbiter_core::response::Outcome;
use arbiter_core::{Engine, Pack};
use casbin::rhai::Dynamic;
use casbin::{CoreApi, MgmtApi};
use cedar_policy::{ActionConstraint, Authorizer, EntityUid, PolicySet};
use criterion::{BenchmarkId, Criterion};
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::RegoVM;

use super::{ACTIONS, GROUPS, On, Says, load, raw_cedar, shape};

/// How many requests the engines must agree on, and are timed on in turn.
const REQUESTS: usize = 1_000;

/// The requests: agents and services, every tool, resources of every risk, contexts on
/// both sides of the rules' thresholds. Outside any session (the peers have none).
fn requests() -> Vec<DecisionRequest> {
    (0..REQUESTS)
        .map(|i| DecisionRequest {
            principal: EntityRef::Text(if i % 2 == 0 {
                format!("Agent::\"agent{}\"", (i / 2) % 10)
            } else {
                format!("Service::\"svc{}\"", (i / 2) % 10)
            }),
            action: EntityRef::Text(format!("Action::\"tool{}\"", (i * 7) % ACTIONS)),
            resource: EntityRef::Text(format!("Tool::\"t{}\"", (i * 3) % 10)),
            context: Some(serde_json::json!({
                "n": (i * 13) % 120,
                "target": if i % 3 == 0 { "db.public" } else { "db.internal" },
            })),
            session: None,
            credential: None,
            entities: None,
            time: None,
        })
        .collect()
}

/// `Type::"id"` → (`Type`, `id`).
fn split(reference: &EntityRef) -> (String, String) {
    let EntityRef::Text(text) = reference else {
        unreachable!("the benchmark writes text references")
    };
    let uid: EntityUid = text.parse().unwrap();
    (uid.type_name().to_string(), uid.id().unescaped().to_owned())
}

/// The entities' attributes, as the pack's `entities.json` has them.
fn tier(id: &str) -> i64 {
    id.trim_start_matches(|c: char| c.is_alphabetic())
        .parse::<i64>()
        .unwrap()
        % 4
}
fn risk(id: &str) -> i64 {
    id.trim_start_matches('t').parse::<i64>().unwrap() % 5
}

/// The Rego policy: one rule per Cedar policy.
fn rego(rules: usize) -> String {
    let mut rego = String::from(
        "package bench\n\ndefault allow := false\n\nallow if {\n\tpermits[_]\n\tnot denied\n}\n\n\
         denied if {\n\tforbids[_]\n}\n",
    );
    for i in 0..rules {
        let (principal, on, says) = shape(i);
        let action = match on {
            On::Any => String::new(),
            On::Group(g) => format!("\tdata.groups[input.action] == \"cap{g}\"\n"),
            On::Tool(a) => format!("\tinput.action == \"tool{a}\"\n"),
        };
        let scope = format!(
            "\tinput.principal.type == \"{principal}\"\n{action}\tinput.resource.type == \"Tool\"\n"
        );
        match says {
            Says::Permit(t) => write!(
                rego,
                "\npermits contains \"permit-{i}\" if {{\n{scope}\
                 \tdata.entities[input.principal.type][input.principal.id].tier >= {t}\n\
                 \tinput.context.n < 1000\n}}\n"
            ),
            Says::Forbid(x) => write!(
                rego,
                "\nforbids contains \"forbid-{i}\" if {{\n{scope}\
                 \tinput.context.n > {x}\n\
                 \tdata.entities.Tool[input.resource.id].risk > 2\n\
                 \tendswith(input.context.target, \".internal\")\n}}\n"
            ),
        }
        .unwrap();
    }
    rego
}

/// The entities and action groups as Rego `data`.
fn rego_data() -> regorus::Value {
    let mut agents = serde_json::Map::new();
    let mut services = serde_json::Map::new();
    let mut tools = serde_json::Map::new();
    for k in 0..10 {
        agents.insert(format!("agent{k}"), serde_json::json!({"tier": k % 4}));
        services.insert(format!("svc{k}"), serde_json::json!({"tier": k % 4}));
        tools.insert(format!("t{k}"), serde_json::json!({"risk": k % 5}));
    }
    let groups: serde_json::Map<String, serde_json::Value> = (0..ACTIONS)
        .map(|a| (format!("tool{a}"), format!("cap{}", a % GROUPS).into()))
        .collect();
    serde_json::json!({
        "entities": {"Agent": agents, "Service": services, "Tool": tools},
        "groups": groups,
    })
    .into()
}

/// A request as Rego `input`, in JSON as a PEP would send it.
fn rego_input(request: &DecisionRequest) -> serde_json::Value {
    let (pt, pid) = split(&request.principal);
    let (_, action) = split(&request.action);
    let (rt, rid) = split(&request.resource);
    serde_json::json!({
        "principal": {"type": pt, "id": pid},
        "action": action,
        "resource": {"type": rt, "id": rid},
        "context": request.context.clone().unwrap(),
    })
}

const CASBIN_MODEL: &str = r#"
[request_definition]
r = sub, act, obj, ctx

[policy_definition]
p = kind, ptype, act, otype, lim, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = r.sub.ty == p.ptype && r.obj.ty == p.otype && (p.act == "*" || g(r.act, p.act)) && ((p.kind == "permit" && r.sub.tier >= num(p.lim) && r.ctx.n < 1000) || (p.kind == "forbid" && r.ctx.n > num(p.lim) && r.obj.risk > 2 && ends_with(r.ctx.target, ".internal")))
"#;

#[derive(Debug, Clone, Hash, serde::Serialize)]
struct Subject {
    ty: String,
    tier: i64,
}

#[derive(Debug, Clone, Hash, serde::Serialize)]
struct Object {
    ty: String,
    risk: i64,
}

#[derive(Debug, Clone, Hash, serde::Serialize)]
struct Ctx {
    n: i64,
    target: String,
}

type CasbinRequest = (Subject, String, Object, Ctx);

fn casbin_request(request: &DecisionRequest) -> CasbinRequest {
    let (pt, pid) = split(&request.principal);
    let (_, action) = split(&request.action);
    let (rt, rid) = split(&request.resource);
    let context = request.context.as_ref().unwrap();
    (
        Subject {
            ty: pt,
            tier: tier(&pid),
        },
        action,
        Object {
            ty: rt,
            risk: risk(&rid),
        },
        Ctx {
            n: context["n"].as_i64().unwrap(),
            target: context["target"].as_str().unwrap().to_owned(),
        },
    )
}

/// Runs a future that never waits: casbin's setup on an in-memory adapter and model does
/// no I/O, so it completes on its first poll. No async runtime for one bench.
fn ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::yield_now();
    }
}

fn casbin_enforcer(rules: usize) -> casbin::Enforcer {
    ready(async {
        let model = casbin::DefaultModel::from_str(CASBIN_MODEL).await.unwrap();
        let adapter = casbin::MemoryAdapter::default();
        let mut enforcer = casbin::Enforcer::new(model, adapter).await.unwrap();
        enforcer.add_function(
            "num",
            casbin::function_map::OperatorFunction::Arg1(|s: Dynamic| -> Dynamic {
                // casbin builds rhai with `only_i32`: its integers are `i32`.
                let n: casbin::rhai::INT = s
                    .into_immutable_string()
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(casbin::rhai::INT::MIN);
                Dynamic::from(n)
            }),
        );
        enforcer.add_function(
            "ends_with",
            casbin::function_map::OperatorFunction::Arg2(
                |s: Dynamic, suffix: Dynamic| -> Dynamic {
                    match (s.into_immutable_string(), suffix.into_immutable_string()) {
                        (Ok(s), Ok(suffix)) => Dynamic::from(s.ends_with(suffix.as_str())),
                        _ => Dynamic::from(false),
                    }
                },
            ),
        );
        let lines: Vec<Vec<String>> = (0..rules)
            .map(|i| {
                let (principal, on, says) = shape(i);
                let act = match on {
                    On::Any => "*".to_owned(),
                    On::Group(g) => format!("cap{g}"),
                    On::Tool(a) => format!("tool{a}"),
                };
                let (kind, lim, eft) = match says {
                    Says::Permit(t) => ("permit", t, "allow"),
                    Says::Forbid(x) => ("forbid", x, "deny"),
                };
                [kind, principal, &act, "Tool", &lim.to_string(), eft]
                    .map(str::to_owned)
                    .to_vec()
            })
            .collect();
        enforcer.add_policies(lines).await.unwrap();
        let groups: Vec<Vec<String>> = (0..ACTIONS)
            .map(|a| vec![format!("tool{a}"), format!("cap{}", a % GROUPS)])
            .collect();
        enforcer.add_grouping_policies(groups).await.unwrap();
        enforcer
    })
}

/// The policies whose action scope can match `action` (in `group`).
fn split_by_action(pack: &Pack) -> HashMap<EntityUid, PolicySet> {
    let mut out = HashMap::new();
    for a in 0..ACTIONS {
        let action: EntityUid = format!("Action::\"tool{a}\"").parse().unwrap();
        let group: EntityUid = format!("Action::\"cap{}\"", a % GROUPS).parse().unwrap();
        let policies = pack
            .policies()
            .policies()
            .filter(|p| match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(uid) => uid == action,
                ActionConstraint::In(list) => list.iter().any(|u| *u == action || *u == group),
            });
        let set = PolicySet::from_policies(policies.cloned()).unwrap();
        out.insert(action, set);
    }
    out
}

fn action_of(request: &DecisionRequest) -> EntityUid {
    let EntityRef::Text(text) = &request.action else {
        unreachable!("the benchmark writes text references")
    };
    text.parse().unwrap()
}

pub(crate) fn bench(c: &mut Criterion) {
    let requests = requests();
    let authorizer = Authorizer::new();
    let inputs: Vec<serde_json::Value> = requests.iter().map(rego_input).collect();
    let casbin_requests: Vec<CasbinRequest> = requests.iter().map(casbin_request).collect();
    let mut group = c.benchmark_group("peers");
    for rules in [10, 100, 1_000] {
        let (_dir, pack) = load(rules, false, true);
        let engine = Engine::new(Arc::clone(&pack));
        let by_action = split_by_action(&pack);
        let actions: Vec<EntityUid> = requests.iter().map(action_of).collect();

        let mut interpreter = regorus::Engine::new();
        interpreter
            .add_policy("bench.rego".to_owned(), rego(rules))
            .unwrap();
        interpreter.add_data(rego_data()).unwrap();
        let entry: regorus::Rc<str> = "data.bench.allow".into();
        let compiled = interpreter.compile_with_entrypoint(&entry).unwrap();
        let program = Compiler::compile_from_policy(&compiled, &["data.bench.allow"]).unwrap();
        let mut vm = RegoVM::new();
        vm.load_program(program);
        vm.set_data(rego_data()).unwrap();
        let enforcer = casbin_enforcer(rules);
        let mut arbiter =
            |i: usize| engine.decide(&requests[i]).unwrap().decision == Outcome::Allow;
        let mut raw = |i: usize| raw_cedar(&pack, pack.policies(), &requests[i], &authorizer);
        let mut split =
            |i: usize| raw_cedar(&pack, &by_action[&actions[i]], &requests[i], &authorizer);
        let mut interp = |i: usize| {
            interpreter.set_input(inputs[i].clone().into());
            interpreter
                .eval_rule("data.bench.allow".to_owned())
                .unwrap()
                == regorus::Value::from(true)
        };
        let mut rvm = |i: usize| {
            vm.set_input(inputs[i].clone().into());
            vm.execute().unwrap() == regorus::Value::from(true)
        };
        let mut casbin = |i: usize| enforcer.enforce(casbin_requests[i].clone()).unwrap();

        let mut engines: Vec<(&str, &mut dyn FnMut(usize) -> bool)> = vec![
            ("arbiter", &mut arbiter),
            ("raw_cedar", &mut raw),
            ("cedar_split_by_action", &mut split),
            ("regorus_interpreter", &mut interp),
            ("regorus_vm", &mut rvm),
            ("casbin", &mut casbin),
        ];
        let mut allowed = 0;
        for (i, request) in requests.iter().enumerate() {
            let cedar = (engines[1].1)(i);
            allowed += usize::from(cedar);
            for (name, decide) in engines.iter_mut() {
                let said = decide(i);
                assert_eq!(
                    said, cedar,
                    "{rules} rules: {name} disagrees with Cedar on request {i}: {request:?}"
                );
            }
        }
        eprintln!(
            "peers/{rules}: all {} engines agree on {} requests ({allowed} allowed)",
            engines.len(),
            requests.len()
        );
        for (name, decide) in engines.iter_mut() {
            let mut i = 0;
            group.bench_function(BenchmarkId::new(*name, rules), |b| {
                b.iter(|| {
                    i = (i + 1) % REQUESTS;
                    black_box(decide(i))
                });
            });
        }
    }
    group.finish();
}
