//! The TLS frame listener (`serve --tls-cert --tls-key`): a signed session over
//! TLS beside plain TCP, certificate checks, the handshake's place behind the
//! connection limits and its deadline, and reloading the certificate (by
//! `RunningServer::reload_tls` and by SIGHUP to `sigil serve`).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber};
use sigil_client::{Client, ClientError, ConnectOptions, Credentials, Endpoint, TlsClientOptions};
use sigil_proto::wire::FrameCodec;
use sigil_proto::{Body, Command, ServerEvent};
use sigil_server::{Config, ServerError, TlsConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::codec::Decoder;
use ulid::Ulid;

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for localhost and 127.0.0.1 with `serial`: (cert PEM, key PEM, cert DER).
    fn server_cert(&self, serial: u64) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, format!("sigil test server {serial}"));
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signed server cert");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// Certificate and key files in a directory of their own.
struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn new(ca: &Ca, cert: &str, key: &str) -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Files {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            ca: dir.path().join("ca.pem"),
            _dir: dir,
        };
        std::fs::write(&files.ca, ca.pem()).expect("write CA");
        files.write(cert, key);
        files
    }

    fn write(&self, cert: &str, key: &str) {
        std::fs::write(&self.cert, cert).expect("write cert");
        std::fs::write(&self.key, key).expect("write key");
    }
}

fn tls_on(files: &Files) -> impl FnOnce(&mut Config) + '_ {
    move |c: &mut Config| {
        c.tls = Some(TlsConfig { listen: "127.0.0.1:0".into(), cert: files.cert.clone(), key: files.key.clone() })
    }
}

fn tls_addr(ts: &TestServer) -> SocketAddr {
    ts.server.as_ref().expect("running").tls_addr().expect("TLS is on")
}

fn trusting(ca: &Ca) -> TlsClientOptions {
    TlsClientOptions::with_ca_pem(ca.pem().as_bytes()).expect("CA PEM")
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a DNS name")
}

async fn connect_tls(addr: SocketAddr, tls: &TlsClientOptions, cred: &Credentials) -> Result<Client, ClientError> {
    tokio::time::timeout(WAIT, Client::connect_tls(addr, localhost(), tls, cred, ConnectOptions::default()))
        .await
        .expect("connect in time")
}

/// A TLS stream, no frames sent yet.
async fn raw_tls(addr: SocketAddr, tls: &TlsClientOptions) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp connect");
    tokio_rustls::TlsConnector::from(tls.config()).connect(localhost(), tcp).await.expect("handshake")
}

/// True once the server has closed `stream` (end of stream or an error, after
/// whatever it sent: a TLS alert, say), false if it is still open after `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut chunk = [0u8; 256];
    let closed = async { while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {} };
    tokio::time::timeout(wait, closed).await.is_ok()
}

