//! The stable interface SecCollab plugins are written against.
//!
//! Four kinds of plugin exist: scanner, storage backend, notifier and OAuth provider. This crate
//! holds their Rust traits as they land; the versioned C-ABI wire under them (one exported entry
//! symbol, `#[repr(C)]` declarations, bytes and status codes across the line) comes with the
//! plugin-system work. Built-in implementations (local storage, ...) implement the same traits,
//! so the host sees one kind of object whether it came from a library or not.

use std::io::Read;

/// Version of the plugin ABI. A plugin built for another major version is refused at load.
pub const ABI_VERSION: u32 = 1;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanMatch {
    pub rule: String,
    pub namespace: String,
    pub tags: Vec<String>,
    /// From the rule's `severity` metadata, when it has one.
    pub severity: Option<String>,
    /// From the rule's `description` metadata, when it has one.
    pub description: Option<String>,
}

/// What one scanner found in one file.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Engine name and version, e.g. `yara-x 1.22.1`.
    pub engine: String,
    pub matches: Vec<ScanMatch>,
}

/// A content scanner. Scanners form a chain: a file is infected when any of them matches.
/// Calls are blocking; the host runs them on its bounded scan pool.
pub trait Scanner: Send + Sync {
    fn name(&self) -> &str;
    /// Scans the whole plaintext of a file.
    fn scan(&self, data: &[u8]) -> Result<ScanReport, String>;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// Full MIME type with parameters, e.g. `text/calendar; method=REQUEST; charset=UTF-8`.
    pub content_type: String,
    pub data: Vec<u8>,
}

/// One rendered notification for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub html: Option<String>,
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
