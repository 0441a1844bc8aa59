//! Lists too long for one frame: `USR_LST`, `LST_CH` and `CH_APPEND` pages
//! that each fit `max_payload` (PROTOCOL.md §6.3, §7.2, §7.5). Pure arithmetic
//! on encoded sizes; knows nothing of who asked.

use sigil_proto::event::{ChAppend, HistoryEntry, Outbound};
use ulid::Ulid;

/// Longest channel name.
pub const MAX_CHANNEL_NAME_LEN: usize = 64;

/// Largest msgpack encoding of one `USR_LST` entry: map header, three keys,
/// a 26-character id, `"online"` and a name of at most 32 bytes.
pub(super) const USER_ENTRY_MAX: usize = 1 + (3 + 28) + (7 + 8) + (5 + 2 + sigil_proto::MAX_NAME_LEN);

/// Largest msgpack encoding of one `LST_CH` entry (name ≤ 64 bytes, leader id or nil).
pub(super) const CHANNEL_ENTRY_MAX: usize = 1 + (3 + 28) + (5 + 2 + MAX_CHANNEL_NAME_LEN) + (7 + 28) + (7 + 10);

/// How many list entries of at most `entry_max` bytes fit one frame.
pub(super) fn per_page(max_payload: usize, entry_max: usize) -> usize {
    (max_payload.saturating_sub(32) / entry_max).max(1)
}

/// Splits a list into frames of at most `per_page` items; all but the last
/// say `more`. An empty list is one empty page.
pub(super) fn pages<T>(
    items: Vec<T>,
    per_page: usize,
    mut frame: impl FnMut(Vec<T>, bool) -> Outbound,
) -> Vec<Outbound> {
    let mut out = Vec::new();
    let mut items = items.into_iter().peekable();
    loop {
        let page: Vec<T> = items.by_ref().take(per_page).collect();
        let more = items.peek().is_some();
        out.push(frame(page, more));
        if !more {
            return out;
        }
    }
}

/// A `CH_APPEND` page within `max_payload`: entries that do not fit are
/// left for the next pull (`more` is then true).
pub(super) fn append_page(
    max_payload: usize,
    channel: Ulid,
    anchor: Option<Ulid>,
    mut entries: Vec<HistoryEntry>,
    mut more: bool,
) -> Outbound {
    loop {
        let frame = Outbound::event(&ChAppend { id: channel, anchor, messages: entries.clone(), more });
        if frame.payload.len() <= max_payload || entries.len() <= 1 {
            return frame;
        }
        let keep = (entries.len() / 2).max(1);
        entries.truncate(keep);
        more = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::event::{UserEntry, UsrLst};
    use sigil_proto::Body;

    #[test]
    fn pages_split_a_list_and_mark_all_but_the_last() {
        let frames = pages((0..5).collect(), 2, |page: Vec<i32>, more| {
            Outbound::event(&UsrLst {
                users: page
                    .iter()
                    .map(|i| UserEntry { id: Ulid::from(*i as u128), status: "online".into(), name: i.to_string() })
                    .collect(),
                more,
            })
        });
        let decoded: Vec<(usize, bool)> = frames
            .iter()
            .map(|f| {
                let l: UsrLst = rmp_serde::from_slice(&f.payload).expect("USR_LST");
                (l.users.len(), l.more)
            })
            .collect();
        assert_eq!(decoded, vec![(2, true), (2, true), (1, false)]);
        assert_eq!(pages(Vec::<i32>::new(), 2, |_, more| Outbound::event(&UsrLst { users: vec![], more })).len(), 1);
    }

    #[test]
    fn an_append_page_fits_max_payload_or_holds_one_entry() {
        let entry = |i: u128| HistoryEntry {
            id: Ulid::from(i),
            from: Ulid::from(1u128),
            msg: Body::binary(vec![0u8; 300]),
            timestamp: 5,
            acks: vec![],
        };
        let frame = append_page(1000, Ulid::nil(), None, (1..=10).map(entry).collect(), false);
        let page: ChAppend = rmp_serde::from_slice(&frame.payload).expect("CH_APPEND");
        assert!(frame.payload.len() <= 1000 && page.more && !page.messages.is_empty());
        let one = append_page(10, Ulid::nil(), None, vec![entry(1)], false);
        let page: ChAppend = rmp_serde::from_slice(&one.payload).expect("CH_APPEND");
        assert_eq!(page.messages.len(), 1, "a single entry goes out even when larger");
    }

    #[test]
    fn a_full_user_entry_fits_its_bound() {
        let e = UserEntry { id: Ulid::from(u128::MAX), status: "online".into(), name: "n".repeat(32) };
        assert!(rmp_serde::to_vec_named(&e).expect("encodes").len() <= USER_ENTRY_MAX);
    }
}
