//! Malware scanning: the YARA-X scanner (a core module) and the scan service that runs the
//! scanner chain over every upload on a bounded pool, off the request path.
//!
//! Rules are compiled at start from `<policy_dir>/yara/*.yar`, one namespace per file. A rule
//! file that does not compile is reported with its file and line, and the last good rule set
//! stays in force. `reload` recompiles on demand (admin API, SIGHUP).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rocket::tokio::sync::mpsc;
use seccollab_plugin_api::{ScanMatch, ScanReport, ScanStream, Scanner};
use serde_json::json;

use super::policy::Oversize;
use crate::audit::{NewAuditEntry, Outcome};
use crate::files::{self, pipeline};
use crate::AppState;

/// Receives one block: its offset in the file and its bytes.
pub type BlockSink<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// YARA-X over the rule files of a folder.
pub struct YaraScanner {
    dir: PathBuf,
    rules: RwLock<Arc<yara_x::Rules>>,
    files: RwLock<usize>,
    /// Longest one scan may take (`scan.timeout_secs`); past it the scan fails (`error`).
    timeout: std::time::Duration,
}

impl std::fmt::Debug for YaraScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YaraScanner").field("dir", &self.dir).finish()
    }
}

/// Compiles every `*.yar` in `dir` (sorted, one namespace per file).
pub fn compile_rules(dir: &Path) -> Result<(yara_x::Rules, usize), String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yar" || x == "yara"))
        .collect();
    paths.sort();
    let mut compiler = yara_x::Compiler::new();
    for p in &paths {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let ns = p
            .file_stem()
            .map(|s| s.to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
            .unwrap_or_default();
        compiler.new_namespace(&ns);
        compiler
            .add_source(yara_x::SourceCode::from(text.as_str()).with_origin(p.display().to_string()))
            .map_err(|e| e.to_string())?;
    }
    Ok((compiler.build(), paths.len()))
}

impl YaraScanner {
    /// Compiles the rules in `dir`; an empty or missing folder is an error (scanning with no
    /// rules would mark everything clean).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let (rules, n) = compile_rules(dir)?;
        if n == 0 {
            return Err(format!("no YARA rules (*.yar) in {}", dir.display()));
        }
        tracing::info!(files = n, dir = %dir.display(), "YARA-X rules compiled");
        Ok(Self {
            dir: dir.to_path_buf(),
            rules: RwLock::new(Arc::new(rules)),
            files: RwLock::new(n),
            timeout: std::time::Duration::from_secs(120),
        })
    }

    /// Sets the time limit of one scan (at least a second).
    pub fn with_timeout(mut self, secs: u64) -> Self {
        self.timeout = std::time::Duration::from_secs(secs.max(1));
        self
    }

    /// Recompiles; on error the rules in force stay and the error (file, line) is returned.
    pub fn reload(&self) -> Result<usize, String> {
        let (rules, n) = compile_rules(&self.dir)?;
        *self.rules.write().expect("rules lock") = Arc::new(rules);
        *self.files.write().expect("rules lock") = n;
        Ok(n)
    }
}

