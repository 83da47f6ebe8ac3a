//! Where a chain is weakest (DESIGN §4, `arbiter chains`, `GET /v1/chains`): a control is
//! only as strong as the least-governed step around it.
//!
//! For each `[chains.NAME]` and each identity (the principals of the entity store, and
//! those the log saw in the window), every step gets a control level from the rules in
//! scope of the requests that identity can make on it ([`Pack::covers`], per action of the
//! step and per resource type the schema lets it use): `enforced` when enforced rules deny
//! every one of them, `partially-enforced` when they deny some (and `left` says which are
//! not), else `warned`, `audited` or `uncontrolled` (nothing but a permit decides), the
//! weakest of its requests. The chain's level is its weakest step's. Next to an enforced
//! step, a step that is warned, audited or uncontrolled is a bypass: it is flagged with
//! the rule to promote (or the rule to write) to close it. The rules whose promotion would
//! raise the chain's level are listed with their readiness verdicts.
//!
//! With a store, each step also says how many requests the identity made on it in the
//! window, and how many of them an enforced forbid (of the pack now) had in scope.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use arbiter_core::Pack;
use arbiter_core::pack::coverage::Cover;
use arbiter_core::rule::{Mode, RuleRef};
use arbiter_store::{Store, StoreError, Usage};
use cedar_policy::{EntityTypeName, EntityUid};
use jiff::Timestamp;
use serde::Serialize;

use crate::readiness;

/// How well a step is controlled for one identity, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Nothing but a permit decides.
    Uncontrolled,
    /// Rules in audit only record what they would do.
    Audited,
    /// Rules in warn let requests through with a warning.
    Warned,
    /// Enforced rules deny some of the requests, not all.
    PartiallyEnforced,
    /// Enforced rules deny every request the identity can make.
    Enforced,
}

impl Level {
    /// The word, as in the outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Uncontrolled => "uncontrolled",
            Level::Audited => "audited",
            Level::Warned => "warned",
            Level::PartiallyEnforced => "partially-enforced",
            Level::Enforced => "enforced",
        }
    }

    /// The level a word names (`--fail-below`).
    pub fn parse(word: &str) -> Option<Level> {
        [
            Level::Uncontrolled,
            Level::Audited,
            Level::Warned,
            Level::PartiallyEnforced,
            Level::Enforced,
        ]
        .into_iter()
        .find(|l| l.as_str() == word)
    }
}

/// Every chain of the pack, for every identity.
#[derive(Debug, Clone, Serialize)]
pub struct Chains {
    /// The window the traffic was counted in, when a store was read.
    pub since: Option<Timestamp>,
    /// Each chain.
    pub chains: Vec<ChainReport>,
}

/// One chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// `NAME` of `[chains.NAME]`.
    pub name: String,
    /// Its steps, in order.
    pub steps: Vec<String>,
    /// Each identity that can make a request on at least one step.
    pub identities: Vec<IdentityChain>,
}

/// One identity's view of a chain.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityChain {
    /// The principal.
    pub principal: String,
    /// The chain's level for it: its weakest step's.
    pub level: Level,
    /// The steps at that level.
    pub weakest: Vec<String>,
    /// Each step, in order.
    pub steps: Vec<StepControl>,
    /// Enforced steps next to weak ones.
    pub bypasses: Vec<Bypass>,
    /// Rules whose promotion to enforce would raise the chain's level.
    pub promotions: Vec<Promotion>,
}

/// One step for one identity.
#[derive(Debug, Clone, Serialize)]
pub struct StepControl {
    /// The step as configured: an action or an action group.
    pub step: String,
    /// Its level; `None` when the schema lets the identity make no request on it.
    pub level: Option<Level>,
    /// The actions the step stands for that the identity can use.
    pub actions: Vec<String>,
    /// The rules and scopes in scope of its requests.
    pub controls: Vec<Control>,
    /// What enforcement does not cover, when it does not cover everything.
    pub left: Vec<String>,
    /// The identity's requests on the step in the window, with a store.
    pub traffic: Option<Traffic>,
}

/// A rule or scope in scope of a step's requests.
#[derive(Debug, Clone, Serialize)]
pub struct Control {
    /// The rule id, or `default-deny:<Type>`.
    pub rule: String,
    /// Its mode.
    pub mode: Mode,
    /// `all` when it denies every request of the step once enforced, `some` otherwise.
    pub covers: &'static str,
    /// Why only some, in words.
    pub only: Vec<String>,
}

