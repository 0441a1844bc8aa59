//! Client → server commands: the one command table, their payloads on the
//! wire and their parsed form.
//!
//! Each command is declared once, in [`command_table!`] below: its variant and
//! fields, wire name, family (which core module handles it), who may send it,
//! how its payload parses and how it encodes. The [`Command`] enum, its
//! names, [`COMMANDS`] (which the fuzzing dictionary and the spec's command
//! index are checked against) and both directions of the codec come from that
//! one table. The payload bodies live beside it, one file per family.
//!
//! Every signed payload carries `nonce` and `timestamp` (PROTOCOL.md §4). One
//! body struct per command serves both directions: the server parses it (with
//! message bodies borrowed, then shared as `Bytes` slices: never copied) and
//! the client library encodes it, so the two sides cannot drift apart.

mod channel;
mod private;
mod session;
mod users;

use bytes::Bytes;
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::body::{Body, BodyRef};
use crate::error::{ErrorCode, ProtoError};
use crate::msgpack::check_map;
use crate::wire::CommandName;
pub use channel::MergedMessage;
use channel::*;
use private::*;
use session::*;
use users::*;

/// The fields every signed client payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per account within the skew window; any u64.
    pub nonce: u64,
    /// Unix seconds at the client.
    pub timestamp: u64,
}

/// Which part of the relay handles a command (its module in `sigil-core`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A session starts or ends (`CNN`, `DCNN`): `sigil_core::session` checks a
    /// `CNN`'s tag, then the relay hands the start or end to every part.
    Session,
    /// Keep-alive, server info and who is online: `sigil_core::relay::presence`.
    Presence,
    /// Private messages and their acks: `sigil_core::relay::private`.
    Private,
    /// Channels: `sigil_core::relay::channels`, then `sigil_core::channel`.
    Channel,
}

impl Family {
    /// The `sigil-core` module where commands of this family are handled.
    pub fn handler(self) -> &'static str {
        match self {
            Family::Session => "crates/core/src/relay/mod.rs",
            Family::Presence => "crates/core/src/relay/presence.rs",
            Family::Private => "crates/core/src/relay/private.rs",
            Family::Channel => "crates/core/src/relay/channels.rs",
        }
    }
}

/// Who may send a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Before authentication only, signed with the account's key (`CNN`).
    Unauthenticated,
    /// Anyone: unsigned before authentication, signed after (`INFO`).
    Anyone,
    /// An authenticated session, signed.
    Authenticated,
}

/// What the command table says of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// Its wire name.
    pub name: &'static str,
    /// Which part of the relay handles it.
    pub family: Family,
    /// Who may send it.
    pub sender: Sender,
    /// Whether its refusal closes the connection when the sender `sender`
    /// names sends it: every failed `CNN` before authentication does (a `CNN`
    /// after it is `already_authenticated`, which is not fatal); any other
    /// command's error is fatal only for the codes PROTOCOL.md §5 marks fatal.
    pub fatal: bool,
}

fn de<T: DeserializeOwned>(payload: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(payload)
}

fn body_of(b: BodyRef<'_>, payload: &Bytes) -> Body {
    Body::from_ref(b, payload)
}

/// A struct as a msgpack map value with named fields.
fn named<T: Serialize>(body: T) -> Option<Value> {
    let bytes = rmp_serde::to_vec_named(&body).ok()?;
    rmpv::decode::read_value(&mut &bytes[..]).ok()
}

fn empty() -> Option<Value> {
    Some(Value::Map(vec![]))
}