fn meta_str(v: yara_x::MetaValue<'_>) -> String {
    match v {
        yara_x::MetaValue::String(s) => s.to_string(),
        yara_x::MetaValue::Integer(i) => i.to_string(),
        yara_x::MetaValue::Float(f) => f.to_string(),
        yara_x::MetaValue::Bool(b) => b.to_string(),
        yara_x::MetaValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

impl YaraScanner {
    /// Scans a file too large to hold in memory block by block (1 MiB blocks overlapping by
    /// 4 KiB, fed by `read`). YARA-X's block mode matches text, hex and regex patterns only:
    /// `filesize`, `uint16(0)` and modules are undefined, so rules built on them (the PE rule)
    /// do not fire on such files.
    pub fn scan_blocks(
        &self,
        read: &mut dyn FnMut(&mut BlockSink<'_>) -> Result<(), String>,
    ) -> Result<ScanReport, String> {
        let rules = self.rules.read().expect("rules lock").clone();
        let mut scanner = yara_x::blocks::Scanner::new(&rules);
        scanner.set_timeout(self.timeout);
        read(&mut |base, data| scanner.scan(base as usize, data).map(|_| ()).map_err(|e| self.why(e)))?;
        let results = scanner.finish().map_err(|e| self.why(e))?;
        Ok(ScanReport {
            engine: format!("yara-x {} (blocks)", env!("YARA_X_VERSION")),
            matches: to_matches(results.matching_rules()),
        })
    }
}

impl YaraScanner {
    fn why(&self, e: yara_x::errors::ScanError) -> String {
        match e {
            yara_x::errors::ScanError::Timeout => {
                format!(
                    "YARA-X scan timed out after {} s (scan.timeout_secs); the file is held",
                    self.timeout.as_secs()
                )
            }
            other => other.to_string(),
        }
    }
}

fn to_matches<'a, 'r: 'a>(rules: impl Iterator<Item = yara_x::Rule<'a, 'r>>) -> Vec<ScanMatch> {
    rules
        .map(|r| {
            let mut severity = None;
            let mut description = None;
            for (k, v) in r.metadata() {
                match k {
                    "severity" => severity = Some(meta_str(v)),
                    "description" => description = Some(meta_str(v)),
                    _ => {}
                }
            }
            ScanMatch {
                rule: r.identifier().to_string(),
                namespace: r.namespace().to_string(),
                tags: r.tags().map(|t| t.identifier().to_string()).collect(),
                severity,
                description,
            }
        })
        .collect()
}

impl Scanner for YaraScanner {
    fn name(&self) -> &str {
        "yara-x"
    }

    fn scan(&self, data: &[u8]) -> Result<ScanReport, String> {
        let rules = self.rules.read().expect("rules lock").clone();
        let mut scanner = yara_x::Scanner::new(&rules);
        scanner.set_timeout(self.timeout);
        let results = scanner.scan(data).map_err(|e| self.why(e))?;
        let matches = to_matches(results.matching_rules());
        Ok(ScanReport { engine: format!("yara-x {}", env!("YARA_X_VERSION")), matches })
    }
}

/// The verdict of the whole chain on one file.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `clean`, `infected` or `error`.
    pub status: &'static str,
    pub matches: Vec<ScanMatch>,
    pub engine: String,
    pub error: Option<String>,
}

/// Runs the scanner chain over an upload queue with a bounded number of workers.
pub struct ScanService {
    chain: Vec<Arc<dyn Scanner>>,
    tx: mpsc::UnboundedSender<String>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    pub yara: Arc<YaraScanner>,
    pub max_bytes: u64,
    workers: usize,
    oversize: Oversize,
}

impl std::fmt::Debug for ScanService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanService").field("scanners", &self.chain.len()).finish()
    }
}

impl ScanService {
    pub fn new(yara: Arc<YaraScanner>, max_bytes: u64, workers: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let chain: Vec<Arc<dyn Scanner>> = vec![yara.clone()];
        let oversize = Oversize::Hold;
        Self { chain, tx, rx: std::sync::Mutex::new(Some(rx)), yara, max_bytes, workers: workers.max(1), oversize }
    }

    /// Chains plugin scanners after YARA-X, in configuration order. They see files up to
    /// `max_bytes` whole; larger files are streamed to them (ABI 1.1) while YARA-X scans them
    /// block by block. A plugin that cannot stream gets the file held, or skipped with
    /// `scan.oversize = "yara_only"`.
    pub fn with_plugins(mut self, scanners: &[Arc<dyn Scanner>]) -> Self {
        self.chain.extend(scanners.iter().cloned());
        self
    }

    /// What happens to files a plugin scanner cannot see whole (`scan.oversize`).
    pub fn with_oversize(mut self, oversize: Oversize) -> Self {
        self.oversize = oversize;
        self
    }

