//! SecCollab host: configuration, database, audit log, HTTP API and the modules behind it.
//!
//! [`build_rocket`] is the only place routes are mounted: every module contributes
//! `routes()` and this file mounts them under `/api`.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod events;
pub mod files;
pub mod http;
pub mod keys;
pub mod layering;
pub mod messages;
pub mod notify;
pub mod openapi;
pub mod plugins;
pub mod realtime;
pub mod rotation;
pub mod schedules;
pub mod security;
pub mod system;
pub mod time;
pub mod web;

use std::sync::Arc;

use rocket::fairing::AdHoc;
use rocket::shield::Shield;
use rocket::{Build, Rocket, Route};

use crate::audit::{AuditLog, NewAuditEntry, Outcome};
use crate::config::{Config, LogFormat};
use crate::db::Db;
use crate::http::metrics::Metrics;
use crate::keys::Keys;

/// Everything a request handler may need, managed by Rocket.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<Keys>,
    pub policy: Arc<security::SecurityPolicy>,
    pub hasher: Arc<auth::password::PasswordHasherPool>,
    pub sessions: Arc<auth::sessions::SessionCache>,
    pub storage: Arc<dyn seccollab_plugin_api::StorageBackend>,
    pub scanner: Arc<security::scan::ScanService>,
    pub events: events::EventBus,
    pub hub: Arc<realtime::hub::Hub>,
    /// Identifies this process among the nodes sharing a PostgreSQL database.
    pub node_id: String,
    pub send_limiter: Arc<messages::SendLimiter>,
    pub active_users: Arc<messages::ActiveUsers>,
    /// E-mail delivery workers (idle when `smtp.host` is empty).
    pub mailer: Arc<notify::email::Mailer>,
    /// Built-in and loaded plugins.
    pub plugins: Arc<plugins::Registry>,
    /// Delivery threads of the notifier plugins.
    pub plugin_notify: Arc<plugins::Dispatcher>,
    /// Blocked source addresses (automatic responses), refreshed from the database.
    pub blocks: Arc<security::responses::Blocks>,
    /// Uploads in flight per user (`upload.max_concurrent_per_user`).
    pub upload_slots: Arc<files::limits::UploadSlots>,
    /// Paces each user's upload bodies (`[upload] bandwidth_bytes_per_sec_per_user`).
    pub upload_pace: Arc<files::limits::UploadPace>,
    /// The storage backend's circuit breaker (`plugins::GuardedStorage`).
    pub storage_breaker: Arc<plugins::Breaker>,
    /// Request budgets by route class (`[rate_limits]`).
    pub limiter: Arc<security::ratelimit::RateLimiter>,
}

impl AppState {
    /// 503 for a storage failure: `Retry-After` is the breaker's pause when it is open.
    pub fn storage_unavailable(&self) -> http::ApiError {
        let secs = self.storage_breaker.open_for().map(|d| d.as_secs() + 1).unwrap_or(5);
        http::ApiError::unavailable("storage is unavailable; try again shortly", secs)
    }

    /// Sessions were revoked or changed (signed out, disabled, MFA dropped, held for
    /// re-verification): forget them in the cache and close their WebSockets, here and, through
    /// PostgreSQL, on every other node at once. Call it after the change committed.
    pub fn sessions_revoked(&self, sids: &[String]) {
        self.sessions.forget(sids);
        self.hub.close_sessions(sids);
        realtime::notify::announce_sessions(&self.db, &self.node_id, sids);
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("db", &self.db).field("storage", &self.storage.name()).finish_non_exhaustive()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("security policy: {0}")]
    Policy(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("the HTTP server failed: {0}")]
    Http(String),
}

/// The `/api` routes of every module, mounted by [`build_rocket`] and listed by the OpenAPI test.
pub fn api_routes() -> Vec<Route> {
    let mut r = Vec::new();
    r.extend(system::routes());
    r.extend(audit::routes::routes());
    r.extend(auth::routes::routes());
    r.extend(rocket::routes![
        auth::oauth::providers,
        auth::oauth::login,
        auth::oauth::link_start,
        auth::oauth::callback
    ]);
    r.extend(auth::admin_routes::routes());
    r.extend(files::routes::routes());
    r.extend(messages::routes::routes());
    r.extend(schedules::routes::routes());
    r.extend(notify::routes::routes());
    r.extend(security::alerts::routes());
    r.extend(security::responses::routes());
    r.extend(security::scan_routes::routes());
    r.extend(plugins::routes::routes());
    r
}

