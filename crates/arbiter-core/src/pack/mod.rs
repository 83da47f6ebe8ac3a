//! Loading a policy pack (DESIGN §2): `arbiter.toml`, the schema, the entities and the
//! rules, with every problem found reported at once, located by file, line and rule.

mod always;
mod annotations;
pub mod coverage;
pub mod file;
mod mcp;
mod schema;
pub(crate) mod shapes;
mod source;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use cedar_policy::{
    Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Schema, SchemaFragment,
    ValidationMode, Validator,
};
use serde::Deserialize as _;
use sha2::{Digest, Sha256};

use toml::Spanned;

use crate::catalog::Catalog;
use crate::config::{self, ALGORITHMS, Config, Issuer, PrincipalTemplate};
use crate::diag::{self, Problem, Problems};
use crate::index::SliceIndex;
use crate::jwk;
use crate::rule::{Mode, Rule, RuleRef};

pub use mcp::TOOL_CHANGED_KEY;
pub use schema::RESERVED_CONTEXT_KEYS;

/// A loaded, validated policy pack: everything a decision needs, immutable once built.
#[derive(Debug)]
pub struct Pack {
    dir: PathBuf,
    config: Config,
    catalog: Catalog,
    rules: Vec<Rule>,
    by_id: HashMap<String, usize>,
    schema: Option<Schema>,
    entities: Entities,
    policies: PolicySet,
    index: SliceIndex,
    action_groups: HashMap<EntityUid, Vec<String>>,
    /// Each action id the schema declares once, with its uid and its type's text: the
    /// MCP gateway names actions by id on every call.
    actions_by_id: HashMap<String, (EntityUid, String)>,
    request_entity_types: HashSet<EntityTypeName>,
    /// Per `[[issuers]]` name: its parsed principal template and its JWKS file's text.
    issuers: HashMap<String, IssuerKeys>,
    /// `default-deny:<Type>` and its mode, for the principal types the schema knows.
    scopes: HashMap<EntityTypeName, (RuleRef, Mode)>,
    version: String,
    warnings: Vec<Problem>,
    /// Every action's context type, to say where a context breaks it.
    shapes: shapes::ContextShapes,
    /// Every action's request plan: requests built without Cedar's schema check.
    plans: crate::plan::RequestPlans,
}

/// The stack of the thread that loads a pack: room for [`source::MAX_OPERATORS`] levels
/// of Cedar's recursion in an unoptimized build, with a margin (measured: a 990-term `+`
/// chain aborts at 16 MiB and loads at 32 MiB; an optimized build needs less). Reserved,
/// not committed, except where overcommit is off.
const LOAD_STACK: usize = 64 * 1024 * 1024;

/// The files of a pack, as found on disk.
const CONFIG_FILE: &str = "arbiter.toml";
const SCHEMA_FILE: &str = "schema.cedarschema";
const SCHEMA_JSON_FILE: &str = "schema.cedarschema.json";
const ENTITIES_FILE: &str = "entities.json";
const POLICIES_DIR: &str = "policies";

/// What the loader checked of an upstream issuer.
#[derive(Debug, Clone)]
pub struct IssuerKeys {
    /// Its `principal`, parsed.
    pub principal: PrincipalTemplate,
    /// Its `jwks_file`, as read (and hashed into the pack version).
    pub jwks: Option<String>,
}

