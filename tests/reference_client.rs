//! The reference client behaviour over real TCP (PROTOCOL.md §7, reference
//! client): three clients driven only by `Agent` elect a leader, commit
//! messages, re-elect when the leader is killed, and the returning client
//! pulls what it missed. The test only creates/joins the channel and types
//! the messages, as a person would.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sigil::client::agent::Agent;
use sigil::client::{Client, Credentials};
use sigil::proto::{Body, Command, ServerEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use ulid::Ulid;

struct Peer {
    name: String,
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<ServerEvent>,
    task: JoinHandle<()>,
}

/// Runs a client with the reference behaviour; the test may type commands.
async fn peer(addr: std::net::SocketAddr, cred: Credentials, seed: u64) -> Peer {
    let client = Client::connect(addr, &cred).await.expect("connect");
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(64);
    let (ev_tx, ev_rx) = mpsc::channel::<ServerEvent>(4096);
    let name = cred.name.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut agent = Agent::new(cred.id, seed);
        let (mut reader, mut writer) = client.split();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            let send = tokio::select! {
                ev = reader.recv() => match ev {
                    Ok(Some(ev)) => {
                        let out = agent.on_event(&ev, start.elapsed().as_millis() as u64);
                        let _ = ev_tx.try_send(ev);
                        out
                    }
                    _ => return,
                },
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => vec![c],
                    None => return,
                },
                _ = tick.tick() => agent.tick(start.elapsed().as_millis() as u64),
            };
            for c in send {
                if writer.send(c).await.is_err() {
                    return;
                }
            }
        }
    });
    Peer { name, commands: cmd_tx, events: ev_rx, task }
}

impl Peer {
    async fn until<T>(&mut self, mut pick: impl FnMut(&ServerEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{} waited in vain", self.name))
                .expect("peer running");
            if let Some(t) = pick(&ev) {
                return t;
            }
        }
    }

    async fn leader(&mut self, channel: Ulid) -> Ulid {
        self.until(|ev| match ev {
            ServerEvent::ChStatus(s) if s.id == channel && s.status == "healthy" => s.leader,
            _ => None,
        })
        .await
    }

    async fn committed(&mut self, msg_id: Ulid) {
        self.until(|ev| matches!(ev, ServerEvent::ChMsgCommit(c) if c.id == msg_id).then_some(())).await
    }
}

#[tokio::test]
async fn three_reference_clients_elect_chat_and_survive_losing_the_leader() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    let mut peers = Vec::new();
    for (i, n) in ["alice", "bob", "carol"].iter().enumerate() {
        peers.push(peer(ts.addr, ts.user(n), i as u64 + 1).await);
    }
    // A person creates the channel and the others join it; nothing else is typed.
    peers[0].commands.send(Command::ChNew { name: "general".into() }).await.unwrap();
    let ch = peers[0].until(|ev| if let ServerEvent::ChUjoin(u) = ev { Some(u.channel) } else { None }).await;
    for p in &peers[1..] {
        p.commands.send(Command::ChJoin { id: ch }).await.unwrap();
    }
    // They elect a leader by themselves, and all agree on it.
    let mut leaders = Vec::new();
    for p in &mut peers {
        leaders.push(p.leader(ch).await);
    }
    // Every leader seen was elected by a majority; wait until all agree on the last one.
    let leader = leaders[0];
    for (p, seen) in peers.iter_mut().zip(&leaders) {
        if *seen != leader {
            p.until(|ev| match ev {
                ServerEvent::ChElected(e) if e.leader == leader => Some(()),
                ServerEvent::ChStatus(s) if s.leader == Some(leader) => Some(()),
                _ => None,
            })
            .await;
        }
    }
    // carol types a message: acked and committed without anyone doing more.
    let m1 = Ulid::new();
    peers[2].commands.send(Command::ChMsg { id: ch, msg_id: m1, msg: Body::text("first") }).await.unwrap();
    for p in &mut peers {
        p.committed(m1).await;
    }

    // The leader's client is killed; the other two elect a new one and go on.
    let li = ["alice", "bob", "carol"].iter().position(|n| ts.user(n).id == leader).unwrap();
    let killed = peers.remove(li);
    killed.task.abort();
    let _ = killed.task.await;
    let mut new_leaders = Vec::new();
    for p in &mut peers {
        new_leaders.push(p.leader(ch).await);
    }
    assert!(new_leaders.iter().all(|l| *l != leader), "a new leader");
    let m2 = Ulid::new();
    peers[0].commands.send(Command::ChMsg { id: ch, msg_id: m2, msg: Body::text("second") }).await.unwrap();
    for p in &mut peers {
        p.committed(m2).await;
    }

    // The killed client comes back and pulls what it missed by itself.
    let mut back = peer(ts.addr, ts.user(&killed.name), 99).await;
    let pulled = back
        .until(|ev| match ev {
            ServerEvent::ChAppend(a) if a.id == ch => Some(a.messages.iter().map(|m| m.id).collect::<Vec<_>>()),
            _ => None,
        })
        .await;
    assert_eq!(pulled, vec![m1, m2]);
}
