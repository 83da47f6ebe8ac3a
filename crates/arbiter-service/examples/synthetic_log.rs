//! A large decision log to measure the lifecycle commands against (issue 5): N requests on
//! the platform of the example pack `examples/agents-and-pipelines`, decided by the engine
//! through the one decision path ([`DecisionService`]) and written by the real
//! [`LogWriter`] into a data directory, as `arbiter serve` would decide and write them.
//!
//! `cargo run --release -p arbiter-service --example synthetic_log -- DATA_DIR [N=1000000] [DAYS=30]`
//!
//! The traffic comes from the pack's own agents, CI jobs and services and a few hundred
//! synthetic ones, each with habits (its team's secrets, its environment's configs and
//! services, a handful of endpoints), spread evenly over the last DAYS days. Agents work
//! in sessions, one per task, and now and then loop minting tokens. A small share of the
//! requests names an action the schema does not know. The engine decides every request
//! on a clock set to the request's time, so what is allowed, denied, throttled, revoked,
//! warned about or audited is the pack's own answer; the traffic only reacts to it as a
//! caller would (a terminated session is left for a new one).
//!
//! The synthetic identities and their resources must be known to the engine: the pack is
//! copied to `DATA_DIR/pack` with them added to its `entities.json`, and that copy decides.
//! Its version is recorded as loaded at the start of the first day. The pack's own
//! entities are kept as they are, so `Config::"prod/ledger-api"` stays unknown and a change
//! to it takes `changes.prod-outside-hours`'s `@on_error("skip")`; tickets are not added
//! (no policy reads one).
//!
//! The traffic is seeded: the same arguments make the same requests, shifted to the time
//! of the run (decision ids and masked values differ: the masking key is the data
//! directory's own).
//!
//! With `--measure-writer` (after the other arguments) every request is decided first and
//! its record kept in memory; then the records are handed to the log writer as fast as it
//! takes them, and what is printed is the writer's own rate (issue 15): records a second
//! for each tenth of the log, and the writer thread's CPU time per record (from
//! `/proc/self/task`). Revocations are committed during the first phase.

/// The allocator of `arbiter`'s binary, so that the rates here are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arbiter_core::clock::{Clock, ManualClock, SystemClock};
use arbiter_core::response::Outcome;
use arbiter_core::rule::Effect;
use arbiter_core::{Decision, Engine, Pack, RequestError, TimeSource};
use arbiter_service::{DecisionService, Recording};
use arbiter_store::{DB_FILE, Durability, LogWriter, Masker, PackVersion, Revocation, Store};
use jiff::{SignedDuration, Timestamp};
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, IteratorRandom};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// The example pack, from the workspace root.
const PACK: &str = "examples/agents-and-pipelines";

/// Where in the data directory the pack that decides is written.
const PACK_COPY: &str = "pack";

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

/// The chance that an agent's next request belongs to the task it is working on.
const SAME_TASK: f64 = 0.8;

/// The chance that an agent sends something out in a task where it read a secret, rather
/// than in a task of its own.
const EGRESS_AFTER_SECRET: f64 = 0.02;

/// The chance that an agent minting a token loops, minting again every few seconds.
const LOOPING: f64 = 0.03;

