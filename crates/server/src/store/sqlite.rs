//! The embedded SQLite store: accounts, channels, members, election numbers
//! and the committed history.
//!
//! WAL mode with a busy timeout, so `sigil account ...` can write while a
//! server runs on the same file; the server notices through
//! [`SqliteStore::accounts_rev`], a counter every account change bumps in the
//! same transaction. Channel writes come from the core as [`StoreOp`]s and are
//! applied many at a time in one transaction ([`SqliteStore::apply`]): one
//! fsync for a whole batch (group commit). The database holds account
//! secrets: it is created mode 0600. This module owns the schema and the SQL;
//! it must not decide policy (retries, when to poll): the server's threads
//! do, through [`Storage`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use ulid::Ulid;

use super::storage::{validate_name, Storage, StoreError, StoredAccount};
use sigil_core::{ChannelSnapshot, StoreOp};
use sigil_proto::event::HistoryEntry;
use sigil_proto::wire::{SecretKey, KEY_LEN};
use sigil_proto::{Body, BodyKind};

/// The schema this build writes (SQLite's `user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// A connection to the SQLite store.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            create_private_file(path)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found: version, supported: SCHEMA_VERSION });
        }
        if version == SCHEMA_VERSION {
            return Ok(Self { conn });
        }
        // IMMEDIATE: a deferred transaction that reads and then writes fails at
        // once (SQLITE_BUSY_SNAPSHOT) if a running server commits in between.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (k, v) VALUES ('accounts_rev', 0);
             CREATE TABLE IF NOT EXISTS accounts (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE COLLATE NOCASE,
                 key BLOB NOT NULL,
                 key_rev INTEGER NOT NULL,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS channels (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE COLLATE NOCASE,
                 -- u64, 8 bytes big-endian: compares bytewise, so max() is numeric.
                 election BLOB NOT NULL,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS members (
                 channel TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
                 account TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                 PRIMARY KEY (channel, account)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS history (
                 channel TEXT NOT NULL REFERENCES channels(id),
                 seq INTEGER NOT NULL,
                 msg_id TEXT NOT NULL,
                 sender TEXT NOT NULL,
                 timestamp INTEGER NOT NULL,
                 kind INTEGER NOT NULL,
                 body BLOB NOT NULL,
                 acks TEXT NOT NULL,
                 PRIMARY KEY (channel, seq)
             ) WITHOUT ROWID;
             CREATE UNIQUE INDEX IF NOT EXISTS history_msg ON history (channel, msg_id);
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
        Ok(Self { conn })
    }

    /// Creates an account with a fresh key.
    pub fn add_account(&mut self, name: &str, now: u64) -> Result<StoredAccount, StoreError> {
        let mut created = self.add_accounts(&[name.to_owned()], now)?;
        // One name in, one account out.
        created.pop().ok_or_else(|| StoreError::NameTaken(name.to_owned()))
    }

    /// Creates many accounts in one transaction (one fsync): for load
    /// generators and provisioning scripts. Fails, creating none, if a name is
    /// invalid or taken.
    pub fn add_accounts(&mut self, names: &[String], now: u64) -> Result<Vec<StoredAccount>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut created = Vec::with_capacity(names.len());
        {
            let mut taken = tx.prepare("SELECT EXISTS(SELECT 1 FROM accounts WHERE name = ?1)")?;
            let mut insert =
                tx.prepare("INSERT INTO accounts (id, name, key, key_rev, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for name in names {
                validate_name(name)?;
                if taken.query_row([name], |r| r.get::<_, bool>(0))? {
                    return Err(StoreError::NameTaken(name.clone()));
                }
                let account = StoredAccount {
                    id: Ulid::new(),
                    name: name.clone(),
                    key: SecretKey::generate(),
                    key_rev: 1,
                    created_at: now,
                };
                insert.execute(params![
                    account.id.to_string(),
                    name,
                    &account.key.as_bytes()[..],
                    account.key_rev,
                    account.created_at
                ])?;
                created.push(account);
            }
        }
        bump_rev(&tx)?;
        tx.commit()?;
        Ok(created)
    }

    /// Every account, ordered by name.
    pub fn accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, key, key_rev, created_at FROM accounts ORDER BY name COLLATE NOCASE")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, u64>(3)?,
                r.get::<_, u64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, key, key_rev, created_at) = row?;
            let id = Ulid::from_string(&id).map_err(|_| StoreError::Corrupt(format!("account id {id:?}")))?;
            let key: [u8; KEY_LEN] =
                key.try_into().map_err(|_| StoreError::Corrupt(format!("key of account {name:?}")))?;
            out.push(StoredAccount { id, name, key: SecretKey::from_bytes(key), key_rev, created_at });
        }
        Ok(out)
    }

    /// Finds an account by id or by name (ignoring case).
    pub fn find_account(&self, name_or_id: &str) -> Result<StoredAccount, StoreError> {
        let id = sigil_proto::id::parse(name_or_id).map(|u| u.to_string());
        self.accounts()?
            .into_iter()
            .find(|a| Some(a.id.to_string()) == id || a.name.eq_ignore_ascii_case(name_or_id))
            .ok_or_else(|| StoreError::NoSuchAccount(name_or_id.to_owned()))
    }

    /// Removes an account.
    pub fn remove_account(&mut self, name_or_id: &str) -> Result<StoredAccount, StoreError> {
        let account = self.find_account(name_or_id)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM accounts WHERE id = ?1", [account.id.to_string()])?;
        bump_rev(&tx)?;
        tx.commit()?;
        Ok(account)
    }

    /// Gives an account a fresh key; the old one stops working.
    pub fn rotate_key(&mut self, name_or_id: &str) -> Result<StoredAccount, StoreError> {
        let mut account = self.find_account(name_or_id)?;
        account.key = SecretKey::generate();
        account.key_rev += 1;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE accounts SET key = ?1, key_rev = ?2 WHERE id = ?3",
            params![&account.key.as_bytes()[..], account.key_rev, account.id.to_string()],
        )?;
        bump_rev(&tx)?;
        tx.commit()?;
        Ok(account)
    }

    /// A counter bumped by every account change.
    pub fn accounts_rev(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT v FROM meta WHERE k = 'accounts_rev'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// SQLite's `data_version`: changes when another connection commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.pragma_query_value(None, "data_version", |r| r.get(0))?)
    }
}

