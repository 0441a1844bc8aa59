//! The protocol's `ERR` codes (PROTOCOL.md §5) and the typed error that carries one.

use std::borrow::Cow;

use ulid::Ulid;

macro_rules! error_codes {
    ($( $variant:ident = $text:literal, fatal = $fatal:literal; )*) => {
        /// Every `ERR` code of the protocol, one variant each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $( #[doc = $text] $variant, )* }

        impl ErrorCode {
            /// All codes, in specification order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The snake_case word sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $text, )* }
            }

            /// Fatal codes close the connection after the `ERR` frame.
            pub fn is_fatal(self) -> bool {
                match self { $( ErrorCode::$variant => $fatal, )* }
            }

            /// Parses a wire code.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $( $text => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    BadFrame = "bad_frame", fatal = true;
    TooLarge = "too_large", fatal = true;
    AuthFailed = "auth_failed", fatal = true;
    NotAuthenticated = "not_authenticated", fatal = true;
    Timeout = "timeout", fatal = true;
    Stale = "stale", fatal = true;
    Replay = "replay", fatal = true;
    BadSignature = "bad_signature", fatal = true;
    SessionReplaced = "session_replaced", fatal = true;
    SlowConsumer = "slow_consumer", fatal = true;
    AccountRemoved = "account_removed", fatal = true;
    Shutdown = "shutdown", fatal = true;
    UnknownCommand = "unknown_command", fatal = false;
    BadPayload = "bad_payload", fatal = false;
    NoSuchUser = "no_such_user", fatal = false;
    UserOffline = "user_offline", fatal = false;
    NoSuchChannel = "no_such_channel", fatal = false;
    NotMember = "not_member", fatal = false;
    AlreadyMember = "already_member", fatal = false;
    NameTaken = "name_taken", fatal = false;
    ChannelUnhealthy = "channel_unhealthy", fatal = false;
    NotLeader = "not_leader", fatal = false;
    BadElection = "bad_election", fatal = false;
    AlreadyVoted = "already_voted", fatal = false;
    DuplicateMsg = "duplicate_msg", fatal = false;
    UnknownMsg = "unknown_msg", fatal = false;
    BadCommit = "bad_commit", fatal = false;
    NotCommitted = "not_committed", fatal = false;
    MergeUnconfirmed = "merge_unconfirmed", fatal = false;
    RateLimited = "rate_limited", fatal = false;
    AlreadyAuthenticated = "already_authenticated", fatal = false;
    ReadOnly = "read_only", fatal = false;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error: what becomes one `ERR` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ProtoError {
    /// The wire code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub reason: Cow<'static, str>,
    /// The nonce of the command that caused it.
    pub nonce_ref: Option<u64>,
    /// The message an asynchronous error is about.
    pub msg_id: Option<Ulid>,
}

impl ProtoError {
    /// An error with a code and a reason.
    pub fn new(code: ErrorCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self { code, reason: reason.into(), nonce_ref: None, msg_id: None }
    }

    /// Sets `ref` to the causing command's nonce.
    pub fn with_ref(mut self, nonce: u64) -> Self {
        self.nonce_ref = Some(nonce);
        self
    }

    /// Sets `msg_id`.
    pub fn with_msg(mut self, msg_id: Ulid) -> Self {
        self.msg_id = Some(msg_id);
        self
    }

    /// True when the connection closes after this error.
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }
}

impl From<crate::wire::FrameError> for ProtoError {
    fn from(e: crate::wire::FrameError) -> Self {
        use crate::wire::FrameError;
        let code = match e {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadFrame,
        };
        ProtoError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_roundtrip_and_split_fatal_as_the_spec_says() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::ALL.len(), 32);
        assert_eq!(ErrorCode::ALL.iter().filter(|c| c.is_fatal()).count(), 12);
        assert!(!ErrorCode::AlreadyAuthenticated.is_fatal());
        assert!(ErrorCode::SlowConsumer.is_fatal());
    }
}
