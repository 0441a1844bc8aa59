//! Private messages (PROTOCOL.md §6.1–6.2): `PV_MSG`, `ACK_MSG`.
//! Their payload bodies; the command table in `mod.rs` says how each parses and encodes.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::id;

#[derive(Serialize, Deserialize)]
pub(super) struct PvMsgBody<B> {
    #[serde(deserialize_with = "id::strict")]
    pub(super) to: Ulid,
    #[serde(deserialize_with = "id::strict")]
    pub(super) msg_id: Ulid,
    pub(super) msg: B,
}

#[derive(Serialize, Deserialize)]
pub(super) struct AckMsgBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) from: Ulid,
    #[serde(deserialize_with = "id::strict")]
    pub(super) msg_id: Ulid,
}