/// Builds the Rocket for `state` (not yet launched).
pub fn build_rocket(state: AppState) -> Rocket<Build> {
    let cfg = &state.config;
    let mut fig = figment::Figment::from(rocket::Config::release_default())
        .merge(("address", cfg.server.address))
        .merge(("port", cfg.server.port))
        .merge(("ip_header", false))
        .merge(("log_level", "off"))
        .merge(("cli_colors", false))
        .merge(("shutdown.grace", cfg.server.shutdown_grace_secs))
        .merge(("shutdown.mercy", 3))
        // SIGHUP reloads the YARA rules; only SIGTERM/SIGINT stop the server.
        .merge(("shutdown.signals", ["term"]))
        .merge(("limits.json", cfg.server.max_json_bytes));
    if cfg.server.workers > 0 {
        fig = fig.merge(("workers", cfg.server.workers));
    }
    if let (Some(cert), Some(key)) = (&cfg.server.tls_cert, &cfg.server.tls_key) {
        fig = fig.merge(("tls.certs", cert)).merge(("tls.key", key));
    }
    let scheme = if cfg.server.tls_enabled() { "https" } else { "http" };
    rocket::custom(fig)
        .attach(Shield::new())
        .attach(http::fairings::HttpLayer)
        .attach(AdHoc::on_liftoff("announce", move |r| {
            Box::pin(async move {
                let c = r.config();
                // Printed on stdout so operators and test harnesses see the bound port.
                println!("SecCollab listening on {scheme}://{}:{}", c.address, c.port);
                tracing::info!(address = %c.address, port = c.port, "listening");
            })
        }))
        .manage(state)
        .mount("/api", api_routes())
        .mount(
            "/",
            rocket::routes![
                http::metrics::metrics,
                realtime::ws::ws,
                security::responses::blocked,
                security::ratelimit::limited
            ],
        )
        .mount("/admin", admin::routes::routes())
        .mount("/", web::routes::routes())
        .register("/api", http::error::catchers())
}

/// Sets up logging to stderr as text or JSON lines.
pub fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // `finish` + `set_global_default` rather than `init`: no bridge from the `log` crate, so
    // Rocket's own per-request chatter stays out; this module logs requests itself.
    let _ = match cfg.log.format {
        LogFormat::Json => tracing::subscriber::set_global_default(builder.json().finish()),
        LogFormat::Text => tracing::subscriber::set_global_default(builder.finish()),
    };
}

/// Opens keys, database (migrated) and audit writer: what `serve` and the CLI share. Plugins
/// are not loaded (see [`open_state_with_plugins`]).
pub fn open_state(cfg: Config) -> Result<AppState, StartError> {
    open_state_inner(cfg, false)
}

/// [`open_state`] with the configured plugins loaded: for `serve` and `scan --all`.
pub fn open_state_with_plugins(cfg: Config) -> Result<AppState, StartError> {
    open_state_inner(cfg, true)
}

fn open_state_inner(cfg: Config, with_plugins: bool) -> Result<AppState, StartError> {
    let keys = Keys::load_or_create(&cfg.keys_dir())?;
    let policy = security::SecurityPolicy::load(&cfg.security.policy_dir).map_err(StartError::Policy)?;
    let hasher = auth::password::PasswordHasherPool::new(&policy.argon2).map_err(StartError::Policy)?;
    let db = Db::open(&cfg)?;
    let applied = db.migrate()?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    let audit = AuditLog::start(db.clone(), cfg.audit.batch_max, cfg.audit.queue_capacity);
    let yara = security::scan::YaraScanner::load(&cfg.security.policy_dir.join("yara"))
        .map_err(StartError::Policy)?
        .with_timeout(policy.scan.timeout_secs);
    let plugins = if with_plugins { plugins::Registry::load(&cfg) } else { plugins::Registry::load_storage(&cfg) };
    let guarded = plugins.storage_backend(&cfg).map_err(StartError::Storage)?;
    let storage_breaker = guarded.breaker.clone();
    let storage: Arc<dyn seccollab_plugin_api::StorageBackend> = guarded;
    let scanner = security::scan::ScanService::new(Arc::new(yara), policy.scan.max_bytes, policy.scan.workers)
        .with_plugins(&plugins.scanners)
        .with_oversize(policy.scan.oversize);
    let plugin_notify = Arc::new(plugins::Dispatcher::start(&plugins.notifiers));
    let hub = Arc::new(realtime::hub::Hub::default());
    let node_id = uuid::Uuid::now_v7().simple().to_string();
    let events = events::EventBus::start(db.clone(), hub.clone(), node_id.clone(), cfg.realtime.writer_queue);
    let send_limiter = Arc::new(messages::SendLimiter::new(cfg.messages.send_rate_per_sec, cfg.messages.send_burst));
    let mailer = Arc::new(notify::email::Mailer::new(&cfg));
    let state = AppState {
        config: Arc::new(cfg),
        db,
        audit,
        metrics: Arc::new(Metrics::default()),
        keys: Arc::new(keys),
        policy: Arc::new(policy),
        hasher: Arc::new(hasher),
        sessions: Arc::new(auth::sessions::SessionCache::default()),
        storage,
        scanner: Arc::new(scanner),
        events,
        hub,
        node_id,
        send_limiter,
        active_users: Arc::new(messages::ActiveUsers::default()),
        mailer,
        plugins: Arc::new(plugins),
        plugin_notify,
        blocks: Arc::new(security::responses::Blocks::default()),
        upload_slots: Arc::new(files::limits::UploadSlots::default()),
        upload_pace: Arc::new(files::limits::UploadPace::default()),
        limiter: Arc::new(security::ratelimit::RateLimiter::default()),
        storage_breaker,
    };
    Ok(state)
}

