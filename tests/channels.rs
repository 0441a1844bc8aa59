//! Channels over real TCP (PROTOCOL.md §7): membership, elections, messages,
//! acks, commits, history, merges, restarts.

mod support;

use sigil_client::Client;
use sigil_proto::command::MergedMessage;
use sigil_proto::event::{ChStatus, HistoryEntry};
use sigil_proto::{Body, Command, ErrorCode, ServerEvent};
use support::*;
use ulid::Ulid;

fn status_of(ev: ServerEvent) -> Option<ChStatus> {
    if let ServerEvent::ChStatus(s) = ev {
        Some(s)
    } else {
        None
    }
}

async fn err_of(c: &mut Client) -> sigil_proto::event::ErrPayload {
    until(c, |ev| if let ServerEvent::Err(e) = ev { Some(e) } else { None }).await
}

/// alice creates `name`; the others join. Returns the channel id.
async fn channel_with(name: &str, creator: &mut Client, others: &mut [&mut Client]) -> Ulid {
    creator.send(Command::ChNew { name: name.into() }).await.unwrap();
    let me = creator.credentials.id;
    let joined = until(creator, |ev| if let ServerEvent::ChUjoin(u) = ev { Some(u) } else { None }).await;
    assert_eq!(joined.user, me);
    let s = until(creator, status_of).await;
    assert_eq!((s.id, s.name.as_str(), s.leader, s.election, s.online), (joined.channel, name, None, 0, 1));
    assert_eq!(s.status, "unhealthy");
    for o in others.iter_mut() {
        o.send(Command::ChJoin { id: s.id }).await.unwrap();
        let u = until(o, |ev| if let ServerEvent::ChUjoin(u) = ev { Some(u) } else { None }).await;
        assert_eq!(u.user, o.credentials.id);
        until(o, status_of).await;
    }
    s.id
}

/// `leader` stands in election `n`; every voter votes; all see CH_ELECTED.
async fn elect(channel: Ulid, n: u64, leader: &mut Client, voters: &mut [&mut Client]) {
    let l = leader.credentials.id;
    leader.send(Command::ChLead { channel, election: n }).await.unwrap();
    for v in voters.iter_mut() {
        let req = until(v, |ev| if let ServerEvent::ChVote(r) = ev { Some(r) } else { None }).await;
        assert_eq!((req.channel, req.election, req.user), (channel, n, l));
        v.send(Command::ChVote { channel, election: n, user: l }).await.unwrap();
    }
    let e = until(leader, |ev| if let ServerEvent::ChElected(e) = ev { Some(e) } else { None }).await;
    assert_eq!((e.leader, e.election), (l, n));
    until(leader, |ev| status_of(ev).filter(|s| s.leader == Some(l))).await;
}

