//! Fuzz target bodies, shared by `fuzz/` (libFuzzer, nightly) and
//! `tests/fuzz_corpus.rs` (replays the committed corpus on stable), so a
//! crash found once stays a test.
//!
//! - [`frame_decoder`]: arbitrary bytes in arbitrary chunks, against one-piece
//!   decoding and against [`reference_parse`], a deliberately simple parser
//!   of the same grammar written separately from the codec.
//! - [`payloads`]: every command's and event's payload decoder on arbitrary
//!   bytes; what parses must re-encode to something that parses the same.
//! - [`session`]: the session and relay state machines fed an arbitrary
//!   sequence of well-signed commands from several clients; every frame they
//!   send must be a known, well-formed event within `max_payload`.

use bytes::BytesMut;
use sigil_proto::command::COMMANDS;
use sigil_proto::event::EVENTS;
use tokio_util::codec::Decoder;

use sigil_proto::wire::{Frame, FrameCodec, FrameError};

/// `max_payload` the decoder target runs with.
pub const FUZZ_MAX_PAYLOAD: usize = 4096;

/// Decodes `chunks` fed one after another, then end of stream, with a codec
/// of the given `max_payload`. Returns the frames and, if decoding stopped on
/// a fault, whether it was `too_large` (true) or `bad_frame` (false).
pub fn decode_chunks<'a>(max_payload: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, Option<bool>) {
    let mut codec = FrameCodec::new(max_payload);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let kind = |e: FrameError| Some(matches!(e, FrameError::TooLarge { .. }));
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, kind(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, kind(e)),
        }
    }
}

/// The frame decoder target. The first byte picks a chunk size, the rest is
/// the stream. Panics when decoding in chunks differs from decoding in one
/// piece (frames, or error kind), or a frame exceeds `max_payload`.
pub fn frame_decoder(data: &[u8]) {
    let Some((&pattern, stream)) = data.split_first() else { return };
    let whole = decode_chunks(FUZZ_MAX_PAYLOAD, [stream]);
    let size = usize::from(pattern % 17) + 1;
    let chunked = decode_chunks(FUZZ_MAX_PAYLOAD, stream.chunks(size));
    assert_eq!(whole, chunked, "decoding in chunks of {size} differs from one piece");
    assert!(whole.0.iter().all(|f| f.payload.len() <= FUZZ_MAX_PAYLOAD));
    // Differential: the reference accepts exactly the same frames, and fails
    // exactly when the codec does.
    let (frames, failed) = reference_parse(stream, FUZZ_MAX_PAYLOAD);
    let codec: Vec<RefFrame> = whole
        .0
        .iter()
        .map(|f| RefFrame {
            command: f.command.as_str().to_owned(),
            signature: f.signature.map(|s| s.to_vec()),
            payload: f.payload.to_vec(),
        })
        .collect();
    assert_eq!(codec, frames, "codec and reference disagree on the frames");
    assert_eq!(whole.1.is_some(), failed, "codec and reference disagree on failure");
}

/// A frame as [`reference_parse`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefFrame {
    /// The command name.
    pub command: String,
    /// The tag bytes, if the signature line was not empty.
    pub signature: Option<Vec<u8>>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The frame grammar of PROTOCOL.md §1, parsed the simple way: the whole
