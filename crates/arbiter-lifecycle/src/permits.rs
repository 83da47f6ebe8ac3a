//! Least-privilege permits suggested from what identities actually did (DESIGN §4,
//! Baseline): the `.cedar` file `arbiter baseline --suggest` prints.
//!
//! The observed requests come from [`arbiter_store::Store::observed`]. Each suggested
//! permit names one principal exactly and covers the requests it was seen making, no
//! more: for each (principal, action, resource type), the resources it touched when
//! there were at most [`MAX_LISTED`] of them, and every resource of the type beyond that.
//! Actions of one principal with the same resource constraint share a permit.
//!
//! The file is checked before it is returned: it must parse, and validate in strict mode
//! against the pack's schema. A suggestion that does not is a bug here, reported as an
//! error rather than printed.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::str::FromStr;

use arbiter_core::Pack;
use arbiter_store::Observed;
use cedar_policy::{EntityTypeName, EntityUid, PolicySet, Schema, ValidationMode, Validator};
use jiff::Timestamp;

/// The most resources of one type a permit lists; with more, it covers the whole type.
pub const MAX_LISTED: usize = 5;

/// The prefix of every suggested permit's `@id`.
pub const ID_PREFIX: &str = "baseline.";

/// The longest principal slug in an `@id`.
const MAX_SLUG: usize = 48;

/// Suggested permits, as a complete `.cedar` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// The policy file: a header comment, then one commented `permit` per group.
    pub cedar: String,
    /// How many permits it holds.
    pub policies: usize,
    /// What the caller should know (for stderr): rows skipped and why, checks not made.
    pub notes: Vec<String>,
}

/// A suggestion that failed its own check: a bug in arbiter, never something the
/// observed data can cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuggestError {
    /// The file does not parse.
    #[error("the suggested permits do not parse (a bug in arbiter): {0}")]
    Unparsable(Box<cedar_policy::ParseErrors>),
    /// It holds another number of policies than were written.
    #[error(
        "the suggestion holds {parsed} policies where {written} were written (a bug in arbiter)"
    )]
    Miscounted {
        /// Policies Cedar read.
        parsed: usize,
        /// Policies written.
        written: usize,
    },
    /// It does not validate in strict mode.
    #[error(
        "the suggested permits do not validate against the pack's schema (a bug in arbiter): {}",
        .0.join("; ")
    )]
    Invalid(Vec<String>),
}

