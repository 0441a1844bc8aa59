//! Connections carried by something other than the TCP listener go through
//! the same session code: an in-memory stream served by a running server.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use sigil_proto::wire::{Frame, FrameCodec};
use sigil_server::transport::ByteStream;
use sigil_server::{Config, RunningServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::codec::Decoder;

const WAIT: Duration = Duration::from_secs(5);

async fn server(tweak: impl FnOnce(&mut Config)) -> (tempfile::TempDir, RunningServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::new("127.0.0.1:0", dir.path().join("sigil.db"));
    tweak(&mut config);
    let server = sigil_server::start(config).await.expect("server starts");
    (dir, server)
}

/// The client end of a stream the server serves, reading frames.
struct Client {
    stream: DuplexStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Client {
    async fn connect(server: &RunningServer) -> Client {
        let (stream, served) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "192.0.2.7:40000".parse().expect("address");
        server.serve_connection(ByteStream::new(served), peer).await;
        Client { stream, buf: BytesMut::new(), codec: FrameCodec::new(1 << 20) }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("bytes in time").expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next whole frame; `None` at the end of the stream.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).expect("a well-formed frame") {
                return Some(f);
            }
            if !self.fill().await {
                return None;
            }
        }
    }
}

#[tokio::test]
async fn an_in_memory_stream_gets_sinfo_for_an_unsigned_info() {
    let (_dir, server) = server(|_| {}).await;
    let mut client = Client::connect(&server).await;
    client.send(b"INFO\n0\n\n").await;
    while client.buf.len() < 8 {
        assert!(client.fill().await, "an answer before the end of the stream");
    }
    // Command line, LEN line, then an empty signature line: unsigned.
    assert!(client.buf.starts_with(b"SINFO\n"), "got {:?}", String::from_utf8_lossy(&client.buf));
    let sinfo = client.frame().await.expect("a whole SINFO frame");
    assert_eq!(sinfo.command.as_str(), "SINFO");
    assert!(sinfo.signature.is_none(), "before CNN the answer is unsigned");
    assert!(!sinfo.payload.is_empty());
    // A second INFO on the same stream: the session goes on.
    client.send(b"INFO\n0\n\n").await;
    assert_eq!(client.frame().await.expect("another SINFO").command.as_str(), "SINFO");
    // Closed by the client: the server's reader sees the end of the stream.
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn an_in_memory_stream_has_the_frame_deadline_and_the_shutdown() {
    let (_dir, server) = server(|c| c.frame_timeout_ms = Some(200)).await;
    let mut slow = Client::connect(&server).await;
    // Half a frame, then nothing: the shared frame deadline closes it.
    slow.send(b"INFO\n").await;
    let err = slow.frame().await.expect("an ERR");
    assert_eq!(err.command.as_str(), "ERR");
    assert!(String::from_utf8_lossy(&err.payload).contains("too long to arrive"));
    assert!(slow.frame().await.is_none(), "then the stream ends");
    drop(slow);

    let mut idle = Client::connect(&server).await;
    let stopping = tokio::spawn(server.shutdown());
    let err = idle.frame().await.expect("ERR shutdown");
    assert_eq!(err.command.as_str(), "ERR");
    assert!(String::from_utf8_lossy(&err.payload).contains("shutting down"));
    assert!(idle.frame().await.is_none(), "then the stream ends");
    drop(idle);
    stopping.await.expect("shutdown");
}

#[tokio::test]
async fn in_memory_streams_count_against_the_connection_limits() {
    let (_dir, server) = server(|c| c.max_connections_per_ip = 1).await;
    let mut first = Client::connect(&server).await;
    let mut second = Client::connect(&server).await;
    let refused = second.frame().await.expect("a refusal");
    assert_eq!(refused.command.as_str(), "ERR");
    assert!(refused.signature.is_none());
    assert!(String::from_utf8_lossy(&refused.payload).contains("too many connections from your address"));
    assert!(second.frame().await.is_none(), "then the stream ends");
    // The admitted one is served.
    first.send(b"INFO\n0\n\n").await;
    assert_eq!(first.frame().await.expect("SINFO").command.as_str(), "SINFO");
    drop((first, second));
    server.shutdown().await;
}
