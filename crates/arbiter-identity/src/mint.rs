//! Minting: a short-lived token for a principal, within the pack's `[credentials]` and
//! `[intents]` limits. Asking for more than a limit allows is an error, never a silent cap.

use std::collections::BTreeMap;
use std::time::Duration;

use arbiter_core::config::{Credentials, Intent};
use arbiter_core::period::Period;
use cedar_policy::EntityUid;
use jiff::Timestamp;
use rand::RngExt as _;
use serde::Serialize;
use ulid::Ulid;

use crate::keyring::Keyring;

/// What a token is asked for.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// The principal it names (`sub`).
    pub principal: EntityUid,
    /// How long it lives, in whole seconds (a fraction of a second is dropped).
    pub ttl: Duration,
    /// The task intent it carries, an `[intents]` entry.
    pub intent: Option<String>,
    /// The session it binds requests to.
    pub session: Option<String>,
    /// Its `aud`; `[credentials] audience` when absent.
    pub audience: Option<String>,
    /// Principal attributes it vouches for (`attrs`).
    pub attributes: BTreeMap<String, String>,
    /// The `[[issuers]]` name it was exchanged from (`via`).
    pub via: Option<String>,
}

/// A minted token.
#[derive(Debug, Clone, Serialize)]
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// Its id, for revocation.
    pub jti: String,
    /// When it expires.
    pub expires_at: Timestamp,
}

/// Why no token was minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The TTL is shorter than a second.
    #[error("ttl must be at least 1s")]
    ZeroTtl,
    /// The TTL is longer than `[credentials] max_ttl`.
    #[error("ttl {ttl} is longer than [credentials] max_ttl {max}")]
    LongerThanMaxTtl {
        /// The TTL asked for.
        ttl: Period,
        /// The limit.
        max: Period,
    },
    /// The intent is not an `[intents]` entry.
    #[error("intent `{intent}` is not an [intents] entry (known: {known})")]
    UnknownIntent {
        /// The intent asked for.
        intent: String,
        /// The pack's intents, comma-separated (or `none`).
        known: String,
    },
    /// The TTL is longer than the intent's `max_ttl`.
    #[error("ttl {ttl} is longer than [intents.{intent}] max_ttl {max}")]
    LongerThanIntentTtl {
        /// The TTL asked for.
        ttl: Period,
        /// The intent.
        intent: String,
        /// Its limit.
        max: Period,
    },
    /// A field that must be absent or non-empty is the empty string.
    #[error("`{0}` is empty: leave it out or give a value")]
    Empty(&'static str),
    /// `now + ttl` is past the last time a token can carry.
    #[error("ttl {ttl} from {now} ends past the last representable time")]
    OutOfRange {
        /// The TTL asked for.
        ttl: Period,
        /// The time of minting.
        now: Timestamp,
    },
}

/// The claims of an arbiter token.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attrs: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'a str>,
}

/// Mints a token for `request` at `now`, signed by the keyring's active key.
pub fn mint(
    keyring: &Keyring,
    credentials: &Credentials,
    intents: &BTreeMap<String, Intent>,
    request: &MintRequest,
    now: Timestamp,
) -> Result<Minted, MintError> {
    let seconds = request.ttl.as_secs();
    if seconds == 0 {
        return Err(MintError::ZeroTtl);
    }
    let ttl = Period::seconds_of(seconds);
    if ttl > credentials.max_ttl {
        return Err(MintError::LongerThanMaxTtl {
            ttl,
            max: credentials.max_ttl,
        });
    }
    for (field, value) in [
        ("intent", &request.intent),
        ("session", &request.session),
        ("audience", &request.audience),
        ("via", &request.via),
    ] {
        if value.as_deref() == Some("") {
            return Err(MintError::Empty(field));
        }
    }
    if let Some(name) = &request.intent {
        let intent = intents.get(name).ok_or_else(|| MintError::UnknownIntent {
            intent: name.clone(),
            known: if intents.is_empty() {
                "none".to_owned()
            } else {
                intents.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?;
        if let Some(max) = intent.max_ttl
            && ttl > max
        {
            return Err(MintError::LongerThanIntentTtl {
                ttl,
                intent: name.clone(),
                max,
            });
        }
    }
    let iat = now.as_second();
    let exp = i64::try_from(seconds)
        .ok()
        .and_then(|s| iat.checked_add(s))
        .and_then(|e| Timestamp::from_second(e).ok())
        .ok_or(MintError::OutOfRange { ttl, now })?;
    let jti = Ulid::from_parts(
        u64::try_from(now.as_millisecond()).unwrap_or(0),
        rand::rng().random(),
    )
    .to_string();
    let claims = Claims {
        iss: &credentials.issuer,
        sub: request.principal.to_string(),
        aud: request.audience.as_deref().unwrap_or(&credentials.audience),
        iat,
        nbf: iat,
        exp: exp.as_second(),
        jti: &jti,
        intent: request.intent.as_deref(),
        session: request.session.as_deref(),
        attrs: &request.attributes,
        via: request.via.as_deref(),
    };
    Ok(Minted {
        token: keyring.sign(&claims),
        jti,
        expires_at: exp,
    })
}
