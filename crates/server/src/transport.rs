//! What carries a connection's bytes: anything that reads and writes a byte
//! stream, split into a read half and a write half.
//!
//! The session code (the private `connection` module) is written once against
//! [`Transport`]; TCP is one implementation, the WebSocket adapter
//! (`websocket::WsTransport`) another, and [`ByteStream`] adapts any other
//! `AsyncRead + AsyncWrite` stream (TLS, an in-memory pipe in tests). This module must not parse frames, apply limits
//! or decide anything about a session: it only hands over the halves (and
//! says how a transport refuses what it cannot carry: [`refusal`]).

use std::future::Future;
use std::io;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use sigil_proto::ProtoError;

/// The error a transport's reader returns to refuse what the peer sent with
/// a protocol error (the session answers `ERR` and closes) rather than as a
/// broken stream (the session ends silently). A WebSocket message holding
/// two frames is refused this way.
pub fn refusal(error: ProtoError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The protocol error of a [`refusal`].
pub fn as_refusal(error: &io::Error) -> Option<&ProtoError> {
    error.get_ref()?.downcast_ref()
}

/// A read half that can wait for bytes without holding a buffer.
///
/// Most sessions are idle most of the time: the reader waits here with no
/// read buffer and takes one only once bytes are there.
pub trait WaitReadable {
    /// Resolves when a read may make progress (bytes, end of stream or an
    /// error). A transport that cannot tell resolves at once: its reader then
    /// holds its buffer while idle.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

/// A stream of bytes a connection is served over.
pub trait Transport: Send + 'static {
    /// What the metrics' `transport` label calls it (one of `metrics::TRANSPORTS`).
    const KIND: &'static str = "stream";

    /// The read half.
    type Reader: AsyncRead + WaitReadable + Unpin + Send + 'static;
    /// The write half. Written data counts as sent once flushed.
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// Splits the stream, set up for a session (TCP: no Nagle delay).
    fn split(self) -> (Self::Reader, Self::Writer);

    /// Writes what of `frame` the stream takes at once, never waiting, and
    /// drops the stream: the answer to a connection refused before it is one.
    fn refuse(self, frame: &[u8])
    where
        Self: Sized,
    {
        let (_read, mut write) = self.split();
        // Polled once: a refused peer gets no task and no timer.
        let _ = async {
            write.write_all(frame).await?;
            write.flush().await
        }
        .now_or_never();
    }
}

impl WaitReadable for OwnedReadHalf {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.readable()
    }
}

impl Transport for TcpStream {
    const KIND: &'static str = "tcp";

    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        // Frames are written whole and coalesced by the writer: Nagle only adds latency.
        let _ = self.set_nodelay(true);
        self.into_split()
    }

    fn refuse(self, frame: &[u8]) {
        let _ = self.try_write(frame);
    }
}

/// Any `AsyncRead + AsyncWrite` stream as a [`Transport`], split with
/// [`tokio::io::split`]. It cannot wait for readability without reading, so
/// its reader keeps a small buffer while idle.
#[derive(Debug)]
pub struct ByteStream<S>(pub S);

impl<S> ByteStream<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        Self(stream)
    }
}

impl<S: AsyncRead + Send> WaitReadable for ReadHalf<S> {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Transport for ByteStream<S> {
    type Reader = ReadHalf<S>;
    type Writer = WriteHalf<S>;

    fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        tokio::io::split(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_byte_stream_splits_into_working_halves() {
        let (mut near, far) = tokio::io::duplex(64);
        let (mut read, mut write) = ByteStream::new(far).split();
        read.wait_readable().await.expect("no-op wait");
        near.write_all(b"ping").await.expect("write to the pipe");
        let mut got = [0u8; 4];
        read.read_exact(&mut got).await.expect("read from the pipe");
        assert_eq!(&got, b"ping");
        write.write_all(b"pong").await.expect("write back");
        near.read_exact(&mut got).await.expect("read back");
        assert_eq!(&got, b"pong");
    }

    #[tokio::test]
    async fn a_refusal_writes_what_fits_and_closes() {
        let (mut near, far) = tokio::io::duplex(64);
        ByteStream::new(far).refuse(b"ERR\n0\n\n");
        let mut got = Vec::new();
        near.read_to_end(&mut got).await.expect("read until closed");
        assert_eq!(got, b"ERR\n0\n\n");
    }

    #[tokio::test]
    async fn a_tcp_reader_waits_for_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (served, _) = listener.accept().await.expect("accept");
        let (read, _write) = served.split();
        // A fresh socket may be reported readable once (its first readiness
        // event); a read that finds nothing clears that.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), read.wait_readable()).await;
        assert_eq!(read.try_read(&mut [0u8; 8]).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), read.wait_readable()).await;
        assert!(waiting.is_err(), "nothing sent: still waiting, got {waiting:?}");
        client.write_all(b"x").await.expect("send");
        tokio::time::timeout(std::time::Duration::from_secs(5), read.wait_readable())
            .await
            .expect("readable in time")
            .expect("readable");
    }
}
