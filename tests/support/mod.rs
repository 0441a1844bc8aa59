//! Test harness: a real server on 127.0.0.1:0 with a temp SQLite database,
//! library clients, and a raw socket for hostile input.
#![allow(dead_code)]

pub mod lines;
pub mod tmux;

use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use sigil_client::agent::Agent;
use sigil_client::{Client, ConnectOptions, Credentials};
use sigil_proto::event::ErrPayload;
use sigil_proto::wire::{encode_frame, Frame, FrameCodec, OutFrame};
use sigil_proto::{Command, Envelope, ErrorCode, Request, ServerEvent};
use sigil_server::store::Store;
use sigil_server::{self as server, Config, RunningServer};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use ulid::Ulid;

/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub addr: std::net::SocketAddr,
    pub users: Vec<Credentials>,
}

pub fn now() -> u64 {
    server::now_unix()
}

impl TestServer {
    /// A server with accounts `names`, configured by `tweak`.
    pub async fn start(names: &[&str], tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("sigil.db");
        let mut store = Store::open(&db).expect("open store");
        let users = names
            .iter()
            .map(|n| {
                let a = store.add_account(n, now()).expect("add account");
                Credentials { id: a.id, name: a.name, key: a.key }
            })
            .collect();
        drop(store);
        let mut config = Config::new("127.0.0.1:0", db);
        tweak(&mut config);
        let server = server::start(config).await.expect("server starts");
        let addr = server.local_addr();
        TestServer { dir, server: Some(server), addr, users }
    }

    pub fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("sigil.db")
    }

    pub fn user(&self, name: &str) -> Credentials {
        self.users.iter().find(|u| u.name == name).expect("known user").clone()
    }

    pub async fn connect(&self, name: &str) -> Client {
        tokio::time::timeout(WAIT, Client::connect(self.addr, &self.user(name)))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr).await
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Stops and starts again on the same database (and a new port).
    pub async fn restart(&mut self, tweak: impl FnOnce(&mut Config)) {
        self.stop().await;
        let mut config = Config::new("127.0.0.1:0", self.db());
        tweak(&mut config);
        let server = server::start(config).await.expect("server restarts");
        self.addr = server.local_addr();
        self.server = Some(server);
    }
}

/// The next event, or a test failure after [`WAIT`].
pub async fn next(client: &mut Client) -> ServerEvent {
    tokio::time::timeout(WAIT, client.recv())
        .await
        .expect("an event in time")
        .expect("a valid event")
        .expect("connection open")
}

/// Skips events until one matches; fails after [`WAIT`].
pub async fn until<T>(client: &mut Client, mut pick: impl FnMut(ServerEvent) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(deadline, client.recv())
            .await
            .expect("the awaited event in time")
            .expect("a valid event")
            .expect("connection open");
        if let Some(t) = pick(ev) {
            return t;
        }
    }
}

/// The next event must be an ERR; returns it.
pub async fn next_err(client: &mut Client) -> ErrPayload {
    match next(client).await {
        ServerEvent::Err(e) => e,
        other => panic!("expected ERR, got {other:?}"),
    }
}

/// Asserts that nothing arrives for `ms` milliseconds.
pub async fn quiet(client: &mut Client, ms: u64) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(ms), client.recv()).await {
        panic!("expected silence, got {ev:?}");
    }
}

/// Asserts the server closes the connection (after any frames) within [`WAIT`].
pub async fn closed(client: &mut Client) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.recv()).await.expect("close in time") {
            Ok(None) | Err(_) => return,
            Ok(Some(_)) => {}
        }
    }
}

pub fn code(e: &ErrPayload) -> ErrorCode {
    e.code().unwrap_or_else(|| panic!("unknown code {}", e.code))
}