#[tokio::test]
async fn happy_path_create_join_elect_message_ack_commit_pull() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    let (ai, bi, ci) = (a.credentials.id, b.credentials.id, c.credentials.id);
    let ch = channel_with("general", &mut a, &mut [&mut b, &mut c]).await;
    // Everyone online sees the others join, and the online count.
    let s = until(&mut a, |ev| status_of(ev).filter(|s| s.online == 3)).await;
    assert_eq!(s.leader, None);

    elect(ch, 1, &mut a, &mut [&mut b, &mut c]).await;
    let s = until(&mut b, |ev| status_of(ev).filter(|s| s.leader == Some(ai))).await;
    assert_eq!((s.status.as_str(), s.election, s.online), ("healthy", 1, 3));
    // Votes after the majority are accepted silently.
    until(&mut c, |ev| matches!(ev, ServerEvent::ChElected(_)).then_some(())).await;

    let m = Ulid::new();
    c.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("hello all") }).await.unwrap();
    for x in [&mut a, &mut b, &mut c] {
        let got = until(x, |ev| if let ServerEvent::ChMsg(g) = ev { Some(g) } else { None }).await;
        assert_eq!((got.id, got.msg_id, got.from, got.msg), (ch, m, ci, Body::text("hello all")));
    }
    b.send(Command::AckChMsg { id: m, ids: Vec::new() }).await.unwrap();
    // The leader and the sender learn of bob's ack.
    for x in [&mut a, &mut c] {
        let k = until(x, |ev| if let ServerEvent::ChMsgAck(k) = ev { Some(k) } else { None }).await;
        assert_eq!((k.id, k.user), (m, bi));
    }
    a.send(Command::AckChMsg { id: m, ids: Vec::new() }).await.unwrap();
    let k = until(&mut c, |ev| if let ServerEvent::ChMsgAck(k) = ev { Some(k) } else { None }).await;
    assert_eq!(k.user, ai);
    // The leader commits on carol (sender) + bob: 2 of 3.
    a.send(Command::ChCommit { id: m, acks: vec![ci, bi], ids: Vec::new() }).await.unwrap();
    for x in [&mut a, &mut b, &mut c] {
        let k = until(x, |ev| if let ServerEvent::ChMsgCommit(k) = ev { Some(k) } else { None }).await;
        assert_eq!((k.id, k.channel), (m, ch));
        let mut acks = k.acks.clone();
        acks.sort();
        let mut want = vec![bi, ci];
        want.sort();
        assert_eq!(acks, want);
    }
    // A late ack and a repeated commit are accepted silently.
    c.send(Command::AckChMsg { id: m, ids: Vec::new() }).await.unwrap();
    a.send(Command::ChCommit { id: m, acks: vec![ci, bi], ids: Vec::new() }).await.unwrap();
    b.send(Command::ChPull { id: ch, anchor: None }).await.unwrap();
    let app = until(&mut b, |ev| if let ServerEvent::ChAppend(x) = ev { Some(x) } else { None }).await;
    assert_eq!((app.id, app.anchor, app.more), (ch, None, false));
    assert_eq!(app.messages.len(), 1);
    let HistoryEntry { id, from, msg, .. } = &app.messages[0];
    assert_eq!((*id, *from, msg.clone()), (m, ci, Body::text("hello all")));
    b.send(Command::ChPull { id: ch, anchor: Some(m) }).await.unwrap();
    let app = until(&mut b, |ev| if let ServerEvent::ChAppend(x) = ev { Some(x) } else { None }).await;
    assert!(app.messages.is_empty() && !app.more);
    quiet(&mut a, 200).await;
    // CH_LST shows it healthy with its leader.
    b.send(Command::ChLst).await.unwrap();
    let l = until(&mut b, |ev| if let ServerEvent::LstCh(l) = ev { Some(l) } else { None }).await;
    assert_eq!(l.channels.len(), 1);
    assert_eq!((l.channels[0].leader, l.channels[0].status.as_str()), (Some(ai), "healthy"));
}

