//! Every limit over real TCP (`sigil serve --help` lists them): each refuses
//! with an ERR, and the server goes on serving everyone else.

mod support;

use std::time::Duration;

use sigil_proto::command::MergedMessage;
use sigil_proto::{Body, Command, ErrorCode, ServerEvent};
use support::*;
use ulid::Ulid;

async fn err_of(c: &mut sigil_client::Client) -> sigil_proto::event::ErrPayload {
    until(c, |ev| if let ServerEvent::Err(e) = ev { Some(e) } else { None }).await
}

async fn info_works(ts: &TestServer) -> bool {
    let mut raw = ts.raw().await;
    raw.send(b"INFO\n0\n\n").await;
    raw.frame().await.is_some_and(|f| f.command.as_str() == "SINFO")
}

#[tokio::test]
async fn connections_in_total_and_per_ip() {
    let ts = TestServer::start(&[], |c| {
        c.max_connections = 3;
        c.max_connections_per_ip = 2;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut raw = ts.raw().await;
        raw.send(b"INFO\n0\n\n").await;
        assert!(raw.frame().await.is_some());
        held.push(raw);
    }
    // A third from the same address: refused.
    let mut third = ts.raw().await;
    let (_, e) = third.expect_fatal(ErrorCode::RateLimited).await;
    assert!(e.reason.contains("your address"), "{}", e.reason);
    // From another loopback address: admitted, and then the server is full.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = other.connect(ts.addr).await.unwrap();
    let mut from_other = Raw::from_stream(stream);
    from_other.send(b"INFO\n0\n\n").await;
    assert_eq!(from_other.frame().await.unwrap().command.as_str(), "SINFO");
    let mut fourth = ts.raw().await;
    let (_, e) = fourth.expect_fatal(ErrorCode::RateLimited).await;
    assert!(e.reason.contains("too many connections"), "{}", e.reason);
    // A slot frees up when a connection ends (after its input is drained).
    drop(held.pop());
    let mut admitted = false;
    for _ in 0..40 {
        if info_works(&ts).await {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "a freed slot admits a new connection");
}

#[tokio::test]
async fn frames_per_second_are_limited_and_a_flood_is_closed() {
    // A rate so low that no token comes back during the test: only the burst counts.
    let ts = TestServer::start(&["alice", "bob"], |c| {
        c.rate = 0.01;
        c.burst = 5.0;
    })
    .await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.authenticate(&alice).await;
    // The CNN took one token; four more fit the burst, the fifth is dropped with one ERR.
    let mut frames = Vec::new();
    for n in 0..5 {
        frames.extend(signed(&alice, Command::Info, 100 + n, now()));
    }
    raw.send(&frames).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(raw.frame().await.unwrap().command.as_str().to_owned());
    }
    assert_eq!(got, ["SINFO", "SINFO", "SINFO", "SINFO", "ERR"]);
    // Keeping on: closed, with ERR rate_limited.
    let mut flood = Vec::new();
    for n in 0..20 {
        flood.extend(signed(&alice, Command::Info, 200 + n, now()));
    }
    raw.send(&flood).await;
    let mut last = None;
    while let Some(f) = raw.frame().await {
        last = Some(f);
    }
    let e: sigil_proto::event::ErrPayload = rmp_serde::from_slice(&last.unwrap().payload).unwrap();
    assert_eq!(e.code, "rate_limited");
    // bob is unaffected.
    let mut bob = ts.connect("bob").await;
    bob.send(Command::LstUsr { all: false }).await.unwrap();
    assert!(matches!(next(&mut bob).await, ServerEvent::UsrLst(_)));
}

#[tokio::test]
async fn a_frame_that_trickles_in_too_slowly_is_cut_off() {
    let ts = TestServer::start(&[], |c| c.frame_timeout_ms = Some(400)).await;
    // Slowloris: a byte every 100 ms, never finishing the header.
    let mut raw = ts.raw().await;
    // Seven bytes at 100 ms: the 400 ms deadline passes mid-header.
    for b in b"INFO\n99" {
        if raw.stream.try_write(&[*b]).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, e) = raw.expect_fatal(ErrorCode::Timeout).await;
    assert!(e.reason.contains("too long"), "{}", e.reason);
    // A header begun and abandoned: also cut off, before the CNN deadline.
    let mut raw = ts.raw().await;
    raw.send(b"IN").await;
    let started = std::time::Instant::now();
    raw.expect_fatal(ErrorCode::Timeout).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // Whole frames with pauses between them are fine.
    let mut raw = ts.raw().await;
    for _ in 0..3 {
        raw.send(b"INFO\n0\n\n").await;
        assert_eq!(raw.frame().await.unwrap().command.as_str(), "SINFO");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn channels_in_total_per_account_and_members_per_channel() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |c| {
        c.limits.max_channels = 3;
        c.limits.max_channels_per_account = 2;
        c.limits.max_members = 2;
    })
    .await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    for name in ["one", "two"] {
        a.send(Command::ChNew { name: name.into() }).await.unwrap();
        until(&mut a, |ev| matches!(ev, ServerEvent::ChStatus(_)).then_some(())).await;
    }
    a.send(Command::ChNew { name: "three".into() }).await.unwrap();
    let e = err_of(&mut a).await;
    assert_eq!(code(&e), ErrorCode::RateLimited);
    assert!(e.reason.contains("your maximum"), "{}", e.reason);
    b.send(Command::ChNew { name: "bobs".into() }).await.unwrap();
    let bobs = until(&mut b, |ev| if let ServerEvent::ChStatus(s) = ev { Some(s.id) } else { None }).await;
    c.send(Command::ChNew { name: "four".into() }).await.unwrap();
    let e = err_of(&mut c).await;
    assert!(e.reason.contains("maximum number of channels"), "{}", e.reason);
    // bobs has room for one more member: alice is in two channels already, carol joins.
    a.send(Command::ChJoin { id: bobs }).await.unwrap();
    assert!(err_of(&mut a).await.reason.contains("your maximum"));
    c.send(Command::ChJoin { id: bobs }).await.unwrap();
    until(&mut c, |ev| matches!(ev, ServerEvent::ChStatus(_)).then_some(())).await;
    a.send(Command::ChLeave { id: bobs }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::NotMember);
    // Every channel counts toward the server's maximum, whoever created it.
    let mut lst = Vec::new();
    a.send(Command::ChLst).await.unwrap();
    let l = until(&mut a, |ev| if let ServerEvent::LstCh(l) = ev { Some(l) } else { None }).await;
    lst.extend(l.channels.iter().map(|c| c.name.clone()));
    assert_eq!(lst.len(), 3);
}

#[tokio::test]
async fn a_full_channel_refuses_members() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |c| c.limits.max_members = 2).await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    a.send(Command::ChNew { name: "small".into() }).await.unwrap();
    let id = until(&mut a, |ev| if let ServerEvent::ChStatus(s) = ev { Some(s.id) } else { None }).await;
    b.send(Command::ChJoin { id }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChStatus(_)).then_some(())).await;
    c.send(Command::ChJoin { id }).await.unwrap();
    let e = err_of(&mut c).await;
    assert_eq!(code(&e), ErrorCode::RateLimited);
    assert!(e.reason.contains("maximum number of members"), "{}", e.reason);
}

