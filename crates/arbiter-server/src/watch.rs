//! `serve --watch`: reload the pack when its files change. Events are debounced (an
//! editor's save is several events) and the reload is the same as `POST
//! /v1/policy/reload`: a broken pack is refused and the running one stays.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::App;

/// How long the pack must be quiet before a reload.
const QUIET: Duration = Duration::from_millis(250);

/// Watches the pack directory until the returned watcher is dropped.
pub fn watch(app: Arc<App>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&app.pack_dir(), RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait for the burst of events to end.
            while let Ok(Some(())) = tokio::time::timeout(QUIET, rx.recv()).await {}
            match app.reload().await {
                Ok(version) => tracing::info!(%version, "pack changed on disk: reloaded"),
                Err(problems) => {
                    tracing::warn!(%problems, "pack changed on disk: refused, the running pack stays");
                }
            }
        }
    });
    Ok(watcher)
}
