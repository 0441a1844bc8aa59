//! The client library: connect, authenticate, send typed commands, receive
//! typed events with their tags verified. The tests and `sigil client` use
//! it; `tools` holds the `frame`/`decode` helpers.
//!
//! A client asks for server frame binding (PROTOCOL.md §7.10) unless told not
//! to ([`Binding`]): the server then signs the session's frames with a key
//! derived from its `CNN`, so a frame reflected from the client's own or
//! replayed from another session fails its tag. [`SessionInfo`] says whether
//! the server did, which is what makes a fatal `ERR` trustworthy.

pub mod agent;
pub mod credentials;
pub mod terminal;
pub mod tls;
pub mod tools;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::codec::FramedRead;

pub use credentials::Credentials;
pub use tls::{Endpoint, TlsClientOptions};

use sigil_proto::event::{ErrPayload, UserPresence};
use sigil_proto::wire::{Frame, FrameCodec, FrameError, FrameMac, SecretKey};
use sigil_proto::{Command, Envelope, Request, ServerEvent};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Connecting to (or the TLS handshake with) an address failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address, as given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server sent bytes that are not a frame.
    #[error("bad frame from server: {0}")]
    Frame(#[from] FrameError),
    /// A frame's tag is missing or wrong: the peer does not know our key, or the frame was altered.
    #[error("frame {0} from server has a bad or missing signature")]
    BadTag(String),
    /// A payload does not match its command.
    #[error("{0}")]
    Event(#[from] sigil_proto::event::EventError),
    /// The server answered CNN with an error.
    #[error("server refused: {} ({})", .0.code, .0.reason)]
    Refused(ErrPayload),
    /// The server closed the connection.
    #[error("connection closed by server")]
    Closed,
    /// An address that cannot be connected to as written.
    #[error("bad address {0}")]
    Address(String),
    /// The terminal client ended for a reason given in words (a fatal
    /// refusal, or reconnecting gave up).
    #[error("{0}")]
    Ended(String),
    /// A TLS setting (a CA file) cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The session had to be bound ([`Binding::Require`]) and the server did
    /// not bind it (PROTOCOL.md §7.10).
    #[error("the server did not bind the session to its CNN (PROTOCOL.md §7.10)")]
    NotBound,
}

/// The read half of a connection: plain TCP (the load generator's path, no
/// lock and no indirection beyond this match) or TLS.
enum ReadStream {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a connection.
enum WriteStream {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A fresh nonce: random over the whole u64 range.
pub fn new_nonce() -> u64 {
    rand::random()
}

/// Builds one signed frame (or an unsigned one without a MAC).
pub fn encode_request(mac: Option<&FrameMac>, command: Command, now: u64, buf: &mut BytesMut) -> u64 {
    let nonce = new_nonce();
    write_request(mac, &Request { envelope: Envelope { nonce, timestamp: now }, command }, buf);
    nonce
}

pub use sigil_proto::command::write_request;

/// Whether a client asks for server frame binding (PROTOCOL.md §7.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Binding {
    /// Do not ask: the session is signed as in V0, with the account key.
    Off,
    /// Ask, and take the account key for the session when the server's
    /// `UCNN` says it did not bind (a server without the extension).
    #[default]
    Prefer,
    /// Ask, and refuse a session the server did not bind
    /// ([`ClientError::NotBound`]): no downgrade (§7.10).
    Require,
}

/// What a client knows of its session once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// The nonce and timestamp of the `CNN` that opened it.
    pub cnn: Envelope,
    /// The server bound it (PROTOCOL.md §7.10): every frame received in it
    /// verified under a key only this session has, so none is reflected or
    /// replayed from another session, and a fatal `ERR` is fresh.
    pub bound: bool,
}

/// The receiving half of a connection.
pub struct ClientReader {
    framed: FramedRead<ReadStream, FrameCodec>,
    /// What frames are checked with: the account key's MAC, then, once our
    /// own `UCNN` says the session is bound, the session key's.
    mac: FrameMac,
    /// The session key's MAC, when we asked for binding, until our `UCNN` says
    /// whether the server bound the session.
    bound_mac: Option<FrameMac>,
    /// Refuse a session the server did not bind.
    require_bind: bool,
    session: SessionInfo,
    /// Set once our own UCNN arrived; from then on every frame must be signed.
    authenticated: bool,
    /// Tags are checked unless a load generator turned it off (see [`ClientReader::trust_tags`]).
    verify: bool,
}

impl ClientReader {
    /// The next event, its tag verified. `Ok(None)` on a clean close.
    /// An unsigned `ERR` is accepted only before our own `UCNN`: the server
    /// sends those before authentication, and only then.
    pub async fn recv(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        let Some(frame) = self.recv_frame().await? else { return Ok(None) };
        Ok(Some(ServerEvent::decode(frame.command.as_str(), &frame.payload)?))
    }

    /// The next frame with its tag checked, not decoded: for a caller that
    /// decodes only the fields it needs (the load generator's hot path).
    pub async fn recv_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        let Some(frame) = self.framed.next().await.transpose()? else { return Ok(None) };
        if !self.authenticated && frame.command.as_str() == "UCNN" {
            self.choose_key(&frame)?;
        }
        self.check(&frame)?;
        if frame.command.as_str() == "UCNN" {
            self.authenticated = true;
        }
        Ok(Some(frame))
    }

    /// What this session is: its `CNN`, and whether the server bound it.
    pub fn session(&self) -> SessionInfo {
        self.session
    }

    /// Our own `UCNN` (the first signed frame of a session) says whether the
    /// server bound the session; from it on, frames are checked with that key
    /// alone (PROTOCOL.md §7.10). Its `bind` is read before its tag is
    /// checked, with the key it names: a `bind` an attacker could change is
    /// inside that tag.
    fn choose_key(&mut self, frame: &Frame) -> Result<(), ClientError> {
        let Some(bound) = self.bound_mac.take() else { return Ok(()) };
        let said_bound = ServerEvent::decode(frame.command.as_str(), &frame.payload)
            .is_ok_and(|e| matches!(e, ServerEvent::Ucnn(UserPresence { bind: true, .. })));
        if said_bound {
            self.mac = bound;
            self.session.bound = true;
        } else if self.require_bind {
            return Err(ClientError::NotBound);
        }
        Ok(())
    }

    /// Stops checking tags (a tag must still be present once authenticated).
    /// Only for a load generator on loopback, whose own CPU must not be what
    /// it measures: a real client keeps verifying.
    pub fn trust_tags(&mut self) {
        self.verify = false;
    }

    fn check(&self, frame: &Frame) -> Result<(), ClientError> {
        let command = frame.command.as_str();
        let valid = match &frame.signature {
            // The server signs nothing before our UCNN (PROTOCOL.md §2): a
            // signed frame there is replayed, e.g. a harvested ERR
            // session_replaced answering a reconnection.
            Some(_) if !self.authenticated && command != "UCNN" => false,
            Some(_) if !self.verify => true,
            Some(tag) => self.mac.verify(frame.command.as_bytes(), &frame.payload, tag),
            None => command == "ERR" && !self.authenticated,
        };
        if !valid {
            return Err(ClientError::BadTag(command.to_owned()));
        }
        Ok(())
    }
}

