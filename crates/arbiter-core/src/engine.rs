//! The decision (DESIGN §3), top to bottom in [`Engine::decide`], each step a call named
//! after it. The CLI, the server and replay all decide through this one function.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression,
};
use jiff::Timestamp;
use serde_json::Value;
use ulid::Ulid;

use crate::clock::{Clock, SystemClock};
use crate::context;
use crate::credential::{
    CredentialFailure, CredentialVerifier, NoIssuers, Revoked, VerifiedCredential,
};
use crate::diag::{cedar_message, cedar_message_redacted};
use crate::index::Slice;
use crate::needs::Needs;
use crate::pack::{Pack, RESERVED_CONTEXT_KEYS};
use crate::request::{DecisionRequest, EntityRef, RequestError};
use crate::response::{AuditEntry, Decision, EvalError, Outcome, Revocation, Warning};
use crate::rule::{Effect, Kind, Mode, OnError, Rule, RuleRef};
use crate::state::{
    Baseline, MemorySessions, MemoryThrottles, NoBaseline, SessionKey, SessionStore, SessionView,
    ThrottleKey, ThrottleStore,
};

/// Cedar's answer on the slice for one request; see [`Engine::explain`].
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Whether Cedar allowed the request on the slice.
    pub allowed: bool,
    /// The policies that determined Cedar's decision.
    pub reasons: BTreeSet<String>,
    /// The policies whose evaluation errored.
    pub errors: BTreeSet<String>,
    /// The slice: the policies that can apply to this request.
    pub slice: cedar_policy::PolicySet,
    /// The Cedar request, reserved context included.
    pub request: Request,
    /// The entities the request was evaluated with.
    pub entities: Entities,
}

/// Where `time` in a request is honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// Only the engine's clock counts; a request with `time` is invalid (the server).
    ClockOnly,
    /// A request's `time` is the clock for that request (offline: `check`, `test`, replay).
    RequestMaySet,
}

/// Decides requests against one pack, with its session, throttle and credential state.
#[derive(Debug, Clone)]
pub struct Engine {
    pack: Arc<Pack>,
    clock: Arc<dyn Clock>,
    sessions: Arc<dyn SessionStore>,
    throttles: Arc<dyn ThrottleStore>,
    credentials: Arc<dyn CredentialVerifier>,
    baseline: Arc<dyn Baseline>,
    time: TimeSource,
    authorizer: Arc<Authorizer>,
    ids: Arc<std::sync::Mutex<ulid::Generator>>,
    uids: Arc<Uids>,
}

/// Entity uids by the text a request names them with, parsed once: Cedar's parser costs
/// more than the rest of a small decision's request building.
#[derive(Debug, Default)]
struct Uids(std::sync::RwLock<std::collections::HashMap<String, EntityUid>>);

/// How many uids are kept; past it (requests naming ever new entities) uids are parsed
/// per request instead of cached.
const MAX_CACHED_UIDS: usize = 65_536;

impl Uids {
    /// The reference as a Cedar uid, as [`EntityRef::to_uid`] gives it.
    fn get(&self, reference: &EntityRef, field: &str) -> Result<EntityUid, RequestError> {
        let EntityRef::Text(text) = reference else {
            return reference.to_uid(field);
        };
        if let Some(uid) = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(text.as_str())
        {
            return Ok(uid.clone());
        }
        let uid = reference.to_uid(field)?;
        let mut cache = self.0.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() < MAX_CACHED_UIDS {
            cache.insert(text.clone(), uid.clone());
        }
        Ok(uid)
    }
}

/// A request that passed step 1.
struct Valid {
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    session: Option<SessionKey>,
    entities: Option<Entities>,
    now: Timestamp,
}

/// What Cedar said about the slice (step 4).
struct Evaluation {
    /// Satisfied forbids, and errored forbids whose `on_error` is `deny`.
    forbids: Vec<usize>,
    /// Whether a permit was satisfied.
    permitted: bool,
    errors: Vec<EvalError>,
}

