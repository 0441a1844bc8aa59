//! Connection lifecycle over real TCP (PROTOCOL.md §3, §4).

mod support;

use sigil_proto::event::Sinfo;
use sigil_proto::{Command, Envelope, ErrorCode, Request, ServerEvent};
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn unsigned_info_before_cnn_gets_unsigned_sinfo() {
    let ts = TestServer::start(&["alice"], |c| c.limits.min_online = 3).await;
    let mut raw = ts.raw().await;
    raw.send(b"INFO\n0\n\n").await;
    let f = raw.frame().await.expect("SINFO");
    assert_eq!(f.command.as_str(), "SINFO");
    assert!(f.signature.is_none(), "answers before CNN are unsigned");
    let s: Sinfo = rmp_serde::from_slice(&f.payload).unwrap();
    assert_eq!(s.protocol_version, 0);
    assert_eq!((s.timeout_s, s.cnn_timeout_s, s.skew_s, s.max_payload, s.min_online), (180, 10, 30, 65536, 3));
    // CRLF line endings (netcat -C) and blank lines are tolerated; the session goes on.
    raw.send(b"\r\n\nINFO\r\n0\r\n\r\n").await;
    assert_eq!(raw.frame().await.unwrap().command.as_str(), "SINFO");
    raw.authenticate(&ts.user("alice")).await;
}

#[tokio::test]
async fn cnn_confirms_with_own_ucnn_first_and_announces_to_others() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let mut alice = ts.connect("alice").await; // connect() checks the self-UCNN comes first
    let bob = ts.connect("bob").await;
    match next(&mut alice).await {
        ServerEvent::Ucnn(u) => assert_eq!((u.id, u.name.as_str()), (bob.credentials.id, "bob")),
        other => panic!("expected UCNN for bob, got {other:?}"),
    }
    alice.send(Command::LstUsr { all: false }).await.unwrap();
    let ServerEvent::UsrLst(l) = next(&mut alice).await else { panic!("USR_LST") };
    let names: Vec<_> = l.users.iter().map(|u| (u.name.as_str(), u.status.as_str())).collect();
    assert_eq!(names, vec![("alice", "online"), ("bob", "online")]);
}

#[tokio::test]
async fn cnn_timeout_closes_with_unsigned_err() {
    let ts = TestServer::start(&[], |c| c.cnn_timeout_ms = Some(300)).await;
    let mut raw = ts.raw().await;
    let (f, _) = raw.expect_fatal(ErrorCode::Timeout).await;
    assert!(f.signature.is_none());
}

#[tokio::test]
async fn idle_timeout_closes_and_kalive_keeps_alive() {
    let ts = TestServer::start(&["alice", "bob"], |c| c.idle_timeout_ms = Some(600)).await;
    let mut alice = ts.connect("alice").await;
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        alice.send(Command::Kalive).await.unwrap();
    }
    // 1.25 s in, past the 0.6 s idle timeout: still open, and KALIVE got no answer.
    alice.send(Command::LstUsr { all: false }).await.unwrap();
    assert!(matches!(next(&mut alice).await, ServerEvent::UsrLst(_)));
    let mut bob = ts.connect("bob").await;
    let e = until(&mut bob, |ev| match ev {
        ServerEvent::Err(e) => Some(e),
        _ => None,
    })
    .await;
    assert_eq!(code(&e), ErrorCode::Timeout);
    closed(&mut bob).await;
}

#[tokio::test]
async fn dcnn_flushes_then_closes_and_others_see_udcnn() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    let mut bob = ts.connect("bob").await;
    let _ = next(&mut alice).await; // UCNN bob
    bob.send(Command::LstUsr { all: false }).await.unwrap();
    bob.send(Command::Dcnn).await.unwrap();
    assert!(matches!(next(&mut bob).await, ServerEvent::UsrLst(_)), "queued frames are flushed before close");
    closed(&mut bob).await;
    match next(&mut alice).await {
        ServerEvent::Udcnn(u) => assert_eq!(u.name, "bob"),
        other => panic!("expected UDCNN, got {other:?}"),
    }
}

