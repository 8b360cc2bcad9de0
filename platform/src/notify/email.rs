//! The durable e-mail outbox and its delivery workers.
//!
//! * **Recorded with the action.** An e-mail is rendered (askama, text + HTML, ICS attached where
//!   a meeting is concerned) and inserted into `email_outbox` in the same transaction as the
//!   action that causes it ([`super::Delivery`]). The request never waits on SMTP.
//! * **Claim, then send, then mark.** A worker claims a few due rows (`status = 'sending'`,
//!   `claimed_by`, `claimed_at`) in a committed transaction, sends each through the
//!   [`EmailNotifier`] (lettre over SMTP), and marks it `sent` — or, after a transient failure,
//!   `queued` again with `next_attempt_at` pushed out exponentially with jitter; after a permanent
//!   failure or `smtp.max_attempts` attempts, `failed` with the last error (audited, and the
//!   recipient gets an in-app notice instead: the fallback channel).
//! * **Crashes.** A claim left by a process that died is released (at start on SQLite, which is
//!   one node; after `smtp.claim_timeout_secs` on PostgreSQL). The retry carries the same
//!   `Message-ID`, so the only duplicate possible is a message the SMTP server accepted in the
//!   instant between its `250` and our commit, and that one is recognisable by its Message-ID.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use askama::Template;
use diesel::prelude::*;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{Message, SmtpTransport, Transport};
use rand::Rng;
use seccollab_plugin_api::{Notifier, NotifyError, Outbound};
use serde::Serialize;

use super::Person;
use crate::audit::{NewAuditEntry, Outcome};
use crate::config::{Config, SmtpConfig, SmtpTls};
use crate::db::schema::email_outbox as eo;
use crate::db::{write_transaction, DbConnection};
use crate::AppState;

/// One e-mail in the outbox.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = eo)]
pub struct OutboxRow {
    pub id: String,
    pub message_id: String,
    pub user_id: Option<String>,
    pub to_addr: String,
    pub to_name: String,
    pub subject: String,
    /// [`Content`] as JSON.
    pub content: String,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub claimed_by: Option<String>,
    pub claimed_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// The rendered message of an outbox row.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Content {
    pub text: String,
    pub html: String,
    #[serde(default)]
    pub ics: Option<String>,
    /// `REQUEST` or `CANCEL`.
    #[serde(default)]
    pub ics_method: Option<String>,
}

/// An outbox entry as the admin API shows it (no bodies).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutboxView {
    pub id: String,
    pub message_id: String,
    pub kind: String,
    pub to: String,
    pub subject: String,
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
}

impl From<&OutboxRow> for OutboxView {
    fn from(r: &OutboxRow) -> Self {
        Self {
            id: r.id.clone(),
            message_id: r.message_id.clone(),
            kind: r.kind.clone(),
            to: r.to_addr.clone(),
            subject: r.subject.clone(),
            status: r.status.clone(),
            attempts: r.attempts,
            last_error: r.last_error.clone(),
            created_at: crate::time::micros_to_rfc3339(r.created_at),
            next_attempt_at: (r.status == "queued").then(|| crate::time::micros_to_rfc3339(r.next_attempt_at)),
            sent_at: r.sent_at.map(crate::time::micros_to_rfc3339),
        }
    }
}

/// One header line: control characters (CR, LF, TAB, ...) become spaces, runs of spaces collapse,
/// and the result is cut at `max` characters. Header injection is impossible by construction.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    let mut space = false;
    let mut n = 0;
    for ch in s.chars() {
        let c = if ch.is_control() || ch.is_whitespace() { ' ' } else { ch };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        out.push(c);
        n += 1;
        if n >= max {
            break;
        }
    }
    out.trim_end().to_string()
}

/// The domain of the configured sender, for Message-IDs.
fn sender_domain(cfg: &SmtpConfig) -> String {
    cfg.from
        .parse::<Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_else(|_| "seccollab.invalid".to_string())
}

