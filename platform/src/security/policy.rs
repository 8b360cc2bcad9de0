//! `policies/security.toml`: lockout, throttling, password and hashing policy an operator tunes
//! without code. A missing file means the defaults below; an unknown key is an error.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityPolicy {
    pub lockout: LockoutPolicy,
    pub password: PasswordPolicy,
    pub argon2: Argon2Policy,
    pub upload: UploadPolicy,
    pub scan: ScanPolicy,
    pub anomaly: AnomalyPolicy,
    pub responses: ResponsePolicy,
    pub rate_limits: super::ratelimit::RateLimitPolicy,
}

/// Automatic responses to the anomaly rules (`security::responses`, docs/admin.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsePolicy {
    /// Addresses never blocked automatically (the break-glass path: an admin on the server or
    /// behind these addresses can always reach the console). Default: loopback.
    pub never_block: Vec<ipnet::IpNet>,
    /// Rules about an address (`credential_stuffing`) may `block_ip`.
    pub credential_stuffing: Response,
    /// Rules about a user may `revoke_sessions`, `suspend_account` (never of an
    /// administrator) or `force_mfa`.
    pub exfiltration: Response,
    pub mass_sharing: Response,
    pub refresh_token_reuse: Response,
    /// About an administrator: `force_mfa` or none (never anything that locks an admin out).
    pub admin_new_location: Response,
}

impl Default for ResponsePolicy {
    fn default() -> Self {
        Self {
            never_block: vec!["127.0.0.0/8".parse().expect("net"), "::1/128".parse().expect("net")],
            credential_stuffing: Response { action: ResponseAction::BlockIp, duration_secs: 900 },
            exfiltration: Response { action: ResponseAction::None, duration_secs: 0 },
            mass_sharing: Response { action: ResponseAction::None, duration_secs: 0 },
            refresh_token_reuse: Response { action: ResponseAction::None, duration_secs: 0 },
            admin_new_location: Response { action: ResponseAction::None, duration_secs: 0 },
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub action: ResponseAction,
    /// How long a `block_ip` lasts.
    #[serde(default)]
    pub duration_secs: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResponseAction {
    None,
    BlockIp,
    RevokeSessions,
    SuspendAccount,
    ForceMfa,
}

/// Anomaly rules evaluated from the audit stream (`security::anomaly`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyPolicy {
    /// How often new audit entries are read (seconds).
    pub poll_secs: u64,
    /// One alert per rule and subject (IP or user) within this many seconds.
    pub dedup_secs: u64,
    pub credential_stuffing: CountRule,
    pub exfiltration: CountRule,
    pub mass_sharing: CountRule,
    pub admin_new_location: NewLocationRule,
    pub refresh_token_reuse: Toggle,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        Self {
            poll_secs: 2,
            dedup_secs: 3600,
            credential_stuffing: CountRule { enabled: true, window_secs: 600, threshold: 5 },
            exfiltration: CountRule { enabled: true, window_secs: 300, threshold: 50 },
            mass_sharing: CountRule { enabled: true, window_secs: 300, threshold: 20 },
            admin_new_location: NewLocationRule { enabled: true, lookback_days: 90 },
            refresh_token_reuse: Toggle { enabled: true },
        }
    }
}

/// `threshold` events (distinct accounts for credential stuffing) within `window_secs`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CountRule {
    pub enabled: bool,
    pub window_secs: u64,
    pub threshold: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewLocationRule {
    pub enabled: bool,
    /// Earlier sign-ins looked at for known IPs and user agents.
    pub lookback_days: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub enabled: bool,
}

/// What may be uploaded, judged on content (magic bytes), never on the name or Content-Type.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadPolicy {
    /// MIME types (as detected from content) refused with 415.
    pub blocked_types: Vec<String>,
    /// Bytes of files one user may own in all (0: no quota). Over it: 507 `quota_exceeded`.
    pub quota_bytes_per_user: u64,
    /// Uploads (files and media messages) one user may have in flight at once (across all
    /// nodes on PostgreSQL); more: 429 `too_many_uploads`.
    pub max_concurrent_per_user: u32,
    /// Bytes per second one user's uploads may send together (per node; 0: no limit). The
    /// server reads slower, so the client is slowed by TCP flow control.
    pub bandwidth_bytes_per_sec_per_user: u64,
}

