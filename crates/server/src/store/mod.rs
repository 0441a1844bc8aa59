//! The store: what the server keeps on disk, behind the [`Storage`] trait.
//!
//! The server's threads (the store writer, the account watcher, startup) use
//! only [`Storage`]: apply a batch of channel writes durably, read history,
//! load channels and accounts, and notice account changes made by another
//! process. [`SqliteStore`] (also exported as [`Store`]) is the embedded
//! SQLite implementation; account administration (add, remove, rotate, used
//! by the `sigil account` command) stays on it. This module must not hold
//! policy either: retries and polling are the callers'.

pub mod backup;
pub mod sqlite;
mod storage;

pub use sqlite::SqliteStore;
/// The store `sigil serve` and `sigil account` open: SQLite.
pub use sqlite::SqliteStore as Store;
pub use storage::{validate_name, Fault, Storage, StoreError, StoredAccount, MAX_NAME_LEN};