impl OutboxRow {
    /// A queued e-mail to `to`.
    pub fn new(cfg: &Config, to: &Person, kind: &str, subject: &str, text: String, html: String) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        let now = crate::time::now_micros();
        Self {
            message_id: format!("{id}@{}", sender_domain(&cfg.smtp)),
            id,
            user_id: Some(to.id.clone()),
            to_addr: to.email.clone(),
            to_name: one_line(&to.display_name, 100),
            subject: one_line(subject, 250),
            content: serde_json::to_string(&Content { text, html, ics: None, ics_method: None })
                .expect("strings serialise"),
            kind: kind.to_string(),
            status: "queued".into(),
            attempts: 0,
            next_attempt_at: now,
            claimed_by: None,
            claimed_at: None,
            last_error: None,
            created_at: now,
            sent_at: None,
        }
    }

    /// Attaches an iCalendar object (`REQUEST` or `CANCEL`).
    pub fn with_ics(mut self, ics: String, method: &str) -> Self {
        let mut c = self.body();
        c.ics = Some(ics);
        c.ics_method = Some(method.to_string());
        self.content = serde_json::to_string(&c).expect("strings serialise");
        self
    }

    /// The rendered message (an unreadable one yields empty bodies, sent as such).
    pub fn body(&self) -> Content {
        serde_json::from_str(&self.content).unwrap_or_default()
    }

    fn outbound(&self) -> Outbound {
        let body = self.body();
        let mut attachments = Vec::new();
        if let (Some(ics), Some(method)) = (&body.ics, &body.ics_method) {
            attachments.push(seccollab_plugin_api::Attachment {
                filename: if method == "CANCEL" { "cancel.ics" } else { "invite.ics" }.into(),
                content_type: format!("text/calendar; method={method}; charset=UTF-8"),
                data: ics.clone().into_bytes(),
            });
        }
        Outbound {
            id: self.message_id.clone(),
            kind: self.kind.clone(),
            user_id: self.user_id.clone(),
            address: self.to_addr.clone(),
            display_name: self.to_name.clone(),
            subject: self.subject.clone(),
            text: body.text,
            html: Some(body.html),
            attachments,
        }
    }
}

/// Inserts outbox rows (inside the caller's transaction).
pub fn insert(c: &mut DbConnection, rows: &[OutboxRow]) -> QueryResult<()> {
    for chunk in rows.chunks(100) {
        // Batch inserts are dispatched per backend: MultiConnection cannot express them.
        let insert = diesel::insert_into(eo::table).values(chunk);
        match c {
            DbConnection::Sqlite(c) => insert.execute(c)?,
            DbConnection::Pg(c) => insert.execute(c)?,
        };
    }
    Ok(())
}

// ---------- templates ----------

/// Meeting invitation, update or cancellation.
#[derive(Template)]
#[template(path = "email/meeting.txt")]
pub struct MeetingText<'a> {
    pub heading: &'a str,
    pub intro: &'a str,
    pub title: &'a str,
    pub when: &'a str,
    pub organizer: &'a str,
    pub participants: &'a str,
    pub description: &'a str,
    pub link: &'a str,
    pub cancelled: bool,
}

#[derive(Template)]
#[template(path = "email/meeting.html")]
pub struct MeetingHtml<'a> {
    pub heading: &'a str,
    pub intro: &'a str,
    pub title: &'a str,
    pub when: &'a str,
    pub organizer: &'a str,
    pub participants: &'a str,
    pub description: &'a str,
    pub link: &'a str,
    pub cancelled: bool,
}

/// Any other notice: a title, a sentence and a link.
#[derive(Template)]
#[template(path = "email/notice.txt")]
struct NoticeText<'a> {
    title: &'a str,
    body: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "email/notice.html")]
struct NoticeHtml<'a> {
    title: &'a str,
    body: &'a str,
    link: &'a str,
}