/// input at once, line by line. Returns the frames before the first fault
/// and whether there was one (a truncated frame at the end is a fault).
pub fn reference_parse(input: &[u8], max_payload: usize) -> (Vec<RefFrame>, bool) {
    fn line(input: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
        let rest = &input[*pos..];
        let lf = rest.iter().position(|&b| b == b'\n')?;
        *pos += lf + 1;
        let mut l = rest[..lf].to_vec();
        if l.last() == Some(&b'\r') {
            l.pop();
        }
        Some(l)
    }
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        // Blank lines (LF or CRLF) between frames.
        loop {
            if input[pos..].starts_with(b"\n") {
                pos += 1;
            } else if input[pos..].starts_with(b"\r\n") {
                pos += 2;
            } else {
                break;
            }
        }
        if pos == input.len() || &input[pos..] == b"\r" {
            return (frames, false);
        }
        let Some(command) = line(input, &mut pos) else { return (frames, true) };
        let command_ok =
            (1..=16).contains(&command.len()) && command.iter().all(|b| b.is_ascii_uppercase() || *b == b'_');
        let Some(len) = line(input, &mut pos) else { return (frames, true) };
        let len_text = String::from_utf8_lossy(&len).into_owned();
        let len_ok = !len.is_empty()
            && len.iter().all(u8::is_ascii_digit)
            && (len.len() == 1 || len[0] != b'0')
            && len_text.parse::<usize>().is_ok_and(|n| n <= max_payload);
        if !command_ok || !len_ok || command.contains(&b'\r') || len.contains(&b'\r') {
            return (frames, true);
        }
        let n: usize = len_text.parse().unwrap_or(0);
        let Some(sig) = line(input, &mut pos) else { return (frames, true) };
        let signature = match sig.len() {
            0 => None,
            128 => match hex::decode(&sig) {
                Ok(bytes) => Some(bytes),
                Err(_) => return (frames, true),
            },
            _ => return (frames, true),
        };
        if input.len() - pos < n {
            return (frames, true);
        }
        let payload = input[pos..pos + n].to_vec();
        pos += n;
        frames.push(RefFrame { command: String::from_utf8_lossy(&command).into_owned(), signature, payload });
    }
}

/// The fuzzing dictionary (`fuzz/sigil.dict`), derived from the command and
/// event tables: every name a client or server sends, then frame pieces.
/// A test keeps the committed file equal to this.
pub fn dictionary() -> String {
    let mut out =
        String::from("# Generated from sigil-proto's command and event tables (sigil_fuzzing::dictionary).\n");
    let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).chain(EVENTS.iter().copied()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        out.push_str(&format!("\"{name}\"\n"));
    }
    for piece in [r"\x0a", r"\x0d\x0a", r"0\x0a", r"65536\x0a"] {
        out.push_str(&format!("\"{piece}\"\n"));
    }
    out
}

/// The payload decoders target: the first byte picks a command (and an
/// event) name, the rest is the payload.
pub fn payloads(data: &[u8]) {
    use sigil_proto::{Request, ServerEvent};
    let Some((&pick, payload)) = data.split_first() else { return };
    let payload = bytes::Bytes::copy_from_slice(payload);
    let name = COMMANDS[usize::from(pick) % COMMANDS.len()].name;
    let command = sigil_proto::wire::CommandName::new(name.as_bytes()).expect("valid name");
    let shape_ok = sigil_proto::msgpack::check_map(&payload).is_ok();
    match Request::parse(&command, &payload) {
        Ok(request) => {
            assert!(shape_ok, "{name}: parsed a payload the shape check refuses");
            assert_eq!(request.command.name(), name);
            let (again_name, again) = request.encode();
            let reparsed = Request::parse(&command, &bytes::Bytes::from(again)).expect("re-encoded request parses");
            assert_eq!((again_name, reparsed), (name, request), "{name}: re-encoding changed the request");
        }
        Err(failure) => {
            if let Some(envelope) = failure.envelope {
                assert_eq!(failure.error.nonce_ref, Some(envelope.nonce));
            }
            assert!(!failure.error.is_fatal(), "payload errors are never fatal");
        }
    }
    let event = EVENTS[usize::from(pick) % EVENTS.len()];
    if let Ok(ev) = ServerEvent::decode(event, &payload) {
        assert!(shape_ok, "{event}: decoded a payload the shape check refuses");
        assert!(!matches!(ev, ServerEvent::Other { .. }), "{event} is a known event");
    }
}

