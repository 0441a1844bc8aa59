//! Client → server commands: their payloads on the wire and their parsed form.
//!
//! Every signed payload carries `nonce` and `timestamp` (PROTOCOL.md §4). One
//! body struct per command serves both directions: the server parses it (with
//! message bodies borrowed, then shared as `Bytes` slices: never copied) and
//! the client library encodes it, so the two sides cannot drift apart.

use bytes::Bytes;
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::body::{Body, BodyRef};
use super::error::{ErrorCode, ProtoError};
use super::id;
use super::msgpack::check_map;
use crate::wire::CommandName;

/// The fields every signed client payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per account within the skew window; any u64.
    pub nonce: u64,
    /// Unix seconds at the client.
    pub timestamp: u64,
}

#[derive(Serialize, Deserialize)]
struct IdBody {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
}

#[derive(Serialize, Deserialize)]
struct CnnBody {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    /// Batching extension (PROTOCOL.md §7.9): this session takes batched frames.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    batch: bool,
}

/// `ACK_CH_MSG`: `ids` is the batching extension (PROTOCOL.md §7.9).
#[derive(Serialize, Deserialize)]
struct AckChMsgBody {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    #[serde(default, deserialize_with = "id::strict_vec", skip_serializing_if = "Vec::is_empty")]
    ids: Vec<Ulid>,
}

#[derive(Serialize, Deserialize)]
struct ToBody {
    #[serde(deserialize_with = "id::strict")]
    to: Ulid,
}

#[derive(Serialize, Deserialize)]
struct PvMsgBody<B> {
    #[serde(deserialize_with = "id::strict")]
    to: Ulid,
    #[serde(deserialize_with = "id::strict")]
    msg_id: Ulid,
    msg: B,
}

#[derive(Serialize, Deserialize)]
struct AckMsgBody {
    #[serde(deserialize_with = "id::strict")]
    from: Ulid,
    #[serde(deserialize_with = "id::strict")]
    msg_id: Ulid,
}

#[derive(Serialize, Deserialize)]
struct ChNewBody {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct ChLeadBody {
    #[serde(deserialize_with = "id::strict")]
    channel: Ulid,
    election: u64,
}

#[derive(Serialize, Deserialize)]
struct ChVoteBody {
    #[serde(deserialize_with = "id::strict")]
    channel: Ulid,
    election: u64,
    #[serde(deserialize_with = "id::strict")]
    user: Ulid,
}

#[derive(Serialize, Deserialize)]
struct ChMsgBody<B> {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    #[serde(deserialize_with = "id::strict")]
    msg_id: Ulid,
    msg: B,
}

#[derive(Serialize, Deserialize)]
struct ChCommitBody {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    #[serde(deserialize_with = "id::strict_vec")]
    acks: Vec<Ulid>,
    /// Batching extension (PROTOCOL.md §7.9): further messages committed with the same acks.
    #[serde(default, deserialize_with = "id::strict_vec", skip_serializing_if = "Vec::is_empty")]
    ids: Vec<Ulid>,
}

#[derive(Serialize, Deserialize)]
struct ChPullBody {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    /// nil (or absent) = from the start.
    #[serde(default, deserialize_with = "id::strict_opt")]
    anchor: Option<Ulid>,
}

#[derive(Serialize, Deserialize)]
struct ChMergeBody<B> {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    msg: Vec<MergedMessage<B>>,
}

#[derive(Serialize, Deserialize)]
struct ChAckReqBody {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    #[serde(deserialize_with = "id::strict_vec")]
    users: Vec<Ulid>,
}

/// A committed message as a client reports it in `CH_MERGE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedMessage<B = Body> {
    /// The message id.
    #[serde(deserialize_with = "id::strict")]
    pub id: Ulid,
    /// Its sender.
    #[serde(deserialize_with = "id::strict")]
    pub from: Ulid,
    /// Its commit-time timestamp.
    pub timestamp: u64,
    /// Its content.
    pub msg: B,
    /// Who acknowledged it.
    #[serde(deserialize_with = "id::strict_vec")]
    pub acks: Vec<Ulid>,
}