/// The sending half of a connection.
pub struct ClientWriter {
    write: WriteStream,
    mac: FrameMac,
    buf: BytesMut,
}

impl ClientWriter {
    /// Signs and sends a command; returns its nonce.
    pub async fn send(&mut self, command: Command) -> Result<u64, ClientError> {
        let nonce = self.queue(command);
        self.flush().await?;
        Ok(nonce)
    }

    /// Signs a command into the send buffer without writing it; [`ClientWriter::flush`]
    /// then sends everything queued in one write. Returns its nonce.
    pub fn queue(&mut self, command: Command) -> u64 {
        encode_request(Some(&self.mac), command, now_unix(), &mut self.buf)
    }

    /// Writes what [`ClientWriter::queue`] buffered.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.buf.is_empty() {
            self.write.write_all(&self.buf).await?;
            self.buf.clear();
            // TLS holds what it was given until flushed; TCP has nothing to flush.
            self.write.flush().await?;
        }
        Ok(())
    }
}

/// How [`Client::connect_with`] connects.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// The server's `max_payload` (PROTOCOL.md §1.3): the largest frame accepted from it.
    pub max_payload: usize,
    /// Ask for the batched forms of `CH_MSG_ACK` and `CH_MSG_COMMIT`
    /// (PROTOCOL.md §7.9); the client must then read their `ids`.
    pub batch: bool,
    /// Ask for server frame binding (PROTOCOL.md §7.10); asked by default.
    pub binding: Binding,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { max_payload: sigil_proto::wire::codec::DEFAULT_MAX_PAYLOAD, batch: false, binding: Binding::default() }
    }
}

/// An authenticated connection.
pub struct Client {
    /// Receiving half.
    pub reader: ClientReader,
    /// Sending half.
    pub writer: ClientWriter,
    /// Who we are.
    pub credentials: Credentials,
    /// The server's certificate (DER), over TLS.
    peer_certificate: Option<Vec<u8>>,
}

