//! `FrameCodec`: bytes ↔ [`Frame`] for `COMMAND LF LEN LF SIGNATURE LF PAYLOAD`.
//!
//! Owns the framing grammar of PROTOCOL.md §1 and nothing else: it does not
//! verify signatures and does not look inside the payload.
//!
//! The decoder is a `Command → Len → Signature → Payload` state machine, in the
//! manner of `LengthDelimitedCodec`. Each header line is validated byte by byte as
//! it arrives and is bounded by its longest legal length, so a peer can never make
//! the server buffer more than a header line (≤ 130 bytes) plus a LEN that has
//! already been checked against `max_payload`. A scan offset remembers how far
//! the current line was already checked, so a line trickling in byte by byte is
//! never rescanned.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Longest command name.
pub const MAX_COMMAND_LEN: usize = 16;
/// Length of a signature in hex digits.
pub const SIGNATURE_HEX_LEN: usize = 128;
/// Length of a signature (HMAC-SHA3-512 tag) in bytes.
pub const TAG_LEN: usize = 64;
/// Default `max_payload`.
pub const DEFAULT_MAX_PAYLOAD: usize = 65_536;

/// A command name: 1 to 16 bytes of `A`-`Z` and `_`, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandName {
    len: u8,
    bytes: [u8; MAX_COMMAND_LEN],
}

impl CommandName {
    /// Validates a command name.
    pub fn new(name: &[u8]) -> Option<Self> {
        if name.is_empty() || name.len() > MAX_COMMAND_LEN || !name.iter().all(|&b| is_command_byte(b)) {
            return None;
        }
        let mut bytes = [0u8; MAX_COMMAND_LEN];
        bytes[..name.len()].copy_from_slice(name);
        Some(Self { len: name.len() as u8, bytes })
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        // Only A-Z and _ are ever stored, which is ASCII.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// The name as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_command_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'_'
}

/// One frame as it travels on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The command name.
    pub command: CommandName,
    /// The tag, or `None` for an empty signature line.
    pub signature: Option<[u8; TAG_LEN]>,
    /// The payload bytes (a msgpack map, not checked here).
    pub payload: Bytes,
}

