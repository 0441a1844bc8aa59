//! The WebSocket transport (`GET /ws` on the web listener): each message
//! carries exactly one frame, the same bytes as on TCP, both ways.
//!
//! [`WsTransport`] turns a WebSocket into the byte stream the session code
//! reads ([`Transport`]): the reader hands on each message's bytes once it
//! has checked that they are one frame (only the header is looked at; the
//! session's decoder then parses them as it parses TCP), and the writer cuts
//! the frames the writer task coalesces back into one binary message each.
//! Everything else (limits, timers, rate, replacement, `ERR` codes) is the
//! session code's, shared with every other transport. Ping, pong and close
//! are answered by tungstenite as RFC 6455 says.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{Message, WebSocket};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::transport::{refusal, Transport, WaitReadable};
use sigil_proto::wire::frame_extent;
use sigil_proto::{ErrorCode, ProtoError};

/// The WebSocket subprotocol sigil speaks (echoed when a client offers it).
pub const SUBPROTOCOL: &str = "sigil.v0";

/// Bytes a message may hold beyond `max_payload`: the longest header
/// (16 + 20 + 128 bytes of lines and their CR LF) and a few blank lines.
pub const HEADER_ALLOWANCE: usize = 256;

/// A WebSocket session, carried as a byte stream.
pub struct WsTransport(WebSocket);

impl WsTransport {
    /// Wraps an upgraded WebSocket.
    pub fn new(socket: WebSocket) -> Self {
        Self(socket)
    }
}

impl Transport for WsTransport {
    const KIND: &'static str = "websocket";

    type Reader = WsReader;
    type Writer = WsWriter;

    fn split(self) -> (WsReader, WsWriter) {
        let (sink, stream) = self.0.split();
        (WsReader { stream, current: Bytes::new(), ended: false }, WsWriter { sink, pending: BytesMut::new() })
    }

    fn refuse(self, frame: &[u8]) {
        let (_read, mut write) = self.split();
        // Polled once, as for any refusal: the ERR, then a close frame.
        let _ = async {
            write.write_all(frame).await?;
            write.shutdown().await
        }
        .now_or_never();
    }
}

/// The read half: the bytes of each message, checked to be one frame.
pub struct WsReader {
    stream: SplitStream<WebSocket>,
    /// What is left of the current message.
    current: Bytes,
    /// The peer closed (or the stream ended): reads return end of stream.
    ended: bool,
}

/// A message's bytes when they are exactly one frame (blank lines around it
/// allowed, as between frames on TCP), or the refusal.
fn one_frame(message: Bytes) -> io::Result<Bytes> {
    let blank = |b: &u8| *b == b'\r' || *b == b'\n';
    let refuse = |why: &'static str| Err(refusal(ProtoError::new(ErrorCode::BadFrame, why)));
    match frame_extent(&message) {
        // A header that breaks the grammar: the session's decoder reports the
        // fault in the same words as on TCP.
        Err(_) => Ok(message),
        Ok(None) if message.iter().all(blank) => refuse("a WebSocket message must hold one frame: this one holds none"),
        Ok(Some(end)) if end <= message.len() => {
            if message[end..].iter().all(blank) {
                // Without the blank lines after it: left in the decoder, they
                // would start the next frame's deadline (§1.1) with no frame to follow.
                Ok(message.slice(..end))
            } else {
                refuse("a WebSocket message must hold one frame: this one holds more")
            }
        }
        Ok(_) => refuse("a WebSocket message must hold one whole frame: this one holds part of one"),
    }
}

/// What a read error of the WebSocket means for the session.
fn read_error(error: axum::Error) -> io::Error {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(e)) => {
            refusal(ProtoError::new(ErrorCode::TooLarge, format!("WebSocket message over the size limit: {e}")))
        }
        Some(tungstenite::Error::Utf8(_)) => refusal(ProtoError::new(
            ErrorCode::BadFrame,
            "a text message must be UTF-8: send frames with binary payloads as binary messages",
        )),
        _ => io::Error::other(inner),
    }
}

impl WaitReadable for WsReader {
    fn wait_readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send + '_ {
        // A message cannot be waited for without taking it.
        std::future::ready(Ok(()))
    }
}

impl AsyncRead for WsReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                buf.put_slice(&self.current[..n]);
                self.current.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.stream.poll_next_unpin(cx)) {
                Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                    self.current = one_frame(message.into_data())?;
                }
                // Pongs to pings are queued by tungstenite and sent with the next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => self.ended = true,
                Some(Err(e)) => return Poll::Ready(Err(read_error(e))),
            }
        }
    }
}

/// The write half: frames written as bytes leave as one binary message each.
pub struct WsWriter {
    sink: SplitSink<WebSocket, Message>,
    /// Bytes written and not yet sent: whole frames waiting for the sink, then
    /// at most the start of one.
    pending: BytesMut,
}

impl WsWriter {
    /// Sends every whole frame in `pending`; `Pending` while the sink is not
    /// ready for the next one.
    fn send_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // The server writes well-formed frames; a header that does not
            // parse cannot occur, and would be sent as it is.
            let end = match frame_extent(&self.pending) {
                Ok(Some(end)) if end <= self.pending.len() => end,
                Ok(_) => return Poll::Ready(Ok(())),
                Err(_) => self.pending.len(),
            };
            if end == 0 {
                return Poll::Ready(Ok(()));
            }
            ready!(self.sink.poll_ready_unpin(cx)).map_err(io::Error::other)?;
            let frame = self.pending.split_to(end).freeze();
            self.sink.start_send_unpin(Message::Binary(frame)).map_err(io::Error::other)?;
        }
    }
}

impl AsyncWrite for WsWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Frames already written go first: what is held stays one write's worth.
        ready!(self.send_frames(cx))?;
        self.pending.extend_from_slice(buf);
        if let Poll::Ready(Err(e)) = self.send_frames(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.send_frames(cx))?;
        self.sink.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        // Sends a close frame, as RFC 6455 asks of an endpoint that ends the connection.
        self.sink.poll_close_unpin(cx).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(message: &[u8]) -> Option<ProtoError> {
        one_frame(Bytes::copy_from_slice(message)).err().and_then(|e| crate::transport::as_refusal(&e).cloned())
    }

    #[test]
    fn a_message_must_hold_one_whole_frame() {
        assert!(refused(b"INFO\n0\n\n").is_none());
        assert!(refused(b"\r\nINFO\n0\n\n\n").is_none(), "blank lines around a frame are allowed");
        for bad in [&b""[..], b"\n", b"INFO\n0", b"INFO\n0\n\nINFO\n0\n\n", b"MSG\n9\n\nabc", b"INFO\n0\n\nx"] {
            let e = refused(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert_eq!(e.code, ErrorCode::BadFrame, "{bad:?}");
        }
    }

    #[test]
    fn blank_lines_after_the_frame_are_dropped() {
        let passed = one_frame(Bytes::from_static(b"\nINFO\n0\n\n\r\n\n")).ok();
        assert_eq!(passed.as_deref(), Some(&b"\nINFO\n0\n\n"[..]));
    }

    #[test]
    fn a_malformed_header_is_left_to_the_session_decoder() {
        assert!(refused(b"info\n0\n\n").is_none());
    }
}