impl SqliteStore {
    /// Applies channel writes in one transaction: one fsync for all of them.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in ops {
            match op {
                StoreOp::CreateChannel { id, name, creator, created_at } => {
                    tx.execute(
                        "INSERT INTO channels (id, name, election, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![id.to_string(), name, &0u64.to_be_bytes()[..], created_at],
                    )?;
                    add_member(&tx, id, creator)?;
                }
                StoreOp::AddMember { channel, user } => add_member(&tx, channel, user)?,
                StoreOp::RemoveMember { channel, user } => {
                    tx.execute(
                        "DELETE FROM members WHERE channel = ?1 AND account = ?2",
                        params![channel.to_string(), user.to_string()],
                    )?;
                }
                StoreOp::SetElection { channel, election } => {
                    // Election numbers only grow, even if writes were ever reordered.
                    tx.execute(
                        "UPDATE channels SET election = max(election, ?1) WHERE id = ?2",
                        params![&election.to_be_bytes()[..], channel.to_string()],
                    )?;
                }
                StoreOp::Append { channel, seq, entry } => {
                    let kind = match entry.msg.kind {
                        BodyKind::Bin => 0,
                        BodyKind::Str => 1,
                    };
                    let acks: Vec<String> = entry.acks.iter().map(Ulid::to_string).collect();
                    tx.execute(
                        "INSERT INTO history (channel, seq, msg_id, sender, timestamp, kind, body, acks)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            channel.to_string(),
                            seq,
                            entry.id.to_string(),
                            entry.from.to_string(),
                            entry.timestamp,
                            kind,
                            &entry.msg.bytes[..],
                            acks.join(",")
                        ],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every channel with its members, election number and committed ids.
    pub fn channel_snapshots(&self) -> Result<Vec<ChannelSnapshot>, StoreError> {
        let mut channels: HashMap<String, ChannelSnapshot> = HashMap::new();
        let mut stmt = self.conn.prepare("SELECT id, name, election FROM channels")?;
        let rows = stmt.query_map([], |r| {
            // 8 bytes big-endian; builds before that stored a plain integer.
            let election = match r.get_ref(2)? {
                rusqlite::types::ValueRef::Blob(b) => <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes),
                rusqlite::types::ValueRef::Integer(i) => u64::try_from(i).ok(),
                _ => None,
            };
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, election))
        })?;
        for row in rows {
            let (id, name, election) = row?;
            let ulid = parse_id(&id)?;
            let election = election.ok_or_else(|| StoreError::Corrupt(format!("election of {id}")))?;
            channels.insert(id, ChannelSnapshot { id: ulid, name, election, ..ChannelSnapshot::default() });
        }
        let mut stmt = self.conn.prepare("SELECT channel, account FROM members")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (channel, account) = row?;
            if let Some(c) = channels.get_mut(&channel) {
                c.members.insert(parse_id(&account)?);
            }
        }
        let mut stmt = self.conn.prepare("SELECT channel, msg_id, seq FROM history ORDER BY channel, seq")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?)))? {
            let (channel, msg_id, seq) = row?;
            if let Some(c) = channels.get_mut(&channel) {
                c.history.push((parse_id(&msg_id)?, seq));
            }
        }
        Ok(channels.into_values().collect())
    }

    /// Up to `limit` committed messages after position `after_seq`, in order,
    /// stopping once their content passes `max_bytes` (at least one message),
    /// and whether more follow.
    pub fn history_after(
        &self,
        channel: &Ulid,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<HistoryEntry>, bool), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT msg_id, sender, timestamp, kind, body, acks FROM history
             WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let want = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![channel.to_string(), after_seq, want], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut cut = false;
        for row in rows {
            if !out.is_empty() && bytes > max_bytes {
                cut = true;
                break;
            }
            let (id, from, timestamp, kind, body, acks) = row?;
            bytes = bytes.saturating_add(body.len());
            let kind = if kind == 1 { BodyKind::Str } else { BodyKind::Bin };
            let acks = acks.split(',').filter(|a| !a.is_empty()).map(parse_id).collect::<Result<_, _>>()?;
            out.push(HistoryEntry {
                id: parse_id(&id)?,
                from: parse_id(&from)?,
                msg: Body { kind, bytes: Bytes::from(body) },
                timestamp,
                acks,
            });
        }
        let more = cut || out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }
}

