//! A large decision log to measure the lifecycle commands against (issue 5): N decisions of
//! the example pack `examples/agents-and-pipelines`, written through the real
//! [`LogWriter`] into a data directory as `arbiter serve` would write them.
//!
//! `cargo run --release -p arbiter-store --example synthetic_log -- DATA_DIR [N=1000000] [DAYS=30]`
//!
//! The traffic comes from the pack's own agents, CI jobs and services and a few hundred
//! synthetic ones, each with habits (its team's secrets, its environment's configs and
//! services, a handful of endpoints), spread evenly over the last DAYS days. Each request
//! is decided by a model of the pack's policies, written out below rule by rule; the
//! modes, effects and reasons come from the pack itself, and the outcome follows the
//! engine's: an enforced forbid denies, otherwise a request no permit matched falls to
//! its type's default-deny scope. The pack version is recorded as loaded at the start of
//! the first day.
//!
//! The model is seeded: the same arguments write the same decisions, shifted to the time
//! of the run (masked values differ: the masking key is the data directory's own).

use std::collections::HashMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arbiter_core::Pack;
use arbiter_core::rule::{Effect, Mode};
use arbiter_store::{DB_FILE, DecisionRecord, Durability, Evidence, LogWriter, Masker, Store};
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use ulid::Ulid;

/// The example pack, from the workspace root.
const PACK: &str = "examples/agents-and-pipelines";

/// The log writer's queue, as `arbiter serve` sizes it.
const QUEUE: usize = 8192;

/// Synthetic identities besides the pack's own eight: agents, CI jobs, services.
const SYNTHETIC: [(Kind, u32); 3] = [(Kind::Agent, 60), (Kind::CiJob, 90), (Kind::Service, 150)];

/// How much more traffic each of the pack's own identities makes than a synthetic one.
const KNOWN_WEIGHT: u32 = 25;

/// Tickets are `T-1` to `T-TICKETS`.
const TICKETS: u32 = 20_000;

/// The share of requests that are invalid (an action the schema does not know).
const INVALID: f64 = 0.002;

const TEAMS: [&str; 3] = ["support", "platform", "payments"];

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse()?;
    let pack = Pack::load(workspace_root().join(PACK))?;
    let model = Model::new(&pack)?;
    let store = Store::open(&args.data_dir)?;
    let masker = Masker::load_or_create(&args.data_dir)?;

    let now = Timestamp::now();
    let span = SignedDuration::from_hours(24 * i64::from(args.days));
    let start = now.checked_sub(span)?;
    store.record_pack_version(&arbiter_lifecycle::readiness::pack_version(&pack, start))?;

    let began = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(write(&model, &store, &masker, &args, start, span))?;
    let seconds = began.elapsed().as_secs_f64();
    // Closing the last connection checkpoints the write-ahead log into the database.
    let db = store.db_path().to_path_buf();
    drop(store);

    eprintln!(
        "{} decisions over {} days in {seconds:.1} s ({:.0}/s); {} is {:.0} MiB",
        args.n,
        args.days,
        args.n as f64 / seconds,
        db.display(),
        database_size(&db) as f64 / (1024.0 * 1024.0),
    );
    Ok(())
}

/// Generates and appends the decisions, oldest first, then drains the writer.
async fn write(
    model: &Model<'_>,
    store: &Store,
    masker: &Masker,
    args: &Args,
    start: Timestamp,
    span: SignedDuration,
) -> Result<(), Box<dyn Error>> {
    let writer = LogWriter::start(store, Durability::Batched, QUEUE)?;
    let mut rng = StdRng::seed_from_u64(5);
    let step_us = (span.as_micros() / i128::from(args.n.max(1))).max(1);
    let step_us = i64::try_from(step_us)?;
    let every = (args.n / 10).max(1);
    let began = Instant::now();
    for i in 0..args.n {
        let offset = i64::try_from(i)? * step_us + rng.random_range(0..step_us);
        let time = start.checked_add(SignedDuration::from_micros(offset))?;
        let record = model.record(&mut rng, masker, time);
        writer.append(record).await?;
        if (i + 1) % every == 0 {
            eprintln!(
                "{:>9} / {} queued ({:.1} s), {} waiting for the writer",
                i + 1,
                args.n,
                began.elapsed().as_secs_f64(),
                writer.queue_depth()
            );
        }
    }
    writer.shutdown().await?;
    Ok(())
}