#[tokio::test]
async fn a_signed_session_over_tls_beside_plain_tcp() {
    let ca = Ca::new("sigil test CA");
    let (cert, key, der) = ca.server_cert(1);
    let files = Files::new(&ca, &cert, &key);
    let ts = TestServer::start(&["alice", "bob"], tls_on(&files)).await;
    let addr = tls_addr(&ts);
    assert_ne!(addr, ts.addr, "a listener of its own");

    // CNN and UCNN over TLS, through the command line's address form.
    let endpoint = Endpoint::parse(&format!("tls://localhost:{}", addr.port()), Some(&files.ca)).expect("address");
    let mut alice = tokio::time::timeout(WAIT, Client::connect_to(&endpoint, &ts.user("alice"), Default::default()))
        .await
        .expect("in time")
        .expect("alice connects over TLS");
    assert_eq!(alice.peer_certificate(), Some(der.as_slice()));
    // Bob on plain TCP: alice hears of him.
    let mut bob = ts.connect("bob").await;
    assert_eq!(bob.peer_certificate(), None);
    let (a, b) = (alice.credentials.id, bob.credentials.id);
    assert!(matches!(next(&mut alice).await, ServerEvent::Ucnn(u) if u.id == b));

    // A private message each way, acked.
    let msg_id = Ulid::new();
    alice.send(Command::PvMsg { to: b, msg_id, msg: Body::text("over TLS") }).await.expect("send");
    let ServerEvent::Msg(m) = next(&mut bob).await else { panic!("MSG") };
    assert_eq!((m.from, m.msg_id, m.msg), (a, msg_id, Body::text("over TLS")));
    bob.send(Command::AckMsg { from: a, msg_id }).await.expect("ack");
    assert!(matches!(next(&mut alice).await, ServerEvent::MsgAck(k) if k.msg_id == msg_id && k.by == b));
    let back = Ulid::new();
    bob.send(Command::PvMsg { to: a, msg_id: back, msg: Body::binary(vec![0, 1, 255]) }).await.expect("send");
    let ServerEvent::Msg(m) = next(&mut alice).await else { panic!("MSG") };
    assert_eq!((m.from, m.msg_id, m.msg), (b, back, Body::binary(vec![0, 1, 255])));

    // The plain listener does not speak TLS, nor the TLS one plain frames.
    let mut raw = ts.raw().await;
    raw.send(b"INFO\n0\n\n").await;
    assert_eq!(raw.frame().await.expect("SINFO").command.as_str(), "SINFO");
    let mut plain_on_tls = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain_on_tls.write_all(b"INFO\n0\n\n").await.expect("write");
    assert!(closed_within(&mut plain_on_tls, WAIT).await, "not a TLS hello: the handshake fails and the socket closes");

    // What `openssl s_client` does: an unsigned INFO before CNN gets SINFO.
    let mut stream = raw_tls(addr, &trusting(&ca)).await;
    stream.write_all(b"INFO\n0\n\n").await.expect("write");
    let mut buf = bytes::BytesMut::new();
    let mut codec = FrameCodec::new(1 << 16);
    let frame = loop {
        if let Some(f) = codec.decode(&mut buf).expect("a frame") {
            break f;
        }
        let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf)).await.expect("in time").expect("read");
        assert!(n > 0, "closed before SINFO");
    };
    assert_eq!(frame.command.as_str(), "SINFO");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let ca = Ca::new("sigil test CA");
    let (cert, key, _) = ca.server_cert(1);
    let files = Files::new(&ca, &cert, &key);
    // Two slots: failed handshakes must give theirs back.
    let ts = TestServer::start(&["alice"], |c| {
        tls_on(&files)(c);
        c.max_connections = 2;
    })
    .await;
    let addr = tls_addr(&ts);
    let alice = ts.user("alice");

    let other = trusting(&Ca::new("another CA"));
    let public = TlsClientOptions::public_roots().expect("public roots");
    for tls in [&other, &public, &other] {
        match connect_tls(addr, tls, &alice).await {
            Err(ClientError::Io(e)) => assert!(e.to_string().contains("certificate"), "{e}"),
            Err(e) => panic!("expected a certificate error, got {e}"),
            Ok(_) => panic!("a client that does not trust the CA connected"),
        }
    }
    // The wrong name fails too: the certificate is for localhost and 127.0.0.1.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("example.org").expect("name");
    let wrong = tokio_rustls::TlsConnector::from(trusting(&ca).config()).connect(name, tcp).await;
    assert!(wrong.is_err(), "a certificate for another name was accepted");

    // The slots are free again; by IP address as well as by name.
    let ip = ServerName::try_from("127.0.0.1").expect("ip");
    let client = Client::connect_tls(addr, ip, &trusting(&ca), &alice, ConnectOptions::default()).await;
    client.expect("the trusted client connects");
}

