//! Backups of the SQLite store, taken while a server runs, and restores:
//! `sigil backup` and `sigil restore`. A backup is a `VACUUM INTO` copy (one
//! snapshot, in one read transaction, which never blocks the server's writer
//! in WAL mode), checked (`integrity_check`, schema version, tables) before it
//! is put in place; a restore refuses a database a server has open.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::sqlite::{SqliteStore, SCHEMA_VERSION};

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
        Ok(Self { conn, path: path.to_owned() })
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

#[cfg(test)]
mod tests {
    use super::*;

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
