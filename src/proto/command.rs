//! Client → server commands: their payloads on the wire and their parsed form.
//!
//! Every signed payload carries `nonce` and `timestamp` (PROTOCOL.md §4). The
//! wire structs here are used both to parse (server) and to build (client), so
//! the two sides cannot drift apart. Parsing never copies a message body.

use bytes::Bytes;
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

#[derive(Deserialize)]
struct CnnWire {
    #[serde(deserialize_with = "id::strict")]
    id: Ulid,
    nonce: u64,
    timestamp: u64,
}

#[derive(Deserialize)]
struct ToWire {
    #[serde(deserialize_with = "id::strict")]
    to: Ulid,
}

#[derive(Deserialize)]
struct PvMsgWire<'a> {
    #[serde(deserialize_with = "id::strict")]
    to: Ulid,
    #[serde(deserialize_with = "id::strict")]
    msg_id: Ulid,
    #[serde(borrow)]
    msg: BodyRef<'a>,
}

#[derive(Deserialize)]
struct AckMsgWire {
    #[serde(deserialize_with = "id::strict")]
    from: Ulid,
    #[serde(deserialize_with = "id::strict")]
    msg_id: Ulid,
}

/// A parsed client command (without its envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CNN {id}`: authenticate as account `id`.
    Cnn {
        /// The account.
        id: Ulid,
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
        let body =
            |e: rmp_serde::decode::Error| fail(bad_payload(name.as_str(), e).with_ref(envelope.nonce), Some(envelope));
        let command = match name.as_str() {
            "CNN" => {
                let w: CnnWire = rmp_serde::from_slice(payload).map_err(body)?;
                let _ = (w.nonce, w.timestamp);
                Command::Cnn { id: w.id }
            }
            "KALIVE" => Command::Kalive,
            "DCNN" => Command::Dcnn,
            "INFO" => Command::Info,
            "LST_USR" => Command::LstUsr,
            "CNN_USR" => {
                let w: ToWire = rmp_serde::from_slice(payload).map_err(body)?;
                Command::CnnUsr { to: w.to }
            }
            "PV_MSG" => {
                let w: PvMsgWire<'_> = rmp_serde::from_slice(payload).map_err(body)?;
                Command::PvMsg { to: w.to, msg_id: w.msg_id, msg: Body::from_ref(w.msg, payload) }
            }
            "ACK_MSG" => {
                let w: AckMsgWire = rmp_serde::from_slice(payload).map_err(body)?;
                Command::AckMsg { from: w.from, msg_id: w.msg_id }
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
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a Ulid>,
            #[serde(skip_serializing_if = "Option::is_none")]
            to: Option<&'a Ulid>,
            #[serde(skip_serializing_if = "Option::is_none")]
            from: Option<&'a Ulid>,
            #[serde(skip_serializing_if = "Option::is_none")]
            msg_id: Option<&'a Ulid>,
            #[serde(skip_serializing_if = "Option::is_none")]
            msg: Option<BodyRef<'a>>,
            nonce: u64,
            timestamp: u64,
        }
        let mut out = Out {
            id: None,
            to: None,
            from: None,
            msg_id: None,
            msg: None,
            nonce: self.envelope.nonce,
            timestamp: self.envelope.timestamp,
        };
        let name = self.command.name();
        match &self.command {
            Command::Cnn { id } => out.id = Some(id),
            Command::Kalive | Command::Dcnn | Command::Info | Command::LstUsr => {}
            Command::CnnUsr { to } => out.to = Some(to),
            Command::PvMsg { to, msg_id, msg } => {
                out.to = Some(to);
                out.msg_id = Some(msg_id);
                out.msg = Some(msg.into());
            }
            Command::AckMsg { from, msg_id } => {
                out.from = Some(from);
                out.msg_id = Some(msg_id);
            }
        }
        // Serializing plain structs to a Vec cannot fail.
        (name, rmp_serde::to_vec_named(&out).unwrap_or_default())
    }
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
        roundtrip(Command::Cnn { id: a });
        roundtrip(Command::Kalive);
        roundtrip(Command::Dcnn);
        roundtrip(Command::Info);
        roundtrip(Command::LstUsr);
        roundtrip(Command::CnnUsr { to: a });
        roundtrip(Command::PvMsg { to: a, msg_id: b, msg: Body::text("héllo") });
        roundtrip(Command::PvMsg { to: a, msg_id: b, msg: Body::binary(vec![0u8, 255]) });
        roundtrip(Command::AckMsg { from: a, msg_id: b });
    }

    #[test]
    fn body_is_shared_not_copied() {
        let req = Request {
            envelope: Envelope { nonce: 1, timestamp: 2 },
            command: Command::PvMsg { to: Ulid::nil(), msg_id: Ulid::nil(), msg: Body::text("x".repeat(100)) },
        };
        let (_, payload) = req.encode();
        let payload = Bytes::from(payload);
        let parsed = Request::parse(&CommandName::new(b"PV_MSG").unwrap(), &payload).unwrap();
        let Command::PvMsg { msg, .. } = parsed.command else { panic!("not PV_MSG") };
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
    }
}