#[tokio::test]
async fn refusals_name_taken_bad_election_already_voted_not_leader_bad_commit_duplicate() {
    let ts = TestServer::start(&["alice", "bob", "carol", "dave"], |_| {}).await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    let (ai, bi, ci) = (a.credentials.id, b.credentials.id, c.credentials.id);
    let ch = channel_with("general", &mut a, &mut [&mut b, &mut c]).await;

    b.send(Command::ChNew { name: "GENERAL".into() }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::NameTaken);
    b.send(Command::ChNew { name: "no spaces".into() }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::BadPayload);
    b.send(Command::ChJoin { id: ch }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::AlreadyMember);
    b.send(Command::ChJoin { id: Ulid::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::NoSuchChannel);
    let mut d = ts.connect("dave").await;
    d.send(Command::ChLead { channel: ch, election: 1 }).await.unwrap();
    assert_eq!(code(&err_of(&mut d).await), ErrorCode::NotMember);
    d.send(Command::ChLeave { id: ch }).await.unwrap();
    assert_eq!(code(&err_of(&mut d).await), ErrorCode::NotMember);

    // channel_unhealthy: no leader yet.
    let nonce = c.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::text("x") }).await.unwrap();
    let e = err_of(&mut c).await;
    assert_eq!((code(&e), e.nonce_ref), (ErrorCode::ChannelUnhealthy, Some(nonce)));

    // One CH_LEAD cannot use up the election numbers.
    a.send(Command::ChLead { channel: ch, election: u64::MAX }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::BadElection);
    // alice stands; bob votes twice; carol votes for the wrong candidate.
    a.send(Command::ChLead { channel: ch, election: 5 }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChVote(_)).then_some(())).await;
    c.send(Command::ChVote { channel: ch, election: 5, user: bi }).await.unwrap();
    assert_eq!(code(&err_of(&mut c).await), ErrorCode::BadElection);
    a.send(Command::ChVote { channel: ch, election: 5, user: ai }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::AlreadyVoted, "the candidate's own vote is counted");
    b.send(Command::ChVote { channel: ch, election: 5, user: ai }).await.unwrap();
    until(&mut a, |ev| matches!(ev, ServerEvent::ChElected(_)).then_some(())).await;
    // With a leader, CH_LEAD is bad_election, whatever the number.
    c.send(Command::ChLead { channel: ch, election: 9 }).await.unwrap();
    assert_eq!(code(&err_of(&mut c).await), ErrorCode::BadElection);

    let m = Ulid::new();
    b.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("hi") }).await.unwrap();
    until(&mut c, |ev| matches!(ev, ServerEvent::ChMsg(_)).then_some(())).await;
    b.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("again") }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::DuplicateMsg);
    // Only the leader commits.
    b.send(Command::ChCommit { id: m, acks: vec![bi, ci], ids: Vec::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::NotLeader);
    // carol never acked: an ack that never happened.
    a.send(Command::ChCommit { id: m, acks: vec![bi, ci], ids: Vec::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::BadCommit);
    // Only the sender's ack: a minority of 3 recipients.
    a.send(Command::ChCommit { id: m, acks: vec![bi], ids: Vec::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::BadCommit);
    // The same ack twice is still one ack.
    a.send(Command::ChCommit { id: m, acks: vec![bi, bi], ids: Vec::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::BadCommit);
    // dave was not a recipient: his ack is refused, and it is not in the channel he is in.
    d.send(Command::AckChMsg { id: m, ids: Vec::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut d).await), ErrorCode::UnknownMsg);
    c.send(Command::AckChMsg { id: m, ids: Vec::new() }).await.unwrap();
    a.send(Command::ChCommit { id: m, acks: vec![bi, ci], ids: Vec::new() }).await.unwrap();
    until(&mut a, |ev| matches!(ev, ServerEvent::ChMsgCommit(k) if k.id == m).then_some(())).await;
    // The committed id stays taken.
    b.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("again") }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::DuplicateMsg);
    b.send(Command::ChPull { id: ch, anchor: Some(Ulid::new()) }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::UnknownMsg);
}

#[tokio::test]
async fn min_online_three_makes_two_online_unhealthy() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |c| c.limits.min_online = 3).await;
    let (mut a, mut b) = (ts.connect("alice").await, ts.connect("bob").await);
    let ch = channel_with("general", &mut a, &mut [&mut b]).await;
    elect(ch, 1, &mut a, &mut [&mut b]).await;
    let s = until(&mut b, |ev| status_of(ev).filter(|s| s.leader.is_some())).await;
    assert_eq!((s.status.as_str(), s.online), ("unhealthy", 2));
    b.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::text("x") }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::ChannelUnhealthy);
    let mut c = ts.connect("carol").await;
    c.send(Command::ChJoin { id: ch }).await.unwrap();
    let s = until(&mut b, |ev| status_of(ev).filter(|s| s.online == 3)).await;
    assert_eq!(s.status, "healthy");
    b.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::text("x") }).await.unwrap();
    until(&mut c, |ev| matches!(ev, ServerEvent::ChMsg(_)).then_some(())).await;
}

