//! Shape check of a payload: exactly one msgpack map with string keys.
//!
//! Runs before serde sees the bytes, because rmp-serde would also accept a
//! struct encoded as an array, integer keys as field indexes, trailing bytes,
//! and a `str` that is not UTF-8 (handing it on as bytes). The walk allocates nothing, visits each byte at most once and bounds
//! nesting depth, so it is safe on hostile input.

use rmp::Marker;

/// Deepest nesting accepted inside a payload.
pub const MAX_DEPTH: usize = 32;

/// Why a payload is not a msgpack map with string keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The first value is not a map.
    #[error("payload must be a msgpack map")]
    NotMap,
    /// A top-level key is not a string.
    #[error("payload map keys must be strings")]
    KeyNotString,
    /// The bytes end inside a value.
    #[error("payload is truncated msgpack")]
    Truncated,
    /// Bytes remain after the map.
    #[error("payload has bytes after the map")]
    Trailing,
    /// A marker byte msgpack reserves.
    #[error("payload holds a reserved msgpack marker")]
    Reserved,
    /// A `str` that is not valid UTF-8 (it would otherwise pass as `bin`).
    #[error("payload holds a str that is not valid UTF-8")]
    BadUtf8,
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("payload nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ShapeError> {
        let end = self.pos.checked_add(n).ok_or(ShapeError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(ShapeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn uint(&mut self, width: usize) -> Result<usize, ShapeError> {
        let mut v: u64 = 0;
        for &b in self.take(width)? {
            v = (v << 8) | u64::from(b);
        }
        usize::try_from(v).map_err(|_| ShapeError::Truncated)
    }
}

/// What a value's marker says follows it.
enum Next {
    /// A scalar or a blob: skip this many bytes.
    Skip(usize),
    /// A container holding this many values (a map counts keys and values).
    Items(usize),
}

fn next(c: &mut Cursor<'_>) -> Result<(Marker, Next), ShapeError> {
    let m = Marker::from_u8(c.take(1)?[0]);
    let n = match m {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => Next::Skip(0),
        Marker::U8 | Marker::I8 => Next::Skip(1),
        Marker::U16 | Marker::I16 => Next::Skip(2),
        Marker::U32 | Marker::I32 | Marker::F32 => Next::Skip(4),
        Marker::U64 | Marker::I64 | Marker::F64 => Next::Skip(8),
        Marker::FixStr(n) => Next::Skip(n as usize),
        Marker::Str8 | Marker::Bin8 => Next::Skip(c.uint(1)?),
        Marker::Str16 | Marker::Bin16 => Next::Skip(c.uint(2)?),
        Marker::Str32 | Marker::Bin32 => Next::Skip(c.uint(4)?),
        Marker::FixExt1 => Next::Skip(2),
        Marker::FixExt2 => Next::Skip(3),
        Marker::FixExt4 => Next::Skip(5),
        Marker::FixExt8 => Next::Skip(9),
        Marker::FixExt16 => Next::Skip(17),
        Marker::Ext8 => Next::Skip(c.uint(1)? + 1),
        Marker::Ext16 => Next::Skip(c.uint(2)? + 1),
        Marker::Ext32 => Next::Skip(c.uint(4)?.checked_add(1).ok_or(ShapeError::Truncated)?),
        Marker::FixArray(n) => Next::Items(n as usize),
        Marker::Array16 => Next::Items(c.uint(2)?),
        Marker::Array32 => Next::Items(c.uint(4)?),
        Marker::FixMap(n) => Next::Items(n as usize * 2),
        Marker::Map16 => Next::Items(c.uint(2)? * 2),
        Marker::Map32 => Next::Items(c.uint(4)?.checked_mul(2).ok_or(ShapeError::Truncated)?),
        Marker::Reserved => return Err(ShapeError::Reserved),
    };
    Ok((m, n))
}

fn is_map(m: Marker) -> bool {
    matches!(m, Marker::FixMap(_) | Marker::Map16 | Marker::Map32)
}

fn is_str(m: Marker) -> bool {
    matches!(m, Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32)
}

/// Checks that `bytes` is exactly one msgpack map whose keys are strings.
pub fn check_map(bytes: &[u8]) -> Result<(), ShapeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let (marker, Next::Items(top)) = next(&mut c)? else { return Err(ShapeError::NotMap) };
    if !is_map(marker) {
        return Err(ShapeError::NotMap);
    }
    // Items left at each open level; the top level is index 0.
    let mut stack: Vec<usize> = Vec::with_capacity(4);
    stack.push(top);
    let mut top_index = 0usize;
    while let Some(left) = stack.last_mut() {
        if *left == 0 {
            stack.pop();
            continue;
        }
        *left -= 1;
        let at_top = stack.len() == 1;
        let (marker, n) = next(&mut c)?;
        if at_top {
            if top_index.is_multiple_of(2) && !is_str(marker) {
                return Err(ShapeError::KeyNotString);
            }
            top_index += 1;
        }
        match n {
            Next::Skip(len) => {
                let bytes = c.take(len)?;
                if is_str(marker) && std::str::from_utf8(bytes).is_err() {
                    return Err(ShapeError::BadUtf8);
                }
            }
            Next::Items(items) => {
                // Each item takes at least one byte: a claimed count larger than
                // what is left is truncated input, found without looping on it.
                if items > bytes.len() - c.pos {
                    return Err(ShapeError::Truncated);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ShapeError::TooDeep);
                }
                stack.push(items);
            }
        }
    }
    if c.pos != bytes.len() {
        return Err(ShapeError::Trailing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_maps_with_string_keys() {
        assert_eq!(check_map(&[0x80]), Ok(()));
        let v = rmp_serde::to_vec_named(&serde_json::json!({"a": [1, {"b": null}], "c": "x"})).unwrap();
        assert_eq!(check_map(&v), Ok(()));
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(check_map(&[]), Err(ShapeError::Truncated));
        assert_eq!(check_map(&[0x90]), Err(ShapeError::NotMap));
        assert_eq!(check_map(&[0x01]), Err(ShapeError::NotMap));
        assert_eq!(check_map(&[0x81, 0x01, 0x01]), Err(ShapeError::KeyNotString));
        assert_eq!(check_map(&[0x80, 0x80]), Err(ShapeError::Trailing));
        assert_eq!(check_map(&[0x81, 0xa1, b'a']), Err(ShapeError::Truncated));
        assert_eq!(check_map(&[0xdf, 0xff, 0xff, 0xff, 0xff]), Err(ShapeError::Truncated));
        assert_eq!(check_map(&[0x81, 0xa1, b'a', 0xc1]), Err(ShapeError::Reserved));
        assert_eq!(check_map(&[0x81, 0xa1, b'a', 0xa1, 0xff]), Err(ShapeError::BadUtf8));
        assert_eq!(check_map(&[0x81, 0xa1, 0xff, 0x01]), Err(ShapeError::BadUtf8));
        let mut deep = vec![0x81, 0xa1, b'a'];
        deep.extend(std::iter::repeat_n(0x91, 40));
        deep.push(0x01);
        assert_eq!(check_map(&deep), Err(ShapeError::TooDeep));
    }
}
