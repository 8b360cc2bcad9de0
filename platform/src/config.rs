//! Configuration: one TOML file plus `SECCOLLAB_<SECTION>__<KEY>` environment overrides.
//!
//! Every section rejects unknown keys, so a typo in the file is an error naming the file and the
//! key instead of a setting silently ignored. With no file at all the embedded defaults serve:
//! SQLite and local storage under `./data`, listening on 127.0.0.1:8000.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded; the message names the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The effective configuration of one SecCollab node.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub keys: KeysConfig,
    pub auth: AuthConfig,
    pub smtp: SmtpConfig,
    pub files: FilesConfig,
    pub security: SecurityConfig,
    pub audit: AuditConfig,
    pub realtime: RealtimeConfig,
    pub messages: MessagesConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub plugins: PluginsConfig,
    pub admin: AdminConfig,
    pub web: WebConfig,
    pub siem: SiemConfig,
}

/// The end-user web UI at `/` (docs/web.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// A web session ends after this long without a request.
    pub idle_timeout_secs: u64,
    /// ... and this long after sign-in, whatever happens.
    pub absolute_timeout_secs: u64,
    /// Mark the session cookie `Secure` (HTTPS only). Default: when the server itself serves
    /// TLS; set `true` behind a reverse proxy that terminates TLS.
    pub secure_cookie: Option<bool>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self { idle_timeout_secs: 12 * 3600, absolute_timeout_secs: 7 * 86_400, secure_cookie: None }
    }
}

/// Forwarding of audit entries and security alerts to a SIEM collector (docs/admin.md).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiemConfig {
    /// `udp://HOST:PORT` or `tcp://HOST:PORT`; empty: no forwarding.
    pub target: String,
    /// `rfc5424` (syslog; octet-counted frames over TCP) or `jsonl` (one JSON object a line).
    pub format: SiemFormat,
    /// The HOSTNAME field of syslog messages; empty: the machine's host name.
    pub hostname: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SiemFormat {
    #[default]
    Rfc5424,
    Jsonl,
}