/// The command line.
#[derive(Debug)]
struct Args {
    data_dir: PathBuf,
    n: u64,
    days: u32,
}

impl Args {
    fn parse() -> Result<Args, Box<dyn Error>> {
        let usage = "usage: synthetic_log DATA_DIR [N=1000000] [DAYS=30]";
        let mut args = std::env::args_os().skip(1);
        let data_dir = PathBuf::from(args.next().ok_or(usage)?);
        let n = match args.next() {
            Some(n) => n.to_str().ok_or(usage)?.parse()?,
            None => 1_000_000,
        };
        let days = match args.next() {
            Some(days) => days.to_str().ok_or(usage)?.parse()?,
            None => 30,
        };
        if days == 0 {
            return Err(usage.into());
        }
        Ok(Args { data_dir, n, days })
    }
}

/// The workspace root, where the example pack is: two levels above this crate.
fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .unwrap_or(crate_dir)
        .to_path_buf()
}

/// The database with its write-ahead log, in bytes.
fn database_size(db: &Path) -> u64 {
    let wal = db.with_file_name(format!("{DB_FILE}-wal"));
    [db, wal.as_path()]
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum()
}

// ------------------------------------------------------------------------ the platform

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Agent,
    CiJob,
    Service,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Agent => "Agent",
            Kind::CiJob => "CiJob",
            Kind::Service => "Service",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Env {
    Prod,
    Staging,
}

impl Env {
    fn name(self) -> &'static str {
        match self {
            Env::Prod => "prod",
            Env::Staging => "staging",
        }
    }
}

/// The schema's actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    ReadSecret,
    CreateToken,
    UpdateConfig,
    Deploy,
    HttpRequest,
    UploadFile,
    ReadTicket,
    CommentTicket,
}

impl Action {
    const ALL: [Action; 8] = [
        Action::ReadSecret,
        Action::CreateToken,
        Action::UpdateConfig,
        Action::Deploy,
        Action::HttpRequest,
        Action::UploadFile,
        Action::ReadTicket,
        Action::CommentTicket,
    ];

    fn id(self) -> &'static str {
        match self {
            Action::ReadSecret => "read_secret",
            Action::CreateToken => "create_token",
            Action::UpdateConfig => "update_config",
            Action::Deploy => "deploy",
            Action::HttpRequest => "http_request",
            Action::UploadFile => "upload_file",
            Action::ReadTicket => "read_ticket",
            Action::CommentTicket => "comment_ticket",
        }
    }

    /// The principal types the schema lets call it.
    fn applies_to(self, kind: Kind) -> bool {
        match self {
            Action::Deploy => kind != Kind::Service,
            Action::ReadTicket => kind != Kind::CiJob,
            Action::CommentTicket => kind == Kind::Agent,
            _ => true,
        }
    }

    fn is_secret_read(self) -> bool {
        self == Action::ReadSecret
    }

    fn is_token_create(self) -> bool {
        self == Action::CreateToken
    }

    fn is_config_change(self) -> bool {
        matches!(self, Action::UpdateConfig | Action::Deploy)
    }

    fn is_egress(self) -> bool {
        matches!(self, Action::HttpRequest | Action::UploadFile)
    }

    fn is_ticket_ops(self) -> bool {
        matches!(self, Action::ReadTicket | Action::CommentTicket)
    }
}