/// Why an observed row cannot be suggested from.
#[derive(Debug, thiserror::Error)]
enum Skipped {
    #[error("the {what} {text:?} is not a Cedar entity uid")]
    NotAUid { what: &'static str, text: String },
    #[error("the action {0} is not in the pack's schema")]
    UnknownAction(String),
    #[error("the schema does not let principals of type {principal_type} perform {action}")]
    PrincipalType {
        principal_type: EntityTypeName,
        action: String,
    },
    #[error("the schema does not let {action} apply to resources of type {resource_type}")]
    ResourceType {
        action: String,
        resource_type: EntityTypeName,
    },
}

/// Suggests least-privilege permits covering every (principal, action, resource) in
/// `observed` that the pack's schema allows.
///
/// Rows whose uids do not parse, whose action the schema does not declare, or whose
/// principal or resource type the action does not apply to are skipped, each kind once in
/// `notes`. The result parses and validates against the schema in strict mode; if it did
/// not, that is a bug, returned as the error.
pub fn suggest(pack: &Pack, observed: &[Observed]) -> Result<Suggestion, SuggestError> {
    let schema = pack.schema();
    let mut notes = Vec::new();
    // Why, as said → (rows, requests); the notes come out in the order of their text.
    let mut skipped: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut principals: BTreeMap<String, PrincipalSeen> = BTreeMap::new();
    let mut total: Option<Tally> = None;
    for row in observed {
        match Admitted::admit(schema, row) {
            Ok(request) => {
                Tally::add_to(&mut total, Tally::of(row));
                principals
                    .entry(uid_text(&request.principal))
                    .or_insert_with(|| PrincipalSeen::new(request.principal.clone()))
                    .add(&request, row);
            }
            Err(why) => {
                let (rows, requests) = skipped.entry(why.to_string()).or_default();
                *rows += 1;
                *requests += row.count;
            }
        }
    }
    for (why, (rows, requests)) in skipped {
        notes.push(format!(
            "skipped {requests} request(s) on {rows} observed (principal, action, resource): {why}"
        ));
    }
    if schema.is_none() {
        notes.push(
            "the pack has no schema: the suggestion was parsed but could not be validated"
                .to_owned(),
        );
    }

    let groups: HashSet<&EntityUid> = schema
        .map(|s| s.action_groups().collect())
        .unwrap_or_default();
    let mut ids = Ids::new(pack);
    let mut cedar = header(total, principals.len());
    let mut policies = 0;
    for seen in principals.values() {
        for permit in seen.permits(&groups) {
            let id = ids.next(&seen.principal);
            cedar.push('\n');
            permit
                .render(&seen.principal, &id, &mut cedar)
                .expect("writing to a String cannot fail");
            policies += 1;
        }
    }

    check(&cedar, policies, schema)?;
    Ok(Suggestion {
        cedar,
        policies,
        notes,
    })
}

/// An observed row whose uids parsed and that the schema allows.
#[derive(Debug)]
struct Admitted {
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
}

impl Admitted {
    /// The row's uids, or why the row cannot be suggested from (the same for every row
    /// skipped for the same reason, so they can be counted together).
    fn admit(schema: Option<&Schema>, row: &Observed) -> Result<Admitted, Skipped> {
        let parse = |what: &'static str, text: &str| {
            EntityUid::from_str(text).map_err(|_| Skipped::NotAUid {
                what,
                text: text.to_owned(),
            })
        };
        let request = Admitted {
            principal: parse("principal", &row.principal)?,
            action: parse("action", &row.action)?,
            resource: parse("resource", &row.resource)?,
        };
        let Some(schema) = schema else {
            return Ok(request);
        };
        let action = uid_text(&request.action);
        if !schema.actions().any(|a| a == &request.action) {
            return Err(Skipped::UnknownAction(action));
        }
        let principal_type = request.principal.type_name();
        let principal_applies = schema
            .principals_for_action(&request.action)
            .is_some_and(|mut types| types.any(|t| t == principal_type));
        if !principal_applies {
            return Err(Skipped::PrincipalType {
                principal_type: principal_type.clone(),
                action,
            });
        }
        let resource_type = request.resource.type_name();
        let resource_applies = schema
            .resources_for_action(&request.action)
            .is_some_and(|mut types| types.any(|t| t == resource_type));
        if !resource_applies {
            return Err(Skipped::ResourceType {
                action,
                resource_type: resource_type.clone(),
            });
        }
        Ok(request)
    }
}

/// How many requests, and when: what a permit's comment reports.
#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    default_denied: u64,
    first: Timestamp,
    last: Timestamp,
}

impl Tally {
    fn of(row: &Observed) -> Tally {
        Tally {
            count: row.count,
            default_denied: row.default_denied_in_audit,
            first: row.first_seen,
            last: row.last_seen,
        }
    }

    fn add(&mut self, other: Tally) {
        self.count += other.count;
        self.default_denied += other.default_denied;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }

    fn add_to(total: &mut Option<Tally>, tally: Tally) {
        match total {
            Some(total) => total.add(tally),
            None => *total = Some(tally),
        }
    }
}

/// One principal's requests by (resource type, action), each with its resources.
#[derive(Debug)]
struct PrincipalSeen {
    principal: EntityUid,
    /// By resource type, then action's text.
    by_type: BTreeMap<EntityTypeName, BTreeMap<String, ActionSeen>>,
}

/// What one principal did with one action on one resource type.
#[derive(Debug)]
struct ActionSeen {
    action: EntityUid,
    resource_type: EntityTypeName,
    /// The resources, as Cedar source.
    resources: BTreeSet<String>,
    tally: Tally,
}

impl PrincipalSeen {
    fn new(principal: EntityUid) -> PrincipalSeen {
        PrincipalSeen {
            principal,
            by_type: BTreeMap::new(),
        }
    }

