//! Who is online (PROTOCOL.md §3, §6): accounts and their names, which
//! connection each online account has, session start and end (`UCNN`,
//! `UDCNN`, session replacement), account changes (`USR_ADD`, `USR_RMD`,
//! key rotation), and the commands that read only who is online:
//! `KALIVE`, `INFO`, `LST_USR`, `CNN_USR`.
//!
//! [`Presence`] is the state and runs the commands that read only it; the
//! relay (`mod.rs`) starts and ends sessions through it and tells the
//! channels when a member comes or goes.

use std::collections::{BTreeMap, HashMap, HashSet};

use sigil_proto::event::{Outbound, UserEntry, UsrHsk, UsrLst};
use sigil_proto::{Command, ErrorCode, ProtoError};
use ulid::Ulid;

use super::paging::{pages, per_page, USER_ENTRY_MAX};
use super::types::{ConnId, Effect};
use crate::session::AUTH_FAILED_REASON;

#[derive(Debug, Clone)]
struct Account {
    name: String,
    key_rev: u64,
}

/// Accounts and sessions. The hash maps are looked up on every routed
/// frame; the one list made from them (`users`) is sorted by name and id
/// before it goes out, so hash order never reaches an effect.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// Every account. Lookups, and `LST_USR {all}` (sorted before it is sent).
    accounts: HashMap<Ulid, Account>,
    /// Authenticated connections → their account (ordered: broadcasts go out
    /// in one order, so a seeded run replays exactly).
    sessions: BTreeMap<ConnId, Ulid>,
    /// Online accounts → their connection (one session per account): the
    /// lookup behind every user-addressed frame. Also `LST_USR` (sorted).
    online: HashMap<Ulid, ConnId>,
    /// Sessions that asked for batched frames (PROTOCOL.md §7.9). Lookups only.
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

    /// The account's name (empty when unknown).
    pub(super) fn name_of(&self, account: &Ulid) -> String {
        self.accounts.get(account).map(|a| a.name.clone()).unwrap_or_default()
    }

    /// Starts a session; returns the one it replaces, if any.
    pub(super) fn start(&mut self, conn: ConnId, account: Ulid) -> Option<ConnId> {
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
    pub(super) fn stop(&mut self, conn: ConnId) -> Option<Ulid> {
        self.batching.remove(&conn);
        let account = self.sessions.remove(&conn)?;
        if self.online.get(&account) == Some(&conn) {
            self.online.remove(&account);
        }
        Some(account)
    }

    /// Every authenticated connection.
    pub(super) fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.sessions.keys().copied()
    }

    /// `USR_LST` entries of the online users, sorted by name ignoring case.
    /// An account's entry (name and presence), if it exists.
    pub(super) fn entry(&self, id: &Ulid) -> Option<UserEntry> {
        let a = self.accounts.get(id)?;
        let status = if self.online.contains_key(id) { "online" } else { "offline" };
        Some(UserEntry { id: *id, status: status.to_owned(), name: a.name.clone() })
    }

    /// The connected users, or with `all` every account (with its status),
    /// sorted by name ignoring ASCII case.
    fn users(&self, all: bool) -> Vec<UserEntry> {
        let entry = |id: &Ulid, a: &Account| {
            let status = if self.online.contains_key(id) { "online" } else { "offline" };
            UserEntry { id: *id, status: status.to_owned(), name: a.name.clone() }
        };
        // Hash order, then sorted on a key that ids make unique: one order.
        let mut users: Vec<UserEntry> = if all {
            self.accounts.iter().map(|(id, a)| entry(id, a)).collect()
        } else {
            self.online.keys().filter_map(|id| Some(entry(id, self.accounts.get(id)?))).collect()
        };
        users.sort_by_cached_key(|u| (u.name.to_ascii_lowercase(), u.id));
        users
    }

    /// The name of `account` if `key_rev` is its current key revision: a CNN
    /// checked with an older key, or for an account removed since, fails.
    pub(super) fn check_key(&self, account: &Ulid, key_rev: u64) -> Result<String, ProtoError> {
        match self.accounts.get(account) {
            Some(a) if a.key_rev == key_rev => Ok(a.name.clone()),
            _ => Err(ProtoError::new(ErrorCode::AuthFailed, AUTH_FAILED_REASON)),
        }
    }

    /// Records an account as created or changed. Returns its `USR_ADD` entry
    /// when it is new, and whether its key was rotated.
    pub(super) fn upsert(&mut self, id: Ulid, name: String, key_rev: u64) -> (Option<UserEntry>, bool) {
        match self.accounts.get_mut(&id) {
            None => {
                self.accounts.insert(id, Account { name: name.clone(), key_rev });
                (Some(UserEntry { id, status: "offline".to_owned(), name }), false)
            }
            Some(account) => {
                account.name = name;
                let rotated = account.key_rev != key_rev;
                account.key_rev = key_rev;
                (None, rotated)
            }
        }
    }

    /// True when the account exists.
    pub(super) fn knows(&self, id: &Ulid) -> bool {
        self.accounts.contains_key(id)
    }

    /// How many entries `LST_USR` lists: the online users, or with `all` every account.
    pub(super) fn list_len(&self, all: bool) -> usize {
        if all {
            self.accounts.len()
        } else {
            self.online.len()
        }
    }

    /// Forgets an account (its session was ended first).
    pub(super) fn remove(&mut self, id: &Ulid) {
        self.accounts.remove(id);
    }

    /// Commands that read only who is online: `KALIVE`, `INFO`, `LST_USR`, `CNN_USR`.
    pub(super) fn command(
        &self,
        conn: ConnId,
        me: Ulid,
        command: Command,
        sinfo: &Outbound,
        max_payload: usize,
        out: &mut Vec<Effect>,
    ) -> Result<(), ProtoError> {
        match command {
            Command::Kalive => Ok(()),
            Command::Info => {
                out.push(Effect::Send { conn, frame: sinfo.clone() });
                Ok(())
            }
            Command::LstUsr { all } => {
                let per_page = per_page(max_payload, USER_ENTRY_MAX);
                for frame in pages(self.users(all), per_page, |users, more| Outbound::event(&UsrLst { users, more })) {
                    out.push(Effect::Send { conn, frame });
                }
                Ok(())
            }
            Command::CnnUsr { to } => {
                let peer = self.target(to)?;
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
        let names: Vec<String> = p.users(false).into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["Alice", "bob", "carol"]);
    }

    #[test]
    fn all_users_include_the_offline_ones_with_their_status() {
        let mut p = Presence::default();
        for (i, name) in ["dora", "Ben", "al"].iter().enumerate() {
            p.accounts.insert(Ulid::from(i as u128 + 1), Account { name: (*name).into(), key_rev: 1 });
        }
        p.start(ConnId(7), Ulid::from(2u128));
        let listed: Vec<(String, String)> = p.users(true).into_iter().map(|u| (u.name, u.status)).collect();
        let expected = [("al", "offline"), ("Ben", "online"), ("dora", "offline")];
        assert_eq!(listed, expected.map(|(n, s)| (n.to_owned(), s.to_owned())));
        assert_eq!(p.users(false).len(), 1, "without `all`, the connected users only");
    }
}
