//! Crash safety (PROTOCOL.md §8): a stream of commits, the server killed with
//! SIGKILL at a random point, restarted on the same database; every message
//! any client saw in a `CH_MSG_COMMIT` must be in the history, in order, and
//! the history only ever grows. Repeated over several kill points. The same
//! with SIGTERM: a graceful shutdown with commits in flight exits 0 and loses
//! nothing it announced.
//!
//! The kill points come from a seed, printed on failure; rerun one with
//! `SIGIL_CRASH_SEED=<seed> cargo test --test crash`.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use sigil_client::{Client, Credentials};
use sigil_proto::{Body, Command, ServerEvent};
use sigil_server::store::Store;
use support::ServerProcess;
use ulid::Ulid;

const ROUNDS: u64 = 4;

/// The commits one client saw, in the order it saw them.
type Seen = Arc<Mutex<Vec<Ulid>>>;

async fn connect(addr: &str, cred: &Credentials) -> Client {
    Client::connect(addr, cred).await.expect("connect")
}

/// Pulls the whole history of `ch`.
async fn history(addr: &str, cred: &Credentials, ch: Ulid) -> Vec<Ulid> {
    let mut c = connect(addr, cred).await;
    let mut anchor = None;
    let mut ids = Vec::new();
    loop {
        c.send(Command::ChPull { id: ch, anchor }).await.unwrap();
        let page = loop {
            match tokio::time::timeout(Duration::from_secs(10), c.recv()).await.expect("pull answer").unwrap() {
                Some(ServerEvent::ChAppend(a)) => break a,
                Some(_) => {}
                None => panic!("closed while pulling"),
            }
        };
        ids.extend(page.messages.iter().map(|m| m.id));
        anchor = ids.last().copied();
        if !page.more {
            return ids;
        }
    }
}

