//! Channel commands (PROTOCOL.md §7): membership, election, messages, history.
//! Their payload bodies; the command table in `mod.rs` says how each parses and encodes.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::body::Body;
use crate::id;

#[derive(Serialize, Deserialize)]
pub(super) struct IdBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChNewBody {
    pub(super) name: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChLeadBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) channel: Ulid,
    pub(super) election: u64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChVoteBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) channel: Ulid,
    pub(super) election: u64,
    #[serde(deserialize_with = "id::strict")]
    pub(super) user: Ulid,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChMsgBody<B> {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
    #[serde(deserialize_with = "id::strict")]
    pub(super) msg_id: Ulid,
    pub(super) msg: B,
}

/// `ACK_CH_MSG`: `ids` is the batching extension (PROTOCOL.md §7.9).
#[derive(Serialize, Deserialize)]
pub(super) struct AckChMsgBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
    #[serde(default, deserialize_with = "id::strict_vec", skip_serializing_if = "Vec::is_empty")]
    pub(super) ids: Vec<Ulid>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChCommitBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
    #[serde(deserialize_with = "id::strict_vec")]
    pub(super) acks: Vec<Ulid>,
    /// Batching extension (PROTOCOL.md §7.9): further messages committed with the same acks.
    #[serde(default, deserialize_with = "id::strict_vec", skip_serializing_if = "Vec::is_empty")]
    pub(super) ids: Vec<Ulid>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChPullBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
    /// nil (or absent) = from the start.
    #[serde(default, deserialize_with = "id::strict_opt")]
    pub(super) anchor: Option<Ulid>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChMergeBody<B> {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
    pub(super) msg: Vec<MergedMessage<B>>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChAckReqBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
    #[serde(deserialize_with = "id::strict_vec")]
    pub(super) users: Vec<Ulid>,
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