/// Declares every command once; see the module doc.
macro_rules! command_table {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $({ $( $(#[doc = $fdoc:literal])* $field:ident : $fty:ty ),* $(,)? })?
            = $name:literal, $family:ident, $sender:ident, fatal: $fatal:literal,
            parse($p:ident) $parse:block,
            encode $encode:block;
    )*) => {
        /// A parsed client command (without its envelope).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Command {
            $( $(#[doc = $doc])* $variant $({ $( $(#[doc = $fdoc])* $field: $fty ),* })?, )*
        }

        /// Every command, in the order of the table.
        pub const COMMANDS: &[CommandInfo] = &[
            $( CommandInfo { name: $name, family: Family::$family, sender: Sender::$sender, fatal: $fatal }, )*
        ];

        impl Command {
            /// The wire name of this command.
            pub fn name(&self) -> &'static str {
                self.info().name
            }

            /// What the command table says of this command.
            pub fn info(&self) -> &'static CommandInfo {
                let mut i = 0usize;
                $(
                    if let Command::$variant { .. } = self {
                        return &COMMANDS[i];
                    }
                    i += 1;
                )*
                let _ = i;
                unreachable!("every variant is in the table")
            }

            /// Parses a payload by command name; `None` for an unknown name.
            fn parse_body(name: &str, payload: &Bytes) -> Option<Result<Command, rmp_serde::decode::Error>> {
                match name {
                    $( $name => {
                        let $p = payload;
                        // A closure, so the entry's `?` returns from it alone.
                        #[allow(clippy::redundant_closure_call)]
                        let parsed: Result<Command, rmp_serde::decode::Error> = (|| $parse)();
                        Some(parsed)
                    } )*
                    _ => None,
                }
            }

            /// The body map of this command, without the envelope.
            fn body(&self) -> Option<Value> {
                match self {
                    $( Command::$variant { $($($field,)*)? .. } => $encode, )*
                }
            }
        }
    };
}

command_table! {
    /// `CNN {id, batch, bind}`: authenticate as account `id`.
    Cnn {
        /// The account.
        id: Ulid,
        /// The session takes the batched forms of `CH_MSG_ACK` and
        /// `CH_MSG_COMMIT` (batching extension, PROTOCOL.md §7.9).
        batch: bool,
        /// The server signs this session's frames with a key derived from
        /// this `CNN` (server frame binding, PROTOCOL.md §7.10).
        bind: bool,
    } = "CNN", Session, Unauthenticated, fatal: true,
        parse(p) { let w: CnnBody = de(p)?; Ok(Command::Cnn { id: w.id, batch: w.batch, bind: w.bind }) },
        encode { named(CnnBody { id: *id, batch: *batch, bind: *bind }) };

    /// `KALIVE {}`: keep the session alive.
    Kalive = "KALIVE", Presence, Authenticated, fatal: false,
        parse(p) { let _ = p; Ok(Command::Kalive) },
        encode { empty() };

    /// `DCNN {}`: close the session after flushing.
    Dcnn = "DCNN", Session, Authenticated, fatal: false,
        parse(p) { let _ = p; Ok(Command::Dcnn) },
        encode { empty() };

    /// `INFO {}`: ask for `SINFO`.
    Info = "INFO", Presence, Anyone, fatal: false,
        parse(p) { let _ = p; Ok(Command::Info) },
        encode { empty() };

    /// `LST_USR {all?}`: ask for `USR_LST`: the connected users, or with
    /// `all` every account, offline ones included.
    LstUsr {
        /// Every account, not only the connected ones.
        all: bool,
    } = "LST_USR", Presence, Authenticated, fatal: false,
        parse(p) { Ok(Command::LstUsr { all: de::<LstUsrBody>(p)?.all }) },
        encode { if *all { named(LstUsrBody { all: true }) } else { empty() } };

    /// `CNN_USR {to}`: exchange `USR_HSK` with `to`.
    CnnUsr {
        /// The other user.
        to: Ulid,
    } = "CNN_USR", Presence, Authenticated, fatal: false,
        parse(p) { Ok(Command::CnnUsr { to: de::<ToBody>(p)?.to }) },
        encode { named(ToBody { to: *to }) };

    /// `PV_MSG {to, msg_id, msg}`: a private message.
    PvMsg {
        /// Recipient.
        to: Ulid,
        /// Client-chosen ULID.
        msg_id: Ulid,
        /// Content.
        msg: Body,
    } = "PV_MSG", Private, Authenticated, fatal: false,
        parse(p) {
            let w: PvMsgBody<BodyRef<'_>> = rmp_serde::from_slice(p)?;
            Ok(Command::PvMsg { to: w.to, msg_id: w.msg_id, msg: body_of(w.msg, p) })
        },
        encode { named(PvMsgBody { to: *to, msg_id: *msg_id, msg }) };

    /// `ACK_MSG {from, msg_id}`: acknowledge a private message.
    AckMsg {
        /// The message's sender.
        from: Ulid,
        /// The message.
        msg_id: Ulid,
    } = "ACK_MSG", Private, Authenticated, fatal: false,
        parse(p) { let w: AckMsgBody = de(p)?; Ok(Command::AckMsg { from: w.from, msg_id: w.msg_id }) },
        encode { named(AckMsgBody { from: *from, msg_id: *msg_id }) };

    /// `CH_NEW {name}`: create a channel.
    ChNew {
        /// Its unique name.
        name: String,
    } = "CH_NEW", Channel, Authenticated, fatal: false,
        parse(p) { Ok(Command::ChNew { name: de::<ChNewBody>(p)?.name }) },
        encode { named(ChNewBody { name: name.clone() }) };

    /// `CH_JOIN {id}`: become a member.
    ChJoin {
        /// The channel.
        id: Ulid,
    } = "CH_JOIN", Channel, Authenticated, fatal: false,
        parse(p) { Ok(Command::ChJoin { id: de::<IdBody>(p)?.id }) },
        encode { named(IdBody { id: *id }) };

    /// `CH_LEAVE {id}`: stop being a member.
    ChLeave {
        /// The channel.
        id: Ulid,
    } = "CH_LEAVE", Channel, Authenticated, fatal: false,
        parse(p) { Ok(Command::ChLeave { id: de::<IdBody>(p)?.id }) },
        encode { named(IdBody { id: *id }) };

    /// `CH_WHO {id}`: ask a channel's members (`CH_MEMBERS`).
    ChWho {
        /// The channel.
        id: Ulid,
    } = "CH_WHO", Channel, Authenticated, fatal: false,
        parse(p) { Ok(Command::ChWho { id: de::<IdBody>(p)?.id }) },
        encode { named(IdBody { id: *id }) };

    /// `CH_LST {}`: ask for `LST_CH`.
    ChLst = "CH_LST", Channel, Authenticated, fatal: false,
        parse(p) { let _ = p; Ok(Command::ChLst) },
        encode { empty() };

    /// `CH_LEAD {channel, election}`: stand for election.
    ChLead {
        /// The channel.
        channel: Ulid,
        /// The new election number.
        election: u64,
    } = "CH_LEAD", Channel, Authenticated, fatal: false,
        parse(p) { let w: ChLeadBody = de(p)?; Ok(Command::ChLead { channel: w.channel, election: w.election }) },
        encode { named(ChLeadBody { channel: *channel, election: *election }) };

    /// `CH_VOTE {channel, election, user}`: vote for `user`.
    ChVote {
        /// The channel.
        channel: Ulid,
        /// The election.
        election: u64,
        /// The candidate.
        user: Ulid,
    } = "CH_VOTE", Channel, Authenticated, fatal: false,
        parse(p) {
            let w: ChVoteBody = de(p)?;
            Ok(Command::ChVote { channel: w.channel, election: w.election, user: w.user })
        },
        encode { named(ChVoteBody { channel: *channel, election: *election, user: *user }) };

    /// `CH_MSG {id, msg_id, msg}`: send to a channel.
    ChMsg {
        /// The channel.
        id: Ulid,
        /// Client-chosen ULID.
        msg_id: Ulid,
        /// Content.
        msg: Body,
    } = "CH_MSG", Channel, Authenticated, fatal: false,
        parse(p) {
            let w: ChMsgBody<BodyRef<'_>> = rmp_serde::from_slice(p)?;
            Ok(Command::ChMsg { id: w.id, msg_id: w.msg_id, msg: body_of(w.msg, p) })
        },
        encode { named(ChMsgBody { id: *id, msg_id: *msg_id, msg }) };

    /// `ACK_CH_MSG {id, ids}`: acknowledge (or confirm a merged) channel message.
    AckChMsg {
        /// The message.
        id: Ulid,
        /// Further messages acknowledged by the same frame, in order
        /// (batching extension, PROTOCOL.md §7.9); usually empty.
        ids: Vec<Ulid>,
    } = "ACK_CH_MSG", Channel, Authenticated, fatal: false,
        parse(p) { let w: AckChMsgBody = de(p)?; Ok(Command::AckChMsg { id: w.id, ids: w.ids }) },
        encode { named(AckChMsgBody { id: *id, ids: ids.clone() }) };

    /// `CH_COMMIT {id, acks, ids}`: the leader commits a message.
    ChCommit {
        /// The message.
        id: Ulid,
        /// The users whose acks make the majority.
        acks: Vec<Ulid>,
        /// Further messages committed with the same `acks`, in order
        /// (batching extension, PROTOCOL.md §7.9); usually empty.
        ids: Vec<Ulid>,
    } = "CH_COMMIT", Channel, Authenticated, fatal: false,
        parse(p) { let w: ChCommitBody = de(p)?; Ok(Command::ChCommit { id: w.id, acks: w.acks, ids: w.ids }) },
        encode { named(ChCommitBody { id: *id, acks: acks.clone(), ids: ids.clone() }) };

    /// `CH_PULL {id, anchor}`: ask for history after `anchor`.
    ChPull {
        /// The channel.
        id: Ulid,
        /// The last message the client has, or nil for the start.
        anchor: Option<Ulid>,
    } = "CH_PULL", Channel, Authenticated, fatal: false,
        parse(p) { let w: ChPullBody = de(p)?; Ok(Command::ChPull { id: w.id, anchor: w.anchor }) },
        encode { named(ChPullBody { id: *id, anchor: *anchor }) };

    /// `CH_MERGE {id, msg}`: committed messages the client has and the server may lack.
    ChMerge {
        /// The channel.
        id: Ulid,
        /// The messages.
        msg: Vec<MergedMessage>,
    } = "CH_MERGE", Channel, Authenticated, fatal: false,
        parse(p) {
            let w: ChMergeBody<BodyRef<'_>> = rmp_serde::from_slice(p)?;
            let msg = w
                .msg
                .into_iter()
                .map(|m| MergedMessage {
                    id: m.id,
                    from: m.from,
                    timestamp: m.timestamp,
                    msg: body_of(m.msg, p),
                    acks: m.acks,
                })
                .collect();
            Ok(Command::ChMerge { id: w.id, msg })
        },
        encode { named(ChMergeBody { id: *id, msg: msg.clone() }) };

    /// `CH_ACK_REQ {id, users}`: the leader asks for confirmations of a merge.
    ChAckReq {
        /// The merged message.
        id: Ulid,
        /// Whom to ask.
        users: Vec<Ulid>,
    } = "CH_ACK_REQ", Channel, Authenticated, fatal: false,
        parse(p) { let w: ChAckReqBody = de(p)?; Ok(Command::ChAckReq { id: w.id, users: w.users }) },
        encode { named(ChAckReqBody { id: *id, users: users.clone() }) };
}

/// The table's entry for a command name, if it is one.
pub fn command_info(name: &str) -> Option<&'static CommandInfo> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// A command with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Nonce and timestamp.
    pub envelope: Envelope,
    /// The command.
    pub command: Command,
}

