//! `arbiter.toml`: the pack's settings. Unknown keys are errors, so a typo never silently
//! turns a control off.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::period::Period;
use crate::rule::{Mode, OnError};

/// The whole of `arbiter.toml`. Every section is optional; absent sections take the
/// defaults DESIGN §2 gives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[defaults]`.
    #[serde(default)]
    pub defaults: Defaults,
    /// `[default_deny]`.
    #[serde(default)]
    pub default_deny: DefaultDeny,
    /// `[credentials]`.
    #[serde(default)]
    pub credentials: Credentials,
    /// `[[issuers]]`.
    #[serde(default)]
    pub issuers: Vec<Issuer>,
    /// `[intents.<name>]`.
    #[serde(default)]
    pub intents: BTreeMap<String, Intent>,
    /// `[chains.<name>]`.
    #[serde(default)]
    pub chains: BTreeMap<String, Chain>,
    /// `[readiness]`.
    #[serde(default)]
    pub readiness: Readiness,
    /// `[log]`.
    #[serde(default)]
    pub log: Log,
    /// `[server]`.
    #[serde(default)]
    pub server: Server,
    /// `[requests]`.
    #[serde(default)]
    pub requests: Requests,
    /// `[frameworks.<name>]`: a pack's own framework for `@maps`.
    #[serde(default)]
    pub frameworks: BTreeMap<String, Framework>,
}

/// `[defaults]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The mode of a forbid without `@mode`.
    #[serde(default = "audit")]
    pub mode: Mode,
    /// What an evaluation error means for a forbid without `@on_error`.
    #[serde(default = "fail_closed")]
    pub on_error: OnError,
    /// A pack with no policy at all is an error (a deleted or emptied `policies/` would
    /// otherwise load, and reload, as a pack that permits and forbids nothing) unless this
    /// says it is meant: every request then falls to the default-deny scope.
    #[serde(default)]
    pub allow_no_policies: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            on_error: OnError::Deny,
            allow_no_policies: false,
        }
    }
}

fn audit() -> Mode {
    Mode::Audit
}

fn fail_closed() -> OnError {
    OnError::Deny
}

/// `[default_deny]`: the mode of the scope that decides when no permit matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDeny {
    /// The mode for principal types not listed.
    #[serde(default = "audit")]
    pub mode: Mode,
    /// Per principal type (Cedar type name, e.g. `Agent` or `Acme::Agent`).
    #[serde(default)]
    pub principal_types: BTreeMap<Spanned<String>, Mode>,
}

impl Default for DefaultDeny {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            principal_types: BTreeMap::new(),
        }
    }
}

impl DefaultDeny {
    /// The scope's mode for a principal type.
    pub fn mode_for(&self, principal_type: &str) -> Mode {
        self.principal_types
            .iter()
            .find(|(k, _)| k.get_ref() == principal_type)
            .map_or(self.mode, |(_, m)| *m)
    }
}

/// `[credentials]`: the short-lived tokens arbiter issues and verifies (DESIGN §3 step 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Principal types that must present a credential.
    #[serde(default)]
    pub required_for: Vec<Spanned<String>>,
    /// The longest TTL a credential may be issued with (default `1h`). Asking for more is
    /// an error, never a silent cap.
    #[serde(default = "hour")]
    pub max_ttl: Period,
    /// The `iss` of the tokens arbiter issues, and the only `iss` it accepts for them
    /// (default `arbiter`).
    #[serde(default = "arbiter_name")]
    pub issuer: String,
    /// The `aud` arbiter's tokens carry by default, and that verification requires
    /// (default `arbiter`).
    #[serde(default = "arbiter_name")]
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default `30s`, at most `5m`).
    #[serde(default = "thirty_seconds")]
    pub leeway: Period,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            required_for: Vec::new(),
            max_ttl: hour(),
            issuer: arbiter_name(),
            audience: arbiter_name(),
            leeway: thirty_seconds(),
        }
    }
}

fn hour() -> Period {
    Period::hours(1)
}

fn arbiter_name() -> String {
    "arbiter".to_owned()
}

fn thirty_seconds() -> Period {
    Period::seconds_of(30)
}

/// The signature algorithms arbiter accepts at all. `none` and every HMAC algorithm are
/// never accepted: a verifier holding only public keys must not be tricked into using one
/// as a shared secret.
pub const ALGORITHMS: &[&str] = &["EdDSA", "ES256", "RS256"];