/// The identity's requests on a step.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Traffic {
    /// Decisions in the window.
    pub requests: u64,
    /// Of those, the ones an enforced forbid had in scope.
    pub enforced_in_scope: u64,
}

/// An enforced step next to a weak one.
#[derive(Debug, Clone, Serialize)]
pub struct Bypass {
    /// The enforced (or partially enforced) step.
    pub enforced: String,
    /// The weak step next to it.
    pub weak: String,
    /// The weak step's level.
    pub weak_level: Level,
    /// What is wrong, in words.
    pub message: String,
    /// What would close it.
    pub fix: String,
}

/// A rule whose promotion would raise the chain's level.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    /// The rule id, or `default-deny:<Type>`.
    pub rule: String,
    /// Its mode now.
    pub mode: Mode,
    /// The chain's level once it is enforced.
    pub raises_to: Level,
    /// Its readiness verdict, with a store.
    pub verdict: Option<String>,
}

/// What to analyse.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this chain.
    pub chain: Option<String>,
    /// Only this principal (as Cedar writes its uid).
    pub principal: Option<String>,
    /// Count traffic from here (with a store).
    pub since: Option<Timestamp>,
}

/// Why a query cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ChainsError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--chain` names no chain of the pack.
    #[error("the pack has no chain `{0}` (its chains: {1})")]
    NoChain(String, String),
    /// `--principal` is not a Cedar entity uid.
    #[error("`{0}` is not a principal uid like Agent::\"bot\": {1}")]
    BadPrincipal(String, String),
}

/// Analyses the chains of `pack`, with the traffic and readiness `store` holds (read at
/// `now`) when given.
pub fn analyse(
    pack: &Pack,
    store: Option<&Store>,
    query: &Query,
    now: Timestamp,
) -> Result<Chains, ChainsError> {
    let config = &pack.config().chains;
    if let Some(name) = &query.chain
        && !config.contains_key(name)
    {
        let names: Vec<&str> = config.keys().map(String::as_str).collect();
        let names = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        return Err(ChainsError::NoChain(name.clone(), names));
    }
    let only = match &query.principal {
        Some(text) => Some(
            EntityUid::from_str(text)
                .map_err(|e| ChainsError::BadPrincipal(text.clone(), e.to_string()))?,
        ),
        None => None,
    };
    let usage = match (store, query.since) {
        (Some(store), Some(since)) => {
            let only_text = only.as_ref().map(ToString::to_string);
            let resources = pack.enforced_forbids_scope_resources();
            Some(store.usage_since(since, only_text.as_deref(), resources)?)
        }
        _ => None,
    };
    let verdicts: HashMap<String, String> = match store {
        Some(store) => readiness::assess(pack, store, None, now)?
            .into_iter()
            .map(|r| (r.rule, r.verdict.as_str().to_owned()))
            .collect(),
        None => HashMap::new(),
    };
    Ok(analyse_with(
        pack,
        usage.as_deref(),
        only.as_ref(),
        &verdicts,
        query,
    ))
    .map(|chains| Chains {
        since: usage.as_ref().and(query.since),
        ..chains
    })
}

/// The chains of `pack` with readiness verdicts already gathered (the report has them):
/// [`analyse`] without reading the store, and without traffic.
pub fn analyse_with_verdicts(
    pack: &Pack,
    verdicts: &HashMap<String, String>,
    query: &Query,
) -> Result<Chains, ChainsError> {
    if let Some(name) = &query.chain
        && !pack.config().chains.contains_key(name)
    {
        let names: Vec<&str> = pack.config().chains.keys().map(String::as_str).collect();
        return Err(ChainsError::NoChain(name.clone(), names.join(", ")));
    }
    let only = match &query.principal {
        Some(text) => Some(
            EntityUid::from_str(text)
                .map_err(|e| ChainsError::BadPrincipal(text.clone(), e.to_string()))?,
        ),
        None => None,
    };
    Ok(analyse_with(pack, None, only.as_ref(), verdicts, query))
}