/// A payload that did not parse. `envelope` is set when at least the nonce and
/// timestamp were readable, so the error can carry `ref` and the nonce can be spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailure {
    /// What to answer.
    pub error: ProtoError,
    /// The envelope, when readable.
    pub envelope: Option<Envelope>,
}

fn bad_payload(command: &str, e: impl std::fmt::Display) -> ProtoError {
    ProtoError::new(ErrorCode::BadPayload, format!("{command}: {e}"))
}

impl Request {
    /// Parses a signed client frame's payload.
    pub fn parse(name: &CommandName, payload: &Bytes) -> Result<Request, ParseFailure> {
        let fail = |error: ProtoError, envelope| ParseFailure { error, envelope };
        check_map(payload).map_err(|e| fail(bad_payload(name.as_str(), e), None))?;
        let envelope: Envelope =
            rmp_serde::from_slice(payload).map_err(|e| fail(bad_payload(name.as_str(), e), None))?;
        match Command::parse_body(name.as_str(), payload) {
            Some(Ok(command)) => Ok(Request { envelope, command }),
            Some(Err(e)) => Err(fail(bad_payload(name.as_str(), e).with_ref(envelope.nonce), Some(envelope))),
            None => {
                let e = ProtoError::new(ErrorCode::UnknownCommand, format!("unknown command {}", name.as_str()));
                Err(fail(e.with_ref(envelope.nonce), Some(envelope)))
            }
        }
    }

