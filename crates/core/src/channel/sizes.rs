//! Encoded sizes a channel plans with: what a history entry and a batched
//! frame take, so everything it sends fits `max_payload`.

/// Bytes a one-message `CH_APPEND` adds to the relayed `CH_MSG` fields, not
/// counting its acks: `anchor`, `messages`, `acks` and `more` keys and headers.
pub(super) const APPEND_OVERHEAD: usize = 96;
/// Bytes one ack adds to a history entry (a 26-character id as msgpack str).
pub(super) const ACK_BYTES: usize = 27;
/// How many message ids fit a batched frame (PROTOCOL.md §7.9) beside `acks`
/// user ids, within `max_payload`.
pub fn ids_per_frame(max_payload: usize, acks: usize) -> usize {
    (max_payload.saturating_sub(APPEND_OVERHEAD + ACK_BYTES * acks) / ACK_BYTES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_per_frame_fills_the_payload_and_never_drops_to_zero() {
        assert_eq!(ids_per_frame(96 + 27 * 12, 2), 10);
        assert_eq!(ids_per_frame(96 + 27 * 12 + 26, 2), 10, "a partial id does not fit");
        assert_eq!(ids_per_frame(65_536, 0), (65_536 - 96) / 27);
        // Acks that fill the frame alone still leave room for one id.
        assert_eq!(ids_per_frame(100, 10), 1);
        assert_eq!(ids_per_frame(0, 0), 1);
    }
}
