//! Where the relay's output goes: connection-addressed frames straight to
//! the effects, user-addressed channel output through [`Presence::conn_of`]
//! (the one place a user becomes a connection), and channel acks through the
//! [`AckGatherer`]. A relay that shares users with other nodes changes
//! `conn_of`'s answer, not this routing.

use sigil_proto::Outbound;

use super::acks::AckGatherer;
use super::presence::Presence;
use super::types::{ConnId, Effect};
use crate::channel::ChannelEffect;

/// The relay's output for one step, with what routing needs to know.
pub(super) struct Outbox<'a> {
    pub(super) presence: &'a Presence,
    acks: &'a mut AckGatherer,
    max_payload: usize,
    pub(super) out: &'a mut Vec<Effect>,
}

impl<'a> Outbox<'a> {
    /// Output into `out`, routed with `presence`, acks gathered in `acks`.
    pub(super) fn new(
        presence: &'a Presence,
        acks: &'a mut AckGatherer,
        max_payload: usize,
        out: &'a mut Vec<Effect>,
    ) -> Self {
        Self { presence, acks, max_payload, out }
    }

    /// A frame for a connection.
    pub(super) fn send(&mut self, conn: ConnId, frame: Outbound) {
        self.out.push(Effect::Send { conn, frame });
    }

    /// Turns user-addressed channel output into connection-addressed effects.
    /// Users not online here are skipped: what they missed, they pull.
    pub(super) fn route(&mut self, effects: &mut Vec<ChannelEffect>) {
        for effect in effects.drain(..) {
            match effect {
                ChannelEffect::Send { to, frame } => {
                    if let Some(conn) = self.presence.conn_of(&to) {
                        self.out.push(Effect::Send { conn, frame });
                    }
                }
                ChannelEffect::AckNote { to, msg_id, user } => {
                    // Bounded: a shell that never goes idle still gets them out.
                    if let Some(conn) = self.presence.conn_of(&to) {
                        if self.acks.note(conn, msg_id, user) {
                            self.flush_acks();
                        }
                    }
                }
                ChannelEffect::SendBatch { to, batch } => {
                    let Some(conn) = self.presence.conn_of(&to) else { continue };
                    if self.presence.is_batching(conn) {
                        self.out.push(Effect::Send { conn, frame: batch.batched().clone() });
                    } else {
                        let singles = batch.singles().iter().map(|frame| Effect::Send { conn, frame: frame.clone() });
                        self.out.extend(singles);
                    }
                }
                ChannelEffect::Store(op) => self.out.push(Effect::Store(op)),
            }
        }
    }

    /// Sends the gathered channel acks (see [`AckGatherer`]).
    pub(super) fn flush_acks(&mut self) {
        let presence = self.presence;
        let frames = self.acks.flush(self.max_payload, |c| presence.is_open(c), |c| presence.is_batching(c));
        self.out.extend(frames.into_iter().map(|(conn, frame)| Effect::Send { conn, frame }));
    }
}
