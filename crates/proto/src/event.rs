//! Server → client frames: their payloads, how the server encodes them, and how
//! a client decodes them.
//!
//! The server encodes each event once into an [`Outbound`] whose payload is a
//! shared `Bytes`; fan-out clones the handle, never the bytes. Fields the
//! protocol lists as possibly nil are always present (as nil when empty).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::body::Body;
use super::error::{ErrorCode, ProtoError};
use super::msgpack::check_map;

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 0;

/// One encoded server frame, ready to be signed and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Command name.
    pub command: &'static str,
    /// Encoded msgpack payload, shared across recipients.
    pub payload: Bytes,
    /// Whether the writer signs it with the recipient's key. False only for
    /// frames to a connection that has not authenticated.
    pub signed: bool,
}

impl Outbound {
    /// Encodes an event, to be signed.
    pub fn event<E: Event>(e: &E) -> Self {
        // Serializing these plain structs cannot fail.
        let payload = rmp_serde::to_vec_named(e).unwrap_or_default();
        Self { command: E::COMMAND, payload: Bytes::from(payload), signed: true }
    }

    /// The same frame, marked to go unsigned.
    pub fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }

    /// An `ERR` frame.
    pub fn error(e: &ProtoError) -> Self {
        Self::event(&ErrPayload::from(e))
    }
}

/// A server → client payload type.
pub trait Event: Serialize + DeserializeOwned {
    /// The command name it travels under.
    const COMMAND: &'static str;
}

macro_rules! event {
    ($ty:ident, $name:literal) => {
        impl Event for $ty {
            const COMMAND: &'static str = $name;
        }
    };
}

/// `SINFO`: the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sinfo {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The operator-chosen server name.
    pub server_name: String,
    /// The server software version.
    pub version: String,
    /// Idle timeout in seconds.
    pub timeout_s: u64,
    /// Time allowed for CNN after connecting, in seconds.
    pub cnn_timeout_s: u64,
    /// Accepted clock skew in seconds.
    pub skew_s: u64,
    /// Largest accepted payload in bytes.
    pub max_payload: u64,
    /// Online members a channel needs to be healthy.
    pub min_online: u64,
    /// Protocol extensions this server speaks (PROTOCOL.md §7.9): `"batch"`.
    #[serde(default)]
    pub features: Vec<String>,
}

/// The extension of batched acks and commits (PROTOCOL.md §7.9), as named in `SINFO.features`.
pub const FEATURE_BATCH: &str = "batch";
event!(Sinfo, "SINFO");

/// `UCNN` / `UDCNN` payload: a user came online / went offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    /// The account id.
    pub id: Ulid,
    /// The account name.
    pub name: String,
}

/// `UCNN`: a user connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ucnn(pub UserPresence);
event!(Ucnn, "UCNN");

/// `UDCNN`: a user disconnected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Udcnn(pub UserPresence);
event!(Udcnn, "UDCNN");

/// One user in `USR_LST` / `USR_ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// The account id.
    pub id: Ulid,
    /// `"online"` or `"offline"`.
    pub status: String,
    /// The account name.
    pub name: String,
}

/// `USR_LST`: the connected users, in one or more pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrLst {
    /// Connected users (this page).
    pub users: Vec<UserEntry>,
    /// True when another `USR_LST` page follows (the list did not fit `max_payload`).
    #[serde(default)]
    pub more: bool,
}
event!(UsrLst, "USR_LST");

/// `USR_ADD`: an account was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UsrAdd(pub UserEntry);
event!(UsrAdd, "USR_ADD");

/// `USR_RMD`: an account was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrRmd {
    /// The removed account.
    pub id: Ulid,
}
event!(UsrRmd, "USR_RMD");

/// `USR_HSK`: a handshake with another user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrHsk {
    /// The other user.
    pub id: Ulid,
}
event!(UsrHsk, "USR_HSK");

/// `MSG`: a private message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    /// The sender.
    pub from: Ulid,
    /// The sender's message id.
    pub msg_id: Ulid,
    /// Content, unchanged.
    pub msg: Body,
    /// Server time of relay, unix seconds.
    pub timestamp: u64,
}
event!(Msg, "MSG");

/// `MSG_ACK`: the recipient acknowledged a private message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgAck {
    /// The acknowledged message.
    pub msg_id: Ulid,
    /// Who acknowledged it.
    pub by: Ulid,
}
event!(MsgAck, "MSG_ACK");

/// `CH_UJOIN` / `CH_ULEAVE` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelUser {
    /// The channel.
    pub channel: Ulid,
    /// The user who joined or left.
    pub user: Ulid,
}

/// `CH_UJOIN`: a user joined a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChUjoin(pub ChannelUser);
event!(ChUjoin, "CH_UJOIN");

/// `CH_ULEAVE`: a user left a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChUleave(pub ChannelUser);
event!(ChUleave, "CH_ULEAVE");