/// One step of a [`session`] script. Small integers pick from small pools of
/// users, channels and message ids, so that the script's ids collide often.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum Step {
    /// A user opens a connection (and sends CNN).
    Connect(u8),
    /// A user's connection drops.
    Disconnect(u8),
    /// A user sends a command, well signed.
    Send(u8, FuzzCommand),
    /// A user sends a well-signed frame with an arbitrary payload.
    Raw(u8, u8, Vec<u8>),
    /// Time passes.
    Tick(u8),
    /// The store makes its queued writes durable.
    Flush,
    /// An account is removed.
    Remove(u8),
}

/// A command with its ids drawn from the pools.
#[derive(Debug, arbitrary::Arbitrary)]
#[allow(missing_docs)]
pub enum FuzzCommand {
    Cnn(u8),
    Kalive,
    Dcnn,
    Info,
    LstUsr(bool),
    CnnUsr(u8),
    PvMsg(u8, u8, Vec<u8>),
    AckMsg(u8, u8),
    ChNew(u8),
    ChJoin(u8),
    ChLeave(u8),
    ChLst,
    ChWho(u8),
    ChLead(u8, u64),
    ChVote(u8, u64, u8),
    ChMsg(u8, u8, Vec<u8>),
    AckChMsg(u8),
    ChCommit(u8, Vec<u8>),
    ChPull(u8, Option<u8>),
    ChMerge(u8, Vec<(u8, u8, u64, Vec<u8>)>),
    ChAckReq(u8, Vec<u8>),
}

const USERS: u8 = 4;

struct SessionWorld {
    relay: sigil_core::Relay,
    limits: sigil_core::Limits,
    keys: Vec<sigil_proto::wire::SecretKey>,
    ids: Vec<ulid::Ulid>,
    channels: Vec<ulid::Ulid>,
    msgs: Vec<ulid::Ulid>,
    conns: std::collections::HashMap<u8, (sigil_core::ConnId, sigil_core::Session)>,
    next_conn: u64,
    queue: Vec<sigil_core::StoreOp>,
    /// What the store holds: (channel, msg_id) of every durable message.
    durable: std::collections::HashSet<(ulid::Ulid, ulid::Ulid)>,
    now: u64,
    nonce: u64,
}

impl SessionWorld {
    fn user(&self, i: u8) -> ulid::Ulid {
        // One id in five is no account at all.
        self.ids.get(usize::from(i % (USERS + 1))).copied().unwrap_or(ulid::Ulid::from(77u128))
    }

    fn channel(&self, i: u8) -> ulid::Ulid {
        self.channels.get(usize::from(i) % (self.channels.len() + 1)).copied().unwrap_or(ulid::Ulid::from(88u128))
    }

    fn msg(&self, i: u8) -> ulid::Ulid {
        self.msgs[usize::from(i) % self.msgs.len()]
    }

