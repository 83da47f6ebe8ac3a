//! What can go wrong in the store, each message naming the file it concerns.
//!
//! Messages carry their cause in the text (and the cause is not also a `source`), so a
//! log line or a CLI error shows the whole story once.

use std::io;
use std::path::PathBuf;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {cause}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// `open_read_only` found no database.
    #[error(
        "there is no arbiter database at {path}: start a server with this data directory first"
    )]
    Missing {
        /// Where the database was expected.
        path: PathBuf,
    },
    /// SQLite could not open or configure the database file.
    #[error("cannot open the database {path}: {cause}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        cause: rusqlite::Error,
    },
    /// The database does not support write-ahead logging (for example on a network file system).
    #[error(
        "the database {path} cannot use write-ahead logging (journal mode is {mode:?}); \
         put the data directory on a local file system"
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The schema could not be brought to the current version.
    #[error("cannot migrate the database {path} to the current schema: {cause}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// Why.
        cause: rusqlite_migration::Error,
    },
    /// A read-only open found a schema this build does not read.
    #[error(
        "the database {path} has schema version {found} and this arbiter reads version {expected}: {hint}"
    )]
    SchemaVersion {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The version this build writes.
        expected: i64,
        /// What to do about it.
        hint: &'static str,
    },
    /// A write was attempted through a store opened with [`Store::open_read_only`](crate::Store::open_read_only).
    #[error("the database {path} is open read-only")]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },
    /// A query or a write failed.
    #[error("database error in {path}: {cause}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        cause: rusqlite::Error,
    },
    /// A stored row could not be read back.
    #[error("the database {path} holds a row that cannot be read: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which row and why.
        detail: String,
    },
    /// A query filter has a value outside its vocabulary.
    #[error("invalid decision query: {0}")]
    InvalidQuery(String),
    /// A value given to the store breaks its rules (for example an empty revocation).
    #[error("{message}")]
    Invalid {
        /// What is wrong, naming the field.
        message: String,
    },
    /// A cursor that no page handed out.
    #[error("invalid cursor {cursor:?}: pass the `next` value of a previous page")]
    InvalidCursor {
        /// The cursor as given.
        cursor: String,
    },
    /// The masking key could not be read or written.
    #[error("cannot use the mask key {path}: {cause}")]
    MaskKeyIo {
        /// The key file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// The masking key file exists but is not usable.
    #[error("the mask key {path} {problem}")]
    MaskKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it, and how to fix it.
        problem: String,
    },
    /// The log writer thread could not be started.
    #[error("cannot start the decision log writer for {path}: {cause}")]
    WriterStart {
        /// The database file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// Shutdown gave up on records it could not write.
    #[error(
        "the decision log writer stopped with {unwritten} record(s) not written to {path}: {last_error}"
    )]
    Unwritten {
        /// The database file.
        path: PathBuf,
        /// How many accepted records were not committed.
        unwritten: usize,
        /// The last write error.
        last_error: String,
    },
    /// The log writer thread panicked.
    #[error("the decision log writer for {path} stopped unexpectedly")]
    WriterPanicked {
        /// The database file.
        path: PathBuf,
    },
}
