//! Bytes ↔ frames: the frame codec and frame MACs.
//!
//! Nothing here knows what a command means; the rest of the crate gives frames meaning.

pub mod codec;
pub mod mac;
pub mod multimac;

pub use codec::{encode_frame, frame_extent, CommandName, Frame, FrameCodec, FrameError, OutFrame, TAG_LEN};
pub use mac::{sign_many, FrameMac, KeyError, SecretKey, KEY_LEN, SERVER_KEY_LABEL};