/// The server's threads use the inherent methods above through the trait.
impl Storage for SqliteStore {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        SqliteStore::apply(self, ops)
    }

    fn history_after(
        &self,
        channel: &Ulid,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<HistoryEntry>, bool), StoreError> {
        SqliteStore::history_after(self, channel, after_seq, limit, max_bytes)
    }

    fn channel_snapshots(&self) -> Result<Vec<ChannelSnapshot>, StoreError> {
        SqliteStore::channel_snapshots(self)
    }

    fn accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        SqliteStore::accounts(self)
    }

    fn data_version(&self) -> Result<i64, StoreError> {
        SqliteStore::data_version(self)
    }

    fn accounts_rev(&self) -> Result<i64, StoreError> {
        SqliteStore::accounts_rev(self)
    }
}

/// What a checked backup holds: `PRAGMA integrity_check` said `ok`, its
/// schema version is one this sigil reads, and these are its row counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The file checked.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its `user_version`.
    pub schema_version: i64,
    /// Rows in `accounts`.
    pub accounts: u64,
    /// Rows in `channels`.
    pub channels: u64,
    /// Rows in `history`, all channels together.
    pub history: u64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The backup that is now the database, as checked.
    pub backup: BackupReport,
    /// Where the database it replaced was kept, if it existed and was kept.
    pub kept: Option<PathBuf>,
}