/// `CH_STATUS`: a channel's leader, health, election and online count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChStatus {
    /// The channel.
    pub id: Ulid,
    /// Its name.
    pub name: String,
    /// Its leader, nil when it has none.
    pub leader: Option<Ulid>,
    /// `"healthy"` or `"unhealthy"`.
    pub status: String,
    /// The current election number (0 before the first).
    pub election: u64,
    /// Online members.
    pub online: u64,
}
event!(ChStatus, "CH_STATUS");

/// One channel in `LST_CH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    /// The channel.
    pub id: Ulid,
    /// Its name.
    pub name: String,
    /// Its leader, nil when it has none.
    pub leader: Option<Ulid>,
    /// `"healthy"` or `"unhealthy"`.
    pub status: String,
}

/// `LST_CH`: every channel, in one or more pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LstCh {
    /// Channels (this page).
    pub channels: Vec<ChannelEntry>,
    /// True when another `LST_CH` page follows.
    #[serde(default)]
    pub more: bool,
}
event!(LstCh, "LST_CH");

/// `CH_VOTE` (server → client): a candidate asks for votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChVoteRequest {
    /// The channel.
    pub channel: Ulid,
    /// The election.
    pub election: u64,
    /// The candidate.
    pub user: Ulid,
}
event!(ChVoteRequest, "CH_VOTE");

/// `CH_ELECTED`: an election chose a leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChElected {
    /// The channel.
    pub channel: Ulid,
    /// The election.
    pub election: u64,
    /// The new leader.
    pub leader: Ulid,
}
event!(ChElected, "CH_ELECTED");

/// `CH_MSG` (server → client): a channel message, pending until committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChMsg {
    /// The channel.
    pub id: Ulid,
    /// The message.
    pub msg_id: Ulid,
    /// Content, unchanged.
    pub msg: Body,
    /// The sender.
    pub from: Ulid,
    /// Server time of relay, unix seconds.
    pub timestamp: u64,
    /// How many members it went to (the sender included): a commit needs
    /// acks from more than half of them. An extension of the seed's fields.
    #[serde(default)]
    pub recipients: u64,
}
event!(ChMsg, "CH_MSG");

/// `CH_MSG_ACK`: a recipient acknowledged a channel message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChMsgAck {
    /// The message.
    pub id: Ulid,
    /// Who acknowledged it.
    pub user: Ulid,
    /// Every ack recorded so far, when the server replays them to a newly
    /// elected leader in one frame (`user` is then one of them); empty
    /// otherwise. An extension of the seed's fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Ulid>,
    /// Further messages `user` acknowledged in the same frame (batching
    /// extension, PROTOCOL.md §7.9: only to sessions that asked for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Ulid>,
}
event!(ChMsgAck, "CH_MSG_ACK");

/// `CH_MSG_COMMIT`: a message is durably in the channel's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChMsgCommit {
    /// The message.
    pub id: Ulid,
    /// The channel.
    pub channel: Ulid,
    /// The acks the commit rests on.
    pub acks: Vec<Ulid>,
    /// Further messages committed right after `id` with the same `acks`, in
    /// commit order (batching extension, PROTOCOL.md §7.9: only to sessions
    /// that asked for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Ulid>,
}
event!(ChMsgCommit, "CH_MSG_COMMIT");

/// One committed message in `CH_APPEND`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The message.
    pub id: Ulid,
    /// Its sender.
    pub from: Ulid,
    /// Content.
    pub msg: Body,
    /// Server time of relay.
    pub timestamp: u64,
    /// The acks its commit rests on.
    pub acks: Vec<Ulid>,
}

/// `CH_APPEND`: committed history after `anchor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChAppend {
    /// The channel.
    pub id: Ulid,
    /// The message these follow; nil for the start of history.
    pub anchor: Option<Ulid>,
    /// Messages in commit order.
    pub messages: Vec<HistoryEntry>,
    /// True when more history follows this page.
    pub more: bool,
}
event!(ChAppend, "CH_APPEND");

/// `CH_MSG_CONFIRM`: confirm (with `ACK_CH_MSG`) that a merged message was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChMsgConfirm {
    /// The channel.
    pub id: Ulid,
    /// The message to confirm.
    pub message: Ulid,
}
event!(ChMsgConfirm, "CH_MSG_CONFIRM");

/// `ERR`: an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrPayload {
    /// The snake_case code.
    pub code: String,
    /// Human-readable text.
    pub reason: String,
    /// Nonce of the command that caused it.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub nonce_ref: Option<u64>,
    /// The message an asynchronous error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<Ulid>,
}
event!(ErrPayload, "ERR");

/// Longest `reason` sent: reasons may quote client input, and every server
/// frame must fit `max_payload`.
pub const MAX_REASON_LEN: usize = 256;