/// A raw TCP connection that sends bytes and reads frames.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).await.expect("tcp connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw { stream, buf: BytesMut::new(), codec: FrameCodec::new(1 << 20) }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a signed request built from parts (lets tests pick nonce and timestamp).
    pub async fn send_request(&mut self, cred: &Credentials, command: Command, nonce: u64, timestamp: u64) -> Vec<u8> {
        let bytes = signed(cred, command, nonce, timestamp);
        self.send(&bytes).await;
        bytes
    }

    /// The next frame; `None` on close.
    pub async fn frame(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("server sent a bad frame: {e}"),
            }
            let mut chunk = [0u8; 4096];
            // A reset connection counts as closed.
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("frame in time")
                .unwrap_or_default();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one frame, tolerating whatever the server does (hostile clients):
    /// false once the connection is closed or the stream is not frames.
    pub async fn frame_or_garbage(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(_)) => return true,
                Ok(None) => {}
                Err(_) => return false,
            }
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return false,
            }
        }
    }

    /// The next frame must be an ERR with `code`, and then the connection must close.
    pub async fn expect_fatal(&mut self, code: ErrorCode) -> (Frame, ErrPayload) {
        let (frame, e) = self.expect_err().await;
        assert_eq!(e.code, code.as_str(), "reason: {}", e.reason);
        assert!(self.frame().await.is_none(), "connection must close after a fatal error");
        (frame, e)
    }

    /// The next frame must be an ERR.
    pub async fn expect_err(&mut self) -> (Frame, ErrPayload) {
        let frame = self.frame().await.expect("an ERR frame before close");
        assert_eq!(frame.command.as_str(), "ERR", "got {frame:?}");
        let e: ErrPayload = rmp_serde::from_slice(&frame.payload).expect("ERR payload");
        (frame, e)
    }

    /// Authenticates with a fresh nonce; returns the UCNN frame.
    pub async fn authenticate(&mut self, cred: &Credentials) -> Frame {
        self.send_request(cred, Command::Cnn { id: cred.id, batch: false, bind: false }, rand::random(), now()).await;
        let f = self.frame().await.expect("UCNN");
        assert_eq!(f.command.as_str(), "UCNN", "{f:?}");
        f
    }
}

/// One signed frame.
pub fn signed(cred: &Credentials, command: Command, nonce: u64, timestamp: u64) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let request = Request { envelope: Envelope { nonce, timestamp }, command };
    sigil_client::write_request(Some(&cred.key.mac()), &request, &mut buf);
    buf.to_vec()
}

/// A temp directory whose `sigil.db` holds accounts `names`, made with
/// `sigil account add` (so each has its NAME.cred there), for tests that run
/// the binary in that directory.
pub fn account_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in names {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .current_dir(dir.path())
            .args(["account", "add", name])
            .output()
            .expect("run sigil account add");
        assert!(out.status.success(), "account add {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    dir
}

/// One frame with an arbitrary payload, signed with `cred`.
pub fn signed_raw(cred: &Credentials, command: &str, payload: &[u8]) -> Vec<u8> {
    let tag = cred.key.mac().sign(command.as_bytes(), payload);
    let mut buf = BytesMut::new();
    encode_frame(&OutFrame { command, signature: Some(&tag), payload }, &mut buf);
    buf.to_vec()
}

/// A `sigil serve` process on 127.0.0.1:0, killed when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: String,
}

impl ServerProcess {
    /// Starts `sigil serve 127.0.0.1:0 --web 127.0.0.1:0 ARGS` in `dir` and
    /// waits for its frame listener's address.
    pub fn start(dir: &std::path::Path, args: &[&str]) -> ServerProcess {
        let (server, lines) = Self::start_logged(dir, args);
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        server
    }

    /// The same, handing back the rest of its log, line by line.
    pub fn start_logged(dir: &std::path::Path, args: &[&str]) -> (ServerProcess, std::sync::mpsc::Receiver<String>) {
        Self::start_on(dir, "127.0.0.1:0", args)
    }

