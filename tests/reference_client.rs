//! The reference client behaviour over real TCP (PROTOCOL.md §7, reference
//! client): three clients driven only by `Agent` elect a leader, commit
//! messages, re-elect when the leader is killed, and the returning client
//! pulls what it missed. The test only creates/joins the channel and types
//! the messages, as a person would.

mod support;

use sigil_proto::{Body, Command, ServerEvent};
use support::*;
use ulid::Ulid;

#[tokio::test]
async fn three_reference_clients_elect_chat_and_survive_losing_the_leader() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    let mut peers = Vec::new();
    for (i, n) in ["alice", "bob", "carol"].iter().enumerate() {
        peers.push(Peer::start(ts.addr, ts.user(n), i as u64 + 1).await);
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
    // Wait until all agree on the leader the first one saw.
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
    let mut back = Peer::start(ts.addr, ts.user(&killed.name), 99).await;
    let pulled = back
        .until(|ev| match ev {
            ServerEvent::ChAppend(a) if a.id == ch => Some(a.messages.iter().map(|m| m.id).collect::<Vec<_>>()),
            _ => None,
        })
        .await;
    assert_eq!(pulled, vec![m1, m2]);
}