/// Renders a simple notice e-mail to `to`.
pub fn notice(cfg: &Config, to: &Person, kind: &str, title: &str, body: &str, link: &str) -> askama::Result<OutboxRow> {
    let text = NoticeText { title, body, link }.render()?;
    let html = NoticeHtml { title, body, link }.render()?;
    Ok(OutboxRow::new(cfg, to, kind, title, text, html))
}

// ---------- sending ----------

/// The built-in e-mail notifier: lettre over SMTP (plain, STARTTLS or TLS, optional auth),
/// with a pooled connection.
pub struct EmailNotifier {
    transport: SmtpTransport,
    from: Mailbox,
}

impl std::fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailNotifier").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl EmailNotifier {
    pub fn new(cfg: &SmtpConfig) -> Result<Self, String> {
        let tls = if cfg.tls == SmtpTls::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(cfg.host.clone());
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("smtp.ca_file {}: {e}", ca.display()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| format!("smtp.ca_file {}: {e}", ca.display()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build().map_err(|e| format!("TLS: {e}"))?;
            // STARTTLS is required, never opportunistic: no silent fallback to plain text.
            if cfg.tls == SmtpTls::Starttls {
                Tls::Required(params)
            } else {
                Tls::Wrapper(params)
            }
        };
        let mut builder = SmtpTransport::builder_dangerous(&cfg.host)
            .tls(tls)
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(cfg.timeout_secs)))
            .pool_config(PoolConfig::new().max_size(1).idle_timeout(Duration::from_secs(60)));
        if !cfg.username.is_empty() {
            builder = builder.credentials(Credentials::new(cfg.username.clone(), cfg.password.clone()));
        }
        let from = cfg.from.parse::<Mailbox>().map_err(|e| format!("smtp.from: {e}"))?;
        Ok(Self { transport: builder.build(), from })
    }

    fn message(&self, m: &Outbound, created: SystemTime) -> Result<Message, NotifyError> {
        let to_addr = m.address.parse().map_err(|e| NotifyError::Permanent(format!("recipient address: {e}")))?;
        let name = one_line(&m.display_name, 100);
        let to = Mailbox::new((!name.is_empty()).then_some(name), to_addr);
        let body = MultiPart::alternative_plain_html(m.text.clone(), m.html.clone().unwrap_or_default());
        let body = if m.attachments.is_empty() {
            body
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            for a in &m.attachments {
                let ct = ContentType::parse(&a.content_type)
                    .map_err(|e| NotifyError::Permanent(format!("attachment type: {e}")))?;
                mixed = mixed.singlepart(Attachment::new(a.filename.clone()).body(a.data.clone(), ct));
            }
            mixed
        };
        Message::builder()
            .message_id(Some(format!("<{}>", m.id)))
            .date(created)
            .from(self.from.clone())
            .to(to)
            .subject(one_line(&m.subject, 250))
            .multipart(body)
            .map_err(|e| NotifyError::Permanent(format!("message: {e}")))
    }
}

impl Notifier for EmailNotifier {
    fn name(&self) -> &str {
        "smtp"
    }

    fn channel(&self) -> &str {
        "email"
    }

    fn deliver(&self, m: &Outbound) -> Result<(), NotifyError> {
        self.deliver_at(m, SystemTime::now())
    }
}

impl EmailNotifier {
    /// Sends `m` with a `Date` of `created` (stable across retries).
    pub fn deliver_at(&self, m: &Outbound, created: SystemTime) -> Result<(), NotifyError> {
        let msg = self.message(m, created)?;
        match self.transport.send(&msg) {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(NotifyError::Permanent(e.to_string())),
            // A 4xx reply: the server is there and said "later" about this message.
            Err(e) if e.is_transient() => Err(NotifyError::Transient(e.to_string())),
            // No connection, TLS or a timeout: the server is not there for anyone.
            Err(e) => Err(NotifyError::Unavailable(e.to_string())),
        }
    }
}