impl Client {
    /// Connects and authenticates; returns once the server confirmed with our own `UCNN`.
    pub async fn connect(addr: impl ToSocketAddrs, credentials: &Credentials) -> Result<Client, ClientError> {
        Self::connect_with_max_payload(addr, credentials, sigil_proto::wire::codec::DEFAULT_MAX_PAYLOAD).await
    }

    /// Like [`Client::connect`] for a server with another `max_payload`.
    pub async fn connect_with_max_payload(
        addr: impl ToSocketAddrs,
        credentials: &Credentials,
        max_payload: usize,
    ) -> Result<Client, ClientError> {
        Self::connect_with(addr, credentials, ConnectOptions { max_payload, ..ConnectOptions::default() }).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        credentials: &Credentials,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Self::authenticate(ReadStream::Tcp(read), WriteStream::Tcp(write), None, credentials, options).await
    }

    /// Connects over TLS to `addr`, checking the server's certificate against
    /// `server_name` and the authorities of `tls`, then authenticates.
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: ServerName<'static>,
        tls: &TlsClientOptions,
        credentials: &Credentials,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = TlsConnector::from(tls.config()).connect(server_name, stream).await?;
        let peer_certificate = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
        let (read, write) = tokio::io::split(stream);
        Self::authenticate(ReadStream::Tls(read), WriteStream::Tls(write), peer_certificate, credentials, options).await
    }

    /// Connects to `endpoint` (TCP or TLS) and authenticates. A socket or TLS
    /// failure names the address ([`ClientError::Connect`]).
    pub async fn connect_to(
        endpoint: &Endpoint,
        credentials: &Credentials,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let (connected, shown) = match endpoint {
            Endpoint::Tcp(addr) => (Self::connect_with(addr.as_str(), credentials, options).await, addr.clone()),
            Endpoint::Tls { addr, server_name, options: tls } => (
                Self::connect_tls(addr.as_str(), server_name.clone(), tls, credentials, options).await,
                format!("tls://{addr}"),
            ),
        };
        connected.map_err(|e| match e {
            ClientError::Io(source) => ClientError::Connect { addr: shown, source },
            other => other,
        })
    }

    /// Sends `CNN` and waits for our own `UCNN`.
    async fn authenticate(
        read: ReadStream,
        write: WriteStream,
        peer_certificate: Option<Vec<u8>>,
        credentials: &Credentials,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let ConnectOptions { max_payload, batch, binding } = options;
        let mac = credentials.key.mac();
        let cnn = Envelope { nonce: new_nonce(), timestamp: now_unix() };
        let bind = binding != Binding::Off;
        // Derived before the CNN goes out: its nonce and timestamp are the input.
        let bound_mac = bind.then(|| server_mac(&credentials.key, cnn));
        // Every server frame fits the server's max_payload (PROTOCOL.md §1.3).
        let mut reader = ClientReader {
            framed: FramedRead::new(read, FrameCodec::new(max_payload)),
            mac: mac.clone(),
            bound_mac,
            require_bind: binding == Binding::Require,
            session: SessionInfo { cnn, bound: false },
            authenticated: false,
            verify: true,
        };
        let mut writer = ClientWriter { write, mac, buf: BytesMut::new() };
        let request = Request { envelope: cnn, command: Command::Cnn { id: credentials.id, batch, bind } };
        write_request(Some(&writer.mac), &request, &mut writer.buf);
        writer.flush().await?;
        match reader.recv().await? {
            Some(ServerEvent::Ucnn(me)) if me.id == credentials.id => {}
            Some(ServerEvent::Err(e)) => return Err(ClientError::Refused(e)),
            Some(_) => return Err(ClientError::BadTag("unexpected first frame".into())),
            None => return Err(ClientError::Closed),
        }
        Ok(Client { reader, writer, credentials: credentials.clone(), peer_certificate })
    }

    /// The certificate (DER) the server presented, when connected over TLS.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_certificate.as_deref()
    }

    /// Signs and sends a command; returns its nonce.
    pub async fn send(&mut self, command: Command) -> Result<u64, ClientError> {
        self.writer.send(command).await
    }

    /// The next verified event; `Ok(None)` on close.
    pub async fn recv(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        self.reader.recv().await
    }

    /// Splits into halves that can be used from two tasks.
    pub fn split(self) -> (ClientReader, ClientWriter) {
        (self.reader, self.writer)
    }

    /// What this session is: its `CNN`, and whether the server bound it.
    pub fn session(&self) -> SessionInfo {
        self.reader.session()
    }
}

/// The MAC a bound session's frames are checked with (PROTOCOL.md §7.10).
pub fn server_mac(key: &SecretKey, cnn: Envelope) -> FrameMac {
    key.server_key(cnn.nonce, cnn.timestamp).mac()
}

/// Unix time in seconds, as requests are stamped (PROTOCOL.md §4).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