    fn add(&mut self, request: &Admitted, row: &Observed) {
        let tally = Tally::of(row);
        let resource = uid_text(&request.resource);
        let actions = self
            .by_type
            .entry(request.resource.type_name().clone())
            .or_default();
        match actions.entry(uid_text(&request.action)) {
            Entry::Vacant(vacant) => {
                vacant.insert(ActionSeen {
                    action: request.action.clone(),
                    resource_type: request.resource.type_name().clone(),
                    resources: BTreeSet::from([resource]),
                    tally,
                });
            }
            Entry::Occupied(occupied) => {
                let seen = occupied.into_mut();
                seen.tally.add(tally);
                seen.resources.insert(resource);
            }
        }
    }

    /// The permits for this principal: one per resource constraint, shared between the
    /// actions that have it. An action group stays alone, matched with `==`: in a list it
    /// would be matched with `in`, which also takes its members, actions never seen.
    fn permits<'a>(&'a self, groups: &HashSet<&EntityUid>) -> Vec<Permit<'a>> {
        let mut by_constraint: BTreeMap<(Constraint<'a>, usize), Permit<'a>> = BTreeMap::new();
        let seen = self.by_type.values().flat_map(BTreeMap::values);
        for (position, seen) in seen.enumerate() {
            let constraint = Constraint::of(seen);
            // An action that cannot share gets a key of its own.
            let alone = if groups.contains(&seen.action) {
                position + 1
            } else {
                0
            };
            match by_constraint.entry((constraint.clone(), alone)) {
                Entry::Vacant(vacant) => {
                    vacant.insert(Permit {
                        actions: vec![&seen.action],
                        constraint,
                        resources_seen: seen.resources.iter().map(String::as_str).collect(),
                        tally: seen.tally,
                    });
                }
                Entry::Occupied(occupied) => {
                    let permit = occupied.into_mut();
                    permit.actions.push(&seen.action);
                    permit
                        .resources_seen
                        .extend(seen.resources.iter().map(String::as_str));
                    permit.tally.add(seen.tally);
                }
            }
        }
        by_constraint.into_values().collect()
    }
}

/// Which resources a permit takes: of one type, these (at most [`MAX_LISTED`]) or all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Constraint<'a> {
    ty: &'a EntityTypeName,
    /// `None` for every resource of the type.
    listed: Option<Vec<&'a str>>,
}

impl<'a> Constraint<'a> {
    fn of(seen: &'a ActionSeen) -> Constraint<'a> {
        let listed = (seen.resources.len() <= MAX_LISTED)
            .then(|| seen.resources.iter().map(String::as_str).collect());
        Constraint {
            ty: &seen.resource_type,
            listed,
        }
    }
}

/// One suggested permit.
#[derive(Debug)]
struct Permit<'a> {
    actions: Vec<&'a EntityUid>,
    constraint: Constraint<'a>,
    /// Every resource its actions were seen on.
    resources_seen: BTreeSet<&'a str>,
    tally: Tally,
}

impl Permit<'_> {
    /// Appends the permit, with its comment, to `out`.
    fn render(&self, principal: &EntityUid, id: &str, out: &mut String) -> fmt::Result {
        let principal = uid_text(principal);
        let actions: Vec<String> = self.actions.iter().map(|a| uid_text(a)).collect();
        let ty = self.constraint.ty;
        let covers = match &self.constraint.listed {
            Some(listed) => listed.join(", "),
            None => format!("every {ty} ({} seen)", self.resources_seen.len()),
        };
        let tally = &self.tally;
        // Every text in a comment is escaped: no id can end the comment's line.
        writeln!(out, "// {principal}: {} on {covers}", actions.join(", "))?;
        write!(
            out,
            "// {} request(s), first seen {}, last seen {}",
            tally.count, tally.first, tally.last
        )?;
        if tally.default_denied > 0 {
            write!(
                out,
                "; {} of them matched no permit (a default-deny scope in audit or warn let them through)",
                tally.default_denied
            )?;
        }
        out.push('\n');
        writeln!(out, "@id({})", quote(id))?;
        writeln!(out, "permit (")?;
        writeln!(out, "    principal == {principal},")?;
        match actions.as_slice() {
            [one] => writeln!(out, "    action == {one},")?,
            many => writeln!(out, "    action in [{}],", many.join(", "))?,
        }
        match self.constraint.listed.as_deref() {
            Some([one]) => writeln!(out, "    resource == {one}\n);"),
            Some(many) => writeln!(
                out,
                "    resource is {ty}\n)\nwhen {{ [{}].contains(resource) }};",
                many.join(", ")
            ),
            None => writeln!(out, "    resource is {ty}\n);"),
        }
    }
}