/// `[[issuers]]`: an upstream issuer whose tokens `POST /v1/token` exchanges for a
/// short-lived arbiter token (a CI job's OIDC token, a Kubernetes service-account token,
/// a SPIFFE JWT-SVID).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// A name for logs, and `context.credential.issuer` of the tokens exchanged from it.
    pub name: Spanned<String>,
    /// Defaults for a well-known kind of issuer.
    pub preset: Option<Preset>,
    /// The `iss` its tokens carry (the preset's when absent, if it has one).
    pub issuer: Option<Spanned<String>>,
    /// The `aud` its tokens must carry: what the workload asked its issuer for.
    pub audience: Spanned<String>,
    /// Its public keys, a JWKS file relative to the pack directory.
    pub jwks_file: Option<Spanned<String>>,
    /// Its public keys, fetched from this URL and cached.
    pub jwks_url: Option<Spanned<String>>,
    /// How long fetched keys are kept before they are fetched again (default `1h`).
    #[serde(default = "hour")]
    pub jwks_refresh: Period,
    /// Accepted algorithms, a subset of [`ALGORITHMS`] (the preset's when absent).
    pub algorithms: Option<Vec<Spanned<String>>>,
    /// The Cedar principal a token maps to: `Type::"…"` where `{claim}` stands for a
    /// claim's value, e.g. `CiJob::"{repository}"`.
    pub principal: Spanned<String>,
    /// Principal attributes copied from claims: attribute name → claim name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Claims that must have exactly these values (e.g. `repository_owner = "acme"`).
    #[serde(default)]
    pub require: BTreeMap<String, String>,
    /// The intents its workloads may ask for (any intent of the pack when absent).
    pub intents: Option<Vec<Spanned<String>>>,
}

impl Issuer {
    /// The `iss` its tokens must carry.
    pub fn iss(&self) -> Option<&str> {
        self.issuer
            .as_ref()
            .map(|i| i.get_ref().as_str())
            .or_else(|| self.preset.and_then(Preset::default_issuer))
    }

    /// The algorithms its tokens may be signed with.
    pub fn algorithms(&self) -> Vec<&str> {
        match &self.algorithms {
            Some(list) => list.iter().map(|a| a.get_ref().as_str()).collect(),
            None => self
                .preset
                .map_or(ALGORITHMS, Preset::default_algorithms)
                .to_vec(),
        }
    }
}

/// Well-known upstream issuers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// GitHub Actions OIDC tokens: claims `repository`, `repository_owner`, `ref`,
    /// `workflow`, `job_workflow_ref`, `environment`, …
    GithubActions,
    /// Kubernetes projected service-account tokens: `sub` is
    /// `system:serviceaccount:NS:NAME`, offered as the claims `namespace` and
    /// `serviceaccount`.
    Kubernetes,
    /// SPIFFE JWT-SVIDs: `sub` is `spiffe://TRUST-DOMAIN/PATH`, offered as the claims
    /// `trust_domain` and `path`.
    Spiffe,
}

impl Preset {
    /// The `iss` every issuer of this kind uses, if there is one.
    pub fn default_issuer(self) -> Option<&'static str> {
        match self {
            Preset::GithubActions => Some("https://token.actions.githubusercontent.com"),
            Preset::Kubernetes | Preset::Spiffe => None,
        }
    }

    /// The algorithms issuers of this kind sign with.
    pub fn default_algorithms(self) -> &'static [&'static str] {
        match self {
            Preset::GithubActions => &["RS256"],
            Preset::Kubernetes => &["RS256", "ES256"],
            Preset::Spiffe => &["RS256", "ES256", "EdDSA"],
        }
    }

    /// The claims the preset derives from `sub`, usable in `principal`, `attributes`
    /// and `require` like any claim.
    pub fn derived_claims(self) -> &'static [&'static str] {
        match self {
            Preset::GithubActions => &[],
            Preset::Kubernetes => &["namespace", "serviceaccount"],
            Preset::Spiffe => &["trust_domain", "path"],
        }
    }
}

/// `[intents.<name>]`: a task intent a credential can carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Actions or action groups (bare ids) the intent covers.
    pub actions: Vec<Spanned<String>>,
    /// The longest TTL of a credential carrying this intent.
    pub max_ttl: Option<Period>,
}

/// `[chains.<name>]`: steps (actions or groups) that lead to the same asset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// The steps, in order.
    pub steps: Vec<Spanned<String>>,
}

/// `[readiness]`: when evidence says a rule is ready to enforce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// Days in audit at least.
    #[serde(default = "fourteen")]
    pub min_days: u32,
    /// Evidence must span at least one full cycle of traffic.
    #[serde(default = "week")]
    pub cycle: Period,
    /// Past this many days in audit a rule is overdue.
    #[serde(default = "sixty")]
    pub max_audit_days: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            min_days: fourteen(),
            cycle: week(),
            max_audit_days: sixty(),
        }
    }
}

