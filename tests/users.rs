//! Users and private messages over real TCP (PROTOCOL.md §6), and the slow-consumer rule.

mod support;

use sigil_proto::{Body, Command, ErrorCode, ServerEvent};
use support::*;
use ulid::Ulid;

#[tokio::test]
async fn private_message_ack_and_handshake() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    let mut bob = ts.connect("bob").await;
    let _ = next(&mut alice).await; // UCNN bob
    let (a, b) = (alice.credentials.id, bob.credentials.id);

    alice.send(Command::CnnUsr { to: b }).await.unwrap();
    assert!(matches!(next(&mut bob).await, ServerEvent::UsrHsk(h) if h.id == a));
    assert!(matches!(next(&mut alice).await, ServerEvent::UsrHsk(h) if h.id == b));

    let msg_id = Ulid::new();
    let before = now();
    alice.send(Command::PvMsg { to: b, msg_id, msg: Body::binary(vec![0u8, 1, 2, 255]) }).await.unwrap();
    let ServerEvent::Msg(m) = next(&mut bob).await else { panic!("MSG") };
    assert_eq!((m.from, m.msg_id, m.msg.clone()), (a, msg_id, Body::binary(vec![0u8, 1, 2, 255])));
    assert!(m.timestamp >= before && m.timestamp <= now(), "server time");
    // A str body stays a str.
    let text_id = Ulid::new();
    alice.send(Command::PvMsg { to: b, msg_id: text_id, msg: Body::text("héllo") }).await.unwrap();
    let ServerEvent::Msg(m2) = next(&mut bob).await else { panic!("MSG") };
    assert_eq!(m2.msg, Body::text("héllo"));

    bob.send(Command::AckMsg { from: a, msg_id }).await.unwrap();
    assert!(matches!(next(&mut alice).await, ServerEvent::MsgAck(k) if k.msg_id == msg_id && k.by == b));
    // The same ack again: the delivery was settled.
    let nonce = bob.send(Command::AckMsg { from: a, msg_id }).await.unwrap();
    let e = next_err(&mut bob).await;
    assert_eq!((code(&e), e.nonce_ref), (ErrorCode::UnknownMsg, Some(nonce)));
    // Reusing a msg_id still awaiting its ack is refused.
    alice.send(Command::PvMsg { to: b, msg_id: text_id, msg: Body::text("again") }).await.unwrap();
    assert_eq!(code(&next_err(&mut alice).await), ErrorCode::DuplicateMsg);
}