    /// Starts on `addr`: a restart on the port a first start got from port 0.
    pub fn start_on(
        dir: &std::path::Path,
        addr: &str,
        args: &[&str],
    ) -> (ServerProcess, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .current_dir(dir)
            .args(["serve", addr, "--web", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start server");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines.next().expect("server log line").expect("log line");
            // Text (`addr=HOST:PORT`) or JSON (`"addr":"HOST:PORT"`) logs.
            let found = line.split("addr=").nth(1).or_else(|| line.split("\"addr\":\"").nth(1));
            if let Some(rest) = found.filter(|_| line.contains("listening")) {
                break rest.split(|c: char| c.is_whitespace() || c == '"').next().expect("address").to_owned();
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (ServerProcess { child, addr }, rx)
    }

    /// The next line of `log` that contains `needle` (within a few seconds).
    pub fn wait_for(log: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?}"),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client run by the reference behaviour (`Agent`); the test may type commands.
pub struct Peer {
    pub name: String,
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<ServerEvent>,
    pub task: JoinHandle<()>,
}

impl Peer {
    /// Connects and runs the agent until the connection or the test ends.
    pub async fn start(addr: impl tokio::net::ToSocketAddrs, cred: Credentials, seed: u64) -> Peer {
        // The reference client asks for batches and batches its own acks and commits (§7.9).
        let options = ConnectOptions { batch: true, ..ConnectOptions::default() };
        let client = Client::connect_with(addr, &cred, options).await.expect("connect");
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(64);
        let (ev_tx, ev_rx) = mpsc::channel::<ServerEvent>(4096);
        let name = cred.name.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut agent = Agent::new(cred.id, seed);
            let (mut reader, mut writer) = client.split();
            if writer.send(Command::Info).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                let send = tokio::select! {
                    ev = reader.recv() => match ev {
                        Ok(Some(ev)) => {
                            let mut out = agent.on_event(&ev, start.elapsed().as_millis() as u64);
                            let _ = ev_tx.try_send(ev);
                            // What is already buffered is answered in the same batch.
                            for _ in 0..256 {
                                let Some(Ok(Some(ev))) = reader.recv().now_or_never() else { break };
                                out.extend(agent.on_event(&ev, start.elapsed().as_millis() as u64));
                                let _ = ev_tx.try_send(ev);
                            }
                            agent.coalesce(out)
                        }
                        other => {
                            if std::env::var("SIGIL_TEST_TRACE").is_ok() {
                                eprintln!("peer {} stops: {other:?}", cred.name);
                            }
                            return;
                        }
                    },
                    cmd = cmd_rx.recv() => match cmd {
                        Some(c) => vec![c],
                        None => return,
                    },
                    _ = tick.tick() => agent.tick(start.elapsed().as_millis() as u64),
                };
                for c in send {
                    if writer.send(c).await.is_err() {
                        return;
                    }
                }
            }
        });
        Peer { name, commands: cmd_tx, events: ev_rx, task }
    }

    pub async fn until<T>(&mut self, mut pick: impl FnMut(&ServerEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{} waited in vain", self.name))
                .expect("peer running");
            if let Some(t) = pick(&ev) {
                return t;
            }
        }
    }

    pub async fn leader(&mut self, channel: Ulid) -> Ulid {
        self.until(|ev| match ev {
            ServerEvent::ChStatus(s) if s.id == channel && s.status == "healthy" => s.leader,
            _ => None,
        })
        .await
    }

    pub async fn committed(&mut self, msg_id: Ulid) {
        self.until(|ev| matches!(ev, ServerEvent::ChMsgCommit(c) if c.id == msg_id).then_some(())).await
    }
}

/// Reference clients for `names` (seeds 1, 2, ...) in a new channel `channel`
/// that the first creates and the others join, once each has seen a leader.
pub async fn led_channel(ts: &TestServer, names: &[&str], channel: &str) -> (Vec<Peer>, Ulid) {
    let creds = names.iter().map(|n| ts.user(n)).collect();
    led_channel_at(ts.addr.to_string(), creds, channel).await
}

/// The same against any server at `addr`, for the accounts `creds`.
pub async fn led_channel_at(addr: String, creds: Vec<Credentials>, channel: &str) -> (Vec<Peer>, Ulid) {
    let mut peers = Vec::new();
    for (i, cred) in creds.into_iter().enumerate() {
        peers.push(Peer::start(addr.clone(), cred, i as u64 + 1).await);
    }
    peers[0].commands.send(Command::ChNew { name: channel.into() }).await.expect("send");
    let ch = peers[0].until(|ev| if let ServerEvent::ChUjoin(u) = ev { Some(u.channel) } else { None }).await;
    for p in &peers[1..] {
        p.commands.send(Command::ChJoin { id: ch }).await.expect("send");
    }
    for p in &mut peers {
        p.leader(ch).await;
    }
    (peers, ch)
}
