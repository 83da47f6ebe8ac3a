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
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            on_error: OnError::Deny,
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

/// `[credentials]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Principal types that must present a credential.
    #[serde(default)]
    pub required_for: Vec<Spanned<String>>,
    /// The longest TTL a credential may be issued with.
    pub max_ttl: Option<Period>,
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
