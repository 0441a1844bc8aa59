//! Reflected and replayed server frames (PROTOCOL.md §7.10, SECURITY.md §1).
//!
//! A session that asks for server frame binding (`CNN {bind: true}`) gets
//! every frame signed with a key derived from its `CNN`: no client frame and
//! no other session's frame verifies under it. A plain (V0) session is signed
//! as before, with the account key. Server frames sent back to the server as
//! a client's own are refused: in a bound session by their tag, in a plain one
//! by their shape (no server payload carries a `nonce`, §4.3 step 2).
//!
//! Then the clients, through a machine in the middle ([`Mitm`]) that records
//! frames and injects them: the client library refuses a reflected frame and
//! a frame replayed from an earlier session of a bound session (and shows what
//! a plain one lets through), and `sigil client` does not end on a harvested
//! `ERR session_replaced`.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use sigil_client::terminal::seen::Seen;
use sigil_client::terminal::view::{Chat, Now};
use sigil_client::{Binding, Client, ClientError, ConnectOptions, Credentials};
use sigil_proto::event::ErrPayload;
use sigil_proto::wire::{encode_frame, Frame, FrameCodec, FrameMac, OutFrame};
use sigil_proto::{Body, Command, ErrorCode, ServerEvent};
use support::lines::LineProcess;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use ulid::Ulid;

/// Authenticates `raw` as `cred`, asking for binding; returns the MAC the
/// server must sign this session with (the key derived from this CNN).
async fn bind(raw: &mut Raw, cred: &Credentials) -> (FrameMac, Frame) {
    let (nonce, timestamp) = (rand::random(), now());
    raw.send_request(cred, Command::Cnn { id: cred.id, batch: false, bind: true }, nonce, timestamp).await;
    let ucnn = raw.frame().await.expect("UCNN");
    assert_eq!(ucnn.command.as_str(), "UCNN", "{ucnn:?}");
    (cred.key.server_key(nonce, timestamp).mac(), ucnn)
}

fn verifies(mac: &FrameMac, frame: &Frame) -> bool {
    frame.signature.as_ref().is_some_and(|tag| mac.verify(frame.command.as_bytes(), &frame.payload, tag))
}

/// The frame again, byte for byte (its tag included), as a client would send it.
fn reflected(frame: &Frame) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    let signature = frame.signature.as_ref();
    encode_frame(&OutFrame { command: frame.command.as_str(), signature, payload: &frame.payload }, &mut buf);
    buf.to_vec()
}

/// The payload as JSON, for looking at its keys.
fn json(frame: &Frame) -> serde_json::Value {
    rmp_serde::from_slice(&frame.payload).expect("a msgpack payload")
}

/// Frames until one named `command`; every frame on the way must verify with `mac`.
async fn frame_named(raw: &mut Raw, command: &str, mac: &FrameMac) -> Frame {
    loop {
        let f = raw.frame().await.unwrap_or_else(|| panic!("closed while waiting for {command}"));
        assert!(verifies(mac, &f), "{} is signed with the session's key", f.command);
        if f.command.as_str() == command {
            return f;
        }
    }
}

