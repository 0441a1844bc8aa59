//! What every store is and does: the [`Storage`] trait, [`StoreError`],
//! [`StoredAccount`]. The SQLite implementation (`sqlite.rs`) depends on this
//! module; this module depends on no implementation.

use sigil_core::{ChannelSnapshot, StoreOp};
use sigil_proto::event::HistoryEntry;
use sigil_proto::wire::SecretKey;
use ulid::Ulid;

pub use sigil_proto::MAX_NAME_LEN;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Creating or opening the file failed.
    #[error("cannot open database: {0}")]
    Io(#[from] std::io::Error),
    /// The account name is not 1 to 32 of `[A-Za-z0-9_.-]`.
    #[error("invalid name {0:?}: use 1 to 32 characters of A-Z a-z 0-9 _ . -")]
    BadName(String),
    /// Another account has this name (ignoring case).
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// No account has this name or id.
    #[error("no account named or with id {0:?}")]
    NoSuchAccount(String),
    /// A row that cannot be what this version wrote.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// The database file fails SQLite's integrity check, or is no database.
    #[error(
        "the database is damaged ({detail}). Stop every process using it, then either restore a backup \
         (sigil restore --db {path} BACKUP) or salvage what is readable \
         (sqlite3 {path} .recover | sqlite3 RECOVERED.db) and start on that file"
    )]
    Damaged {
        /// The database file.
        path: String,
        /// What the check found.
        detail: String,
    },
    /// The database file the server writes is no longer the file at its
    /// path: removed, renamed or replaced while the server ran, so writes
    /// would go where no later start looks.
    #[error("{path} was removed or replaced while the server was using it: {detail}")]
    Moved {
        /// The database file.
        path: String,
        /// What was found.
        detail: String,
    },
    /// The file was written by a newer sigil.
    #[error("database schema version {found} is newer than this sigil understands ({supported})")]
    TooNew {
        /// The file's version.
        found: i64,
        /// The newest this sigil reads.
        supported: i64,
    },
}

/// What a failed store operation means for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Another process holds the write lock: try again shortly.
    Busy,
    /// The store cannot write now (disk full, an I/O error, a read-only
    /// file system) but what it holds is intact: serve read-only and retry.
    Unwritable,
    /// The store is damaged or gone: stop, announcing nothing more.
    Fatal,
}

impl StoreError {
    /// How the server must react to this error.
    pub fn fault(&self) -> Fault {
        use rusqlite::ErrorCode as C;
        match self {
            _ if self.is_busy() => Fault::Busy,
            // SQLite's own check that its file is still at its path.
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_READONLY_DBMOVED =>
            {
                Fault::Fatal
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => match e.code {
                C::DiskFull | C::SystemIoFailure | C::ReadOnly | C::CannotOpen | C::OutOfMemory => Fault::Unwritable,
                _ => Fault::Fatal,
            },
            StoreError::Io(_) => Fault::Unwritable,
            _ => Fault::Fatal,
        }
    }

    /// Whether another process holds the database (its write lock) and the
    /// same work may succeed if tried again later.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// An account as stored, secret included.
#[derive(Debug, Clone)]
pub struct StoredAccount {
    /// The id.
    pub id: Ulid,
    /// The unique name.
    pub name: String,
    /// The secret.
    pub key: SecretKey,
    /// Bumped on each rotation.
    pub key_rev: u64,
    /// Creation time, unix seconds.
    pub created_at: u64,
}

/// Checks an account name.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(name.to_owned()))
    }
}

/// What the server's threads need from a store. Each thread owns its own
/// value (a connection), so it is `Send` but need not be `Sync`.
pub trait Storage: Send + 'static {
    /// Applies channel writes in order, all or none, durably before it
    /// returns: the hub announces them once this succeeds. An error for
    /// which [`StoreError::is_busy`] holds may be retried.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;

    /// Up to `limit` committed messages of `channel` after position
    /// `after_seq`, in order, stopping once their content passes `max_bytes`
    /// (at least one message), and whether more follow.
    fn history_after(
        &self,
        channel: &Ulid,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<HistoryEntry>, bool), StoreError>;

    /// Every channel with its members, election number and committed ids.
    fn channel_snapshots(&self) -> Result<Vec<ChannelSnapshot>, StoreError>;

    /// Every account, secrets included.
    fn accounts(&self) -> Result<Vec<StoredAccount>, StoreError>;

    /// A cheap value that changes whenever another writer commits anything
    /// (it may change for writes that are not account changes). Polled first.
    fn data_version(&self) -> Result<i64, StoreError>;

    /// A counter every account change bumps, in the change's transaction.
    fn accounts_rev(&self) -> Result<i64, StoreError>;

    /// Whether the store takes writes now: takes the write lock and lets it
    /// go, writing nothing (`/healthz`).
    fn check_writable(&mut self) -> Result<(), StoreError>;

    /// Checks, after [`Storage::apply`] returned, that what it wrote is
    /// where the next start will read it: the file was not removed,
    /// replaced or overwritten meanwhile. Called before anything written is
    /// announced; an error is [`Fault::Fatal`].
    fn verify_in_place(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_locked_databases_are_busy_and_nothing_else_is() {
        let sqlite = |code| StoreError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_busy());
        assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_busy());
        assert!(!sqlite(rusqlite::ffi::SQLITE_FULL).is_busy());
        assert!(!StoreError::Corrupt("x".into()).is_busy());
    }

    #[test]
    fn faults_are_told_apart() {
        let sqlite = |code| StoreError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_BUSY).fault(), Fault::Busy);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_FULL).fault(), Fault::Unwritable);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_IOERR_WRITE).fault(), Fault::Unwritable);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_IOERR_FSYNC).fault(), Fault::Unwritable);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_READONLY).fault(), Fault::Unwritable);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_READONLY_DBMOVED).fault(), Fault::Fatal);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_CORRUPT).fault(), Fault::Fatal);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_NOTADB).fault(), Fault::Fatal);
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).fault(), Fault::Fatal);
        let moved = StoreError::Moved { path: "x".into(), detail: "gone".into() };
        assert_eq!(moved.fault(), Fault::Fatal);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("a.b-c_9").is_ok());
        assert!(matches!(validate_name(""), Err(StoreError::BadName(_))));
        assert!(matches!(validate_name(&"a".repeat(MAX_NAME_LEN + 1)), Err(StoreError::BadName(_))));
    }
}
