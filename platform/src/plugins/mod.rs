//! The plugin host: loads the libraries named in `[plugins.enabled]`, keeps the ones that pass
//! every check, and puts each behind a timeout and a circuit breaker before the rest of the
//! server sees it as an ordinary [`Scanner`], [`Notifier`] or [`OAuthProvider`].
//!
//! A plugin that fails any check (file or folder writable by group/others, SHA-256 pin
//! mismatch, not a plugin, another ABI major, a failing `init`) is logged with its file and the
//! reason and left out; the server keeps running. The unsafe part (opening libraries, calling
//! through the C ABI) lives in `seccollab_plugin_api::host`.

mod loading;
pub mod routes;

pub use loading::{check_folders, inspect, verify, Verified};

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seccollab_plugin_api::host::Instance;
use seccollab_plugin_api::{
    AuthorizationRequest, CodeExchange, Notifier, NotifyError, OAuthError, OAuthIdentity, OAuthProvider, ObjectWriter,
    Outbound, PluginKind, ScanReport, ScanStream, Scanner, StorageBackend, StorageError,
};
use serde::Serialize;

use crate::config::{Config, PluginsConfig};

const MAX_COOLDOWN: Duration = Duration::from_secs(600);

/// A circuit breaker with call counters, one per loaded plugin.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    base: Duration,
    consecutive: AtomicU32,
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    open_until: Option<Instant>,
    cooldown: Duration,
    last_error: Option<String>,
}

