//! The admin console's views: one struct per page, rendered by askama with HTML
//! auto-escaping (every value a user or a client could have chosen — names, e-mail addresses,
//! file names, audit details — is escaped; nothing here is marked `safe` except the QR code
//! SVG, which the server draws itself). Views take plain data; the platform's `/admin` routes
//! fill them (`platform/src/admin`).

use askama::Template;

/// The stylesheet, served at `/admin/assets/admin.css`.
pub const CSS: &str = include_str!("../assets/admin.css");

/// The pages' only script (an ES module, no build step), served at `/admin/assets/admin.js`:
/// live alerts over the console's WebSocket. Every page works without it.
pub const JS: &str = include_str!("../assets/admin.js");

/// What every signed-in page shows in its header.
#[derive(Debug, Clone)]
pub struct Nav {
    /// The signed-in admin's display name.
    pub admin: String,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// Which section is current: `dashboard`, `users`, `files`, `audit`, `alerts`, `plugins`, `system`.
    pub active: &'static str,
}

impl Nav {
    pub fn is(&self, section: &str) -> bool {
        self.active == section
    }
}

#[derive(Template, Debug)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub email: String,
    pub error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "mfa.html")]
pub struct MfaPage {
    pub csrf: String,
    pub mfa_token: String,
    pub error: Option<String>,
}

/// An admin without a second factor sets one up before the console opens.
#[derive(Template, Debug)]
#[template(path = "enrol.html")]
pub struct EnrolPage {
    pub csrf: String,
    pub mfa_token: String,
    /// The secret in base32, for typing into an authenticator by hand.
    pub secret: String,
    /// The `otpauth://` QR code as SVG, drawn by the server.
    pub qr_svg: String,
    pub error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "recovery.html")]
pub struct RecoveryCodesPage {
    pub nav: Nav,
    pub codes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Stat {
    pub label: String,
    pub value: String,
}

/// One bar of a server-drawn SVG bar chart; geometry computed by [`Chart::new`].
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub label: String,
    pub value: u64,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    /// Words for screen readers and the table under the chart.
    pub summary: String,
    pub width: u32,
    pub height: u32,
    pub max: u64,
    pub bars: Vec<Bar>,
    /// Label under the first and the last bar.
    pub first_label: String,
    pub last_label: String,
}

impl Chart {
    pub const WIDTH: u32 = 480;
    pub const HEIGHT: u32 = 120;

    /// A bar chart of `(label, value)` points, oldest first.
    pub fn new(title: &str, points: &[(String, u64)]) -> Self {
        let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
        let n = points.len().max(1) as u32;
        let slot = Self::WIDTH / n;
        let w = slot.saturating_sub(2).max(1);
        let total: u64 = points.iter().map(|p| p.1).sum();
        let bars = points
            .iter()
            .enumerate()
            .map(|(i, (label, value))| {
                let h = ((*value as f64 / max as f64) * (Self::HEIGHT - 4) as f64).round() as u32;
                let h = if *value > 0 { h.max(1) } else { 0 };
                Bar { x: i as u32 * slot, y: Self::HEIGHT - h, w, h, label: label.clone(), value: *value }
            })
            .collect();
        Chart {
            title: title.to_string(),
            summary: format!("{title}: {total} in all, at most {max} in one interval"),
            width: Self::WIDTH,
            height: Self::HEIGHT,
            max,
            bars,
            first_label: points.first().map(|p| p.0.clone()).unwrap_or_default(),
            last_label: points.last().map(|p| p.0.clone()).unwrap_or_default(),
        }
    }
}

#[derive(Template, Debug)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub nav: Nav,
    pub stats: Vec<Stat>,
    /// `24h` or `7d`.
    pub range: String,
    pub charts: Vec<Chart>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub mfa: bool,
    pub disabled: bool,
    /// The alert rule that suspended the account (an automatic response), if suspended.
    pub suspended: Option<String>,
    /// Wait left on a lockout, e.g. `14 min`; `None` when not locked.
    pub locked: Option<String>,
    pub created: String,
}

/// An invitation just created: its code is shown this once.
#[derive(Debug, Clone)]
pub struct NewInvite {
    pub code: String,
    pub email: String,
    pub expires: String,
}

#[derive(Template, Debug)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub nav: Nav,
    pub q: String,
    pub users: Vec<UserRow>,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub invite: Option<NewInvite>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: String,
    pub action: String,
    pub outcome: String,
    pub ip: String,
    pub since: String,
    pub until: String,
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub ip: String,
    pub outcome: String,
    pub details: String,
}

#[derive(Debug, Clone)]
pub struct ChainStatus {
    pub ok: bool,
    pub checked: u64,
    pub first_bad_id: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub nav: Nav,
    pub filter: AuditFilter,
    pub entries: Vec<AuditEntry>,
    /// Query string of the next (older) page, when there is one.
    pub next: Option<String>,
    /// Query string of the current filter, for the export links.
    pub query: String,
    pub chain: Option<ChainStatus>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AlertRow {
    pub id: String,
    pub at: String,
    pub kind: String,
    pub severity: String,
    pub subject: String,
    pub details: String,
    pub acked: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "alerts.html")]