/// A forbid that fired (step 5).
struct Fired<'p> {
    rule: &'p Rule,
    effect: Effect,
    retry_after_s: Option<u64>,
}

impl Engine {
    /// An engine on `pack` with in-memory state, the system clock, and no credential
    /// issuers.
    pub fn new(pack: Arc<Pack>) -> Self {
        Self {
            pack,
            clock: Arc::new(SystemClock),
            sessions: Arc::new(MemorySessions::default()),
            throttles: Arc::new(MemoryThrottles::default()),
            credentials: Arc::new(NoIssuers),
            baseline: Arc::new(NoBaseline),
            time: TimeSource::ClockOnly,
            authorizer: Arc::new(Authorizer::new()),
            ids: Arc::new(std::sync::Mutex::new(ulid::Generator::new())),
            uids: Arc::new(Uids::default()),
        }
    }

    /// Uses this clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps sessions here.
    #[must_use]
    pub fn with_sessions(mut self, sessions: Arc<dyn SessionStore>) -> Self {
        self.sessions = sessions;
        self
    }

    /// Keeps throttle buckets here.
    #[must_use]
    pub fn with_throttles(mut self, throttles: Arc<dyn ThrottleStore>) -> Self {
        self.throttles = throttles;
        self
    }

    /// Verifies credentials with this.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Arc<dyn CredentialVerifier>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Marks pairs outside this frozen baseline `novel`.
    #[must_use]
    pub fn with_baseline(mut self, baseline: Arc<dyn Baseline>) -> Self {
        self.baseline = baseline;
        self
    }