impl Breaker {
    pub fn new(threshold: u32, base: Duration) -> Self {
        Self {
            threshold,
            base,
            consecutive: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            state: Mutex::new(BreakerState { cooldown: base, ..Default::default() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err` with the time left while the breaker is open. After the pause one trial call is
    /// let through; its outcome closes the breaker or opens it for twice as long.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut s = self.lock();
        match s.open_until {
            Some(t) if Instant::now() < t => Err(t - Instant::now()),
            Some(_) => {
                // Half-open: this caller is the trial; others wait for its outcome.
                s.open_until = Some(Instant::now() + s.cooldown);
                self.calls.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => {
                self.calls.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    pub fn success(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        let mut s = self.lock();
        if s.open_until.is_some() {
            tracing::info!("plugin recovered; circuit closed");
        }
        s.open_until = None;
        s.cooldown = self.base;
    }

    pub fn failure(&self, plugin: &str, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let mut s = self.lock();
        s.last_error = Some(error.to_string());
        if s.open_until.is_some() {
            // The trial failed: pause for longer.
            s.cooldown = (s.cooldown * 2).min(MAX_COOLDOWN);
            s.open_until = Some(Instant::now() + s.cooldown);
            tracing::warn!(plugin, error, pause_secs = s.cooldown.as_secs(), "plugin still failing; paused again");
        } else if n >= self.threshold {
            s.open_until = Some(Instant::now() + s.cooldown);
            tracing::warn!(plugin, error, failures = n, pause_secs = s.cooldown.as_secs(), "plugin failing; paused");
        } else {
            tracing::warn!(plugin, error, "plugin call failed");
        }
    }

    /// `ok`, `degraded` (recent failures) or `paused` (breaker open).
    pub fn health(&self) -> &'static str {
        if self.lock().open_until.is_some() {
            "paused"
        } else if self.consecutive.load(Ordering::Relaxed) > 0 {
            "degraded"
        } else {
            "ok"
        }
    }

    /// How long the breaker stays open, if it is.
    pub fn open_for(&self) -> Option<Duration> {
        let t = self.lock().open_until?;
        Some(t.saturating_duration_since(Instant::now()))
    }

    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }
}

/// Runs `f` on its own thread and waits at most `timeout`. A call that overruns is abandoned
/// (its thread finishes in the background; plugin code cannot be killed safely).
fn with_timeout<R: Send + 'static>(timeout: Duration, f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("plugin-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a plugin call: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(r) => Ok(r),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer within {}s", timeout.as_secs())),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err("the call ended without an answer".into()),
    }
}

/// Calls through `breaker` with `timeout`; `failed` says which results count as failures.
fn guarded<R: Send + 'static, E: Send + 'static>(
    plugin: &str,
    breaker: &Breaker,
    timeout: Duration,
    call: impl FnOnce() -> Result<R, E> + Send + 'static,
    counts: impl Fn(&E) -> bool,
    describe: impl Fn(&E) -> String,
) -> Result<Result<R, E>, String> {
    if let Err(left) = breaker.admit() {
        return Err(format!("plugin {plugin} is paused after repeated failures; next try in {}s", left.as_secs() + 1));
    }
    match with_timeout(timeout, call) {
        Ok(Ok(r)) => {
            breaker.success();
            Ok(Ok(r))
        }
        Ok(Err(e)) => {
            if counts(&e) {
                breaker.failure(plugin, &describe(&e));
            } else {
                breaker.success();
            }
            Ok(Err(e))
        }
        Err(m) => {
            breaker.failure(plugin, &m);
            Err(format!("plugin {plugin}: {m}"))
        }
    }
}

struct GuardedScanner {
    name: String,
    inner: Arc<dyn Scanner>,
    breaker: Arc<Breaker>,
    timeout: Duration,
}

impl Scanner for GuardedScanner {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan(&self, data: &[u8]) -> Result<ScanReport, String> {
        // The call may outlive this borrow (timeout), so it works on its own copy.
        let (inner, data) = (self.inner.clone(), Arc::<[u8]>::from(data));
        guarded(&self.name, &self.breaker, self.timeout, move || inner.scan(&data), |_| true, |e| e.clone())?
            .map_err(|e| format!("plugin {}: {e}", self.name))
    }

    /// A streamed scan: started under the breaker and time limit; its pieces and verdict
    /// rely on the plugin's own I/O time limits (ClamAV's `timeout_secs`) and feed the breaker.
    fn stream(&self) -> Option<Result<Box<dyn ScanStream>, String>> {
        let inner = self.inner.clone();
        let started = guarded(
            &self.name,
            &self.breaker,
            self.timeout,
            move || inner.stream().transpose(),
            |_| true,
            |e| e.clone(),
        );
        match started {
            Err(e) => Some(Err(e)),
            Ok(Err(e)) => Some(Err(format!("plugin {}: {e}", self.name))),
            Ok(Ok(None)) => None,
            Ok(Ok(Some(inner))) => {
                Some(Ok(Box::new(GuardedStream { name: self.name.clone(), inner, breaker: self.breaker.clone() })))
            }
        }
    }
}

/// A plugin's streamed scan whose failures count toward the plugin's breaker.
struct GuardedStream {
    name: String,
    inner: Box<dyn ScanStream>,
    breaker: Arc<Breaker>,
}

impl ScanStream for GuardedStream {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.inner.write(data).map_err(|e| {
            self.breaker.failure(&self.name, &e);
            format!("plugin {}: {e}", self.name)
        })
    }

    fn finish(self: Box<Self>) -> Result<ScanReport, String> {
        let GuardedStream { name, inner, breaker } = *self;
        match inner.finish() {
            Ok(r) => {
                breaker.success();
                Ok(r)
            }
            Err(e) => {
                breaker.failure(&name, &e);
                Err(format!("plugin {name}: {e}"))
            }
        }
    }
}

struct GuardedNotifier {
    name: String,
    channel: String,
    inner: Arc<dyn Notifier>,
    breaker: Arc<Breaker>,
    timeout: Duration,
}

impl Notifier for GuardedNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> &str {
        &self.channel
    }

    fn deliver(&self, message: &Outbound) -> Result<(), NotifyError> {
        let (inner, m) = (self.inner.clone(), message.clone());
        guarded(
            &self.name,
            &self.breaker,
            self.timeout,
            move || inner.deliver(&m),
            |e| !matches!(e, NotifyError::Permanent(_)),
            |e| e.to_string(),
        )
        .map_err(NotifyError::Unavailable)?
    }
}

struct GuardedOAuth {
    name: String,
    display: String,
    inner: Arc<dyn OAuthProvider>,
    breaker: Arc<Breaker>,
    timeout: Duration,
}

impl OAuthProvider for GuardedOAuth {
    fn name(&self) -> &str {
        &self.name
    }

    fn display_name(&self) -> &str {
        &self.display
    }

    fn authorization_url(&self, req: &AuthorizationRequest) -> Result<String, OAuthError> {
        let (inner, r) = (self.inner.clone(), req.clone());
        let unavailable = |e: &OAuthError| matches!(e, OAuthError::Unavailable(_));
        guarded(
            &self.name,
            &self.breaker,
            self.timeout,
            move || inner.authorization_url(&r),
            unavailable,
            |e| e.to_string(),
        )
        .map_err(OAuthError::Unavailable)?
    }

    fn exchange(&self, req: &CodeExchange) -> Result<OAuthIdentity, OAuthError> {
        let (inner, r) = (self.inner.clone(), req.clone());
        let unavailable = |e: &OAuthError| matches!(e, OAuthError::Unavailable(_));
        guarded(&self.name, &self.breaker, self.timeout, move || inner.exchange(&r), unavailable, |e| e.to_string())
            .map_err(OAuthError::Unavailable)?
    }
}

/// A storage backend behind a circuit breaker (plugins and the built-in local store alike).
/// Calls are not run on a thread of their own (one per chunk would cost too much): the
/// backend's own timeouts bound them, and a storage plugin retries transient failures itself
/// with back-off and jitter (`s3`: `max_retries`). What still fails counts against the breaker:
/// after `plugins.breaker_failures` transient failures in a row it opens, and every call fails
/// fast (`StorageError::Transient`, so uploads and downloads answer 503 with `Retry-After`)
/// until the pause is over; then one trial call closes it again or doubles the pause.
pub struct GuardedStorage {
    name: String,
    inner: Arc<dyn StorageBackend>,
    pub breaker: Arc<Breaker>,
}

impl GuardedStorage {
    pub fn new(name: String, inner: Arc<dyn StorageBackend>, breaker: Arc<Breaker>) -> Self {
        Self { name, inner, breaker }
    }

    fn admit(&self) -> Result<(), StorageError> {
        self.breaker.admit().map_err(|left| {
            StorageError::Transient(format!(
                "storage backend `{}` is paused for {} s after repeated failures (circuit open)",
                self.name,
                left.as_secs() + 1
            ))
        })
    }

    fn count<R>(&self, r: Result<R, StorageError>) -> Result<R, StorageError> {
        note(&self.name, &self.breaker, &r);
        r
    }
}

/// Feeds a storage call's outcome to the breaker: transient failures count towards opening it;
/// a permanent failure (permissions, a bad key) is recorded but says nothing about availability.
fn note<R>(name: &str, breaker: &Breaker, r: &Result<R, StorageError>) {
    match r {
        Ok(_) | Err(StorageError::NotFound) => {
            if breaker.consecutive.load(Ordering::Relaxed) > 0 || breaker.health() == "paused" {
                breaker.success();
            }
        }
        Err(e @ StorageError::Transient(_)) => breaker.failure(name, &e.to_string()),
        Err(e) => {
            breaker.failures.fetch_add(1, Ordering::Relaxed);
            breaker.lock().last_error = Some(e.to_string());
            tracing::warn!(storage = %name, error = %e, "storage call failed");
        }
    }
}

/// An object being written, its failures fed to the breaker.
struct GuardedWriter {
    name: String,
    inner: Box<dyn ObjectWriter>,
    breaker: Arc<Breaker>,
}

impl ObjectWriter for GuardedWriter {
    fn write(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        let r = self.inner.write(buf);
        if r.is_err() {
            note(&self.name, &self.breaker, &r);
        }
        r
    }

    fn commit(self: Box<Self>) -> Result<u64, StorageError> {
        let r = self.inner.commit();
        note(&self.name, &self.breaker, &r);
        r
    }

    fn abort(self: Box<Self>) {
        self.inner.abort();
    }
}

impl StorageBackend for GuardedStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.admit()?;
        self.breaker.calls.fetch_add(1, Ordering::Relaxed);
        let w = self.inner.put(key);
        if w.is_err() {
            return self.count(w);
        }
        let inner = w?;
        Ok(Box::new(GuardedWriter { name: self.name.clone(), inner, breaker: self.breaker.clone() }))
    }

    fn get(&self, key: &str, offset: u64) -> Result<Box<dyn std::io::Read + Send>, StorageError> {
        self.admit()?;
        self.count(self.inner.get(key, offset))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.admit()?;
        self.count(self.inner.delete(key))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.admit()?;
        self.count(self.inner.stat(key))
    }

    fn list(&self) -> Result<Vec<String>, StorageError> {
        self.admit()?;
        self.count(self.inner.list())
    }
}

/// One plugin as `/api/admin/plugins` and `seccollab plugins list` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginInfo {
    pub name: String,
    /// `scanner`, `storage`, `notifier` or `oauth_provider`; `null` when the library could not
    /// be read far enough to tell.
    pub kind: Option<String>,
    pub version: Option<String>,
    /// ABI the plugin was built for (`1.0`).
    pub abi_version: Option<String>,
    /// Part of the server itself rather than a loaded library.
    pub builtin: bool,
    pub file: Option<String>,
    pub sha256: Option<String>,
    /// `ok`, `degraded` (its last call failed), `paused` (circuit breaker open) or `failed`
    /// (not loaded: see `error`).
    pub health: String,
    pub error: Option<String>,
    pub calls: u64,
    pub failures: u64,
}

struct Entry {
    info: PluginInfo,
    breaker: Option<Arc<Breaker>>,
}

/// Every plugin the configuration names, loaded or not, and the built-ins.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Entry>,
    pub scanners: Vec<Arc<dyn Scanner>>,
    pub notifiers: Vec<Arc<dyn Notifier>>,
    pub oauth: Vec<Arc<dyn OAuthProvider>>,
    pub storage: Vec<Arc<GuardedStorage>>,
}

impl Registry {
    /// The storage backend `storage.backend` selects: the built-in local store or a loaded
    /// storage plugin. A plugin that failed to load is an error naming its reason: the server
    /// must not start on a store it cannot reach.
    pub fn storage_backend(&self, cfg: &Config) -> Result<Arc<GuardedStorage>, String> {
        let name = cfg.storage.backend.as_str();
        if name == "local" {
            let store = crate::files::local::LocalStorage::open(&cfg.storage.data_dir.join("objects"))
                .map_err(|e| e.to_string())?;
            let p = &cfg.plugins;
            let breaker = Arc::new(Breaker::new(p.breaker_failures, Duration::from_secs(p.breaker_cooldown_secs)));
            return Ok(Arc::new(GuardedStorage::new("local".into(), Arc::new(store), breaker)));
        }
        if let Some(s) = self.storage.iter().find(|s| s.name() == name) {
            return Ok(s.clone());
        }
        match self.entries.iter().find(|e| e.info.name == name) {
            Some(e) if e.info.error.is_some() => Err(format!(
                "storage.backend `{name}`: the plugin could not be loaded: {}",
                e.info.error.as_deref().unwrap_or_default()
            )),
            Some(e) => Err(format!(
                "storage.backend `{name}` names a {} plugin, not a storage plugin",
                e.info.kind.as_deref().unwrap_or("non-storage")
            )),
            None => Err(format!("storage.backend `{name}` is neither `local` nor an enabled plugin")),
        }
    }

    /// The OAuth provider configured under `name` (the name in `/api/auth/login/{name}`).
    pub fn oauth_provider(&self, name: &str) -> Option<Arc<dyn OAuthProvider>> {
        self.oauth.iter().find(|p| p.name() == name).cloned()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("plugins", &self.entries.len()).finish()
    }
}

fn builtin(name: &str, kind: PluginKind, version: &str) -> Entry {
    Entry {
        info: PluginInfo {
            name: name.into(),
            kind: Some(kind.as_str().into()),
            version: Some(version.into()),
            abi_version: Some(format!(
                "{}.{}",
                seccollab_plugin_api::abi::ABI_MAJOR,
                seccollab_plugin_api::abi::ABI_MINOR
            )),
            builtin: true,
            file: None,
            sha256: None,
            health: "ok".into(),
            error: None,
            calls: 0,
            failures: 0,
        },
        breaker: None,
    }
}

impl Registry {
    /// The built-ins only: what CLI commands that need no plugin work with.
    pub fn builtins() -> Self {
        let mut r = Registry::default();
        let v = env!("CARGO_PKG_VERSION");
        r.entries.push(builtin("local", PluginKind::Storage, v));
        r.entries.push(builtin("yara-x", PluginKind::Scanner, env!("YARA_X_VERSION")));
        r.entries.push(builtin("email", PluginKind::Notifier, v));
        r.entries.push(builtin("in_app", PluginKind::Notifier, v));
        r
    }

    /// Loads every enabled plugin. Never fails: a plugin that cannot be used is logged and
    /// listed with its error.
    pub fn load(cfg: &Config) -> Self {
        Self::load_where(cfg, |_| true)
    }

    /// The built-ins and the storage plugin `storage.backend` names, if any: what CLI commands
    /// that touch stored objects (backup, restore, keys, ...) need.
    pub fn load_storage(cfg: &Config) -> Self {
        Self::load_where(cfg, |name| name == cfg.storage.backend)
    }

    fn load_where(cfg: &Config, wanted: impl Fn(&str) -> bool) -> Self {
        let mut r = Self::builtins();
        for (name, entry) in cfg.plugins.enabled.iter().filter(|(n, _)| wanted(n)) {
            let path = entry.path(name, &cfg.plugins.dir);
            let mut info = PluginInfo {
                name: name.clone(),
                kind: None,
                version: None,
                abi_version: None,
                builtin: false,
                file: Some(path.display().to_string()),
                sha256: None,
                health: "failed".into(),
                error: None,
                calls: 0,
                failures: 0,
            };
            match r.load_one(&cfg.plugins, name, entry, &path, &mut info) {
                Ok(breaker) => {
                    info.health = "ok".into();
                    tracing::info!(plugin = %name, kind = ?info.kind, version = ?info.version, file = %path.display(), "plugin loaded");
                    r.entries.push(Entry { info, breaker: Some(breaker) });
                }
                Err(e) => {
                    tracing::error!(plugin = %name, file = %path.display(), error = %e, "plugin disabled");
                    info.error = Some(e);
                    r.entries.push(Entry { info, breaker: None });
                }
            }
        }
        r
    }

    fn load_one(
        &mut self,
        cfg: &PluginsConfig,
        name: &str,
        entry: &crate::config::PluginEntry,
        path: &Path,
        info: &mut PluginInfo,
    ) -> Result<Arc<Breaker>, String> {
        let verified = verify(path)?;
        info.sha256 = Some(verified.sha256.clone());
        if let Some(pin) = &entry.sha256 {
            verified.pinned(pin)?;
        }
        let lib = verified.load()?;
        info.kind = Some(lib.kind().as_str().into());
        info.version = Some(lib.version().into());
        info.abi_version = Some(format!("{}.{}", lib.abi().0, lib.abi().1));
        if lib.name() != entry.declared(name) {
            return Err(format!(
                "the library declares itself `{}`, not `{}` (set `plugin = \"{}\"` to use it under the name `{name}`)",
                lib.name(),
                entry.declared(name),
                lib.name()
            ));
        }
        let settings = entry.settings.clone();
        let timeout = Duration::from_secs(cfg.call_timeout_secs);
        let lib = Arc::new(lib);
        let l = lib.clone();
        let instance = with_timeout(timeout, move || l.instantiate(&settings))
            .and_then(|r| r)
            .map_err(|e| format!("init failed: {e}"))?;
        let breaker = Arc::new(Breaker::new(cfg.breaker_failures, Duration::from_secs(cfg.breaker_cooldown_secs)));
        let name = name.to_string();
        match instance {
            Instance::Scanner(inner) => {
                self.scanners.push(Arc::new(GuardedScanner { name, inner, breaker: breaker.clone(), timeout }))
            }
            Instance::Notifier(inner) => self.notifiers.push(Arc::new(GuardedNotifier {
                channel: inner.channel().to_string(),
                name,
                inner,
                breaker: breaker.clone(),
                timeout,
            })),
            Instance::OAuth(inner) => self.oauth.push(Arc::new(GuardedOAuth {
                display: inner.display_name().to_string(),
                name,
                inner,
                breaker: breaker.clone(),
                timeout,
            })),
            Instance::Storage(inner) => self.storage.push(Arc::new(GuardedStorage::new(name, inner, breaker.clone()))),
        }
        Ok(breaker)
    }