#[tokio::test]
async fn second_cnn_replaces_the_old_session() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let mut watcher = ts.connect("bob").await;
    let mut old = ts.connect("alice").await;
    let _ = next(&mut watcher).await; // UCNN alice
    let mut new = ts.connect("alice").await;
    let e = next_err(&mut old).await;
    assert_eq!(code(&e), ErrorCode::SessionReplaced);
    closed(&mut old).await;
    assert!(matches!(next(&mut watcher).await, ServerEvent::Udcnn(u) if u.name == "alice"));
    assert!(matches!(next(&mut watcher).await, ServerEvent::Ucnn(u) if u.name == "alice"));
    new.send(Command::LstUsr { all: false }).await.unwrap();
    assert!(matches!(next(&mut new).await, ServerEvent::UsrLst(_)));
    // A second CNN on an authenticated session is refused but not fatal.
    let nonce = new.send(Command::Cnn { id: new.credentials.id, batch: false, bind: false }).await.unwrap();
    let e = next_err(&mut new).await;
    assert_eq!((code(&e), e.nonce_ref), (ErrorCode::AlreadyAuthenticated, Some(nonce)));
    new.send(Command::Info).await.unwrap();
    assert!(matches!(next(&mut new).await, ServerEvent::Sinfo(_)));
}

#[tokio::test]
async fn wrong_key_and_unknown_id_fail_identically() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut wrong_key = alice.clone();
    wrong_key.key = sigil_proto::wire::SecretKey::generate();
    let mut unknown = alice.clone();
    unknown.id = ulid::Ulid::new();
    let mut answers = Vec::new();
    for cred in [wrong_key, unknown] {
        let mut raw = ts.raw().await;
        raw.send_request(&cred, Command::Cnn { id: cred.id, batch: false, bind: false }, rand::random(), now()).await;
        let (f, e) = raw.expect_fatal(ErrorCode::AuthFailed).await;
        assert!(f.signature.is_none());
        answers.push(f.payload);
        let _ = e;
    }
    assert_eq!(answers[0], answers[1], "same code and same reason text");
}

#[tokio::test]
async fn stale_and_replayed_frames_are_fatal() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.send_request(&alice, Command::Cnn { id: alice.id, batch: false, bind: false }, 1, now() - 100).await;
    raw.expect_fatal(ErrorCode::Stale).await;
    let mut raw = ts.raw().await;
    raw.send_request(&alice, Command::Cnn { id: alice.id, batch: false, bind: false }, 2, now() + 100).await;
    raw.expect_fatal(ErrorCode::Stale).await;

    // The same CNN bytes on a second connection: replay.
    let mut first = ts.raw().await;
    let captured =
        first.send_request(&alice, Command::Cnn { id: alice.id, batch: false, bind: false }, u64::MAX - 1, now()).await;
    assert_eq!(first.frame().await.unwrap().command.as_str(), "UCNN");
    let mut second = ts.raw().await;
    second.send(&captured).await;
    second.expect_fatal(ErrorCode::Replay).await;
    // The first session is untouched by the failed replay. A replayed command
    // inside it is fatal, with ref set to the nonce.
    let lst = first.send_request(&alice, Command::LstUsr { all: false }, 99, now()).await;
    assert_eq!(first.frame().await.unwrap().command.as_str(), "USR_LST");
    first.send(&lst).await;
    let (f, e) = first.expect_fatal(ErrorCode::Replay).await;
    assert!(f.signature.is_some(), "errors after CNN are signed");
    assert_eq!(e.nonce_ref, Some(99));
}

#[tokio::test]
async fn commands_before_cnn_are_refused() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.send_request(&alice, Command::LstUsr { all: false }, 1, now()).await;
    raw.expect_fatal(ErrorCode::NotAuthenticated).await;
}

#[tokio::test]
async fn bad_tag_after_cnn_is_fatal_and_signed() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.authenticate(&alice).await;
    let mut frame = signed(&alice, Command::LstUsr { all: false }, 5, now());
    let sig_start = frame.iter().position(|&b| b == b'\n').unwrap() + 1;
    let sig_start = sig_start + frame[sig_start..].iter().position(|&b| b == b'\n').unwrap() + 1;
    frame[sig_start] = if frame[sig_start] == b'0' { b'1' } else { b'0' };
    raw.send(&frame).await;
    let (f, _) = raw.expect_fatal(ErrorCode::BadSignature).await;
    let tag = f.signature.expect("signed");
    assert!(alice.key.mac().verify(b"ERR", &f.payload, &tag), "signed with the recipient's key");
}

