//! Finding 12 of the hostile-input probe: a failed decision-log write showed in metrics
//! and `/readyz` but nowhere an operator reads first. The writer reports it to the
//! process's log (stderr), rate-limited, and says when it recovers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_store::{Durability, LogWriter, Store};
use common::{eventually, record};
use rusqlite::Connection;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_failed_log_write_is_reported_on_the_process_log_once_and_its_recovery_too() {
    let captured = Captured::default();
    let sink = captured.clone();
    // The writer runs on a thread of its own: the subscriber must be the global one.
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Batched, 16).unwrap();
    let admin = Connection::open(store.db_path()).unwrap();
    admin.busy_timeout(Duration::from_secs(30)).unwrap();
    admin
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON log_ids \
             BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END;",
        )
        .unwrap();
    writer.append(record(1)).await.unwrap();
    eventually("several retries fail", || writer.write_errors() >= 3).await;
    let logged = captured.text();
    assert!(
        logged.contains("the decision log cannot write") && logged.contains("the disk is on fire"),
        "{logged}"
    );
    // Rate-limited: three failures within the first seconds give one line.
    assert_eq!(
        logged.matches("the decision log cannot write").count(),
        1,
        "{logged}"
    );

    admin.execute_batch("DROP TRIGGER refuse").unwrap();
    eventually("the retry succeeds", || writer.is_healthy()).await;
    eventually("the recovery is reported", || {
        captured.text().contains("the decision log writes again")
    })
    .await;
    writer.shutdown().await.unwrap();
}
