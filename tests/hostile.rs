//! Framing faults over real TCP (PROTOCOL.md §1): each gets an ERR and a
//! closed connection, and the server keeps serving everyone else.

mod support;

use sigil_proto::ErrorCode;
use support::*;

async fn assert_still_serving(ts: &TestServer) {
    let mut raw = ts.raw().await;
    raw.send(b"INFO\n0\n\n").await;
    assert_eq!(raw.frame().await.expect("SINFO").command.as_str(), "SINFO");
    let _ = ts.connect("alice").await;
}

#[tokio::test]
async fn oversize_len_is_too_large() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    for bytes in [&b"INFO\n65537\n\n"[..], b"INFO\n99999999999999999999999\n", b"INFO\n1000000"] {
        let mut raw = ts.raw().await;
        raw.send(bytes).await;
        raw.expect_fatal(ErrorCode::TooLarge).await;
    }
    // (Exactly max_payload is legal: tests/session.rs checks it after CNN.)
    assert_still_serving(&ts).await;
}

#[tokio::test]
async fn garbage_and_malformed_headers_are_bad_frame() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let cases: &[&[u8]] = &[
        b"hello world\n",
        b"\x00\x01\x02\xff",
        b"INFO\n007\n\n",
        b"INFO\n-1\n\n",
        b"INFO\n0\nnot-hex\n",
        b"INFO\n0\nabcdef\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"INFO\r\r\n0\n\n",
    ];
    for &bytes in cases {
        let mut raw = ts.raw().await;
        raw.send(bytes).await;
        let (f, _) = raw.expect_fatal(ErrorCode::BadFrame).await;
        assert!(f.signature.is_none());
    }
    assert_still_serving(&ts).await;
}

#[tokio::test]
async fn an_endless_line_is_cut_off_at_its_legal_length() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let mut raw = ts.raw().await;
    // 17 command bytes without LF: one past the longest command name.
    raw.send(&[b'A'; 17]).await;
    raw.expect_fatal(ErrorCode::BadFrame).await;
    // A long signature line, sent slowly in pieces.
    let mut raw = ts.raw().await;
    raw.send(b"INFO\n0\n").await;
    for _ in 0..3 {
        raw.send(&[b'a'; 50]).await;
    }
    raw.expect_fatal(ErrorCode::BadFrame).await;
    assert_still_serving(&ts).await;
}

#[tokio::test]
async fn truncated_frame_then_close_harms_nobody() {
    let ts = TestServer::start(&["alice"], |_| {}).await;
    let mut alice = ts.connect("alice").await;
    {
        let mut raw = ts.raw().await;
        raw.send(b"CNN\n500\n").await;
        // Dropped mid-frame.
    }
    alice.send(sigil_proto::Command::LstUsr { all: false }).await.unwrap();
    assert!(matches!(next(&mut alice).await, sigil_proto::ServerEvent::UsrLst(_)));
}