#[tokio::test]
async fn leader_disconnect_makes_it_leaderless_and_a_new_election_works() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    let ch = channel_with("general", &mut a, &mut [&mut b, &mut c]).await;
    elect(ch, 1, &mut a, &mut [&mut b, &mut c]).await;
    let m = Ulid::new();
    b.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("pending") }).await.unwrap();
    until(&mut c, |ev| matches!(ev, ServerEvent::ChMsg(_)).then_some(())).await;
    c.send(Command::AckChMsg { id: m, ids: Vec::new() }).await.unwrap();
    drop(a);
    let s = until(&mut b, |ev| status_of(ev).filter(|s| s.online == 2)).await;
    assert_eq!((s.leader, s.status.as_str(), s.election), (None, "unhealthy", 1));
    // The same number is refused; a higher one works.
    c.send(Command::ChLead { channel: ch, election: 1 }).await.unwrap();
    assert_eq!(code(&err_of(&mut c).await), ErrorCode::BadElection);
    elect(ch, 2, &mut c, &mut [&mut b]).await;
    // The new leader learned the ack recorded before it was elected (its own here).
    let ci = c.credentials.id;
    let k = until(&mut c, |ev| if let ServerEvent::ChMsgAck(k) = ev { Some(k) } else { None }).await;
    assert_eq!((k.id, k.user, k.users.clone()), (m, ci, vec![ci]), "all recorded acks in one frame");
    c.send(Command::ChCommit { id: m, acks: vec![b.credentials.id, ci], ids: Vec::new() }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChMsgCommit(k) if k.id == m).then_some(())).await;
}

#[tokio::test]
async fn restart_keeps_channels_members_elections_and_history() {
    let mut ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    let (bi, ci) = (b.credentials.id, c.credentials.id);
    let ch = channel_with("general", &mut a, &mut [&mut b, &mut c]).await;
    elect(ch, 7, &mut a, &mut [&mut b, &mut c]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = Ulid::new();
        ids.push(m);
        b.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text(format!("m{i}")) }).await.unwrap();
        until(&mut c, |ev| matches!(ev, ServerEvent::ChMsg(x) if x.msg_id == m).then_some(())).await;
        c.send(Command::AckChMsg { id: m, ids: Vec::new() }).await.unwrap();
        a.send(Command::ChCommit { id: m, acks: vec![bi, ci], ids: Vec::new() }).await.unwrap();
        until(&mut a, |ev| matches!(ev, ServerEvent::ChMsgCommit(k) if k.id == m).then_some(())).await;
    }
    // Everyone disconnects; carol will pull from the second message on.
    drop(c);
    drop((a, b));
    ts.restart(|_| {}).await;
    let mut c = ts.connect("carol").await;
    // After CNN: one CH_STATUS per channel, leaderless, the election number kept.
    let s = until(&mut c, status_of).await;
    assert_eq!((s.id, s.name.as_str(), s.leader, s.election), (ch, "general", None, 7));
    c.send(Command::ChPull { id: ch, anchor: Some(ids[1]) }).await.unwrap();
    let app = until(&mut c, |ev| if let ServerEvent::ChAppend(x) = ev { Some(x) } else { None }).await;
    let got: Vec<Ulid> = app.messages.iter().map(|m| m.id).collect();
    assert_eq!(got, ids[2..].to_vec(), "what she missed, in commit order");
    assert_eq!(app.messages[4 - 2].msg, Body::text("m4"));
    // Membership survived: a new election needs a higher number.
    c.send(Command::ChLead { channel: ch, election: 7 }).await.unwrap();
    assert_eq!(code(&err_of(&mut c).await), ErrorCode::BadElection);
    c.send(Command::ChLead { channel: ch, election: 8 }).await.unwrap();
    until(&mut c, |ev| matches!(ev, ServerEvent::ChElected(e) if e.election == 8).then_some(())).await;
}