    fn command(&self, c: &FuzzCommand) -> sigil_proto::Command {
        use sigil_proto::command::MergedMessage;
        use sigil_proto::{Body, Command};
        let body = |b: &Vec<u8>| Body::binary(b.clone());
        let users = |v: &Vec<u8>| v.iter().map(|&u| self.user(u)).collect::<Vec<_>>();
        match c {
            FuzzCommand::Cnn(u) => Command::Cnn { id: self.user(*u), batch: false, bind: false },
            FuzzCommand::Kalive => Command::Kalive,
            FuzzCommand::Dcnn => Command::Dcnn,
            FuzzCommand::Info => Command::Info,
            FuzzCommand::LstUsr(all) => Command::LstUsr { all: *all },
            FuzzCommand::CnnUsr(u) => Command::CnnUsr { to: self.user(*u) },
            FuzzCommand::PvMsg(u, m, b) => Command::PvMsg { to: self.user(*u), msg_id: self.msg(*m), msg: body(b) },
            FuzzCommand::AckMsg(u, m) => Command::AckMsg { from: self.user(*u), msg_id: self.msg(*m) },
            FuzzCommand::ChNew(n) => Command::ChNew { name: format!("c{}", n % 4) },
            FuzzCommand::ChJoin(c) => Command::ChJoin { id: self.channel(*c) },
            FuzzCommand::ChLeave(c) => Command::ChLeave { id: self.channel(*c) },
            FuzzCommand::ChLst => Command::ChLst,
            FuzzCommand::ChWho(c) => Command::ChWho { id: self.channel(*c) },
            FuzzCommand::ChLead(c, e) => Command::ChLead { channel: self.channel(*c), election: *e % 8 },
            FuzzCommand::ChVote(c, e, u) => {
                Command::ChVote { channel: self.channel(*c), election: *e % 8, user: self.user(*u) }
            }
            FuzzCommand::ChMsg(c, m, b) => Command::ChMsg { id: self.channel(*c), msg_id: self.msg(*m), msg: body(b) },
            FuzzCommand::AckChMsg(m) => Command::AckChMsg { id: self.msg(*m), ids: Vec::new() },
            FuzzCommand::ChCommit(m, a) => Command::ChCommit { id: self.msg(*m), acks: users(a), ids: Vec::new() },
            FuzzCommand::ChPull(c, a) => Command::ChPull { id: self.channel(*c), anchor: a.map(|a| self.msg(a)) },
            FuzzCommand::ChMerge(c, ms) => Command::ChMerge {
                id: self.channel(*c),
                msg: ms
                    .iter()
                    .map(|(m, f, t, a)| MergedMessage {
                        id: self.msg(*m),
                        from: self.user(*f),
                        timestamp: *t,
                        msg: Body::text("m"),
                        acks: users(a),
                    })
                    .collect(),
            },
            FuzzCommand::ChAckReq(m, u) => Command::ChAckReq { id: self.msg(*m), users: users(u) },
        }
    }

    /// Runs one input through the relay and checks every effect.
    fn step(&mut self, input: sigil_core::Input) {
        use sigil_core::{Effect, Input, StoreOp};
        use sigil_proto::{ErrorCode, ServerEvent};
        let mut out = Vec::new();
        self.relay.step(input, self.now, &mut out);
        for effect in out {
            match effect {
                Effect::Send { frame, .. } | Effect::Close { last: Some(frame), .. } => {
                    assert!(frame.payload.len() <= self.limits.max_payload, "{} over max_payload", frame.command);
                    match ServerEvent::decode(frame.command, &frame.payload) {
                        Ok(ServerEvent::Other { command, .. }) => panic!("unknown event {command}"),
                        Ok(ServerEvent::Err(e)) => {
                            assert!(ErrorCode::parse(&e.code).is_some(), "unknown code {}", e.code)
                        }
                        Ok(_) => {}
                        Err(e) => panic!("malformed event: {e}"),
                    }
                }
                Effect::Close { .. } => {}
                Effect::Store(op) => {
                    if let StoreOp::CreateChannel { id, .. } = &op {
                        self.channels.push(*id);
                    }
                    self.queue.push(op);
                }
                Effect::Pull(p) => self.step(Input::Pulled {
                    conn: p.conn,
                    channel: p.channel,
                    anchor: p.anchor,
                    entries: Vec::new(),
                    more: false,
                }),
            }
        }
    }

    /// A frame from user `u` through its session, as the connection reader does.
    fn frame(&mut self, u: u8, command: &str, payload: Vec<u8>) {
        use sigil_core::{AccountKey, Input, SessionOutput};
        let Some(name) = sigil_proto::wire::CommandName::new(command.as_bytes()) else { return };
        let key = &self.keys[usize::from(u % USERS)];
        let tag = key.mac().sign(name.as_bytes(), &payload);
        let frame =
            sigil_proto::wire::Frame { command: name, signature: Some(tag), payload: bytes::Bytes::from(payload) };
        let (keys, ids) = (self.keys.clone(), self.ids.clone());
        let lookup =
            |id: &ulid::Ulid| ids.iter().position(|x| x == id).map(|i| AccountKey { key: keys[i].clone(), rev: 1 });
        let Some((conn, session)) = self.conns.get_mut(&u) else { return };
        let conn = *conn;
        let input = match session.on_frame(&frame, self.now, lookup) {
            Err(_) => {
                self.conns.remove(&u);
                Input::Closed { conn }
            }
            Ok(SessionOutput::Info) => return,
            Ok(SessionOutput::Authenticate { account, key_rev, envelope, batch, bind, .. }) => {
                Input::Open { conn, account, key_rev, envelope, batch, bind }
            }
            Ok(SessionOutput::Reject { envelope, error }) => Input::Reject { conn, envelope, error },
            Ok(SessionOutput::Request(request)) => Input::Request { conn, request },
        };
        self.step(input);
    }
}