    /// Whether requests may carry their own `time`.
    #[must_use]
    pub fn with_time_source(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    /// The same state on another pack (a reload keeps sessions and throttles).
    #[must_use]
    pub fn with_pack(&self, pack: Arc<Pack>) -> Self {
        Self {
            pack,
            ..self.clone()
        }
    }

    /// A new decision id at `now`: a ULID, increasing within this engine (and every engine
    /// made from it with `with_pack`), so the log's newest-first order is arrival order.
    pub fn new_decision_id(&self, now: Timestamp) -> String {
        let at = system_time(now);
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        match ids.generate_from_datetime(at) {
            Ok(id) => id.to_string(),
            // The random part overflowed within one millisecond: fall back to a fresh id.
            Err(_) => Ulid::from_datetime(at).to_string(),
        }
    }

    /// The engine's time now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The pack decisions are made under.
    pub fn pack(&self) -> &Arc<Pack> {
        &self.pack
    }

    /// Decides one request (DESIGN §3). An `Err` means the request itself was bad; every
    /// decision, deny and throttle included, is an `Ok`.
    pub fn decide(&self, request: &DecisionRequest) -> Result<Decision, RequestError> {
        let (mut valid, checked) = self.validate(request)?;
        let credential = match self.verify_identity(request, &valid) {
            Ok(credential) => credential,
            Err(failure) => {
                return Ok(self.refuse(valid.now, format!("credential:{}", failure.as_str())));
            }
        };
        // A credential bound to a session binds the request to it (DESIGN §3 step 2).
        if valid.session.is_none()
            && let Some(id) = credential.as_ref().and_then(|c| c.session.clone())
        {
            valid.session = Some(SessionKey {
                principal: valid.principal.to_string(),
                id,
            });
        }
        let session = valid
            .session
            .as_ref()
            .map(|key| (key, self.sessions.open(key, valid.now)));
        let terminated = session.as_ref().is_some_and(|(key, s)| {
            s.terminated || self.credentials.session_revoked(&key.principal, &key.id)
        });
        if terminated {
            let mut refused = self.refuse(valid.now, "session:terminated".to_owned());
            refused.credential_id = credential.as_ref().map(|c| c.jti.clone());
            refused.credential = credential;
            refused.session = valid.session.map(|k| k.id);
            return Ok(refused);
        }
        let slice = self.slice(&valid);
        // Uid strings are built only when a baseline is frozen.
        let pair = self
            .baseline
            .is_frozen()
            .then(|| (valid.principal.to_string(), valid.action.to_string()));
        let novel = pair
            .as_ref()
            .and_then(|(principal, action)| self.baseline.novel(principal, action));
        let cedar_request = self.with_reserved_context(
            &valid,
            checked,
            slice.needs,
            session.as_ref().map(|(_, s)| s),
            credential.as_ref(),
            novel,
        )?;
        let vouched = credential
            .as_ref()
            .map(|c| self.vouched_principal(&valid, c))
            .transpose()?
            .flatten();
        let entities = vouched
            .as_ref()
            .or(valid.entities.as_ref())
            .unwrap_or(self.pack.entities());
        let evaluation = self.evaluate(&slice, &cedar_request, entities);
        let fired = self.apply_throttles(&evaluation, &valid);
        let mut decision = self.outcome(&valid, evaluation, &fired);
        self.side_effects(
            &valid,
            &mut decision,
            &fired,
            session.as_ref().map(|(k, _)| *k),
            credential.as_ref(),
        );
        decision.decision_id = self.new_decision_id(valid.now);
        decision.time = valid.now;
        decision.credential_id = credential.as_ref().map(|c| c.jti.clone());
        decision.credential = credential;
        decision.session = valid.session.map(|k| k.id);
        decision.in_scope = Some(Arc::clone(&slice.ids));
        decision.novel = novel;
        if let Some((principal, action)) = pair.filter(|_| novel == Some(true))
            && decision.decision == Outcome::Allow
        {
            self.baseline.seen(&principal, &action);
        }
        Ok(decision)
    }

    /// What Cedar answers on the slice arbiter evaluates for this request, with the exact
    /// Cedar request (reserved context included, as for a request outside any session).
    /// Changes no state. For explanations, and for checking the slicing against the
    /// whole policy set.
    pub fn explain(&self, request: &DecisionRequest) -> Result<Explanation, RequestError> {
        let (valid, checked) = self.validate(request)?;
        let cedar_request =
            self.with_reserved_context(&valid, checked, Needs::ALL, None, None, None)?;
        let entities = valid
            .entities
            .clone()
            .unwrap_or_else(|| self.pack.entities().clone());
        let slice = self.pack.index().slice(
            &valid.action,
            valid.principal.type_name(),
            valid.resource.type_name(),
            self.pack.entities(),
        );
        let original = PolicySet::from_policies(
            slice
                .ids
                .iter()
                .filter_map(|id| self.pack.policies().policy(&PolicyId::new(id)).cloned()),
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
        // The guarded slice, as `decide` evaluates it: its reasons are checked against
        // Cedar's on the whole set.
        let response = self.authorizer.is_authorized(
            &cedar_request,
            &slice.for_request(&cedar_request, &entities),
            &entities,
        );
        let satisfied: Vec<&Rule> = response
            .diagnostics()
            .reason()
            .filter_map(|id| self.pack.rule(id.as_ref()))
            .collect();
        let evaluation = self.evaluate(&slice, &cedar_request, &entities);
        // Cedar's own shape of the answer: satisfied forbids deny and are the reasons;
        // otherwise satisfied permits allow and are the reasons.
        let of = |kind: Kind| -> BTreeSet<String> {
            satisfied
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| r.id.clone())
                .collect()
        };
        let forbidden = of(Kind::Forbid);
        let allowed = forbidden.is_empty() && evaluation.permitted;
        let reasons = if forbidden.is_empty() {
            of(Kind::Permit)
        } else {
            forbidden
        };
        Ok(Explanation {
            allowed,
            reasons,
            errors: evaluation.errors.into_iter().map(|e| e.rule).collect(),
            slice: original,
            request: cedar_request,
            entities,
        })
    }

    /// Step 1: parse and validate the request against the pack's schema.
    fn validate(&self, request: &DecisionRequest) -> Result<(Valid, Request), RequestError> {
        let now = match (&request.time, self.time) {
            (None, _) => self.clock.now(),
            (Some(_), TimeSource::ClockOnly) => return Err(RequestError::TimeNotAllowed),
            (Some(text), TimeSource::RequestMaySet) => text.parse::<Timestamp>().map_err(|e| {
                RequestError::Invalid(format!("`time`: `{text}` is not an RFC 3339 time ({e})"))
            })?,
        };
        let principal = self.uids.get(&request.principal, "principal")?;
        let action = self.uids.get(&request.action, "action")?;
        let resource = self.uids.get(&request.resource, "resource")?;
        let empty = serde_json::Map::new();
        let context = request.context_object()?.unwrap_or(&empty);
        if let Some(key) = RESERVED_CONTEXT_KEYS
            .iter()
            .find(|k| context.contains_key(**k))
        {
            return Err(RequestError::ReservedContextKey((*key).to_owned()));
        }
        let session = match &request.session {
            None => None,
            Some(id) if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) => {
                return Err(RequestError::Invalid(
                    "`session` must be 1 to 256 characters without control characters".to_owned(),
                ));
            }
            Some(id) => Some(SessionKey {
                principal: principal.to_string(),
                id: id.clone(),
            }),
        };
        let schema = self.pack.schema();
        if schema.is_some() && !self.pack.knows_action(&action) {
            return Err(RequestError::Invalid(format!(
                "`action`: {action} is not an action of the pack's schema"
            )));
        }
        // The action's plan builds and checks the request in one pass (see `plan`). What
        // it does not cover goes the way it went before:
        // a context of plain JSON is turned into Cedar values directly; `Request::new`
        // checks it against the schema. Anything else, or a plain reading the schema
        // refuses (a string the schema types as an extension value, an object it types as
        // an entity), is read by Cedar's own schema-directed JSON parser.
        let planned = self
            .pack
            .plans()
            .request(&principal, &action, &resource, context);
        let checked = match planned {
            Some(planned) => Some(planned),
            None => match context::plain(context) {
                Some(plain) => self
                    .request(&principal, &action, &resource, plain, request)
                    .ok(),
                None => None,
            },
        };
        let checked = match checked {
            Some(checked) => checked,
            None => {
                let context = if context.is_empty() {
                    Ok(Context::empty())
                } else {
                    Context::from_json_value(
                        Value::Object(context.clone()),
                        schema.map(|s| (s, &action)),
                    )
                }
                .map_err(|e| match e {
                    cedar_policy::ContextJsonError::MissingAction(_) => {
                        RequestError::Invalid(cedar_message(&e))
                    }
                    _ => self.context_error(&action, request),
                })?;
                self.request(&principal, &action, &resource, context, request)?
            }
        };
        let entities = match &request.entities {
            None => None,
            Some(value) => Some(self.request_entities(value, &principal)?),
        };
        let valid = Valid {
            principal,
            action,
            resource,
            session,
            entities,
            now,
        };
        Ok((valid, checked))
    }

