//! arbiter's HTTP decision service (DESIGN §5): the routes, who may call them, metrics,
//! the decision log, reload and shutdown.
//!
//! The lifecycle is in [`serve`]: the app starts (pack, store, log writer), the router
//! answers until the shutdown future resolves, in-flight requests finish, then the
//! decision log drains. Reload ([`App::reload`]) swaps the pack atomically.
//!
//! - [`app`]: state and handlers.
//! - [`auth`]: admin and PEP tokens.
//! - [`error`]: the one error → response mapping.
//! - [`identity`]: signing keys, minting, token exchange, revocations.
//! - [`lifecycle`]: findings, reviews, readiness, and the frozen baseline.
//! - [`metrics`]: the Prometheus registry.
//! - [`watch`]: reload when the pack's files change.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod error;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

pub use app::{App, Options, StartError};
pub use arbiter_store::Durability;

/// Serves `app` on `listener` until `shutdown` resolves, then drains the decision log.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app.router();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    app.shutdown().await;
    served
}
