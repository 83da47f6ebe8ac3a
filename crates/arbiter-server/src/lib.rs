//! arbiter's HTTP face (DESIGN §5): the routes, who may call them, metrics, reload and
//! shutdown.
//!
//! The server's life is in [`serve`] and [`state`]: the app starts (pack, store, log
//! writer), the router answers until the shutdown future resolves, in-flight requests
//! finish, then the decision log drains. Reload ([`App::reload`]) swaps the pack
//! atomically.
//!
//! - [`state`]: the app's state and its life: start, reload, shutdown.
//! - [`routes`]: the handlers, by concern (decisions, admin, tokens, lifecycle).
//! - [`tokens`]: signing keys, revocations, upstream issuers, and their polling.
//! - [`auth`]: admin and PEP tokens.
//! - [`error`]: the one error → response mapping.
//! - [`metrics`]: the Prometheus registry (the decision service's observer).
//! - [`ui`]: the dashboard at `/ui`: sign-in, the evidence, reviews, promotion.
//! - [`watch`]: reload when the pack's files change.
//!
//! Deciding is not here: the handlers call [`arbiter_service::DecisionService`], the one
//! decision path every caller shares.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod state;
pub mod tokens;
pub mod ui;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

pub use arbiter_store::Durability;
pub use state::{App, CandidateError, Forced, Options, ReloadError, StartError};

/// Files the process keeps for itself beyond its connections: the store, its WAL, the
/// listener, keys, the pack on reload.
const FILES_KEPT_BACK: u64 = 64;

/// The connection limit: what was asked, but below the process's soft file limit, so a
/// flood of connections can never leave the server unable to open its own files.
pub fn connection_limit(asked: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let room = soft.map_or(usize::MAX, |soft| {
        usize::try_from(soft.saturating_sub(FILES_KEPT_BACK).max(8)).unwrap_or(usize::MAX)
    });
    asked.clamp(1, room.max(1))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains the decision log.
///
/// The accept loop is arbiter's own rather than `axum::serve`'s, for two guards a server
/// facing untrusted clients needs: a header-read timeout (which also closes idle kept-alive
/// connections), so a client that opens a connection and sends nothing, or half a header,
/// is dropped; and a limit on connections held at once, below the file limit, so that many
/// such clients cannot exhaust the process's file descriptors.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let router = app.router();
    let options = app.options();
    let limit = connection_limit(options.max_connections);
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(options.header_read_timeout))
        .keep_alive_timeout(options.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tracing::info!(max_connections = limit, "accepting connections");
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of files or a connection reset before it was accepted: the listener
                // is still good; back off a little so an error does not spin the loop.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    // In-flight requests finish (each is bounded by the request timeout); idle
    // connections are closed at once.
    let grace = app.options().request_timeout * 2;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    app.shutdown().await;
    Ok(())
}