impl Default for UploadPolicy {
    fn default() -> Self {
        Self {
            blocked_types: [
                "application/vnd.microsoft.portable-executable",
                "application/x-executable",
                "application/x-mach-binary",
                "application/x-msdownload",
                "application/vnd.android.package-archive",
            ]
            .map(String::from)
            .to_vec(),
            quota_bytes_per_user: 0,
            max_concurrent_per_user: 4,
            bandwidth_bytes_per_sec_per_user: 0,
        }
    }
}

/// The malware scan pool.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanPolicy {
    /// Files up to this size are scanned whole, in memory; larger ones block by block with
    /// bounded memory (where `filesize`, `uint*` and modules are undefined).
    pub max_bytes: u64,
    /// Files scanned at once.
    pub workers: usize,
    /// Longest one YARA-X scan may take; a scan that runs out of time holds the file (`error`).
    pub timeout_secs: u64,
    /// A file over `max_bytes` and a plugin scanner that cannot stream it: `hold` it (`error`,
    /// 423 until an admin releases it; the default, fail closed) or let YARA-X alone judge it
    /// (`yara_only`).
    pub oversize: Oversize,
}

/// What happens to a file a plugin scanner cannot see whole (`scan.oversize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    #[default]
    Hold,
    YaraOnly,
}

impl Default for ScanPolicy {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, workers: 1, timeout_secs: 120, oversize: Oversize::Hold }
    }
}

/// Per-account lockout (Keycloak-like) and per-IP back-off (Nextcloud-like).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutPolicy {
    /// Failures (password or MFA) before an account is locked.
    pub max_failures: u32,
    /// First lock; each further lock doubles, up to `max_lock_secs`. Never permanent.
    pub first_lock_secs: u64,
    pub max_lock_secs: u64,
    /// Failures from one IP before it must wait; the wait doubles per failure.
    pub ip_free_failures: u32,
    pub ip_max_backoff_secs: u64,
    /// Counters are forgotten after this long without a failure.
    pub window_secs: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            first_lock_secs: 60,
            max_lock_secs: 900,
            ip_free_failures: 10,
            ip_max_backoff_secs: 30,
            window_secs: 12 * 3600,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    /// zxcvbn score (0–4) a password must reach.
    pub min_score: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_length: 12, max_length: 1024, min_score: 3 }
    }
}

/// argon2id parameters (OWASP defaults) and the bounds on concurrent hashing.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Policy {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; 0 = one per core.
    pub workers: usize,
    /// Sign-ins waiting for a hashing slot before new ones get 503.
    pub queue_limit: usize,
}

impl Default for Argon2Policy {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1, workers: 0, queue_limit: 256 }
    }
}

impl SecurityPolicy {
    /// Checks what the types cannot: each response fits its rule's subject.
    pub fn check(&self) -> Result<(), String> {
        let r = &self.responses;
        if !matches!(r.credential_stuffing.action, ResponseAction::None | ResponseAction::BlockIp) {
            return Err("responses.credential_stuffing: the rule names an address; use block_ip or none".into());
        }
        if r.credential_stuffing.action == ResponseAction::BlockIp && r.credential_stuffing.duration_secs == 0 {
            return Err("responses.credential_stuffing.duration_secs: a block needs a duration > 0".into());
        }
        for (name, rule) in [
            ("exfiltration", &r.exfiltration),
            ("mass_sharing", &r.mass_sharing),
            ("refresh_token_reuse", &r.refresh_token_reuse),
        ] {
            if rule.action == ResponseAction::BlockIp {
                return Err(format!(
                    "responses.{name}: the rule names a user; use revoke_sessions, suspend_account, force_mfa or none"
                ));
            }
        }
        if !matches!(r.admin_new_location.action, ResponseAction::None | ResponseAction::ForceMfa) {
            return Err("responses.admin_new_location: the rule names an administrator; use force_mfa or none \
                        (nothing may lock every administrator out)"
                .into());
        }
        Ok(())
    }

    /// Reads `<dir>/security.toml`; defaults when it does not exist.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("security.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let p: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                p.check().map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(p)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "no security policy file; using defaults");
                Ok(Self::default())
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}