#[tokio::test]
async fn pending_messages_and_merges_per_channel() {
    let ts = TestServer::start(&["alice"], |c| {
        c.limits.max_pending = 2;
        c.limits.max_merges = 1;
    })
    .await;
    let mut a = ts.connect("alice").await;
    let ai = a.credentials.id;
    a.send(Command::ChNew { name: "solo".into() }).await.unwrap();
    let ch = until(&mut a, |ev| if let ServerEvent::ChStatus(s) = ev { Some(s.id) } else { None }).await;
    a.send(Command::ChLead { channel: ch, election: 1 }).await.unwrap();
    until(&mut a, |ev| matches!(ev, ServerEvent::ChElected(_)).then_some(())).await;
    for _ in 0..2 {
        a.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::text("x") }).await.unwrap();
        until(&mut a, |ev| matches!(ev, ServerEvent::ChMsg(_)).then_some(())).await;
    }
    a.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::text("x") }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::RateLimited);
    let merged = |id| MergedMessage { id, from: ai, timestamp: now(), msg: Body::text("m"), acks: vec![ai] };
    a.send(Command::ChMerge { id: ch, msg: vec![merged(Ulid::new()), merged(Ulid::new())] }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::RateLimited);
    a.send(Command::ChMerge { id: ch, msg: vec![merged(Ulid::new())] }).await.unwrap();
    // That one was taken: the channel now has its one merge awaiting confirmation.
    a.send(Command::ChMerge { id: ch, msg: vec![merged(Ulid::new())] }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::RateLimited);
}

