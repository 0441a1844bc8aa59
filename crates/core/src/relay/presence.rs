//! Who is online (PROTOCOL.md §3, §6): accounts and their names, which
//! connection each online account has, session start and end (`UCNN`,
//! `UDCNN`, session replacement), account changes (`USR_ADD`, `USR_RMD`,
//! key rotation), and the session and user commands: `CNN` (as
//! [`Input::Open`](super::Input::Open)), `KALIVE`, `DCNN`, `INFO`, `LST_USR`,
//! `CNN_USR`.
//!
//! [`Presence`] is the state; the `impl Relay` below runs the commands and
//! tells the channels when a member comes or goes.

use std::collections::{HashMap, HashSet};

use sigil_proto::event::{Outbound, Ucnn, Udcnn, UserEntry, UserPresence, UsrAdd, UsrHsk, UsrLst, UsrRmd};
use sigil_proto::{Command, Envelope, ErrorCode, ProtoError};
use ulid::Ulid;

use super::paging::{pages, per_page, USER_ENTRY_MAX};
use super::{ConnId, Effect, Relay};
use crate::session::AUTH_FAILED_REASON;

#[derive(Debug, Clone)]
struct Account {
    name: String,
    key_rev: u64,
}

/// Accounts and sessions.
#[derive(Debug, Default)]
pub(super) struct Presence {
    accounts: HashMap<Ulid, Account>,
    /// Authenticated connections → their account.
    sessions: HashMap<ConnId, Ulid>,
    /// Online accounts → their connection (one session per account).
    online: HashMap<Ulid, ConnId>,
    /// Sessions that asked for batched frames (PROTOCOL.md §7.9).
    batching: HashSet<ConnId>,
}

impl Presence {
    /// The account an open connection is authenticated as.
    pub(super) fn account_of(&self, conn: ConnId) -> Option<Ulid> {
        self.sessions.get(&conn).copied()
    }

    /// The connection of an online user on this relay. This is the one place
    /// a user becomes a connection: a relay that shares users with other
    /// nodes answers here for the users it serves.
    pub(super) fn conn_of(&self, user: &Ulid) -> Option<ConnId> {
        self.online.get(user).copied()
    }

    /// True when `conn` is an authenticated session.
    pub(super) fn is_open(&self, conn: ConnId) -> bool {
        self.sessions.contains_key(&conn)
    }

    /// True when `conn` takes batched frames.
    pub(super) fn is_batching(&self, conn: ConnId) -> bool {
        self.batching.contains(&conn)
    }

    /// The connection of a user who must exist and be online.
    pub(super) fn target(&self, to: Ulid) -> Result<ConnId, ProtoError> {
        if !self.accounts.contains_key(&to) {
            return Err(ProtoError::new(ErrorCode::NoSuchUser, "no such user"));
        }
        self.conn_of(&to).ok_or_else(|| ProtoError::new(ErrorCode::UserOffline, "that user is offline"))
    }

    fn name_of(&self, account: &Ulid) -> String {
        self.accounts.get(account).map(|a| a.name.clone()).unwrap_or_default()
    }

    /// Starts a session; returns the one it replaces, if any.
    fn start(&mut self, conn: ConnId, account: Ulid) -> Option<ConnId> {
        let old = self.online.insert(account, conn);
        self.sessions.insert(conn, account);
        old
    }

    /// An open session takes batched frames from now on.
    pub(super) fn set_batching(&mut self, conn: ConnId) {
        if self.sessions.contains_key(&conn) {
            self.batching.insert(conn);
        }
    }

    /// Ends a session; returns its account if it was one.
    fn stop(&mut self, conn: ConnId) -> Option<Ulid> {
        self.batching.remove(&conn);
        let account = self.sessions.remove(&conn)?;
        if self.online.get(&account) == Some(&conn) {
            self.online.remove(&account);
        }
        Some(account)
    }