#[tokio::test]
async fn a_bound_session_is_signed_with_the_key_derived_from_its_cnn_and_a_plain_one_as_before() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |_| {}).await;
    let (alice, bob) = (ts.user("alice"), ts.user("bob"));
    let mut a = ts.raw().await;
    let (k_a, ucnn) = bind(&mut a, &alice).await;
    assert!(verifies(&k_a, &ucnn), "the own UCNN is signed with the derived key");
    assert!(!verifies(&alice.key.mac(), &ucnn), "and not with the account key");
    assert_eq!(json(&ucnn)["bind"], serde_json::json!(true), "the own UCNN says the session is bound");

    // A plain session of another account: V0, byte for byte.
    let mut b = ts.raw().await;
    let ucnn_b = b.authenticate(&bob).await;
    assert!(verifies(&bob.key.mac(), &ucnn_b));
    assert_eq!(json(&ucnn_b), serde_json::json!({"id": bob.id.to_string(), "name": "bob"}), "no bind field");
    let seen_by_a = frame_named(&mut a, "UCNN", &k_a).await;
    assert_eq!(json(&seen_by_a).get("bind"), None, "others' UCNN carries no bind");

    // SINFO after CNN, and a non-fatal ERR, are signed with it too.
    a.send_request(&alice, Command::Info, 1, now()).await;
    let sinfo = frame_named(&mut a, "SINFO", &k_a).await;
    assert_eq!(json(&sinfo)["features"], serde_json::json!(["batch", "bind"]));
    a.send(&signed_raw(
        &alice,
        "NOPE",
        &rmp_serde::to_vec_named(&sigil_proto::Envelope { nonce: 2, timestamp: now() }).unwrap(),
    ))
    .await;
    let err = frame_named(&mut a, "ERR", &k_a).await;
    assert_eq!(json(&err)["code"], "unknown_command");

    // One frame to both (carol comes online) is signed for each with its own
    // key in one multi-lane run: the derived key for alice, the account key for bob.
    let _carol = ts.connect("carol").await;
    let to_a = frame_named(&mut a, "UCNN", &k_a).await;
    let to_b = frame_named(&mut b, "UCNN", &bob.key.mac()).await;
    assert_eq!(to_a.payload, to_b.payload);

    // The fatal ERR for a bad tag, last frame of the session, too.
    a.send(&signed_raw(&bob, "KALIVE", b"\x80")).await;
    let (last, e) = a.expect_fatal(ErrorCode::BadSignature).await;
    assert!(verifies(&k_a, &last), "{e:?}");
}

#[tokio::test]
async fn two_sessions_of_one_account_get_different_keys() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut first = ts.raw().await;
    let (k1, ucnn1) = bind(&mut first, &alice).await;
    let mut second = ts.raw().await;
    let (k2, ucnn2) = bind(&mut second, &alice).await;
    // The same payload, a different tag: the first session's frames do not
    // verify in the second, nor the reverse.
    assert_eq!(ucnn1.payload, ucnn2.payload);
    assert!(verifies(&k2, &ucnn2) && !verifies(&k2, &ucnn1));
    let (replaced, _) = first.expect_fatal(ErrorCode::SessionReplaced).await;
    assert!(verifies(&k1, &replaced), "the ERR ends the session it is signed for");
    assert!(!verifies(&k2, &replaced), "and cannot end the new one");
}

/// Reads frames until one named `command`; returns them all, that one last.
async fn read_until(raw: &mut Raw, command: &str, into: &mut Vec<Frame>) -> Frame {
    loop {
        let f = raw.frame().await.unwrap_or_else(|| panic!("closed while waiting for {command}"));
        into.push(f.clone());
        if f.command.as_str() == command {
            return f;
        }
    }
}

/// The frames that arrive within `ms` milliseconds.
async fn frames_within(raw: &mut Raw, ms: u64) -> Vec<Frame> {
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    while let Ok(Some(f)) = tokio::time::timeout_at(until, raw.frame()).await {
        out.push(f);
    }
    out
}

/// The payload of an ERR frame.
fn err(frame: &Frame) -> ErrPayload {
    assert_eq!(frame.command.as_str(), "ERR", "{frame:?}");
    rmp_serde::from_slice(&frame.payload).expect("ERR payload")
}

/// alice (plain) creates a channel that bob joins and stands for election in
/// it; bob's session binds or not. Returns both connections, the channel, and
/// every frame bob received up to the server's `CH_VOTE` asking for his vote.
async fn vote_requested(ts: &TestServer, bob_binds: bool) -> (Raw, Raw, Ulid, Vec<Frame>) {
    let (alice, bob) = (ts.user("alice"), ts.user("bob"));
    let mut a = ts.raw().await;
    a.authenticate(&alice).await;
    let mut b = ts.raw().await;
    let mut got = Vec::new();
    if bob_binds {
        got.push(bind(&mut b, &bob).await.1);
    } else {
        got.push(b.authenticate(&bob).await);
    }
    a.send_request(&alice, Command::ChNew { name: "mirror".into() }, 1, now()).await;
    let ujoin = read_until(&mut a, "CH_UJOIN", &mut Vec::new()).await;
    let channel: Ulid = json(&ujoin)["channel"].as_str().and_then(|s| s.parse().ok()).expect("a channel id");
    b.send_request(&bob, Command::ChJoin { id: channel }, 2, now()).await;
    read_until(&mut b, "CH_UJOIN", &mut got).await;
    a.send_request(&alice, Command::ChLead { channel, election: 1 }, 3, now()).await;
    read_until(&mut b, "CH_VOTE", &mut got).await;
    (a, b, channel, got)
}