    /// What every plugin looks like now.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.entries
            .iter()
            .map(|e| {
                let mut i = e.info.clone();
                if let Some(b) = &e.breaker {
                    i.health = b.health().into();
                    i.calls = b.calls.load(Ordering::Relaxed);
                    i.failures = b.failures.load(Ordering::Relaxed);
                    if i.error.is_none() {
                        i.error = b.last_error();
                    }
                }
                i
            })
            .collect()
    }
}

/// Hands notifications to every notifier plugin, one delivery thread per plugin so a slow one
/// does not hold up the others. Transient failures are retried with back-off (1, 2, 4, 8 s);
/// a paused plugin's messages wait for its breaker. The queue is in memory: what is queued
/// when the process stops is not delivered (docs/plugins.md).
pub struct Dispatcher {
    queues: Vec<(String, std::sync::mpsc::SyncSender<Outbound>)>,
    pub dropped: AtomicU64,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("notifiers", &self.queues.len()).finish()
    }
}

const DISPATCH_QUEUE: usize = 1024;
const DISPATCH_ATTEMPTS: u32 = 5;

impl Dispatcher {
    pub fn start(notifiers: &[Arc<dyn Notifier>]) -> Self {
        let mut queues = Vec::new();
        for n in notifiers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Outbound>(DISPATCH_QUEUE);
            let n = n.clone();
            let name = n.name().to_string();
            let spawned = std::thread::Builder::new().name(format!("notify-{name}")).spawn(move || {
                for m in rx {
                    deliver_with_retries(&*n, &m);
                }
            });
            match spawned {
                Ok(_) => queues.push((name, tx)),
                Err(e) => tracing::error!(plugin = %name, error = %e, "cannot start the plugin's delivery thread"),
            }
        }
        Self { queues, dropped: AtomicU64::new(0) }
    }

    /// Queues `m` for every notifier plugin; never blocks.
    pub fn send(&self, m: &Outbound) {
        for (name, q) in &self.queues {
            if q.try_send(m.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(plugin = %name, kind = %m.kind, "notifier plugin queue full; notification dropped");
            }
        }
    }
}