fn fourteen() -> u32 {
    14
}

fn sixty() -> u32 {
    60
}

fn week() -> Period {
    Period::days(7)
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// Paths (`context.args.password`) whose values are replaced by a keyed hash.
    #[serde(default)]
    pub mask: Vec<Spanned<String>>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `sha256:<hex>` hashes of the tokens PEPs present on decision endpoints.
    #[serde(default)]
    pub pep_tokens: Vec<Spanned<String>>,
}

/// `[requests]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    /// Entity types a request may describe in `entities`.
    #[serde(default)]
    pub entity_types: Vec<Spanned<String>>,
}

/// `[frameworks.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    /// Control id → title.
    pub controls: BTreeMap<String, String>,
}

/// A parsed `[[issuers]] principal`: `Type::"id"` where the id may hold `{claim}`
/// placeholders. Rendering never parses a claim's value as Cedar, so a claim cannot
/// inject another type or escape its quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalTemplate {
    type_name: cedar_policy::EntityTypeName,
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Claim(String),
}

impl PrincipalTemplate {
    /// Parses `Type::"literal{claim}literal"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ty, rest) = text.split_once("::\"").ok_or_else(|| {
            format!("`{text}` is not `Type::\"…\"` (e.g. `CiJob::\"{{repository}}\"`)")
        })?;
        let type_name = ty
            .parse::<cedar_policy::EntityTypeName>()
            .map_err(|e| format!("`{ty}` is not an entity type name: {e}"))?;
        let id = rest
            .strip_suffix('"')
            .ok_or_else(|| format!("`{text}`: the id must end with `\"`"))?;
        let mut parts = Vec::new();
        let mut chars = id.chars().peekable();
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(n) if n.is_ascii_alphanumeric() || n == '_' || n == '.' => {
                                name.push(n);
                            }
                            Some(n) => {
                                return Err(format!(
                                    "`{text}`: `{n}` cannot be part of a claim name"
                                ));
                            }
                            None => return Err(format!("`{text}`: `{{` is never closed")),
                        }
                    }
                    if name.is_empty() {
                        return Err(format!("`{text}`: `{{}}` names no claim"));
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Claim(name));
                }
                '}' | '"' | '\\' => {
                    return Err(format!("`{text}`: `{c}` cannot appear in the id"));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Text(literal));
        }
        if !parts.iter().any(|p| matches!(p, TemplatePart::Claim(_))) {
            return Err(format!(
                "`{text}` uses no claim, so every token would map to the same principal"
            ));
        }
        Ok(Self { type_name, parts })
    }

    /// The entity type every principal of this template has.
    pub fn type_name(&self) -> &cedar_policy::EntityTypeName {
        &self.type_name
    }

    /// The claims the template reads.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Claim(c) => Some(c.as_str()),
            TemplatePart::Text(_) => None,
        })
    }

    /// The principal for these claims; `Err` names a claim that is missing or empty.
    pub fn render<'c>(
        &self,
        claim: impl Fn(&str) -> Option<&'c str>,
    ) -> Result<cedar_policy::EntityUid, String> {
        let mut id = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => id.push_str(t),
                TemplatePart::Claim(name) => match claim(name) {
                    Some(v) if !v.is_empty() => id.push_str(v),
                    _ => return Err(format!("the token has no claim `{name}`")),
                },
            }
        }
        Ok(cedar_policy::EntityUid::from_type_name_and_id(
            self.type_name.clone(),
            cedar_policy::EntityId::new(id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::PrincipalTemplate;

    #[test]
    fn template_renders_claims_without_parsing_them() {
        let t = PrincipalTemplate::parse(r#"CiJob::"gh:{repository}@{ref}""#).unwrap();
        let uid = t
            .render(|c| match c {
                "repository" => Some(r#"acme/x"::evil"#),
                "ref" => Some("refs/heads/main"),
                _ => None,
            })
            .unwrap();
        assert_eq!(uid.type_name().to_string(), "CiJob");
        assert_eq!(uid.id().unescaped(), r#"gh:acme/x"::evil@refs/heads/main"#);
        assert_eq!(
            t.render(|_| None).unwrap_err(),
            "the token has no claim `repository`"
        );
    }

    #[test]
    fn template_errors() {
        for bad in [
            "CiJob",
            r#"CiJob::"fixed""#,
            r#"CiJob::"{repo""#,
            r#"CiJob::"{}""#,
            r#"CiJob::"{a b}""#,
            r#"Ci Job::"{a}""#,
            r#"CiJob::"{a}"#,
        ] {
            assert!(PrincipalTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