    /// Every authenticated connection.
    fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.sessions.keys().copied()
    }

    /// `USR_LST` entries of the online users, sorted by name ignoring case.
    fn online_users(&self) -> Vec<UserEntry> {
        let mut users: Vec<UserEntry> = self
            .online
            .keys()
            .filter_map(|id| {
                let a = self.accounts.get(id)?;
                Some(UserEntry { id: *id, status: "online".to_owned(), name: a.name.clone() })
            })
            .collect();
        users.sort_by_cached_key(|u| (u.name.to_ascii_lowercase(), u.id));
        users
    }
}

impl Relay {
    /// A connection passed CNN's signature and time checks: check the key
    /// revision and nonce, replace an older session, announce it.
    pub(super) fn open(
        &mut self,
        conn: ConnId,
        account: Ulid,
        key_rev: u64,
        envelope: Envelope,
        now: u64,
        out: &mut Vec<Effect>,
    ) {
        let refuse = |e: ProtoError, out: &mut Vec<Effect>| {
            out.push(Effect::Close { conn, last: Some(Outbound::error(&e).unsigned()) });
        };
        let Some(info) = self.presence.accounts.get(&account) else {
            return refuse(ProtoError::new(ErrorCode::AuthFailed, AUTH_FAILED_REASON), out);
        };
        if info.key_rev != key_rev {
            return refuse(ProtoError::new(ErrorCode::AuthFailed, AUTH_FAILED_REASON), out);
        }
        let name = info.name.clone();
        if let Err(e) = self.replay.check(account, envelope.timestamp, envelope.nonce, now) {
            return refuse(ProtoError::from(e).with_ref(envelope.nonce), out);
        }
        if let Some(old) = self.presence.conn_of(&account) {
            let e = ProtoError::new(ErrorCode::SessionReplaced, "a new session for this account connected");
            self.end_session(old, Some(Outbound::error(&e)), out);
        }
        self.presence.start(conn, account);
        let ucnn = Outbound::event(&Ucnn(UserPresence { id: account, name }));
        out.push(Effect::Send { conn, frame: ucnn.clone() });
        self.broadcast(ucnn, Some(conn), out);
        // Then one CH_STATUS per channel it is a member of (and recounts for the others).
        self.channels_session_up(account, out);
    }

    /// Ends a session: closes it (with `last`, if given) and tells everyone else.
    pub(super) fn end_session(&mut self, conn: ConnId, last: Option<Outbound>, out: &mut Vec<Effect>) {
        // No frame overtakes gathered acks (§7.9).
        self.flush_acks(out);
        self.channels.forget_conn(conn);
        let Some(account) = self.presence.stop(conn) else { return };
        out.push(Effect::Close { conn, last });
        let name = self.presence.name_of(&account);
        self.broadcast(Outbound::event(&Udcnn(UserPresence { id: account, name })), None, out);
        self.channels_session_down(account, out);
    }

    /// An account was created or its key rotated.
    pub(super) fn account_upserted(&mut self, id: Ulid, name: String, key_rev: u64, out: &mut Vec<Effect>) {
        match self.presence.accounts.get_mut(&id) {
            None => {
                self.presence.accounts.insert(id, Account { name: name.clone(), key_rev });
                let entry = UserEntry { id, status: "offline".to_owned(), name };
                self.broadcast(Outbound::event(&UsrAdd(entry)), None, out);
            }
            Some(account) => {
                account.name = name;
                if account.key_rev != key_rev {
                    account.key_rev = key_rev;
                    if let Some(conn) = self.presence.conn_of(&id) {
                        let e = ProtoError::new(
                            ErrorCode::AuthFailed,
                            "this account's key was rotated: reconnect with the new key",
                        );
                        self.end_session(conn, Some(Outbound::error(&e)), out);
                    }
                }
            }
        }
    }

    /// An account was removed: end its session, take it out of its channels, announce it.
    pub(super) fn account_removed(&mut self, id: Ulid, out: &mut Vec<Effect>) {
        if !self.presence.accounts.contains_key(&id) {
            return;
        }
        // End the session first: its UDCNN still names the account.
        if let Some(conn) = self.presence.conn_of(&id) {
            let e = ProtoError::new(ErrorCode::AccountRemoved, "this account was removed");
            self.end_session(conn, Some(Outbound::error(&e)), out);
        }
        self.channels_account_removed(id, out);
        self.presence.accounts.remove(&id);
        self.replay.forget(&id);
        self.broadcast(Outbound::event(&UsrRmd { id }), None, out);
    }

