//! Key material generated on first start: the JWT signing key and the master key-encryption key.
//!
//! The master key wraps every file's data key and seals TOTP secrets; `seccollab keys rotate`
//! replaces it (see `rotate`), keeping the old one under `retired/<key id>.key` so backups stay
//! readable. Keyed hashes of bearer secrets use a key derived from the JWT signing key instead,
//! so a master-key rotation does not invalidate sessions, recovery codes or invites.
//!
//! Both are 32 random bytes stored base64-encoded in files of mode 0600 inside a 0700 folder.
//! A key file that group or others can read is refused at start, naming the file and the fix,
//! because a leaked master key decrypts every stored file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

pub const JWT_KEY_FILE: &str = "jwt_signing.key";
pub const MASTER_KEY_FILE: &str = "master.key";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path} is readable by group or others (mode {mode:o}); fix with: chmod 600 {path}")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a valid key ({why}); restore it from backup")]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot use key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Secret key material. `Debug` never prints the bytes.
pub struct Keys {
    pub jwt_signing: [u8; KEY_LEN],
    pub master: [u8; KEY_LEN],
    /// Names the master key without revealing it (first 8 bytes of its SHA-256, hex), recorded
    /// beside every wrapped data key so keys can be rotated.
    pub master_id: String,
    /// HMAC key for stored hashes of bearer secrets (derived from the JWT signing key).
    pub hash_key: [u8; KEY_LEN],
    dir: PathBuf,
    /// Retired master keys and one being rotated in, by key id; re-read on a miss, so a running
    /// server follows a rotation done by the CLI.
    ring: std::sync::RwLock<std::collections::HashMap<String, [u8; KEY_LEN]>>,
}

pub const NEXT_MASTER_FILE: &str = "master.key.next";
pub const RETIRED_DIR: &str = "retired";

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys { <redacted> }")
    }
}

impl Keys {
    /// Reads both keys from `dir`, creating any that does not exist yet.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io { path: dir.to_path_buf(), source };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let master = load_or_create_key(&dir.join(MASTER_KEY_FILE))?;
        let jwt_signing = load_or_create_key(&dir.join(JWT_KEY_FILE))?;
        let keys = Self {
            hash_key: derive(&jwt_signing, "seccollab.keyed-hash.v1"),
            jwt_signing,
            master_id: key_id(&master),
            master,
            dir: dir.to_path_buf(),
            ring: Default::default(),
        };
        keys.reload_ring()?;
        Ok(keys)
    }

    fn reload_ring(&self) -> Result<(), KeyError> {
        let mut ring = std::collections::HashMap::new();
        // master.key too: after a rotation by the CLI it holds a key this process has not loaded.
        let mut paths = vec![self.dir.join(NEXT_MASTER_FILE), self.dir.join(MASTER_KEY_FILE)];
        if let Ok(rd) = fs::read_dir(self.dir.join(RETIRED_DIR)) {
            paths.extend(rd.flatten().map(|e| e.path()));
        }
        for p in paths.into_iter().filter(|p| p.exists()) {
            let k = read_key(&p)?;
            ring.insert(key_id(&k), k);
        }
        *self.ring.write().expect("key ring lock") = ring;
        Ok(())
    }

    /// The master key with this id (current, retired or being rotated in).
    pub fn master_for(&self, id: &str) -> Option<[u8; KEY_LEN]> {
        if id == self.master_id {
            return Some(self.master);
        }
        if let Some(k) = self.ring.read().ok()?.get(id) {
            return Some(*k);
        }
        let _ = self.reload_ring();
        self.ring.read().ok()?.get(id).copied()
    }

    /// Every master key known, the current one first.
    pub fn all_masters(&self) -> Vec<[u8; KEY_LEN]> {
        let _ = self.reload_ring();
        let mut v = vec![self.master];
        if let Ok(r) = self.ring.read() {
            v.extend(r.values().copied());
        }
        v
    }

    /// Opens a secret sealed under whichever master key sealed it.
    pub fn open_sealed(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        crate::crypto::open(&self.master, context, sealed)
            .or_else(|| self.all_masters().iter().find_map(|k| crate::crypto::open(k, context, sealed)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A purpose-bound key derived from `key` (HMAC-SHA-256).
fn derive(key: &[u8; KEY_LEN], purpose: &str) -> [u8; KEY_LEN] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Reads a key file (mode checked).
pub fn read_key(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    load_or_create_key_inner(path, false)
}

/// Reads a key file, creating it with a fresh random key when missing.
pub fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    load_or_create_key_inner(path, true)
}

/// The public name of a key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(key: &[u8; KEY_LEN]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key)[..8])
}

fn load_or_create_key_inner(path: &Path, create: bool) -> Result<[u8; KEY_LEN], KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::TooOpen { path: path.to_path_buf(), mode });
            }
            let text = fs::read_to_string(path).map_err(io)?;
            let bytes = STANDARD
                .decode(text.trim())
                .map_err(|e| KeyError::Corrupt { path: path.to_path_buf(), why: e.to_string() })?;
            bytes.try_into().map_err(|b: Vec<u8>| KeyError::Corrupt {
                path: path.to_path_buf(),
                why: format!("{} bytes instead of {KEY_LEN}", b.len()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut key = [0u8; KEY_LEN];
            rand::rngs::OsRng.fill_bytes(&mut key);
            // Written under a temporary name and renamed, so a crash never leaves half a key.
            let tmp = path.with_extension("key.tmp");
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
            writeln!(f, "{}", STANDARD.encode(key)).map_err(io)?;
            f.sync_all().map_err(io)?;
            fs::rename(&tmp, path).map_err(io)?;
            tracing::info!(path = %path.display(), "generated new key file");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_keys_and_reloads_them() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let a = Keys::load_or_create(&keys_dir).unwrap();
        let mode = fs::metadata(keys_dir.join(MASTER_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Keys::load_or_create(&keys_dir).unwrap();
        assert_eq!(a.master, b.master);
        assert_ne!(a.master, a.jwt_signing);
    }

    #[test]
    fn refuses_group_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        Keys::load_or_create(dir.path()).unwrap();
        let p = dir.path().join(JWT_KEY_FILE);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = Keys::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(err.contains(JWT_KEY_FILE), "{err}");
    }
}