/// Why a backup, a check or a restore failed. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database to back up (or the backup to check) does not exist.
    #[error("{}: no such database file (nothing was created)", .0.display())]
    Missing(PathBuf),
    /// The output exists and overwriting was not asked for.
    #[error("{}: already exists; refusing to overwrite it (--force overwrites)", .0.display())]
    Exists(PathBuf),
    /// SQLite takes file names as UTF-8 text here.
    #[error("{}: the path is not valid UTF-8", .0.display())]
    BadPath(PathBuf),
    /// `PRAGMA integrity_check` found problems.
    #[error("{}: integrity check failed: {problems}", path.display())]
    Integrity {
        /// The file.
        path: PathBuf,
        /// The first problems SQLite listed.
        problems: String,
    },
    /// A schema version this sigil does not read.
    #[error("{}: schema version {found}; this sigil reads 1 to {supported}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest this sigil reads.
        supported: i64,
    },
    /// Not a sigil database at all.
    #[error("{}: not a sigil database ({reason})", path.display())]
    NotSigil {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process has the database open (a running `sigil serve`).
    #[error("{}: the database is in use by another process (is `sigil serve` running on it?); stop it first", .0.display())]
    InUse(PathBuf),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// SQLite failed on this file.
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: rusqlite::Error,
    },
}

impl BackupError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        move |source| BackupError::Io { path: path.to_owned(), source }
    }

    fn sqlite(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
        move |source| match sqlite_code(&source) {
            Some(rusqlite::ErrorCode::NotADatabase) => {
                BackupError::NotSigil { path: path.to_owned(), reason: "not an SQLite database".into() }
            }
            _ => BackupError::Sqlite { path: path.to_owned(), source },
        }
    }
}

fn sqlite_code(e: &rusqlite::Error) -> Option<rusqlite::ErrorCode> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    }
}

impl SqliteStore {
    /// Opens an existing database for reading it whole (a backup): never
    /// creates the file and never changes its schema or journal mode.
    pub fn open_existing(path: &Path) -> Result<Self, BackupError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BackupError::Missing(path.to_owned())),
            Err(e) => return Err(BackupError::io(path)(e)),
            Ok(m) if !m.is_file() => {
                return Err(BackupError::NotSigil { path: path.to_owned(), reason: "not a regular file".into() })
            }
            Ok(_) => {}
        }
        // READ_WRITE without CREATE: SQLite will not make a new file, and a
        // reader of a WAL database needs to write the shared-memory index.
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(BackupError::sqlite(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(BackupError::sqlite(path))?;
        let version: i64 =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(BackupError::sqlite(path))?;
        check_version(path, version)?;
        Ok(Self { conn })
    }

    /// Writes a consistent copy of the database to `out` and checks it
    /// ([`verify_backup`]) before it appears under that name.
    ///
    /// The copy is `VACUUM INTO` a temporary file beside `out`: one read
    /// transaction, so one snapshot of the database, and in WAL mode a reader
    /// never blocks the server's writer (nor the writer the reader). The
    /// online backup API (`sqlite3_backup_step`) in small steps would restart
    /// from the first page each time another process commits, so against a
    /// server that commits continuously it may never finish; in one step it
    /// is the same single snapshot as `VACUUM INTO`, without the compaction.
    /// The temporary file is created mode 0600 (it holds the keys), fsynced
    /// (SQLite does not fsync `VACUUM INTO` output), checked, renamed to
    /// `out`, and the directory fsynced; on any failure it is removed.
    ///
    /// Refuses an existing `out` unless `overwrite`. Checked at the start and
    /// again just before the rename; another process creating `out` between
    /// that check and the rename would be overwritten.
    pub fn backup_to(&self, out: &Path, overwrite: bool) -> Result<BackupReport, BackupError> {
        if !overwrite && out.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(out.to_owned()));
        }
        let temp = TempFile::create_beside(out)?;
        let text = temp.path.to_str().ok_or_else(|| BackupError::BadPath(out.to_owned()))?;
        self.conn.execute("VACUUM INTO ?1", [text]).map_err(BackupError::sqlite(out))?;
        File::open(&temp.path).and_then(|f| f.sync_all()).map_err(BackupError::io(out))?;
        let mut report = check_copy(&temp.path, out)?;
        if !overwrite && out.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(out.to_owned()));
        }
        temp.rename_to(out)?;
        report.path = out.to_owned();
        Ok(report)
    }
}