impl Pack {
    /// Loads and validates the pack in `dir`. On failure, every problem found is returned.
    ///
    /// The work runs on a thread of its own with a stack sized for the deepest policy the
    /// loader accepts ([`source::MAX_OPERATORS`]): Cedar's parser, validator and JSON form
    /// recurse once per level of an expression, and the caller's stack (a runtime's
    /// blocking thread has 2 MiB) is not sized for that. The stack is reserved, not
    /// touched: memory is used only as deep as a policy goes.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, Problems> {
        let dir = dir.as_ref().to_owned();
        let loading = std::thread::Builder::new()
            .name("arbiter-pack-load".to_owned())
            .stack_size(LOAD_STACK)
            .spawn(move || Loader::new(&dir).load());
        let failed = |why: String| Problems(vec![Problem::in_file(".", why)]);
        match loading {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(failed("loading the pack failed unexpectedly".to_owned()))),
            Err(e) => Err(failed(format!(
                "cannot start the thread that loads the pack: {e}"
            ))),
        }
    }

    /// The pack's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `arbiter.toml`.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The checked parts of the `[[issuers]]` entry with this name.
    pub fn issuer_keys(&self, name: &str) -> Option<&IssuerKeys> {
        self.issuers.get(name)
    }

    /// The framework catalog, with the pack's own frameworks.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every rule, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule with this `@id`.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.by_id.get(id).and_then(|i| self.rules.get(*i))
    }

    /// The position of the rule with this `@id` in [`Pack::rules`].
    pub(crate) fn rule_position(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The pack's own schema (without arbiter's reserved context attributes).
    pub fn schema(&self) -> Option<&Schema> {
        self.schema.as_ref()
    }

    /// The entity store (with the schema's action entities).
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// The whole policy set, as raw Cedar would evaluate it.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// `sha256:` over the pack's files: names the exact policy a decision was made under.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Warnings found while loading (Cedar validator warnings, unknown annotations, …).
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The default-deny scope of a principal type, and its mode.
    pub fn default_deny_scope(&self, principal_type: &EntityTypeName) -> (RuleRef, Mode) {
        match self.scopes.get(principal_type) {
            Some((scope, mode)) => (scope.clone(), *mode),
            None => {
                let ty = principal_type.to_string();
                let mode = self.default_deny_mode(&ty);
                (RuleRef::DefaultDeny(ty), mode)
            }
        }
    }

    /// The mode of the default-deny scope for a principal type.
    pub fn default_deny_mode(&self, principal_type: &str) -> Mode {
        self.config.default_deny.mode_for(principal_type)
    }

    /// Every principal type the default-deny scopes name, with their modes: the types the
    /// schema knows (or the configuration names) each get a scope.
    pub fn default_deny_scopes(&self) -> BTreeMap<String, Mode> {
        let mut scopes = BTreeMap::new();
        if let Some(schema) = &self.schema {
            for action in schema.actions() {
                for ty in schema.principals_for_action(action).into_iter().flatten() {
                    let name = ty.to_string();
                    let mode = self.default_deny_mode(&name);
                    scopes.insert(name, mode);
                }
            }
        }
        for (ty, mode) in &self.config.default_deny.principal_types {
            scopes.insert(ty.get_ref().clone(), *mode);
        }
        scopes
    }

    pub(crate) fn index(&self) -> &SliceIndex {
        &self.index
    }

    /// Bare ids of the action and all its groups, transitively (`touched` in sessions).
    pub(crate) fn action_and_groups(&self, action: &EntityUid) -> std::borrow::Cow<'_, [String]> {
        match self.action_groups.get(action) {
            Some(ids) => std::borrow::Cow::Borrowed(ids),
            None => std::borrow::Cow::Owned(lineage_ids(action, &self.entities)),
        }
    }

    /// The schema's action with this bare id (`read_file` → `Action::"read_file"`, or
    /// `Ns::Action::"read_file"` when one namespace has it); `None` without a schema, or
    /// when no action or several have it.
    pub fn action_with_id(&self, id: &str) -> Option<EntityUid> {
        self.action_by_id(id).map(|(uid, _)| uid.clone())
    }

    /// [`Pack::action_with_id`] without a copy, with the text of the action's type.
    pub fn action_by_id(&self, id: &str) -> Option<(&EntityUid, &str)> {
        self.actions_by_id
            .get(id)
            .map(|(uid, ty)| (uid, ty.as_str()))
    }

    /// Whether the schema declares this action.
    pub(crate) fn knows_action(&self, action: &EntityUid) -> bool {
        self.action_groups.contains_key(action)
    }

    /// The per-action request plans (empty without a schema).
    pub(crate) fn plans(&self) -> &crate::plan::RequestPlans {
        &self.plans
    }

    pub(crate) fn request_entity_types(&self) -> &HashSet<EntityTypeName> {
        &self.request_entity_types
    }

    /// Whether a request for `action` can carry a boolean `context.<key>`: the pack has no
    /// schema (any context goes), or the action's context type declares `key` as `Bool`.
    /// The MCP gateway asks this before it adds `context.tool_changed`.
    pub fn context_takes_bool(&self, action: &EntityUid, key: &str) -> bool {
        self.schema.is_none() || self.shapes.declares_bool(action, key)
    }

    /// Where `context` breaks the context type of `action`, in words that name the path
    /// and the expected type but never the value.
    pub(crate) fn explain_context(
        &self,
        action: &EntityUid,
        context: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<String> {
        self.shapes.explain(action, context)
    }
}

struct Loader<'a> {
    dir: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    hasher: Sha256,
    /// `arbiter.toml` as read, to place problems found after parsing.
    config_text: String,
    shapes: shapes::ContextShapes,
    plans: crate::plan::RequestPlans,
}

/// Where a policy came from, to place validator messages.
struct Origin {
    file: PathBuf,
    text: std::sync::Arc<str>,
    start: usize,
}