#[tokio::test]
async fn acks_cannot_be_forged() {
    let ts = TestServer::start(&["alice", "bob", "mallory"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    let mut bob = ts.connect("bob").await;
    let mut mallory = ts.connect("mallory").await;
    let (a, b) = (alice.credentials.id, bob.credentials.id);
    let msg_id = Ulid::new();
    alice.send(Command::PvMsg { to: b, msg_id, msg: Body::text("for bob only") }).await.unwrap();
    until(&mut bob, |ev| matches!(ev, ServerEvent::Msg(_)).then_some(())).await;
    // Mallory acks a message that was never delivered to her.
    mallory.send(Command::AckMsg { from: a, msg_id }).await.unwrap();
    let e = until(&mut mallory, |ev| if let ServerEvent::Err(e) = ev { Some(e) } else { None }).await;
    assert_eq!(code(&e), ErrorCode::UnknownMsg);
    // Bob acks an id alice never sent.
    bob.send(Command::AckMsg { from: a, msg_id: Ulid::new() }).await.unwrap();
    assert_eq!(code(&next_err(&mut bob).await), ErrorCode::UnknownMsg);
    // Alice saw no MSG_ACK from any of that.
    alice.send(Command::LstUsr { all: false }).await.unwrap();
    let first_non_presence = until(&mut alice, |ev| match ev {
        ServerEvent::Ucnn(_) => None,
        other => Some(other),
    })
    .await;
    assert!(matches!(first_non_presence, ServerEvent::UsrLst(_)), "no forged MSG_ACK: {first_non_presence:?}");
}

#[tokio::test]
async fn offline_and_unknown_targets() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    let b = ts.user("bob").id;
    let nonce = alice.send(Command::PvMsg { to: b, msg_id: Ulid::new(), msg: Body::text("hi") }).await.unwrap();
    let e = next_err(&mut alice).await;
    assert_eq!((code(&e), e.nonce_ref), (ErrorCode::UserOffline, Some(nonce)));
    alice.send(Command::CnnUsr { to: b }).await.unwrap();
    assert_eq!(code(&next_err(&mut alice).await), ErrorCode::UserOffline);
    alice.send(Command::PvMsg { to: Ulid::new(), msg_id: Ulid::new(), msg: Body::text("hi") }).await.unwrap();
    assert_eq!(code(&next_err(&mut alice).await), ErrorCode::NoSuchUser);
    alice.send(Command::CnnUsr { to: Ulid::new() }).await.unwrap();
    assert_eq!(code(&next_err(&mut alice).await), ErrorCode::NoSuchUser);
}

#[tokio::test]
async fn a_reader_that_never_reads_is_dropped_while_others_keep_receiving() {
    let ts = TestServer::start(&["sender", "stuck", "normal"], |c| c.outbound_queue = 8).await;
    let mut sender = ts.connect("sender").await;
    let mut normal = ts.connect("normal").await;
    // The stuck client authenticates, then never reads again.
    let stuck_cred = ts.user("stuck");
    let mut stuck = ts.raw().await;
    stuck.authenticate(&stuck_cred).await;
    let n = normal.credentials.id;
    let big = Body::binary(vec![7u8; 60_000]);
    let mut dropped = false;
    let mut delivered_to_normal = 0;
    // Bounded: each round sends one big message to each; the kernel buffers fill after a few hundred.
    for _ in 0..2_000 {
        sender.send(Command::PvMsg { to: stuck_cred.id, msg_id: Ulid::new(), msg: big.clone() }).await.unwrap();
        let id = Ulid::new();
        sender.send(Command::PvMsg { to: n, msg_id: id, msg: Body::text("still here") }).await.unwrap();
        let got = until(&mut normal, |ev| match ev {
            ServerEvent::Msg(m) if m.msg_id == id => Some(true),
            ServerEvent::Udcnn(u) if u.name == "stuck" => Some(false),
            _ => None,
        })
        .await;
        if got {
            delivered_to_normal += 1;
        } else {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stuck reader must be dropped");
    assert!(delivered_to_normal > 0);
    // The normal client still gets messages after the drop, and the sender is unaffected.
    let id = Ulid::new();
    sender.send(Command::PvMsg { to: n, msg_id: id, msg: Body::text("after") }).await.unwrap();
    until(&mut normal, |ev| matches!(ev, ServerEvent::Msg(m) if m.msg_id == id).then_some(())).await;
    // Draining the stuck socket: the frames that were in flight, then ERR slow_consumer, then EOF.
    let mut saw_slow_consumer = false;
    while let Some(f) = stuck.frame().await {
        if f.command.as_str() == "ERR" {
            let e: sigil_proto::event::ErrPayload = rmp_serde::from_slice(&f.payload).unwrap();
            saw_slow_consumer |= e.code == "slow_consumer";
        }
    }
    assert!(saw_slow_consumer, "the dropped client is told why");
}

#[tokio::test]
async fn every_account_is_listed_with_its_status_when_asked_for_all() {
    let ts = TestServer::start(&["alice", "bob", "Carol"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    alice.send(Command::LstUsr { all: true }).await.unwrap();
    let list = until(&mut alice, |ev| if let ServerEvent::UsrLst(l) = ev { Some(l) } else { None }).await;
    let listed: Vec<(&str, &str)> = list.users.iter().map(|u| (u.name.as_str(), u.status.as_str())).collect();
    assert_eq!(listed, [("alice", "online"), ("bob", "offline"), ("Carol", "offline")]);
    assert!(!list.more);
    // Without `all`, the connected users only.
    alice.send(Command::LstUsr { all: false }).await.unwrap();
    let list = until(&mut alice, |ev| if let ServerEvent::UsrLst(l) = ev { Some(l) } else { None }).await;
    assert_eq!(list.users.len(), 1);
}
