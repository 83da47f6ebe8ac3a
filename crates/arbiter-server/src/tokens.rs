//! The tokens this server mints and verifies (DESIGN §3 step 2): its signing keys, what
//! is revoked, the upstream issuers of the pack in force, and the background work that
//! keeps every server's view current: revocations and key rotations written by another
//! process (the CLI, a second server) and upstream JWKS fetched from URLs. The routes
//! that use them are in `routes/tokens.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::Pack;
use arbiter_core::clock::Clock;
use arbiter_core::period::Period;
use arbiter_identity::{Keyring, MintRequest, Minted, Revocations, Upstream, Verifier};
use arbiter_service::RevocationFeed;
use arbiter_store::{Revocation, Store};
use arc_swap::ArcSwap;
use jiff::Timestamp;

use crate::error::ApiError;

/// How often the server looks for revocations and key rotations made elsewhere, and for
/// upstream key sets due for a fetch.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// The largest upstream JWKS document fetched.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The server's token state: its signing keys, what is revoked, and the upstream issuers
/// of the pack in force.
#[derive(Debug)]
pub struct Tokens {
    data: PathBuf,
    store: Store,
    clock: Arc<dyn Clock>,
    keyring: ArcSwap<Keyring>,
    revocations: Arc<Revocations>,
    verifier: ArcSwap<Verifier>,
    upstream: ArcSwap<Upstream>,
    /// The store's revocations, followed.
    feed: RevocationFeed,
    http: reqwest::Client,
    /// Upstream key sets whose fetch failed: how often in a row, and when to try again
    /// (backing off to at most [`MAX_FETCH_BACKOFF`], so a dead URL is not hammered).
    failed_fetches: std::sync::Mutex<HashMap<String, (u32, Timestamp)>>,
}

/// The longest wait between two fetches of a failing JWKS URL.
const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(300);

/// The TTL of an exchanged token when the caller names none: short, and never more than
/// the pack allows.
const DEFAULT_EXCHANGE_TTL: Duration = Duration::from_secs(600);

/// What a token exchange asks for.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    /// The upstream token presented.
    pub subject_token: &'a str,
    /// The intent asked for.
    pub intent: Option<String>,
    /// The lifetime asked for; the pack's shortest limit when `None`.
    pub ttl: Option<Duration>,
    /// The session the token is bound to.
    pub session: Option<String>,
    /// The token's audience.
    pub audience: Option<String>,
}

/// A token minted by exchange.
#[derive(Debug)]
pub(crate) struct Exchanged {
    /// The token.
    pub minted: Minted,
    /// Whom it is for.
    pub principal: cedar_policy::EntityUid,
    /// How long it lives.
    pub ttl: Duration,
}