    /// Every new upload starts unscanned: downloads answer 423 until the chain has run.
    pub fn initial_status(&self) -> &'static str {
        "pending"
    }

    /// Queues a file for scanning.
    pub fn enqueue(&self, file_id: String) {
        let _ = self.tx.send(file_id);
    }

    /// Runs the chain over `data`.
    pub fn scan_bytes(&self, data: &[u8]) -> Verdict {
        let mut matches = Vec::new();
        let mut engines = Vec::new();
        for s in &self.chain {
            match s.scan(data) {
                Ok(r) => {
                    engines.push(r.engine);
                    matches.extend(r.matches);
                }
                Err(e) => {
                    return Verdict { status: "error", matches, engine: s.name().into(), error: Some(e) };
                }
            }
        }
        let status = if matches.is_empty() { "clean" } else { "infected" };
        Verdict { status, matches, engine: engines.join(", "), error: None }
    }

    /// Starts the worker threads (once) and re-queues files left `pending` by a crash.
    pub fn start(state: &AppState) {
        let Some(rx) = state.scanner.rx.lock().ok().and_then(|mut g| g.take()) else { return };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for i in 0..state.scanner.workers {
            let (state, rx) = (state.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("scan-{i}"))
                .spawn(move || {
                    while let Some(file_id) = rx.blocking_lock().blocking_recv() {
                        if let Err(e) = scan_file(&state, &file_id, None) {
                            tracing::error!(file_id = %file_id, error = %e, "scan failed");
                        }
                    }
                })
                .expect("spawn scan worker");
        }
        if let Ok(mut c) = state.db.get() {
            use crate::db::schema::files::dsl as f;
            use diesel::prelude::*;
            let pending: Vec<String> =
                f::files.filter(f::scan_status.eq("pending")).select(f::id).load(&mut *c).unwrap_or_default();
            if !pending.is_empty() {
                tracing::info!(count = pending.len(), "re-queueing files left unscanned");
            }
            for id in pending {
                state.scanner.enqueue(id);
            }
        }
    }
}