#[tokio::test]
async fn pull_pages_fit_max_payload_and_page_size() {
    let ts = TestServer::start(&["alice"], |c| {
        c.limits.max_payload = 1024;
        c.limits.pull_page = 4;
    })
    .await;
    let mut a = Client::connect_with_max_payload(ts.addr, &ts.user("alice"), 1024).await.unwrap();
    let ai = a.credentials.id;
    let ch = channel_with("solo", &mut a, &mut []).await;
    elect(ch, 1, &mut a, &mut []).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let m = Ulid::new();
        ids.push(m);
        a.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::binary(vec![i as u8; 300]) }).await.unwrap();
        a.send(Command::ChCommit { id: m, acks: vec![ai], ids: Vec::new() }).await.unwrap();
        until(&mut a, |ev| matches!(ev, ServerEvent::ChMsgCommit(k) if k.id == m).then_some(())).await;
    }
    let mut anchor = None;
    let mut got = Vec::new();
    for _ in 0..20 {
        a.send(Command::ChPull { id: ch, anchor }).await.unwrap();
        let app = until(&mut a, |ev| if let ServerEvent::ChAppend(x) = ev { Some(x) } else { None }).await;
        assert!(app.messages.len() <= 4 && !app.messages.is_empty());
        got.extend(app.messages.iter().map(|m| m.id));
        anchor = got.last().copied();
        if !app.more {
            break;
        }
    }
    assert_eq!(got, ids);
}

#[tokio::test]
async fn merges_confirmed_by_a_second_acker_or_left_unconfirmed() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |c| c.limits.pending_ttl_s = 1).await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    let (ai, bi, ci) = (a.credentials.id, b.credentials.id, c.credentials.id);
    let ch = channel_with("general", &mut a, &mut [&mut b, &mut c]).await;
    elect(ch, 1, &mut a, &mut [&mut b, &mut c]).await;
    // One committed message the server has.
    let first = Ulid::new();
    a.send(Command::ChMsg { id: ch, msg_id: first, msg: Body::text("known") }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChMsg(_)).then_some(())).await;
    b.send(Command::AckChMsg { id: first, ids: Vec::new() }).await.unwrap();
    a.send(Command::ChCommit { id: first, acks: vec![ai, bi], ids: Vec::new() }).await.unwrap();
    until(&mut c, |ev| matches!(ev, ServerEvent::ChMsgCommit(k) if k.id == first).then_some(())).await;

    // bob has two messages the server lacks: one acked by carol too, one by bob alone.
    let (confirmed, lonely) = (Ulid::new(), Ulid::new());
    let entry = |id, acks| MergedMessage { id, from: bi, timestamp: now(), msg: Body::text("from the past"), acks };
    let known = MergedMessage { id: first, from: ai, timestamp: now(), msg: Body::text("known"), acks: vec![ai, bi] };
    b.send(Command::ChMerge { id: ch, msg: vec![known, entry(confirmed, vec![bi, ci]), entry(lonely, vec![bi])] })
        .await
        .unwrap();
    // carol is asked to confirm the first new one; nobody is asked about the known one.
    let ask = until(&mut c, |ev| if let ServerEvent::ChMsgConfirm(x) = ev { Some(x) } else { None }).await;
    assert_eq!((ask.id, ask.message), (ch, confirmed));
    // Not yet in history; a confirmation from someone not in acks is refused.
    a.send(Command::AckChMsg { id: confirmed, ids: Vec::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::UnknownMsg);
    // The leader asks again (CH_ACK_REQ); carol gets a second CH_MSG_CONFIRM.
    a.send(Command::ChAckReq { id: confirmed, users: vec![ci, ai] }).await.unwrap();
    until(&mut c, |ev| matches!(ev, ServerEvent::ChMsgConfirm(x) if x.message == confirmed).then_some(())).await;
    b.send(Command::ChAckReq { id: confirmed, users: vec![ci] }).await.unwrap();
    assert_eq!(code(&err_of(&mut b).await), ErrorCode::NotLeader);
    c.send(Command::AckChMsg { id: confirmed, ids: Vec::new() }).await.unwrap();
    // Announced to everyone as an append after the last message.
    for x in [&mut a, &mut b, &mut c] {
        let app = until(x, |ev| if let ServerEvent::ChAppend(x) = ev { Some(x) } else { None }).await;
        assert_eq!((app.anchor, app.more), (Some(first), false));
        assert_eq!(app.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![confirmed]);
    }
    // The lonely one expires: the merger is told.
    let e = err_of(&mut b).await;
    assert_eq!((code(&e), e.msg_id), (ErrorCode::MergeUnconfirmed, Some(lonely)));
    // History: first, then the confirmed merge; never the lonely one.
    a.send(Command::ChPull { id: ch, anchor: None }).await.unwrap();
    let app = until(&mut a, |ev| if let ServerEvent::ChAppend(x) = ev { Some(x) } else { None }).await;
    assert_eq!(app.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![first, confirmed]);
}