pub struct AlertsPage {
    pub nav: Nav,
    pub open_only: bool,
    pub alerts: Vec<AlertRow>,
    /// Blocked addresses (automatic responses), active first.
    pub blocks: Vec<BlockRow>,
    /// Accounts held by automatic responses (suspended, or waiting for re-verification).
    pub held: Vec<HeldRow>,
}

#[derive(Debug, Clone)]
pub struct HeldRow {
    pub user_id: String,
    pub email: String,
    /// `suspended` or `reverify`.
    pub state: String,
    /// What the row says: the rule and time of a suspension, or the sessions waiting.
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct BlockRow {
    pub id: String,
    pub ip: String,
    pub reason: String,
    pub since: String,
    pub until: String,
    pub active: bool,
    /// "lifted at … by …" when an admin lifted it.
    pub lifted: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PluginRow {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub abi: String,
    pub builtin: bool,
    pub health: String,
    pub error: String,
    pub calls: u64,
    pub failures: u64,
    pub sha256: String,
}

#[derive(Template, Debug)]
#[template(path = "plugins.html")]
pub struct PluginsPage {
    pub nav: Nav,
    pub plugins: Vec<PluginRow>,
}

#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub size: String,
    pub uploaded: String,
    pub scan_status: String,
    pub integrity: String,
    /// Rules that matched, from the file's latest malware alert.
    pub matches: String,
}

#[derive(Template, Debug)]
#[template(path = "files.html")]
pub struct FilesPage {
    pub nav: Nav,
    /// `quarantined`, `compromised` or `error`.
    pub show: String,
    pub files: Vec<FileRow>,
    pub notice: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub created: String,
    pub expires: String,
    pub ip: String,
    pub user_agent: String,
}

#[derive(Template, Debug)]
#[template(path = "user.html")]
pub struct UserPage {
    pub nav: Nav,
    pub user: UserRow,
    pub sessions: Vec<SessionRow>,
    pub activity: Vec<AuditEntry>,
    pub notice: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub created: String,
    pub to: String,
    pub subject: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: String,
}

/// Policies (YARA rule files, reload), the e-mail outbox and the effective configuration.
#[derive(Template, Debug)]
#[template(path = "system.html")]
pub struct SystemPage {
    pub nav: Nav,
    pub rule_files: Vec<String>,
    pub policy_dir: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub mail_enabled: bool,
    /// `(status, count)` of the outbox.
    pub mail_counts: Vec<(String, i64)>,
    pub outbox: Vec<OutboxRow>,
    /// The storage backend and its circuit breaker.
    pub storage: StorageRow,
    /// The configuration as TOML, secrets redacted.
    pub config: String,
    /// Objects the database does not know, kept aside under `<data_dir>/orphans`.
    pub orphans: Vec<OrphanRow>,
    /// Where they are kept, and for how many days.
    pub orphans_dir: String,
    pub orphan_retention_days: u64,
    /// A peer that sent `X-Forwarded-For` without being a trusted proxy, if one did.
    pub untrusted_forwarder: Option<String>,
}

/// An object kept aside because the database did not know it.
#[derive(Debug, Clone)]
pub struct OrphanRow {
    pub key: String,
    pub bytes: u64,
    pub moved_at: String,
}

#[derive(Debug, Clone)]
pub struct StorageRow {
    pub backend: String,
    /// `ok`, `degraded` or `paused` (the badge).
    pub health: String,
    /// The breaker's state in words.
    pub state: String,
    pub calls: u64,
    pub failures: u64,
    pub last_error: String,
}

#[derive(Template, Debug)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub title: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nav() -> Nav {
        Nav { admin: "<b>Root</b>".into(), csrf: "tok\"en".into(), active: "users" }
    }

    #[test]
    fn hostile_values_are_escaped() {
        let page = UsersPage {
            nav: nav(),
            q: "\"><script>alert(1)</script>".into(),
            users: vec![UserRow {
                id: "u1".into(),
                email: "x@example.org".into(),
                display_name: "<script>alert(1)</script>".into(),
                role: "user".into(),
                mfa: false,
                disabled: true,
                suspended: Some("<i>rule</i>".into()),
                locked: Some("5 min".into()),
                created: "2026-11-27".into(),
            }],
            notice: None,
            error: None,
            invite: None,
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>alert(1)</script>") && !page.contains("<i>rule</i>"), "{page}");
        assert!(page.contains(">Reinstate<"), "{page}");
        assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{page}");
        assert!(!page.contains("<b>Root</b>"));
        assert!(page.contains("value=\"tok&#34;en\"") || page.contains("value=\"tok&quot;en\""), "{page}");
    }

    #[test]
    fn chart_geometry_scales_to_the_largest_value() {
        let c = Chart::new("Sign-ins", &[("a".into(), 0), ("b".into(), 5), ("c".into(), 10)]);
        assert_eq!(c.max, 10);
        assert_eq!(c.bars[0].h, 0);
        assert_eq!(c.bars[2].h, Chart::HEIGHT - 4);
        assert_eq!(c.bars[1].h, (Chart::HEIGHT - 4) / 2);
        assert_eq!(c.bars[2].y + c.bars[2].h, Chart::HEIGHT);
        assert!(c.summary.contains("15 in all"));
    }
}
