//! Message content (`msg`): msgpack `bin` or `str`, relayed and stored unchanged.
//!
//! Parsing never copies a body: [`BodyRef`] borrows it from the received
//! payload and [`Body::from_ref`] turns that borrow into a `Bytes` slice of the
//! same buffer. The relayed event is encoded once and its payload shared by
//! every recipient.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Whether a body travels as msgpack `bin` or `str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// msgpack `bin`.
    Bin,
    /// msgpack `str` (valid UTF-8).
    Str,
}

/// Owned message content, cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Body {
    /// `bin` or `str`.
    pub kind: BodyKind,
    /// The content bytes (UTF-8 when `kind` is `Str`).
    pub bytes: Bytes,
}

impl Body {
    /// A `str` body.
    pub fn text(s: impl Into<String>) -> Self {
        Self { kind: BodyKind::Str, bytes: Bytes::from(s.into()) }
    }

    /// A `bin` body.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Self { kind: BodyKind::Bin, bytes: b.into() }
    }

    /// Converts a borrowed body, sharing `payload`'s buffer when the borrow points into it.
    pub fn from_ref(r: BodyRef<'_>, payload: &Bytes) -> Self {
        let bytes = match r.bytes {
            Cow::Borrowed(b) if !b.is_empty() => payload.slice_ref(b),
            other => Bytes::copy_from_slice(&other),
        };
        Self { kind: r.kind, bytes }
    }

    /// The content as text for a terminal: lossy for `bin` bodies, and with
    /// control characters escaped, so a message cannot move the cursor, fake
    /// a line of the client's own, or send terminal escape sequences.
    pub fn to_display(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let mut shown = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_control() {
                shown.extend(c.escape_default());
            } else {
                shown.push(c);
            }
        }
        shown
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BodyKind::Str => write!(f, "Str({:?})", String::from_utf8_lossy(&self.bytes)),
            BodyKind::Bin => write!(f, "Bin({} bytes)", self.bytes.len()),
        }
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.kind {
            BodyKind::Bin => s.serialize_bytes(&self.bytes),
            // A Str body was valid UTF-8 when it was received or built.
            BodyKind::Str => s.serialize_str(std::str::from_utf8(&self.bytes).map_err(serde::ser::Error::custom)?),
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = BodyRef::deserialize(d)?;
        Ok(Body { kind: r.kind, bytes: Bytes::copy_from_slice(&r.bytes) })
    }
}

/// Message content borrowed from a received payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRef<'a> {
    /// `bin` or `str`.
    pub kind: BodyKind,
    /// The content bytes.
    pub bytes: Cow<'a, [u8]>,
}

impl Serialize for BodyRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.kind {
            BodyKind::Bin => s.serialize_bytes(&self.bytes),
            BodyKind::Str => s.serialize_str(std::str::from_utf8(&self.bytes).map_err(serde::ser::Error::custom)?),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for BodyRef<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BodyRef<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("msgpack bin or str")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(BodyRef { kind: BodyKind::Bin, bytes: Cow::Borrowed(v) })
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BodyRef { kind: BodyKind::Str, bytes: Cow::Borrowed(v.as_bytes()) })
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(BodyRef { kind: BodyKind::Bin, bytes: Cow::Owned(v.to_vec()) })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BodyRef { kind: BodyKind::Str, bytes: Cow::Owned(v.as_bytes().to_vec()) })
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(BodyRef { kind: BodyKind::Bin, bytes: Cow::Owned(v) })
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BodyRef { kind: BodyKind::Str, bytes: Cow::Owned(v.into_bytes()) })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'a> From<&'a Body> for BodyRef<'a> {
    fn from(b: &'a Body) -> Self {
        BodyRef { kind: b.kind, bytes: Cow::Borrowed(&b.bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_control_characters() {
        let b = Body::text("hi\u{1b}[2J\n✓ committed");
        assert_eq!(b.to_display(), "hi\\u{1b}[2J\\n✓ committed");
    }
}