const TEAMS: [&str; 3] = ["support", "platform", "payments"];

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse()?;
    let platform = Platform::new()?;
    let pack_dir = args.data_dir.join(PACK_COPY);
    write_pack(&workspace_root().join(PACK), &pack_dir, &platform)?;
    let pack = Arc::new(Pack::load(&pack_dir)?);
    let store = Store::open(&args.data_dir)?;
    let masker = Masker::load_or_create(&args.data_dir)?;

    let end = SystemClock.now();
    let span = SignedDuration::from_hours(24 * i64::from(args.days));
    let start = end.checked_sub(span)?;
    store.record_pack_version(&PackVersion::of(&pack, start))?;
    let clock = Arc::new(ManualClock::new(start));
    let engine = Engine::new(pack)
        .with_clock(clock.clone())
        .with_time_source(TimeSource::ClockOnly);

    let began = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let traffic = Traffic::new(&platform, start, end);
    let tally = if args.measure_writer {
        runtime.block_on(measure_writer(
            engine, &clock, &store, masker, traffic, &args, span,
        ))?
    } else {
        runtime.block_on(write(engine, &clock, &store, masker, traffic, &args, span))?
    };
    let seconds = began.elapsed().as_secs_f64();
    // Closing the last connection checkpoints the write-ahead log into the database.
    let db = store.db_path().to_path_buf();
    drop(store);

    eprintln!(
        "{} allowed, {} denied ({} throttled, {} revoked), {} invalid; \
         decided under the pack in {}",
        tally.allowed,
        tally.denied,
        tally.throttled,
        tally.revoked,
        tally.invalid,
        pack_dir.display(),
    );
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

/// Decides the requests, oldest first, each at its time, records them, then drains the
/// writer.
async fn write(
    engine: Engine,
    clock: &ManualClock,
    store: &Store,
    masker: Masker,
    mut traffic: Traffic<'_>,
    args: &Args,
    span: SignedDuration,
) -> Result<Tally, Box<dyn Error>> {
    let log = LogWriter::start(store, Durability::Batched, QUEUE)?;
    let service = DecisionService::new(engine).recording(Recording {
        log,
        masker,
        store: store.clone(),
    });
    let engine = service.engine();
    let step_us = step_us(args, span)?;
    let every = (args.n / 10).max(1);
    let mut tally = Tally::default();
    let began = Instant::now();
    for i in 0..args.n {
        let (asked, body) = traffic.at(i, step_us, clock)?;
        let answer = service.decide(&engine, body).await?;
        traffic.answered(&asked, &answer)?;
        tally.count(&answer);
        if (i + 1) % every == 0 {
            eprintln!(
                "{:>9} / {} decided ({:.1} s), {} waiting for the writer",
                i + 1,
                args.n,
                began.elapsed().as_secs_f64(),
                service.log().map_or(0, LogWriter::queue_depth),
            );
        }
    }
    if let Some(log) = service.log() {
        log.shutdown().await?;
    }
    Ok(tally)
}

/// The mean gap between requests, so that `args.n` of them span `span`.
fn step_us(args: &Args, span: SignedDuration) -> Result<i64, Box<dyn Error>> {
    Ok(i64::try_from(
        (span.as_micros() / i128::from(args.n.max(1))).max(1),
    )?)
}

/// Decides every request first, keeping the records, then times the log writer alone.
async fn measure_writer(
    engine: Engine,
    clock: &ManualClock,
    store: &Store,
    masker: Masker,
    mut traffic: Traffic<'_>,
    args: &Args,
    span: SignedDuration,
) -> Result<Tally, Box<dyn Error>> {
    // The log writer is started only for `DecisionService` to mask as the server does;
    // the records are handed to a second writer below, once they are all made.
    let idle = LogWriter::start(store, Durability::Batched, 1)?;
    let service = DecisionService::new(engine).recording(Recording {
        log: idle,
        masker,
        store: store.clone(),
    });
    let engine = service.engine();
    let step_us = step_us(args, span)?;
    let mut tally = Tally::default();
    let mut records = Vec::with_capacity(usize::try_from(args.n)?);
    let began = Instant::now();
    for i in 0..args.n {
        let (asked, body) = traffic.at(i, step_us, clock)?;
        let decided = service.decide_recorded(&engine, body);
        if let Ok(decision) = &decided.answer {
            for revocation in &decision.revoked {
                store.revoke(&Revocation::of_effect(revocation))?;
            }
        }
        traffic.answered(&asked, &decided.answer)?;
        tally.count(&decided.answer);
        records.push(decided.record);
    }
    if let Some(log) = service.log() {
        log.shutdown().await?;
    }
    eprintln!(
        "{} records made in {:.1} s; now the log writer alone",
        records.len(),
        began.elapsed().as_secs_f64()
    );

    let log = LogWriter::start(store, Durability::Batched, QUEUE)?;
    let writer_cpu_before = writer_cpu_seconds()?;
    let every = (records.len() / 10).max(1);
    let began = Instant::now();
    let (mut mark_at, mut mark_committed) = (0.0, 0);
    for (i, record) in records.into_iter().enumerate() {
        log.append(record).await?;
        if (i + 1) % every == 0 {
            let at = began.elapsed().as_secs_f64();
            let committed = i + 1 - log.queue_depth();
            eprintln!(
                "{committed:>9} committed at {at:6.2} s: {:>7.0} records/s since the last line",
                (committed - mark_committed) as f64 / (at - mark_at),
            );
            (mark_at, mark_committed) = (at, committed);
        }
    }
    // The thread's CPU time is read before it is joined: its /proc entry goes with it.
    while log.queue_depth() > 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let seconds = began.elapsed().as_secs_f64();
    let cpu = writer_cpu_seconds()? - writer_cpu_before;
    log.shutdown().await?;
    let n = args.n as f64;
    eprintln!(
        "log writer: {n} records in {seconds:.2} s = {:.0} records/s; \
         its thread used {cpu:.2} s of CPU = {:.2} µs a record ({:.0} records per CPU second)",
        n / seconds,
        cpu * 1e6 / n,
        n / cpu,
    );
    Ok(tally)
}