#[tokio::test]
async fn payload_errors_and_unknown_commands_are_not_fatal() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.authenticate(&alice).await;
    // An array, not a map.
    raw.send(&signed_raw(&alice, "LST_USR", &[0x92, 0x01, 0x02])).await;
    let (_, e) = raw.expect_err().await;
    assert_eq!(e.code, "bad_payload");
    // A map without the required field: ref is the nonce.
    let payload = rmp_serde::to_vec_named(&sigil_proto::Envelope { nonce: 42, timestamp: now() }).unwrap();
    raw.send(&signed_raw(&alice, "PV_MSG", &payload)).await;
    let (_, e) = raw.expect_err().await;
    assert_eq!((e.code.as_str(), e.nonce_ref), ("bad_payload", Some(42)));
    let payload = rmp_serde::to_vec_named(&sigil_proto::Envelope { nonce: 43, timestamp: now() }).unwrap();
    raw.send(&signed_raw(&alice, "FROBNICATE", &payload)).await;
    let (_, e) = raw.expect_err().await;
    assert_eq!((e.code.as_str(), e.nonce_ref), ("unknown_command", Some(43)));
    // A str that is not UTF-8, and an id sent as bin: bad_payload, not silently converted.
    let mut bad_utf8 = vec![0x83, 0xa5];
    bad_utf8.extend_from_slice(b"nonce");
    bad_utf8.extend_from_slice(&[0x2d, 0xa9]);
    bad_utf8.extend_from_slice(b"timestamp");
    bad_utf8.push(0xce);
    bad_utf8.extend_from_slice(&(now() as u32).to_be_bytes());
    bad_utf8.extend_from_slice(&[0xa1, b'x', 0xa2, 0xc3, 0x28]);
    raw.send(&signed_raw(&alice, "LST_USR", &bad_utf8)).await;
    let (_, e) = raw.expect_err().await;
    assert_eq!(e.code, "bad_payload");
    let mut bin_id = vec![0x83, 0xa5];
    bin_id.extend_from_slice(b"nonce");
    bin_id.push(0x2e);
    bin_id.extend_from_slice(&[0xa9]);
    bin_id.extend_from_slice(b"timestamp");
    bin_id.push(0xce);
    bin_id.extend_from_slice(&(now() as u32).to_be_bytes());
    bin_id.extend_from_slice(&[0xa2, b't', b'o', 0xc4, 26]);
    bin_id.extend_from_slice(alice.id.to_string().as_bytes());
    raw.send(&signed_raw(&alice, "CNN_USR", &bin_id)).await;
    let (_, e) = raw.expect_err().await;
    assert_eq!((e.code.as_str(), e.nonce_ref), ("bad_payload", Some(0x2e)));
    raw.send_request(&alice, Command::LstUsr { all: false }, 44, now()).await;
    assert_eq!(raw.frame().await.unwrap().command.as_str(), "USR_LST");
}

