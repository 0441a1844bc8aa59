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
    /// The file was written by a newer sigil.
    #[error("database schema version {found} is newer than this sigil understands ({supported})")]
    TooNew {
        /// The file's version.
        found: i64,
        /// The newest this sigil reads.
        supported: i64,
    },
}

impl StoreError {
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
    fn names_are_checked() {
        assert!(validate_name("a.b-c_9").is_ok());
        assert!(matches!(validate_name(""), Err(StoreError::BadName(_))));
        assert!(matches!(validate_name(&"a".repeat(MAX_NAME_LEN + 1)), Err(StoreError::BadName(_))));
    }
}
