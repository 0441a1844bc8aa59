//! The channel's tests across concerns, as whole protocol exchanges:
//! elections, commits, expiry and merges seen through the frames they send.

use super::*;
use sigil_proto::command::MergedMessage;
use sigil_proto::event::ChMsgAck;
use sigil_proto::{Body, ServerEvent};

/// Limits small enough to reach in a test; the concern files' tests use them too.
pub(super) const LIMITS: ChannelLimits = ChannelLimits {
    min_online: 1,
    pending_ttl_s: 10,
    max_pending: 8,
    max_merges: 8,
    max_pending_bytes: 1 << 20,
    max_payload: 65_536,
};

fn users(n: u128) -> Vec<Ulid> {
    (1..=n).map(Ulid::from).collect()
}

/// The events sent to `to`, decoded.
fn sent_to(out: &[ChannelEffect], to: Ulid) -> Vec<ServerEvent> {
    out.iter()
        .filter_map(|e| match e {
            ChannelEffect::Send { to: t, frame } if *t == to => Some(vec![frame.clone()]),
            ChannelEffect::AckNote { to: t, msg_id, user } if *t == to => {
                let ack = ChMsgAck { id: *msg_id, user: *user, users: Vec::new(), ids: Vec::new() };
                Some(vec![Outbound::event(&ack)])
            }
            // As a session without batching sees it.
            ChannelEffect::SendBatch { to: t, batch } if *t == to => Some(batch.singles().to_vec()),
            _ => None,
        })
        .flatten()
        .filter_map(|frame| ServerEvent::decode(frame.command, &frame.payload).ok())
        .collect()
}

/// A channel with `u` as members, all online.
fn channel(u: &[Ulid]) -> Channel {
    let mut c = Channel::new(Ulid::from(999u128), "general".into(), LIMITS);
    let mut out = Vec::new();
    c.create(u[0], 0, &mut out);
    for &m in &u[1..] {
        c.join(m, &mut out).unwrap();
    }
    c
}

/// A channel of `u` with `u[0]` elected by everyone.
fn led_channel(u: &[Ulid]) -> Channel {
    let mut c = channel(u);
    let mut out = Vec::new();
    c.lead(u[0], 1, &mut out).unwrap();
    c.stored(0, 1, &mut out);
    for &v in &u[1..] {
        c.vote(v, 1, u[0], &mut out).unwrap();
    }
    assert_eq!(c.leader(), Some(u[0]));
    c
}

#[test]
fn an_election_starts_only_once_its_number_is_durable() {
    let u = users(3);
    let mut c = channel(&u);
    let mut out = Vec::new();
    c.lead(u[0], 1, &mut out).unwrap();
    assert_eq!(out, vec![ChannelEffect::Store(StoreOp::SetElection { channel: c.id(), election: 1 })]);
    assert_eq!(c.vote(u[1], 1, u[0], &mut out).unwrap_err().code, ErrorCode::BadElection, "not started yet");
    out.clear();
    c.stored(0, 1, &mut out);
    assert!(sent_to(&out, u[2]).iter().any(|e| matches!(e, ServerEvent::ChVote(v) if v.user == u[0])));
    c.vote(u[1], 1, u[0], &mut out).unwrap();
    assert_eq!(c.leader(), Some(u[0]));
    // A late vote is silent; a second CH_LEAD is refused while there is a leader.
    c.vote(u[2], 1, u[0], &mut out).unwrap();
    assert_eq!(c.lead(u[2], 9, &mut out).unwrap_err().code, ErrorCode::BadElection);
}

#[test]
fn a_commit_is_announced_only_once_stored_and_only_on_real_acks() {
    let u = users(3);
    let mut c = led_channel(&u);
    let mut out = Vec::new();
    let m = Ulid::from(500u128);
    c.message(u[2], m, Body::text("x"), 5, &mut out).unwrap();
    assert_eq!(c.commit(u[0], m, &BTreeSet::from([u[2], u[1]]), &mut out).unwrap_err().code, ErrorCode::BadCommit);
    out.clear();
    c.ack(u[1], m, &mut out).unwrap();
    // The ack goes to the leader and the sender, not back to the acker.
    assert_eq!(sent_to(&out, u[0]).len(), 1);
    assert_eq!(sent_to(&out, u[2]).len(), 1);
    assert!(sent_to(&out, u[1]).is_empty());
    assert_eq!(c.commit(u[1], m, &BTreeSet::from([u[2], u[1]]), &mut out).unwrap_err().code, ErrorCode::NotLeader);
    out.clear();
    c.commit(u[0], m, &BTreeSet::from([u[2], u[1]]), &mut out).unwrap();
    assert!(matches!(&out[..], [ChannelEffect::Store(StoreOp::Append { seq: 1, .. })]), "{out:?}");
    out.clear();
    c.stored(1, 0, &mut out);
    for &x in &u {
        assert!(matches!(&sent_to(&out, x)[..], [ServerEvent::ChMsgCommit(k)] if k.id == m));
    }
}

#[test]
fn pending_messages_and_merges_expire_with_an_error_to_their_sender() {
    let u = users(2);
    let mut c = led_channel(&u);
    let mut out = Vec::new();
    let m = Ulid::from(501u128);
    c.message(u[1], m, Body::text("x"), 100, &mut out).unwrap();
    let merged =
        MergedMessage { id: Ulid::from(502u128), from: u[1], timestamp: 1, msg: Body::text("y"), acks: vec![u[1]] };
    c.merge(u[1], vec![merged], 100, &mut out).unwrap();
    out.clear();
    c.tick(109, &mut out);
    assert!(out.is_empty());
    c.tick(110, &mut out);
    let codes: Vec<String> = sent_to(&out, u[1])
        .into_iter()
        .filter_map(|e| if let ServerEvent::Err(e) = e { Some(e.code) } else { None })
        .collect();
    assert_eq!(codes, ["not_committed", "merge_unconfirmed"]);
    assert_eq!((c.pending_count(), c.merge_count()), (0, 0));
}