#[tokio::test]
async fn server_frames_reflected_to_a_plain_session_are_refused_by_their_shape_and_change_nothing() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let (alice, bob) = (ts.user("alice"), ts.user("bob"));
    let (mut a, mut b, channel, mut got) = vote_requested(&ts, false).await;

    // The vote request, sent back by a machine in the middle as bob's own
    // CH_VOTE: its tag is bob's, its shape is not a request's.
    let vote = got.last().cloned().expect("CH_VOTE");
    b.send(&reflected(&vote)).await;
    let e = err(&b.frame().await.expect("an answer"));
    assert_eq!((e.code.as_str(), e.nonce_ref), ("bad_payload", None), "{e:?}");
    // It was no vote: nothing is elected until bob votes himself, and his
    // vote is not refused as a second one.
    for f in frames_within(&mut a, 300).await {
        assert_ne!(f.command.as_str(), "CH_ELECTED", "the reflected frame counted as a vote");
    }
    b.send_request(&bob, Command::ChVote { channel, election: 1, user: alice.id }, 4, now()).await;
    let elected = read_until(&mut a, "CH_ELECTED", &mut Vec::new()).await;
    assert_eq!(json(&elected)["leader"], serde_json::json!(alice.id.to_string()));
    let mut to_bob = Vec::new();
    read_until(&mut b, "CH_ELECTED", &mut to_bob).await;
    assert!(to_bob.iter().all(|f| f.command.as_str() != "ERR"), "{to_bob:?}");
    got.extend(to_bob);

    // A relayed CH_MSG, sent back as bob's: the server's form carries `from`,
    // its own timestamp and no nonce, so the sender's nonce is not there to
    // be spent in bob's window; it is refused before any window is looked at.
    let m = Ulid::new();
    a.send_request(&alice, Command::ChMsg { id: channel, msg_id: m, msg: Body::text("hello") }, 5, now()).await;
    let relayed = read_until(&mut b, "CH_MSG", &mut got).await;
    b.send(&reflected(&relayed)).await;
    let e = err(&read_until(&mut b, "ERR", &mut Vec::new()).await);
    assert_eq!((e.code.as_str(), e.nonce_ref), ("bad_payload", None), "{e:?}");
    // Nothing was relayed as bob's: the next CH_MSG from bob alice sees is his own.
    let after = Ulid::new();
    b.send_request(&bob, Command::ChMsg { id: channel, msg_id: after, msg: Body::text("mine") }, 6, now()).await;
    loop {
        let f = read_until(&mut a, "CH_MSG", &mut Vec::new()).await;
        if json(&f)["from"] == serde_json::json!(bob.id.to_string()) {
            assert_eq!(json(&f)["msg_id"], serde_json::json!(after.to_string()));
            break;
        }
    }

    // A private message, and everything else bob received, likewise.
    a.send_request(&alice, Command::PvMsg { to: bob.id, msg_id: Ulid::new(), msg: Body::text("psst") }, 7, now()).await;
    read_until(&mut b, "MSG", &mut got).await;
    got.retain(|f| f.command.as_str() != "ERR");
    let kinds: std::collections::BTreeSet<&str> = got.iter().map(|f| f.command.as_str()).collect();
    for needed in ["UCNN", "CH_UJOIN", "CH_STATUS", "CH_VOTE", "CH_ELECTED", "CH_MSG", "MSG"] {
        assert!(kinds.contains(needed), "{needed} among {kinds:?}");
    }
    for f in &got {
        // The mechanism: no server payload has a nonce (§4.3 step 2).
        assert_eq!(json(f).get("nonce"), None, "{} carries no nonce", f.command);
        b.send(&reflected(f)).await;
        let e = err(&b.frame().await.expect("an answer"));
        assert_eq!((e.code.as_str(), e.nonce_ref), ("bad_payload", None), "{} reflected: {e:?}", f.command);
    }
    // The session goes on.
    b.send_request(&bob, Command::Info, 8, now()).await;
    read_until(&mut b, "SINFO", &mut Vec::new()).await;
}