#[tokio::test]
async fn an_uncommitted_message_expires_with_not_committed() {
    let ts = TestServer::start(&["alice", "bob"], |c| c.limits.pending_ttl_s = 1).await;
    let (mut a, mut b) = (ts.connect("alice").await, ts.connect("bob").await);
    let ch = channel_with("general", &mut a, &mut [&mut b]).await;
    elect(ch, 1, &mut a, &mut [&mut b]).await;
    let m = Ulid::new();
    b.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("never committed") }).await.unwrap();
    let e = err_of(&mut b).await;
    assert_eq!((code(&e), e.msg_id, e.nonce_ref), (ErrorCode::NotCommitted, Some(m), None));
    a.send(Command::ChCommit { id: m, acks: vec![b.credentials.id, a.credentials.id], ids: Vec::new() }).await.unwrap();
    assert_eq!(code(&err_of(&mut a).await), ErrorCode::UnknownMsg);
}

#[tokio::test]
async fn leaving_and_account_removal_update_members() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    let (mut a, mut b, mut c) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("carol").await);
    let (ai, bi, ci) = (a.credentials.id, b.credentials.id, c.credentials.id);
    let ch = channel_with("general", &mut a, &mut [&mut b, &mut c]).await;
    elect(ch, 1, &mut a, &mut [&mut b, &mut c]).await;
    // The leader leaves: everyone, the leaver included, sees CH_ULEAVE; the channel is leaderless.
    a.send(Command::ChLeave { id: ch }).await.unwrap();
    for x in [&mut a, &mut b] {
        let u = until(x, |ev| if let ServerEvent::ChUleave(u) = ev { Some(u) } else { None }).await;
        assert_eq!((u.channel, u.user), (ch, ai));
    }
    let s = until(&mut b, |ev| status_of(ev).filter(|s| s.online == 2)).await;
    assert_eq!(s.leader, None);
    // carol's account is removed: bob sees her leave the channel.
    sigil_server::store::Store::open(&ts.db()).unwrap().remove_account("carol").unwrap();
    let u = until(&mut b, |ev| if let ServerEvent::ChUleave(u) = ev { Some(u) } else { None }).await;
    assert_eq!(u.user, ci);
    closed(&mut c).await;
    // bob alone can elect himself and talk.
    elect(ch, 2, &mut b, &mut []).await;
    let m = Ulid::new();
    b.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("alone") }).await.unwrap();
    b.send(Command::ChCommit { id: m, acks: vec![bi], ids: Vec::new() }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChMsgCommit(k) if k.id == m).then_some(())).await;
}

#[tokio::test]
async fn a_message_that_could_not_be_relayed_within_max_payload_is_refused() {
    let ts = TestServer::start(&["alice", "bob"], |c| c.limits.max_payload = 1024).await;
    let mut a = Client::connect_with_max_payload(ts.addr, &ts.user("alice"), 1024).await.unwrap();
    let mut b = Client::connect_with_max_payload(ts.addr, &ts.user("bob"), 1024).await.unwrap();
    let ch = channel_with("general", &mut a, &mut [&mut b]).await;
    elect(ch, 1, &mut a, &mut [&mut b]).await;
    // Fits the client's frame, but not the relayed frame plus its history entry.
    let nonce =
        a.send(Command::ChMsg { id: ch, msg_id: Ulid::new(), msg: Body::binary(vec![0u8; 900]) }).await.unwrap();
    let e = err_of(&mut a).await;
    assert_eq!((code(&e), e.nonce_ref), (ErrorCode::BadPayload, Some(nonce)));
    let ok = Ulid::new();
    a.send(Command::ChMsg { id: ch, msg_id: ok, msg: Body::binary(vec![0u8; 700]) }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChMsg(m) if m.msg_id == ok).then_some(())).await;
}

