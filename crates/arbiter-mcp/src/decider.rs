//! Where a call is decided: in this process, through the [`DecisionService`] that
//! `arbiter serve` uses (the decision log in the data directory), or by a running
//! `arbiter serve` asked over HTTP (`--pdp URL`), which decides, records and revokes as it
//! does for any other enforcement point.
//!
//! A remote decision point that does not answer in time, answers with an error, or
//! refuses the proxy's PEP token decides nothing: the call is refused (fail closed), and
//! nothing in the configuration can make it pass instead. A tool can only shorten the
//! wait (`[mcp.tools.<name>] pdp_timeout_ms`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arbiter_core::{Decision, Engine, Pack};
use arbiter_service::{DecisionService, ServiceError};
use arbiter_store::{McpCall, Refusal};
use serde_json::Value;

/// The wait for a remote decision by default.
pub const DEFAULT_PDP_TIMEOUT: Duration = Duration::from_millis(250);

/// The largest answer read from a remote decision point: a decision is a few hundred
/// bytes; anything near this is not one.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What became of a request.
#[derive(Debug)]
pub enum Answer {
    /// Decided.
    Decided(Box<Decision>),
    /// Not a request the pack can decide (the schema refuses it): recorded as invalid.
    Invalid(Refusal),
    /// Nothing decided it: the decision log is down, or the decision point did not
    /// answer. The call is refused.
    Unavailable(String),
}

/// The pack calls are mapped with, and the engine that decides them here, taken once per
/// call so that a reload between mapping and deciding cannot mix two packs.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The pack whose `[mcp]` maps the call.
    pub pack: Arc<Pack>,
    engine: Option<Arc<Engine>>,
}

/// Where decisions are made.
#[derive(Debug, Clone)]
pub enum Decider {
    /// In this process, recorded in the local decision log.
    Local(Arc<DecisionService>),
    /// By a running `arbiter serve`.
    Remote(Arc<Remote>),
}

impl Decider {
    /// The pack and engine in force now.
    pub fn snapshot(&self) -> Snapshot {
        match self {
            Decider::Local(service) => {
                let engine = service.engine();
                Snapshot {
                    pack: Arc::clone(engine.pack()),
                    engine: Some(engine),
                }
            }
            Decider::Remote(remote) => Snapshot {
                pack: Arc::clone(&remote.pack),
                engine: None,
            },
        }
    }

    /// Decides `body` for `call`. `timeout` is the tool's own limit on a remote decision,
    /// if it has one.
    pub async fn decide(
        &self,
        snapshot: &Snapshot,
        body: Value,
        call: McpCall,
        timeout: Option<Duration>,
    ) -> Answer {
        match self {
            Decider::Local(service) => {
                let engine = snapshot.engine.clone().unwrap_or_else(|| service.engine());
                match service.decide_mcp(&engine, body, call).await {
                    Ok(Ok(decision)) => Answer::Decided(Box::new(decision)),
                    Ok(Err(error)) => Answer::Invalid(Refusal::from(&error)),
                    Err(ServiceError::LogUnavailable(e)) => Answer::Unavailable(format!(
                        "the decision log cannot accept records ({e}), so nothing was decided"
                    )),
                }
            }
            Decider::Remote(remote) => remote.decide(body, call, timeout).await,
        }
    }

    /// Records a call that could not be made a request. A remote decision point records
    /// only what it decides, so there the refusal goes to the proxy's own log.
    pub async fn refuse(&self, refusal: Refusal, call: McpCall) -> Result<(), String> {
        match self {
            Decider::Local(service) => service
                .refuse_mcp(refusal, call)
                .await
                .map_err(|e| e.to_string()),
            Decider::Remote(_) => {
                tracing::warn!(
                    code = %refusal.code,
                    why = %refusal.message,
                    method = %call.method,
                    tool = call.tool.as_deref().unwrap_or_default(),
                    "refused a call that could not be made a decision request"
                );
                Ok(())
            }
        }
    }
}

/// A running `arbiter serve` that decides for the proxy.
#[derive(Debug)]
pub struct Remote {
    client: reqwest::Client,
    decide_url: reqwest::Url,
    pep_token: Option<String>,
    timeout: Duration,
    pack: Arc<Pack>,
    /// Whether the proxy has said that the server's pack is not the local one.
    warned_version: AtomicBool,
}