/// Why the token state could not be started or reconfigured.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The signing keys could not be read or created.
    #[error("{0}")]
    Keys(#[from] arbiter_identity::IdentityError),
    /// The revocations could not be read.
    #[error("{0}")]
    Store(#[from] arbiter_store::StoreError),
    /// The pack's `[[issuers]]` cannot be used.
    #[error("{0}")]
    Issuers(#[from] arbiter_identity::UpstreamError),
    /// The HTTP client for JWKS fetches could not be built.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
}

impl Tokens {
    /// Loads (or creates) the signing keys, every revocation in the store, and the pack's
    /// upstream issuers.
    pub fn start(
        data: &Path,
        store: &Store,
        pack: &Pack,
        clock: Arc<dyn Clock>,
    ) -> Result<Tokens, TokensError> {
        let keyring = Keyring::load_or_create(data, clock.now())?;
        let revocations = Arc::new(Revocations::default());
        let feed = RevocationFeed::start(store, |r| revocations.apply(r))?;
        let upstream = Upstream::from_pack(pack)?;
        let tokens = Tokens {
            data: data.to_owned(),
            store: store.clone(),
            clock,
            verifier: ArcSwap::from_pointee(Verifier::new(
                keyring.clone(),
                &pack.config().credentials,
                Arc::clone(&revocations),
            )),
            keyring: ArcSwap::from_pointee(keyring),
            revocations,
            upstream: ArcSwap::from_pointee(upstream),
            feed,
            failed_fetches: std::sync::Mutex::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        Ok(tokens)
    }

    /// The verifier decisions use, for the engine.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.load_full()
    }

    /// A reloaded pack may change `[credentials]` and `[[issuers]]`: a new verifier (same
    /// keys, same revocations, an empty cache) and new upstream issuers. Fails, changing
    /// nothing, when the pack's issuers cannot be used.
    pub fn reconfigure(&self, pack: &Pack) -> Result<Arc<Verifier>, TokensError> {
        let upstream = Upstream::from_pack(pack)?;
        let verifier = Arc::new(Verifier::new(
            Keyring::clone(&self.keyring.load()),
            &pack.config().credentials,
            Arc::clone(&self.revocations),
        ));
        self.upstream.store(Arc::new(upstream));
        self.verifier.store(Arc::clone(&verifier));
        Ok(verifier)
    }

    /// One round of background work: new revocations, a rotated key, due JWKS fetches.
    pub async fn poll(&self) {
        self.feed.poll(|r| self.revocations.apply(r)).await;
        let data = self.data.clone();
        let now = self.clock.now();
        match tokio::task::spawn_blocking(move || Keyring::load_or_create(&data, now)).await {
            Ok(Ok(keyring)) if keyring.kids() != self.keyring.load().kids() => {
                tracing::info!(
                    active = keyring.active_kid(),
                    "signing keys changed on disk"
                );
                self.verifier.load().set_keyring(keyring.clone());
                self.keyring.store(Arc::new(keyring));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "reading the signing keys"),
            Err(e) => tracing::error!(error = %e, "reading the signing keys"),
        }
        let upstream = self.upstream.load_full();
        let now = self.clock.now();
        for (name, url) in upstream.due_for_fetch(now) {
            let waiting = self
                .failed_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .is_some_and(|(_, next)| *next > now);
            if waiting {
                continue;
            }
            let fetched = match self.fetch_jwks(&url).await {
                Ok(text) => upstream
                    .set_jwks(&name, &text, self.clock.now())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let mut failed = self
                .failed_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match fetched {
                Ok(()) => {
                    failed.remove(&name);
                }
                Err(e) => {
                    let count = failed.get(&name).map_or(1, |(n, _)| n.saturating_add(1));
                    let wait = Duration::from_secs(1u64 << count.min(9)).min(MAX_FETCH_BACKOFF);
                    let next = now.checked_add(wait).unwrap_or(now);
                    tracing::error!(issuer = %name, %url, error = %e, failures = count,
                        retry_in_s = wait.as_secs(), "fetching the issuer's JWKS");
                    failed.insert(name, (count, next));
                }
            }
        }
    }

    async fn fetch_jwks(&self, url: &str) -> Result<String, String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        String::from_utf8(body).map_err(|_| "not UTF-8".to_owned())
    }

    /// Commits a revocation, then applies it here (other servers see it on their next
    /// poll).
    pub(crate) async fn revoke(&self, record: Revocation) -> Result<Revocation, ApiError> {
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.revoke(&record)).await??;
        self.revocations.apply(&stored.revoked());
        Ok(stored)
    }

    /// A token exchange (RFC 8693): the subject token verified against the pack's
    /// issuers, the intent checked against what its issuer may ask for, and a token minted
    /// for the principal it maps to, for the TTL asked or the shortest the pack allows.
    pub(crate) fn exchange(
        &self,
        pack: &Pack,
        asked: Exchange<'_>,
        now: Timestamp,
    ) -> Result<Exchanged, ApiError> {
        let upstream = self.upstream().exchange(asked.subject_token, now)?;
        if let (Some(intent), Some(allowed)) = (&asked.intent, &upstream.allowed_intents)
            && !allowed.contains(intent)
        {
            return Err(ApiError::InvalidScope(format!(
                "issuer `{}` may not ask for intent `{intent}` (allowed: {})",
                upstream.issuer,
                allowed.join(", ")
            )));
        }
        let ttl = asked.ttl.unwrap_or_else(|| {
            let intent_max = asked
                .intent
                .as_ref()
                .and_then(|i| pack.config().intents.get(i))
                .and_then(|i| i.max_ttl);
            [Some(pack.config().credentials.max_ttl), intent_max]
                .into_iter()
                .flatten()
                .map(Period::duration)
                .fold(DEFAULT_EXCHANGE_TTL, Duration::min)
        });
        let request = MintRequest {
            principal: upstream.principal.clone(),
            ttl,
            intent: asked.intent,
            session: asked.session,
            audience: asked.audience,
            attributes: upstream.attributes,
            via: Some(upstream.issuer.clone()),
        };
        let minted = self.mint(pack, &request, now)?;
        tracing::info!(issuer = %upstream.issuer, principal = %request.principal,
            jti = %minted.jti, "token exchanged");
        Ok(Exchanged {
            minted,
            principal: request.principal,
            ttl,
        })
    }

    /// A token for `request`, within the pack's `[credentials]` and `[intents]` limits.
    pub(crate) fn mint(
        &self,
        pack: &Pack,
        request: &MintRequest,
        now: Timestamp,
    ) -> Result<Minted, ApiError> {
        Ok(arbiter_identity::mint(
            &self.keyring(),
            &pack.config().credentials,
            &pack.config().intents,
            request,
            now,
        )?)
    }

    /// Every revocation, oldest first.
    pub(crate) async fn all_revocations(&self) -> Result<Vec<Revocation>, ApiError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.revocations_since(0)).await??)
    }

    /// The signing keys.
    pub(crate) fn keyring(&self) -> Arc<Keyring> {
        self.keyring.load_full()
    }

    /// The upstream issuers of the pack in force.
    pub(crate) fn upstream(&self) -> Arc<Upstream> {
        self.upstream.load_full()
    }
}