fn analyse_with(
    pack: &Pack,
    usage: Option<&[Usage]>,
    only: Option<&EntityUid>,
    verdicts: &HashMap<String, String>,
    query: &Query,
) -> Chains {
    let config = &pack.config().chains;
    let identities = identities(pack, usage, only);
    let traffic = usage.map(|u| Counted::new(pack, u));
    let analyst = Analyst {
        pack,
        verdicts,
        traffic: traffic.as_ref(),
    };
    let chains = config
        .iter()
        .filter(|(name, _)| query.chain.as_ref().is_none_or(|c| c == *name))
        .map(|(name, chain)| {
            let steps: Vec<String> = chain.steps.iter().map(|s| s.get_ref().clone()).collect();
            let identities = identities
                .iter()
                .filter_map(|p| analyst.identity(p, &steps))
                .collect();
            ChainReport {
                name: name.clone(),
                steps,
                identities,
            }
        })
        .collect();
    Chains {
        since: None,
        chains,
    }
}

/// The identities to analyse: the principals of the entity store (entities of a type
/// that can make requests), and those the log saw; only `only` when given.
fn identities(pack: &Pack, usage: Option<&[Usage]>, only: Option<&EntityUid>) -> Vec<EntityUid> {
    if let Some(only) = only {
        return vec![only.clone()];
    }
    let types: BTreeSet<String> = pack.principal_types().into_iter().collect();
    let mut found: BTreeMap<String, EntityUid> = BTreeMap::new();
    for entity in pack.entities().iter() {
        let uid = entity.uid();
        if types.contains(&uid.type_name().to_string()) {
            found.insert(uid.to_string(), uid);
        }
    }
    let mut seen = BTreeSet::new();
    for u in usage.into_iter().flatten() {
        if seen.insert(u.principal.as_str())
            && !found.contains_key(&u.principal)
            && let Ok(uid) = EntityUid::from_str(&u.principal)
        {
            found.insert(uid.to_string(), uid);
        }
    }
    found.into_values().collect()
}

/// The log's usage, by principal and action, with each row's resource parsed once.
struct Counted {
    /// (principal, action) → (requests, of which an enforced forbid had in scope).
    by_pair: HashMap<(String, String), (u64, u64)>,
}

impl Counted {
    fn new(pack: &Pack, usage: &[Usage]) -> Counted {
        fn parse<'u>(
            uids: &mut HashMap<&'u str, Option<EntityUid>>,
            text: &'u str,
        ) -> Option<EntityUid> {
            uids.entry(text)
                .or_insert_with(|| EntityUid::from_str(text).ok())
                .clone()
        }
        let mut uids: HashMap<&str, Option<EntityUid>> = HashMap::new();
        let mut by_pair: HashMap<(String, String), (u64, u64)> = HashMap::new();
        for u in usage {
            let uids = &mut uids;
            let resource = match &u.resource {
                Some(r) => parse(uids, r).map(Some),
                None => Some(None),
            };
            let parsed = (parse(uids, &u.principal), parse(uids, &u.action), resource);
            let watched = match parsed {
                (Some(p), Some(a), Some(r)) => pack.enforced_forbid_in_scope(&p, &a, r.as_ref()),
                _ => false,
            };
            let entry = by_pair
                .entry((u.principal.clone(), u.action.clone()))
                .or_default();
            entry.0 += u.count;
            if watched {
                entry.1 += u.count;
            }
        }
        Counted { by_pair }
    }

    fn of(&self, principal: &str, actions: &[EntityUid]) -> Traffic {
        let mut traffic = Traffic {
            requests: 0,
            enforced_in_scope: 0,
        };
        for action in actions {
            if let Some((n, watched)) = self
                .by_pair
                .get(&(principal.to_owned(), action.to_string()))
            {
                traffic.requests += n;
                traffic.enforced_in_scope += watched;
            }
        }
        traffic
    }
}

struct Analyst<'a> {
    pack: &'a Pack,
    verdicts: &'a HashMap<String, String>,
    traffic: Option<&'a Counted>,
}

/// One request shape of a step: an action on a type of resource (`None`: any).
struct Cell {
    action: EntityUid,
    resource_type: Option<EntityTypeName>,
    covers: Vec<Cover>,
}

/// A step's shapes for one identity.
struct Step {
    name: String,
    actions: Vec<EntityUid>,
    cells: Vec<Cell>,
}