impl<'a> Loader<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            problems: Vec::new(),
            warnings: Vec::new(),
            hasher: Sha256::new(),
            config_text: String::new(),
            shapes: shapes::ContextShapes::default(),
            plans: crate::plan::RequestPlans::default(),
        }
    }

    fn load(mut self) -> Result<Pack, Problems> {
        if !self.dir.is_dir() {
            return Err(Problems(vec![Problem::in_file(
                self.dir,
                "not a directory: a pack is a directory with arbiter.toml, a schema and policies/",
            )]));
        }
        let config = self.load_config();
        let catalog = match Catalog::new(&config.frameworks) {
            Ok(c) => c,
            Err(e) => {
                self.problems
                    .push(Problem::in_file(CONFIG_FILE, e.to_string()));
                Catalog::new(&BTreeMap::new())
                    .map_err(|e| Problems(vec![Problem::in_file(CONFIG_FILE, e.to_string())]))?
            }
        };
        let (schema, augmented) = self.load_schema();
        let entities = self.load_entities(schema.as_ref());
        let (rules, policies, origins) = self.load_policies(&config, &catalog);
        if rules.is_empty() && !config.defaults.allow_no_policies && self.problems.is_empty() {
            self.problems.push(Problem::in_file(
                POLICIES_DIR,
                "the pack has no policy: every request would fall to the default-deny scope; \
                 if that is meant, set `allow_no_policies = true` in [defaults] of arbiter.toml",
            ));
        }
        if let Some(augmented) = &augmented {
            self.validate_policies(augmented, &policies, &origins);
        }
        if let Some(schema) = &schema {
            self.check_config_against_schema(&config, schema);
        }
        self.check_config(&config);
        if let Some(settings) = &config.mcp {
            for (span, message) in mcp::check(settings, schema.as_ref()) {
                self.config_problem(span, message);
            }
            if let Some(schema) = &schema {
                for (span, message) in mcp::undecidable_pins(settings, schema, &self.shapes) {
                    self.warnings.push(
                        Problem::in_file(CONFIG_FILE, message)
                            .at_offset(&self.config_text, span.start),
                    );
                }
            }
        }
        let issuers = self.check_issuers(&config, schema.as_ref());
        let request_entity_types = self.request_entity_types(&config);
        if !self.problems.is_empty() {
            return Err(Problems(self.problems));
        }
        let entities = entities.unwrap_or_else(Entities::empty);
        let action_groups = action_groups(schema.as_ref(), &entities);
        let actions_by_id = actions_by_id(schema.as_ref());
        let by_id = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        let index = SliceIndex::new(&rules, &policies)
            .map_err(|e| Problems(vec![Problem::in_file(POLICIES_DIR, e.to_string())]))?;
        let version = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        let mut pack = Pack {
            dir: self.dir.to_owned(),
            config,
            catalog,
            rules,
            by_id,
            schema,
            entities,
            policies,
            index,
            action_groups,
            actions_by_id,
            request_entity_types,
            issuers,
            scopes: HashMap::new(),
            version,
            warnings: self.warnings,
            shapes: self.shapes,
            plans: self.plans,
        };
        pack.scopes = pack
            .default_deny_scopes()
            .into_iter()
            .filter_map(|(ty, mode)| {
                let name = ty.parse::<EntityTypeName>().ok()?;
                Some((name, (RuleRef::DefaultDeny(ty), mode)))
            })
            .collect();
        Ok(pack)
    }

    /// Reads a pack file (a regular file of at most [`file::MAX_FILE_BYTES`]) and feeds it
    /// to the version hash.
    fn read(&mut self, relative: &Path) -> Option<String> {
        let path = self.dir.join(relative);
        match file::read(&path) {
            Ok(text) => {
                let name = relative.to_string_lossy();
                self.hasher.update((name.len() as u64).to_le_bytes());
                self.hasher.update(name.as_bytes());
                self.hasher.update((text.len() as u64).to_le_bytes());
                self.hasher.update(text.as_bytes());
                Some(text)
            }
            Err(e) => {
                self.problems
                    .push(Problem::in_file(relative, e.to_string()));
                None
            }
        }
    }

    fn load_config(&mut self) -> Config {
        // Whatever is there is read, so a FIFO or a directory is an error, not "absent".
        if !file::exists(&self.dir.join(CONFIG_FILE)) {
            self.warnings.push(Problem::in_file(
                CONFIG_FILE,
                "no arbiter.toml: the defaults apply (forbids in audit, default-deny in audit, \
                 errors deny)",
            ));
            return Config::default();
        }
        let Some(text) = self.read(Path::new(CONFIG_FILE)) else {
            return Config::default();
        };
        self.config_text.clone_from(&text);
        let place = |e: toml::de::Error| {
            let mut problem = Problem::in_file(CONFIG_FILE, e.message().to_owned());
            if let Some(span) = e.span() {
                problem = problem.at_offset(&text, span.start);
            }
            problem
        };
        let mut document = match toml::de::DeTable::parse(&text) {
            Ok(document) => document,
            Err(e) => {
                self.problems.push(place(e));
                return Config::default();
            }
        };
        // Every unknown key first (the typed parse would stop at the first one), then
        // what the typed parse finds in the rest.
        for unknown in config::strip_unknown_keys(document.get_mut()) {
            self.problems.push(
                Problem::in_file(CONFIG_FILE, unknown.message).at_offset(&text, unknown.span.start),
            );
        }
        match Config::deserialize(toml::de::Deserializer::from(document)) {
            Ok(config) => config,
            Err(e) => {
                self.problems.push(place(e));
                Config::default()
            }
        }
    }

    /// The pack's schema and the augmented one used to validate policies.
    fn load_schema(&mut self) -> (Option<Schema>, Option<Schema>) {
        let cedar = file::exists(&self.dir.join(SCHEMA_FILE));
        let json = file::exists(&self.dir.join(SCHEMA_JSON_FILE));
        let file = match (cedar, json) {
            (false, false) => {
                self.warnings.push(Problem::in_file(
                    SCHEMA_FILE,
                    "no schema: policies and requests are not validated (add schema.cedarschema)",
                ));
                return (None, None);
            }
            (true, true) => {
                self.problems.push(Problem::in_file(
                    SCHEMA_JSON_FILE,
                    "both schema.cedarschema and schema.cedarschema.json exist; keep one",
                ));
                return (None, None);
            }
            (true, false) => SCHEMA_FILE,
            (false, true) => SCHEMA_JSON_FILE,
        };
        let Some(text) = self.read(Path::new(file)) else {
            return (None, None);
        };
        let fragment = if cedar {
            SchemaFragment::from_cedarschema_str(&text).map(|(fragment, warnings)| {
                for w in warnings {
                    self.warnings
                        .extend(diag::from_cedar(&w, Path::new(file), &text, 0, None));
                }
                fragment
            })
        } else {
            SchemaFragment::from_json_str(&text).map_err(|e| e.into())
        };
        let fragment = match fragment {
            Ok(f) => f,
            Err(e) => {
                self.problems
                    .extend(diag::from_cedar(&e, Path::new(file), &text, 0, None));
                return (None, None);
            }
        };
        let mut json_form = match fragment.to_json_value() {
            Ok(v) => v,
            Err(e) => {
                self.problems
                    .extend(diag::from_cedar(&e, Path::new(file), &text, 0, None));
                return (None, None);
            }
        };
        let original = match Schema::from_json_value(json_form.clone()) {
            Ok(s) => s,
            Err(e) => {
                self.problems
                    .extend(diag::from_cedar(&e, Path::new(file), &text, 0, None));
                return (None, None);
            }
        };
        self.shapes = shapes::ContextShapes::new(&json_form);
        self.plans = crate::plan::RequestPlans::new(&json_form, &original);
        if let Err(clashes) = schema::augment(&mut json_form) {
            self.problems.extend(
                clashes
                    .into_iter()
                    .map(|message| Problem::in_file(file, message)),
            );
            return (Some(original), None);
        }
        match Schema::from_json_value(json_form) {
            Ok(augmented) => (Some(original), Some(augmented)),
            Err(e) => {
                self.problems.push(Problem::in_file(
                    file,
                    format!("adding arbiter's reserved context attributes failed: {e}"),
                ));
                (Some(original), None)
            }
        }
    }

    fn load_entities(&mut self, schema: Option<&Schema>) -> Option<Entities> {
        if !file::exists(&self.dir.join(ENTITIES_FILE)) {
            return match schema.map(Schema::action_entities) {
                Some(Ok(actions)) => Some(actions),
                Some(Err(e)) => {
                    self.problems
                        .push(Problem::in_file(SCHEMA_FILE, e.to_string()));
                    None
                }
                None => Some(Entities::empty()),
            };
        }
        let text = self.read(Path::new(ENTITIES_FILE))?;
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            self.problems.push(
                Problem::in_file(ENTITIES_FILE, format!("not valid JSON: {e}")).at_line(e.line()),
            );
            return None;
        }
        match Entities::from_json_str(&text, schema) {
            Ok(entities) => Some(entities),
            Err(e) => {
                let mut message = e.to_string();
                if let Some(help) = miette::Diagnostic::help(&e) {
                    message.push_str(&format!(" (help: {help})"));
                }
                self.problems.push(Problem::in_file(ENTITIES_FILE, message));
                None
            }
        }
    }

    fn load_policies(
        &mut self,
        config: &Config,
        catalog: &Catalog,
    ) -> (Vec<Rule>, PolicySet, HashMap<String, Origin>) {
        let mut rules = Vec::new();
        let mut set = PolicySet::new();
        let mut origins: HashMap<String, Origin> = HashMap::new();
        let dir = self.dir.join(POLICIES_DIR);
        let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(entries) => {
                let mut files = Vec::new();
                for entry in entries {
                    match entry {
                        Ok(e) if e.path().extension().is_some_and(|x| x == "cedar") => {
                            files.push(e.path());
                        }
                        Ok(_) => {}
                        // A rule file skipped unseen would change the policy silently.
                        Err(e) => self
                            .problems
                            .push(Problem::in_file(POLICIES_DIR, format!("cannot read: {e}"))),
                    }
                }
                files
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warnings.push(Problem::in_file(
                    POLICIES_DIR,
                    "no policies/ directory: every request falls to the default-deny scope",
                ));
                Vec::new()
            }
            // Not a directory, or unreadable: the pack's rules cannot be known.
            Err(e) => {
                self.problems
                    .push(Problem::in_file(POLICIES_DIR, format!("cannot read: {e}")));
                Vec::new()
            }
        };
        files.sort();
        for path in files {
            let relative = path
                .strip_prefix(self.dir)
                .map(Path::to_owned)
                .unwrap_or_else(|_| path.clone());
            let Some(text) = self.read(&relative) else {
                continue;
            };
            let shared: std::sync::Arc<str> = text.as_str().into();
            for chunk in source::split(&text) {
                if let Some((offset, message)) = source::too_deep(chunk.text) {
                    self.problems.push(
                        Problem::in_file(&relative, message)
                            .at_offset(&text, chunk.start + offset)
                            .for_rule(source::declared_id(chunk.text)),
                    );
                    continue;
                }
                let policy = match Policy::parse(None, chunk.text) {
                    Ok(p) => p,
                    Err(e) => {
                        self.problems.extend(diag::from_cedar(
                            &e,
                            &relative,
                            &text,
                            chunk.start,
                            None,
                        ));
                        continue;
                    }
                };
                let line = diag::line_col(&text, chunk.first_token).0;
                let body = text.get(chunk.first_token..chunk.start + chunk.text.len());
                let hash = format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(body.unwrap_or_default().as_bytes()))
                );
                let located = annotations::Located {
                    file: &relative,
                    text: &text,
                    chunk_start: chunk.start,
                    chunk: chunk.text,
                    line,
                };
                let read = annotations::read_rule(&policy, &located, config, catalog, hash);
                self.warnings.extend(read.warnings);
                let Some(rule) = read.rule else {
                    self.problems.extend(read.problems);
                    continue;
                };
                self.problems.extend(read.problems);
                if let Some(first) = origins.get(&rule.id) {
                    self.problems.push(
                        Problem::in_file(
                            &relative,
                            format!(
                                "duplicate @id: `{}` is already used at {}:{}",
                                rule.id,
                                first.file.display(),
                                diag::line_col(&first.text, first.start).0
                            ),
                        )
                        .at_line(line)
                        .for_rule(Some(&rule.id)),
                    );
                    continue;
                }
                let policy = policy.new_id(PolicyId::new(&rule.id));
                if let Err(e) = set.add(policy) {
                    self.problems.push(
                        Problem::in_file(&relative, e.to_string())
                            .at_line(line)
                            .for_rule(Some(&rule.id)),
                    );
                    continue;
                }
                origins.insert(
                    rule.id.clone(),
                    Origin {
                        file: relative.clone(),
                        text: shared.clone(),
                        start: chunk.start,
                    },
                );
                rules.push(rule);
            }
        }
        if rules.is_empty() && self.problems.is_empty() {
            self.warnings.push(Problem::in_file(
                POLICIES_DIR,
                "the pack has no rules: every request falls to the default-deny scope",
            ));
        }
        (rules, set, origins)
    }

    fn validate_policies(
        &mut self,
        augmented: &Schema,
        policies: &PolicySet,
        origins: &HashMap<String, Origin>,
    ) {
        let validator = Validator::new(augmented.clone());
        let result = validator.validate(policies, ValidationMode::Strict);
        let place = |id: &str, d: &dyn miette::Diagnostic| -> Vec<Problem> {
            match origins.get(id) {
                Some(o) => diag::from_cedar(d, &o.file, &o.text, o.start, Some(id)),
                None => vec![Problem::in_file(POLICIES_DIR, d.to_string()).for_rule(Some(id))],
            }
        };
        for error in result.validation_errors() {
            let id = error.policy_id().to_string();
            self.problems.extend(place(&id, error));
        }
        for warning in result.validation_warnings() {
            let id = warning.policy_id().to_string();
            self.warnings.extend(place(&id, warning));
        }
    }

    fn check_config_against_schema(&mut self, config: &Config, schema: &Schema) {
        let types: HashSet<String> = schema.entity_types().map(ToString::to_string).collect();
        let principal_types: HashSet<String> = schema
            .actions()
            .flat_map(|a| schema.principals_for_action(a).into_iter().flatten())
            .map(ToString::to_string)
            .collect();
        let mut action_ids: HashSet<String> = schema
            .actions()
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        action_ids.extend(
            schema
                .action_groups()
                .map(|a| a.id().unescaped().to_owned()),
        );
        let keys: Vec<&Spanned<String>> = config.default_deny.principal_types.keys().collect();
        self.unknown_names(keys, &principal_types, |ty| {
            format!("[default_deny] principal_types: `{ty}` is not a principal type of any action in the schema")
        });
        self.unknown_names(&config.credentials.required_for, &types, |ty| {
            format!("[credentials] required_for: unknown entity type `{ty}`")
        });
        self.unknown_names(&config.requests.entity_types, &types, |ty| {
            format!("[requests] entity_types: unknown entity type `{ty}`")
        });
        for (name, intent) in &config.intents {
            self.unknown_names(&intent.actions, &action_ids, |a| {
                format!(
                    "[intents.{name}] actions: `{a}` is not an action or action group of the schema"
                )
            });
        }
        for (name, chain) in &config.chains {
            self.unknown_names(&chain.steps, &action_ids, |a| {
                format!(
                    "[chains.{name}] steps: `{a}` is not an action or action group of the schema"
                )
            });
        }
    }

    /// A problem, placed in `arbiter.toml`, for every name that is not `known`.
    fn unknown_names<'n>(
        &mut self,
        names: impl IntoIterator<Item = &'n Spanned<String>>,
        known: &HashSet<String>,
        message: impl Fn(&str) -> String,
    ) {
        for name in names {
            if !known.contains(name.get_ref()) {
                self.config_problem(name.span(), message(name.get_ref()));
            }
        }
    }

    /// A problem in `arbiter.toml` at byte `at` of its text.
    fn config_problem(&mut self, span: std::ops::Range<usize>, message: String) {
        self.problems
            .push(Problem::in_file(CONFIG_FILE, message).at_offset(&self.config_text, span.start));
    }

    fn check_config(&mut self, config: &Config) {
        for token in &config.server.pep_tokens {
            let ok = token
                .get_ref()
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                self.config_problem(
                    token.span(),
                    "[server] pep_tokens: each entry is `sha256:` and 64 hex digits \
                     (the hash of a token, never the token itself)"
                        .to_owned(),
                );
            }
        }
        for path in &config.log.mask {
            let p = path.get_ref();
            let ok = p
                .strip_prefix("context.")
                .is_some_and(|rest| !rest.is_empty() && rest.split('.').all(|seg| !seg.is_empty()));
            if !ok {
                self.config_problem(
                    path.span(),
                    format!(
                        "[log] mask: `{p}` is not a path into the context (e.g. `context.args.password`)"
                    ),
                );
            }
        }
        for (name, intent) in &config.intents {
            if intent.actions.is_empty() {
                self.problems.push(Problem::in_file(
                    CONFIG_FILE,
                    format!("[intents.{name}] covers no actions"),
                ));
            }
        }
        for (name, chain) in &config.chains {
            if chain.steps.len() < 2 {
                self.problems.push(Problem::in_file(
                    CONFIG_FILE,
                    format!("[chains.{name}] needs at least two steps"),
                ));
            }
        }
    }

    /// `[credentials]` limits and every `[[issuers]]` entry: a mistake here would let the
    /// wrong tokens in, so each is an error.
    fn check_issuers(
        &mut self,
        config: &Config,
        schema: Option<&Schema>,
    ) -> HashMap<String, IssuerKeys> {
        let credentials = &config.credentials;
        if credentials.leeway.seconds() > 300 {
            self.problems.push(Problem::in_file(
                CONFIG_FILE,
                format!(
                    "[credentials] leeway = \"{}\" is more than 5m: expired tokens would pass",
                    credentials.leeway
                ),
            ));
        }
        for (field, value) in [
            ("issuer", &credentials.issuer),
            ("audience", &credentials.audience),
        ] {
            if value.trim().is_empty() {
                self.problems.push(Problem::in_file(
                    CONFIG_FILE,
                    format!("[credentials] {field} is empty"),
                ));
            }
        }
        for (name, intent) in &config.intents {
            if let Some(ttl) = intent.max_ttl
                && ttl > credentials.max_ttl
            {
                self.problems.push(Problem::in_file(
                    CONFIG_FILE,
                    format!(
                        "[intents.{name}] max_ttl = \"{ttl}\" is longer than [credentials] \
                         max_ttl = \"{}\"",
                        credentials.max_ttl
                    ),
                ));
            }
        }
        let mut out = HashMap::new();
        for issuer in &config.issuers {
            if let Some(keys) = self.check_issuer(config, issuer, schema) {
                let name = issuer.name.get_ref().clone();
                if out.insert(name.clone(), keys).is_some() {
                    self.config_problem(
                        issuer.name.span(),
                        format!("[[issuers]] `{name}` is defined twice"),
                    );
                }
            }
        }
        out
    }

    fn check_issuer(
        &mut self,
        config: &Config,
        issuer: &Issuer,
        schema: Option<&Schema>,
    ) -> Option<IssuerKeys> {
        let name = issuer.name.get_ref();
        let before = self.problems.len();
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_name {
            self.config_problem(
                issuer.name.span(),
                format!("[[issuers]] name `{name}`: use letters, digits, `-`, `_` and `.`"),
            );
        }
        let at = issuer.name.span();
        match issuer.iss() {
            Some(iss) if !iss.trim().is_empty() => {}
            _ => self.config_problem(
                at.clone(),
                format!("[[issuers]] `{name}`: `issuer` (the `iss` its tokens carry) is required"),
            ),
        }
        if issuer.audience.get_ref().trim().is_empty() {
            self.config_problem(
                issuer.audience.span(),
                format!("[[issuers]] `{name}`: `audience` is empty"),
            );
        }
        let algorithms = issuer.algorithms();
        if algorithms.is_empty() {
            self.config_problem(
                at.clone(),
                format!("[[issuers]] `{name}`: `algorithms` is empty"),
            );
        }
        for alg in issuer.algorithms.iter().flatten() {
            if !ALGORITHMS.contains(&alg.get_ref().as_str()) {
                self.config_problem(
                    alg.span(),
                    format!(
                        "[[issuers]] `{name}`: algorithm `{}` is not accepted (only {})",
                        alg.get_ref(),
                        ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        let jwks = match (&issuer.jwks_file, &issuer.jwks_url) {
            (Some(file), None) => self.read_jwks(name, file, &algorithms),
            (None, Some(url)) => {
                let u = url.get_ref();
                let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                    .iter()
                    .any(|p| {
                        u.strip_prefix(p)
                            .is_some_and(|r| r.is_empty() || r.starts_with([':', '/']))
                    });
                if !u.starts_with("https://") && !local {
                    self.config_problem(
                        url.span(),
                        format!(
                            "[[issuers]] `{name}`: jwks_url must be https:// (plain http only on loopback)"
                        ),
                    );
                }
                None
            }
            _ => {
                self.config_problem(
                    at.clone(),
                    format!("[[issuers]] `{name}`: give exactly one of `jwks_file` and `jwks_url`"),
                );
                None
            }
        };
        let principal = match PrincipalTemplate::parse(issuer.principal.get_ref()) {
            Ok(t) => Some(t),
            Err(message) => {
                self.config_problem(
                    issuer.principal.span(),
                    format!("[[issuers]] `{name}` principal: {message}"),
                );
                None
            }
        };
        if let (Some(template), Some(schema)) = (&principal, schema) {
            self.check_issuer_principal(name, issuer, template, schema);
        }
        for intent in issuer.intents.iter().flatten() {
            if !config.intents.contains_key(intent.get_ref()) {
                self.config_problem(
                    intent.span(),
                    format!(
                        "[[issuers]] `{name}` intents: `{}` is not an [intents] entry",
                        intent.get_ref()
                    ),
                );
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(IssuerKeys {
            principal: principal?,
            jwks,
        })
    }

    /// The template's type is an entity type of the schema, and the principal an exchange
    /// builds (its attributes, as strings) is one the schema accepts.
    fn check_issuer_principal(
        &mut self,
        name: &str,
        issuer: &Issuer,
        template: &PrincipalTemplate,
        schema: &Schema,
    ) {
        let span = issuer.principal.span();
        if !schema.entity_types().any(|t| t == template.type_name()) {
            self.config_problem(
                span,
                format!(
                    "[[issuers]] `{name}` principal: `{}` is not an entity type of the schema",
                    template.type_name()
                ),
            );
            return;
        }
        if issuer.attributes.is_empty() {
            // No entity is built from the token: the principal is the pack's entity, or none.
            return;
        }
        let uid = EntityUid::from_type_name_and_id(
            template.type_name().clone(),
            cedar_policy::EntityId::new("example"),
        );
        let attrs = issuer
            .attributes
            .keys()
            .map(|a| {
                (
                    a.clone(),
                    cedar_policy::RestrictedExpression::new_string("example".to_owned()),
                )
            })
            .collect();
        let fits = cedar_policy::Entity::new(uid, attrs, HashSet::new())
            .map_err(|e| e.to_string())
            .and_then(|e| {
                Entities::from_entities([e], Some(schema))
                    .map(drop)
                    .map_err(|e| error_chain(&e))
            });
        if let Err(message) = fits {
            self.config_problem(
                span,
                format!(
                    "[[issuers]] `{name}` attributes do not fit the schema's `{}` \
                     (each is copied from a claim as a String): {message}",
                    template.type_name()
                ),
            );
        }
    }

    /// Reads an issuer's JWKS file (part of the pack, so part of its version).
    fn read_jwks(
        &mut self,
        name: &str,
        file: &Spanned<String>,
        algorithms: &[&str],
    ) -> Option<String> {
        let relative = Path::new(file.get_ref());
        if relative.is_absolute() || relative.components().any(|c| c.as_os_str() == "..") {
            self.config_problem(
                file.span(),
                format!("[[issuers]] `{name}`: jwks_file must be a path inside the pack"),
            );
            return None;
        }
        let text = self.read(relative)?;
        let usable_for: Vec<jwk::Algorithm> = algorithms
            .iter()
            .filter_map(|a| jwk::Algorithm::from_name(a))
            .collect();
        let keys = serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(
                |v| match v.get("keys").and_then(serde_json::Value::as_array) {
                    // No algorithms is reported on its own; every key would be unusable.
                    Some(keys)
                        if algorithms.is_empty()
                            || keys
                                .iter()
                                .any(|k| jwk::usable_key(k, &usable_for).is_some()) =>
                    {
                        Ok(())
                    }
                    Some(keys) if !keys.is_empty() => Err(format!(
                        "no key in it can verify {} (issuer `{name}`): {}",
                        algorithms.join(" or "),
                        jwk::RULE
                    )),
                    _ => Err("not a JWKS: it needs a non-empty `keys` array".to_owned()),
                },
            );
        if let Err(message) = keys {
            self.problems.push(Problem::in_file(relative, message));
            return None;
        }
        Some(text)
    }

    fn request_entity_types(&mut self, config: &Config) -> HashSet<EntityTypeName> {
        let mut out = HashSet::new();
        for ty in &config.requests.entity_types {
            match ty.get_ref().parse::<EntityTypeName>() {
                Ok(t) if t.basename() == "Action" => self.problems.push(Problem::in_file(
                    CONFIG_FILE,
                    "[requests] entity_types: requests may never describe actions",
                )),
                Ok(t) => {
                    out.insert(t);
                }
                Err(e) => self.problems.push(Problem::in_file(
                    CONFIG_FILE,
                    format!("[requests] entity_types: `{}`: {e}", ty.get_ref()),
                )),
            }
        }
        out
    }
}

/// For every action the pack knows: the bare ids of the action and its groups.
/// The schema's actions by id, each with its type's text; an id declared under two
/// action types names neither.
fn actions_by_id(schema: Option<&Schema>) -> HashMap<String, (EntityUid, String)> {
    let Some(schema) = schema else {
        return HashMap::new();
    };
    let mut found: HashMap<String, Option<(EntityUid, String)>> = HashMap::new();
    for action in schema.actions() {
        let id = action.id().unescaped().to_owned();
        let entry = (action.clone(), action.type_name().to_string());
        found
            .entry(id)
            .and_modify(|seen| *seen = None)
            .or_insert(Some(entry));
    }
    found
        .into_iter()
        .filter_map(|(id, entry)| entry.map(|e| (id, e)))
        .collect()
}

fn action_groups(schema: Option<&Schema>, entities: &Entities) -> HashMap<EntityUid, Vec<String>> {
    let mut actions: HashSet<EntityUid> = HashSet::new();
    if let Some(schema) = schema {
        actions.extend(schema.actions().cloned());
    }
    actions
        .into_iter()
        .map(|action| {
            let ids = lineage_ids(&action, entities);
            (action, ids)
        })
        .collect()
}

/// The bare ids of an action and of all its groups, transitively.
fn lineage_ids(action: &EntityUid, entities: &Entities) -> Vec<String> {
    let mut ids = vec![action.id().unescaped().to_owned()];
    if let Some(ancestors) = entities.ancestors(action) {
        let mut groups: Vec<String> = ancestors.map(|g| g.id().unescaped().to_owned()).collect();
        groups.sort();
        groups.dedup();
        ids.extend(groups);
    }
    ids
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