/// Every rule of the pack the model decides with: the principal type its scope names
/// (`None`: any) and the actions it covers. What is in scope of a request is read from
/// here, the way the engine's slice index reads it from the policies' scopes.
const SCOPES: &[(&str, Option<Kind>, &[Action])] = &[
    (
        "agent.support-handles-tickets",
        None,
        &[Action::ReadTicket, Action::CommentTicket],
    ),
    (
        "agent.platform-staging-ops",
        Some(Kind::Agent),
        &[
            Action::ReadSecret,
            Action::CreateToken,
            Action::UpdateConfig,
            Action::Deploy,
        ],
    ),
    (
        "agent.no-egress-after-secret",
        Some(Kind::Agent),
        &[Action::HttpRequest, Action::UploadFile],
    ),
    (
        "agent.no-links-in-comments",
        Some(Kind::Agent),
        &[Action::CommentTicket],
    ),
    (
        "changes.ci-deploys-own-env",
        Some(Kind::CiJob),
        &[Action::Deploy],
    ),
    (
        "changes.prod-outside-hours",
        None,
        &[Action::UpdateConfig, Action::Deploy],
    ),
    (
        "egress.approved-endpoints",
        None,
        &[Action::HttpRequest, Action::UploadFile],
    ),
    (
        "egress.ci-fetches-dependencies",
        Some(Kind::CiJob),
        &[Action::HttpRequest],
    ),
    (
        "egress.unapproved-endpoint",
        None,
        &[Action::HttpRequest, Action::UploadFile],
    ),
    (
        "secrets.services-read-team-secrets",
        Some(Kind::Service),
        &[Action::ReadSecret],
    ),
    (
        "secrets.ci-reads-own-env",
        Some(Kind::CiJob),
        &[Action::ReadSecret],
    ),
    (
        "secrets.no-prod-from-pr-jobs",
        Some(Kind::CiJob),
        &[Action::ReadSecret],
    ),
    (
        "secrets.agents-never-read-prod",
        Some(Kind::Agent),
        &[Action::ReadSecret],
    ),
    (
        "tokens.services-mint-same-env",
        Some(Kind::Service),
        &[Action::CreateToken],
    ),
    (
        "tokens.agent-mint-rate",
        Some(Kind::Agent),
        &[Action::CreateToken],
    ),
    ("tokens.long-ttl", None, &[Action::CreateToken]),
];

/// An identity that calls arbiter.
#[derive(Debug)]
struct Principal {
    /// The entity id, without its type.
    name: String,
    uid: String,
    kind: Kind,
    team: &'static str,
    env: Env,
    /// A CI job running on `refs/heads/main`.
    on_main: bool,
    weight: u32,
}

/// Something acted on, with the attributes the policies read.
#[derive(Clone, Debug)]
struct Resource {
    uid: String,
    env: Env,
    /// The owning team, for secrets.
    team: &'static str,
    /// On the egress allow-list, for endpoints.
    approved: bool,
}

impl Resource {
    fn new(ty: &str, id: &str, env: Env, team: &'static str, approved: bool) -> Resource {
        Resource {
            uid: uid(ty, id),
            env,
            team,
            approved,
        }
    }
}

fn uid(ty: &str, id: &str) -> String {
    format!("{ty}::\"{id}\"")
}

/// The platform, the pack's rules and the traffic they see.
#[derive(Debug)]
struct Model<'p> {
    pack: &'p Pack,
    principals: Vec<Principal>,
    total_weight: u32,
    secrets: Vec<Resource>,
    configs: Vec<Resource>,
    services: Vec<Resource>,
    endpoints: Vec<Resource>,
    /// The rules in scope of each (principal type, action), in pack order.
    in_scope: HashMap<(Kind, Action), Arc<[String]>>,
}