/// A framing fault. Every variant is fatal for the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The command line holds a byte other than `A`-`Z`/`_`, or is empty or too long.
    #[error("bad command line: {0}")]
    BadCommand(&'static str),
    /// The LEN line is not a canonical decimal number.
    #[error("bad length line: {0}")]
    BadLength(&'static str),
    /// LEN exceeds `max_payload`.
    #[error("payload length exceeds max_payload ({max} bytes)")]
    TooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// The signature line is neither empty nor 128 hex digits.
    #[error("bad signature line: {0}")]
    BadSignatureLine(&'static str),
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The underlying transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
enum State {
    Command,
    Len { command: CommandName },
    Signature { command: CommandName, len: usize },
    Payload { command: CommandName, len: usize, signature: Option<[u8; TAG_LEN]> },
}

/// Decoder and encoder for sigil frames.
#[derive(Debug)]
pub struct FrameCodec {
    max_payload: usize,
    max_len_digits: usize,
    state: State,
    /// How many bytes of the current header line were already validated.
    scanned: usize,
}

impl FrameCodec {
    /// A codec that refuses payloads longer than `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload, max_len_digits: max_payload.to_string().len(), state: State::Command, scanned: 0 }
    }

    /// Changes the largest accepted LEN for the frames that follow (a frame
    /// whose LEN was already accepted keeps it).
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
        self.max_len_digits = max_payload.to_string().len();
    }

    /// Scans the current header line. Returns the line length (without CR/LF)
    /// and the number of bytes to consume once the LF is there, or `None` when
    /// more bytes are needed. `check` validates each content byte at its index.
    fn scan_line(
        &mut self,
        src: &BytesMut,
        max: usize,
        mut check: impl FnMut(usize, u8) -> Result<(), FrameError>,
        too_long: impl Fn() -> FrameError,
    ) -> Result<Option<(usize, usize)>, FrameError> {
        // A legal line ends within `max` content bytes, a CR and the LF: look no further.
        let limit = src.len().min(max.saturating_add(2));
        let from = self.scanned.min(limit);
        let (end, found) = match memchr::memchr(b'\n', &src[from..limit]) {
            Some(at) => (from + at, true),
            None => (limit, false),
        };
        // A CR is tolerated only right before the LF (or at the end, where the LF may follow).
        let content = if end > 0 && src[end - 1] == b'\r' && (found || end == src.len()) { end - 1 } else { end };
        // In order, each byte's validity first, so `12345x` is malformed, not too large.
        for (i, &b) in src[from..content].iter().enumerate() {
            let i = from + i;
            check(i, b)?;
            if i >= max {
                return Err(too_long());
            }
        }
        if found {
            self.scanned = 0;
            return Ok(Some((content, end + 1)));
        }
        self.scanned = content;
        Ok(None)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Command => {
                    // Skip blank lines (LF or CRLF) between frames.
                    if self.scanned == 0 {
                        loop {
                            if src.first() == Some(&b'\n') {
                                src.advance(1);
                            } else if src.len() >= 2 && src[0] == b'\r' && src[1] == b'\n' {
                                src.advance(2);
                            } else {
                                break;
                            }
                        }
                        if src.is_empty() || (src.len() == 1 && src[0] == b'\r') {
                            return Ok(None);
                        }
                    }
                    let line = self.scan_line(
                        src,
                        MAX_COMMAND_LEN,
                        |_, b| {
                            if is_command_byte(b) {
                                Ok(())
                            } else {
                                Err(FrameError::BadCommand("only A-Z and _ are allowed"))
                            }
                        },
                        || FrameError::BadCommand("longer than 16 bytes"),
                    )?;
                    let Some((content, consumed)) = line else { return Ok(None) };
                    let command =
                        CommandName::new(&src[..content]).ok_or(FrameError::BadCommand("empty command name"))?;
                    src.advance(consumed);
                    self.state = State::Len { command };
                }
                State::Len { command } => {
                    let max_payload = self.max_payload;
                    let first = src.first().copied();
                    let line = self.scan_line(
                        src,
                        self.max_len_digits,
                        |i, b| {
                            if !b.is_ascii_digit() {
                                Err(FrameError::BadLength("only decimal digits are allowed"))
                            } else if i == 1 && first == Some(b'0') {
                                Err(FrameError::BadLength("leading zero"))
                            } else {
                                Ok(())
                            }
                        },
                        // More digits than max_payload has: the value is over it.
                        || FrameError::TooLarge { max: max_payload },
                    )?;
                    let Some((content, consumed)) = line else { return Ok(None) };
                    if content == 0 {
                        return Err(FrameError::BadLength("empty length line"));
                    }
                    let mut len: usize = 0;
                    for &d in &src[..content] {
                        len = len
                            .checked_mul(10)
                            .and_then(|l| l.checked_add(usize::from(d - b'0')))
                            .ok_or(FrameError::TooLarge { max: max_payload })?;
                    }
                    if len > max_payload {
                        return Err(FrameError::TooLarge { max: max_payload });
                    }
                    src.advance(consumed);
                    self.state = State::Signature { command, len };
                }
                State::Signature { command, len } => {
                    // Fast path, the common case: a whole 128-digit line that
                    // decodes as hex (which checks every digit). Anything else
                    // takes the byte-by-byte path, for its precise error.
                    if self.scanned == 0 {
                        let eol = match src.get(SIGNATURE_HEX_LEN..SIGNATURE_HEX_LEN + 2) {
                            Some([b'\n', _]) => Some(1),
                            Some(b"\r\n") => Some(2),
                            _ => None,
                        };
                        let mut tag = [0u8; TAG_LEN];
                        if let Some(eol) = eol {
                            if faster_hex::hex_decode(&src[..SIGNATURE_HEX_LEN], &mut tag).is_ok() {
                                src.advance(SIGNATURE_HEX_LEN + eol);
                                src.reserve(len.saturating_sub(src.len()));
                                self.state = State::Payload { command, len, signature: Some(tag) };
                                continue;
                            }
                        }
                    }
                    let line = self.scan_line(
                        src,
                        SIGNATURE_HEX_LEN,
                        |_, b| {
                            if b.is_ascii_hexdigit() {
                                Ok(())
                            } else {
                                Err(FrameError::BadSignatureLine("only hex digits are allowed"))
                            }
                        },
                        || FrameError::BadSignatureLine("longer than 128 hex digits"),
                    )?;
                    let Some((content, consumed)) = line else { return Ok(None) };
                    let signature = match content {
                        0 => None,
                        SIGNATURE_HEX_LEN => {
                            let mut tag = [0u8; TAG_LEN];
                            faster_hex::hex_decode(&src[..content], &mut tag)
                                .map_err(|_| FrameError::BadSignatureLine("not hex"))?;
                            Some(tag)
                        }
                        _ => return Err(FrameError::BadSignatureLine("must be empty or 128 hex digits")),
                    };
                    src.advance(consumed);
                    // LEN is validated, so reserving it is safe. Only what is
                    // missing: reserving `len` beyond frames already buffered
                    // would move the whole buffer for every frame.
                    src.reserve(len.saturating_sub(src.len()));
                    self.state = State::Payload { command, len, signature };
                }
                State::Payload { command, len, signature } => {
                    if src.len() < len {
                        return Ok(None);
                    }
                    let payload = src.split_to(len).freeze();
                    self.state = State::Command;
                    return Ok(Some(Frame { command, signature, payload }));
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                let only_blank = buf.iter().all(|&b| b == b'\r' || b == b'\n');
                if matches!(self.state, State::Command) && only_blank {
                    buf.clear();
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                }
            }
        }
    }
}