impl Analyst<'_> {
    fn identity(&self, principal: &EntityUid, steps: &[String]) -> Option<IdentityChain> {
        let steps: Vec<Step> = steps.iter().map(|s| self.step(principal, s)).collect();
        if steps.iter().all(|s| s.cells.is_empty()) {
            return None;
        }
        let levels: Vec<Option<Level>> = steps.iter().map(|s| step_level(s, None)).collect();
        let level = levels.iter().flatten().min().copied()?;
        let weakest = steps
            .iter()
            .zip(&levels)
            .filter(|(_, l)| **l == Some(level))
            .map(|(s, _)| s.name.clone())
            .collect();
        let bypasses = self.bypasses(principal, &steps, &levels);
        let promotions = self.promotions(&steps, level);
        let principal_text = principal.to_string();
        let controls = steps
            .iter()
            .zip(&levels)
            .map(|(step, level)| StepControl {
                step: step.name.clone(),
                level: *level,
                actions: step.actions.iter().map(ToString::to_string).collect(),
                controls: controls(step),
                left: left(step),
                traffic: self.traffic.map(|t| t.of(&principal_text, &step.actions)),
            })
            .collect();
        Some(IdentityChain {
            principal: principal_text,
            level,
            weakest,
            steps: controls,
            bypasses,
            promotions,
        })
    }

    fn step(&self, principal: &EntityUid, name: &str) -> Step {
        let mut actions = Vec::new();
        let mut cells = Vec::new();
        for action in self.pack.actions_in(name) {
            let types = match self.pack.resource_types(principal.type_name(), &action) {
                None => vec![None],
                Some(types) => types.into_iter().map(Some).collect(),
            };
            if types.is_empty() {
                continue;
            }
            for resource_type in types {
                let covers = self.pack.covers(principal, &action, resource_type.as_ref());
                cells.push(Cell {
                    action: action.clone(),
                    resource_type,
                    covers,
                });
            }
            actions.push(action);
        }
        Step {
            name: name.to_owned(),
            actions,
            cells,
        }
    }

    fn bypasses(
        &self,
        principal: &EntityUid,
        steps: &[Step],
        levels: &[Option<Level>],
    ) -> Vec<Bypass> {
        let mut found = Vec::new();
        let strong = |l: Option<Level>| l.is_some_and(|l| l >= Level::PartiallyEnforced);
        let weak = |l: Option<Level>| l.is_some_and(|l| l <= Level::Warned);
        for i in 0..steps.len().saturating_sub(1) {
            let (Some(a), Some(b)) = (steps.get(i), steps.get(i + 1)) else {
                continue;
            };
            let (la, lb) = (
                levels.get(i).copied().flatten(),
                levels.get(i + 1).copied().flatten(),
            );
            let pairs = [
                (a, la, b, lb, "just after it"),
                (b, lb, a, la, "just before it"),
            ];
            for (enforced, le, weak_step, lw, place) in pairs {
                if strong(le) && weak(lw) {
                    let (Some(le), Some(lw)) = (le, lw) else {
                        continue;
                    };
                    found.push(Bypass {
                        enforced: enforced.name.clone(),
                        weak: weak_step.name.clone(),
                        weak_level: lw,
                        message: format!(
                            "`{}` is {}, but `{}` {place} is {} for {principal}",
                            enforced.name,
                            le.as_str(),
                            weak_step.name,
                            lw.as_str()
                        ),
                        fix: self.fix(principal, weak_step),
                    });
                }
            }
        }
        found
    }

    /// What would close a weak step: the rules to promote, or the rule to write.
    fn fix(&self, principal: &EntityUid, step: &Step) -> String {
        let candidates = candidates(step);
        if candidates.is_empty() {
            return format!(
                "no rule controls `{}` for {principal}: write an enforced forbid for it, or \
                 narrow the permits that open it",
                step.name
            );
        }
        let rules: Vec<String> = candidates
            .iter()
            .map(|(rule, mode)| {
                let verdict = self
                    .verdicts
                    .get(&rule.to_string())
                    .map(|v| format!(", readiness: {v}"))
                    .unwrap_or_default();
                format!("`{rule}` ({}{verdict})", mode.as_str())
            })
            .collect();
        format!("promote {}", rules.join(" or "))
    }

    /// The not-enforced rules of the weakest steps whose promotion raises the chain.
    fn promotions(&self, steps: &[Step], level: Level) -> Vec<Promotion> {
        let weakest: Vec<&Step> = steps
            .iter()
            .filter(|s| step_level(s, None) == Some(level))
            .collect();
        let mut seen = BTreeSet::new();
        let mut found = Vec::new();
        for step in weakest {
            for (rule, mode) in candidates(step) {
                if !seen.insert(rule.to_string()) {
                    continue;
                }
                let raised = steps
                    .iter()
                    .filter_map(|s| step_level(s, Some(&rule)))
                    .min();
                if let Some(raised) = raised
                    && raised > level
                {
                    found.push(Promotion {
                        verdict: self.verdicts.get(&rule.to_string()).cloned(),
                        rule: rule.to_string(),
                        mode,
                        raises_to: raised,
                    });
                }
            }
        }
        found
    }
}

