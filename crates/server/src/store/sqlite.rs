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
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
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
    pub(super) conn: Connection,
    /// The file's path, to check that the open file is still the one there.
    pub(super) path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_inner(path).map_err(|e| match e {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, detail))
                if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) =>
            {
                let detail = detail.unwrap_or_else(|| f.to_string());
                StoreError::Damaged { path: path.display().to_string(), detail }
            }
            e => e,
        })
    }

    fn open_inner(path: &Path) -> Result<Self, StoreError> {
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
        let store = Self { conn, path: path.to_owned() };
        if version == SCHEMA_VERSION {
            return Ok(store);
        }
        let conn = &store.conn;
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
        Ok(store)
    }

    /// Runs SQLite's `quick_check` (every page and index entry readable and
    /// well formed; O(size) reads, no writes), once at start: a damaged
    /// file is refused before the server serves from it, with the path and
    /// how to recover.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        let damaged = |detail: String| StoreError::Damaged { path: self.path.display().to_string(), detail };
        let mut stmt = self.conn.prepare("PRAGMA quick_check").map_err(|e| damaged(e.to_string()))?;
        let mut rows = stmt.query([]).map_err(|e| damaged(e.to_string()))?;
        let mut problems = Vec::new();
        while let Some(row) = rows.next().map_err(|e| damaged(e.to_string()))? {
            let line: String = row.get(0).map_err(|e| damaged(e.to_string()))?;
            if line != "ok" {
                problems.push(line);
            }
        }
        match problems.len() {
            0 => Ok(()),
            n => Err(damaged(format!("{n} problem(s), the first: {}", problems[0]))),
        }
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

/// Channel writes and reads, and what the server's threads ask of accounts.
impl Storage for SqliteStore {
    /// Applies channel writes in one transaction: one fsync for all of them.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
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
    fn channel_snapshots(&self) -> Result<Vec<ChannelSnapshot>, StoreError> {
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
    fn history_after(
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

    fn accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        SqliteStore::accounts(self)
    }

    fn data_version(&self) -> Result<i64, StoreError> {
        SqliteStore::data_version(self)
    }

    fn accounts_rev(&self) -> Result<i64, StoreError> {
        SqliteStore::accounts_rev(self)
    }

    fn check_writable(&mut self) -> Result<(), StoreError> {
        // A health check answers within about a second, lock or no lock.
        self.conn.busy_timeout(HEALTH_LOCK_WAIT)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.rollback()?;
        Ok(())
    }

    /// The file SQLite writes is still the one at the path, its write-ahead
    /// log is still there, and its header is still SQLite's.
    fn verify_in_place(&self) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let moved = |detail: &str| StoreError::Moved { path: path.clone(), detail: detail.to_owned() };
        if self.has_moved()? {
            return Err(moved("the file at that path is not the one the server opened"));
        }
        // While a connection is open SQLite keeps the log (it is emptied and
        // reused, never deleted): gone means removed by someone else, and
        // what was just committed to it is in a file nobody will open again.
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if !Path::new(&wal).exists() {
            return Err(moved("its write-ahead log (the -wal file beside it) was removed"));
        }
        if &self.read_header()? != SQLITE_MAGIC {
            return Err(StoreError::Damaged { path, detail: "its header was overwritten".into() });
        }
        Ok(())
    }
}

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl SqliteStore {
    /// Whether SQLite's open file is no longer the file at its path (removed,
    /// renamed, replaced): its own check, `SQLITE_FCNTL_HAS_MOVED`.
    fn has_moved(&self) -> Result<bool, StoreError> {
        let mut moved: std::os::raw::c_int = 0;
        // SAFETY: the handle is this open connection's, used from this thread
        // only (`&self`); "main" is a NUL-terminated name; HAS_MOVED writes
        // one int through the pointer, which lives across the call.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_file_control(
                self.conn.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_HAS_MOVED,
                (&mut moved as *mut std::os::raw::c_int).cast(),
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rc), None)));
        }
        Ok(moved != 0)
    }

    /// The database file's first bytes, read through SQLite's own file
    /// handle: opening and closing another descriptor on the file would drop
    /// the locks SQLite holds on it (POSIX advisory locks are per process).
    fn read_header(&self) -> Result<[u8; 16], StoreError> {
        let mut file: *mut rusqlite::ffi::sqlite3_file = std::ptr::null_mut();
        let mut header = [0u8; 16];
        // SAFETY: FILE_POINTER stores the connection's sqlite3_file pointer,
        // owned by the connection and valid while it is open and unused by
        // another thread (`&self`). xRead is that file's method, given a
        // buffer of the length it is told.
        let rc = unsafe {
            let rc = rusqlite::ffi::sqlite3_file_control(
                self.conn.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_FILE_POINTER,
                (&mut file as *mut *mut rusqlite::ffi::sqlite3_file).cast(),
            );
            match (rc, file.is_null()) {
                (rusqlite::ffi::SQLITE_OK, false) => match (*file).pMethods.as_ref().and_then(|m| m.xRead) {
                    Some(read) => read(file, header.as_mut_ptr().cast(), header.len() as std::os::raw::c_int, 0),
                    None => rusqlite::ffi::SQLITE_MISUSE,
                },
                (rusqlite::ffi::SQLITE_OK, true) => rusqlite::ffi::SQLITE_MISUSE,
                (rc, _) => rc,
            }
        };
        match rc {
            rusqlite::ffi::SQLITE_OK => Ok(header),
            // A short read (a truncated file) leaves zeros: not the magic.
            rusqlite::ffi::SQLITE_IOERR_SHORT_READ => Ok([0; 16]),
            rc => Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rc), None))),
        }
    }
}

/// How long a health check waits for the write lock.
const HEALTH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

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
}
