//! `Seen`: the last committed message shown per channel, kept in a small
//! state file between runs so that history already read is not shown as
//! new again (PROTOCOL.md §9.5).
//!
//! The file (by default the credentials file's path with `.seen` appended)
//! is text: a first line `sigil-seen 1 ACCOUNT_ID`, then one line
//! `CHANNEL_ID MESSAGE_ID` per channel. It is replaced whole (written to a
//! temporary file, synced, then renamed). A file for another account, or
//! one that is not such a state file, is left alone: [`Seen::load`] names it,
//! and the client keeps no state in that run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ulid::Ulid;

/// The last message seen in each channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Channel → its last committed message shown.
    pub last: BTreeMap<Ulid, Ulid>,
}

const HEADER: &str = "sigil-seen 1";

impl Seen {
    /// Parses a state file's text for `account`.
    pub fn parse(text: &str, account: Ulid) -> Seen {
        let mut lines = text.lines();
        let mine = lines.next().and_then(|l| l.strip_prefix(HEADER)).map(str::trim) == Some(&account.to_string());
        if !mine {
            return Seen::default();
        }
        let last = lines
            .filter_map(|l| {
                let (c, m) = l.split_once(' ')?;
                Some((Ulid::from_string(c.trim()).ok()?, Ulid::from_string(m.trim()).ok()?))
            })
            .collect();
        Seen { last }
    }

    /// The file's text.
    pub fn render(&self, account: Ulid) -> String {
        let mut out = format!("{HEADER} {account}\n");
        for (c, m) in &self.last {
            out.push_str(&format!("{c} {m}\n"));
        }
        out
    }

    /// Reads `path`; a missing or empty file is an empty state. A file that
    /// cannot be read, belongs to another account or is not a state file is
    /// an error that names it: it must not be overwritten.
    pub fn load(path: &Path, account: Ulid) -> Result<Seen, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Seen::default()),
            Err(e) => return Err(format!("cannot read the state file {}: {e}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Seen::default());
        }
        let owner = text.lines().next().and_then(|l| l.strip_prefix(HEADER)).map(str::trim);
        match owner {
            Some(id) if id == account.to_string() => Ok(Seen::parse(&text, account)),
            Some(id) => Err(format!(
                "the state file {} belongs to another account ({id}); it is left alone and history \
                 will not be remembered as read (--state FILE chooses another)",
                path.display()
            )),
            None => Err(format!(
                "{} is not a sigil state file; it is left alone and history will not be remembered \
                 as read (--state FILE chooses another)",
                path.display()
            )),
        }
    }

    /// Writes `path` (through a temporary file beside it, synced before it
    /// replaces the old one).
    pub fn save(&self, path: &Path, account: Ulid) -> Result<(), String> {
        let mut tmp = PathBuf::from(path);
        tmp.as_mut_os_string().push(".tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(self.render(account).as_bytes())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, path)?;
            // The rename itself, where the system allows syncing a directory.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(())
        };
        write().map_err(|e| format!("cannot write the state file {}: {e}", path.display()))
    }
}

/// The default state file of a credentials file: `FILE.seen` beside it.
pub fn default_path(cred: &Path) -> PathBuf {
    let mut p = PathBuf::from(cred);
    p.as_mut_os_string().push(".seen");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_another_accounts_file() {
        let (me, other) = (Ulid::from(1u128), Ulid::from(2u128));
        let seen = Seen { last: BTreeMap::from([(Ulid::from(10u128), Ulid::from(11u128))]) };
        assert_eq!(Seen::parse(&seen.render(me), me), seen);
        assert_eq!(Seen::parse(&seen.render(me), other), Seen::default());
        assert_eq!(Seen::parse("garbage", me), Seen::default());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = default_path(&dir.path().join("alice.cred"));
        assert_eq!(Seen::load(&path, me), Ok(Seen::default()), "no file yet");
        seen.save(&path, me).expect("saved");
        assert_eq!(Seen::load(&path, me), Ok(seen.clone()));
        assert!(path.ends_with("alice.cred.seen"));
        // Another account's file, or not a state file: named, never to be overwritten.
        let err = Seen::load(&path, other).expect_err("another account's");
        assert!(err.contains("belongs to another account") && err.contains(&me.to_string()), "{err}");
        std::fs::write(&path, "my notes\n").expect("written");
        assert!(Seen::load(&path, me).expect_err("not ours").contains("is not a sigil state file"));
        std::fs::write(&path, "").expect("written");
        assert_eq!(Seen::load(&path, me), Ok(Seen::default()), "an empty file is an empty state");
    }
}
