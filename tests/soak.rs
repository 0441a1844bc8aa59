//! Soak: many clients at once, a share of them hostile, against a real
//! `sigil serve` process. Bounded in time; CI runs the short form, and
//! `SIGIL_SOAK_SECS=120 cargo test --test soak -- --nocapture` a longer one.
//!
//! Good clients (reference agents, on 127.0.0.1) chat in one channel while
//! hostile ones (on other loopback addresses, so the per-address limit keeps
//! them apart) send garbage, flood, join and never read, reconnect in a loop,
//! replay captured frames and trickle headers. Checked: the good clients see
//! every commit and every message they sent is committed; the server answers
//! a probe every 100 ms throughout; its peak RSS stays bounded (printed).

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sigil_client::Credentials;
use sigil_proto::{Body, Command, ServerEvent};
use sigil_server::store::Store;
use support::{signed, Peer, Raw, ServerProcess};
use tokio::io::AsyncWriteExt;
use ulid::Ulid;

const GOOD: usize = 16;
const HOSTILE: usize = 12;
/// Peak RSS the server may reach in the short form.
const MAX_RSS_KB: u64 = 256 * 1024;

/// A TCP connection from a given loopback address.
async fn connect_from(ip: Ipv4Addr, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(ip), 0)).ok()?;
    socket.connect(to).await.ok()
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One hostile client's behaviour, repeated until `until`.
async fn hostile(kind: usize, ip: Ipv4Addr, addr: SocketAddr, cred: Credentials, channel: Ulid, until: Instant) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(kind as u64);
    let mut captured: Option<Vec<u8>> = None;
    // Built once: the flood should cost the server, not this test.
    let flood: Vec<u8> = (0..100).flat_map(|n| signed(&cred, Command::Info, n, support::now())).collect();
    while Instant::now() < until {
        let Some(stream) = connect_from(ip, addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut raw = Raw::from_stream(stream);
        let now = support::now();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            match kind % 6 {
                // Garbage.
                0 => {
                    let junk: Vec<u8> = (0..rng.gen_range(1..4096)).map(|_| rng.gen()).collect();
                    let _ = raw.stream.write_all(&junk).await;
                    while raw.frame_or_garbage().await {}
                }
                // A flood of signed frames.
                1 => {
                    let cnn = signed(&cred, Command::Cnn { id: cred.id, batch: false, bind: false }, rng.gen(), now);
                    let _ = raw.stream.write_all(&cnn).await;
                    for _ in 0..50 {
                        if raw.stream.write_all(&flood).await.is_err() {
                            break;
                        }
                    }
                }
                // A member that never reads.
                2 => {
                    let mut bytes =
                        signed(&cred, Command::Cnn { id: cred.id, batch: false, bind: false }, rng.gen(), now);
                    bytes.extend(signed(&cred, Command::ChJoin { id: channel }, rng.gen(), now));
                    let _ = raw.stream.write_all(&bytes).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                // Reconnecting in a loop.
                3 => {
                    let mut bytes =
                        signed(&cred, Command::Cnn { id: cred.id, batch: false, bind: false }, rng.gen(), now);
                    bytes.extend(signed(&cred, Command::Dcnn, rng.gen(), now));
                    let _ = raw.stream.write_all(&bytes).await;
                    while raw.frame_or_garbage().await {}
                }
                // Replaying a captured CNN.
                4 => {
                    let bytes = captured
                        .get_or_insert_with(|| {
                            signed(&cred, Command::Cnn { id: cred.id, batch: false, bind: false }, rng.gen(), now)
                        })
                        .clone();
                    let _ = raw.stream.write_all(&bytes).await;
                    while raw.frame_or_garbage().await {}
                }
                // Slowloris.
                _ => {
                    for b in b"CH_MSG\n6553" {
                        if raw.stream.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_some_hostile() {
    let secs: u64 = std::env::var("SIGIL_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let creds: Vec<Credentials> = {
        let mut store = Store::open(&dir.path().join("sigil.db")).unwrap();
        (0..GOOD + HOSTILE)
            .map(|i| {
                let a = store.add_account(&format!("u{i}"), support::now()).unwrap();
                Credentials { id: a.id, name: a.name, key: a.key }
            })
            .collect()
    };
    let server = ServerProcess::start(dir.path(), &["--frame-timeout-s", "1", "--max-connections-per-ip", "16"]);
    let addr: SocketAddr = server.addr.parse().unwrap();

    // The good clients: one creates the channel, the others join; the agents elect.
    let mut good = Vec::new();
    for (i, c) in creds[..GOOD].iter().enumerate() {
        good.push(Peer::start(addr, c.clone(), i as u64).await);
    }
    good[0].commands.send(Command::ChNew { name: "soak".into() }).await.unwrap();
    let ch = good[0].until(|ev| if let ServerEvent::ChUjoin(u) = ev { Some(u.channel) } else { None }).await;
    for p in &good[1..] {
        p.commands.send(Command::ChJoin { id: ch }).await.unwrap();
    }
    for p in &mut good {
        p.leader(ch).await;
    }

    // From here on, each good client's commits are collected as they come
    // (the hostile churn sends many CH_STATUS; nothing may be left to pile up).
    let seen: Vec<Arc<std::sync::Mutex<BTreeSet<Ulid>>>> = (0..GOOD).map(|_| Arc::default()).collect();
    for (p, s) in good.iter_mut().zip(&seen) {
        let mut events = std::mem::replace(&mut p.events, tokio::sync::mpsc::channel(1).1);
        let s = s.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                // Peers take batched commits (§7.9): every id counts.
                if let ServerEvent::ChMsgCommit(c) = ev {
                    s.lock().unwrap().extend(std::iter::once(c.id).chain(c.ids));
                }
            }
        });
    }
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    let hostiles: usize = std::env::var("SIGIL_SOAK_HOSTILE").ok().and_then(|s| s.parse().ok()).unwrap_or(HOSTILE);
    for (i, c) in creds[GOOD..GOOD + hostiles.min(HOSTILE)].iter().enumerate() {
        let ip = Ipv4Addr::new(127, 0, 1, 1 + i as u8);
        tasks.push(tokio::spawn(hostile(i, ip, addr, c.clone(), ch, until)));
    }
    // The probe: a fresh connection every 100 ms must get SINFO.
    let probes_failed = Arc::new(AtomicUsize::new(0));
    let probes = {
        let failed = probes_failed.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let ok = tokio::time::timeout(Duration::from_secs(2), async {
                    let stream = connect_from(Ipv4Addr::new(127, 0, 2, 1), addr).await?;
                    let mut raw = Raw::from_stream(stream);
                    raw.send(b"INFO\n0\n\n").await;
                    raw.frame().await.filter(|f| f.command.as_str() == "SINFO")
                })
                .await;
                if !matches!(ok, Ok(Some(_))) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        })
    };
    // The good clients talk: each sends a message every ~half second.
    let mut sent = BTreeSet::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    while Instant::now() < until {
        let who = rng.gen_range(0..GOOD);
        let id = Ulid::new();
        sent.insert(id);
        let _ = good[who].commands.send(Command::ChMsg { id: ch, msg_id: id, msg: Body::text("soak") }).await;
        tokio::time::sleep(Duration::from_millis(500 / GOOD as u64)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let probe_count = probes.await.unwrap();
    // Wait until every message sent is committed and seen by all (bounded:
    // a loss fails below).
    let settle = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle && !seen.iter().all(|s| s.lock().unwrap().is_superset(&sent)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen: Vec<BTreeSet<Ulid>> = seen.iter().map(|s| s.lock().unwrap().clone()).collect();
    let all: BTreeSet<Ulid> = seen.iter().flatten().copied().collect();
    let rss = peak_rss_kb(server.child.id());
    println!(
        "soak {secs}s: {} messages sent, {} committed, {probe_count} probes ({} failed), server peak RSS {} MiB",
        sent.len(),
        all.len(),
        probes_failed.load(Ordering::Relaxed),
        rss / 1024
    );
    assert_eq!(probes_failed.load(Ordering::Relaxed), 0, "the server stopped answering");
    let lost: Vec<_> = sent.difference(&all).collect();
    assert!(lost.is_empty(), "{} good messages never committed", lost.len());
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s, &all, "good client {i} missed commits");
    }
    assert!(rss > 0 && rss < MAX_RSS_KB, "peak RSS {rss} KiB");
}