/// Why a remote decision point cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL is not an http(s) URL.
    #[error("--pdp `{0}` is not an http:// or https:// URL of a running `arbiter serve`")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Remote {
    /// A decision point at `url` (the server's base URL, `http://127.0.0.1:8700`), asked
    /// with `pep_token` in `Authorization: Bearer`, waiting at most `timeout`; `pack` maps
    /// the calls (its `[mcp]`) and hides tools from lists.
    pub fn new(
        url: &str,
        pep_token: Option<String>,
        timeout: Duration,
        pack: Arc<Pack>,
    ) -> Result<Remote, RemoteError> {
        let base = reqwest::Url::parse(url).map_err(|_| RemoteError::Url(url.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(RemoteError::Url(url.to_owned()));
        }
        let decide_url = base
            .join("v1/decide")
            .map_err(|_| RemoteError::Url(url.to_owned()))?;
        // The whole exchange is bounded by `decide`'s own timeout.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Remote {
            client,
            decide_url,
            pep_token,
            timeout,
            pack,
            warned_version: AtomicBool::new(false),
        })
    }

    async fn decide(&self, mut body: Value, call: McpCall, timeout: Option<Duration>) -> Answer {
        let limit = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        if let Some(object) = body.as_object_mut() {
            match serde_json::to_value(&call) {
                Ok(call) => {
                    object.insert("mcp".to_owned(), call);
                }
                Err(e) => return Answer::Unavailable(format!("cannot describe the call: {e}")),
            }
        }
        let mut request = self.client.post(self.decide_url.clone()).json(&body);
        if let Some(token) = &self.pep_token {
            request = request.bearer_auth(token);
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let bytes = read_bounded(response).await?;
            Ok::<_, reqwest::Error>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(limit, exchange).await {
            Err(_) => {
                return Answer::Unavailable(format!(
                    "the decision point did not answer within {} ms",
                    limit.as_millis()
                ));
            }
            Ok(Err(e)) => {
                return Answer::Unavailable(format!("the decision point could not be asked: {e}"));
            }
            Ok(Ok((_, None))) => {
                return Answer::Unavailable(
                    "the decision point's answer is larger than any decision".to_owned(),
                );
            }
            Ok(Ok((status, Some(bytes)))) => (status, bytes),
        };
        match status.as_u16() {
            200 => match serde_json::from_slice::<Decision>(&bytes) {
                Ok(decision) => {
                    self.check_version(&decision);
                    Answer::Decided(Box::new(decision))
                }
                Err(e) => Answer::Unavailable(format!(
                    "the decision point's answer is not a decision ({e})"
                )),
            },
            // The request itself was refused: not a request this pack can decide.
            400 | 422 => match api_error(&bytes) {
                Some(refusal) => Answer::Invalid(refusal),
                None => Answer::Unavailable(format!(
                    "the decision point answered {status} without saying why"
                )),
            },
            401 | 403 => Answer::Unavailable(format!(
                "the decision point refused the proxy ({status}): check --pep-token against its \
                 [server] pep_tokens"
            )),
            _ => Answer::Unavailable(match api_error(&bytes) {
                Some(refusal) => format!(
                    "the decision point answered {status}: {}: {}",
                    refusal.code, refusal.message
                ),
                None => format!("the decision point answered {status}"),
            }),
        }
    }

    /// Says once that the server decides under another pack than the one mapping calls.
    fn check_version(&self, decision: &Decision) {
        if decision.policy_version != self.pack.version()
            && !self.warned_version.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                local = %self.pack.version(),
                remote = %decision.policy_version,
                "the decision point runs another pack than --pack: calls are mapped with the \
                 local `[mcp]` and decided with the server's policies"
            );
        }
    }
}

/// The body, or `None` when it is larger than [`MAX_ANSWER_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// `{"error": {"code", "message"}}`, arbiter's error body, as a refusal.
fn api_error(bytes: &[u8]) -> Option<Refusal> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let error = value.get("error")?;
    Some(Refusal {
        code: error.get("code")?.as_str()?.to_owned(),
        message: error.get("message")?.as_str()?.to_owned(),
    })
}
