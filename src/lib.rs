//! sigil: a relay server for a small, strict, signed chat protocol over raw TCP.
//!
//! # Layout
//!
//! Data flows one way: socket → `wire` → `proto` → `core` → effects → `server` → socket.
//!
//! | module | owns | must not |
//! | --- | --- | --- |
//! | [`wire`] | frame codec, HMAC-SHA3-512 tags, replay window | know what a command means |
//! | [`proto`] | typed commands and events, msgpack, `ERR` codes | hold state or do I/O |
//! | [`core`] | `Session` (one connection) and `Relay` (everyone) state machines | touch sockets, tasks or clocks |
//! | [`server`] | listener, reader/writer tasks, the hub, shutdown | decide protocol outcomes |
//! | [`store`] | SQLite: accounts | be called from the core |
//! | [`client`] | client library, `frame`/`decode` helpers, terminal client | bypass `proto` |
//!
//! The normative protocol is `spec/PROTOCOL.md`.

pub mod bench;
pub mod client;
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod proto;
pub mod server;
pub mod store;
pub mod wire;
