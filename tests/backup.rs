//! `sigil backup` and `sigil restore` (PROTOCOL.md §9.7, README "Backups"),
//! run as the real binary against real servers: a backup taken while a writer
//! commits is a whole, gap-free prefix of the live history; bad input is
//! refused by name; a restore puts the old content back and keeps what it
//! replaced; a restore under a running server is refused.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::{Body, Command, ServerEvent};
use sigil_server::store::backup::verify_backup;
use sigil_server::store::{SqliteStore, Storage};
use support::*;
use ulid::Ulid;

fn sigil(dir: &Path, args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_sigil")).current_dir(dir).args(args).output().expect("run sigil")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "sigil failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "expected exit 1, stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("sigil: "), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// The committed history of `channel` in the database at `db`: (seq, id).
fn history(db: &Path, channel: Ulid) -> Vec<(u64, Ulid)> {
    let store = SqliteStore::open_existing(db).expect("open database");
    let snapshot = store.channel_snapshots().unwrap().into_iter().find(|c| c.id == channel).expect("the channel");
    snapshot.history.into_iter().map(|(id, seq)| (seq, id)).collect()
}

fn account_names(db: &Path) -> Vec<String> {
    SqliteStore::open_existing(db).expect("open database").accounts().unwrap().into_iter().map(|a| a.name).collect()
}

/// Files in `dir` whose name contains `part`.
fn files_with(dir: &Path, part: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(part))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_a_writer_commits_is_a_whole_gap_free_prefix() {
    let mut ts = TestServer::start(&["alice", "bob", "carol"], |c| {
        c.rate = 1e6;
        c.burst = 1e6;
    })
    .await;
    let (mut peers, ch) = support::led_channel(&ts, &["alice", "bob", "carol"], "general").await;

    // bob types a message every 5 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, commands) = (stop.clone(), peers[1].commands.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let msg = Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::text(format!("m{i}")) };
                if commands.send(msg).await.is_err() {
                    return;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Commits are flowing before the backup starts.
    for _ in 0..20 {
        peers[2].until(|ev| matches!(ev, ServerEvent::ChMsgCommit(_)).then_some(())).await;
    }

    let db = ts.db();
    let out = ts.dir.path().join("copy.db");
    let (db_arg, out_arg) = (db.to_str().unwrap().to_owned(), out.to_str().unwrap().to_owned());
    let dir = ts.dir.path().to_owned();
    let output =
        tokio::task::spawn_blocking(move || sigil(&dir, &["backup", "--db", &db_arg, &out_arg])).await.unwrap();
    let line = ok(&output);

    // One more commit typed after the backup ended: the live history is longer.
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let last = Ulid::new();
    peers[0].commands.send(Command::ChMsg { id: ch, msg_id: last, msg: Body::text("after") }).await.unwrap();
    peers[0].committed(last).await;
    ts.stop().await;

    let report = verify_backup(&out).expect("the copy passes integrity_check and the schema check");
    let copied = history(&out, ch);
    let live = history(&db, ch);
    let n = copied.len();
    assert!(n >= 20, "the copy holds the commits made before it started ({n})");
    assert_eq!(report.history, n as u64);
    assert_eq!(report.accounts, 3);
    assert_eq!(report.channels, 1);
    let seqs: Vec<u64> = copied.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>(), "the copy's history has no holes");
    assert!(live.len() > n, "writes went on during and after the backup ({} live, {n} copied)", live.len());
    assert_eq!(&live[..n], &copied[..], "the copy is a prefix of the live history");
    assert!(live.iter().any(|(_, id)| *id == last));
    assert_eq!(
        line.trim(),
        format!(
            "backed up {} to {}: {} bytes, 3 accounts, 1 channels, {n} history rows",
            db.display(),
            out.display(),
            std::fs::metadata(&out).unwrap().len()
        )
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600, "the copy holds keys");
    }
    assert!(files_with(ts.dir.path(), ".tmp-").is_empty(), "no temporary file is left");
}

