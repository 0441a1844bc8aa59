//! sigil-proto: what any sigil client or server needs to speak the protocol.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`wire`] | bytes ↔ frames: the frame codec, HMAC-SHA3-512 tags (single and multi-lane) |
//! | [`command`] | client → server commands: the one command table, payloads, parsing and encoding |
//! | [`event`] | server → client events: the one event table, payloads, [`Outbound`] frames |
//! | [`error`] | `ERR` codes and [`ProtoError`] |
//! | [`body`], [`id`], [`msgpack`] | message bodies, strict ULIDs, msgpack shape checks |
//! | [`quorum`] | the strict-majority rule elections and commits rest on |
//!
//! Pure data and (de)serialization: no state, no I/O, no clock. The normative
//! protocol is `spec/PROTOCOL.md`.

pub mod body;
pub mod command;
pub mod error;
pub mod event;
pub mod id;
pub mod msgpack;
pub mod quorum;
pub mod wire;

pub use body::{Body, BodyKind, BodyRef};
pub use command::{Command, Envelope, ParseFailure, Request};
pub use error::{ErrorCode, ProtoError};
pub use event::{Event, Outbound, ServerEvent};

/// Longest account name, in bytes.
pub const MAX_NAME_LEN: usize = 32;
