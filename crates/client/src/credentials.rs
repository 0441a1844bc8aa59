//! `Credentials`: an account's id, name and key, as `sigil account add` writes
//! them to a `.cred` file (JSON, mode 0600) and `--cred FILE` reads them.

use std::path::Path;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use sigil_proto::wire::SecretKey;

/// An account's credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Account id.
    pub id: Ulid,
    /// Account name.
    pub name: String,
    /// Secret key.
    pub key: SecretKey,
}

#[derive(Serialize, Deserialize)]
struct CredFile {
    id: String,
    name: String,
    key: String,
}

/// A credentials file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The content is not a credentials object.
    #[error("{path}: not a sigil credentials file: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Credentials {
    /// The JSON object `{"id", "name", "key"}`.
    pub fn to_json(&self) -> String {
        let f = CredFile { id: self.id.to_string(), name: self.name.clone(), key: self.key.to_hex() };
        serde_json::to_string(&f).unwrap_or_default()
    }

    /// Parses the JSON object.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let f: CredFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let id = sigil_proto::id::parse(&f.id).ok_or_else(|| format!("id {:?} is not a ULID", f.id))?;
        let key = SecretKey::from_hex(&f.key).map_err(|e| e.to_string())?;
        Ok(Self { id, name: f.name, key })
    }

    /// Reads a credentials file.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Io { path: p.clone(), source })?;
        Self::from_json(&text).map_err(|reason| CredentialsError::Format { path: p, reason })
    }

    /// Writes a credentials file readable only by its owner (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), CredentialsError> {
        use std::io::Write;
        let p = path.display().to_string();
        let io = |source| CredentialsError::Io { path: p.clone(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // An existing file keeps its mode on open: tighten it.
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        writeln!(file, "{}", self.to_json()).map_err(io)
    }
}
