//! The stable interface SecCollab plugins are written against.
//!
//! Four kinds of plugin exist: scanner, storage backend, notifier and OAuth provider. Each is a
//! Rust trait here ([`Scanner`], [`StorageBackend`], [`Notifier`], [`OAuthProvider`]); under
//! them lies a versioned C-ABI wire ([`abi`]: one exported entry symbol, `#[repr(C)]`
//! declarations, only bytes, status codes and opaque handles across the line) so plugins are
//! shared libraries built apart from the server, in Rust with [`declare_plugin!`] or in any
//! language that can export a C function (`include/seccollab_plugin.h`). The built-ins (local
//! storage, YARA-X, e-mail, in-app) implement the same traits, so the host treats a plugin and a
//! built-in alike.
//!
//! # A complete plugin
//! `Cargo.toml`:
//! ```toml
//! [package]
//! name = "seccollab-shout"
//! version = "1.0.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! seccollab-plugin-api = "0.1"
//! ```
//! `src/lib.rs`, a scanner that flags files containing a configured word:
//! ```
//! use seccollab_plugin_api::{declare_plugin, ScanMatch, ScanReport, Scanner};
//!
//! pub struct Shout {
//!     word: Vec<u8>,
//! }
//!
//! impl Shout {
//!     /// Receives the plugin's table from the server's configuration, as JSON.
//!     fn from_config(cfg: &serde_json::Value) -> Result<Self, String> {
//!         let word = cfg["word"].as_str().ok_or("set `word` to the text to flag")?;
//!         Ok(Shout { word: word.as_bytes().to_vec() })
//!     }
//! }
//!
//! impl Scanner for Shout {
//!     fn name(&self) -> &str {
//!         "shout"
//!     }
//!
//!     fn scan(&self, data: &[u8]) -> Result<ScanReport, String> {
//!         let found = data.windows(self.word.len().max(1)).any(|w| w == self.word.as_slice());
//!         let matches = found
//!             .then(|| ScanMatch {
//!                 rule: "word".into(),
//!                 namespace: "shout".into(),
//!                 tags: vec![],
//!                 severity: Some("low".into()),
//!                 description: Some("contains the configured word".into()),
//!             })
//!             .into_iter()
//!             .collect();
//!         Ok(ScanReport { engine: "shout 1.0".into(), matches })
//!     }
//! }
//!
//! declare_plugin! {
//!     kind: Scanner,
//!     type: Shout,
//!     name: "shout",
//!     version: "1.0.0",
//!     init: Shout::from_config,
//! }
//! # fn main() {
//! #     let s = Shout::from_config(&serde_json::json!({"word": "LOUD"})).unwrap();
//! #     assert_eq!(s.scan(b"a LOUD file").unwrap().matches.len(), 1);
//! #     assert!(!seccollab_plugin_entry().is_null());
//! # }
//! ```
//! Build with `cargo build --release`, copy `target/release/libseccollab_shout.so` into the
//! plugin directory and enable it in the server's configuration (`docs/plugins.md`):
//! ```toml
//! [plugins.enabled.shout]
//! file = "libseccollab_shout.so"
//! settings = { word = "LOUD" }
//! ```
//!
//! Instances are shared between threads and called concurrently; calls block (the host runs
//! them off its async workers, with a timeout and a circuit breaker). A panic is caught at the
//! boundary and reported as an error; it never crosses into the server.

pub mod abi;
#[cfg(feature = "host")]
pub mod host;

use std::io::Read;

use serde::{Deserialize, Serialize};

#[doc(hidden)]
pub use serde_json;

/// Version of the plugin ABI. A plugin built for another major version is refused at load.
pub const ABI_VERSION: u32 = abi::ABI_MAJOR;

