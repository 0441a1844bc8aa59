//! The pure core: session and relay state machines. No tokio, no sockets, no
//! clock: time is an argument, output is a list of effects.

pub mod batch;
pub mod channel;
pub mod config;
pub mod quorum;
pub mod rate;
pub mod relay;
pub mod session;

pub use batch::Batch;
pub use channel::{durable_marks, Channel, ChannelEffect, ChannelLimits, ChannelSnapshot, StoreOp};
pub use config::Limits;
pub use relay::{ConnId, Effect, Input, PullRequest, Relay};
pub use session::{AccountKey, Session, SessionOutput};
