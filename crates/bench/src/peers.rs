//! Adapters for the peers sigil is measured against, over their own text
//! protocols: nats-server (`SUB`/`PUB`), redis-server (`SUBSCRIBE`/`PUBLISH`)
//! and an IRC server such as ngircd (`JOIN`/`PRIVMSG`). Each adapter only
//! frames, subscribes and parses; the scenarios are shared.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::stats::{gather, settle, write_message, Clock, Errors, Progress, Recorder};
use super::{BenchError, FanoutParams, LoadShape, Measured};

/// The subject, channel or IRC channel every scenario uses.
const TOPIC: &str = "bench";
/// Connections opened at once.
const CONNECT_CONCURRENCY: usize = 64;
/// How long a handshake may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);

/// A peer's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// NATS text protocol.
    Nats,
    /// Redis RESP.
    Redis,
    /// IRC (RFC 2812).
    Irc,
}

impl Protocol {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Nats => "nats-server",
            Protocol::Redis => "redis-server",
            Protocol::Irc => "ngircd",
        }
    }
}

/// What one parsed unit of input is.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A published message; the range of its payload in the buffer.
    Message(std::ops::Range<usize>),
    /// The server pings: answer with these bytes.
    Ping(Vec<u8>),
    /// A handshake step completed (PONG, subscribe confirmation, welcome, end of NAMES).
    Ready,
    /// The server refused something.
    Error(String),
    /// Anything else (replies to PUBLISH, notices, INFO).
    Other,
}

fn line(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..].windows(2).position(|w| w == b"\r\n").map(|p| from + p)
}

/// Parses one unit at the start of `buf`: `(bytes consumed, event)`, or
/// `None` when it is not complete yet.
fn parse(protocol: Protocol, buf: &[u8]) -> Option<(usize, Event)> {
    match protocol {
        Protocol::Nats => {
            let end = line(buf, 0)?;
            let head = &buf[..end];
            if let Some(rest) = head.strip_prefix(b"MSG ") {
                let len: usize = std::str::from_utf8(rest).ok()?.rsplit(' ').next()?.parse().ok()?;
                let start = end + 2;
                if buf.len() < start + len + 2 {
                    return None;
                }
                return Some((start + len + 2, Event::Message(start..start + len)));
            }
            let event = match head {
                b"PING" => Event::Ping(b"PONG\r\n".to_vec()),
                b"PONG" => Event::Ready,
                h if h.starts_with(b"-ERR") => Event::Error(String::from_utf8_lossy(h).into_owned()),
                _ => Event::Other,
            };
            Some((end + 2, event))
        }
        Protocol::Redis => {
            // RESP: an array of bulk strings / integers, or a single simple value.
            let end = line(buf, 0)?;
            match buf.first()? {
                b'*' => {
                    let n: usize = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
                    let mut at = end + 2;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        let e = line(buf, at)?;
                        match buf.get(at)? {
                            b'$' => {
                                let len: usize = std::str::from_utf8(&buf[at + 1..e]).ok()?.parse().ok()?;
                                let start = e + 2;
                                if buf.len() < start + len + 2 {
                                    return None;
                                }
                                items.push(start..start + len);
                                at = start + len + 2;
                            }
                            _ => {
                                items.push(at + 1..e);
                                at = e + 2;
                            }
                        }
                    }
                    let kind = items.first().map(|r| &buf[r.clone()]);
                    let event = match kind {
                        Some(b"message") if items.len() == 3 => Event::Message(items[2].clone()),
                        Some(b"subscribe") => Event::Ready,
                        _ => Event::Other,
                    };
                    Some((at, event))
                }
                b'+' if &buf[1..end] == b"PONG" => Some((end + 2, Event::Ready)),
                b'-' => Some((end + 2, Event::Error(String::from_utf8_lossy(&buf[..end]).into_owned()))),
                _ => Some((end + 2, Event::Other)),
            }
        }
        Protocol::Irc => {
            let end = line(buf, 0)?;
            let text = &buf[..end];
            if let Some(token) = text.strip_prefix(b"PING ") {
                let mut pong = b"PONG ".to_vec();
                pong.extend_from_slice(token);
                pong.extend_from_slice(b"\r\n");
                return Some((end + 2, Event::Ping(pong)));
            }
            // ":prefix COMMAND params :trailing"
            let mut words = text.splitn(3, |&b| b == b' ');
            let _prefix = words.next();
            let command = words.next().unwrap_or_default();
            let event = match command {
                b"PRIVMSG" => {
                    let rest = words.next().unwrap_or_default();
                    match rest.windows(2).position(|w| w == b" :") {
                        Some(p) => {
                            let start = end - (rest.len() - p - 2);
                            Event::Message(start..end)
                        }
                        None => Event::Other,
                    }
                }
                b"001" | b"366" => Event::Ready,
                b"ERROR" | b"432" | b"433" | b"451" | b"403" | b"404" | b"405" | b"471" | b"473" | b"474" => {
                    Event::Error(String::from_utf8_lossy(text).into_owned())
                }
                _ => Event::Other,
            };
            Some((end + 2, event))
        }
    }
}