/// The in-app channel as a [`Notifier`]: stores a notification and pushes it live. Actions use
/// [`super::Delivery`] to do this inside their own transaction; this is the path for notices
/// raised outside one (the fallback when an e-mail could not be delivered).
pub struct InAppNotifier {
    pub events: crate::events::EventBus,
}

impl std::fmt::Debug for InAppNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InAppNotifier")
    }
}

impl Notifier for InAppNotifier {
    fn name(&self) -> &str {
        "in_app"
    }

    fn channel(&self) -> &str {
        "in_app"
    }

    fn deliver(&self, m: &Outbound) -> Result<(), NotifyError> {
        let Some(user) = &m.user_id else { return Err(NotifyError::Permanent("no user to notify".into())) };
        let mut d = super::Delivery::default();
        d.notify(user, &m.kind, m.subject.clone(), m.text.clone(), serde_json::json!({"notice_id": m.id}));
        let (rows, events) = d.into_job(None);
        self.events.commit_blocking(Some(rows), events).map_err(|e| NotifyError::Unavailable(e.to_string()))
    }
}

/// Counters for `/metrics`, the admin API and the benchmark.
#[derive(Debug, Default)]
pub struct MailStats {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
}

/// Handle to the delivery workers.
pub struct Mailer {
    enabled: bool,
    generation: Mutex<u64>,
    cv: Condvar,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub stats: MailStats,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("enabled", &self.enabled).finish_non_exhaustive()
    }
}

const CLAIM_BATCH: i64 = 4;
const POLL: Duration = Duration::from_secs(1);