/// The kinds of plugin the host loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PluginKind {
    Scanner,
    Storage,
    Notifier,
    OAuthProvider,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Scanner => "scanner",
            PluginKind::Storage => "storage",
            PluginKind::Notifier => "notifier",
            PluginKind::OAuthProvider => "oauth_provider",
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug)]
pub enum StorageError {
    /// No object under that key.
    NotFound,
    /// Worth retrying (network, throttling, a busy disk).
    Transient(String),
    /// Retrying will not help (permissions, a full disk, a bad key).
    Permanent(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::NotFound => f.write_str("object not found"),
            StorageError::Transient(m) => write!(f, "transient storage error: {m}"),
            StorageError::Permanent(m) => write!(f, "storage error: {m}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// An object being written. Nothing is visible under its key until [`ObjectWriter::commit`];
/// dropping or aborting a writer leaves no object behind.
pub trait ObjectWriter: Send {
    fn write(&mut self, buf: &[u8]) -> Result<(), StorageError>;
    /// Makes the object durable and visible; returns its length in bytes.
    fn commit(self: Box<Self>) -> Result<u64, StorageError>;
    fn abort(self: Box<Self>);
}

/// Where encrypted objects live. The host only ever hands it ciphertext and random keys.
/// Calls are blocking; the host runs them off its async workers.
pub trait StorageBackend: Send + Sync {
    /// Short name for logs and `/api/admin/plugins` (e.g. `local`).
    fn name(&self) -> &str;
    /// Starts writing the object `key`.
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Reads the object `key` from byte `offset` to its end.
    fn get(&self, key: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError>;
    /// Removes `key`; removing a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// The object's length, or `None` when it does not exist.
    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// Every committed key (for orphan collection).
    fn list(&self) -> Result<Vec<String>, StorageError>;
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanMatch {
    pub rule: String,
    pub namespace: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// From the rule's `severity` metadata, when it has one.
    #[serde(default)]
    pub severity: Option<String>,
    /// From the rule's `description` metadata, when it has one.
    #[serde(default)]
    pub description: Option<String>,
}

/// What one scanner found in one file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScanReport {
    /// Engine name and version, e.g. `yara-x 1.22.1`.
    pub engine: String,
    #[serde(default)]
    pub matches: Vec<ScanMatch>,
}

/// A content scanner. Scanners form a chain: a file is infected when any of them matches.
/// Calls are blocking; the host runs them on its bounded scan pool.
pub trait Scanner: Send + Sync {
    fn name(&self) -> &str;
    /// Scans the whole plaintext of a file.
    fn scan(&self, data: &[u8]) -> Result<ScanReport, String>;
    /// Starts a streamed scan of one file: the host feeds files too large to hold in memory
    /// in pieces ([`ScanStream::write`]) and asks for the verdict once ([`ScanStream::finish`]).
    /// `None` (the default): this scanner sees whole files only, and the host holds files it
    /// cannot show it (`scan.oversize`, fail closed). ABI 1.1.
    fn stream(&self) -> Option<Result<Box<dyn ScanStream>, String>> {
        None
    }
}

/// One streamed scan ([`Scanner::stream`]): pieces in file order, then the verdict.
pub trait ScanStream: Send {
    /// The next piece of the file.
    fn write(&mut self, data: &[u8]) -> Result<(), String>;
    /// The verdict over every piece written.
    fn finish(self: Box<Self>) -> Result<ScanReport, String>;
}

/// Why a notifier could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// Worth retrying later (connection refused, timeout, a 4xx SMTP reply, HTTP 5xx).
    Transient(String),
    /// Retrying will not help (a 5xx SMTP reply, an address that does not exist).
    Permanent(String),
    /// The channel itself is down (no connection, TLS failure, timeout): every message would
    /// fail now. The host retries this one later and pauses the channel with back-off.
    Unavailable(String),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Transient(m) => write!(f, "transient: {m}"),
            NotifyError::Permanent(m) => write!(f, "permanent: {m}"),
            NotifyError::Unavailable(m) => write!(f, "unavailable: {m}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// A file attached to a notification (an iCalendar invitation, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub filename: String,
    /// Full MIME type with parameters, e.g. `text/calendar; method=REQUEST; charset=UTF-8`.
    pub content_type: String,
    pub data: Vec<u8>,
}

/// One rendered notification for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// Stable across retries (e-mail uses it as the Message-ID), so a receiver can drop a
    /// duplicate delivered after a crash.
    pub id: String,
    /// What happened: `meeting_invitation`, `meeting_updated`, `meeting_cancelled`,
    /// `file_share`, ...
    pub kind: String,
    pub user_id: Option<String>,
    /// Channel address of the recipient (an e-mail address for e-mail).
    pub address: String,
    pub display_name: String,
    /// One line, no control characters.
    pub subject: String,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// Delivers notifications on one channel (`email`, `in_app`, `webhook`, ...). The host calls
/// [`Notifier::deliver`] from its delivery workers, retries [`NotifyError::Transient`] failures
/// with back-off, gives up on [`NotifyError::Permanent`] ones, and on
/// [`NotifyError::Unavailable`] pauses the whole channel (a circuit breaker) instead of trying
/// every queued message against a server that is down. Calls are blocking.
pub trait Notifier: Send + Sync {
    fn name(&self) -> &str;
    /// The channel this notifier serves.
    fn channel(&self) -> &str;
    fn deliver(&self, message: &Outbound) -> Result<(), NotifyError>;
}

/// Why an OpenID Connect / OAuth sign-in failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthError {
    /// The provider or the plugin refused: a bad code, a wrong nonce, a forged token. The
    /// user sees a sign-in failure.
    Refused(String),
    /// The provider could not be reached; worth trying again later.
    Unavailable(String),
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OAuthError::Refused(m) => write!(f, "sign-in refused: {m}"),
            OAuthError::Unavailable(m) => write!(f, "provider unavailable: {m}"),
        }
    }
}

impl std::error::Error for OAuthError {}

/// What the host asks for when a browser starts a sign-in: the host made `state`, `nonce` and
/// the PKCE verifier and bound them to the browser; the plugin builds the provider's URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub redirect_uri: String,
    pub state: String,
    pub nonce: String,
    /// `BASE64URL(SHA-256(verifier))`; the method is always `S256`.
    pub pkce_challenge: String,
}

/// The provider sent the browser back with `code`: the plugin exchanges it and checks the ID
/// token (signature, issuer, audience, expiry and that its nonce is `nonce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeExchange {
    pub code: String,
    pub redirect_uri: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

/// Who signed in, as the provider vouches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthIdentity {
    /// The ID token's `iss`.
    pub issuer: String,
    /// The ID token's `sub`: stable for this user at this issuer.
    pub subject: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub name: Option<String>,
}

/// Signs users in through an external identity provider (OpenID Connect). Calls block.
pub trait OAuthProvider: Send + Sync {
    /// The name in `/api/auth/login/{provider}`.
    fn name(&self) -> &str;
    /// What the sign-in button says (`Google`).
    fn display_name(&self) -> &str;
    fn authorization_url(&self, req: &AuthorizationRequest) -> Result<String, OAuthError>;
    fn exchange(&self, req: &CodeExchange) -> Result<OAuthIdentity, OAuthError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_kinds_have_stable_names() {
        let names: Vec<&str> =
            [PluginKind::Scanner, PluginKind::Storage, PluginKind::Notifier, PluginKind::OAuthProvider]
                .map(PluginKind::as_str)
                .to_vec();
        assert_eq!(names, ["scanner", "storage", "notifier", "oauth_provider"]);
        assert_eq!(StorageError::NotFound.to_string(), "object not found");
    }
}