#[test]
fn a_leader_that_lets_an_acknowledged_message_expire_is_deposed() {
    let u = users(3);
    let mut c = led_channel(&u);
    let mut out = Vec::new();
    // Not acknowledged by a majority: expiring is not the leader's fault.
    c.message(u[1], Ulid::from(600u128), Body::text("x"), 0, &mut out).unwrap();
    c.tick(10, &mut out);
    assert_eq!(c.leader(), Some(u[0]));
    // Acknowledged by a majority and left to expire: the leader is deposed.
    let m = Ulid::from(601u128);
    c.message(u[1], m, Body::text("y"), 20, &mut out).unwrap();
    c.ack(u[2], m, &mut out).unwrap();
    out.clear();
    c.tick(30, &mut out);
    assert_eq!(c.leader(), None);
    assert!(sent_to(&out, u[2]).iter().any(|e| matches!(e, ServerEvent::ChStatus(s) if s.leader.is_none())));
}

#[test]
fn a_new_leader_gets_each_pending_message_acks_in_one_frame() {
    let u = users(4);
    let mut c = led_channel(&u);
    let mut out = Vec::new();
    let m = Ulid::from(700u128);
    c.message(u[3], m, Body::text("x"), 0, &mut out).unwrap();
    c.ack(u[1], m, &mut out).unwrap();
    c.ack(u[2], m, &mut out).unwrap();
    c.session_down(u[0], &mut out);
    c.lead(u[1], 2, &mut out).unwrap();
    out.clear();
    c.stored(0, 2, &mut out);
    c.vote(u[2], 2, u[1], &mut out).unwrap();
    let acks: Vec<_> = sent_to(&out, u[1])
        .into_iter()
        .filter_map(|e| if let ServerEvent::ChMsgAck(a) = e { Some(a) } else { None })
        .collect();
    assert_eq!(acks.len(), 1, "one frame for the message");
    assert_eq!((acks[0].id, acks[0].users.clone()), (m, vec![u[1], u[2]]));
}

#[test]
fn merged_timestamps_must_fit_the_store() {
    let u = users(2);
    let mut c = channel(&u);
    let mut out = Vec::new();
    let m = MergedMessage {
        id: Ulid::from(800u128),
        from: u[0],
        timestamp: u64::MAX,
        msg: Body::text("m"),
        acks: vec![u[1]],
    };
    assert_eq!(c.merge(u[0], vec![m], 0, &mut out).unwrap_err().code, ErrorCode::BadPayload);
}

#[test]
fn pending_bytes_count_only_what_is_still_pending_or_merging() {
    let u = users(3);
    let mut c = led_channel(&u);
    let mut out = Vec::new();
    let (m1, m2) = (Ulid::from(900u128), Ulid::from(901u128));
    c.message(u[1], m1, Body::text("abc"), 0, &mut out).unwrap();
    c.message(u[1], m2, Body::text("de"), 0, &mut out).unwrap();
    let merged =
        MergedMessage { id: Ulid::from(902u128), from: u[0], timestamp: 1, msg: Body::text("f"), acks: vec![u[2]] };
    c.merge(u[0], vec![merged], 0, &mut out).unwrap();
    assert_eq!(c.pending_bytes, 6);
    // Per sender: u[1] sent two messages, u[0] merged one.
    assert_eq!((c.pending_bytes_of(&u[1]), c.pending_bytes_of(&u[0]), c.pending_bytes_of(&u[2])), (5, 1, 0));
    c.ack(u[2], m1, &mut out).unwrap();
    c.commit(u[0], m1, &BTreeSet::from([u[1], u[2]]), &mut out).unwrap();
    assert_eq!(c.pending_bytes, 3);
    assert_eq!((c.pending_bytes_of(&u[1]), c.pending_bytes_of(&u[0])), (2, 1));
    c.tick(10, &mut out);
    assert_eq!((c.pending_bytes, c.pending_count(), c.merge_count()), (0, 0, 0));
    assert!(c.pending_by.is_empty(), "{:?}", c.pending_by);
}

#[test]
fn a_restored_channel_appends_after_its_history_and_anchors_merges_on_it() {
    let u = users(2);
    let (a, b) = (Ulid::from(1000u128), Ulid::from(1001u128));
    let snapshot = ChannelSnapshot {
        id: Ulid::from(999u128),
        name: "general".into(),
        members: u.iter().copied().collect(),
        election: 4,
        history: vec![(a, 1), (b, 2)],
    };
    let mut c = Channel::restore(snapshot, LIMITS);
    assert_eq!((c.leader(), c.election(), c.online().len()), (None, 4, 0));
    assert_eq!((c.seq_of(&a), c.seq_of(&b)), (Some(1), Some(2)));
    let mut out = Vec::new();
    c.session_up(u[0], &mut out);
    c.session_up(u[1], &mut out);
    let m =
        MergedMessage { id: Ulid::from(1002u128), from: u[0], timestamp: 1, msg: Body::text("m"), acks: vec![u[1]] };
    c.merge(u[0], vec![m.clone()], 0, &mut out).unwrap();
    out.clear();
    c.ack(u[1], m.id, &mut out).unwrap();
    assert!(matches!(&out[..], [ChannelEffect::Store(StoreOp::Append { seq: 3, .. })]), "{out:?}");
    out.clear();
    c.stored(3, 0, &mut out);
    assert!(sent_to(&out, u[0]).iter().any(|e| matches!(e, ServerEvent::ChAppend(x) if x.anchor == Some(b))));
}
