//! The log of `sigil serve` under a connect flood (SECURITY.md §2, "Log
//! floods"): lines about events anyone can repeat are written at most
//! `--log-repeats` times per kind per 10 s, and one line per window sums up
//! the rest, so the log stays small however many connections come.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lines per kind per window the server is started with.
const REPEATS: u64 = 5;
/// Connections refused by the per-address limit.
const REFUSED: usize = 600;
/// Connections admitted and closed at once, one after another (50 from each of 8 addresses).
const ADMITTED: usize = 400;
/// Connections held open from the refused address (its limit).
const HELD: usize = 4;

async fn connect_from(ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::V4(ip), 0)).expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Closes our side and reads until the server closes; returns what it sent.
async fn close_and_drain(mut stream: TcpStream) -> Vec<u8> {
    let _ = stream.shutdown().await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(support::WAIT, stream.read_to_end(&mut got)).await;
    got
}

/// Per kind of event (a summary's `event`, or a line's message): lines
/// written and the events the summaries say were left out.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    lines: u64,
    summaries: u64,
    left_out: u64,
}

fn tally(log: &[serde_json::Value]) -> BTreeMap<String, Tally> {
    let mut by_kind: BTreeMap<String, Tally> = BTreeMap::new();
    for event in log {
        let fields = &event["fields"];
        if let (Some(kind), Some(n)) = (fields["event"].as_str(), fields["suppressed"].as_u64()) {
            let t = by_kind.entry(kind.to_owned()).or_default();
            t.summaries += 1;
            t.left_out += n;
            continue;
        }
        let Some(message) = fields["message"].as_str() else { continue };
        // A session that never sent CNN ends as "disconnected" with no account.
        let kind = match message {
            "disconnected" if fields["account"].as_str().is_some_and(str::is_empty) => "disconnected before CNN",
            other => other,
        };
        by_kind.entry(kind.to_owned()).or_default().lines += 1;
    }
    by_kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_flood_writes_a_bounded_log_that_sums_up_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repeats = REPEATS.to_string();
    let (server, lines) = ServerProcess::start_logged(
        dir.path(),
        &["--log-format", "json", "--log-repeats", &repeats, "--max-connections-per-ip", "4", "--cnn-timeout-s", "120"],
    );
    let addr: SocketAddr = server.addr.parse().expect("an address");
    let log: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in lines {
                let event = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line}"));
                log.lock().expect("log").push(event);
            }
        });
    }
    let started = Instant::now();

    // Four connections from 127.0.0.1 take its slots: every further one is refused.
    let mut held = Vec::new();
    for _ in 0..HELD {
        held.push(connect_from(Ipv4Addr::LOCALHOST, addr).await);
    }
    let refusals = (0..REFUSED / 50).map(|_| {
        tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..50 {
                let got = close_and_drain(connect_from(Ipv4Addr::LOCALHOST, addr).await).await;
                refused += usize::from(got.windows(12).any(|w| w == b"rate_limited"));
            }
            refused
        })
    });
    let refusals: Vec<_> = refusals.collect();
    // Meanwhile, connections from other addresses come and go, one at a
    // time (spread over 8 addresses: each stays under the per-address rate
    // of new connections).
    for n in 0..ADMITTED {
        let ip = Ipv4Addr::new(127, 0, 0, 2 + (n % 8) as u8);
        close_and_drain(connect_from(ip, addr).await).await;
    }
    let mut refused_seen = 0;
    for r in refusals {
        refused_seen += r.await.expect("refusals");
    }
    // The refusals' ERR is best effort; most must have arrived.
    assert!(refused_seen > REFUSED / 2, "only {refused_seen} of {REFUSED} refusals seen");

    // Every event is accounted for, in a line or a summary, once the windows
    // are over (the server sums them up within a second of their end).
    let accounted = |t: &BTreeMap<String, Tally>, kind: &str| t.get(kind).map_or(0, |t| t.lines + t.left_out);
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let counts = tally(&log.lock().expect("log"));
        let connections = accounted(&counts, "connected") + accounted(&counts, "connection refused");
        let done = connections == (HELD + REFUSED + ADMITTED) as u64
            && accounted(&counts, "disconnected before CNN") == ADMITTED as u64;
        if done || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    println!("{elapsed:?}: {counts:#?}");
    for kind in ["connected", "connection refused", "disconnected before CNN"] {
        let t = counts.get(kind).copied().unwrap_or_default();
        // Each window (one per 10 s at most) writes at most REPEATS lines of a kind.
        let windows = elapsed.as_secs() / 10 + 1;
        assert!(t.lines <= REPEATS * windows, "{kind}: {} lines in {elapsed:?}", t.lines);
        assert!(t.summaries >= 1 && t.left_out > 0, "{kind}: no summary line: {t:?}");
    }
    let connections = accounted(&counts, "connected") + accounted(&counts, "connection refused");
    assert_eq!(connections, (HELD + REFUSED + ADMITTED) as u64, "connections accounted for in the log");
    assert!(accounted(&counts, "connection refused") >= REFUSED as u64);
    assert_eq!(accounted(&counts, "disconnected before CNN"), ADMITTED as u64);
    // The whole log stayed small: thousands of events, a few dozen lines.
    let total = log.lock().expect("log").len() as u64;
    assert!(total < 20 * REPEATS * (elapsed.as_secs() / 10 + 1), "{total} log lines");
    let summary = log
        .lock()
        .expect("log")
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str().map(str::to_owned))
        .find(|m| m.starts_with("connection refused: … and "))
        .expect("a summary line");
    assert!(summary.ends_with(" more in 10 s"), "{summary}");
    drop(held);
}
