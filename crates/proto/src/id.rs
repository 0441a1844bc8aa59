//! Strict parsing of ids: 26 Crockford base32 characters whose value fits 128 bits.
//!
//! `ulid` silently drops the overflow of a first character above `7`, which
//! would let two spellings name one id; this module refuses them.

use serde::de::Visitor;
use serde::{Deserialize, Deserializer};
use ulid::Ulid;

/// Parses an id (either case).
pub fn parse(text: &str) -> Option<Ulid> {
    let first = *text.as_bytes().first()?;
    if !(b'0'..=b'7').contains(&first) {
        return None;
    }
    Ulid::from_string(text).ok()
}

struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = Ulid;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a ULID string")
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Ulid, E> {
        parse(text).ok_or_else(|| E::custom(format!("not a ULID: {text:?}")))
    }
}

/// A strictly parsed id, for use inside containers.
struct Strict(Ulid);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(IdVisitor).map(Strict)
    }
}

/// serde `deserialize_with` for one id: a msgpack `str` only (not `bin`).
pub fn strict<'de, D: Deserializer<'de>>(d: D) -> Result<Ulid, D::Error> {
    d.deserialize_str(IdVisitor)
}

/// serde `deserialize_with` for an id or nil.
pub fn strict_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ulid>, D::Error> {
    Ok(Option::<Strict>::deserialize(d)?.map(|s| s.0))
}

/// serde `deserialize_with` for a list of ids.
pub fn strict_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ulid>, D::Error> {
    Ok(Vec::<Strict>::deserialize(d)?.into_iter().map(|s| s.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_overflowing_and_malformed_ids() {
        let id = Ulid::from_string("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        assert_eq!(parse("01ARZ3NDEKTSV4RRFFQ69G5FAV"), Some(id));
        assert_eq!(parse("01arz3ndektsv4rrffq69g5fav"), Some(id));
        assert_eq!(parse("81ARZ3NDEKTSV4RRFFQ69G5FAV"), None);
        assert_eq!(parse("01ARZ3NDEKTSV4RRFFQ69G5FA"), None);
        assert_eq!(parse("01ARZ3NDEKTSV4RRFFQ69G5FAU"), None);
        assert_eq!(parse(""), None);
    }
}