/// Checks a backup: it is an SQLite file, `PRAGMA integrity_check` says `ok`,
/// its schema version is one this sigil reads, and it has sigil's tables.
/// Opens it read-only; writes nothing.
pub fn verify_backup(path: &Path) -> Result<BackupReport, BackupError> {
    check_copy(path, path)
}

/// Checks `file`, naming it `name` in errors and in the report.
fn check_copy(file: &Path, name: &Path) -> Result<BackupReport, BackupError> {
    let meta = match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BackupError::Missing(name.to_owned())),
        Err(e) => return Err(BackupError::io(name)(e)),
        Ok(m) => m,
    };
    if !meta.is_file() {
        return Err(BackupError::NotSigil { path: name.to_owned(), reason: "not a regular file".into() });
    }
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(BackupError::sqlite(name))?;
    let problems: Vec<String> = {
        let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(BackupError::sqlite(name))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(BackupError::sqlite(name))?;
        rows.collect::<Result<_, _>>().map_err(BackupError::sqlite(name))?
    };
    if problems != ["ok"] {
        let mut text = problems.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        if problems.len() > 5 {
            text.push_str(&format!("; and {} more", problems.len() - 5));
        }
        return Err(BackupError::Integrity { path: name.to_owned(), problems: text });
    }
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(BackupError::sqlite(name))?;
    check_version(name, version)?;
    let count = |table: &str| -> Result<u64, BackupError> {
        let exists: bool = conn
            .query_row("SELECT EXISTS(SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)", [table], |r| {
                r.get(0)
            })
            .map_err(BackupError::sqlite(name))?;
        if !exists {
            return Err(BackupError::NotSigil { path: name.to_owned(), reason: format!("no table {table}") });
        }
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).map_err(BackupError::sqlite(name))
    };
    Ok(BackupReport {
        path: name.to_owned(),
        bytes: meta.len(),
        schema_version: version,
        accounts: count("accounts")?,
        channels: count("channels")?,
        history: count("history")?,
    })
}

/// Version 0 is a new, empty file; versions above ours are a newer sigil's.
fn check_version(path: &Path, version: i64) -> Result<(), BackupError> {
    if version == 0 {
        return Err(BackupError::NotSigil {
            path: path.to_owned(),
            reason: "schema version 0: empty or not sigil's".into(),
        });
    }
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(BackupError::Schema { path: path.to_owned(), found: version, supported: SCHEMA_VERSION });
    }
    Ok(())
}

