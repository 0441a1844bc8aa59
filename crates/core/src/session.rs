//! `Session`: one connection's protocol state (PROTOCOL.md §3), pure.
//!
//! Takes a decoded frame and the time, returns what it means: answer INFO,
//! authenticate, a verified request, or an error. It verifies signatures and
//! timestamps; nonces are checked by the [`Relay`](super::relay::Relay)
//! because an account's nonce window is shared by all its connections.
//! Timers (CNN and idle timeouts) belong to the I/O shell.

use std::sync::Arc;

use ulid::Ulid;

use crate::replay::ReplayGuard;
use sigil_proto::command::{Command, Envelope, Request};
use sigil_proto::wire::{Frame, FrameMac, SecretKey};
use sigil_proto::{ErrorCode, ProtoError};

/// The reason text of every failed CNN, whatever failed: it must not reveal
/// whether the account exists.
pub const AUTH_FAILED_REASON: &str = "authentication failed";

/// What a frame means.
#[derive(Debug)]
pub enum SessionOutput {
    /// Unsigned `INFO` before CNN: answer `SINFO`, unsigned.
    Info,
    /// A valid CNN: the relay still checks its nonce and the key revision.
    Authenticate {
        /// The account.
        account: Ulid,
        /// Revision of the key the tag was checked with.
        key_rev: u64,
        /// The CNN's nonce and timestamp.
        envelope: Envelope,
        /// The session asked for batched frames (PROTOCOL.md §7.9).
        batch: bool,
        /// The session asked for server frame binding (PROTOCOL.md §7.10).
        bind: bool,
        /// What the server signs this session's frames with once the relay
        /// accepts it: the account key's MAC state (the one that checks the
        /// session's frames, shared), or with `bind` the key derived from this
        /// `CNN` (§7.10), which no client frame is signed with.
        signer: Arc<FrameMac>,
    },
    /// A verified request from the authenticated account.
    Request(Request),
    /// A verified frame that is refused with a non-fatal error. The relay
    /// spends its nonce (when readable) and sends the error.
    Reject {
        /// Nonce and timestamp, when readable.
        envelope: Option<Envelope>,
        /// The error to send.
        error: ProtoError,
    },
}

/// An account's key as the directory holds it.
#[derive(Debug, Clone)]
pub struct AccountKey {
    /// The secret.
    pub key: SecretKey,
    /// Bumped on every rotation.
    pub rev: u64,
}

#[derive(Debug)]
enum State {
    Connected,
    // Boxed: the MAC state is large and most of a session's life is spent authenticated.
    // Shared: the connection's writer signs with the same keyed state, unless
    // the session is bound (§7.10).
    Authenticated { account: Ulid, mac: Arc<FrameMac> },
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    state: State,
    skew_s: u64,
}

impl Session {
    /// A new, unauthenticated session.
    pub fn new(skew_s: u64) -> Self {
        Self { state: State::Connected, skew_s }
    }

    /// The authenticated account, if any.
    pub fn account(&self) -> Option<Ulid> {
        match &self.state {
            State::Connected => None,
            State::Authenticated { account, .. } => Some(*account),
        }
    }

    /// The MAC state this session's frames are checked with (the account
    /// key's), once authenticated. The server signs with
    /// [`SessionOutput::Authenticate`]'s `signer`, which differs for a bound
    /// session (PROTOCOL.md §7.10).
    pub fn mac(&self) -> Option<&Arc<FrameMac>> {
        match &self.state {
            State::Connected => None,
            State::Authenticated { mac, .. } => Some(mac),
        }
    }

    /// Interprets one frame received at `now` (unix seconds). `lookup` finds an
    /// account's key for CNN. An `Err` is fatal: send it and close.
    pub fn on_frame(
        &mut self,
        frame: &Frame,
        now: u64,
        lookup: impl FnOnce(&Ulid) -> Option<AccountKey>,
    ) -> Result<SessionOutput, ProtoError> {
        match &self.state {
            State::Connected => self.before_auth(frame, now, lookup),
            State::Authenticated { mac, .. } => {
                let valid = frame
                    .signature
                    .as_ref()
                    .is_some_and(|tag| mac.verify(frame.command.as_bytes(), &frame.payload, tag));
                if !valid {
                    return Err(ProtoError::new(
                        ErrorCode::BadSignature,
                        format!("bad or missing signature on {}", frame.command),
                    ));
                }
                match Request::parse(&frame.command, &frame.payload) {
                    Ok(request) => {
                        let envelope = request.envelope;
                        self.check_time(envelope, now)?;
                        if let Command::Cnn { .. } = request.command {
                            let error = ProtoError::new(
                                ErrorCode::AlreadyAuthenticated,
                                "this session is already authenticated",
                            )
                            .with_ref(envelope.nonce);
                            return Ok(SessionOutput::Reject { envelope: Some(envelope), error });
                        }
                        Ok(SessionOutput::Request(request))
                    }
                    Err(failure) => {
                        if let Some(envelope) = failure.envelope {
                            self.check_time(envelope, now)?;
                        }
                        Ok(SessionOutput::Reject { envelope: failure.envelope, error: failure.error })
                    }
                }
            }
        }
    }

    fn check_time(&self, envelope: Envelope, now: u64) -> Result<(), ProtoError> {
        ReplayGuard::check_timestamp(self.skew_s, envelope.timestamp, now)
            .map_err(|e| ProtoError::from(e).with_ref(envelope.nonce))
    }

    fn before_auth(
        &mut self,
        frame: &Frame,
        now: u64,
        lookup: impl FnOnce(&Ulid) -> Option<AccountKey>,
    ) -> Result<SessionOutput, ProtoError> {
        match frame.command.as_str() {
            // INFO is public: answered whether signed or not.
            "INFO" => Ok(SessionOutput::Info),
            "CNN" => {
                let failed = || ProtoError::new(ErrorCode::AuthFailed, AUTH_FAILED_REASON);
                let request = match Request::parse(&frame.command, &frame.payload) {
                    Ok(r) => r,
                    // A malformed CNN is not fatal: the client may retry before the CNN timeout.
                    Err(failure) => return Ok(SessionOutput::Reject { envelope: None, error: failure.error }),
                };
                let Command::Cnn { id, batch, bind } = request.command else { return Err(failed()) };
                let tag = frame.signature.as_ref().ok_or_else(failed)?;
                // Unknown id and bad tag must look the same; verify against a
                // throwaway key for unknown ids so timing does not tell either.
                let (key, rev, known) = match lookup(&id) {
                    Some(k) => (k.key, k.rev, true),
                    None => (SecretKey::from_bytes([0; 32]), 0, false),
                };
                let mac = key.mac();
                let ok = mac.verify(frame.command.as_bytes(), &frame.payload, tag);
                if !(ok && known) {
                    return Err(failed());
                }
                let envelope = request.envelope;
                self.check_time(envelope, now)?;
                let mac = Arc::new(mac);
                // Derived once per session, here where the key is at hand; the
                // session itself keeps only the account key's state.
                let signer = if bind {
                    Arc::new(key.server_key(envelope.nonce, envelope.timestamp).mac())
                } else {
                    Arc::clone(&mac)
                };
                self.state = State::Authenticated { account: id, mac };
                Ok(SessionOutput::Authenticate { account: id, key_rev: rev, envelope, batch, bind, signer })
            }
            other => {
                Err(ProtoError::new(ErrorCode::NotAuthenticated, format!("{other} before CNN: authenticate first")))
            }
        }
    }
}