#[tokio::test]
async fn a_msg_id_live_in_one_channel_cannot_be_taken_by_another() {
    let ts = TestServer::start(&["alice", "bob", "mallory"], |_| {}).await;
    let (mut a, mut b, mut m) = (ts.connect("alice").await, ts.connect("bob").await, ts.connect("mallory").await);
    let (ai, bi) = (a.credentials.id, b.credentials.id);
    let good = channel_with("good", &mut a, &mut [&mut b]).await;
    elect(good, 1, &mut a, &mut [&mut b]).await;
    let evil = channel_with("evil", &mut m, &mut [&mut b]).await;
    elect(evil, 1, &mut m, &mut [&mut b]).await;
    let id = Ulid::new();
    a.send(Command::ChMsg { id: good, msg_id: id, msg: Body::text("real") }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChMsg(x) if x.msg_id == id).then_some(())).await;
    // mallory tries to capture the id in her channel, by message and by merge.
    m.send(Command::ChMsg { id: evil, msg_id: id, msg: Body::text("fake") }).await.unwrap();
    assert_eq!(code(&err_of(&mut m).await), ErrorCode::DuplicateMsg);
    let fake = MergedMessage { id, from: bi, timestamp: now(), msg: Body::text("fake"), acks: vec![bi] };
    m.send(Command::ChMerge { id: evil, msg: vec![fake] }).await.unwrap();
    assert_eq!(code(&err_of(&mut m).await), ErrorCode::DuplicateMsg);
    // bob's ack lands where it belongs, and the commit goes through.
    b.send(Command::AckChMsg { id, ids: Vec::new() }).await.unwrap();
    a.send(Command::ChCommit { id, acks: vec![ai, bi], ids: Vec::new() }).await.unwrap();
    until(&mut b, |ev| matches!(ev, ServerEvent::ChMsgCommit(k) if k.id == id && k.channel == good).then_some(()))
        .await;
}