/// Puts the checked backup `backup` in place of the database `db`, which no
/// process may have open. `db` is kept as `DB.before-restore-<now>` unless
/// `!keep`; it need not exist.
///
/// Steps: check the backup ([`verify_backup`]); make sure nothing uses `db`
/// and fold its WAL into it ([`take_offline`]); copy the backup to a
/// temporary file beside `db` (mode and owner of the old file, else 0600),
/// fsync it; remove `db`'s `-wal`, `-shm` and `-journal` files, so no old log
/// is applied to the new file; hard-link the old file to its kept name; rename
/// the copy over `db` (atomic: `db` is at every moment the old file or the
/// new one); fsync the directory.
pub fn restore(backup: &Path, db: &Path, keep: bool, now: u64) -> Result<RestoreReport, BackupError> {
    let report = verify_backup(backup)?;
    let old = match std::fs::metadata(db) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => return Err(BackupError::NotSigil { path: db.to_owned(), reason: "not a regular file".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(BackupError::io(db)(e)),
    };
    if old.is_some() {
        take_offline(db)?;
    }
    let temp = TempFile::create_beside(db)?;
    {
        let mut from = File::open(backup).map_err(BackupError::io(backup))?;
        let mut to = std::fs::OpenOptions::new().write(true).open(&temp.path).map_err(BackupError::io(db))?;
        let copied = std::io::copy(&mut from, &mut to).map_err(BackupError::io(db))?;
        if copied != report.bytes {
            return Err(BackupError::NotSigil {
                path: backup.to_owned(),
                reason: format!("it changed while being restored ({} bytes, then {copied})", report.bytes),
            });
        }
        if let Some(old) = &old {
            keep_owner_and_mode(&to, old);
        }
        to.sync_all().map_err(BackupError::io(db))?;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = with_suffix(db, suffix);
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::io(&side)(e)),
        }
    }
    let kept = match (&old, keep) {
        (Some(_), true) => {
            let kept = with_suffix(db, &format!(".before-restore-{now}"));
            match std::fs::hard_link(db, &kept) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(BackupError::Exists(kept)),
                // A file system without hard links: a copy, made durable.
                Err(_) => {
                    let mut options = std::fs::OpenOptions::new();
                    options.write(true).create_new(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    let mut to = options.open(&kept).map_err(BackupError::io(&kept))?;
                    let mut from = File::open(db).map_err(BackupError::io(db))?;
                    std::io::copy(&mut from, &mut to).and_then(|_| to.sync_all()).map_err(BackupError::io(&kept))?;
                }
            }
            Some(kept)
        }
        _ => None,
    };
    temp.rename_to(db)?;
    Ok(RestoreReport { backup: report, kept })
}

/// Makes sure no other process has `db` open, and folds its WAL into it, by
/// switching it out of WAL mode (`PRAGMA journal_mode = DELETE`).
///
/// A running `sigil serve` keeps two connections open on its database in
/// WAL mode, and SQLite leaves WAL mode only when no other connection has
/// the file open (it must checkpoint and delete the `-wal` file): with any
/// other connection open the switch fails with "database is locked" after
/// the busy timeout. So the switch is the check, and it also writes every
/// commit still in the `-wal` file into `db`, so the kept old file is whole.
///
/// Limits: it sees connections that use SQLite's file locks on this machine
/// (not other machines over a network file system); a database already in
/// rollback mode that another program holds open without a transaction
/// (which sigil never does: it always uses WAL) goes unnoticed; and a
/// server started after this check, before the rename, would keep serving
/// the old file (then named `.before-restore-...`). A file SQLite cannot
/// read at all (not a database, corrupt) cannot be served either, and is
/// replaced as it is (kept if asked).
fn take_offline(db: &Path) -> Result<(), BackupError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(BackupError::sqlite(db))?;
    conn.busy_timeout(std::time::Duration::from_millis(500)).map_err(BackupError::sqlite(db))?;
    match conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0)) {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => Ok(()),
        // SQLite answers with the old mode when it could not switch.
        Ok(_) => Err(BackupError::InUse(db.to_owned())),
        Err(e) => match sqlite_code(&e) {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Err(BackupError::InUse(db.to_owned()))
            }
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => Ok(()),
            _ => Err(BackupError::Sqlite { path: db.to_owned(), source: e }),
        },
    }
}

#[cfg(unix)]
fn keep_owner_and_mode(file: &File, old: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    // Best effort: only root may give a file to someone else; then the new
    // file is the restoring user's, with the old file's mode.
    let _ = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()));
    let _ = file.set_permissions(old.permissions());
}