#[tokio::test]
async fn a_server_frame_reflected_to_a_bound_session_fails_its_tag() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let (_a, mut b, _channel, got) = vote_requested(&ts, true).await;
    let vote = got.last().cloned().expect("CH_VOTE");
    b.send(&reflected(&vote)).await;
    b.expect_fatal(ErrorCode::BadSignature).await;
}

/// Frames a [`Mitm`] saw on one connection, each way, in order.
#[derive(Default)]
struct Carried {
    to_client: Vec<Frame>,
    to_server: Vec<Frame>,
}

/// A machine in the middle: forwards every connection to the server frame by
/// frame (re-encoded whole, so what it injects falls between frames), records
/// what passes, and can send frames of its own to the client.
struct Mitm {
    addr: SocketAddr,
    /// What each connection carried, in the order they were accepted.
    seen: Arc<Mutex<Vec<Carried>>>,
    /// Injects into the latest connection, towards the client.
    inject: Arc<Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>>,
    /// Sent to the next connection's client before anything from the server.
    prelude: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Mitm {
    async fn start(server: SocketAddr) -> Mitm {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen: Arc<Mutex<Vec<Carried>>> = Arc::default();
        let inject: Arc<Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>> = Arc::default();
        let prelude: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let (seen2, inject2, prelude2) = (seen.clone(), inject.clone(), prelude.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(server).await else { return };
                let index = {
                    let mut seen = seen2.lock().expect("lock");
                    seen.push(Carried::default());
                    seen.len() - 1
                };
                let (to_client, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
                if let Some(bytes) = prelude2.lock().expect("lock").take() {
                    let _ = to_client.send(bytes);
                }
                *inject2.lock().expect("lock") = Some(to_client.clone());
                let (client_read, mut client_write) = client.into_split();
                let (server_read, mut server_write) = upstream.into_split();
                tokio::spawn(async move {
                    while let Some(bytes) = queue.recv().await {
                        if client_write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
                let log = seen2.clone();
                tokio::spawn(async move {
                    let mut frames = FramedRead::new(server_read, FrameCodec::new(1 << 20));
                    while let Some(Ok(f)) = frames.next().await {
                        let bytes = reflected(&f);
                        log.lock().expect("lock")[index].to_client.push(f);
                        if to_client.send(bytes).is_err() {
                            return;
                        }
                    }
                });
                let log = seen2.clone();
                tokio::spawn(async move {
                    let mut frames = FramedRead::new(client_read, FrameCodec::new(1 << 20));
                    while let Some(Ok(f)) = frames.next().await {
                        let bytes = reflected(&f);
                        log.lock().expect("lock")[index].to_server.push(f);
                        if server_write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Mitm { addr, seen, inject, prelude }
    }

    /// Sends `bytes` to the client of the latest connection.
    fn inject(&self, bytes: Vec<u8>) {
        let sender = self.inject.lock().expect("lock").clone().expect("a connection");
        sender.send(bytes).expect("the connection is open");
    }

    /// The last frame named `command` that connection `index` carried to the
    /// client (`to_client`) or to the server.
    fn recorded(&self, index: usize, command: &str, to_client: bool) -> Frame {
        let seen = self.seen.lock().expect("lock");
        let frames = if to_client { &seen[index].to_client } else { &seen[index].to_server };
        frames.iter().rev().find(|f| f.command.as_str() == command).cloned().unwrap_or_else(|| panic!("no {command}"))
    }

    /// How many connections it accepted.
    fn connections(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

async fn connect_through(mitm: &Mitm, cred: &Credentials, binding: Binding) -> Client {
    let options = ConnectOptions { binding, ..ConnectOptions::default() };
    tokio::time::timeout(WAIT, Client::connect_with(mitm.addr, cred, options))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Reads until the client refuses a frame; the error it gave.
async fn refusal(client: &mut Client) -> ClientError {
    loop {
        match tokio::time::timeout(WAIT, client.recv()).await.expect("an answer in time") {
            Ok(Some(_)) => {}
            Ok(None) => panic!("closed without refusing anything"),
            Err(e) => return e,
        }
    }
}

/// Waits until the mitm has recorded a frame named `command` on connection `index`.
async fn wait_recorded(mitm: &Mitm, index: usize, command: &str, to_client: bool) -> Frame {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        {
            let seen = mitm.seen.lock().expect("lock");
            let frames = if to_client { &seen[index].to_client } else { &seen[index].to_server };
            if let Some(f) = frames.iter().rev().find(|f| f.command.as_str() == command) {
                return f.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{command} never passed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_client_library_refuses_reflected_frames_and_frames_from_an_earlier_session_when_bound() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let (alice, bob) = (ts.user("alice"), ts.user("bob"));
    let mitm = Mitm::start(ts.addr).await;
    let mut first = connect_through(&mitm, &alice, Binding::Require).await;
    assert!(first.session().bound, "this server binds");
    let mut b = ts.connect("bob").await;

    // A private message from bob, recorded on its way.
    b.send(Command::PvMsg { to: alice.id, msg_id: Ulid::new(), msg: Body::text("once") }).await.unwrap();
    until(&mut first, |ev| matches!(ev, ServerEvent::Msg(_)).then_some(())).await;
    let old_msg = mitm.recorded(0, "MSG", true);

    // alice's own CH_VOTE, sent back to her as if the server's.
    let channel = Ulid::new();
    first.send(Command::ChVote { channel, election: 1, user: bob.id }).await.unwrap();
    let own = wait_recorded(&mitm, 0, "CH_VOTE", false).await;
    mitm.inject(reflected(&own));
    assert!(matches!(refusal(&mut first).await, ClientError::BadTag(c) if c == "CH_VOTE"));
    drop(first);

    // A later session: the MSG of the first, replayed, fails too.
    let mut second = connect_through(&mitm, &alice, Binding::Require).await;
    assert_eq!(mitm.connections(), 2);
    mitm.inject(reflected(&old_msg));
    assert!(matches!(refusal(&mut second).await, ClientError::BadTag(c) if c == "MSG"));

    // The ERR session_replaced that ends a session: harvested from one, it
    // fails in the next; and a signed frame answering a CNN is refused, since
    // the server signs nothing before the session's UCNN.
    let mut third = connect_through(&mitm, &alice, Binding::Require).await;
    let harvested = wait_recorded(&mitm, 1, "ERR", true).await;
    assert_eq!(err(&harvested).code, "session_replaced");
    mitm.inject(reflected(&harvested));
    assert!(matches!(refusal(&mut third).await, ClientError::BadTag(c) if c == "ERR"));
    *mitm.prelude.lock().unwrap() = Some(reflected(&harvested));
    let answered = Client::connect_with(mitm.addr, &alice, ConnectOptions::default()).await;
    assert!(matches!(answered, Err(ClientError::BadTag(ref c)) if c == "ERR"), "{:?}", answered.err());
}

#[tokio::test]
async fn in_a_plain_session_the_same_frames_verify_and_the_terminal_client_shows_a_replayed_message_once() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let (alice, bob) = (ts.user("alice"), ts.user("bob"));
    let mitm = Mitm::start(ts.addr).await;
    let mut chat = Chat::new(alice.id, "alice", 1, Seen::default());
    let now = || Now { ms: 0, local: "12:00:00".into() };

    // A V0 session: what the extension answers still passes its tag.
    let mut first = connect_through(&mitm, &alice, Binding::Off).await;
    assert!(!first.session().bound);
    chat.session_started(first.session());
    let mut b = ts.connect("bob").await;
    b.send(Command::PvMsg { to: alice.id, msg_id: Ulid::new(), msg: Body::text("only once") }).await.unwrap();
    let msg = until(&mut first, |ev| matches!(ev, ServerEvent::Msg(_)).then_some(ev)).await;
    assert!(chat.on_event(msg, &now()).iter().any(|c| matches!(c, Command::AckMsg { .. })));
    assert!(chat.drain_outbox().iter().any(|l| l.contains("(private) only once")));
    let old_msg = mitm.recorded(0, "MSG", true);
    first.send(Command::ChVote { channel: Ulid::new(), election: 1, user: bob.id }).await.unwrap();
    let own = wait_recorded(&mitm, 0, "CH_VOTE", false).await;
    mitm.inject(reflected(&own));
    let back = until(&mut first, |ev| matches!(ev, ServerEvent::ChVote(_)).then_some(ev)).await;
    assert!(matches!(back, ServerEvent::ChVote(v) if v.user == bob.id), "the reflected vote verifies");
    drop(first);

    // The next session (the same run of the client): the old MSG verifies,
    // and is recognised by its msg_id, so it is not shown again.
    let mut second = connect_through(&mitm, &alice, Binding::Off).await;
    chat.session_started(second.session());
    mitm.inject(reflected(&old_msg));
    let replayed = until(&mut second, |ev| matches!(ev, ServerEvent::Msg(_)).then_some(ev)).await;
    chat.on_event(replayed, &now());
    assert!(!chat.drain_outbox().iter().any(|l| l.contains("only once")), "shown twice");
    // The harvested ERR session_replaced verifies too: the session is not
    // bound, so the terminal client does not take it as fresh.
    let mut third = connect_through(&mitm, &alice, Binding::Off).await;
    let harvested = wait_recorded(&mitm, 1, "ERR", true).await;
    mitm.inject(reflected(&harvested));
    let e = until(&mut third, |ev| if let ServerEvent::Err(e) = ev { Some(e) } else { None }).await;
    assert_eq!((e.code.as_str(), third.session().bound), ("session_replaced", false));
}

#[test]
fn sigil_client_does_not_end_on_a_harvested_session_replaced() {
    let dir = account_dir(&["alice", "bob"]);
    let d = dir.path();
    let server = ServerProcess::start(d, &[]);
    let server_addr: SocketAddr = server.addr.parse().expect("an address");
    let alice = Credentials::load(&d.join("alice.cred")).expect("alice.cred");
    let bob = Credentials::load(&d.join("bob.cred")).expect("bob.cred");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mitm = runtime.block_on(async {
        let mitm = Mitm::start(server_addr).await;
        // Harvest: a session of alice's through the machine in the middle,
        // replaced by another; its ERR session_replaced is on record.
        let _first = connect_through(&mitm, &alice, Binding::Prefer).await;
        let _second = Client::connect(server_addr, &alice).await.expect("connect");
        wait_recorded(&mitm, 0, "ERR", true).await;
        mitm
    });
    let harvested = mitm.recorded(0, "ERR", true);
    assert_eq!(err(&harvested).code, "session_replaced");

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"));
    command.current_dir(d).args(["client", &mitm.addr.to_string(), "--cred", "alice.cred", "--plain", "--no-state"]);
    let mut client = LineProcess::spawn(command);
    client.wait_for("signed in as alice");
    client.wait_for("connected to");
    // Replayed into the session, and again as the answer to the next CNN.
    *mitm.prelude.lock().unwrap() = Some(reflected(&harvested));
    mitm.inject(reflected(&harvested));
    client.wait_for("bad or missing signature");
    // It goes on: reconnected, it gets bob's message.
    runtime.block_on(async {
        let mut b = Client::connect(server_addr, &bob).await.expect("bob connects");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            b.send(Command::PvMsg { to: alice.id, msg_id: Ulid::new(), msg: Body::text("still there?") })
                .await
                .unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                loop {
                    match b.recv().await {
                        Ok(Some(ServerEvent::MsgAck(_))) => return true,
                        Ok(Some(_)) => {}
                        _ => return false,
                    }
                }
            })
            .await;
            if got == Ok(true) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "alice never came back");
        }
    });
    client.wait_for("<bob> (private) still there?");
    let printed = client.seen.join("\n");
    assert!(client.finish().success(), "{printed}");
    assert!(mitm.connections() >= 3, "it reconnected past the replayed answer");
}