#[tokio::test]
async fn batched_acks_and_commits_reach_batching_sessions_as_one_frame_and_others_one_per_message() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    // alice (the leader) asks for batches; bob and carol do not.
    let batch = sigil_client::ConnectOptions { batch: true, ..Default::default() };
    let mut a = Client::connect_with(ts.addr, &ts.user("alice"), batch).await.unwrap();
    let (mut b, mut c) = (ts.connect("bob").await, ts.connect("carol").await);
    let (bi, ci) = (b.credentials.id, c.credentials.id);
    a.send(Command::Info).await.unwrap();
    let info = until(&mut a, |ev| if let ServerEvent::Sinfo(s) = ev { Some(s) } else { None }).await;
    assert_eq!(info.features, vec!["batch".to_owned(), "bind".to_owned()]);
    let ch = channel_with("batched", &mut a, &mut [&mut b, &mut c]).await;
    elect(ch, 1, &mut a, &mut [&mut b, &mut c]).await;
    // Enough to have been split over store batches before one input's
    // writes went to the store as one job.
    let ms: Vec<Ulid> = (0..150).map(|_| Ulid::new()).collect();
    for &m in &ms {
        c.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("x") }).await.unwrap();
        until(&mut b, |ev| matches!(ev, ServerEvent::ChMsg(g) if g.msg_id == m).then_some(())).await;
    }
    // bob acks them all, and a made-up id, in one frame: one ERR naming the
    // unknown id, the other acks recorded all the same.
    let unknown = Ulid::new();
    let ids: Vec<Ulid> = std::iter::once(unknown).chain(ms[1..].iter().copied()).collect();
    let nonce = b.send(Command::AckChMsg { id: ms[0], ids }).await.unwrap();
    let e = err_of(&mut b).await;
    assert_eq!((e.code.as_str(), e.nonce_ref), ("unknown_msg", Some(nonce)));
    assert!(e.reason.contains(&unknown.to_string()), "{}", e.reason);
    // The batching leader hears of them in one frame, carol (sender) in one per message.
    let k = until(&mut a, |ev| if let ServerEvent::ChMsgAck(k) = ev { Some(k) } else { None }).await;
    assert_eq!((k.id, k.user, k.ids.as_slice()), (ms[0], bi, &ms[1..]));
    for &m in &ms {
        let k = until(&mut c, |ev| if let ServerEvent::ChMsgAck(k) = ev { Some(k) } else { None }).await;
        assert_eq!((k.id, k.user, k.ids.len()), (m, bi, 0));
    }
    // One CH_COMMIT for them all, with the same acks: one announcement to
    // the batching leader (it fits max_payload), in commit order.
    a.send(Command::ChCommit { id: ms[0], acks: vec![ci, bi], ids: ms[1..].to_vec() }).await.unwrap();
    let k = until(&mut a, |ev| if let ServerEvent::ChMsgCommit(k) = ev { Some(k) } else { None }).await;
    let mut all = vec![k.id];
    all.extend(&k.ids);
    assert_eq!(all, ms, "one frame, in commit order");
    for x in [&mut b, &mut c] {
        for &m in &ms {
            let k = until(x, |ev| if let ServerEvent::ChMsgCommit(k) = ev { Some(k) } else { None }).await;
            assert_eq!((k.id, k.ids.len()), (m, 0));
        }
    }
    // A commit batch is checked id by id: committed ones are accepted, unknown ones refused.
    let nonce = a.send(Command::ChCommit { id: ms[0], acks: vec![ci, bi], ids: vec![unknown] }).await.unwrap();
    let e = err_of(&mut a).await;
    assert_eq!((e.code.as_str(), e.nonce_ref), ("unknown_msg", Some(nonce)));
}

#[tokio::test]
async fn members_are_listed_by_name_with_their_presence_to_members_only() {
    let ts = TestServer::start(&["alice", "Bob", "carol", "dave"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    alice.send(Command::ChNew { name: "general".into() }).await.unwrap();
    let id = until(&mut alice, |e| if let ServerEvent::ChUjoin(u) = e { Some(u.channel) } else { None }).await;
    let mut bob = ts.connect("Bob").await;
    bob.send(Command::ChJoin { id }).await.unwrap();
    until(&mut bob, |e| matches!(e, ServerEvent::ChUjoin(_)).then_some(())).await;
    let mut dave = ts.connect("dave").await;
    dave.send(Command::ChJoin { id }).await.unwrap();
    until(&mut dave, |e| matches!(e, ServerEvent::ChUjoin(_)).then_some(())).await;
    dave.send(Command::Dcnn).await.unwrap();
    closed(&mut dave).await;

    alice.send(Command::ChWho { id }).await.unwrap();
    let list = until(&mut alice, |e| if let ServerEvent::ChMembers(m) = e { Some(m) } else { None }).await;
    assert_eq!(list.id, id);
    let listed: Vec<(&str, &str)> = list.members.iter().map(|m| (m.name.as_str(), m.status.as_str())).collect();
    assert_eq!(listed, [("alice", "online"), ("Bob", "online"), ("dave", "offline")]);
    assert!(!list.more);

    // Only members may ask; an unknown channel is named as such.
    let mut carol = ts.connect("carol").await;
    carol.send(Command::ChWho { id }).await.unwrap();
    assert_eq!(code(&next_err(&mut carol).await), ErrorCode::NotMember);
    carol.send(Command::ChWho { id: Ulid::new() }).await.unwrap();
    assert_eq!(code(&next_err(&mut carol).await), ErrorCode::NoSuchChannel);
}