/// The longest legal header: COMMAND, LEN (20 digits is more than any
/// `usize`) and SIGNATURE lines, each with CR LF.
const MAX_HEADER_LEN: usize = MAX_COMMAND_LEN + 2 + 20 + 2 + SIGNATURE_HEX_LEN + 2;

/// Where the first frame in `src` ends, for a transport that carries frames
/// in messages of its own (a WebSocket): `Ok(Some(n))` once its header is
/// whole (`n` counts leading blank lines, the header and LEN payload bytes,
/// and may exceed `src.len()`), `Ok(None)` while the header is incomplete,
/// `Err` when the header breaks the grammar. Only the header is looked at
/// (copied, at most a few hundred bytes): the payload is never touched.
pub fn frame_extent(src: &[u8]) -> Result<Option<usize>, FrameError> {
    let blanks = src.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let head = &src[..src.len().min(blanks + MAX_HEADER_LEN)];
    let mut buf = BytesMut::from(head);
    let mut codec = FrameCodec::new(usize::MAX);
    let decoded = codec.decode(&mut buf)?;
    // A whole frame within `head` was consumed with its payload; otherwise
    // what was consumed is the header, and LEN payload bytes follow it.
    let consumed = head.len() - buf.len();
    Ok(match (decoded, codec.state) {
        (Some(_), _) => Some(consumed),
        (None, State::Payload { len, .. }) => Some(consumed.saturating_add(len)),
        (None, _) => None,
    })
}

/// A frame to write: the signature is given already computed (or empty).
#[derive(Clone, Debug)]
pub struct OutFrame<'a> {
    /// Command name.
    pub command: &'a str,
    /// Tag, or `None` for an empty signature line.
    pub signature: Option<&'a [u8; TAG_LEN]>,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Appends one encoded frame to `dst`.
pub fn encode_frame(frame: &OutFrame<'_>, dst: &mut BytesMut) {
    let mut digits = itoa::Buffer::new();
    let len = digits.format(frame.payload.len());
    dst.reserve(frame.command.len() + len.len() + SIGNATURE_HEX_LEN + 3 + frame.payload.len());
    dst.put_slice(frame.command.as_bytes());
    dst.put_u8(b'\n');
    dst.put_slice(len.as_bytes());
    dst.put_u8(b'\n');
    if let Some(tag) = frame.signature {
        let mut hex_buf = [0u8; SIGNATURE_HEX_LEN];
        // Cannot fail: the buffer is exactly twice the tag length.
        let _ = faster_hex::hex_encode(tag, &mut hex_buf);
        dst.put_slice(&hex_buf);
    }
    dst.put_u8(b'\n');
    dst.put_slice(frame.payload);
}

impl Encoder<OutFrame<'_>> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: OutFrame<'_>, dst: &mut BytesMut) -> Result<(), FrameError> {
        if frame.payload.len() > self.max_payload {
            return Err(FrameError::TooLarge { max: self.max_payload });
        }
        encode_frame(&frame, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::frame_extent;

    #[test]
    fn frame_extent_counts_blanks_header_and_payload() {
        assert_eq!(frame_extent(b"INFO\n0\n\n").ok(), Some(Some(8)));
        assert_eq!(frame_extent(b"\r\n\nINFO\n0\n\n").ok(), Some(Some(11)));
        assert_eq!(frame_extent(b"MSG\n3\n\nabcINFO\n0\n\n").ok(), Some(Some(10)));
        // The payload need not be there: the header says how long it is.
        assert_eq!(frame_extent(b"MSG\n70000\n\nab").ok(), Some(Some(11 + 70_000)));
        let sig = "a".repeat(128);
        let frame = format!("CNN\n2\n{sig}\nxy");
        assert_eq!(frame_extent(frame.as_bytes()).ok(), Some(Some(frame.len())));
    }

    #[test]
    fn frame_extent_waits_for_a_whole_header_and_refuses_a_bad_one() {
        assert_eq!(frame_extent(b"").ok(), Some(None));
        assert_eq!(frame_extent(b"\n\n").ok(), Some(None));
        assert_eq!(frame_extent(b"INFO\n0").ok(), Some(None));
        assert_eq!(frame_extent(b"INFO\n0\naaaa").ok(), Some(None));
        assert!(frame_extent(b"info\n0\n\n").is_err());
        assert!(frame_extent(b"INFO\n007\n\n").is_err());
        assert!(frame_extent(b"INFO\n1\nxyz\n").is_err());
    }
}