/// A parsed client command (without its envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CNN {id, batch}`: authenticate as account `id`.
    Cnn {
        /// The account.
        id: Ulid,
        /// The session takes the batched forms of `CH_MSG_ACK` and
        /// `CH_MSG_COMMIT` (batching extension, PROTOCOL.md §7.9).
        batch: bool,
    },
    /// `KALIVE {}`: keep the session alive.
    Kalive,
    /// `DCNN {}`: close the session after flushing.
    Dcnn,
    /// `INFO {}`: ask for `SINFO`.
    Info,
    /// `LST_USR {}`: ask for `USR_LST`.
    LstUsr,
    /// `CNN_USR {to}`: exchange `USR_HSK` with `to`.
    CnnUsr {
        /// The other user.
        to: Ulid,
    },
    /// `PV_MSG {to, msg_id, msg}`: a private message.
    PvMsg {
        /// Recipient.
        to: Ulid,
        /// Client-chosen ULID.
        msg_id: Ulid,
        /// Content.
        msg: Body,
    },
    /// `ACK_MSG {from, msg_id}`: acknowledge a private message.
    AckMsg {
        /// The message's sender.
        from: Ulid,
        /// The message.
        msg_id: Ulid,
    },
    /// `CH_NEW {name}`: create a channel.
    ChNew {
        /// Its unique name.
        name: String,
    },
    /// `CH_JOIN {id}`: become a member.
    ChJoin {
        /// The channel.
        id: Ulid,
    },
    /// `CH_LEAVE {id}`: stop being a member.
    ChLeave {
        /// The channel.
        id: Ulid,
    },
    /// `CH_LST {}`: ask for `LST_CH`.
    ChLst,
    /// `CH_LEAD {channel, election}`: stand for election.
    ChLead {
        /// The channel.
        channel: Ulid,
        /// The new election number.
        election: u64,
    },
    /// `CH_VOTE {channel, election, user}`: vote for `user`.
    ChVote {
        /// The channel.
        channel: Ulid,
        /// The election.
        election: u64,
        /// The candidate.
        user: Ulid,
    },
    /// `CH_MSG {id, msg_id, msg}`: send to a channel.
    ChMsg {
        /// The channel.
        id: Ulid,
        /// Client-chosen ULID.
        msg_id: Ulid,
        /// Content.
        msg: Body,
    },
    /// `ACK_CH_MSG {id, ids}`: acknowledge (or confirm a merged) channel message.
    AckChMsg {
        /// The message.
        id: Ulid,
        /// Further messages acknowledged by the same frame, in order
        /// (batching extension, PROTOCOL.md §7.9); usually empty.
        ids: Vec<Ulid>,
    },
    /// `CH_COMMIT {id, acks, ids}`: the leader commits a message.
    ChCommit {
        /// The message.
        id: Ulid,
        /// The users whose acks make the majority.
        acks: Vec<Ulid>,
        /// Further messages committed with the same `acks`, in order
        /// (batching extension, PROTOCOL.md §7.9); usually empty.
        ids: Vec<Ulid>,
    },
    /// `CH_PULL {id, anchor}`: ask for history after `anchor`.
    ChPull {
        /// The channel.
        id: Ulid,
        /// The last message the client has, or nil for the start.
        anchor: Option<Ulid>,
    },
    /// `CH_MERGE {id, msg}`: committed messages the client has and the server may lack.
    ChMerge {
        /// The channel.
        id: Ulid,
        /// The messages.
        msg: Vec<MergedMessage>,
    },
    /// `CH_ACK_REQ {id, users}`: the leader asks for confirmations of a merge.
    ChAckReq {
        /// The merged message.
        id: Ulid,
        /// Whom to ask.
        users: Vec<Ulid>,
    },
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

fn body_of(b: BodyRef<'_>, payload: &Bytes) -> Body {
    Body::from_ref(b, payload)
}