    /// Sends `frame` to every session except `except`.
    pub(super) fn broadcast(&self, frame: Outbound, except: Option<ConnId>, out: &mut Vec<Effect>) {
        for conn in self.presence.connections() {
            if Some(conn) != except {
                out.push(Effect::Send { conn, frame: frame.clone() });
            }
        }
    }

    /// Session and user commands: `KALIVE`, `INFO`, `DCNN`, `CNN` (again), `LST_USR`, `CNN_USR`.
    pub(super) fn presence_command(
        &mut self,
        conn: ConnId,
        me: Ulid,
        command: Command,
        out: &mut Vec<Effect>,
    ) -> Result<(), ProtoError> {
        match command {
            Command::Kalive => Ok(()),
            Command::Info => {
                out.push(Effect::Send { conn, frame: self.sinfo.clone() });
                Ok(())
            }
            Command::Dcnn => {
                self.end_session(conn, None, out);
                Ok(())
            }
            // The session turns a second CNN into a Reject; nothing else sends it here.
            Command::Cnn { .. } => {
                Err(ProtoError::new(ErrorCode::AlreadyAuthenticated, "this session is already authenticated"))
            }
            Command::LstUsr => {
                let per_page = per_page(self.limits.max_payload, USER_ENTRY_MAX);
                let users = self.presence.online_users();
                for frame in pages(users, per_page, |users, more| Outbound::event(&UsrLst { users, more })) {
                    out.push(Effect::Send { conn, frame });
                }
                Ok(())
            }
            Command::CnnUsr { to } => {
                let peer = self.presence.target(to)?;
                out.push(Effect::Send { conn: peer, frame: Outbound::event(&UsrHsk { id: me }) });
                out.push(Effect::Send { conn, frame: Outbound::event(&UsrHsk { id: to }) });
                Ok(())
            }
            other => {
                Err(ProtoError::new(ErrorCode::UnknownCommand, format!("{} is not a session command", other.name())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_replaces_the_old_and_only_its_own_end_takes_the_user_offline() {
        let mut p = Presence::default();
        let (a, c1, c2) = (Ulid::from(1u128), ConnId(1), ConnId(2));
        assert_eq!(p.start(c1, a), None);
        assert_eq!(p.start(c2, a), Some(c1));
        p.set_batching(c2);
        p.set_batching(ConnId(9));
        assert!(!p.is_batching(ConnId(9)), "only sessions batch");
        // The replaced session ends after the new one started: the user stays online.
        assert_eq!(p.stop(c1), Some(a));
        assert_eq!(p.conn_of(&a), Some(c2));
        assert!(p.is_batching(c2) && !p.is_batching(c1));
        assert_eq!(p.stop(c2), Some(a));
        assert_eq!(p.conn_of(&a), None);
        assert_eq!(p.stop(c2), None, "idempotent");
    }

    #[test]
    fn targets_are_known_and_online() {
        let mut p = Presence::default();
        let a = Ulid::from(1u128);
        assert_eq!(p.target(a).map_err(|e| e.code), Err(ErrorCode::NoSuchUser));
        p.accounts.insert(a, Account { name: "a".into(), key_rev: 1 });
        assert_eq!(p.target(a).map_err(|e| e.code), Err(ErrorCode::UserOffline));
        p.start(ConnId(3), a);
        assert_eq!(p.target(a).ok(), Some(ConnId(3)));
    }

    #[test]
    fn the_user_list_is_sorted_by_name_ignoring_case() {
        let mut p = Presence::default();
        for (i, name) in ["bob", "Alice", "carol"].iter().enumerate() {
            let id = Ulid::from(i as u128 + 1);
            p.accounts.insert(id, Account { name: (*name).into(), key_rev: 1 });
            p.start(ConnId(i as u64), id);
        }
        let names: Vec<String> = p.online_users().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["Alice", "bob", "carol"]);
    }
}