fn deliver_with_retries(n: &dyn Notifier, m: &Outbound) {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=DISPATCH_ATTEMPTS {
        match n.deliver(m) {
            Ok(()) => return,
            Err(NotifyError::Permanent(e)) => {
                tracing::error!(plugin = n.name(), id = %m.id, error = %e, "notification refused by plugin; dropped");
                return;
            }
            Err(e) if attempt < DISPATCH_ATTEMPTS => {
                tracing::debug!(plugin = n.name(), id = %m.id, attempt, error = %e, "notification will be retried");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(60));
            }
            Err(e) => {
                tracing::error!(plugin = n.name(), id = %m.id, attempts = attempt, error = %e, "notification not delivered; gave up");
            }
        }
    }
}

/// The notification for a security alert, as notifier plugins receive it.
pub fn alert_message(ev: &serde_json::Value) -> Outbound {
    let s = |k: &str| ev[k].as_str().unwrap_or("").to_string();
    let subject = format!("[{}] security alert: {}", s("severity"), s("kind"));
    Outbound {
        id: s("id"),
        kind: "security_alert".into(),
        user_id: None,
        address: String::new(),
        display_name: "administrators".into(),
        text: serde_json::to_string_pretty(ev).unwrap_or_default(),
        subject,
        html: None,
        attachments: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_recovers_after_a_good_trial() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            b.admit().unwrap();
            b.failure("t", "boom");
        }
        assert_eq!(b.health(), "degraded");
        b.admit().unwrap();
        b.failure("t", "boom");
        assert_eq!(b.health(), "paused");
        assert!(b.admit().is_err(), "open breaker must fail fast");
        std::thread::sleep(Duration::from_millis(60));
        b.admit().expect("one trial after the pause");
        assert!(b.admit().is_err(), "only one trial at a time");
        b.failure("t", "still down");
        assert!(b.admit().is_err(), "a failed trial pauses again");
        std::thread::sleep(Duration::from_millis(110));
        b.admit().expect("trial after the doubled pause");
        b.success();
        assert_eq!(b.health(), "ok");
        assert!(b.admit().is_ok());
        assert_eq!(b.failures.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn timeouts_abandon_the_call() {
        let r = with_timeout(Duration::from_millis(50), || std::thread::sleep(Duration::from_secs(2)));
        assert!(r.unwrap_err().contains("no answer"));
        assert_eq!(with_timeout(Duration::from_secs(1), || 7).unwrap(), 7);
    }
}
