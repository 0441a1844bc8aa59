//! Bytes ↔ frames: the frame codec, frame MACs and the replay window.
//!
//! Nothing here knows what a command means; `proto` gives frames meaning.

pub mod codec;
pub mod mac;
pub mod multimac;
pub mod replay;

pub use codec::{encode_frame, CommandName, Frame, FrameCodec, FrameError, OutFrame, TAG_LEN};
pub use mac::{sign_many, FrameMac, KeyError, SecretKey, KEY_LEN};
pub use replay::{ReplayError, ReplayGuard};