/// Why a rescan was not done.
#[derive(Debug, thiserror::Error)]
pub enum RescanError {
    #[error("no such file")]
    NotFound,
    #[error("the scan could not run: {0}")]
    Failed(String),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Rescans one file now, on an administrator's request (API and console alike), off the async
/// workers; the verdict is recorded and audited by [`scan_file`].
pub async fn rescan(state: &AppState, file_id: &str, actor: Option<String>) -> Result<Verdict, RescanError> {
    let fid = file_id.to_string();
    if state.db.q(move |c| files::by_id(c, &fid)).await?.is_none() {
        return Err(RescanError::NotFound);
    }
    let (st, fid) = (state.clone(), file_id.to_string());
    tokio::task::spawn_blocking(move || scan_file(&st, &fid, actor))
        .await
        .map_err(|e| RescanError::Failed(e.to_string()))?
        .map_err(RescanError::Failed)
}

/// Decrypts a file into memory (bounded by `max_bytes`), runs the chain, records the result:
/// `clean`, or `quarantined` with an alert and an audit entry, or `error`.
pub fn scan_file(state: &AppState, file_id: &str, actor: Option<String>) -> Result<Verdict, String> {
    let mut conn = state.db.get().map_err(|e| e.to_string())?;
    let Some(f) = files::by_id(&mut conn, file_id).map_err(|e| e.to_string())? else {
        return Err("no such file".into());
    };
    drop(conn);
    let verdict = match files::data_key(&state.keys, &f) {
        None => Verdict {
            status: "error",
            matches: vec![],
            engine: String::new(),
            error: Some("data key does not unwrap".into()),
        },
        Some(dek) if f.size as u64 > state.scanner.max_bytes => scan_in_blocks(state, &f.storage_key, &dek),
        Some(dek) => {
            let mut data = Vec::with_capacity(f.size as usize);
            match pipeline::read_range(&*state.storage, &f.storage_key, &dek, 0, u64::MAX, &mut |p| {
                data.extend_from_slice(p);
                true
            }) {
                Ok(()) => state.scanner.scan_bytes(&data),
                Err(e) => {
                    Verdict { status: "error", matches: vec![], engine: String::new(), error: Some(e.to_string()) }
                }
            }
        }
    };
    let status = match verdict.status {
        "clean" => "clean",
        "infected" => "quarantined",
        _ => "error",
    };
    let mut conn = state.db.get().map_err(|e| e.to_string())?;
    files::set_scan_status(&mut conn, &f.id, status).map_err(|e| e.to_string())?;
    let rules: Vec<String> = verdict.matches.iter().map(|m| format!("{}.{}", m.namespace, m.rule)).collect();
    let outcome = match status {
        "clean" => Outcome::Success,
        "quarantined" => Outcome::Denied,
        _ => Outcome::Error,
    };
    let details = json!({"status": status, "rules": rules, "engine": verdict.engine, "error": verdict.error, "owner_id": f.owner_id});
    // Alert on the transition only: a rescan confirming the quarantine is not news.
    if status == "quarantined" && f.scan_status != "quarantined" {
        let severity =
            if verdict.matches.iter().any(|m| m.severity.as_deref() == Some("critical")) { "critical" } else { "high" };
        let subject = Some(("file", f.id.as_str()));
        let id = crate::security::alerts::raise(&mut conn, "malware_detected", severity, subject, &details)
            .map_err(|e| e.to_string())?;
        let ev = crate::security::alerts::event(&id, "malware_detected", severity, subject, &details);
        crate::security::alerts::announce(state, &mut conn, ev);
    }
    state.audit.record_blocking(
        NewAuditEntry::new(crate::audit::AuditAction::FileScan, outcome)
            .actor(actor)
            .target("file", f.id.clone())
            .details(details),
    );
    let mut audience = files::audience(&mut conn, &f.id).unwrap_or_default();
    audience.push(f.owner_id.clone());
    state.events.publish_blocking(
        &audience,
        "file_update",
        json!({"file_id": f.id, "change": "scanned", "scan_status": status}),
    );
    Ok(verdict)
}

const BLOCK: usize = 1024 * 1024;
const OVERLAP: usize = 4096;

fn failed(engine: &str, why: String) -> Verdict {
    Verdict { status: "error", matches: vec![], engine: engine.into(), error: Some(why) }
}

/// Streams a large file once, with bounded memory, through YARA-X's block scanner and every
/// plugin scanner that can take a stream. A plugin that cannot holds the file (`error`), unless
/// `scan.oversize = "yara_only"` lets YARA-X alone judge it.
fn scan_in_blocks(state: &AppState, key: &str, dek: &[u8; 32]) -> Verdict {
    let svc = &state.scanner;
    let mut streams: Vec<(String, Box<dyn ScanStream>)> = Vec::new();
    let mut skipped = Vec::new();
    for s in svc.chain.iter().skip(1) {
        match s.stream() {
            Some(Ok(st)) => streams.push((s.name().to_string(), st)),
            Some(Err(e)) => return failed(s.name(), e),
            None if svc.oversize == Oversize::YaraOnly => skipped.push(s.name().to_string()),
            None => {
                return failed(
                    s.name(),
                    format!(
                        "the {} scanner cannot see files over {} bytes (scan.max_bytes); the file is held until an \
                         administrator releases it",
                        s.name(),
                        svc.max_bytes
                    ),
                )
            }
        }
    }
    let mut plugin_error = None;
    let mut read = |feed: &mut BlockSink<'_>| -> Result<(), String> {
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + OVERLAP);
        let mut base = 0u64; // offset of buf[0] in the file
        let mut err = None;
        pipeline::read_range(&*state.storage, key, dek, 0, u64::MAX, &mut |p| {
            for (name, st) in streams.iter_mut() {
                if let Err(e) = st.write(p) {
                    plugin_error = Some((name.clone(), e));
                    return false;
                }
            }
            buf.extend_from_slice(p);
            if buf.len() >= BLOCK {
                if let Err(e) = feed(base, &buf) {
                    err = Some(e);
                    return false;
                }
                // Keep a tail so a pattern across the boundary is seen whole in the next block.
                let keep = buf.len() - OVERLAP;
                buf.drain(..keep);
                base += keep as u64;
            }
            true
        })
        .map_err(|e| e.to_string())?;
        if let Some(e) = err {
            return Err(e);
        }
        if !buf.is_empty() {
            feed(base, &buf)?;
        }
        Ok(())
    };
    let yara = svc.yara.scan_blocks(&mut read);
    if let Some((name, e)) = plugin_error {
        return failed(&name, e);
    }
    let r = match yara {
        Ok(r) => r,
        Err(e) => return failed("yara-x", e),
    };
    let (mut matches, mut engines) = (r.matches, vec![r.engine]);
    for (name, st) in streams {
        match st.finish() {
            Ok(r) => {
                engines.push(r.engine);
                matches.extend(r.matches);
            }
            Err(e) => return failed(&name, e),
        }
    }
    engines.extend(skipped.iter().map(|n| format!("{n} (skipped: file over scan.max_bytes)")));
    Verdict {
        status: if matches.is_empty() { "clean" } else { "infected" },
        matches,
        engine: engines.join(", "),
        error: None,
    }
}
