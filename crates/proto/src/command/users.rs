//! User commands (PROTOCOL.md §6.1): `LST_USR`, `CNN_USR`.
//! Their payload bodies; the command table in `mod.rs` says how each parses and encodes.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::id;

/// `LST_USR`'s optional field.
#[derive(Serialize, Deserialize)]
pub(super) struct LstUsrBody {
    #[serde(default)]
    pub(super) all: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ToBody {
    #[serde(deserialize_with = "id::strict")]
    pub(super) to: Ulid,
}