/// Runs the server until SIGTERM/SIGINT, then drains requests and flushes the audit log.
pub async fn serve(cfg: Config) -> Result<(), StartError> {
    let state = tokio::task::spawn_blocking(move || open_state_with_plugins(cfg))
        .await
        .map_err(|e| StartError::Http(e.to_string()))??;
    // Objects without a record are left by uploads a crash interrupted, or look so when the
    // database is the wrong one: they are moved aside, never deleted, and not at all when they
    // are more than a small share of the store (`files::orphans`). Only `serve` on SQLite
    // sweeps: there it is the only process writing objects. (A CLI command or a second
    // PostgreSQL node could otherwise move the object of an upload in flight elsewhere.)
    // Partial objects of interrupted uploads: all of them on SQLite (this is the only writer),
    // on PostgreSQL only those idle for an hour (another node may be writing its own).
    // (A storage plugin keeps partial uploads invisible on its side, e.g. S3 multipart uploads.)
    let single = state.db.backend() == db::Backend::Sqlite;
    if state.config.storage.backend == "local" {
        let objects = state.config.storage.data_dir.join("objects");
        files::local::LocalStorage::open(&objects)
            .and_then(|s| s.remove_partials((!single).then(|| std::time::Duration::from_secs(3600))))
            .map_err(|e| StartError::Storage(e.to_string()))?;
    }
    if single {
        let st = state.clone();
        let report = tokio::task::spawn_blocking(move || files::orphans::sweep(&st, files::orphans::Sweep::Cautious))
            .await
            .map_err(|e| StartError::Http(e.to_string()))?
            .map_err(StartError::Storage)?;
        if let Some(why) = &report.held {
            tracing::error!(orphans = report.orphans.len(), objects = report.objects, "{why}");
            let st = state.clone();
            let (why, n) = (why.clone(), report.orphans.len());
            let _ = tokio::task::spawn_blocking(move || files::orphans::alert_held(&st, &why, n)).await;
        }
    }
    let audit = state.audit.clone();
    security::scan::ScanService::start(&state);
    security::scan_routes::reload_on_sighup(state.clone());
    files::start_scrub(state.clone(), state.config.files.scrub_interval_hours);
    realtime::start_retention(state.clone());
    realtime::presence::start(state.clone());
    audit::anchor::start(state.clone());
    audit::siem::start(state.clone());
    {
        let st = state.clone();
        let _ = state.db.q(move |c| security::responses::refresh(&st, c)).await;
    }
    security::responses::start(state.clone());
    security::ratelimit::start_cleanup(state.clone());
    security::anomaly::start(state.clone());
    notify::email::Mailer::start(&state);
    if state.db.backend() == db::Backend::Postgres {
        let url = state.config.database_url();
        let (sessions, hub) = (state.sessions.clone(), state.hub.clone());
        let on_sessions: realtime::notify::OnSessions = Arc::new(move |sids: Option<&[String]>| match sids {
            Some(sids) => {
                sessions.forget(sids);
                hub.close_sessions(sids);
            }
            None => sessions.clear(),
        });
        realtime::notify::start_listener(state.db.clone(), url, state.hub.clone(), state.node_id.clone(), on_sessions);
    }
    let (hub, events, mailer) = (state.hub.clone(), state.events.clone(), state.mailer.clone());
    let anchor_state = state.clone();
    let rocket = build_rocket(state);
    let ignited = rocket.ignite().await.map_err(|e| StartError::Http(e.to_string()))?;
    let _ = audit
        .append(NewAuditEntry::new(crate::audit::AuditAction::SystemStart, Outcome::Success).details(
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
            }),
        ))
        .await;
    let shutdown = ignited.shutdown();
    tokio::spawn(async move {
        shutdown.await;
        hub.close_all(); // WebSocket clients get a close frame and can reconnect elsewhere
    });
    let result = ignited.launch().await;
    // Mail workers finish the message in hand; what is left stays queued for the next start.
    let _ = tokio::task::spawn_blocking(move || mailer.shutdown()).await;
    events.shutdown().await;
    let _ = audit.append(NewAuditEntry::new(crate::audit::AuditAction::SystemStop, Outcome::Success)).await;
    audit.shutdown().await;
    // The final head, anchored outside the database.
    if anchor_state.config.audit.anchor_interval_secs > 0 {
        let st = anchor_state;
        let _ = tokio::task::spawn_blocking(move || audit::anchor::anchor_or_alert(&st)).await;
    }
    tracing::info!("stopped; audit log flushed");
    result.map(|_| ()).map_err(|e| StartError::Http(e.to_string()))
}
