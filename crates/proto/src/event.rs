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
    /// List entries (`LST_USR`, `CH_LST`, `CH_WHO`) a session may ask for
    /// per second, four seconds' worth at once (0: not announced).
    #[serde(default)]
    pub list_entries_per_s: u64,
    /// Sign-ins per minute per account, a minute's worth at once (0: not announced).
    #[serde(default)]
    pub cnn_per_minute: u64,
    /// Bytes of channel content awaiting commit one account may have sent,
    /// over all its channels (0: not announced).
    #[serde(default)]
    pub max_pending_bytes_per_account: u64,
    /// Protocol extensions this server speaks: `"batch"` (PROTOCOL.md §7.9),
    /// `"bind"` (§7.10).
    #[serde(default)]
    pub features: Vec<String>,
}

/// The extension of batched acks and commits (PROTOCOL.md §7.9), as named in `SINFO.features`.
pub const FEATURE_BATCH: &str = "batch";

/// The server frame binding extension (PROTOCOL.md §7.10), as named in `SINFO.features`.
pub const FEATURE_BIND: &str = "bind";

/// `UCNN` / `UDCNN` payload: a user came online / went offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    /// The account id.
    pub id: Ulid,
    /// The account name.
    pub name: String,
    /// Only in a session's own `UCNN`, and only true: the server took the
    /// session's `bind` and signs it with the derived key (PROTOCOL.md §7.10).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bind: bool,
}

/// `UCNN`: a user connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ucnn(pub UserPresence);

/// `UDCNN`: a user disconnected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Udcnn(pub UserPresence);

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

/// `CH_MEMBERS`: a channel's members, in one or more pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChMembers {
    /// The channel.
    pub id: Ulid,
    /// Members (this page), each with its name and `"online"` or `"offline"`.
    pub members: Vec<UserEntry>,
    /// True when another `CH_MEMBERS` page follows.
    #[serde(default)]
    pub more: bool,
}

/// `USR_ADD`: an account was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UsrAdd(pub UserEntry);

/// `USR_RMD`: an account was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrRmd {
    /// The removed account.
    pub id: Ulid,
}

/// `USR_HSK`: a handshake with another user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrHsk {
    /// The other user.
    pub id: Ulid,
}

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

/// `MSG_ACK`: the recipient acknowledged a private message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgAck {
    /// The acknowledged message.
    pub msg_id: Ulid,
    /// Who acknowledged it.
    pub by: Ulid,
}

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

/// `CH_ULEAVE`: a user left a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChUleave(pub ChannelUser);

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

/// `CH_MSG_CONFIRM`: confirm (with `ACK_CH_MSG`) that a merged message was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChMsgConfirm {
    /// The channel.
    pub id: Ulid,
    /// The message to confirm.
    pub message: Ulid,
}

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

/// A server frame whose payload does not match its command.
#[derive(Debug, thiserror::Error)]
#[error("malformed {command} payload: {reason}")]
pub struct EventError {
    /// The command.
    pub command: String,
    /// What was wrong.
    pub reason: String,
}

/// Declares every server event once: the [`ServerEvent`] variant and its
/// payload type, the wire name, and the type the server encodes it from.
macro_rules! event_table {
    ($( $variant:ident($payload:ty) = $name:literal, wire $wire:ty; )*) => {
        $( impl Event for $wire {
            const COMMAND: &'static str = $name;
        } )*

        /// Every event name, in the order of the table.
        pub const EVENTS: &[&str] = &[$($name),*];

        /// A decoded server frame, for clients.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum ServerEvent {
            $( #[doc = concat!("`", $name, "`.")] $variant($payload), )*
            /// A command this client version does not know (forward compatibility).
            Other {
                /// Its name.
                command: String,
                /// Its payload.
                payload: Bytes,
            },
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
                    $( $name => ServerEvent::$variant(de::<$payload>(command, payload)?), )*
                    _ => ServerEvent::Other { command: command.to_owned(), payload: payload.clone() },
                })
            }
        }
    };
}

event_table! {
    Sinfo(Sinfo) = "SINFO", wire Sinfo;
    Ucnn(UserPresence) = "UCNN", wire Ucnn;
    Udcnn(UserPresence) = "UDCNN", wire Udcnn;
    UsrLst(UsrLst) = "USR_LST", wire UsrLst;
    UsrAdd(UserEntry) = "USR_ADD", wire UsrAdd;
    UsrRmd(UsrRmd) = "USR_RMD", wire UsrRmd;
    UsrHsk(UsrHsk) = "USR_HSK", wire UsrHsk;
    Msg(Msg) = "MSG", wire Msg;
    MsgAck(MsgAck) = "MSG_ACK", wire MsgAck;
    ChUjoin(ChannelUser) = "CH_UJOIN", wire ChUjoin;
    ChUleave(ChannelUser) = "CH_ULEAVE", wire ChUleave;
    ChStatus(ChStatus) = "CH_STATUS", wire ChStatus;
    LstCh(LstCh) = "LST_CH", wire LstCh;
    ChMembers(ChMembers) = "CH_MEMBERS", wire ChMembers;
    ChVote(ChVoteRequest) = "CH_VOTE", wire ChVoteRequest;
    ChElected(ChElected) = "CH_ELECTED", wire ChElected;
    ChMsg(ChMsg) = "CH_MSG", wire ChMsg;
    ChMsgAck(ChMsgAck) = "CH_MSG_ACK", wire ChMsgAck;
    ChMsgCommit(ChMsgCommit) = "CH_MSG_COMMIT", wire ChMsgCommit;
    ChAppend(ChAppend) = "CH_APPEND", wire ChAppend;
    ChMsgConfirm(ChMsgConfirm) = "CH_MSG_CONFIRM", wire ChMsgConfirm;
    Err(ErrPayload) = "ERR", wire ErrPayload;
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