impl Request {
    /// Parses a signed client frame's payload.
    pub fn parse(name: &CommandName, payload: &Bytes) -> Result<Request, ParseFailure> {
        let fail = |error: ProtoError, envelope| ParseFailure { error, envelope };
        check_map(payload).map_err(|e| fail(bad_payload(name.as_str(), e), None))?;
        let envelope: Envelope =
            rmp_serde::from_slice(payload).map_err(|e| fail(bad_payload(name.as_str(), e), None))?;
        let body =
            |e: rmp_serde::decode::Error| fail(bad_payload(name.as_str(), e).with_ref(envelope.nonce), Some(envelope));
        fn de<T: DeserializeOwned>(payload: &[u8]) -> Result<T, rmp_serde::decode::Error> {
            rmp_serde::from_slice(payload)
        }
        let command = match name.as_str() {
            "CNN" => {
                let w: CnnBody = de(payload).map_err(body)?;
                Command::Cnn { id: w.id, batch: w.batch }
            }
            "KALIVE" => Command::Kalive,
            "DCNN" => Command::Dcnn,
            "INFO" => Command::Info,
            "LST_USR" => Command::LstUsr,
            "CNN_USR" => Command::CnnUsr { to: de::<ToBody>(payload).map_err(body)?.to },
            "PV_MSG" => {
                let w: PvMsgBody<BodyRef<'_>> = rmp_serde::from_slice(payload).map_err(body)?;
                Command::PvMsg { to: w.to, msg_id: w.msg_id, msg: body_of(w.msg, payload) }
            }
            "ACK_MSG" => {
                let w: AckMsgBody = de(payload).map_err(body)?;
                Command::AckMsg { from: w.from, msg_id: w.msg_id }
            }
            "CH_NEW" => Command::ChNew { name: de::<ChNewBody>(payload).map_err(body)?.name },
            "CH_JOIN" => Command::ChJoin { id: de::<IdBody>(payload).map_err(body)?.id },
            "CH_LEAVE" => Command::ChLeave { id: de::<IdBody>(payload).map_err(body)?.id },
            "CH_LST" => Command::ChLst,
            "CH_LEAD" => {
                let w: ChLeadBody = de(payload).map_err(body)?;
                Command::ChLead { channel: w.channel, election: w.election }
            }
            "CH_VOTE" => {
                let w: ChVoteBody = de(payload).map_err(body)?;
                Command::ChVote { channel: w.channel, election: w.election, user: w.user }
            }
            "CH_MSG" => {
                let w: ChMsgBody<BodyRef<'_>> = rmp_serde::from_slice(payload).map_err(body)?;
                Command::ChMsg { id: w.id, msg_id: w.msg_id, msg: body_of(w.msg, payload) }
            }
            "ACK_CH_MSG" => {
                let w: AckChMsgBody = de(payload).map_err(body)?;
                Command::AckChMsg { id: w.id, ids: w.ids }
            }
            "CH_COMMIT" => {
                let w: ChCommitBody = de(payload).map_err(body)?;
                Command::ChCommit { id: w.id, acks: w.acks, ids: w.ids }
            }
            "CH_PULL" => {
                let w: ChPullBody = de(payload).map_err(body)?;
                Command::ChPull { id: w.id, anchor: w.anchor }
            }
            "CH_MERGE" => {
                let w: ChMergeBody<BodyRef<'_>> = rmp_serde::from_slice(payload).map_err(body)?;
                let msg = w
                    .msg
                    .into_iter()
                    .map(|m| MergedMessage {
                        id: m.id,
                        from: m.from,
                        timestamp: m.timestamp,
                        msg: body_of(m.msg, payload),
                        acks: m.acks,
                    })
                    .collect();
                Command::ChMerge { id: w.id, msg }
            }
            "CH_ACK_REQ" => {
                let w: ChAckReqBody = de(payload).map_err(body)?;
                Command::ChAckReq { id: w.id, users: w.users }
            }
            other => {
                let e = ProtoError::new(ErrorCode::UnknownCommand, format!("unknown command {other}"));
                return Err(fail(e.with_ref(envelope.nonce), Some(envelope)));
            }
        };
        Ok(Request { envelope, command })
    }