/// The file's opening comment.
fn header(total: Option<Tally>, principals: usize) -> String {
    let mut out = String::from(
        "// Least-privilege permits suggested by `arbiter baseline` from the decisions\n\
         // identities were seen making. Review them before adding them to the pack.\n",
    );
    if let Some(total) = total {
        out.push_str(&format!(
            "// {} request(s) by {principals} principal(s), from {} to {}.\n",
            total.count, total.first, total.last
        ));
    }
    out
}

/// Hands out `@id`s: `baseline.<principal-slug>.<n>`, numbered per slug, with a suffix
/// (`-2`, `-3`, …) when the pack already has a rule of that id.
#[derive(Debug)]
struct Ids {
    taken: HashSet<String>,
    numbers: HashMap<String, usize>,
}

impl Ids {
    fn new(pack: &Pack) -> Ids {
        Ids {
            taken: pack.rules().iter().map(|rule| rule.id.clone()).collect(),
            numbers: HashMap::new(),
        }
    }

    fn next(&mut self, principal: &EntityUid) -> String {
        let slug = slug(principal.id().unescaped());
        let n = self.numbers.entry(slug.clone()).or_default();
        *n += 1;
        let base = format!("{ID_PREFIX}{slug}.{n}");
        let mut id = base.clone();
        let mut suffix = 1;
        while self.taken.contains(&id) {
            suffix += 1;
            id = format!("{base}-{suffix}");
        }
        self.taken.insert(id.clone());
        id
    }
}

/// A principal id made fit for a rule id: lower-case ASCII letters and digits, runs of
/// anything else as one `-`.
fn slug(id: &str) -> String {
    let mut slug = String::new();
    for c in id.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "principal".to_owned()
    } else {
        slug.to_owned()
    }
}

/// A uid as Cedar source: `Type::"id"`, the id quoted by [`quote`].
fn uid_text(uid: &EntityUid) -> String {
    format!("{}::{}", uid.type_name(), quote(uid.id().unescaped()))
}

/// A Cedar string literal: `"` and `\` escaped, and every control character too, so
/// the literal stays on one line.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The suggestion parses, holds `policies` policies, and validates in strict mode.
fn check(cedar: &str, policies: usize, schema: Option<&Schema>) -> Result<(), SuggestError> {
    let set = PolicySet::from_str(cedar).map_err(|e| SuggestError::Unparsable(Box::new(e)))?;
    let parsed = set.policies().count();
    if parsed != policies {
        return Err(SuggestError::Miscounted {
            parsed,
            written: policies,
        });
    }
    let Some(schema) = schema else {
        return Ok(());
    };
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let errors: BTreeSet<String> = result
        .validation_errors()
        .map(ToString::to_string)
        .collect();
    Err(SuggestError::Invalid(errors.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::{quote, slug};

    #[test]
    fn ids_are_quoted_as_cedar_strings() {
        assert_eq!(quote("plain"), r#""plain""#);
        assert_eq!(quote(r#"say "hi"\now"#), r#""say \"hi\"\\now""#);
        assert_eq!(quote("two\nlines\u{7}"), r#""two\nlines\u{7}""#);
    }

    #[test]
    fn slugs_keep_letters_and_digits() {
        assert_eq!(slug("support-bot"), "support-bot");
        assert_eq!(slug("Deploy Prod (eu)"), "deploy-prod-eu");
        assert_eq!(slug("--x__y--"), "x-y");
        assert_eq!(slug("\"\\"), "principal");
        assert_eq!(slug(&"a".repeat(100)).len(), 48);
    }
}
