//! The WebSocket transport (`GET /ws`, spec §1.5): one frame per message
//! both ways, the same session rules as TCP, refusals, limits, origins, and
//! replacement between TCP and WebSocket sessions of one account.

mod support;

use futures_util::{SinkExt, StreamExt};
use sigil_client::Credentials;
use sigil_proto::event::ErrPayload;
use sigil_proto::wire::{Frame, FrameCodec};
use sigil_proto::{Command, ErrorCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::Decoder;

type Socket = WebSocketStream<TcpStream>;

/// A server with the web listener on a free port.
async fn server(names: &[&str], tweak: impl FnOnce(&mut sigil_server::Config)) -> TestServer {
    TestServer::start(names, |c| {
        c.web = Some("127.0.0.1:0".into());
        tweak(c);
    })
    .await
}

fn web_addr(ts: &TestServer) -> std::net::SocketAddr {
    ts.server.as_ref().and_then(|s| s.web_addr()).expect("web listener")
}

/// Opens `/ws` with `headers`; the handshake's error status on refusal.
async fn open_with(ts: &TestServer, headers: &[(&str, &str)]) -> Result<(Socket, Option<String>), u16> {
    let addr = web_addr(ts);
    let mut request = format!("ws://{addr}/ws").into_client_request().expect("request");
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        request.headers_mut().insert(name, HeaderValue::from_str(value).expect("header value"));
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((socket, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ascii protocol").to_owned());
            Ok((socket, protocol))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn open(ts: &TestServer) -> Socket {
    open_with(ts, &[("sec-websocket-protocol", "sigil.v0")]).await.expect("upgrade").0
}

/// The next message, which must be a binary one holding exactly one frame;
/// `None` once the server closed.
async fn frame(ws: &mut Socket) -> Option<Frame> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                let mut buf = bytes::BytesMut::from(&bytes[..]);
                let frame = FrameCodec::new(1 << 20).decode(&mut buf).expect("a valid frame").expect("a whole frame");
                assert!(buf.is_empty(), "one frame per message, got {} more bytes", buf.len());
                return Some(frame);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("the server sends binary messages only, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Socket, bytes: &[u8]) {
    ws.send(Message::Binary(bytes.to_vec().into())).await.expect("send");
}

fn err_of(frame: &Frame) -> ErrPayload {
    assert_eq!(frame.command.as_str(), "ERR", "{frame:?}");
    rmp_serde::from_slice(&frame.payload).expect("ERR payload")
}

/// The next frame is `ERR code`, then the server closes.
async fn expect_fatal(ws: &mut Socket, code: ErrorCode) -> ErrPayload {
    let e = err_of(&frame(ws).await.expect("an ERR before the close"));
    assert_eq!(e.code, code.as_str(), "reason: {}", e.reason);
    assert!(frame(ws).await.is_none(), "closed after a fatal error");
    e
}

async fn authenticate(ws: &mut Socket, cred: &Credentials) {
    send(ws, &signed(cred, Command::Cnn { id: cred.id, batch: false, bind: false }, rand::random(), now())).await;
    let ucnn = frame(ws).await.expect("UCNN");
    assert_eq!(ucnn.command.as_str(), "UCNN", "{ucnn:?}");
}

#[tokio::test]
async fn info_and_a_session_run_over_a_websocket_with_one_frame_per_message() {
    let ts = server(&["alice", "bob"], |_| {}).await;
    let (mut ws, protocol) = open_with(&ts, &[("sec-websocket-protocol", "sigil.v0")]).await.expect("upgrade");
    assert_eq!(protocol.as_deref(), Some("sigil.v0"), "the offered subprotocol is echoed");
    send(&mut ws, b"INFO\n0\n\n").await;
    let sinfo = frame(&mut ws).await.expect("SINFO");
    assert_eq!(sinfo.command.as_str(), "SINFO");
    assert!(sinfo.signature.is_none(), "SINFO before CNN is unsigned");

    let alice = ts.user("alice");
    authenticate(&mut ws, &alice).await;
    // A TCP user and a WebSocket user see each other.
    let _bob = ts.connect("bob").await;
    send(&mut ws, &signed(&alice, Command::LstUsr { all: false }, 7, now())).await;
    let mut names = Vec::new();
    while let Some(f) = frame(&mut ws).await {
        assert!(f.signature.is_some(), "{} is signed after CNN", f.command);
        if f.command.as_str() == "USR_LST" {
            names.push(String::from_utf8_lossy(&f.payload).into_owned());
            break;
        }
    }
    assert!(names[0].contains("bob"), "bob listed to the WebSocket user: {names:?}");
    // Counted as what it is.
    let metrics = ts.server.as_ref().expect("running").metrics().render();
    for line in ["sigil_connections{transport=\"websocket\"} 1", "sigil_sessions{transport=\"websocket\"} 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_client_offering_no_subprotocol_is_accepted_and_text_messages_carry_frames() {
    let ts = server(&[], |_| {}).await;
    let (mut ws, protocol) = open_with(&ts, &[]).await.expect("upgrade without a subprotocol");
    assert_eq!(protocol, None);
    ws.send(Message::Text("INFO\n0\n\n".into())).await.expect("send text");
    assert_eq!(frame(&mut ws).await.expect("SINFO").command.as_str(), "SINFO");
}

#[tokio::test]
async fn a_message_holding_no_frame_part_of_one_or_two_is_refused_with_bad_frame() {
    let ts = server(&["alice"], |_| {}).await;
    for bad in [&b""[..], b"INFO\n0", b"INFO\n0\n\nINFO\n0\n\n", b"CNN\n40\n\n\x81"] {
        let mut ws = open(&ts).await;
        send(&mut ws, bad).await;
        let e = expect_fatal(&mut ws, ErrorCode::BadFrame).await;
        assert!(e.reason.contains("WebSocket message"), "{bad:?}: {}", e.reason);
    }
    // A malformed header is reported as on TCP.
    let mut ws = open(&ts).await;
    send(&mut ws, b"info\n0\n\n").await;
    expect_fatal(&mut ws, ErrorCode::BadFrame).await;
    // After authentication too, and the ERR is signed.
    let mut ws = open(&ts).await;
    authenticate(&mut ws, &ts.user("alice")).await;
    let lst = signed(&ts.user("alice"), Command::LstUsr { all: false }, 9, now());
    send(&mut ws, &[&lst[..], &lst[..]].concat()).await;
    let f = frame(&mut ws).await.expect("ERR");
    assert!(f.signature.is_some());
    assert_eq!(err_of(&f).code, "bad_frame");
}

#[tokio::test]
async fn limits_are_the_tcp_ones() {
    let ts = server(&["alice"], |c| c.limits.max_payload = 2048).await;
    // Before authentication, LEN is limited to 1024 as on TCP.
    let mut ws = open(&ts).await;
    send(&mut ws, format!("CNN\n1500\n\n{}", "x".repeat(1500)).as_bytes()).await;
    expect_fatal(&mut ws, ErrorCode::TooLarge).await;
    // A message over max_payload and a header's room is refused before it is read whole.
    let mut ws = open(&ts).await;
    authenticate(&mut ws, &ts.user("alice")).await;
    send(&mut ws, &vec![b'x'; 64 * 1024]).await;
    expect_fatal(&mut ws, ErrorCode::TooLarge).await;
}

#[tokio::test]
async fn the_cnn_timeout_applies() {
    let ts = server(&[], |c| c.cnn_timeout_ms = Some(300)).await;
    let mut ws = open(&ts).await;
    expect_fatal(&mut ws, ErrorCode::Timeout).await;
}

#[tokio::test]
async fn tcp_and_websocket_sessions_of_one_account_replace_each_other() {
    let ts = server(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut tcp = ts.raw().await;
    tcp.authenticate(&alice).await;
    let mut ws = open(&ts).await;
    authenticate(&mut ws, &alice).await;
    tcp.expect_fatal(ErrorCode::SessionReplaced).await;
    let mut tcp = ts.raw().await;
    tcp.authenticate(&alice).await;
    expect_fatal(&mut ws, ErrorCode::SessionReplaced).await;
}

#[tokio::test]
async fn the_per_address_cap_counts_websockets() {
    let ts = server(&[], |c| c.max_connections_per_ip = 1).await;
    let _tcp = ts.raw().await;
    // The TCP connection is admitted before the WebSocket asks.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut ws = open(&ts).await;
    expect_fatal(&mut ws, ErrorCode::RateLimited).await;
}

#[tokio::test]
async fn pings_are_answered_and_a_close_ends_the_session() {
    let ts = server(&["alice"], |_| {}).await;
    let mut ws = open(&ts).await;
    ws.send(Message::Ping(b"hi".to_vec().into())).await.expect("ping");
    let pong = tokio::time::timeout(WAIT, ws.next()).await.expect("pong in time");
    assert!(matches!(pong, Some(Ok(Message::Pong(ref p))) if &p[..] == b"hi"), "{pong:?}");
    ws.close(None).await.expect("close");
    // The server answers the close (and ends the stream).
    while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, ws.next()).await {
        assert!(matches!(message, Message::Close(_)), "{message:?}");
    }
}

#[tokio::test]
async fn a_shutdown_tells_websocket_sessions() {
    let mut ts = server(&["alice"], |_| {}).await;
    let mut ws = open(&ts).await;
    authenticate(&mut ws, &ts.user("alice")).await;
    let stopping = tokio::spawn(async move {
        ts.stop().await;
        ts
    });
    expect_fatal(&mut ws, ErrorCode::Shutdown).await;
    drop(stopping.await);
}

#[tokio::test]
async fn pages_of_other_origins_are_refused_unless_allowed() {
    let ts = server(&[], |c| c.web_origins = vec!["https://chat.example".into()]).await;
    let host = web_addr(&ts).to_string();
    let own = format!("http://{host}");
    assert!(open_with(&ts, &[("origin", &own)]).await.is_ok(), "the page's own origin");
    assert!(open_with(&ts, &[("origin", "https://chat.example")]).await.is_ok(), "an allowed origin");
    assert_eq!(open_with(&ts, &[("origin", "https://evil.example")]).await.err(), Some(403));
    assert_eq!(open_with(&ts, &[("origin", "null")]).await.err(), Some(403));
}

/// `GET path` over plain HTTP/1.1: the status line and headers, and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response)).await.expect("response in time").expect("read");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a header") + 4;
    (String::from_utf8_lossy(&response[..split]).to_lowercase(), response[split..].to_vec())
}

#[tokio::test]
async fn the_page_is_served_from_the_server_itself() {
    let ts = server(&[], |_| {}).await;
    let addr = web_addr(&ts);
    let (head, body) = http_get(addr, "/").await;
    if require_web_build() || head.starts_with("http/1.1 200") {
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
        let page = String::from_utf8_lossy(&body);
        assert!(page.contains("app.js"), "the page loads its script");
        for attr in ["src=\"http", "href=\"http", "src='http", "href='http", "url(http", "@import"] {
            assert!(!page.contains(attr), "no outside request from the page ({attr})");
        }
        let (head, _) = http_get(addr, "/app.js").await;
        assert!(head.starts_with("http/1.1 200") && head.contains("text/javascript"), "{head}");
    } else {
        println!("skipped: the browser client was not built (no npm); `/` says so");
        assert!(head.starts_with("http/1.1 503"), "{head}");
    }
    let (head, _) = http_get(addr, "/no-such-file").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

/// `scripts/test.sh` builds the page and requires it (`SIGIL_REQUIRE_WEB=1`
/// also makes the build fail without it).
fn require_web_build() -> bool {
    std::env::var("SIGIL_REQUIRE_WEB").is_ok_and(|v| v == "1")
}

#[tokio::test]
async fn a_bound_session_over_a_websocket_is_signed_with_the_key_derived_from_its_cnn() {
    let ts = server(&["alice"], |_| {}).await;
    let alice = ts.user("alice");
    let mut ws = open(&ts).await;
    let (nonce, timestamp) = (rand::random(), now());
    send(&mut ws, &signed(&alice, Command::Cnn { id: alice.id, batch: false, bind: true }, nonce, timestamp)).await;
    // The same path as TCP (PROTOCOL.md §7.10): every frame from the UCNN on,
    // the last fatal ERR included, under the derived key and not the account's.
    let derived = alice.key.server_key(nonce, timestamp).mac();
    let under = |mac: &sigil_proto::wire::FrameMac, f: &Frame| {
        f.signature.as_ref().is_some_and(|tag| mac.verify(f.command.as_bytes(), &f.payload, tag))
    };
    let ucnn = frame(&mut ws).await.expect("UCNN");
    assert_eq!(ucnn.command.as_str(), "UCNN");
    send(&mut ws, &signed(&alice, Command::Info, 1, now())).await;
    let sinfo = frame(&mut ws).await.expect("SINFO");
    assert_eq!(sinfo.command.as_str(), "SINFO");
    send(&mut ws, b"KALIVE\n1\n\n\x80").await;
    let last = frame(&mut ws).await.expect("ERR");
    assert_eq!(err_of(&last).code, "bad_signature");
    for f in [&ucnn, &sinfo, &last] {
        assert!(under(&derived, f) && !under(&alice.key.mac(), f), "{} under the derived key only", f.command);
    }
}