/// Records commits and reacts like a minimal member: acks what it receives;
/// the leader commits on the sender's and one more ack (2 of 3).
fn member(mut c: Client, leader: bool, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let me = c.credentials.id;
        let mut senders = std::collections::HashMap::new();
        while let Ok(Some(ev)) = c.recv().await {
            let reply = match ev {
                ServerEvent::ChMsg(m) => {
                    senders.insert(m.msg_id, m.from);
                    (m.from != me).then_some(Command::AckChMsg { id: m.msg_id, ids: Vec::new() })
                }
                ServerEvent::ChMsgAck(a) if leader => senders.get(&a.id).map(|from| Command::ChCommit {
                    id: a.id,
                    acks: vec![*from, a.user],
                    ids: Vec::new(),
                }),
                ServerEvent::ChMsgCommit(k) => {
                    seen.lock().unwrap().push(k.id);
                    None
                }
                _ => None,
            };
            if let Some(cmd) = reply {
                if c.send(cmd).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// How a round stops the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful shutdown, which must exit 0.
    Term,
}

#[tokio::test]
async fn commits_survive_sigkill_at_random_points() {
    commits_survive(Stop::Kill, ROUNDS).await;
}

#[tokio::test]
async fn a_graceful_shutdown_with_commits_in_flight_exits_0_and_loses_nothing() {
    commits_survive(Stop::Term, 2).await;
}

async fn commits_survive(stop: Stop, rounds: u64) {
    let seed: u64 = std::env::var("SIGIL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let creds: Vec<Credentials> = {
        let mut store = Store::open(&dir.path().join("sigil.db")).unwrap();
        ["alice", "bob", "carol"]
            .iter()
            .map(|n| {
                let a = store.add_account(n, sigil_server::now_unix()).unwrap();
                Credentials { id: a.id, name: a.name, key: a.key }
            })
            .collect()
    };
    let mut channel = None;
    let mut previous: Vec<Ulid> = Vec::new();
    let mut total_seen = 0;
    for round in 1..=rounds {
        let server = ServerProcess::start(dir.path(), &["--rate", "100000", "--burst", "100000"]);
        let addr = server.addr.clone();
        let (mut a, mut b, mut c) =
            (connect(&addr, &creds[0]).await, connect(&addr, &creds[1]).await, connect(&addr, &creds[2]).await);
        let ch = match channel {
            Some(ch) => ch,
            None => {
                a.send(Command::ChNew { name: "crash".into() }).await.unwrap();
                let ch = support::until(&mut a, |ev| if let ServerEvent::ChStatus(s) = ev { Some(s.id) } else { None })
                    .await;
                for x in [&mut b, &mut c] {
                    x.send(Command::ChJoin { id: ch }).await.unwrap();
                    support::until(x, |ev| matches!(ev, ServerEvent::ChStatus(_)).then_some(())).await;
                }
                channel = Some(ch);
                ch
            }
        };
        // A new election every round: numbers survive restarts, so they must grow.
        a.send(Command::ChLead { channel: ch, election: round * 10 }).await.unwrap();
        for x in [&mut b, &mut c] {
            support::until(x, |ev| matches!(ev, ServerEvent::ChVote(_)).then_some(())).await;
            x.send(Command::ChVote { channel: ch, election: round * 10, user: creds[0].id }).await.unwrap();
        }
        support::until(&mut a, |ev| matches!(ev, ServerEvent::ChElected(_)).then_some(())).await;

        let views: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
        let tasks = vec![member(a, true, views[0].clone()), member(c, false, views[2].clone())];
        // bob streams messages (recording commits too) until the server dies.
        let (mut reader, mut writer) = b.split();
        let bob_seen = views[1].clone();
        let bob_reader = tokio::spawn(async move {
            while let Ok(Some(ev)) = reader.recv().await {
                if let ServerEvent::ChMsgCommit(k) = ev {
                    bob_seen.lock().unwrap().push(k.id);
                }
            }
        });
        let sender = tokio::spawn(async move {
            for i in 0..5_000 {
                let m = Ulid::new();
                if writer.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text(format!("m{i}")) }).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let kill_after = Duration::from_millis(rng.gen_range(150..1_200));
        tokio::time::sleep(kill_after).await;
        let mut server = server;
        match stop {
            Stop::Kill => {
                server.child.kill().expect("SIGKILL");
                server.child.wait().unwrap();
            }
            Stop::Term => {
                let pid = server.child.id().to_string();
                assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                let status = loop {
                    if let Some(status) = server.child.try_wait().unwrap() {
                        break status;
                    }
                    assert!(std::time::Instant::now() < deadline, "seed {seed}: no exit after SIGTERM");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                assert!(status.success(), "seed {seed}: a graceful shutdown exits 0, not {status}");
            }
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), bob_reader).await;
        sender.abort();
        let views: Vec<Vec<Ulid>> = views.iter().map(|v| v.lock().unwrap().clone()).collect();

        // Restart on the same database and read the history back.
        let server = ServerProcess::start(dir.path(), &[]);
        let history = history(&server.addr, &creds[1], ch).await;
        let unique: HashSet<_> = history.iter().collect();
        assert_eq!(unique.len(), history.len(), "seed {seed}: a message is twice in the history");
        assert!(history.starts_with(&previous), "seed {seed}, round {round}: history lost or reordered across a crash");
        let position: std::collections::HashMap<_, _> = history.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for (who, view) in views.iter().enumerate() {
            let mut last = None;
            for id in view {
                let Some(&at) = position.get(id) else {
                    panic!("seed {seed}, round {round}: {id} was announced committed but is not in the history");
                };
                assert!(
                    last.is_none_or(|l| at > l),
                    "seed {seed}, round {round}: client {who} saw commits out of order"
                );
                last = Some(at);
            }
            total_seen += view.len();
        }
        previous = history;
        drop(server);
    }
    assert!(total_seen > 0, "seed {seed}: no commit was seen at all");
    println!(
        "{stop:?}, seed {seed}: {total_seen} commit announcements checked, {} messages in history",
        previous.len()
    );
}
