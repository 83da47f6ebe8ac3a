//! Opening the database: where it lives, how SQLite is configured, and the one connection
//! that queries and small writes share.
//!
//! Every method here blocks on SQLite; async callers run them on `spawn_blocking`.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::StoreError;
use crate::schema::{LATEST_VERSION, migrations};

/// The database file inside the data directory.
pub const DB_FILE: &str = "arbiter.db";

/// How long a connection waits for another one's write lock before it reports `busy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How hard SQLite pushes a commit to disk.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Synchronous {
    /// In WAL mode: durable across a crash of the process, not of the machine.
    Normal,
    /// Every commit is on disk before it returns.
    Full,
}

/// The embedded store: SQLite in `<data_dir>/arbiter.db`, in WAL mode, migrated on open.
///
/// Clone is cheap; clones share one connection, used for queries, pack versions and
/// revocations. The decision log is written by a [`LogWriter`](crate::LogWriter) on its
/// own connection.
///
/// The shared connection commits with `synchronous = FULL`: its writes are few and small,
/// and a revocation must survive a power loss once [`Store::revoke`] has returned. Reads do
/// not pay for it.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data_dir: PathBuf,
    db_path: PathBuf,
    read_only: bool,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`: the directory (mode 0700 when
    /// created), the database, WAL mode, and every pending migration.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        create_data_dir(data_dir)?;
        let db_path = data_dir.join(DB_FILE);
        let mut conn = connect(&db_path, Synchronous::Full)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|cause| StoreError::Migrate {
                path: db_path.clone(),
                cause,
            })?;
        Ok(Store::from_parts(data_dir, db_path, false, conn))
    }

    /// Opens an existing store for reading only, for example for `arbiter log` while a
    /// server writes to it. Fails if there is no database, or if its schema is not the one
    /// this build reads.
    ///
    /// It creates and changes no file in the data directory when the database was closed
    /// cleanly, so it works on a read-only directory (a backup, a snapshot, one owned by
    /// the server's user). A WAL database read the usual way needs its `-wal` and `-shm`
    /// files, and creates them when they are absent: in a read-only directory that fails.
    /// So:
    ///
    /// - With a `-wal` file, a writer has the database open (or stopped without closing
    ///   it): it is read through that writer's `-wal` and `-shm`, as a concurrent reader
    ///   must be, to see every commit and never a half-done checkpoint.
    /// - Without one, the last connection closed cleanly and everything is in the database
    ///   file: it is opened `immutable`, which reads that file as it is, with no `-wal`,
    ///   no `-shm` and no locks. A server that starts while such a read is under way
    ///   writes to a new `-wal`; the database file itself only changes when that `-wal`
    ///   is checkpointed (the log's checkpoint thread does it soon after the server's
    ///   first decisions), which a read that long could then see half-done and report as
    ///   an error: run it again.
    pub fn open_read_only(data_dir: &Path) -> Result<Store, StoreError> {
        let db_path = data_dir.join(DB_FILE);
        if !db_path.is_file() {
            return Err(StoreError::Missing { path: db_path });
        }
        let open_err = |cause| StoreError::Open {
            path: db_path.clone(),
            cause,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let wal = db_path.with_file_name(format!("{DB_FILE}-wal"));
        let conn = if wal.symlink_metadata().is_ok() {
            Connection::open_with_flags(&db_path, flags)
        } else {
            Connection::open_with_flags(immutable_uri(&db_path), flags | OpenFlags::SQLITE_OPEN_URI)
        }
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_err)?;
        if found != LATEST_VERSION {
            let hint = if found < LATEST_VERSION {
                "open it once read-write (start the server) to migrate it"
            } else {
                "it was written by a newer arbiter; upgrade this one"
            };
            return Err(StoreError::SchemaVersion {
                path: db_path,
                found,
                expected: LATEST_VERSION,
                hint,
            });
        }
        Ok(Store::from_parts(data_dir, db_path, true, conn))
    }

    fn from_parts(data_dir: &Path, db_path: PathBuf, read_only: bool, conn: Connection) -> Store {
        // The shared connection answers every read (the API, the dashboard's pages): a
        // page cache of up to SHARED_CACHE_KIB keeps the findings, the day counts and the
        // indexes the pages read in memory between requests, instead of SQLite's 2 MiB
        // default reading them again from the OS at every page. It only grows as pages
        // are read. A failure leaves the default, which is slower, not wrong.
        if let Err(e) = conn.pragma_update(None, "cache_size", -SHARED_CACHE_KIB) {
            tracing::debug!(error = %e, "the shared connection keeps SQLite's default cache");
        }
        Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                db_path,
                read_only,
                conn: Mutex::new(conn),
            }),
        }
    }

    /// The data directory this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// Whether this store was opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// A cheap probe for readiness: takes the database's write lock and lets it go.
    ///
    /// Waits up to the busy timeout (5 s) if another connection holds the lock.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let mut conn = self.writable_connection()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|cause| self.sqlite_error(cause))?;
        tx.rollback().map_err(|cause| self.sqlite_error(cause))
    }

    /// The shared connection. A panic while it was held leaves SQLite consistent (an open
    /// transaction rolls back when dropped), so a poisoned lock is taken over.
    pub(crate) fn connection(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The shared connection, for a write.
    pub(crate) fn writable_connection(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly {
                path: self.inner.db_path.clone(),
            });
        }
        Ok(self.connection())
    }

    /// A new connection of its own, for the log writer.
    pub(crate) fn connect_writer(
        &self,
        synchronous: Synchronous,
    ) -> Result<Connection, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly {
                path: self.inner.db_path.clone(),
            });
        }
        let conn = connect(&self.inner.db_path, synchronous)?;
        // Every batch touches the same hot pages (the newest leaves of each index, the
        // findings and rule days it counts): a cache that holds them means a batch neither
        // re-reads them nor spills them to the write-ahead log before its commit.
        if let Err(e) = conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB) {
            tracing::debug!(error = %e, "the log writer keeps SQLite's default cache");
        }
        Ok(conn)
    }

    /// A new connection of its own, for the log's checkpoint thread.
    pub(crate) fn connect_checkpointer(&self) -> Result<Connection, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly {
                path: self.inner.db_path.clone(),
            });
        }
        connect(&self.inner.db_path, Synchronous::Normal)
    }

    pub(crate) fn sqlite_error(&self, cause: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.inner.db_path.clone(),
            cause,
        }
    }

    pub(crate) fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.db_path.clone(),
            detail,
        }
    }
}

/// `file:PATH?immutable=1`, the path percent-encoded (a `?`, `#` or `%` in it would
/// otherwise be read as part of the URI).
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Creates the data directory, readable by its owner only, unless it exists.
pub(crate) fn create_data_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|cause| StoreError::CreateDir {
            path: dir.to_path_buf(),
            cause,
        })
}

/// The most memory the shared connection's page cache takes, in KiB.
const SHARED_CACHE_KIB: i64 = 64 * 1024;

/// The most memory the log writer's page cache takes, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// The page size of a new database, in bytes; a database made before keeps its own.
/// The log writer's parts are blobs of tens of kilobytes: on 4 KiB pages each spans a
/// chain of overflow pages, each written to the write-ahead log with its own frame
/// header and checksum. On 8 KiB pages the writer took 6.5 → 5.7 µs a record (139k →
/// 159k records/s, `synthetic_log --measure-writer`, runs alternated); 16 KiB gained no
/// more, and makes every page a findings update dirties twice as large. The database
/// grows by about 17% (230 → 270 MiB on that log).
const PAGE_SIZE: i64 = 8192;

/// Opens a read-write connection in WAL mode.
fn connect(db_path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
    let open_err = |cause| StoreError::Open {
        path: db_path.to_path_buf(),
        cause,
    };
    let conn = Connection::open(db_path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // Before anything is written: it takes effect only on a database still empty.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(open_err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal {
            path: db_path.to_path_buf(),
            mode,
        });
    }
    let level = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(open_err)?;
    Ok(conn)
}