/// The admin console at `/admin` (docs/admin.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// A console session ends after this long without a request.
    pub idle_timeout_secs: u64,
    /// ... and this long after sign-in, whatever happens.
    pub absolute_timeout_secs: u64,
    /// Mark the console cookie `Secure` (HTTPS only). Default: when the server itself serves
    /// TLS; set `true` behind a reverse proxy that terminates TLS.
    pub secure_cookie: Option<bool>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { idle_timeout_secs: 15 * 60, absolute_timeout_secs: 8 * 3600, secure_cookie: None }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind.
    pub address: IpAddr,
    pub port: u16,
    /// Async worker threads; 0 means one per core.
    pub workers: usize,
    /// Peers (IP or CIDR) whose `X-Forwarded-For` is believed. Empty: the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest JSON request body accepted, in bytes.
    pub max_json_bytes: u64,
    /// Seconds given to in-flight requests on SIGTERM before connections are cut.
    pub shutdown_grace_secs: u32,
    /// PEM certificate chain and key; when both are set the server speaks TLS and sends HSTS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            workers: 0,
            trusted_proxies: Vec::new(),
            max_json_bytes: 1024 * 1024,
            shutdown_grace_secs: 10,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerConfig {
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://...`. Empty: `<storage.data_dir>/seccollab.db`.
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout_secs: u64,
    pub sqlite_busy_timeout_ms: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), pool_size: 8, connect_timeout_secs: 5, sqlite_busy_timeout_ms: 5000 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// Where encrypted file objects live: `local` (files under `<data_dir>/objects`, the
    /// default) or the name of an enabled storage plugin, e.g. `s3` with
    /// `[plugins.enabled.s3]` (docs/plugins.md).
    pub backend: String,
    /// Objects the database does not know are moved aside to `<data_dir>/orphans` (never
    /// deleted on sight) and kept this many days before they are removed.
    pub orphan_retention_days: u64,
    /// The start-up sweep moves orphans aside only while they are at most this share of the
    /// store (and the database knows at least one file); beyond it — a wrong or empty
    /// database, say — it moves nothing, raises an alert and leaves it to
    /// `seccollab storage orphans --move-aside --all`.
    pub orphan_max_share: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            backend: "local".into(),
            orphan_retention_days: 30,
            orphan_max_share: 0.05,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Where the JWT signing key and the master key-encryption key live. Empty: `<data_dir>/keys`.
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    #[default]
    Invite,
    Closed,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub registration: Registration,
    /// Lifetime of an access token in seconds (at most 900).
    pub access_token_ttl_secs: u64,
    /// Lifetime of a session (its refresh tokens) in days.
    pub session_ttl_days: u64,
    /// Per sign-in provider, the e-mail domains whose existing password accounts its sign-in
    /// may link by verified e-mail (e.g. `oidc_link_domains = { google = ["example.org"] }`
    /// for a provider that is the organisation's own directory). Elsewhere an existing account
    /// with a password is linked only from its own signed-in session (`/api/auth/link/{provider}`,
    /// the account page); an administrator's never automatically.
    pub oidc_link_domains: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            registration: Registration::Invite,
            access_token_ttl_secs: 900,
            session_ttl_days: 30,
            oidc_link_domains: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Empty: e-mail is not sent (in-app notifications only).
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    pub username: String,
    /// Secret: redacted by `config check`.
    pub password: String,
    /// Seconds for connecting and for each SMTP command.
    pub timeout_secs: u64,
    /// Delivery workers, each with its own SMTP connection. Each connection delivers at most
    /// ~25 messages/s: lettre writes the message body and its final `.` separately without
    /// TCP_NODELAY, so every message waits out the server's delayed ACK (~40 ms) once.
    pub workers: usize,
    /// First retry after a transient failure; doubles per attempt (with jitter) up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Attempts before a message is marked `failed`.
    pub max_attempts: u32,
    /// A message claimed by a worker that did not finish (crashed node) is retried after this
    /// long. On SQLite (one node) claims are released at start instead.
    pub claim_timeout_secs: u64,
    /// Base URL of the web interface used in links of e-mails (empty: `http://address:port`).
    pub public_url: String,
    /// PEM file with an extra CA to trust for the SMTP server's certificate (an internal CA);
    /// the system roots are trusted as well.
    pub ca_file: Option<PathBuf>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            from: "SecCollab <seccollab@localhost>".into(),
            username: String::new(),
            password: String::new(),
            timeout_secs: 30,
            workers: 8,
            retry_base_secs: 30,
            retry_max_secs: 3600,
            max_attempts: 10,
            claim_timeout_secs: 300,
            public_url: String::new(),
            ca_file: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    pub max_upload_bytes: u64,
    /// Hours between background integrity checks of every file; 0 turns the scrub off.
    pub scrub_interval_hours: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self { max_upload_bytes: 1024 * 1024 * 1024, scrub_interval_hours: 24 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Folder with `security.toml` and `yara/*.yar`.
    pub policy_dir: PathBuf,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self { policy_dir: PathBuf::from("./policies") }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Write one audit entry per `/api` request (health and metrics excepted).
    pub log_requests: bool,
    /// Most entries committed in one transaction by the audit writer.
    pub batch_max: usize,
    /// Entries that may wait for the writer before callers are slowed down.
    pub queue_capacity: usize,
    /// Seconds between anchors of the chain head outside the database (`audit-anchor.json`);
    /// also written at shutdown. 0 turns anchoring off.
    pub anchor_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { log_requests: true, batch_max: 4096, queue_capacity: 65536, anchor_interval_secs: 60 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// Seconds between WebSocket pings.
    pub heartbeat_secs: u64,
    /// A connection that sent nothing (not even a pong) for this long is closed.
    pub idle_timeout_secs: u64,
    /// A client that does not take a frame within this many seconds is disconnected.
    pub write_timeout_secs: u64,
    /// Frames queued per connection before it falls back to catching up from the database.
    pub queue_capacity: usize,
    /// How often a connection re-checks its session (revocation on another node, expiry).
    pub session_check_secs: u64,
    /// Seconds after the last connection closes before a user shows as offline.
    pub presence_grace_secs: u64,
    /// PostgreSQL: how often a node refreshes its presence rows; rows not refreshed for three
    /// times this long belong to a dead node and are swept (its users announced offline).
    pub presence_heartbeat_secs: u64,
    /// A `typing_start` not refreshed for this many seconds ends with `typing_stop`.
    pub typing_expiry_secs: u64,
    /// Days persisted events are kept for `resume`; 0 keeps them forever.
    pub event_retention_days: u32,
    /// Events waiting for the event writer before publishers are slowed down.
    pub writer_queue: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 25,
            idle_timeout_secs: 70,
            write_timeout_secs: 10,
            queue_capacity: 256,
            session_check_secs: 15,
            presence_grace_secs: 5,
            presence_heartbeat_secs: 30,
            typing_expiry_secs: 6,
            event_retention_days: 30,
            writer_queue: 65536,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Longest message text, in characters.
    pub max_content_chars: usize,
    /// Messages a user may send per second on average (0: unlimited) ...
    pub send_rate_per_sec: f64,
    /// ... in bursts of up to this many.
    pub send_burst: f64,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self { max_content_chars: 10_000, send_rate_per_sec: 10.0, send_burst: 60.0 }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `seccollab=debug,rocket=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Bearer token that opens `/metrics` to non-loopback peers. Empty: loopback only.
    pub token: String,
}

/// Plugin libraries (`docs/plugins.md`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Where plugin files named by `file` are found.
    pub dir: PathBuf,
    /// Longest a scanner, notifier or OAuth provider call may take before it counts as failed.
    pub call_timeout_secs: u64,
    /// Consecutive failures after which a plugin is paused (its circuit breaker opens).
    pub breaker_failures: u32,
    /// How long the first pause lasts; it doubles on each failed trial, up to ten minutes.
    pub breaker_cooldown_secs: u64,
    /// The plugins to load, by name: `[plugins.enabled.<name>]`.
    pub enabled: std::collections::BTreeMap<String, PluginEntry>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/usr/lib/seccollab/plugins"),
            call_timeout_secs: 30,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
            enabled: Default::default(),
        }
    }
}

/// One enabled plugin.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The name the library declares, when this instance is named differently (two OpenID
    /// Connect providers from the one `oidc` library: `[plugins.enabled.google] plugin = "oidc"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The library, relative to `plugins.dir` (or absolute). Default
    /// `libseccollab_<plugin or name>.so`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// When set, the library is loaded only if its SHA-256 (hex) is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The plugin's own configuration table, handed to it as JSON. Values under keys that
    /// name a secret (`secret`, `password`, `token`, `key`) are redacted by `config check`.
    #[serde(default = "empty_table")]
    pub settings: serde_json::Value,
}

fn empty_table() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl PluginEntry {
    /// The library's path.
    pub fn path(&self, name: &str, dir: &Path) -> PathBuf {
        let file = self.file.clone().unwrap_or_else(|| format!("libseccollab_{}.so", self.declared(name)));
        dir.join(file)
    }

    /// The name the library must declare.
    pub fn declared<'a>(&'a self, name: &'a str) -> &'a str {
        self.plugin.as_deref().unwrap_or(name)
    }
}

/// Replaces every value under a secret-sounding key (recursively).
fn redact_settings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let k = k.to_ascii_lowercase();
                if ["secret", "password", "token", "key"].iter().any(|s| k.contains(s)) && !v.is_object() {
                    *v = serde_json::Value::String(REDACTED.into());
                } else {
                    redact_settings(v);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_settings),
        _ => {}
    }
}