#[tokio::test]
async fn the_handshake_comes_after_admission_and_has_the_cnn_deadline() {
    let ca = Ca::new("sigil test CA");
    let (cert, key, _) = ca.server_cert(1);
    let files = Files::new(&ca, &cert, &key);
    let ts = TestServer::start(&["alice"], |c| {
        tls_on(&files)(c);
        c.max_connections = 1;
        c.cnn_timeout_ms = Some(400);
    })
    .await;
    let addr = tls_addr(&ts);
    let tls = trusting(&ca);

    // A client that says nothing holds the one slot...
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...so another is refused before any handshake (closed: no TLS to carry an ERR)...
    assert!(connect_tls(addr, &tls, &ts.user("alice")).await.is_err(), "over the limit");
    // ...until the CNN deadline ends the silent one's handshake.
    assert!(closed_within(&mut silent, WAIT).await, "the silent client is dropped");
    assert!(started.elapsed() >= Duration::from_millis(350), "not before the deadline: {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(50)).await;
    connect_tls(addr, &tls, &ts.user("alice")).await.expect("the slot is free again");
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_sessions() {
    let ca = Ca::new("sigil test CA");
    let (cert1, key1, der1) = ca.server_cert(1);
    let (cert2, key2, der2) = ca.server_cert(2);
    assert_ne!(der1, der2);
    let files = Files::new(&ca, &cert1, &key1);
    let ts = TestServer::start(&["alice", "bob", "carol"], tls_on(&files)).await;
    let addr = tls_addr(&ts);
    let tls = trusting(&ca);
    let server = ts.server.as_ref().expect("running");

    let mut alice = connect_tls(addr, &tls, &ts.user("alice")).await.expect("alice");
    assert_eq!(alice.peer_certificate(), Some(der1.as_slice()));

    // A broken PEM: an error naming the file, and the old certificate stays.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
        .expect("write");
    let e = server.reload_tls().expect_err("a broken certificate file");
    assert!(e.to_string().contains("server.pem"), "{e}");
    // A key that is not the certificate's: refused as well.
    files.write(&cert2, &key1);
    let e = server.reload_tls().expect_err("a key of another certificate");
    assert!(e.to_string().contains("server.pem") && e.to_string().contains("server.key"), "{e}");
    let mut bob = connect_tls(addr, &tls, &ts.user("bob")).await.expect("bob");
    assert_eq!(bob.peer_certificate(), Some(der1.as_slice()), "still the old certificate");

    // The new pair.
    files.write(&cert2, &key2);
    server.reload_tls().expect("reload");
    let mut carol = connect_tls(addr, &tls, &ts.user("carol")).await.expect("carol");
    assert_eq!(carol.peer_certificate(), Some(der2.as_slice()), "a new connection sees the new certificate");

    // The sessions opened before the reload go on.
    let (a, b) = (alice.credentials.id, bob.credentials.id);
    until(&mut alice, |ev| matches!(ev, ServerEvent::Ucnn(u) if u.id == carol.credentials.id).then_some(())).await;
    let msg_id = Ulid::new();
    alice.send(Command::PvMsg { to: b, msg_id, msg: Body::text("still here") }).await.expect("send");
    let m = until(&mut bob, |ev| if let ServerEvent::Msg(m) = ev { Some(m) } else { None }).await;
    assert_eq!((m.from, m.msg_id), (a, msg_id));
    bob.send(Command::AckMsg { from: a, msg_id }).await.expect("ack");
    until(&mut alice, |ev| matches!(ev, ServerEvent::MsgAck(k) if k.msg_id == msg_id).then_some(())).await;
    carol.send(Command::PvMsg { to: a, msg_id: Ulid::new(), msg: Body::text("hi") }).await.expect("send");
    until(&mut alice, |ev| matches!(ev, ServerEvent::Msg(m) if m.msg == Body::text("hi")).then_some(())).await;
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_with_their_name() {
    let ca = Ca::new("sigil test CA");
    let (cert, key, _) = ca.server_cert(1);
    let files = Files::new(&ca, &cert, &key);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sigil.db");
    let start = |cert: &Path, key: &Path| {
        let mut config = Config::new("127.0.0.1:0", &db);
        config.tls = Some(TlsConfig { listen: "127.0.0.1:0".into(), cert: cert.into(), key: key.into() });
        sigil_server::start(config)
    };
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not-pem.key");
    std::fs::write(&not_pem, "hello").expect("write");
    for (cert, key, named) in [
        (&missing, &files.key, "missing.pem"),
        (&files.cert, &missing, "missing.pem"),
        (&files.cert, &not_pem, "not-pem.key"),
        (&files.key, &files.key, "server.key"),
    ] {
        match start(cert, key).await {
            Err(e @ ServerError::Tls(_)) => assert!(e.to_string().contains(named), "{e}"),
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("started with {cert:?} and {key:?}"),
        }
    }
    let running = start(&files.cert, &files.key).await.expect("good files start");
    running.shutdown().await;
}

/// `sigil serve --tls-cert --tls-key` re-reads them on SIGHUP.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_certificate_of_sigil_serve() {
    use std::io::{BufRead, BufReader};
    let ca = Ca::new("sigil test CA");
    let (cert1, key1, der1) = ca.server_cert(1);
    let (cert2, key2, der2) = ca.server_cert(2);
    let files = Files::new(&ca, &cert1, &key1);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = sigil_server::store::Store::open(&dir.path().join("sigil.db")).expect("store");
    let a = store.add_account("alice", now()).expect("account");
    drop(store);
    let alice = Credentials { id: a.id, name: a.name, key: a.key };

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .current_dir(dir.path())
        .args(["serve", "127.0.0.1:0", "--web", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sigil serve");
    let pid = child.id().to_string();
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Shown with a failure: a server that exits says why here.
            eprintln!("sigil serve: {line}");
            let _ = lines_tx.send(line);
        }
    });
    let line = wait_for(&mut lines, "listening for TLS").await;
    let addr: SocketAddr = line
        .split("tls=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no TLS address in {line:?}"));
    let tls = trusting(&ca);
    let mut first = connect_tls(addr, &tls, &alice).await.expect("connect");
    assert_eq!(first.peer_certificate(), Some(der1.as_slice()));

    // A bad file: logged, the old certificate stays, the server goes on.
    std::fs::write(&files.key, "nonsense").expect("write");
    let kill = |pid: &str| std::process::Command::new("kill").args(["-HUP", pid]).status().expect("kill -HUP");
    assert!(kill(&pid).success());
    let line = wait_for(&mut lines, "TLS reload failed").await;
    assert!(line.contains("server.key"), "{line}");
    first.send(Command::Info).await.expect("send");
    assert!(matches!(next(&mut first).await, ServerEvent::Sinfo(_)), "the session goes on");

    files.write(&cert2, &key2);
    assert!(kill(&pid).success());
    wait_for(&mut lines, "TLS certificate reloaded").await;
    let second = connect_tls(addr, &tls, &alice).await.expect("connect after reload");
    assert_eq!(second.peer_certificate(), Some(der2.as_slice()));
    let _ = child.kill();
    let _ = child.wait();
}

/// The next log line that contains `needle`.
async fn wait_for(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    loop {
        let line = tokio::time::timeout(WAIT, lines.recv())
            .await
            .expect("log line in time")
            .expect("sigil serve exited: see its log above");
        if line.contains(needle) {
            return line;
        }
    }
}

/// With TLS on, the web listener speaks HTTPS with the same certificate.
#[tokio::test]
async fn the_web_listener_is_https_with_the_same_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("sigil test CA");
    let (cert, key, der) = ca.server_cert(1);
    let files = Files::new(&ca, &cert, &key);
    let ts = TestServer::start(&["alice"], |c| {
        tls_on(&files)(c);
        c.web = Some("127.0.0.1:0".into());
    })
    .await;
    let web = ts.server.as_ref().and_then(|s| s.web_addr()).expect("a web listener");
    let mut https = raw_tls(web, &trusting(&ca)).await;
    assert_eq!(https.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()), Some(der));
    https.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, https.read_to_end(&mut answer)).await.expect("in time").ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
    // Plain HTTP gets no answer from it.
    let mut plain = tokio::net::TcpStream::connect(web).await.expect("connect");
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("send");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut got)).await;
    assert!(!String::from_utf8_lossy(&got).contains("200"), "plain HTTP was answered");
}