#[cfg(not(unix))]
fn keep_owner_and_mode(_: &File, _: &std::fs::Metadata) {}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// A new, empty, mode 0600 file beside a target, removed when dropped unless
/// renamed onto the target.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl TempFile {
    fn create_beside(target: &Path) -> Result<Self, BackupError> {
        let name = target
            .file_name()
            .ok_or_else(|| BackupError::NotSigil { path: target.to_owned(), reason: "not a file name".into() })?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut temp = OsString::from(".");
        temp.push(name);
        temp.push(format!(".tmp-{}-{nanos}", std::process::id()));
        let path = dir.join(temp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path).map_err(BackupError::io(target))?;
        Ok(Self { path, renamed: false })
    }

    /// Renames the file onto `target` and fsyncs the directory.
    fn rename_to(mut self, target: &Path) -> Result<(), BackupError> {
        std::fs::rename(&self.path, target).map_err(BackupError::io(target))?;
        self.renamed = true;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        #[cfg(unix)]
        File::open(dir).and_then(|d| d.sync_all()).map_err(BackupError::io(dir))?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parse_id(text: &str) -> Result<Ulid, StoreError> {
    Ulid::from_string(text).map_err(|_| StoreError::Corrupt(format!("id {text:?}")))
}

fn add_member(tx: &rusqlite::Transaction<'_>, channel: &Ulid, user: &Ulid) -> Result<(), StoreError> {
    // The account may have been removed meanwhile; then there is nothing to add.
    tx.execute(
        "INSERT OR IGNORE INTO members (channel, account) SELECT ?1, id FROM accounts WHERE id = ?2",
        params![channel.to_string(), user.to_string()],
    )?;
    Ok(())
}

fn bump_rev(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("UPDATE meta SET v = v + 1 WHERE k = 'accounts_rev'", [])?;
    Ok(())
}

fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_add_find_rotate_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let rev0 = store.accounts_rev().unwrap();
        let alice = store.add_account("alice", 1).unwrap();
        assert!(matches!(store.add_account("ALICE", 1), Err(StoreError::NameTaken(_))));
        assert!(matches!(store.add_account("no spaces", 1), Err(StoreError::BadName(_))));
        assert!(matches!(store.add_account(&"a".repeat(33), 1), Err(StoreError::BadName(_))));
        assert_eq!(store.find_account("Alice").unwrap().id, alice.id);
        assert_eq!(store.find_account(&alice.id.to_string()).unwrap().name, "alice");
        let rotated = store.rotate_key("alice").unwrap();
        assert_ne!(rotated.key, alice.key);
        assert_eq!(rotated.key_rev, 2);
        assert_eq!(store.accounts().unwrap()[0].key, rotated.key);
        store.remove_account("alice").unwrap();
        assert!(matches!(store.find_account("alice"), Err(StoreError::NoSuchAccount(_))));
        assert_eq!(store.accounts_rev().unwrap(), rev0 + 3);
    }

    /// What the server's threads do, through the trait only.
    fn through_the_trait<S: Storage>(writer: &mut S, reader: &S, creator: Ulid) {
        let channel = Ulid::new();
        let version = reader.data_version().unwrap();
        let entry = |n: u8| HistoryEntry {
            id: Ulid::new(),
            from: creator,
            msg: Body { kind: BodyKind::Str, bytes: Bytes::from(vec![b'a' + n; 3]) },
            timestamp: 7,
            acks: vec![creator],
        };
        let (first, second) = (entry(0), entry(1));
        writer
            .apply(&[
                StoreOp::CreateChannel { id: channel, name: "general".into(), creator, created_at: 1 },
                StoreOp::SetElection { channel, election: 3 },
                StoreOp::Append { channel, seq: 1, entry: first.clone() },
                StoreOp::Append { channel, seq: 2, entry: second.clone() },
            ])
            .unwrap();
        assert_ne!(reader.data_version().unwrap(), version, "another connection's commit is seen");
        let (page, more) = reader.history_after(&channel, 0, 1, usize::MAX).unwrap();
        assert_eq!((page.len(), more), (1, true));
        assert_eq!(page[0].id, first.id);
        assert_eq!(page[0].acks, vec![creator]);
        let (page, more) = reader.history_after(&channel, 1, 10, usize::MAX).unwrap();
        assert_eq!((page.len(), more), (1, false));
        assert_eq!(page[0].msg.bytes, second.msg.bytes);
        let snapshots = reader.channel_snapshots().unwrap();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].election, 3);
        assert_eq!(snapshots[0].history, vec![(first.id, 1), (second.id, 2)]);
        assert!(snapshots[0].members.contains(&creator));
    }

    #[test]
    fn channel_writes_and_reads_through_storage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut admin = SqliteStore::open(&path).unwrap();
        let alice = admin.add_account("alice", 1).unwrap();
        let reader = SqliteStore::open(&path).unwrap();
        let rev = Storage::accounts_rev(&reader).unwrap();
        through_the_trait(&mut admin, &reader, alice.id);
        assert_eq!(Storage::accounts_rev(&reader).unwrap(), rev, "channel writes are not account changes");
        assert_eq!(Storage::accounts(&reader).unwrap()[0].id, alice.id);
    }

    #[test]
    fn backup_checks_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("live.db");
        let mut store = SqliteStore::open(&db).unwrap();
        store.add_account("alice", 1).unwrap();
        let out = dir.path().join("copy.db");
        let report = SqliteStore::open_existing(&db).unwrap().backup_to(&out, false).unwrap();
        assert_eq!((report.accounts, report.channels, report.history), (1, 0, 0));
        assert_eq!(report.schema_version, SCHEMA_VERSION);
        assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
        assert_eq!(verify_backup(&out).unwrap(), report);
        assert!(matches!(store.backup_to(&out, false), Err(BackupError::Exists(_))));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        store.add_account("bob", 2).unwrap();
        // This process's own open connection is another connection too.
        assert!(matches!(restore(&out, &db, true, 7), Err(BackupError::InUse(_))));
        drop(store);
        let done = restore(&out, &db, true, 7).unwrap();
        let kept = done.kept.unwrap();
        assert_eq!(kept, dir.path().join("live.db.before-restore-7"));
        let names = |p: &Path| -> Vec<String> {
            SqliteStore::open_existing(p).unwrap().accounts().unwrap().into_iter().map(|a| a.name).collect()
        };
        assert_eq!(names(&db), ["alice"]);
        assert_eq!(names(&kept), ["alice", "bob"]);
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.db");
        assert!(matches!(SqliteStore::open_existing(&missing), Err(BackupError::Missing(_))));
        assert!(!missing.exists(), "nothing is created");
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
        let e = verify_backup(&garbage).unwrap_err();
        assert!(matches!(e, BackupError::NotSigil { .. }), "{e:?}");
        assert!(e.to_string().contains("garbage.db"), "{e}");
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(verify_backup(&empty), Err(BackupError::NotSigil { .. })));

        // A real database with one page overwritten.
        let db = dir.path().join("t.db");
        let mut store = SqliteStore::open(&db).unwrap();
        store.add_accounts(&(0..200).map(|i| format!("user{i}")).collect::<Vec<_>>(), 1).unwrap();
        let good = dir.path().join("good.db");
        store.backup_to(&good, false).unwrap();
        let mut bytes = std::fs::read(&good).unwrap();
        let page = 4096;
        assert!(bytes.len() > 3 * page);
        bytes[2 * page..3 * page].fill(0x5a);
        std::fs::write(&good, &bytes).unwrap();
        let e = verify_backup(&good).unwrap_err();
        assert!(
            matches!(e, BackupError::Integrity { .. } | BackupError::Sqlite { .. } | BackupError::NotSigil { .. }),
            "{e:?}"
        );

        // A newer sigil's schema.
        let newer = dir.path().join("newer.db");
        store.backup_to(&newer, false).unwrap();
        Connection::open(&newer).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(verify_backup(&newer), Err(BackupError::Schema { .. })));
    }
}