#[tokio::test]
async fn the_replay_window_is_bounded_and_still_refuses_evicted_nonces() {
    let ts = TestServer::start(&["alice"], |c| c.limits.replay_window = 2).await;
    // Let the server's start second pass, so frames can be stamped in the past.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.send_request(&alice, Command::Cnn { id: alice.id, batch: false, bind: false }, 1, now()).await;
    raw.frame().await.unwrap();
    // Two nonces fit the window: the third evicts the oldest (stamped two seconds ago).
    let old = raw.send_request(&alice, Command::Info, 2, now() - 2).await;
    assert_eq!(raw.frame().await.unwrap().command.as_str(), "SINFO");
    raw.send_request(&alice, Command::Info, 3, now() - 1).await;
    assert_eq!(raw.frame().await.unwrap().command.as_str(), "SINFO");
    // Its replay is still refused: its timestamp is at the window's floor.
    raw.send(&old).await;
    raw.expect_fatal(ErrorCode::Stale).await;
}

#[tokio::test]
async fn outbound_bytes_bound_a_slow_reader() {
    let ts = TestServer::start(&["sender", "stuck"], |c| {
        c.outbound_queue = 100_000;
        c.outbound_bytes = 65_536;
    })
    .await;
    let mut sender = ts.connect("sender").await;
    let stuck = ts.user("stuck");
    let mut raw = ts.raw().await;
    raw.authenticate(&stuck).await;
    let big = Body::binary(vec![1u8; 30_000]);
    let mut dropped = false;
    for _ in 0..400 {
        sender.send(Command::PvMsg { to: stuck.id, msg_id: Ulid::new(), msg: big.clone() }).await.unwrap();
        // The sender is told the user went offline once the stuck reader is dropped.
        if let Ok(Some(ServerEvent::Udcnn(_))) =
            tokio::time::timeout(Duration::from_millis(5), sender.recv()).await.map(|r| r.unwrap())
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(6)).await;
    }
    assert!(dropped, "the stuck reader is dropped long before 400 × 30 KB are queued");
}

#[tokio::test]
async fn pending_bytes_per_channel_are_bounded() {
    let ts = TestServer::start(&["alice"], |c| c.limits.max_pending_bytes = 10_000).await;
    let mut a = ts.connect("alice").await;
    a.send(Command::ChNew { name: "solo".into() }).await.unwrap();
    let ch = until(&mut a, |ev| if let ServerEvent::ChStatus(s) = ev { Some(s.id) } else { None }).await;
    a.send(Command::ChLead { channel: ch, election: 1 }).await.unwrap();
    until(&mut a, |ev| matches!(ev, ServerEvent::ChElected(_)).then_some(())).await;
    a.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::binary(vec![0u8; 6_000]) }).await.unwrap();
    until(&mut a, |ev| matches!(ev, ServerEvent::ChMsg(_)).then_some(())).await;
    a.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::binary(vec![0u8; 6_000]) }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::RateLimited);
    a.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::binary(vec![0u8; 3_000]) }).await.unwrap();
    until(&mut a, |ev| matches!(ev, ServerEvent::ChMsg(_)).then_some(())).await;
}

#[tokio::test]
async fn unacked_private_deliveries_are_capped_oldest_first() {
    let ts = TestServer::start(&["alice", "bob"], |c| c.limits.max_unacked_private = 2).await;
    let (mut a, mut b) = (ts.connect("alice").await, ts.connect("bob").await);
    let (ai, bi) = (a.credentials.id, b.credentials.id);
    let ids: Vec<Ulid> = (0..3).map(|_| Ulid::new()).collect();
    for id in &ids {
        a.send(Command::PvMsg { to: bi, msg_id: *id, msg: Body::text("x") }).await.unwrap();
        until(&mut b, |ev| matches!(ev, ServerEvent::Msg(m) if m.msg_id == *id).then_some(())).await;
    }
    // The oldest record was evicted: its ack is unknown; the newer two still work.
    b.send(Command::AckMsg { from: ai, msg_id: ids[0] }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::UnknownMsg);
    for id in &ids[1..] {
        b.send(Command::AckMsg { from: ai, msg_id: *id }).await.unwrap();
        until(&mut a, |ev| matches!(ev, ServerEvent::MsgAck(k) if k.msg_id == *id).then_some(())).await;
    }
}

#[tokio::test]
async fn new_connections_per_address_are_metered() {
    let ts = TestServer::start(&[], |c| c.connects_per_ip_per_minute = 3).await;
    for _ in 0..3 {
        assert!(info_works(&ts).await);
    }
    // The fourth within the minute is refused at accept, whatever it sends.
    let mut fourth = ts.raw().await;
    let (frame, e) = fourth.expect_fatal(ErrorCode::RateLimited).await;
    assert!(frame.signature.is_none(), "unsigned: no session");
    assert!(e.reason.contains("new connections from your address"), "{}", e.reason);
    // Another address has its own budget.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut from_other = Raw::from_stream(other.connect(ts.addr).await.unwrap());
    from_other.send(b"INFO\n0\n\n").await;
    assert_eq!(from_other.frame().await.unwrap().command.as_str(), "SINFO");
}