impl From<&ProtoError> for ErrPayload {
    fn from(e: &ProtoError) -> Self {
        let mut reason = e.reason.to_string();
        if reason.len() > MAX_REASON_LEN {
            let mut cut = MAX_REASON_LEN;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Self { code: e.code.as_str().to_owned(), reason, nonce_ref: e.nonce_ref, msg_id: e.msg_id }
    }
}

impl ErrPayload {
    /// The code as an enum, if it is one this crate knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}

/// A decoded server frame, for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// `SINFO`.
    Sinfo(Sinfo),
    /// `UCNN`.
    Ucnn(UserPresence),
    /// `UDCNN`.
    Udcnn(UserPresence),
    /// `USR_LST`.
    UsrLst(UsrLst),
    /// `USR_ADD`.
    UsrAdd(UserEntry),
    /// `USR_RMD`.
    UsrRmd(UsrRmd),
    /// `USR_HSK`.
    UsrHsk(UsrHsk),
    /// `MSG`.
    Msg(Msg),
    /// `MSG_ACK`.
    MsgAck(MsgAck),
    /// `CH_UJOIN`.
    ChUjoin(ChannelUser),
    /// `CH_ULEAVE`.
    ChUleave(ChannelUser),
    /// `CH_STATUS`.
    ChStatus(ChStatus),
    /// `LST_CH`.
    LstCh(LstCh),
    /// `CH_VOTE`.
    ChVote(ChVoteRequest),
    /// `CH_ELECTED`.
    ChElected(ChElected),
    /// `CH_MSG`.
    ChMsg(ChMsg),
    /// `CH_MSG_ACK`.
    ChMsgAck(ChMsgAck),
    /// `CH_MSG_COMMIT`.
    ChMsgCommit(ChMsgCommit),
    /// `CH_APPEND`.
    ChAppend(ChAppend),
    /// `CH_MSG_CONFIRM`.
    ChMsgConfirm(ChMsgConfirm),
    /// `ERR`.
    Err(ErrPayload),
    /// A command this client version does not know (forward compatibility).
    Other {
        /// Its name.
        command: String,
        /// Its payload.
        payload: Bytes,
    },
}

/// A server frame whose payload does not match its command.
#[derive(Debug, thiserror::Error)]
#[error("malformed {command} payload: {reason}")]
pub struct EventError {
    /// The command.
    pub command: String,
    /// What was wrong.
    pub reason: String,
}

impl ServerEvent {
    /// Decodes a server frame's payload.
    pub fn decode(command: &str, payload: &Bytes) -> Result<Self, EventError> {
        fn de<T: DeserializeOwned>(command: &str, payload: &[u8]) -> Result<T, EventError> {
            check_map(payload)
                .map_err(|e| e.to_string())
                .and_then(|()| rmp_serde::from_slice(payload).map_err(|e| e.to_string()))
                .map_err(|reason| EventError { command: command.to_owned(), reason })
        }
        Ok(match command {
            "SINFO" => ServerEvent::Sinfo(de(command, payload)?),
            "UCNN" => ServerEvent::Ucnn(de(command, payload)?),
            "UDCNN" => ServerEvent::Udcnn(de(command, payload)?),
            "USR_LST" => ServerEvent::UsrLst(de(command, payload)?),
            "USR_ADD" => ServerEvent::UsrAdd(de(command, payload)?),
            "USR_RMD" => ServerEvent::UsrRmd(de(command, payload)?),
            "USR_HSK" => ServerEvent::UsrHsk(de(command, payload)?),
            "MSG" => ServerEvent::Msg(de(command, payload)?),
            "MSG_ACK" => ServerEvent::MsgAck(de(command, payload)?),
            "CH_UJOIN" => ServerEvent::ChUjoin(de(command, payload)?),
            "CH_ULEAVE" => ServerEvent::ChUleave(de(command, payload)?),
            "CH_STATUS" => ServerEvent::ChStatus(de(command, payload)?),
            "LST_CH" => ServerEvent::LstCh(de(command, payload)?),
            "CH_VOTE" => ServerEvent::ChVote(de(command, payload)?),
            "CH_ELECTED" => ServerEvent::ChElected(de(command, payload)?),
            "CH_MSG" => ServerEvent::ChMsg(de(command, payload)?),
            "CH_MSG_ACK" => ServerEvent::ChMsgAck(de(command, payload)?),
            "CH_MSG_COMMIT" => ServerEvent::ChMsgCommit(de(command, payload)?),
            "CH_APPEND" => ServerEvent::ChAppend(de(command, payload)?),
            "CH_MSG_CONFIRM" => ServerEvent::ChMsgConfirm(de(command, payload)?),
            "ERR" => ServerEvent::Err(de(command, payload)?),
            _ => ServerEvent::Other { command: command.to_owned(), payload: payload.clone() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let e = ProtoError::new(ErrorCode::BadPayload, "é".repeat(1000));
        let p = ErrPayload::from(&e);
        assert!(p.reason.len() <= MAX_REASON_LEN && p.reason.len() >= MAX_REASON_LEN - 1);
        assert!(p.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn absent_ref_and_msg_id_are_omitted() {
        let bytes = Outbound::error(&ProtoError::new(ErrorCode::Timeout, "x")).payload;
        let v: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(v, serde_json::json!({"code": "timeout", "reason": "x"}));
    }
}