    /// Encodes this request as `(COMMAND, payload)`, for clients.
    pub fn encode(&self) -> (&'static str, Vec<u8>) {
        let c = &self.command;
        let body = match c {
            Command::Kalive | Command::Dcnn | Command::Info | Command::LstUsr | Command::ChLst => {
                Some(Value::Map(vec![]))
            }
            Command::Cnn { id, batch } => named(CnnBody { id: *id, batch: *batch }),
            Command::ChJoin { id } | Command::ChLeave { id } => named(IdBody { id: *id }),
            Command::AckChMsg { id, ids } => named(AckChMsgBody { id: *id, ids: ids.clone() }),
            Command::CnnUsr { to } => named(ToBody { to: *to }),
            Command::PvMsg { to, msg_id, msg } => named(PvMsgBody { to: *to, msg_id: *msg_id, msg }),
            Command::AckMsg { from, msg_id } => named(AckMsgBody { from: *from, msg_id: *msg_id }),
            Command::ChNew { name } => named(ChNewBody { name: name.clone() }),
            Command::ChLead { channel, election } => named(ChLeadBody { channel: *channel, election: *election }),
            Command::ChVote { channel, election, user } => {
                named(ChVoteBody { channel: *channel, election: *election, user: *user })
            }
            Command::ChMsg { id, msg_id, msg } => named(ChMsgBody { id: *id, msg_id: *msg_id, msg }),
            Command::ChCommit { id, acks, ids } => {
                named(ChCommitBody { id: *id, acks: acks.clone(), ids: ids.clone() })
            }
            Command::ChPull { id, anchor } => named(ChPullBody { id: *id, anchor: *anchor }),
            Command::ChMerge { id, msg } => named(ChMergeBody { id: *id, msg: msg.clone() }),
            Command::ChAckReq { id, users } => named(ChAckReqBody { id: *id, users: users.clone() }),
        };
        // Plain structs always encode; bin bodies stay bin.
        let mut map = match body {
            Some(Value::Map(m)) => m,
            _ => Vec::new(),
        };
        map.push((Value::from("nonce"), Value::from(self.envelope.nonce)));
        map.push((Value::from("timestamp"), Value::from(self.envelope.timestamp)));
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &Value::Map(map));
        (c.name(), out)
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

/// A struct as a msgpack map value with named fields.
fn named<T: Serialize>(body: T) -> Option<Value> {
    let bytes = rmp_serde::to_vec_named(&body).ok()?;
    rmpv::decode::read_value(&mut &bytes[..]).ok()
}

impl Command {
    /// The wire name of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Cnn { .. } => "CNN",
            Command::Kalive => "KALIVE",
            Command::Dcnn => "DCNN",
            Command::Info => "INFO",
            Command::LstUsr => "LST_USR",
            Command::CnnUsr { .. } => "CNN_USR",
            Command::PvMsg { .. } => "PV_MSG",
            Command::AckMsg { .. } => "ACK_MSG",
            Command::ChNew { .. } => "CH_NEW",
            Command::ChJoin { .. } => "CH_JOIN",
            Command::ChLeave { .. } => "CH_LEAVE",
            Command::ChLst => "CH_LST",
            Command::ChLead { .. } => "CH_LEAD",
            Command::ChVote { .. } => "CH_VOTE",
            Command::ChMsg { .. } => "CH_MSG",
            Command::AckChMsg { .. } => "ACK_CH_MSG",
            Command::ChCommit { .. } => "CH_COMMIT",
            Command::ChPull { .. } => "CH_PULL",
            Command::ChMerge { .. } => "CH_MERGE",
            Command::ChAckReq { .. } => "CH_ACK_REQ",
        }
    }
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
        roundtrip(Command::Cnn { id: a, batch: false });
        roundtrip(Command::Cnn { id: a, batch: true });
        roundtrip(Command::Kalive);
        roundtrip(Command::Dcnn);
        roundtrip(Command::Info);
        roundtrip(Command::LstUsr);
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
}