/// The session target: runs a script of steps against a fresh relay.
pub fn session(data: &[u8]) {
    use sigil_core::{ConnId, Input, Limits, Relay, Session, StoreOp};
    use sigil_proto::{Envelope, Request};
    let Ok(script) = arbitrary::Unstructured::new(data).arbitrary::<Vec<Step>>() else { return };
    let limits = Limits { max_payload: 4096, max_pending: 8, max_merges: 8, ..Limits::default() };
    let now = 1_800_000_000;
    let mut w = SessionWorld {
        relay: Relay::new(limits.clone(), now, sigil_core::IdSource::counter(1 << 100)),
        limits,
        keys: (0..USERS).map(|i| sigil_proto::wire::SecretKey::from_bytes([i + 1; 32])).collect(),
        ids: (1..=u128::from(USERS)).map(ulid::Ulid::from).collect(),
        channels: Vec::new(),
        msgs: (100..108u128).map(ulid::Ulid::from).collect(),
        conns: std::collections::HashMap::new(),
        next_conn: 0,
        queue: Vec::new(),
        durable: std::collections::HashSet::new(),
        now: now + 1,
        nonce: 0,
    };
    for (i, id) in w.ids.clone().into_iter().enumerate() {
        w.step(Input::AccountUpserted { id, name: format!("u{i}"), key_rev: 1 });
    }
    for step in script.into_iter().take(256) {
        match step {
            Step::Connect(u) => {
                let u = u % USERS;
                if !w.conns.contains_key(&u) {
                    w.next_conn += 1;
                    w.conns.insert(u, (ConnId(w.next_conn), Session::new(w.limits.skew_s)));
                    let id = w.user(u);
                    w.nonce += 1;
                    let (name, payload) = Request {
                        envelope: Envelope { nonce: w.nonce, timestamp: w.now },
                        command: sigil_proto::Command::Cnn { id, batch: false, bind: false },
                    }
                    .encode();
                    w.frame(u, name, payload);
                }
            }
            Step::Disconnect(u) => {
                if let Some((conn, _)) = w.conns.remove(&(u % USERS)) {
                    w.step(Input::Closed { conn });
                }
            }
            Step::Send(u, c) => {
                let command = w.command(&c);
                w.nonce += 1;
                let (name, payload) =
                    Request { envelope: Envelope { nonce: w.nonce, timestamp: w.now }, command }.encode();
                w.frame(u % USERS, name, payload);
            }
            Step::Raw(u, pick, payload) => {
                let name = COMMANDS[usize::from(pick) % COMMANDS.len()].name;
                w.frame(u % USERS, name, payload);
            }
            Step::Tick(s) => {
                w.now += u64::from(s % 40);
                w.step(Input::Tick);
            }
            Step::Flush => {
                w.step(Input::Flush);
                let ops = std::mem::take(&mut w.queue);
                for op in &ops {
                    if let StoreOp::Append { channel, entry, .. } = op {
                        // What the store's UNIQUE (channel, msg_id) and i64 columns would refuse.
                        assert!(w.durable.insert((*channel, entry.id)), "{} appended twice", entry.id);
                        assert!(i64::try_from(entry.timestamp).is_ok(), "timestamp out of the store's range");
                    }
                }
                for (channel, (seq, election)) in sigil_core::durable_marks(&ops) {
                    w.step(Input::Stored { channel, seq, election });
                }
            }
            Step::Remove(u) => {
                let id = w.user(u % USERS);
                w.step(Input::AccountRemoved { id });
            }
        }
    }
}
