//! `arbiter log` reads the store while a server process writes it.
//!
//! The writing process is this test binary run again, with [`CHILD_DATA`] set, so that
//! only `writer_process` does anything in it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use arbiter_store::{DecisionQuery, Durability, LogWriter, Store};
use common::{all_ids, ids_of, record};

/// Set in the child: the data directory to write to.
const CHILD_DATA: &str = "ARBITER_STORE_TEST_CHILD_DATA";

/// The child: writes record 1, says so, waits for a line, writes record 2, says so, and
/// holds the store open until its stdin closes. Does nothing in a normal test run.
#[tokio::test]
async fn writer_process() {
    let Some(data) = std::env::var_os(CHILD_DATA) else {
        return;
    };
    let store = Store::open(&PathBuf::from(data)).unwrap();
    let writer = LogWriter::start(&store, Durability::Sync, 8).unwrap();
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();

    writer.append(record(1)).await.unwrap();
    println!("wrote 1");
    stdin.read_line(&mut line).unwrap();
    writer.append(record(2)).await.unwrap();
    println!("wrote 2");
    while stdin.read_line(&mut line).unwrap() > 0 {}
    writer.shutdown().await.unwrap();
}

#[test]
fn a_read_only_store_reads_while_another_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "writer_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DATA, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut wait_for = |said: &str| {
        for line in from_child.by_ref() {
            // libtest may print "test writer_process ... " first on the same line.
            if line.unwrap().ends_with(said) {
                return;
            }
        }
        panic!("the writer process ended before saying {said:?}");
    };

    wait_for("wrote 1");
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(all_ids(&reader, &DecisionQuery::default()), ids_of(&[1]));

    writeln!(to_child).unwrap();
    wait_for("wrote 2");
    assert_eq!(all_ids(&reader, &DecisionQuery::default()), ids_of(&[1, 2]));

    drop(to_child);
    assert!(child.wait().unwrap().success());
}
