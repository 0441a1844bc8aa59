//! The web listener: `/metrics` counts what happened (scraped before and
//! after real traffic, the exposition parsed, deltas checked) and passes
//! `promtool check metrics`; `/healthz` answers 503 while the store cannot
//! take writes and 200 again once it can.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use sigil_proto::{Body, Command, ErrorCode, ServerEvent};
use support::{TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ulid::Ulid;

/// A `GET` on the web listener: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the web listener");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut response)).await.expect("answer in time").expect("read");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    // Small bodies come whole or chunked; undo the chunking.
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.into() };
    (status, body)
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// One sample: metric name and sorted labels.
type Key = (String, BTreeMap<String, String>);

/// Parses the text exposition format: every sample line into (name, labels) → value.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        samples.insert((name, labels), value);
    }
    samples
}

fn value(samples: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (name.to_owned(), labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
    samples.get(&key).copied().unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

async fn scrape(addr: std::net::SocketAddr) -> (String, BTreeMap<Key, f64>) {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let samples = parse(&body);
    (body, samples)
}

/// Scrapes until `ok` holds (gauges set each second by the hub), or fails.
async fn scrape_until(addr: std::net::SocketAddr, ok: impl Fn(&BTreeMap<Key, f64>) -> bool) -> BTreeMap<Key, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, samples) = scrape(addr).await;
        if ok(&samples) {
            return samples;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics never settled: {samples:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_happened() {
    let ts = TestServer::start(&["alice", "bob", "carol"], |c| c.web = Some("127.0.0.1:0".into())).await;
    let web = ts.server.as_ref().and_then(|s| s.web_addr()).expect("a web listener");
    let (_, before) = scrape(web).await;

    let (mut peers, ch) = support::led_channel(&ts, &["alice", "bob", "carol"], "metered").await;
    let msgs = [Ulid::new(), Ulid::new()];
    for m in msgs {
        peers[2].commands.send(Command::ChMsg { id: ch, msg_id: m, msg: Body::text("counted") }).await.expect("send");
        for p in &mut peers {
            p.committed(m).await;
        }
    }
    // One refused authentication, with a key that is not the account's.
    let mut raw = ts.raw().await;
    let mut stranger = ts.user("alice");
    stranger.key = sigil_proto::wire::SecretKey::generate();
    raw.send_request(&stranger, Command::Cnn { id: stranger.id, batch: false, bind: false }, 1, support::now()).await;
    raw.expect_fatal(ErrorCode::AuthFailed).await;

    let after = scrape_until(web, |s| {
        value(s, "sigil_connections", &[("transport", "tcp")]) == 3.0
            && value(s, "sigil_channels", &[("leader", "yes")]) == 1.0
    })
    .await;
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(delta("sigil_commits_total", &[]), 2.0, "two messages committed");
    assert_eq!(delta("sigil_frames_received_total", &[("command", "CH_MSG")]), 2.0);
    // Each message went to the three online members, its sender included.
    assert_eq!(delta("sigil_deliveries_total", &[]), 6.0);
    assert_eq!(delta("sigil_frames_sent_total", &[("command", "CH_MSG")]), 6.0);
    assert!(delta("sigil_frames_sent_total", &[("command", "CH_MSG_COMMIT")]) >= 2.0);
    assert_eq!(delta("sigil_auth_failures_total", &[]), 1.0);
    assert_eq!(delta("sigil_errors_sent_total", &[("code", "auth_failed")]), 1.0);
    assert_eq!(value(&after, "sigil_sessions", &[("transport", "tcp")]), 3.0);
    assert_eq!(value(&after, "sigil_channels", &[("leader", "no")]), 0.0);
    assert!(value(&after, "sigil_store_batch_writes_count", &[]) >= 1.0, "the store wrote batches");
    assert!(value(&after, "sigil_store_batch_seconds_count", &[]) >= 1.0);
    for p in peers {
        p.task.abort();
    }
    // Sessions end: the gauges come back down.
    scrape_until(web, |s| {
        value(s, "sigil_sessions", &[("transport", "tcp")]) == 0.0
            && value(s, "sigil_connections", &[("transport", "tcp")]) == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool() {
    let ts = TestServer::start(&["alice"], |c| c.web = Some("127.0.0.1:0".into())).await;
    let web = ts.server.as_ref().and_then(|s| s.web_addr()).expect("a web listener");
    let mut alice = ts.connect("alice").await;
    alice.send(Command::LstUsr { all: false }).await.expect("send");
    support::until(&mut alice, |ev| matches!(ev, ServerEvent::UsrLst(_)).then_some(())).await;
    let (text, _) = scrape(web).await;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("SIGIL_REQUIRE_TOOLS").is_none(),
            "promtool is required (SIGIL_REQUIRE_TOOLS is set) but not installed"
        );
        eprintln!("skipped: promtool is not installed (Debian: apt-get install prometheus; scripts/test.sh does)");
        return;
    };
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n---\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_store_takes_no_writes() {
    let ts = TestServer::start(&["alice"], |c| c.web = Some("127.0.0.1:0".into())).await;
    let web = ts.server.as_ref().and_then(|s| s.web_addr()).expect("a web listener");
    assert_eq!(get(web, "/healthz").await, (200, "ok\n".to_owned()));
    // Another process holds the database's write lock (an operator's sqlite3, say).
    let db = ts.db();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        locked_tx.send(()).expect("tell");
        let _ = release_rx.recv_timeout(Duration::from_secs(20));
        conn.execute_batch("ROLLBACK").expect("unlock");
    });
    locked_rx.recv_timeout(Duration::from_secs(5)).expect("locked");
    let (status, body) = get(web, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store not writable") && body.contains("locked"), "{body}");
    release_tx.send(()).expect("release");
    holder.join().expect("holder");
    assert_eq!(get(web, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(web, "/nope").await.0, 404);
}