/// The rules and scopes in a step's cells that are not enforced, once each, in order.
fn candidates(step: &Step) -> Vec<(RuleRef, Mode)> {
    let mut seen = BTreeSet::new();
    step.cells
        .iter()
        .flat_map(|c| c.covers.iter())
        .filter(|c| c.mode != Mode::Enforce)
        .filter(|c| seen.insert(c.rule.to_string()))
        .map(|c| (c.rule.clone(), c.mode))
        .collect()
}

/// A step's level, with `promoted` counted as enforced; `None` when it has no cells.
fn step_level(step: &Step, promoted: Option<&RuleRef>) -> Option<Level> {
    let levels: Vec<Level> = step
        .cells
        .iter()
        .map(|c| cell_level(&c.covers, promoted))
        .collect();
    if levels.is_empty() {
        return None;
    }
    if levels.iter().all(|l| *l == Level::Enforced) {
        return Some(Level::Enforced);
    }
    if levels.iter().any(|l| *l >= Level::PartiallyEnforced) {
        return Some(Level::PartiallyEnforced);
    }
    levels.into_iter().min()
}

fn cell_level(covers: &[Cover], promoted: Option<&RuleRef>) -> Level {
    let mode = |c: &Cover| {
        if Some(&c.rule) == promoted {
            Mode::Enforce
        } else {
            c.mode
        }
    };
    if covers
        .iter()
        .any(|c| mode(c) == Mode::Enforce && c.partial.is_none())
    {
        Level::Enforced
    } else if covers.iter().any(|c| mode(c) == Mode::Enforce) {
        Level::PartiallyEnforced
    } else if covers.iter().any(|c| mode(c) == Mode::Warn) {
        Level::Warned
    } else if covers.is_empty() {
        Level::Uncontrolled
    } else {
        Level::Audited
    }
}

fn controls(step: &Step) -> Vec<Control> {
    let mut by_rule: BTreeMap<String, (usize, Mode, bool, BTreeSet<String>)> = BTreeMap::new();
    let mut order = 0;
    for cell in &step.cells {
        for cover in &cell.covers {
            let entry = by_rule.entry(cover.rule.to_string()).or_insert_with(|| {
                order += 1;
                (order, cover.mode, true, BTreeSet::new())
            });
            if let Some(partial) = &cover.partial {
                entry.2 = false;
                entry.3.insert(partial.describe());
            }
        }
    }
    // A rule absent from some of the step's cells covers only some of it too.
    let in_cells: Vec<BTreeSet<String>> = step
        .cells
        .iter()
        .map(|c| {
            c.covers
                .iter()
                .map(|cover| cover.rule.to_string())
                .collect()
        })
        .collect();
    for (rule, entry) in &mut by_rule {
        let everywhere = in_cells.iter().all(|rules| rules.contains(rule));
        if !everywhere {
            entry.2 = false;
            entry
                .3
                .insert("not on every action or resource type of the step".to_owned());
        }
    }
    let mut controls: Vec<(usize, Control)> = by_rule
        .into_iter()
        .map(|(rule, (order, mode, all, only))| {
            (
                order,
                Control {
                    rule,
                    mode,
                    covers: if all { "all" } else { "some" },
                    only: only.into_iter().collect(),
                },
            )
        })
        .collect();
    controls.sort_by_key(|(order, _)| *order);
    controls.into_iter().map(|(_, c)| c).collect()
}

/// What enforcement leaves of a step: each shape not fully enforced, and why.
fn left(step: &Step) -> Vec<String> {
    step.cells
        .iter()
        .filter_map(|cell| {
            let level = cell_level(&cell.covers, None);
            if level == Level::Enforced {
                return None;
            }
            let on = match &cell.resource_type {
                Some(ty) => format!("{} on {ty}", cell.action),
                None => cell.action.to_string(),
            };
            let partial: Vec<String> = cell
                .covers
                .iter()
                .filter(|c| c.mode == Mode::Enforce)
                .filter_map(|c| {
                    c.partial
                        .as_ref()
                        .map(|p| format!("`{}` denies {}", c.rule, p.describe()))
                })
                .collect();
            Some(if partial.is_empty() {
                format!("{on}: {}", level.as_str())
            } else {
                format!("{on}: {} ({})", level.as_str(), partial.join("; "))
            })
        })
        .collect()
}