const REDACTED: &str = "<redacted>";

impl Config {
    /// Loads the defaults, then `file` (if given; it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Self::env_provider());
        let cfg: Config = fig.extract().map_err(|e| ConfigError::Invalid(describe(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Only variables with a section (`__`) are configuration, so `SECCOLLAB_BIN` and the like
    /// are left alone.
    fn env_provider() -> Env {
        Env::prefixed("SECCOLLAB_").filter(|k| k.as_str().contains("__")).split("__")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("key `{key}`: {why}")));
        if self.auth.access_token_ttl_secs == 0 || self.auth.access_token_ttl_secs > 900 {
            return bad("auth.access_token_ttl_secs", "must be between 1 and 900 seconds");
        }
        if self.auth.session_ttl_days == 0 || self.auth.session_ttl_days > 365 {
            return bad("auth.session_ttl_days", "must be between 1 and 365");
        }
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1");
        }
        if self.realtime.presence_heartbeat_secs == 0 || self.realtime.presence_heartbeat_secs > 3600 {
            return bad("realtime.presence_heartbeat_secs", "must be between 1 and 3600 seconds");
        }
        if self.audit.batch_max == 0 || self.audit.queue_capacity == 0 {
            return bad("audit.batch_max / audit.queue_capacity", "must be at least 1");
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return bad("server.tls_cert / server.tls_key", "set both or neither");
        }
        if !self.database.url.is_empty()
            && !self.database.url.starts_with("sqlite://")
            && !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return bad("database.url", "must start with sqlite:// or postgres://");
        }
        if !self.smtp.host.is_empty() {
            if self.smtp.from.parse::<lettre::message::Mailbox>().is_err() {
                return bad("smtp.from", "is not an e-mail address (e.g. `SecCollab <noreply@example.org>`)");
            }
            if self.smtp.workers == 0 || self.smtp.workers > 64 {
                return bad("smtp.workers", "must be between 1 and 64");
            }
            if self.smtp.max_attempts == 0 {
                return bad("smtp.max_attempts", "must be at least 1");
            }
            if self.smtp.retry_base_secs == 0 || self.smtp.retry_max_secs < self.smtp.retry_base_secs {
                return bad("smtp.retry_base_secs / smtp.retry_max_secs", "need 0 < base <= max");
            }
            if let Some(ca) = &self.smtp.ca_file {
                if std::fs::metadata(ca).is_err() {
                    return bad("smtp.ca_file", "cannot be read");
                }
            }
            if self.smtp.timeout_secs == 0 || self.smtp.claim_timeout_secs <= self.smtp.timeout_secs {
                return bad("smtp.timeout_secs / smtp.claim_timeout_secs", "need 0 < timeout < claim timeout");
            }
        }
        if !self.smtp.public_url.is_empty()
            && !self.smtp.public_url.starts_with("https://")
            && !self.smtp.public_url.starts_with("http://")
        {
            return bad("smtp.public_url", "must start with http:// or https://");
        }
        if !self.siem.target.is_empty() {
            let ok = self
                .siem
                .target
                .strip_prefix("udp://")
                .or_else(|| self.siem.target.strip_prefix("tcp://"))
                .is_some_and(|hp| hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()));
            if !ok {
                return bad("siem.target", "must be udp://HOST:PORT or tcp://HOST:PORT (or empty)");
            }
        }
        if self.admin.idle_timeout_secs < 60 || self.admin.idle_timeout_secs > self.admin.absolute_timeout_secs {
            return bad("admin.idle_timeout_secs", "must be at least 60 and at most admin.absolute_timeout_secs");
        }
        if self.web.idle_timeout_secs < 60 || self.web.idle_timeout_secs > self.web.absolute_timeout_secs {
            return bad("web.idle_timeout_secs", "must be at least 60 and at most web.absolute_timeout_secs");
        }
        if self.web.absolute_timeout_secs > 30 * 86_400 {
            return bad("web.absolute_timeout_secs", "must be at most 30 days");
        }
        if self.admin.absolute_timeout_secs > 7 * 86_400 {
            return bad("admin.absolute_timeout_secs", "must be at most 7 days");
        }
        if self.plugins.call_timeout_secs == 0 || self.plugins.breaker_failures == 0 {
            return bad("plugins.call_timeout_secs / plugins.breaker_failures", "must be at least 1");
        }
        if self.storage.backend != "local" && !self.plugins.enabled.contains_key(&self.storage.backend) {
            return bad(
                "storage.backend",
                &format!(
                    "`{}` is neither `local` nor an enabled plugin (add `[plugins.enabled.{}]`)",
                    self.storage.backend, self.storage.backend
                ),
            );
        }
        for (name, p) in &self.plugins.enabled {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return bad(&format!("plugins.enabled.{name}"), "a plugin name is letters, digits, `_` and `-`");
            }
            if !p.settings.is_object() {
                return bad(&format!("plugins.enabled.{name}.settings"), "must be a table");
            }
            if let Some(h) = &p.sha256 {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return bad(&format!("plugins.enabled.{name}.sha256"), "must be 64 hex digits");
                }
            }
        }
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return bad("log.level", "is not a valid tracing filter (try `info`)");
        }
        Ok(())
    }

    /// The database URL with the embedded default filled in.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.storage.data_dir.join("seccollab.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// Base URL for links in e-mails.
    pub fn public_url(&self) -> String {
        if !self.smtp.public_url.is_empty() {
            return self.smtp.public_url.trim_end_matches('/').to_string();
        }
        let scheme = if self.server.tls_enabled() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.server.address, self.server.port)
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys.dir.clone().unwrap_or_else(|| self.storage.data_dir.join("keys"))
    }

    /// The effective configuration as TOML with every secret replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        c.database.url = redact_url(&self.database_url());
        if !c.smtp.password.is_empty() {
            c.smtp.password = REDACTED.into();
        }
        if !c.metrics.token.is_empty() {
            c.metrics.token = REDACTED.into();
        }
        for p in c.plugins.enabled.values_mut() {
            redact_settings(&mut p.settings);
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// Hides the password of `scheme://user:password@host/...`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((cred, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match cred.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}"),
        None => url.to_string(),
    }
}

fn describe(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_database_password() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nprot = 1\n").unwrap();
        let err = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
    }
}