/// The CPU time (user + system) of this process's log writer threads so far, read from
/// `/proc/self/task/*/stat`.
fn writer_cpu_seconds() -> Result<f64, Box<dyn Error>> {
    // Linux reports CPU time in clock ticks; USER_HZ is 100 on every architecture it runs.
    const TICKS: f64 = 100.0;
    let mut total = 0.0;
    for task in fs::read_dir("/proc/self/task")? {
        let Ok(stat) = fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the name may hold spaces, the fields after it not.
        let Some((name, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !name.ends_with("arbiter-log-wri") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after `comm`.
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            total += (user + system) / TICKS;
        }
    }
    Ok(total)
}

/// The command line.
#[derive(Debug)]
struct Args {
    data_dir: PathBuf,
    n: u64,
    days: u32,
    /// Decide everything first, then time the log writer alone.
    measure_writer: bool,
}

impl Args {
    fn parse() -> Result<Args, Box<dyn Error>> {
        let usage = "usage: synthetic_log DATA_DIR [N=1000000] [DAYS=30] [--measure-writer]";
        let mut all: Vec<_> = std::env::args_os().skip(1).collect();
        let measure_writer = all.iter().any(|a| a == "--measure-writer");
        all.retain(|a| a != "--measure-writer");
        let mut args = all.into_iter();
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
        Ok(Args {
            data_dir,
            n,
            days,
            measure_writer,
        })
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

/// Copies the pack in `from` to `to`, with the platform's synthetic entities added to
/// its own.
fn write_pack(from: &Path, to: &Path, platform: &Platform) -> Result<(), Box<dyn Error>> {
    copy_dir(from, to)?;
    let entities_file = to.join("entities.json");
    let mut entities: Vec<Value> = serde_json::from_str(&fs::read_to_string(&entities_file)?)?;
    entities.extend(platform.added.iter().cloned());
    fs::write(&entities_file, serde_json::to_string_pretty(&entities)?)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
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

/// How the requests were answered.
#[derive(Debug, Default)]
struct Tally {
    allowed: u64,
    denied: u64,
    throttled: u64,
    revoked: u64,
    invalid: u64,
}

impl Tally {
    fn count(&mut self, answer: &Result<Decision, RequestError>) {
        let Ok(decision) = answer else {
            self.invalid += 1;
            return;
        };
        match decision.decision {
            Outcome::Allow => self.allowed += 1,
            Outcome::Deny => self.denied += 1,
        }
        match decision.effect {
            Some(Effect::Throttle) => self.throttled += 1,
            Some(Effect::Revoke) => self.revoked += 1,
            _ => {}
        }
    }
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

    fn is_egress(self) -> bool {
        matches!(self, Action::HttpRequest | Action::UploadFile)
    }
}

/// An identity that calls arbiter.
#[derive(Debug)]
struct Principal {
    uid: String,
    kind: Kind,
    team: &'static str,
    env: Env,
    weight: u32,
}

/// Something acted on, with what its callers' habits depend on.
#[derive(Clone, Debug)]
struct Resource {
    uid: String,
    env: Env,
    /// The owning team, for secrets.
    team: &'static str,
    /// On the egress allow-list, for endpoints.
    approved: bool,
}

fn uid(ty: &str, id: &str) -> String {
    format!("{ty}::\"{id}\"")
}

/// An entity in the form of `entities.json`.
fn entity(ty: &str, id: &str, attrs: Value, parents: &[&str]) -> Value {
    let parents: Vec<Value> = parents
        .iter()
        .map(|team| json!({"type": "Team", "id": team}))
        .collect();
    json!({"uid": {"type": ty, "id": id}, "attrs": attrs, "parents": parents})
}

/// A reference to an entity, as an attribute's value.
fn entity_ref(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": ty, "id": id}})
}

/// The identities and resources the traffic is made of.
#[derive(Debug)]
struct Platform {
    principals: Vec<Principal>,
    /// The principals' weights, to draw one by.
    weights: WeightedIndex<u32>,
    secrets: Vec<Resource>,
    configs: Vec<Resource>,
    services: Vec<Resource>,
    endpoints: Vec<Resource>,
    /// What the pack's `entities.json` does not have: the synthetic identities and their
    /// resources.
    added: Vec<Value>,
}

impl Platform {
    fn new() -> Result<Platform, Box<dyn Error>> {
        let mut rng = StdRng::seed_from_u64(1);
        let mut added = Vec::new();
        let known = |kind: Kind, name: &str, team, env| Principal {
            uid: uid(kind.name(), name),
            kind,
            team,
            env,
            weight: KNOWN_WEIGHT,
        };
        let mut principals = vec![
            known(Kind::Agent, "support-bot", "support", Env::Staging),
            known(Kind::Agent, "ops-copilot", "platform", Env::Staging),
            known(Kind::CiJob, "deploy-prod", "payments", Env::Prod),
            known(Kind::CiJob, "deploy-staging", "payments", Env::Staging),
            known(Kind::CiJob, "pr-checks", "payments", Env::Staging),
            known(Kind::Service, "billing-api", "payments", Env::Prod),
            known(Kind::Service, "ledger-api", "payments", Env::Prod),
            known(
                Kind::Service,
                "billing-api-staging",
                "payments",
                Env::Staging,
            ),
        ];
        // The pack's own services, with the configs its entities name (`staging/billing-api`
        // configures `billing-api-staging`; `prod/ledger-api` is the one it lacks).
        let mut configs = vec![
            config("prod/billing-api", Env::Prod),
            config("prod/ledger-api", Env::Prod),
            config("staging/billing-api", Env::Staging),
        ];
        for (kind, count) in SYNTHETIC {
            let prefix = match kind {
                Kind::Agent => "agent",
                Kind::CiJob => "ci",
                Kind::Service => "svc",
            };
            for n in 1..=count {
                let name = format!("{prefix}-{n:03}");
                let team = one_of(&mut rng, &TEAMS);
                let env = if rng.random_bool(0.4) {
                    Env::Prod
                } else {
                    Env::Staging
                };
                let attrs = match kind {
                    Kind::Agent => json!({
                        "owner": format!("{team}-lead@example.com"),
                        "model": one_of(&mut rng, &["support-llm-v3", "ops-llm-v2"]),
                    }),
                    Kind::CiJob => json!({
                        "repo": format!("acme/{team}-{n}"),
                        // One job in five runs untrusted code: a pull request's.
                        "ref": if rng.random_bool(0.8) {
                            "refs/heads/main".to_owned()
                        } else {
                            format!("refs/pull/{n}/merge")
                        },
                        "env": env.name(),
                    }),
                    Kind::Service => json!({ "env": env.name() }),
                };
                added.push(entity(kind.name(), &name, attrs, &[team]));
                if kind == Kind::Service {
                    let id = format!("{}/{name}", env.name());
                    added.push(entity(
                        "Config",
                        &id,
                        json!({"env": env.name(), "service": entity_ref("Service", &name)}),
                        &[],
                    ));
                    configs.push(config(&id, env));
                }
                principals.push(Principal {
                    uid: uid(kind.name(), &name),
                    kind,
                    team,
                    env,
                    weight: 1,
                });
            }
        }
        let weights = WeightedIndex::new(principals.iter().map(|p| p.weight))?;

        let secret = |id: &str, env, team| Resource {
            uid: uid("Secret", id),
            env,
            team,
            approved: false,
        };
        let mut secrets = vec![
            secret("prod/db-password", Env::Prod, "payments"),
            secret("prod/stripe-key", Env::Prod, "payments"),
            secret("staging/db-password", Env::Staging, "payments"),
        ];
        for team in TEAMS {
            for env in [Env::Prod, Env::Staging] {
                for n in 1..=8 {
                    let id = format!("{}/{team}-secret-{n}", env.name());
                    let attrs = json!({"env": env.name(), "owner": entity_ref("Team", team)});
                    added.push(entity("Secret", &id, attrs, &[]));
                    secrets.push(secret(&id, env, team));
                }
            }
        }

        let services = principals
            .iter()
            .filter(|p| p.kind == Kind::Service)
            .map(|s| Resource {
                uid: s.uid.clone(),
                env: s.env,
                team: s.team,
                approved: false,
            })
            .collect();

        let endpoint = |id: &str, approved| Resource {
            uid: uid("Endpoint", id),
            env: Env::Prod,
            team: "platform",
            approved,
        };
        let mut endpoints: Vec<Resource> =
            ["api.github.com", "registry.npmjs.org", "hooks.slack.com"]
                .iter()
                .map(|id| endpoint(id, true))
                .collect();
        endpoints.push(endpoint("pastebin.com", false));
        let partners = (1..=20).map(|n| (format!("api-{n}.partner.example"), true));
        let unknown = (1..=10).map(|n| (format!("files-{n}.unknown.example"), false));
        for (id, approved) in partners.chain(unknown) {
            added.push(entity(
                "Endpoint",
                &id,
                json!({ "approved": approved }),
                &[],
            ));
            endpoints.push(endpoint(&id, approved));
        }

        Ok(Platform {
            principals,
            weights,
            secrets,
            configs,
            services,
            endpoints,
            added,
        })
    }
}

fn config(id: &str, env: Env) -> Resource {
    Resource {
        uid: uid("Config", id),
        env,
        team: "payments",
        approved: false,
    }
}

// ------------------------------------------------------------------------- the traffic

/// What the traffic asked, to read the answer against.
#[derive(Debug)]
struct Asked<'p> {
    principal: &'p Principal,
    action: Action,
    resource: String,
    time: Timestamp,
    /// Made invalid on purpose.
    invalid: bool,
}

/// An agent's task: one session.
#[derive(Debug)]
struct Task {
    session: String,
    /// The agent read a secret in it (and was allowed to).
    read_secret: bool,
}

/// An agent minting token after token.
#[derive(Debug)]
struct Loop<'p> {
    agent: &'p Principal,
    left: u32,
}

/// The requests of the platform, one after another, and what the callers remember of
/// the answers.
#[derive(Debug)]
struct Traffic<'p> {
    platform: &'p Platform,
    rng: StdRng,
    start: Timestamp,
    end: Timestamp,
    /// When the last request was made: times never go back.
    last: Timestamp,
    /// Each agent's current task, by uid.
    tasks: HashMap<&'p str, Task>,
    sessions_started: u64,
    looping: Option<Loop<'p>>,
}

impl<'p> Traffic<'p> {
    fn new(platform: &'p Platform, start: Timestamp, end: Timestamp) -> Traffic<'p> {
        Traffic {
            platform,
            rng: StdRng::seed_from_u64(5),
            start,
            end,
            last: start,
            tasks: HashMap::new(),
            sessions_started: 0,
            looping: None,
        }
    }

    /// The `i`th request, somewhere in its step of `step_us` after the start, with the
    /// clock set to its time.
    fn at(
        &mut self,
        i: u64,
        step_us: i64,
        clock: &ManualClock,
    ) -> Result<(Asked<'p>, Value), Box<dyn Error>> {
        let offset = i64::try_from(i)? * step_us + self.rng.random_range(0..step_us);
        let (asked, body) = self.next(offset)?;
        clock.set(asked.time);
        Ok((asked, body))
    }

    /// The next request, at `offset_us` after the start unless a looping agent's next
    /// mint comes first.
    fn next(&mut self, offset_us: i64) -> Result<(Asked<'p>, Value), Box<dyn Error>> {
        let (principal, action, time) = match self.looping.take() {
            Some(Loop { agent, left }) => {
                if left > 1 {
                    self.looping = Some(Loop {
                        agent,
                        left: left - 1,
                    });
                }
                let gap = SignedDuration::from_secs(self.rng.random_range(1..=5));
                (agent, Action::CreateToken, self.last.checked_add(gap)?)
            }
            None => {
                let principal = self.principal()?;
                let action = choose_action(&mut self.rng, principal)?;
                let time = self
                    .start
                    .checked_add(SignedDuration::from_micros(offset_us))?;
                if principal.kind == Kind::Agent
                    && action == Action::CreateToken
                    && self.rng.random_bool(LOOPING)
                {
                    self.looping = Some(Loop {
                        agent: principal,
                        left: self.rng.random_range(3..=8),
                    });
                }
                (principal, action, time)
            }
        };
        let time = time.max(self.last).min(self.end);
        self.last = time;

        let resource = self.resource(principal, action)?;
        let context = context(&mut self.rng, action);
        let session = (principal.kind == Kind::Agent).then(|| self.session(principal, action));
        let invalid = self.rng.random_bool(INVALID);
        let action_uid = if invalid {
            uid("Action", "delete_everything")
        } else {
            uid("Action", action.id())
        };
        let mut body = json!({
            "principal": principal.uid,
            "action": action_uid,
            "resource": resource,
            "context": context,
        });
        if let (Some(session), Some(fields)) = (session, body.as_object_mut()) {
            fields.insert("session".to_owned(), Value::String(session));
        }
        let asked = Asked {
            principal,
            action,
            resource,
            time,
            invalid,
        };
        Ok((asked, body))
    }

    /// What the caller learns from the answer. A request the pack refuses though it was
    /// meant to be valid is the traffic's mistake: the run stops.
    fn answered(
        &mut self,
        asked: &Asked<'p>,
        answer: &Result<Decision, RequestError>,
    ) -> Result<(), Box<dyn Error>> {
        let decision = match answer {
            Err(_) if asked.invalid => return Ok(()),
            Err(error) => {
                return Err(format!(
                    "the pack refused {} {} {}: {error}; fix the traffic",
                    asked.principal.uid,
                    asked.action.id(),
                    asked.resource
                )
                .into());
            }
            Ok(_) if asked.invalid => {
                return Err(format!(
                    "the pack decided a request made invalid on purpose: {} {}",
                    asked.principal.uid, asked.resource
                )
                .into());
            }
            Ok(decision) => decision,
        };
        if decision.effect == Some(Effect::Revoke) {
            // The session is terminated: the agent's runtime starts another.
            self.tasks.remove(asked.principal.uid.as_str());
        } else if decision.decision == Outcome::Allow
            && asked.action == Action::ReadSecret
            && let Some(task) = self.tasks.get_mut(asked.principal.uid.as_str())
        {
            task.read_secret = true;
        }
        Ok(())
    }

    fn principal(&mut self) -> Result<&'p Principal, Box<dyn Error>> {
        let i = self.rng.sample(&self.platform.weights);
        Ok(self
            .platform
            .principals
            .get(i)
            .ok_or("a weight without a principal")?)
    }

    /// The agent's session for this request: its current task's, or a new task's. An
    /// agent that read a secret mostly sends things out in another task.
    fn session(&mut self, agent: &'p Principal, action: Action) -> String {
        let stay = self.rng.random_bool(SAME_TASK);
        let egress_after_secret = self.rng.random_bool(EGRESS_AFTER_SECRET);
        let current = self.tasks.get(agent.uid.as_str()).filter(|task| {
            stay && !(task.read_secret && action.is_egress() && !egress_after_secret)
        });
        if let Some(task) = current {
            return task.session.clone();
        }
        self.sessions_started += 1;
        let session = format!("s-{}", self.sessions_started);
        let task = Task {
            session: session.clone(),
            read_secret: false,
        };
        self.tasks.insert(agent.uid.as_str(), task);
        session
    }

    /// Mostly what the principal's team and environment own; now and then anything.
    fn resource(&mut self, principal: &Principal, action: Action) -> Result<String, String> {
        let all = match action {
            Action::ReadSecret => &self.platform.secrets,
            Action::UpdateConfig => &self.platform.configs,
            Action::CreateToken | Action::Deploy => &self.platform.services,
            Action::HttpRequest | Action::UploadFile => &self.platform.endpoints,
            Action::ReadTicket | Action::CommentTicket => {
                let n = self.rng.random_range(1..=TICKETS);
                return Ok(uid("Ticket", &format!("T-{n}")));
            }
        };
        let usual = |r: &&Resource| match action {
            Action::ReadSecret => r.env == principal.env && r.team == principal.team,
            Action::HttpRequest | Action::UploadFile => r.approved,
            _ => r.env == principal.env,
        };
        let chosen = if self.rng.random_bool(0.9) {
            all.iter().filter(usual).choose(&mut self.rng)
        } else {
            None
        };
        chosen
            .or_else(|| all.choose(&mut self.rng))
            .map(|r| r.uid.clone())
            .ok_or_else(|| format!("the platform has nothing to {}", action.id()))
    }
}

/// What a principal asks for.
fn choose_action(rng: &mut StdRng, p: &Principal) -> Result<Action, Box<dyn Error>> {
    let weights = action_weights(p.kind, p.team);
    Ok(weights.choose_weighted(rng, |(_, w)| *w)?.0)
}

/// What a principal of this kind and team asks for, and how often. Only the actions the
/// schema lets the kind call: another would be refused, and stop the run.
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
            "ttl_s": if rng.random_bool(0.1) { 86_400 } else { one_of(rng, &[900, 3600]) },
            "scopes": ["read"],
        }),
        Action::UpdateConfig => json!({
            "key": one_of(rng, &["feature.checkout_v2", "pool.size", "log.level", "timeout_ms"]),
            "value": rng.random_range(1..1000_u32).to_string(),
        }),
        Action::Deploy => {
            json!({ "version": format!("v1.{}.{}", rng.random_range(0..40_u32), rng.random_range(0..10_u32)) })
        }
        Action::HttpRequest => json!({
            "method": one_of(rng, &["GET", "GET", "GET", "POST"]),
            "path": format!("/v1/items/{}", rng.random_range(0..500_u32)),
        }),
        Action::UploadFile => json!({
            "filename": one_of(rng, &["report.csv", "build.log", "dump.tar.gz"]),
            "bytes": rng.random_range(1_000..10_000_000_u64),
        }),
        Action::CommentTicket => json!({
            "body": if rng.random_bool(0.05) {
                "Details on https://status.example.com/incidents"
            } else {
                one_of(rng, &["Looking into it.", "Fixed in the latest release.", "Could you send the invoice number?"])
            },
        }),
    }
}

/// One of `items`, which are never empty here.
fn one_of<T: Copy + Default>(rng: &mut StdRng, items: &[T]) -> T {
    items.choose(rng).copied().unwrap_or_default()
}
