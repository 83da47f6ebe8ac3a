//! The log writer: back-pressure, drain on shutdown, and surviving failed writes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use arbiter_store::{DecisionQuery, Durability, LogError, LogWriter, Store, StoreError};
use common::{all_ids, eventually, ids_of, record};
use rusqlite::Connection;

const FAILURE: &str = "the disk is on fire";

/// A second connection to the database, as another process would have.
fn second_connection(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn
}

/// Makes every insert into the log fail until [`repair`].
fn break_inserts(conn: &Connection) {
    conn.execute_batch(&format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON log_ids BEGIN SELECT RAISE(ABORT, '{FAILURE}'); END;"
    ))
    .unwrap();
}

fn repair(conn: &Connection) {
    conn.execute_batch("DROP TRIGGER refuse").unwrap();
}

fn stored_ids(store: &Store) -> Vec<String> {
    all_ids(store, &DecisionQuery::default())
}

#[tokio::test]
async fn many_appends_through_a_queue_of_one_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Batched, 1).unwrap();

    let tasks: Vec<_> = (0..8_u64)
        .map(|task| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for n in (task * 250)..((task + 1) * 250) {
                    writer.append(record(n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    writer.shutdown().await.unwrap();

    let all: Vec<u64> = (0..2000).collect();
    assert_eq!(stored_ids(&store), ids_of(&all));
    assert_eq!(writer.write_errors(), 0);
    assert_eq!(writer.queue_depth(), 0);
}

#[tokio::test]
async fn append_waits_while_the_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Batched, 1).unwrap();
    // Another connection holds the write lock, so the writer cannot commit.
    let locker = second_connection(store.db_path());
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.append(record(n)).await })
        })
        .collect();
    eventually("all four appends under way", || writer.queue_depth() == 4).await;
    tokio::task::yield_now().await;

    // At most one record is queued and one in the stalled batch; the others wait.
    let waiting = tasks.iter().filter(|t| !t.is_finished()).count();
    assert!(waiting >= 2, "only {waiting} appends wait");

    locker.execute_batch("ROLLBACK").unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    writer.shutdown().await.unwrap();
    assert_eq!(stored_ids(&store), ids_of(&[0, 1, 2, 3]));
}

#[tokio::test]
async fn append_waits_while_the_queued_records_hold_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Room for 1,000 records, but for only 64 KiB of them.
    let writer = LogWriter::start_bounded(&store, Durability::Batched, 1000, 64 * 1024).unwrap();
    let locker = second_connection(store.db_path());
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    // Each record holds a 20 KiB request: at most three fit in the budget.
    let big = |n: u64| {
        let mut r = record(n);
        r.request = serde_json::json!({"context": {"blob": "x".repeat(20 * 1024)}});
        r
    };
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let writer = writer.clone();
            let r = big(n);
            tokio::spawn(async move { writer.append(r).await })
        })
        .collect();
    eventually("all eight appends under way", || writer.queue_depth() == 8).await;
    tokio::task::yield_now().await;
    let waiting = tasks.iter().filter(|t| !t.is_finished()).count();
    assert!(waiting >= 5, "only {waiting} appends wait");

    locker.execute_batch("ROLLBACK").unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    writer.shutdown().await.unwrap();
    assert_eq!(stored_ids(&store), ids_of(&[0, 1, 2, 3, 4, 5, 6, 7]));
}

#[tokio::test]
async fn a_record_larger_than_the_byte_budget_still_goes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start_bounded(&store, Durability::Sync, 16, 1024).unwrap();
    let mut r = record(1);
    r.request = serde_json::json!({"context": {"blob": "x".repeat(10 * 1024)}});
    writer.append(r).await.unwrap();
    writer.append(record(2)).await.unwrap();
    writer.shutdown().await.unwrap();
    assert_eq!(stored_ids(&store), ids_of(&[1, 2]));
}

#[tokio::test]
async fn a_cancelled_append_leaves_the_queue_depth_true() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Batched, 1).unwrap();
    let locker = second_connection(store.db_path());
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.append(record(n)).await })
        })
        .collect();
    eventually("all four appends under way", || writer.queue_depth() == 4).await;
    // The request behind each waiting append goes away.
    let mut accepted = 0;
    for task in tasks {
        task.abort();
        if let Ok(appended) = task.await {
            appended.unwrap();
            accepted += 1;
        }
    }
    assert!(accepted <= 2, "{accepted} appends were accepted");
    assert_eq!(writer.queue_depth(), accepted);

    locker.execute_batch("ROLLBACK").unwrap();
    writer.shutdown().await.unwrap();
    assert_eq!(writer.queue_depth(), 0);
    assert_eq!(stored_ids(&store).len(), accepted);
}

#[tokio::test]
async fn shutdown_writes_everything_queued_then_refuses_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Batched, 10_000).unwrap();
    for n in 0..3000 {
        writer.append(record(n)).await.unwrap();
    }
    writer.shutdown().await.unwrap();

    let all: Vec<u64> = (0..3000).collect();
    assert_eq!(stored_ids(&store), ids_of(&all));
    assert_eq!(writer.queue_depth(), 0);

    let err = writer.append(record(3000)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the decision log cannot accept records: it is shut down"
    );
    // A second shutdown has nothing left to do.
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_write_marks_the_writer_unhealthy_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Batched, 16).unwrap();
    let admin = second_connection(store.db_path());
    assert!(writer.is_healthy());

    break_inserts(&admin);
    writer.append(record(1)).await.unwrap();
    eventually("the write fails", || !writer.is_healthy()).await;
    assert!(writer.write_errors() >= 1);
    assert_eq!(writer.queue_depth(), 1);

    // While unhealthy, new records are refused at once, with the reason.
    let LogError::Unavailable(why) = writer.append(record(2)).await.unwrap_err();
    assert_eq!(why, format!("its last write failed ({FAILURE}); retrying"));

    repair(&admin);
    eventually("the retry succeeds", || writer.is_healthy()).await;
    assert_eq!(writer.queue_depth(), 0);
    writer.append(record(3)).await.unwrap();
    writer.shutdown().await.unwrap();

    assert_eq!(stored_ids(&store), ids_of(&[1, 3]));
}

#[tokio::test]
async fn a_sync_append_waits_through_a_failure_until_its_record_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Sync, 16).unwrap();
    let admin = second_connection(store.db_path());

    break_inserts(&admin);
    let append = tokio::spawn({
        let writer = writer.clone();
        async move { writer.append(record(1)).await }
    });
    eventually("the write fails", || !writer.is_healthy()).await;
    assert!(
        !append.is_finished(),
        "a sync append returned before its commit"
    );

    repair(&admin);
    append.await.unwrap().unwrap();
    assert!(writer.is_healthy());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(stored_ids(&reader), ids_of(&[1]));
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_a_database_that_keeps_failing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Sync, 16).unwrap();
    let admin = second_connection(store.db_path());

    break_inserts(&admin);
    let append = tokio::spawn({
        let writer = writer.clone();
        async move { writer.append(record(1)).await }
    });
    eventually("the write fails", || !writer.is_healthy()).await;

    let err = writer.shutdown().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unwritten { unwritten: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the decision log writer stopped with 1 record(s) not written to {}: {FAILURE}",
            store.db_path().display()
        )
    );
    let LogError::Unavailable(why) = append.await.unwrap().unwrap_err();
    assert_eq!(why, "it stopped before the record was committed");
}
