//! Session commands (PROTOCOL.md §3): `CNN`, `KALIVE`, `DCNN`, `INFO`.
//! Their payload bodies; the command table in `mod.rs` says how each parses and encodes.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::id;

#[derive(Serialize, Deserialize)]
pub(super) struct CnnBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) id: Ulid,
    /// Batching extension (PROTOCOL.md §7.9): this session takes batched frames.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) batch: bool,
    /// Server frame binding (PROTOCOL.md §7.10): sign this session's frames
    /// with the key derived from this `CNN`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) bind: bool,
}
