//! sigil-core: the relay's protocol logic as pure state machines.
//!
//! No tokio, no sockets, no clock, no randomness, no store: time is an
//! argument, output is a list of effects the shell (`sigil-server`) carries out.
//! See `ARCHITECTURE.md` at the repository root for the map.

pub mod batch;
pub mod channel;
pub mod config;
pub mod rate;
pub mod relay;
pub mod replay;
pub mod session;

pub use batch::Batch;
pub use channel::{durable_marks, Channel, ChannelEffect, ChannelLimits, ChannelSnapshot, StoreOp};
pub use config::Limits;
pub use relay::{ConnId, Effect, IdSource, Input, PullRequest, Relay};
pub use replay::{ReplayError, ReplayGuard};
pub use session::{AccountKey, Session, SessionOutput};