impl<'p> Model<'p> {
    fn new(pack: &'p Pack) -> Result<Model<'p>, Box<dyn Error>> {
        for (kind, team) in [Kind::Agent, Kind::CiJob, Kind::Service]
            .into_iter()
            .flat_map(|kind| TEAMS.map(|team| (kind, team)))
        {
            if let Some((action, _)) = action_weights(kind, team)
                .iter()
                .find(|(action, _)| !action.applies_to(kind))
            {
                return Err(format!("the schema does not let {kind:?} call {action:?}").into());
            }
        }
        for (id, _, _) in SCOPES {
            if pack.rule(id).is_none() {
                return Err(format!("the pack has no rule `{id}`: update the model").into());
            }
        }
        let mut in_scope = HashMap::new();
        for kind in [Kind::Agent, Kind::CiJob, Kind::Service] {
            for action in Action::ALL {
                let ids: Vec<String> = pack
                    .rules()
                    .iter()
                    .filter(|rule| {
                        SCOPES.iter().any(|(id, ty, actions)| {
                            *id == rule.id
                                && ty.is_none_or(|ty| ty == kind)
                                && actions.contains(&action)
                        })
                    })
                    .map(|rule| rule.id.clone())
                    .collect();
                in_scope.insert((kind, action), ids.into());
            }
        }

        let mut rng = StdRng::seed_from_u64(1);
        let known = |kind: Kind, name: &str, team, env, on_main| Principal {
            name: name.to_owned(),
            uid: uid(kind.name(), name),
            kind,
            team,
            env,
            on_main,
            weight: KNOWN_WEIGHT,
        };
        let mut principals = vec![
            known(Kind::Agent, "support-bot", "support", Env::Staging, true),
            known(Kind::Agent, "ops-copilot", "platform", Env::Staging, true),
            known(Kind::CiJob, "deploy-prod", "payments", Env::Prod, true),
            known(
                Kind::CiJob,
                "deploy-staging",
                "payments",
                Env::Staging,
                true,
            ),
            known(Kind::CiJob, "pr-checks", "payments", Env::Staging, false),
            known(Kind::Service, "billing-api", "payments", Env::Prod, true),
            known(Kind::Service, "ledger-api", "payments", Env::Prod, true),
            known(
                Kind::Service,
                "billing-api-staging",
                "payments",
                Env::Staging,
                true,
            ),
        ];
        for (kind, count) in SYNTHETIC {
            let prefix = match kind {
                Kind::Agent => "agent",
                Kind::CiJob => "ci",
                Kind::Service => "svc",
            };
            for n in 1..=count {
                let name = format!("{prefix}-{n:03}");
                principals.push(Principal {
                    uid: uid(kind.name(), &name),
                    name,
                    kind,
                    team: pick(&mut rng, &TEAMS),
                    env: if rng.random_bool(0.4) {
                        Env::Prod
                    } else {
                        Env::Staging
                    },
                    on_main: rng.random_bool(0.8),
                    weight: 1,
                });
            }
        }
        let total_weight = principals.iter().map(|p| p.weight).sum();

        let mut secrets = vec![
            Resource::new("Secret", "prod/db-password", Env::Prod, "payments", false),
            Resource::new("Secret", "prod/stripe-key", Env::Prod, "payments", false),
            Resource::new(
                "Secret",
                "staging/db-password",
                Env::Staging,
                "payments",
                false,
            ),
        ];
        for team in TEAMS {
            for env in [Env::Prod, Env::Staging] {
                for n in 1..=8 {
                    let id = format!("{}/{team}-secret-{n}", env.name());
                    secrets.push(Resource::new("Secret", &id, env, team, false));
                }
            }
        }
        let services = principals.iter().filter(|p| p.kind == Kind::Service);
        // A service's configuration, named as the pack's entities name them
        // (`staging/billing-api` configures `billing-api-staging`).
        let configs = services
            .clone()
            .map(|s| {
                let id = format!("{}/{}", s.env.name(), s.name.trim_end_matches("-staging"));
                Resource::new("Config", &id, s.env, s.team, false)
            })
            .collect();
        let services = services
            .map(|s| Resource::new("Service", &s.name, s.env, s.team, false))
            .collect();
        let mut endpoints: Vec<Resource> =
            ["api.github.com", "registry.npmjs.org", "hooks.slack.com"]
                .iter()
                .map(|id| Resource::new("Endpoint", id, Env::Prod, "platform", true))
                .collect();
        for n in 1..=20 {
            let id = format!("api-{n}.partner.example");
            endpoints.push(Resource::new("Endpoint", &id, Env::Prod, "platform", true));
        }
        endpoints.push(Resource::new(
            "Endpoint",
            "pastebin.com",
            Env::Prod,
            "platform",
            false,
        ));
        for n in 1..=10 {
            let id = format!("files-{n}.unknown.example");
            endpoints.push(Resource::new("Endpoint", &id, Env::Prod, "platform", false));
        }

        Ok(Model {
            pack,
            principals,
            total_weight,
            secrets,
            configs,
            services,
            endpoints,
            in_scope,
        })
    }

    /// One decision at `time`, recorded as the server records it.
    fn record(&self, rng: &mut StdRng, masker: &Masker, time: Timestamp) -> DecisionRecord {
        let principal = self.principal(rng);
        let action = choose_action(rng, principal);
        let resource = self.resource(rng, principal, action);
        let context = context(rng, action);
        // Agents work in sessions (a task, a conversation).
        let session = (principal.kind == Kind::Agent)
            .then(|| format!("s-{}", rng.random_range(0..50_000_u32)));
        let invalid = rng.random_bool(INVALID);
        let action_uid = if invalid {
            uid("Action", "delete_everything")
        } else {
            uid("Action", action.id())
        };

        let decided =
            (!invalid).then(|| self.decide(rng, principal, action, &resource, &context, time));
        let mut request = json!({
            "principal": principal.uid,
            "action": action_uid,
            "resource": resource.uid,
            "context": context,
        });
        if let (Some(session), Some(fields)) = (&session, request.as_object_mut()) {
            fields.insert("session".to_owned(), Value::String(session.clone()));
        }
        let mask = &self.pack.config().log.mask;
        masker.mask(&mut request, mask.iter().map(|p| p.get_ref()));

        let ms = u64::try_from(time.as_millisecond()).unwrap_or_default();
        let mut record = DecisionRecord {
            decision_id: Ulid::from_parts(ms, rng.random()).to_string(),
            time,
            policy_version: self.pack.version().to_owned(),
            principal: Some(principal.uid.clone()),
            action: Some(action_uid),
            resource: Some(resource.uid),
            session,
            credential_id: None,
            decision: "invalid".to_owned(),
            effect: None,
            enforced: Vec::new(),
            warnings: Vec::new(),
            audit: Vec::new(),
            errors: Vec::new(),
            reason: None,
            error: None,
            latency_us: rng.random_range(4..80),
            request,
            novel: None,
            evidence: Evidence::default(),
        };
        match decided {
            None => {
                record.error = Some(json!({
                    "code": "invalid_request",
                    "message": "request is not valid against the schema: action `Action::\"delete_everything\"` is not declared",
                }));
            }
            Some(d) => {
                record.decision = if d.effect.is_some() { "deny" } else { "allow" }.to_owned();
                record.effect = d.effect.map(|e| e.as_str().to_owned());
                record.enforced = d.enforced;
                record.warnings = d.warned.iter().map(|(rule, _)| rule.clone()).collect();
                record.audit = d.audit;
                record.errors = d.errors;
                record.reason = d.reason;
                record.evidence = Evidence {
                    in_scope: self.in_scope.get(&(principal.kind, action)).cloned(),
                    scope: Some(format!("default-deny:{}", principal.kind.name())),
                    warned: d.warned,
                };
            }
        }
        record
    }

    fn principal(&self, rng: &mut StdRng) -> &Principal {
        let mut at = rng.random_range(0..self.total_weight);
        for p in &self.principals {
            if at < p.weight {
                return p;
            }
            at -= p.weight;
        }
        self.principals
            .last()
            .expect("the model always has the pack's own principals")
    }

    /// Mostly what the principal's team and environment own; now and then anything.
    fn resource(&self, rng: &mut StdRng, principal: &Principal, action: Action) -> Resource {
        let all = match action {
            Action::ReadSecret => &self.secrets,
            Action::UpdateConfig => &self.configs,
            Action::CreateToken | Action::Deploy => &self.services,
            Action::HttpRequest | Action::UploadFile => &self.endpoints,
            Action::ReadTicket | Action::CommentTicket => {
                let n = rng.random_range(1..=TICKETS);
                return Resource::new("Ticket", &format!("T-{n}"), Env::Prod, "support", false);
            }
        };
        let usual = |r: &&Resource| match action {
            Action::ReadSecret => r.env == principal.env && r.team == principal.team,
            Action::HttpRequest | Action::UploadFile => r.approved,
            _ => r.env == principal.env,
        };
        let chosen = if rng.random_bool(0.9) {
            all.iter().filter(usual).choose(rng)
        } else {
            None
        };
        chosen
            .or_else(|| all.iter().choose(rng))
            .expect("the model has resources of every type")
            .clone()
    }

    /// The pack's policies on this request, and the engine's outcome.
    fn decide(
        &self,
        rng: &mut StdRng,
        p: &Principal,
        action: Action,
        r: &Resource,
        context: &Value,
        time: Timestamp,
    ) -> Decided {
        let permitted = permitted(p, action, r, context);
        let mut fired = Vec::new();
        let mut errors = Vec::new();
        let agent = p.kind == Kind::Agent;
        if agent && action.is_egress() && rng.random_bool(0.01) {
            // The session touched `secret_read` earlier.
            fired.push("agent.no-egress-after-secret");
        }
        let text = |key| context.get(key).and_then(Value::as_str).unwrap_or_default();
        if agent && action == Action::CommentTicket && text("body").contains("https://") {
            fired.push("agent.no-links-in-comments");
        }
        if action.is_config_change() {
            if rng.random_bool(0.001) {
                // A config missing from the entities: the rule's `@on_error("skip")`.
                errors.push(json!({
                    "rule": "changes.prod-outside-hours",
                    "message": format!("error while evaluating policy `changes.prod-outside-hours`: `{}` does not have the attribute `env`", r.uid),
                    "handled_as": "skip",
                }));
            } else {
                let hour = time.as_second().rem_euclid(86_400) / 3600;
                if r.env == Env::Prod && !(8..18).contains(&hour) {
                    fired.push("changes.prod-outside-hours");
                }
            }
        }
        if action.is_egress() && !r.approved {
            fired.push("egress.unapproved-endpoint");
        }
        if p.kind == Kind::CiJob && action.is_secret_read() && r.env == Env::Prod && !p.on_main {
            fired.push("secrets.no-prod-from-pr-jobs");
        }
        if agent && action.is_secret_read() && r.env == Env::Prod {
            fired.push("secrets.agents-never-read-prod");
        }
        if agent && action.is_token_create() && rng.random_bool(0.03) {
            // Past the agent's 3 per minute.
            fired.push("tokens.agent-mint-rate");
        }
        let ttl_s = context.get("ttl_s").and_then(Value::as_u64);
        if action.is_token_create() && ttl_s.is_some_and(|ttl| ttl > 3600) {
            fired.push("tokens.long-ttl");
        }
        self.outcome(p.kind, permitted, &fired, errors)
    }

    /// What the engine answers when `fired` forbids matched: as `Engine::outcome`.
    fn outcome(&self, kind: Kind, permitted: bool, fired: &[&str], errors: Vec<Value>) -> Decided {
        let mut d = Decided {
            errors,
            ..Decided::default()
        };
        let mut strongest: Option<(Effect, Option<&str>, &str)> = None;
        for id in fired {
            let Some(rule) = self.pack.rule(id) else {
                continue;
            };
            let effect = rule.effect.unwrap_or(Effect::Deny);
            match rule.mode.unwrap_or(Mode::Audit) {
                Mode::Enforce => {
                    d.enforced.push(rule.id.clone());
                    // The last of the strongest, as `Iterator::max_by` picks it.
                    if strongest.is_none_or(|(top, _, _)| effect >= top) {
                        strongest = Some((effect, rule.reason.as_deref(), &rule.id));
                    }
                }
                Mode::Warn => d.warned.push((rule.id.clone(), effect.as_str().to_owned())),
                Mode::Audit => d
                    .audit
                    .push(json!({ "rule": rule.id, "would": effect.as_str() })),
            }
        }
        if let Some((effect, reason, id)) = strongest {
            d.effect = Some(effect);
            d.reason = Some(reason.map_or_else(|| format!("rule:{id}"), str::to_owned));
            return d;
        }
        if !permitted {
            let scope = format!("default-deny:{}", kind.name());
            match self.pack.default_deny_mode(kind.name()) {
                Mode::Enforce => {
                    d.effect = Some(Effect::Deny);
                    d.reason = Some(format!("{scope}: no permit matched"));
                    d.enforced.push(scope);
                }
                Mode::Warn => d.warned.push((scope, Effect::Deny.as_str().to_owned())),
                Mode::Audit => d.audit.push(json!({ "rule": scope, "would": "deny" })),
            }
        }
        d
    }
}

/// A decision's fields, before they go into the record.
#[derive(Debug, Default)]
struct Decided {
    /// Set on a deny.
    effect: Option<Effect>,
    enforced: Vec<String>,
    /// Fired `warn` rules and what each would do.
    warned: Vec<(String, String)>,
    audit: Vec<Value>,
    errors: Vec<Value>,
    reason: Option<String>,
}

/// Whether a permit of the pack matches.
fn permitted(p: &Principal, action: Action, r: &Resource, context: &Value) -> bool {
    let same_env = p.env == r.env;
    match p.kind {
        _ if action.is_ticket_ops() => p.team == "support",
        _ if action.is_egress() && r.approved => true,
        Kind::Agent => {
            p.team == "platform"
                && (action.is_secret_read()
                    || action.is_token_create()
                    || action.is_config_change())
                && r.env == Env::Staging
        }
        Kind::CiJob => match action {
            Action::Deploy => same_env && p.on_main,
            Action::ReadSecret => same_env,
            Action::HttpRequest => context.get("method").and_then(Value::as_str) == Some("GET"),
            _ => false,
        },
        Kind::Service => match action {
            Action::ReadSecret => same_env && p.team == r.team,
            Action::CreateToken => same_env,
            _ => false,
        },
    }
}

/// What a principal asks for.
fn choose_action(rng: &mut StdRng, p: &Principal) -> Action {
    let weights = action_weights(p.kind, p.team);
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut at = rng.random_range(0..total);
    for (action, weight) in weights {
        if at < *weight {
            return *action;
        }
        at -= weight;
    }
    Action::HttpRequest
}

/// What a principal of this kind and team asks for, and how often.
fn action_weights(kind: Kind, team: &str) -> &'static [(Action, u32)] {
    use Action::*;
    match (kind, team) {
        (Kind::Agent, "support") => &[
            (ReadTicket, 60),
            (CommentTicket, 25),
            (HttpRequest, 8),
            (ReadSecret, 2),
            (CreateToken, 2),
            (UploadFile, 3),
        ],
        (Kind::Agent, _) => &[
            (ReadSecret, 20),
            (CreateToken, 15),
            (UpdateConfig, 15),
            (Deploy, 10),
            (HttpRequest, 25),
            (UploadFile, 5),
            (ReadTicket, 8),
            (CommentTicket, 2),
        ],
        (Kind::CiJob, _) => &[
            (ReadSecret, 25),
            (CreateToken, 5),
            (UpdateConfig, 10),
            (Deploy, 20),
            (HttpRequest, 35),
            (UploadFile, 5),
        ],
        (Kind::Service, _) => &[
            (ReadSecret, 35),
            (CreateToken, 30),
            (UpdateConfig, 5),
            (HttpRequest, 20),
            (UploadFile, 5),
            (ReadTicket, 5),
        ],
    }
}