#[tokio::test]
async fn sign_ins_per_account_are_metered_after_the_key_check() {
    let ts = TestServer::start(&["alice", "bob"], |c| c.limits.cnn_per_minute = 2).await;
    let alice = ts.user("alice");
    // A stranger's CNN in alice's name (wrong key) spends nothing of hers.
    let mut forger = ts.raw().await;
    let fake = sigil_client::Credentials { key: sigil_proto::wire::SecretKey::generate(), ..alice.clone() };
    forger.send_request(&fake, Command::Cnn { id: alice.id, batch: false, bind: false }, 1, now()).await;
    forger.expect_fatal(ErrorCode::AuthFailed).await;
    // Two sign-ins pass (the second replaces the first), the third is refused.
    let mut first = ts.raw().await;
    first.authenticate(&alice).await;
    let mut second = ts.raw().await;
    second.authenticate(&alice).await;
    let mut third = ts.raw().await;
    third.send_request(&alice, Command::Cnn { id: alice.id, batch: false, bind: false }, 7, now()).await;
    let (_, e) = third.expect_fatal(ErrorCode::RateLimited).await;
    assert!(e.reason.contains("sign in again in"), "{}", e.reason);
    // The live session is untouched, and bob is not limited by alice's loop.
    second.send_request(&alice, Command::Info, 8, now()).await;
    assert_eq!(second.frame().await.expect("SINFO").command.as_str(), "SINFO");
    let mut bob = ts.raw().await;
    bob.authenticate(&ts.user("bob")).await;
}

#[tokio::test]
async fn lists_spend_a_budget_of_entries_per_session() {
    let names: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ts = TestServer::start(&refs, |c| c.limits.list_entries_per_s = 20).await;
    let mut c = ts.connect("user0").await;
    // Forty entries each, a burst of eighty: two lists, then a refusal that says when.
    for _ in 0..2 {
        c.send(Command::LstUsr { all: true }).await.unwrap();
        until(&mut c, |ev| matches!(ev, ServerEvent::UsrLst(l) if !l.more).then_some(())).await;
    }
    c.send(Command::LstUsr { all: true }).await.unwrap();
    let e = err_of(&mut c).await;
    assert_eq!(code(&e), ErrorCode::RateLimited);
    assert!(e.reason.contains("ask again in"), "{}", e.reason);
    // Others are not slowed: a second session lists at once.
    let mut other = ts.connect("user1").await;
    other.send(Command::LstUsr { all: true }).await.unwrap();
    until(&mut other, |ev| matches!(ev, ServerEvent::UsrLst(l) if !l.more).then_some(())).await;
}

#[tokio::test]
async fn uncommitted_bytes_are_capped_per_account() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |c| {
        c.limits.max_pending_bytes_per_account = 100_000;
        c.limits.max_payload = 65_536;
    })
    .await;
    // Alice leads; bob and carol are online and never ack, so nothing commits.
    let mut alice = ts.connect("alice").await;
    let mut bob = ts.connect("bob").await;
    let mut carol = ts.connect("carol").await;
    alice.send(Command::ChNew { name: "room".into() }).await.unwrap();
    let ch = until(&mut alice, |ev| if let ServerEvent::ChUjoin(u) = ev { Some(u.channel) } else { None }).await;
    for c in [&mut bob, &mut carol] {
        c.send(Command::ChJoin { id: ch }).await.unwrap();
        until(c, |ev| matches!(ev, ServerEvent::ChUjoin(u) if u.channel == ch).then_some(())).await;
    }
    alice.send(Command::ChLead { channel: ch, election: 1 }).await.unwrap();
    until(&mut bob, |ev| matches!(ev, ServerEvent::ChVote(_)).then_some(())).await;
    let me = ts.user("alice").id;
    bob.send(Command::ChVote { channel: ch, election: 1, user: me }).await.unwrap();
    until(&mut alice, |ev| matches!(ev, ServerEvent::ChStatus(s) if s.leader == Some(me)).then_some(())).await;
    let big = Body::text("x".repeat(40_000));
    let mut refused = None;
    for _ in 0..4 {
        alice.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: big.clone() }).await.unwrap();
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match alice.recv().await {
                    Ok(Some(ServerEvent::Err(e))) => return Some(e),
                    Ok(Some(_)) => {}
                    _ => return None,
                }
            }
        })
        .await
        {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("the third 40 KB message passes the 100 KB cap");
    assert_eq!(code(&e), ErrorCode::RateLimited, "{e:?}");
    assert!(e.reason.contains("an account may hold 100000"), "{}", e.reason);
}