#[tokio::test]
async fn a_user_list_larger_than_max_payload_comes_in_pages() {
    let names: Vec<String> = (0..12).map(|i| format!("user{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ts = TestServer::start(&refs, |c| c.limits.max_payload = 300).await;
    let mut clients = Vec::new();
    for n in &refs {
        clients.push(sigil_client::Client::connect_with_max_payload(ts.addr, &ts.user(n), 300).await.unwrap());
    }
    let me = &mut clients[0];
    me.send(Command::LstUsr { all: false }).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let page = until(me, |ev| if let ServerEvent::UsrLst(l) = ev { Some(l) } else { None }).await;
        seen.extend(page.users.into_iter().map(|u| u.name));
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, names, "every user once, in name order, across pages");
}

#[tokio::test]
async fn a_client_that_closes_right_after_its_requests_still_gets_the_replies() {
    let ts = TestServer::start(&["alice", "bob"], |_| {}).await;
    let mut bob = ts.connect("bob").await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    let mut bytes = signed(&alice, Command::Cnn { id: alice.id, batch: false, bind: false }, 1, now());
    bytes.extend(signed(&alice, Command::LstUsr { all: false }, 2, now()));
    raw.send(&bytes).await;
    raw.stream.shutdown().await.unwrap();
    let commands: Vec<String> = {
        let mut v = Vec::new();
        while let Some(f) = raw.frame().await {
            v.push(f.command.as_str().to_owned());
        }
        v
    };
    assert_eq!(commands, ["UCNN", "USR_LST"], "replies to what was sent before the close");
    // bob saw alice come and go.
    assert!(matches!(next(&mut bob).await, ServerEvent::Ucnn(u) if u.id == alice.id));
    assert!(matches!(next(&mut bob).await, ServerEvent::Udcnn(u) if u.id == alice.id));
}

#[tokio::test]
async fn a_malformed_cnn_is_not_fatal_and_a_missing_tag_looks_like_a_wrong_one() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.send(&signed_raw(&alice, "CNN", &[0x80])).await;
    let (f, e) = raw.expect_err().await;
    assert_eq!(e.code, "bad_payload");
    assert!(f.signature.is_none());
    raw.authenticate(&alice).await;

    let mut answers = Vec::new();
    for tag in [false, true] {
        let mut raw = ts.raw().await;
        let payload = Request {
            envelope: Envelope { nonce: rand::random(), timestamp: now() },
            command: Command::Cnn { id: alice.id, batch: false, bind: false },
        }
        .encode()
        .1;
        let mut frame = format!("CNN\n{}\n", payload.len()).into_bytes();
        if tag {
            frame.extend_from_slice(&[b'0'; 128]);
        }
        frame.push(b'\n');
        frame.extend_from_slice(&payload);
        raw.send(&frame).await;
        let (f, _) = raw.expect_fatal(ErrorCode::AuthFailed).await;
        answers.push(f.payload);
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test]
async fn an_unauthenticated_info_flood_is_a_slow_consumer() {
    let ts = TestServer::start(&["alice"], |c| c.outbound_queue = 4).await;
    let mut raw = ts.raw().await;
    // Far more INFOs than the queue holds, without reading; the kernel buffers
    // absorb some answers, so keep going (bounded) until the server gives up.
    let mut closed = false;
    for _ in 0..200 {
        if raw.stream.write_all(&b"INFO\n0\n\n".repeat(500)).await.is_err() {
            closed = true;
            break;
        }
    }
    let mut saw = false;
    while let Some(f) = raw.frame().await {
        if f.command.as_str() == "ERR" {
            let e: sigil_proto::event::ErrPayload = rmp_serde::from_slice(&f.payload).unwrap();
            saw |= e.code == "slow_consumer";
        }
    }
    assert!(saw || closed, "the flooder is dropped");
    let _ = ts.connect("alice").await;
}

#[tokio::test]
async fn len_is_capped_before_cnn_and_max_payload_is_accepted_after() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let mut raw = ts.raw().await;
    raw.send(b"INFO\n1025\n\n").await;
    raw.expect_fatal(ErrorCode::TooLarge).await;

    let alice = ts.user("alice");
    let mut raw = ts.raw().await;
    raw.authenticate(&alice).await;
    // A LST_USR padded with an unknown key to exactly max_payload bytes.
    let build = |pad: usize| {
        let mut v = Vec::new();
        rmpv::encode::write_value(
            &mut v,
            &rmpv::Value::Map(vec![
                ("nonce".into(), 7u64.into()),
                ("timestamp".into(), now().into()),
                ("pad".into(), rmpv::Value::Binary(vec![0; pad])),
            ]),
        )
        .unwrap();
        v
    };
    let overhead = build(60_000).len() - 60_000;
    let payload = build(65_536 - overhead);
    assert_eq!(payload.len(), 65_536);
    raw.send(&signed_raw(&alice, "LST_USR", &payload)).await;
    assert_eq!(raw.frame().await.unwrap().command.as_str(), "USR_LST");
    let mut too_big = b"LST_USR\n65537\n".to_vec();
    too_big.extend_from_slice(&[b'0'; 128]);
    raw.send(&too_big).await;
    raw.expect_fatal(ErrorCode::TooLarge).await;
}