/// The request's context, as the schema declares it for the action.
fn context(rng: &mut StdRng, action: Action) -> Value {
    match action {
        Action::ReadSecret | Action::ReadTicket => json!({}),
        Action::CreateToken => json!({
            // One caller in ten still asks for a day.
            "ttl_s": if rng.random_bool(0.1) { 86_400 } else { pick(rng, &[900, 3600]) },
            "scopes": ["read"],
        }),
        Action::UpdateConfig => json!({
            "key": pick(rng, &["feature.checkout_v2", "pool.size", "log.level", "timeout_ms"]),
            "value": rng.random_range(1..1000_u32).to_string(),
        }),
        Action::Deploy => {
            json!({ "version": format!("v1.{}.{}", rng.random_range(0..40_u32), rng.random_range(0..10_u32)) })
        }
        Action::HttpRequest => json!({
            "method": pick(rng, &["GET", "GET", "GET", "POST"]),
            "path": format!("/v1/items/{}", rng.random_range(0..500_u32)),
        }),
        Action::UploadFile => json!({
            "filename": pick(rng, &["report.csv", "build.log", "dump.tar.gz"]),
            "bytes": rng.random_range(1_000..10_000_000_u64),
        }),
        Action::CommentTicket => json!({
            "body": if rng.random_bool(0.05) {
                "Details on https://status.example.com/incidents"
            } else {
                pick(rng, &["Looking into it.", "Fixed in the latest release.", "Could you send the invoice number?"])
            },
        }),
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    let i = rng.random_range(0..items.len());
    *items.get(i).expect("an index below the length")
}