    /// Encodes this request as `(COMMAND, payload)`, for clients.
    pub fn encode(&self) -> (&'static str, Vec<u8>) {
        // Plain structs always encode; bin bodies stay bin.
        let mut map = match self.command.body() {
            Some(Value::Map(m)) => m,
            _ => Vec::new(),
        };
        map.push((Value::from("nonce"), Value::from(self.envelope.nonce)));
        map.push((Value::from("timestamp"), Value::from(self.envelope.timestamp)));
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &Value::Map(map));
        (self.command.name(), out)
    }
}

/// Writes one frame for `request` as given (its nonce and timestamp
/// included), signed when a MAC is given.
pub fn write_request(mac: Option<&crate::wire::FrameMac>, request: &Request, buf: &mut bytes::BytesMut) {
    let (name, payload) = request.encode();
    let tag = mac.map(|m| m.sign(name.as_bytes(), &payload));
    crate::wire::encode_frame(
        &crate::wire::OutFrame { command: name, signature: tag.as_ref(), payload: &payload },
        buf,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(command: Command) {
        let req = Request { envelope: Envelope { nonce: u64::MAX - 3, timestamp: 1_700_000_000 }, command };
        let (name, payload) = req.encode();
        let parsed = Request::parse(&CommandName::new(name.as_bytes()).unwrap(), &Bytes::from(payload)).unwrap();
        assert_eq!(parsed, req);
    }

    #[test]
    fn every_command_roundtrips() {
        let a = Ulid::from(7u128);
        let b = Ulid::from(9u128);
        roundtrip(Command::Cnn { id: a, batch: false, bind: false });
        roundtrip(Command::Cnn { id: a, batch: true, bind: false });
        roundtrip(Command::Cnn { id: a, batch: false, bind: true });
        roundtrip(Command::Kalive);
        roundtrip(Command::Dcnn);
        roundtrip(Command::Info);
        roundtrip(Command::LstUsr { all: false });
        roundtrip(Command::LstUsr { all: true });
        roundtrip(Command::ChWho { id: Ulid::from(7u128) });
        roundtrip(Command::CnnUsr { to: a });
        roundtrip(Command::PvMsg { to: a, msg_id: b, msg: Body::text("héllo") });
        roundtrip(Command::PvMsg { to: a, msg_id: b, msg: Body::binary(vec![0u8, 255]) });
        roundtrip(Command::AckMsg { from: a, msg_id: b });
        roundtrip(Command::ChNew { name: "general".into() });
        roundtrip(Command::ChJoin { id: a });
        roundtrip(Command::ChLeave { id: a });
        roundtrip(Command::ChLst);
        roundtrip(Command::ChLead { channel: a, election: u64::MAX });
        roundtrip(Command::ChVote { channel: a, election: 3, user: b });
        roundtrip(Command::ChMsg { id: a, msg_id: b, msg: Body::binary(vec![1u8; 40]) });
        roundtrip(Command::AckChMsg { id: b, ids: Vec::new() });
        roundtrip(Command::AckChMsg { id: b, ids: vec![a, b] });
        roundtrip(Command::ChCommit { id: b, acks: vec![a, b], ids: Vec::new() });
        roundtrip(Command::ChCommit { id: b, acks: vec![a, b], ids: vec![a] });
        roundtrip(Command::ChPull { id: a, anchor: None });
        roundtrip(Command::ChPull { id: a, anchor: Some(b) });
        roundtrip(Command::ChMerge {
            id: a,
            msg: vec![MergedMessage { id: b, from: a, timestamp: 5, msg: Body::text("m"), acks: vec![a] }],
        });
        roundtrip(Command::ChAckReq { id: b, users: vec![a] });
    }

    #[test]
    fn body_is_shared_not_copied() {
        let req = Request {
            envelope: Envelope { nonce: 1, timestamp: 2 },
            command: Command::ChMsg { id: Ulid::nil(), msg_id: Ulid::nil(), msg: Body::text("x".repeat(100)) },
        };
        let (_, payload) = req.encode();
        let payload = Bytes::from(payload);
        let parsed = Request::parse(&CommandName::new(b"CH_MSG").unwrap(), &payload).unwrap();
        let Command::ChMsg { msg, .. } = parsed.command else { panic!("not CH_MSG") };
        let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
        assert!(range.contains(&(msg.bytes.as_ptr() as usize)));
    }

    #[test]
    fn missing_fields_and_unknown_commands_keep_the_nonce_for_ref() {
        let payload = Bytes::from(rmp_serde::to_vec_named(&Envelope { nonce: 5, timestamp: 6 }).unwrap());
        let f = Request::parse(&CommandName::new(b"PV_MSG").unwrap(), &payload).unwrap_err();
        assert_eq!(f.error.code, ErrorCode::BadPayload);
        assert_eq!(f.error.nonce_ref, Some(5));
        let f = Request::parse(&CommandName::new(b"NOPE").unwrap(), &payload).unwrap_err();
        assert_eq!(f.error.code, ErrorCode::UnknownCommand);
        assert_eq!(f.envelope, Some(Envelope { nonce: 5, timestamp: 6 }));
        let f = Request::parse(&CommandName::new(b"KALIVE").unwrap(), &Bytes::from_static(&[0x80])).unwrap_err();
        assert_eq!(f.error.code, ErrorCode::BadPayload);
        assert_eq!(f.envelope, None);
        // An absent anchor is nil.
        let f = Request::parse(&CommandName::new(b"CH_PULL").unwrap(), &payload).unwrap_err();
        assert_eq!(f.error.code, ErrorCode::BadPayload, "id is still required");
    }

    #[test]
    fn the_table_names_each_command_once_and_every_variant_finds_its_entry() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len(), "a name is declared twice");
        let a = Ulid::from(1u128);
        let samples = [
            Command::Cnn { id: a, batch: false, bind: false },
            Command::Info,
            Command::ChAckReq { id: a, users: vec![] },
            Command::PvMsg { to: a, msg_id: a, msg: Body::text("x") },
        ];
        for c in samples {
            let (name, payload) =
                Request { envelope: Envelope { nonce: 1, timestamp: 2 }, command: c.clone() }.encode();
            assert_eq!(command_info(name), Some(c.info()));
            let parsed = Request::parse(&CommandName::new(name.as_bytes()).unwrap(), &Bytes::from(payload)).unwrap();
            assert_eq!(parsed.command, c);
        }
        assert_eq!(command_info("CNN").map(|c| (c.sender, c.fatal)), Some((Sender::Unauthenticated, true)));
        assert_eq!(command_info("ACK_CH_MSG").map(|c| c.family), Some(Family::Channel));
        assert!(command_info("NOPE").is_none());
    }
}