    /// The Cedar request, its context checked against the schema.
    fn request(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        context: Context,
        request: &DecisionRequest,
    ) -> Result<Request, RequestError> {
        Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            self.pack.schema(),
        )
        .map_err(|e| match e {
            cedar_policy::RequestValidationError::InvalidContext(_)
            | cedar_policy::RequestValidationError::TypeOfContext(_) => {
                self.context_error(action, request)
            }
            other => RequestError::Invalid(cedar_message(&other)),
        })
    }

    /// A context that breaks the schema: where and what was expected, never the value
    /// (Cedar's own message quotes it, and the context is what `[log] mask` hides).
    fn context_error(&self, action: &EntityUid, request: &DecisionRequest) -> RequestError {
        let said = request
            .context
            .as_ref()
            .and_then(Value::as_object)
            .and_then(|context| self.pack.explain_context(action, context));
        RequestError::Invalid(said.unwrap_or_else(|| {
            format!("`context` does not conform to the context type of {action} in the schema")
        }))
    }

    /// Entities the request describes: only of `[requests] entity_types`, never a stored
    /// entity, never the principal, never a member of a stored group.
    fn request_entities(
        &self,
        value: &Value,
        principal: &EntityUid,
    ) -> Result<Entities, RequestError> {
        let bad = |m: String| RequestError::Entities(m);
        if value.as_array().is_some_and(Vec::is_empty) {
            return Ok(self.pack.entities().clone());
        }
        let described = Entities::from_json_value(value.clone(), self.pack.schema())
            .map_err(|e| bad(format!("`entities`: {}", cedar_message_redacted(&e))))?;
        let store = self.pack.entities();
        let allowed = self.pack.request_entity_types();
        // With a schema, Cedar adds the schema's action entities to what it parsed; those
        // are the store's own and are left out.
        let is_schema_action =
            |uid: &EntityUid| uid.type_name().basename() == "Action" && store.get(uid).is_some();
        for entity in described.iter() {
            let uid = entity.uid();
            if self.pack.schema().is_some() && is_schema_action(&uid) {
                continue;
            }
            if !allowed.contains(uid.type_name()) {
                return Err(bad(format!(
                    "`entities`: {uid} is of type `{}`, which requests may not describe (see [requests] entity_types)",
                    uid.type_name()
                )));
            }
            if &uid == principal {
                return Err(bad(format!(
                    "`entities`: {uid} is the principal; its attributes come from the store or its credential"
                )));
            }
            if store.get(&uid).is_some() {
                return Err(bad(format!(
                    "`entities`: {uid} is already in the entity store and cannot be overridden"
                )));
            }
            if let Some(parents) = described.ancestors(&uid) {
                for parent in parents {
                    if store.get(parent).is_some() {
                        return Err(bad(format!(
                            "`entities`: {uid} cannot make itself a member of stored group {parent}"
                        )));
                    }
                }
            }
        }
        store
            .clone()
            .add_entities(
                described
                    .iter()
                    .filter(|e| !is_schema_action(&e.uid()))
                    .cloned(),
                self.pack.schema(),
            )
            .map_err(|e| bad(format!("`entities`: {}", cedar_message_redacted(&e))))
    }

    /// Step 2: who is calling, and is that still valid right now?
    fn verify_identity(
        &self,
        request: &DecisionRequest,
        valid: &Valid,
    ) -> Result<Option<VerifiedCredential>, CredentialFailure> {
        let Some(token) = &request.credential else {
            let required_for = &self.pack.config().credentials.required_for;
            if required_for.is_empty() {
                return Ok(None);
            }
            let ty = valid.principal.type_name().to_string();
            let required = self
                .pack
                .config()
                .credentials
                .required_for
                .iter()
                .any(|t| *t.get_ref() == ty);
            return if required {
                Err(CredentialFailure::Missing)
            } else {
                Ok(None)
            };
        };
        let credential = self.credentials.verify(token, valid.now)?;
        if credential.principal != valid.principal {
            return Err(CredentialFailure::PrincipalMismatch);
        }
        if let (Some(bound), Some(asked)) = (&credential.session, &request.session)
            && bound != asked
        {
            return Err(CredentialFailure::SessionMismatch);
        }
        Ok(Some(credential))
    }

    /// The principal as its credential describes it, when the credential carries
    /// attributes and the entity store does not know the principal (a stored entity is
    /// never overridden).
    fn vouched_principal(
        &self,
        valid: &Valid,
        credential: &VerifiedCredential,
    ) -> Result<Option<Entities>, RequestError> {
        if credential.attributes.is_empty() || self.pack.entities().get(&valid.principal).is_some()
        {
            return Ok(None);
        }
        let bad = |m: String| RequestError::Invalid(format!("the credential's attributes: {m}"));
        let attrs = credential
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())))
            .collect();
        let entity = cedar_policy::Entity::new(valid.principal.clone(), attrs, HashSet::new())
            .map_err(|e| bad(e.to_string()))?;
        let base = valid
            .entities
            .clone()
            .unwrap_or_else(|| self.pack.entities().clone());
        base.add_entities([entity], self.pack.schema())
            .map(Some)
            .map_err(|e| bad(cedar_message_redacted(&e)))
    }

    /// Step 3: the reserved context keys, from the session, the clock and the credential.
    fn with_reserved_context(
        &self,
        valid: &Valid,
        checked: Request,
        needs: Needs,
        session: Option<&SessionView>,
        credential: Option<&VerifiedCredential>,
        novel: Option<bool>,
    ) -> Result<Request, RequestError> {
        let seconds = |from: Timestamp| valid.now.duration_since(from).as_secs().max(0);
        let mut pairs = Vec::with_capacity(4);
        if needs.session {
            let (id, touched, actions, age) = match (session, &valid.session) {
                (Some(s), Some(key)) => (
                    key.id.as_str(),
                    Some(&s.touched),
                    s.actions,
                    seconds(s.started),
                ),
                _ => ("", None, 0, 0),
            };
            let touched = touched.into_iter().flat_map(|t| t.iter());
            pairs.push((
                "session".to_owned(),
                record([
                    ("id", RestrictedExpression::new_string(id.to_owned())),
                    (
                        "touched",
                        RestrictedExpression::new_set(
                            touched.map(|t| RestrictedExpression::new_string(t.clone())),
                        ),
                    ),
                    ("actions", RestrictedExpression::new_long(actions)),
                    ("age_s", RestrictedExpression::new_long(age)),
                ])?,
            ));
        }
        if needs.now {
            pairs.push((
                "now".to_owned(),
                RestrictedExpression::new_datetime(cedar_datetime(valid.now)),
            ));
        }
        if let Some(c) = credential.filter(|_| needs.credential || needs.in_intent) {
            let mut fields = vec![
                ("issuer", RestrictedExpression::new_string(c.issuer.clone())),
                (
                    "ttl_s",
                    RestrictedExpression::new_long(
                        c.expires_at.duration_since(c.issued_at).as_secs(),
                    ),
                ),
                (
                    "age_s",
                    RestrictedExpression::new_long(seconds(c.issued_at)),
                ),
            ];
            if let Some(intent) = &c.intent {
                fields.push(("intent", RestrictedExpression::new_string(intent.clone())));
                let covered = self.in_intent(intent, &valid.action);
                pairs.push((
                    "in_intent".to_owned(),
                    RestrictedExpression::new_bool(covered),
                ));
            }
            pairs.push(("credential".to_owned(), record(fields)?));
        }
        if let Some(novel) = novel.filter(|_| needs.novel) {
            pairs.push(("novel".to_owned(), RestrictedExpression::new_bool(novel)));
        }
        if pairs.is_empty() {
            // No policy of the slice reads a reserved key: the validated request is the one.
            return Ok(checked);
        }
        let context = checked
            .context()
            .cloned()
            .unwrap_or_else(Context::empty)
            .merge(pairs)
            .map_err(|e| RequestError::Invalid(cedar_message_redacted(&e)))?;
        Request::new(
            valid.principal.clone(),
            valid.action.clone(),
            valid.resource.clone(),
            context,
            None,
        )
        .map_err(|e| RequestError::Invalid(cedar_message_redacted(&e)))
    }

    fn in_intent(&self, intent: &str, action: &EntityUid) -> bool {
        let Some(intent) = self.pack.config().intents.get(intent) else {
            return false;
        };
        let lineage = self.pack.action_and_groups(action);
        intent
            .actions
            .iter()
            .any(|a| lineage.iter().any(|l| l == a.get_ref()))
    }

    /// Step 4: one Cedar evaluation of the slice that can apply. In the slice forbids are
    /// permits, so Cedar's reasons are every satisfied policy, forbids and permits alike.
    fn evaluate(&self, slice: &Slice, request: &Request, entities: &Entities) -> Evaluation {
        let policies = slice.for_request(request, entities);
        if policies.is_empty() {
            // Cedar on no policy: none satisfied, none errored.
            return Evaluation {
                forbids: Vec::new(),
                permitted: false,
                errors: Vec::new(),
            };
        }
        let response = self.authorizer.is_authorized(request, &policies, entities);
        let mut forbids = Vec::new();
        let mut permitted = false;
        for id in response.diagnostics().reason() {
            let Some(i) = self.rule_index(id.as_ref()) else {
                continue;
            };
            match self.pack.rules().get(i).map(|r| r.kind) {
                Some(Kind::Forbid) => forbids.push(i),
                Some(Kind::Permit) => permitted = true,
                None => {}
            }
        }
        let mut errors = Vec::new();
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(error) = error;
            let id = error.policy_id().to_string();
            let Some(i) = self.rule_index(&id) else {
                continue;
            };
            let Some(rule) = self.pack.rules().get(i) else {
                continue;
            };
            let handled_as = match rule.kind {
                Kind::Permit => OnError::Skip,
                Kind::Forbid => rule.on_error,
            };
            if handled_as == OnError::Deny {
                forbids.push(i);
            }
            // Cedar quotes the values it tripped on, and they may be what `[log] mask`
            // hides: the message that reaches the caller, the log, readiness and the
            // report names paths and types, never values.
            errors.push(EvalError {
                rule: id,
                message: crate::diag::cedar_message_redacted(error.inner()),
                handled_as,
            });
        }
        forbids.sort_unstable();
        forbids.dedup();
        Evaluation {
            forbids,
            permitted,
            errors,
        }
    }

    /// The slice of the pack that can apply to the request.
    fn slice(&self, valid: &Valid) -> Arc<Slice> {
        self.pack.index().slice(
            &valid.action,
            valid.principal.type_name(),
            valid.resource.type_name(),
            self.pack.entities(),
        )
    }

    fn rule_index(&self, id: &str) -> Option<usize> {
        self.pack.rule_position(id)
    }

    /// Step 5: throttles fire only when their bucket is empty; every other satisfied forbid
    /// fires.
    fn apply_throttles<'p>(&'p self, evaluation: &Evaluation, valid: &Valid) -> Vec<Fired<'p>> {
        let mut fired = Vec::new();
        for rule in evaluation
            .forbids
            .iter()
            .filter_map(|i| self.pack.rules().get(*i))
        {
            let effect = rule.effect.unwrap_or(Effect::Deny);
            let retry_after_s = match (effect, rule.limit) {
                (Effect::Throttle, Some(limit)) => {
                    let key = ThrottleKey {
                        rule: rule.id.clone(),
                        principal: valid.principal.to_string(),
                        shadow: !rule.is_enforced(),
                    };
                    match self.throttles.take(&key, limit, valid.now) {
                        Ok(()) => continue,
                        Err(retry) => Some(retry),
                    }
                }
                _ => None,
            };
            fired.push(Fired {
                rule,
                effect,
                retry_after_s,
            });
        }
        fired
    }

    /// Step 6: the outcome.
    fn outcome(&self, valid: &Valid, evaluation: Evaluation, fired: &[Fired<'_>]) -> Decision {
        let mut decision = Decision {
            decision: Outcome::Allow,
            effect: None,
            retry_after_s: None,
            enforced: Vec::new(),
            warnings: Vec::new(),
            audit: Vec::new(),
            errors: evaluation.errors,
            reason: None,
            decision_id: String::new(),
            policy_version: self.pack.version().to_owned(),
            time: valid.now,
            credential_id: None,
            credential: None,
            session: None,
            in_scope: None,
            scope: None,
            novel: None,
            revoked: Vec::new(),
        };
        for f in fired {
            match f.rule.mode.unwrap_or(Mode::Audit) {
                Mode::Enforce => decision.enforced.push(RuleRef::Rule(f.rule.id.clone())),
                Mode::Warn => decision.warnings.push(Warning {
                    rule: RuleRef::Rule(f.rule.id.clone()),
                    message: f.rule.warning.clone(),
                    would: f.effect,
                }),
                Mode::Audit => decision.audit.push(AuditEntry {
                    rule: RuleRef::Rule(f.rule.id.clone()),
                    would: f.effect,
                }),
            }
        }
        let strongest = fired
            .iter()
            .filter(|f| f.rule.is_enforced())
            .max_by(|a, b| a.effect.cmp(&b.effect));
        if let Some(top) = strongest {
            decision.decision = Outcome::Deny;
            decision.effect = Some(top.effect);
            if top.effect == Effect::Throttle {
                decision.retry_after_s = fired
                    .iter()
                    .filter(|f| f.rule.is_enforced())
                    .filter_map(|f| f.retry_after_s)
                    .max();
            }
            decision.reason = Some(
                top.rule
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("rule:{}", top.rule.id)),
            );
            return decision;
        }
        // No enforced rule decided: the default-deny scope is consulted.
        let (scope, mode) = self.pack.default_deny_scope(valid.principal.type_name());
        decision.scope = Some(scope.clone());
        if !evaluation.permitted {
            match mode {
                Mode::Enforce => {
                    decision.decision = Outcome::Deny;
                    decision.effect = Some(Effect::Deny);
                    decision.enforced.push(scope.clone());
                    decision.reason = Some(format!("{scope}: no permit matched"));
                }
                Mode::Warn => decision.warnings.push(Warning {
                    message: format!("no permit matched; {scope} would deny this request"),
                    rule: scope,
                    would: Effect::Deny,
                }),
                Mode::Audit => decision.audit.push(AuditEntry {
                    rule: scope,
                    would: Effect::Deny,
                }),
            }
        }
        decision
    }

    /// Step 7: an enforced `revoke` ends the session and revokes the credential (in force
    /// here at once, reported in [`Decision::revoked`] for the caller to make durable); an
    /// allowed action updates the session.
    fn side_effects(
        &self,
        valid: &Valid,
        decision: &mut Decision,
        fired: &[Fired<'_>],
        session: Option<&SessionKey>,
        credential: Option<&VerifiedCredential>,
    ) {
        let revoking = (decision.effect == Some(Effect::Revoke))
            .then(|| {
                fired
                    .iter()
                    .find(|f| f.rule.is_enforced() && f.effect == Effect::Revoke)
            })
            .flatten();
        if let Some(by) = revoking {
            if let Some(key) = session {
                self.sessions.terminate(key, valid.now);
            }
            let session = session.map(|key| Revoked::Session {
                principal: Some(key.principal.clone()),
                id: key.id.clone(),
            });
            let token = credential.map(|c| Revoked::Jti(c.jti.clone()));
            for revoked in session.into_iter().chain(token) {
                self.credentials.revoke(&revoked);
                decision.revoked.push(Revocation {
                    revoked,
                    rule: by.rule.id.clone(),
                    at: valid.now,
                });
            }
        }
        if decision.decision == Outcome::Allow
            && let Some(key) = session
        {
            self.sessions
                .record_allowed(key, &self.pack.action_and_groups(&valid.action));
        }
    }

    /// A deny decided before evaluation (identity or session).
    fn refuse(&self, now: Timestamp, reason: String) -> Decision {
        Decision {
            decision: Outcome::Deny,
            effect: Some(Effect::Deny),
            retry_after_s: None,
            enforced: Vec::new(),
            warnings: Vec::new(),
            audit: Vec::new(),
            errors: Vec::new(),
            reason: Some(reason),
            decision_id: self.new_decision_id(now),
            time: now,
            policy_version: self.pack.version().to_owned(),
            credential_id: None,
            credential: None,
            session: None,
            in_scope: None,
            scope: None,
            novel: None,
            revoked: Vec::new(),
        }
    }
}

fn record<'a>(
    fields: impl IntoIterator<Item = (&'a str, RestrictedExpression)>,
) -> Result<RestrictedExpression, RequestError> {
    RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| RequestError::Invalid(e.to_string()))
}

/// Cedar's datetime literal form, in UTC with milliseconds.
fn cedar_datetime(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn system_time(now: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(now.as_millisecond()).unwrap_or(0))
}