#[test]
fn backup_refuses_a_missing_database_an_existing_output_and_a_non_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(&sigil(d, &["backup", "--db", "missing.db", "out.db"]), &["missing.db", "no such database"]);
    assert!(!d.join("missing.db").exists(), "no empty database is created");
    assert!(!d.join("out.db").exists());
    // The default --db is sigil.db, refused likewise when absent.
    fails(&sigil(d, &["backup", "out.db"]), &["sigil.db"]);
    assert!(!d.join("sigil.db").exists());

    ok(&sigil(d, &["account", "add", "alice", "--json"]));
    std::fs::write(d.join("out.db"), b"precious").unwrap();
    fails(&sigil(d, &["backup", "--db", "sigil.db", "out.db"]), &["out.db", "already exists", "--force"]);
    assert_eq!(std::fs::read(d.join("out.db")).unwrap(), b"precious", "OUT is untouched");
    let line = ok(&sigil(d, &["backup", "--db", "sigil.db", "out.db", "--force"]));
    assert!(line.contains("1 accounts"), "{line}");
    assert_eq!(account_names(&d.join("out.db")), ["alice"]);

    // Not a database: refused by name, and nothing is left behind.
    std::fs::write(d.join("junk.db"), vec![b'j'; 10_000]).unwrap();
    fails(&sigil(d, &["backup", "--db", "junk.db", "junk-copy.db"]), &["junk.db", "not a sigil database"]);
    assert!(!d.join("junk-copy.db").exists());
    fails(&sigil(d, &["restore", "--db", "sigil.db", "junk.db"]), &["junk.db", "not a sigil database"]);
    fails(&sigil(d, &["restore", "--db", "sigil.db", "nothing.db"]), &["nothing.db", "no such database"]);
    assert_eq!(account_names(&d.join("sigil.db")), ["alice"], "a refused restore changes nothing");
    assert!(files_with(d, ".tmp-").is_empty() && files_with(d, "before-restore").is_empty());
}

#[test]
fn restore_puts_the_backup_back_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&sigil(d, &["account", "add", "alice", "--json"]));
    let server = ServerProcess::start(d, &[]);
    ok(&sigil(d, &["backup", "--db", "sigil.db", "nightly.db"]));
    // A change after the backup, made while the server runs: it sits in the WAL.
    ok(&sigil(d, &["account", "add", "bob", "--json"]));
    drop(server); // SIGKILL: the -wal file is left as a crash leaves it.
    assert!(d.join("sigil.db-wal").exists(), "the test needs a left-over WAL");

    let line = ok(&sigil(d, &["restore", "--db", "sigil.db", "nightly.db"]));
    assert!(line.starts_with("restored sigil.db from nightly.db: "), "{line}");
    assert!(line.contains("1 accounts") && line.contains("the old database is kept as"), "{line}");
    assert_eq!(account_names(&d.join("sigil.db")), ["alice"], "the restored database has the old content");
    for side in ["sigil.db-wal", "sigil.db-shm"] {
        assert!(!d.join(side).exists(), "{side} of the old database is removed");
    }
    let kept = files_with(d, "sigil.db.before-restore-");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(line.trim_end().ends_with(&*kept[0].file_name().unwrap().to_string_lossy()), "{line}");
    verify_backup(&kept[0]).expect("the kept file is whole");
    assert_eq!(account_names(&kept[0]), ["alice", "bob"], "the kept file holds what was only in the WAL");
    // sigil serves the restored file.
    let list = ok(&sigil(d, &["account", "list"]));
    assert!(list.contains("alice") && !list.contains("bob"), "{list}");

    // --no-keep keeps nothing more.
    ok(&sigil(d, &["account", "add", "carol", "--json"]));
    let line = ok(&sigil(d, &["restore", "--db", "sigil.db", "nightly.db", "--no-keep"]));
    assert!(!line.contains("kept"), "{line}");
    assert_eq!(files_with(d, "before-restore").len(), 1);
    assert_eq!(account_names(&d.join("sigil.db")), ["alice"]);
    assert!(files_with(d, ".tmp-").is_empty());
}

#[test]
fn restore_refuses_while_a_server_runs_on_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&sigil(d, &["account", "add", "alice", "--json"]));
    ok(&sigil(d, &["backup", "--db", "sigil.db", "nightly.db"]));
    let server = ServerProcess::start(d, &[]);
    ok(&sigil(d, &["account", "add", "bob", "--json"]));
    fails(&sigil(d, &["restore", "--db", "sigil.db", "nightly.db"]), &["sigil.db", "in use", "sigil serve"]);
    assert!(files_with(d, "before-restore").is_empty(), "nothing is kept: nothing was replaced");
    assert!(files_with(d, ".tmp-").is_empty());
    let list = ok(&sigil(d, &["account", "list"]));
    assert!(list.contains("alice") && list.contains("bob"), "the database is unchanged: {list}");
    drop(server);
}