impl Mailer {
    /// E-mail is on when `smtp.host` is set; workers start with [`Mailer::start`].
    pub fn new(cfg: &Config) -> Self {
        Self {
            enabled: !cfg.smtp.host.is_empty(),
            generation: Mutex::new(0),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            stats: MailStats::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// New mail was queued: wake the workers now rather than at their next poll.
    pub fn wake(&self) {
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
        }
        self.cv.notify_all();
    }

    fn wait(&self, seen: u64) {
        let Ok(g) = self.generation.lock() else { return };
        if *g != seen || self.stop.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.cv.wait_timeout(g, POLL);
    }

    /// Sleeps for `d` (the channel is down), waking early only to stop.
    fn pause(&self, d: Duration) {
        let deadline = std::time::Instant::now() + d;
        let Ok(mut g) = self.generation.lock() else { return };
        while !self.stop.load(Ordering::Relaxed) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.cv.wait_timeout(g, left) {
                Ok((guard, _)) => g = guard,
                Err(_) => return,
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation.lock().map(|g| *g).unwrap_or(0)
    }

    /// Releases stale claims and starts `smtp.workers` delivery threads.
    pub fn start(state: &AppState) {
        if !state.mailer.enabled {
            return;
        }
        let sqlite = state.db.backend() == crate::db::Backend::Sqlite;
        match state.db.get() {
            Ok(mut c) => {
                // SQLite is one node: any claim in the database was left by a process that died.
                let released = if sqlite { release_claims(&mut c, None) } else { Ok(0) };
                match released {
                    Ok(n) if n > 0 => {
                        tracing::warn!(count = n, "e-mails claimed by a stopped process are queued again")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "could not release e-mail claims"),
                }
            }
            Err(e) => tracing::error!(error = %e, "could not release e-mail claims"),
        }
        let mut threads = state.mailer.threads.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..state.config.smtp.workers {
            let st = state.clone();
            let t = std::thread::Builder::new()
                .name(format!("mail-{i}"))
                .spawn(move || worker(st, i))
                .expect("spawn mail worker");
            threads.push(t);
        }
    }

    /// Stops the workers after the message each is sending; claimed but unsent rows are
    /// released for the next start.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cv.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Releases claims: all of them (`None`, SQLite at start) or those older than the cutoff.
fn release_claims(c: &mut DbConnection, older_than: Option<i64>) -> QueryResult<usize> {
    let q = diesel::update(eo::table.filter(eo::status.eq("sending")));
    match older_than {
        None => q.set((eo::status.eq("queued"), eo::claimed_by.eq(None::<String>))).execute(c),
        Some(t) => diesel::update(eo::table.filter(eo::status.eq("sending")).filter(eo::claimed_at.lt(t)))
            .set((eo::status.eq("queued"), eo::claimed_by.eq(None::<String>)))
            .execute(c),
    }
}

/// Claims up to `n` due rows for `me`.
fn claim(c: &mut DbConnection, me: &str, n: i64) -> QueryResult<Vec<OutboxRow>> {
    let now = crate::time::now_micros();
    write_transaction(c, |c| {
        let ids: Vec<String> = eo::table
            .filter(eo::status.eq("queued"))
            .filter(eo::next_attempt_at.le(now))
            .order((eo::next_attempt_at.asc(), eo::id.asc()))
            .limit(n)
            .select(eo::id)
            .load(c)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // `status = 'queued'` again: on PostgreSQL another node may have claimed a row since.
        diesel::update(eo::table.filter(eo::id.eq_any(&ids)).filter(eo::status.eq("queued")))
            .set((eo::status.eq("sending"), eo::claimed_by.eq(me), eo::claimed_at.eq(now)))
            .execute(c)?;
        eo::table
            .filter(eo::id.eq_any(&ids))
            .filter(eo::claimed_by.eq(me))
            .filter(eo::claimed_at.eq(now))
            .filter(eo::status.eq("sending"))
            .order(eo::id.asc())
            .select(OutboxRow::as_select())
            .load(c)
    })
}

/// Back-off before attempt `attempt + 1`: base·2^(attempt-1), capped, with "equal jitter"
/// (half fixed, half random) so retries of many messages spread out.
pub fn backoff(cfg: &SmtpConfig, attempt: i32) -> Duration {
    let exp = cfg.retry_base_secs.saturating_mul(1u64 << (attempt.clamp(1, 30) - 1) as u32);
    let full = exp.min(cfg.retry_max_secs).max(1) as f64;
    let half = full / 2.0;
    Duration::from_secs_f64(half + rand::thread_rng().gen_range(0.0..=half))
}

enum Attempt {
    Sent,
    Retry(String, Duration),
    /// The server was unavailable: queued again for after the pause, no attempt spent.
    Deferred(String, Duration),
    Failed(String),
}

fn worker(state: AppState, idx: usize) {
    let cfg = state.config.smtp.clone();
    let me = format!("{}-{idx}", state.node_id);
    let mailer = state.mailer.clone();
    let mut notifier: Option<EmailNotifier> = None;
    let mut last_release = std::time::Instant::now();
    // Circuit breaker: consecutive "server unavailable" results of this worker.
    let mut down = 0i32;
    while !mailer.stop.load(Ordering::Relaxed) {
        let seen = mailer.generation();
        if idx == 0 && last_release.elapsed() > Duration::from_secs(5) {
            last_release = std::time::Instant::now();
            let cutoff = crate::time::now_micros() - cfg.claim_timeout_secs as i64 * 1_000_000;
            match state
                .db
                .get()
                .map_err(|e| e.to_string())
                .and_then(|mut c| release_claims(&mut c, Some(cutoff)).map_err(|e| e.to_string()))
            {
                Ok(n) if n > 0 => tracing::warn!(count = n, "stale e-mail claims released"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "could not release stale e-mail claims"),
            }
        }
        let rows = match state
            .db
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut c| claim(&mut c, &me, CLAIM_BATCH).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not claim e-mails");
                mailer.wait(seen);
                continue;
            }
        };
        if rows.is_empty() {
            mailer.wait(seen);
            continue;
        }
        let mut rows = rows.into_iter();
        let mut pause = None;
        for row in rows.by_ref() {
            if notifier.is_none() {
                match EmailNotifier::new(&cfg) {
                    Ok(n) => notifier = Some(n),
                    Err(e) => tracing::error!(error = %e, "SMTP transport could not be set up"),
                }
            }
            let outcome = match &notifier {
                None => Attempt::Retry("SMTP transport could not be set up".into(), backoff(&cfg, row.attempts + 1)),
                Some(n) => {
                    let created = UNIX_EPOCH + Duration::from_micros(row.created_at.max(0) as u64);
                    match n.deliver_at(&row.outbound(), created) {
                        Ok(()) => {
                            down = 0;
                            Attempt::Sent
                        }
                        Err(NotifyError::Unavailable(e)) => {
                            // The server is down: this message waits like the channel does
                            // (attempts are not spent on an outage), and the worker pauses.
                            down += 1;
                            // Capped at a minute: the breaker probes at least that often.
                            let wait = backoff(&cfg, down).min(Duration::from_secs(60));
                            pause = Some(wait);
                            Attempt::Deferred(e, wait)
                        }
                        Err(NotifyError::Transient(e)) if row.attempts + 1 < cfg.max_attempts as i32 => {
                            Attempt::Retry(e, backoff(&cfg, row.attempts + 1))
                        }
                        Err(NotifyError::Transient(e) | NotifyError::Permanent(e)) => Attempt::Failed(e),
                    }
                }
            };
            record(&state, &me, &row, outcome);
            if mailer.stop.load(Ordering::Relaxed) || pause.is_some() {
                break;
            }
        }
        // Stopping, or the server is down, with rows still claimed: hand them back untouched.
        let left: Vec<String> = rows.map(|r| r.id).collect();
        if !left.is_empty() {
            if let Ok(mut c) = state.db.get() {
                let _ = diesel::update(eo::table.filter(eo::id.eq_any(&left)).filter(eo::claimed_by.eq(&me)))
                    .set((eo::status.eq("queued"), eo::claimed_by.eq(None::<String>)))
                    .execute(&mut c);
            }
        }
        if let Some(wait) = pause {
            if down == 1 || down % 10 == 0 {
                tracing::warn!(
                    worker = idx,
                    pause_secs = wait.as_secs_f64(),
                    consecutive = down,
                    "SMTP server unavailable; pausing delivery"
                );
            }
            // A transport whose connection broke is rebuilt after the pause.
            notifier = None;
            mailer.pause(wait);
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Writes the result of one attempt; a row reclaimed by someone else meanwhile is left alone.
fn record(state: &AppState, me: &str, row: &OutboxRow, outcome: Attempt) {
    let now = crate::time::now_micros();
    let mine = eo::table.filter(eo::id.eq(&row.id)).filter(eo::claimed_by.eq(me)).filter(eo::status.eq("sending"));
    let attempts = row.attempts + 1;
    let result = state.db.get().map_err(|e| e.to_string()).and_then(|mut c| {
        let q = diesel::update(mine);
        match &outcome {
            Attempt::Sent => q
                .set((
                    eo::status.eq("sent"),
                    eo::attempts.eq(attempts),
                    eo::sent_at.eq(now),
                    eo::claimed_by.eq(None::<String>),
                ))
                .execute(&mut c),
            Attempt::Retry(e, wait) => q
                .set((
                    eo::status.eq("queued"),
                    eo::attempts.eq(attempts),
                    eo::last_error.eq(truncate(e, 1000)),
                    eo::next_attempt_at.eq(now + wait.as_micros() as i64),
                    eo::claimed_by.eq(None::<String>),
                ))
                .execute(&mut c),
            Attempt::Deferred(e, wait) => q
                .set((
                    eo::status.eq("queued"),
                    eo::last_error.eq(truncate(e, 1000)),
                    eo::next_attempt_at.eq(now + wait.as_micros() as i64),
                    eo::claimed_by.eq(None::<String>),
                ))
                .execute(&mut c),
            Attempt::Failed(e) => q
                .set((
                    eo::status.eq("failed"),
                    eo::attempts.eq(attempts),
                    eo::last_error.eq(truncate(e, 1000)),
                    eo::claimed_by.eq(None::<String>),
                ))
                .execute(&mut c),
        }
        .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        // The claim times out and the message is retried: at least once, never lost.
        tracing::error!(error = %e, id = %row.id, "could not record an e-mail delivery");
    }
    match outcome {
        Attempt::Sent => {
            state.mailer.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        Attempt::Deferred(..) => {
            state.mailer.stats.retried.fetch_add(1, Ordering::Relaxed);
        }
        Attempt::Retry(e, wait) => {
            state.mailer.stats.retried.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = %row.id, attempt = attempts, retry_in_secs = wait.as_secs(), error = %e,
                "e-mail not delivered; will retry");
        }
        Attempt::Failed(e) => {
            state.mailer.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(id = %row.id, attempts, error = %e, "e-mail delivery failed for good");
            state.audit.record_blocking(
                NewAuditEntry::new(crate::audit::AuditAction::NotificationDeliveryFailed, Outcome::Failure)
                    .actor(None)
                    .target("email", row.id.clone())
                    .details(serde_json::json!({
                        "kind": row.kind, "user_id": row.user_id, "attempts": attempts, "error": truncate(&e, 300),
                    })),
            );
            // Fallback channel: tell the recipient in the app what the e-mail would have said.
            if row.user_id.is_some() {
                let mut out = row.outbound();
                out.kind = "email_failed".into();
                out.subject = format!("E-mail not delivered: {}", row.subject);
                let inapp = InAppNotifier { events: state.events.clone() };
                if let Err(e) = inapp.deliver(&out) {
                    tracing::error!(error = %e, "fallback in-app notice not stored");
                }
            }
        }
    }
}

/// Counts of outbox rows by status.
pub fn counts(c: &mut DbConnection) -> QueryResult<Vec<(String, i64)>> {
    eo::table.group_by(eo::status).select((eo::status, diesel::dsl::count_star())).load(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_removes_line_breaks_and_caps_length() {
        assert_eq!(one_line("Hi\r\nBcc: evil@example.org", 100), "Hi Bcc: evil@example.org");
        assert_eq!(one_line("  a\t\tb  ", 100), "a b");
        assert_eq!(one_line(&"x".repeat(1000), 10), "x".repeat(10));
    }

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let cfg = SmtpConfig { retry_base_secs: 10, retry_max_secs: 100, ..SmtpConfig::default() };
        for attempt in 1..12 {
            let full = (10u64 << (attempt - 1)).min(100) as f64;
            let d = backoff(&cfg, attempt).as_secs_f64();
            assert!(d >= full / 2.0 && d <= full, "attempt {attempt}: {d} not in [{}, {full}]", full / 2.0);
        }
    }

    #[test]
    fn templates_escape_html_but_not_text() {
        let m = MeetingHtml {
            heading: "h",
            intro: "i",
            title: "<script>alert(1)</script>",
            when: "w",
            organizer: "o",
            participants: "p",
            description: "\"quoted\" & <b>",
            link: "https://x/y?a=1&b=2",
            cancelled: false,
        }
        .render()
        .unwrap();
        assert!(!m.contains("<script>") && m.contains("&#60;script&#62;"), "{m}");
        assert!(m.contains("&#60;b&#62;") && m.contains("&#38;"));
        let t = MeetingText {
            heading: "h",
            intro: "i",
            title: "<script>",
            when: "w",
            organizer: "o",
            participants: "p",
            description: "",
            link: "l",
            cancelled: true,
        }
        .render()
        .unwrap();
        assert!(t.contains("What:          <script>"), "{t}");
    }
}
