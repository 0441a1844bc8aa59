//! Frames ↔ meaning: typed commands and events, msgpack, `ERR` codes.
//!
//! Pure data and (de)serialization; no state and no I/O.

pub mod body;
pub mod command;
pub mod error;
pub mod event;
pub mod id;
pub mod msgpack;

pub use body::{Body, BodyKind, BodyRef};
pub use command::{Command, Envelope, ParseFailure, Request};
pub use error::{ErrorCode, ProtoError};
pub use event::{Event, Outbound, ServerEvent};