/// A connection to a peer with its read buffer.
struct Conn {
    protocol: Protocol,
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(protocol: Protocol, addr: SocketAddr, nick: &str) -> Result<Conn, BenchError> {
        let stream =
            TcpStream::connect(addr).await.map_err(|e| BenchError::Setup(format!("{}: {e}", protocol.name())))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn { protocol, stream, buf: BytesMut::with_capacity(4096) };
        let hello = match protocol {
            Protocol::Nats => "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n".to_owned(),
            Protocol::Redis => "PING\r\n".to_owned(),
            Protocol::Irc => format!("NICK {nick}\r\nUSER {nick} 0 * :bench\r\n"),
        };
        conn.send(hello.as_bytes()).await?;
        conn.until_ready().await?;
        Ok(conn)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        self.stream.write_all(bytes).await.map_err(|e| BenchError::Setup(format!("{}: {e}", self.protocol.name())))
    }

    /// Reads until the next `Ready`, answering pings, within `HANDSHAKE_LIMIT`.
    async fn until_ready(&mut self) -> Result<(), BenchError> {
        let name = self.protocol.name();
        tokio::time::timeout(HANDSHAKE_LIMIT, async {
            loop {
                while let Some((used, event)) = parse(self.protocol, &self.buf) {
                    self.buf.advance(used);
                    match event {
                        Event::Ready => return Ok(()),
                        Event::Ping(pong) => self.send(&pong).await?,
                        Event::Error(e) => return Err(BenchError::Setup(format!("{name}: {e}"))),
                        _ => {}
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return Err(BenchError::Setup(format!("{name} closed the connection"))),
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| BenchError::Setup(format!("{name}: handshake timed out")))?
    }

    /// Handles every complete unit buffered: pings are answered (in one
    /// write), anything else goes to `on` with the buffer its ranges index.
    async fn handle_buffered(&mut self, mut on: impl FnMut(&[u8], Event)) -> Result<(), BenchError> {
        let mut pongs = Vec::new();
        while let Some((used, event)) = parse(self.protocol, &self.buf) {
            match event {
                Event::Ping(pong) => pongs.extend_from_slice(&pong),
                other => on(&self.buf, other),
            }
            self.buf.advance(used);
        }
        if pongs.is_empty() {
            Ok(())
        } else {
            self.send(&pongs).await
        }
    }

    async fn subscribe(&mut self) -> Result<(), BenchError> {
        let command = match self.protocol {
            Protocol::Nats => format!("SUB {TOPIC} 1\r\nPING\r\n"),
            Protocol::Redis => format!("SUBSCRIBE {TOPIC}\r\n"),
            Protocol::Irc => format!("JOIN #{TOPIC}\r\n"),
        };
        self.send(command.as_bytes()).await?;
        self.until_ready().await
    }
}

/// Appends one publish of `payload` in the protocol's framing.
fn publish_into(protocol: Protocol, out: &mut Vec<u8>, payload: &[u8]) {
    use std::io::Write;
    // Writes to a Vec cannot fail.
    let _ = match protocol {
        Protocol::Nats => write!(out, "PUB {TOPIC} {}\r\n", payload.len()),
        Protocol::Redis => write!(out, "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{TOPIC}\r\n${}\r\n", TOPIC.len(), payload.len()),
        Protocol::Irc => write!(out, "PRIVMSG #{TOPIC} :"),
    };
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// A run-unique nick prefix, so an IRC server still holding last run's nicks does not refuse.
fn nick(role: char, run: u64, i: usize) -> String {
    format!("{role}{:x}x{i}", run & 0xffff)
}

async fn open_many(
    protocol: Protocol,
    addr: SocketAddr,
    role: char,
    run: u64,
    count: usize,
    subscribe: bool,
) -> Result<Vec<Conn>, BenchError> {
    let conns: Vec<Result<Conn, BenchError>> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let mut c = Conn::open(protocol, addr, &nick(role, run, i)).await?;
            if subscribe {
                c.subscribe().await?;
            }
            Ok(c)
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    conns.into_iter().collect()
}

/// The fan-out scenario against a peer: `members` subscribers, `publishers`
/// separate publishing connections. Closed loop: each publisher keeps
/// `window` messages not yet delivered to the first subscriber.
pub async fn fanout(
    protocol: Protocol,
    addr: SocketAddr,
    params: &FanoutParams,
    progress: Arc<Progress>,
) -> Result<Measured, BenchError> {
    let run = rand::random::<u64>();
    let subscribers = open_many(protocol, addr, 's', run, params.members, true).await?;
    // IRC publishers must be in the channel too; they do not get their own lines back.
    let publishers = open_many(protocol, addr, 'p', run, params.publishers, protocol == Protocol::Irc).await?;
    let clock = Clock::start();
    let stop = CancellationToken::new();
    let publish_end = CancellationToken::new();
    let windows: Arc<Vec<Semaphore>> = Arc::new((0..publishers.len()).map(|_| Semaphore::new(params.window)).collect());
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let mut subs = Vec::new();
    for (i, mut conn) in subscribers.into_iter().enumerate() {
        let (stop, windows, progress, errors) = (stop.clone(), windows.clone(), progress.clone(), errors.clone());
        subs.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            loop {
                let read = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    r = conn.stream.read_buf(&mut conn.buf) => r,
                };
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                let now = clock.now_ns();
                let handled = conn.handle_buffered(|buf, event| match event {
                    Event::Message(range) => {
                        let stamp = rec.delivered(&buf[range], now);
                        progress.delivered();
                        // The first subscriber frees its publisher's window (closed loop).
                        if let (0, Some(stamp)) = (i, stamp) {
                            rec.completed(stamp.sent_ns, now);
                            progress.complete();
                            if let Some(w) = windows.get(stamp.publisher as usize) {
                                w.add_permits(1);
                            }
                        }
                    }
                    Event::Error(e) => errors.record(format!("{}: {e}", protocol.name())),
                    _ => {}
                });
                if handled.await.is_err() {
                    break;
                }
            }
            rec
        }));
    }
    let mut pubs = Vec::new();
    for (p, mut conn) in publishers.into_iter().enumerate() {
        let (end, windows, sent, params) = (publish_end.clone(), windows.clone(), sent.clone(), params.clone());
        pubs.push(tokio::spawn(async move {
            let mut body = Vec::with_capacity(params.size);
            let mut out = Vec::with_capacity(64 * 1024);
            let mut seq = 0u32;
            let started = clock.now_ns();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !end.is_cancelled() {
                let (count, spacing) = match params.shape {
                    LoadShape::Closed => {
                        // Wait for at least one free slot, then take every free one.
                        let permit = tokio::select! {
                            _ = end.cancelled() => break,
                            p = windows[p].acquire() => p,
                        };
                        let Ok(permit) = permit else { break };
                        permit.forget();
                        (1 + windows[p].available_permits(), 0)
                    }
                    LoadShape::Open { messages_per_s } => {
                        tokio::select! {
                            _ = end.cancelled() => break,
                            _ = tick.tick() => {}
                        }
                        let due = (clock.now_ns().saturating_sub(started) as f64 * messages_per_s / 1e9) as u64;
                        (due.saturating_sub(seq as u64) as usize, (1e9 / messages_per_s) as u64)
                    }
                };
                if spacing == 0 && count > 1 {
                    if let Ok(more) = windows[p].try_acquire_many(count as u32 - 1) {
                        more.forget();
                    }
                }
                out.clear();
                let now = clock.now_ns();
                for _ in 0..count {
                    let stamp = if spacing == 0 { now } else { started + seq as u64 * spacing };
                    write_message(&mut body, params.size, stamp, p as u16, seq);
                    publish_into(protocol, &mut out, &body);
                    seq += 1;
                }
                sent.fetch_add(count as u64, Ordering::Relaxed);
                if conn.send(&out).await.is_err() {
                    break;
                }
                // Replies (redis' subscriber counts) are read and dropped, pings answered.
                while let Some(Ok(n)) = conn.stream.read_buf(&mut conn.buf).now_or_never() {
                    if n == 0 || conn.handle_buffered(|_, _| {}).await.is_err() {
                        break;
                    }
                }
            }
            conn
        }));
    }
    let started = clock.now_ns();
    tokio::time::sleep(params.duration).await;
    publish_end.cancel();
    // Publishers are kept open until the end: closing one may drop what it sent.
    let mut held = Vec::new();
    for p in pubs {
        held.push(p.await.map_err(|e| BenchError::Setup(e.to_string()))?);
    }
    let expected = sent.load(Ordering::Relaxed) * params.members as u64;
    settle(std::time::Instant::now(), params.drain, || progress.deliveries.load(Ordering::Relaxed) < expected).await;
    let elapsed_ns = clock.now_ns() - started;
    stop.cancel();
    let rec = gather(subs).await?;
    drop(held);
    Ok(Measured::from_record(rec, expected, None, errors.count(), Duration::from_nanos(elapsed_ns)))
}

/// Connections + handshake per second against a peer, each closed once ready.
pub async fn connect(
    protocol: Protocol,
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    progress: Arc<Progress>,
) -> Result<(usize, Duration), BenchError> {
    let run = rand::random::<u64>();
    let start = std::time::Instant::now();
    let ok = futures_util::stream::iter(0..count)
        .map(|i| {
            let progress = progress.clone();
            async move {
                let mut conn = Conn::open(protocol, addr, &nick('c', run, i)).await.ok()?;
                progress.complete();
                if protocol == Protocol::Irc {
                    // Leave cleanly, so the nick is free at once.
                    let _ = conn.send(b"QUIT\r\n").await;
                }
                Some(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter(|ok| std::future::ready(ok.is_some()))
        .count()
        .await;
    Ok((ok, start.elapsed()))
}

/// Opens `count` idle sessions to a peer and keeps them (answering pings)
/// until `hold` is cancelled.
pub async fn idle(
    protocol: Protocol,
    addr: SocketAddr,
    count: usize,
    hold: CancellationToken,
    progress: Arc<Progress>,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, Arc<AtomicU64>), BenchError> {
    let run = rand::random::<u64>();
    let open = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(count);
    let mut connecting = futures_util::stream::iter(0..count)
        .map(|i| async move { Conn::open(protocol, addr, &nick('i', run, i)).await })
        .buffered(CONNECT_CONCURRENCY);
    while let Some(conn) = connecting.next().await {
        let mut conn = conn?;
        progress.complete();
        let (open, hold) = (open.clone(), hold.clone());
        open.fetch_add(1, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            loop {
                let read = tokio::select! {
                    _ = hold.cancelled() => break,
                    r = conn.stream.read_buf(&mut conn.buf) => r,
                };
                if !matches!(read, Ok(n) if n > 0) || conn.handle_buffered(|_, _| {}).await.is_err() {
                    break;
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    Ok((tasks, open))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_frames_what_it_parses() {
        for protocol in [Protocol::Nats, Protocol::Redis] {
            let mut out = Vec::new();
            publish_into(protocol, &mut out, b"hello");
            assert!(out.ends_with(b"hello\r\n"));
        }
        let nats = b"MSG bench 1 5\r\nhello\r\nPING\r\n";
        assert_eq!(parse(Protocol::Nats, nats), Some((22, Event::Message(15..20))));
        assert_eq!(parse(Protocol::Nats, &nats[22..]), Some((6, Event::Ping(b"PONG\r\n".to_vec()))));
        assert_eq!(parse(Protocol::Nats, &nats[..18]), None);
        let redis = b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$5\r\nhello\r\n";
        let (used, event) = parse(Protocol::Redis, redis).expect("complete");
        assert_eq!(used, redis.len());
        let Event::Message(r) = event else { panic!("not a message: {event:?}") };
        assert_eq!(&redis[r], b"hello");
        assert_eq!(parse(Protocol::Redis, &redis[..30]), None);
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n";
        assert_eq!(parse(Protocol::Redis, sub), Some((sub.len(), Event::Ready)));
        let irc = b":s1!~s1@localhost PRIVMSG #bench :hello there\r\n";
        let (used, event) = parse(Protocol::Irc, irc).expect("complete");
        assert_eq!(used, irc.len());
        let Event::Message(r) = event else { panic!("not a message: {event:?}") };
        assert_eq!(&irc[r], b"hello there");
        assert_eq!(parse(Protocol::Irc, b"PING :x\r\n"), Some((9, Event::Ping(b"PONG :x\r\n".to_vec()))));
    }
}
