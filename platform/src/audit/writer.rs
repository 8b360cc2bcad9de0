//! The single audit writer: group commit over a bounded queue.
//!
//! Callers enqueue entries; one thread takes everything that has queued up (up to
//! `batch_max`), chains it onto the head read *inside* a write-locked transaction (so several
//! processes or nodes never fork the chain), inserts it and moves the head in one commit, then
//! acknowledges. [`AuditLog::shutdown`] returns only once every entry queued before it is
//! committed, which is how SIGTERM loses nothing that was acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::{NewAuditEntry, RowRef};
use crate::db::schema::{audit_head, audit_log};
use crate::db::{Db, DbConnection, DbError, WriterConn};

/// Rows per INSERT statement (13 parameters each keeps well under both backends' limits).
const INSERT_CHUNK: usize = 1000;
const COMMIT_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("audit entries could not be committed: {0}")]
    Commit(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

type Ack = oneshot::Sender<Result<(), AuditError>>;

enum Cmd {
    Append(Box<NewAuditEntry>, Option<Ack>),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub committed: AtomicU64,
    pub batches: AtomicU64,
    pub failed: AtomicU64,
    /// The writer thread's time waiting for and holding the database connection.
    pub conn: Arc<crate::db::WriterStats>,
}

/// Handle to the audit writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Cmd>,
    capacity: usize,
    stats: Arc<AuditStats>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("queued", &self.queue_depth()).finish()
    }
}

impl AuditLog {
    /// Starts the writer thread on its own connection from `db`.
    pub fn start(db: Db, batch_max: usize, queue_capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue_capacity);
        let stats = Arc::new(AuditStats::default());
        let s = stats.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run_writer(db, rx, batch_max, s))
            .expect("spawn audit writer thread");
        Self { tx, capacity: queue_capacity, stats, thread: Arc::new(std::sync::Mutex::new(Some(thread))) }
    }

    /// Appends and waits until the entry is committed.
    pub async fn append(&self, entry: NewAuditEntry) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Cmd::Append(Box::new(entry), Some(ack))).await.map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }

    /// Enqueues without waiting for the commit (waits only while the queue is full). The entry
    /// is committed with the next batch, and at the latest by [`AuditLog::shutdown`].
    pub async fn record(&self, entry: NewAuditEntry) {
        if self.tx.send(Cmd::Append(Box::new(entry), None)).await.is_err() {
            tracing::error!("audit writer stopped; entry dropped");
        }
    }

    /// [`AuditLog::append`] for blocking code (CLI, tests). Not for async workers.
    pub fn append_blocking(&self, entry: NewAuditEntry) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx.blocking_send(Cmd::Append(Box::new(entry), Some(ack))).map_err(|_| AuditError::Stopped)?;
        done.blocking_recv().map_err(|_| AuditError::Stopped)?
    }

    /// Enqueues from blocking code without waiting for the commit.
    pub fn record_blocking(&self, entry: NewAuditEntry) {
        if self.tx.blocking_send(Cmd::Append(Box::new(entry), None)).is_err() {
            tracing::error!("audit writer stopped; entry dropped");
        }
    }

    /// Waits until everything enqueued before this call is committed (or has failed).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Cmd::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Commits everything enqueued so far, then stops the writer thread and waits for it.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(ack)).await.is_ok() {
            let _ = done.await;
        }
        self.join();
    }

    /// [`AuditLog::shutdown`] for blocking code.
    pub fn shutdown_blocking(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.blocking_send(Cmd::Shutdown(ack)).is_ok() {
            let _ = done.blocking_recv();
        }
        self.join();
    }

    fn join(&self) {
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }

    /// Entries waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }
}

fn run_writer(db: Db, mut rx: mpsc::Receiver<Cmd>, batch_max: usize, stats: Arc<AuditStats>) {
    let mut conn = WriterConn::new(db, stats.conn.clone());
    let (completion_tx, completion_rx) = std::sync::mpsc::channel::<Done>();
    let completion = std::thread::Builder::new()
        .name("audit-acks".into())
        .spawn(move || acknowledge(completion_rx))
        .expect("spawn audit acknowledgement thread");
    // The actor index's mark as last seen (`actor_index::extend`).
    let mut actor_mark = 0;
    let mut entries = Vec::with_capacity(batch_max);
    let mut acks: Vec<Ack> = Vec::new();
    let mut flushes = Vec::new();
    let mut last_acks = 0usize;
    while let Some(first) = rx.blocking_recv() {
        let mut shutdown = None;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Append(e, ack) => {
                    entries.push(*e);
                    acks.extend(ack);
                }
                Cmd::Flush(f) => flushes.push(f),
                Cmd::Shutdown(s) => {
                    shutdown = Some(s);
                    break;
                }
            }
            if entries.len() < batch_max {
                next = rx.try_recv().ok();
                // Group commit: callers acknowledged by the previous commit usually come straight
                // back with their next entry. While this batch has gathered fewer than half as
                // many waiting callers as the last one, give them a moment (≤ 150 µs) to join
                // rather than paying a whole commit for each. A lone caller never waits.
                // (Waiting for all of them, or not at all, measured slower: with 16 awaiting
                // writers the writer then commits one half while the other half comes back.)
                let linger_until = std::time::Instant::now() + Duration::from_micros(150);
                while next.is_none()
                    && shutdown.is_none()
                    && acks.len() * 2 < last_acks
                    && std::time::Instant::now() < linger_until
                {
                    // Yield rather than sleep: a sleep rounds up to ~60 µs, longer than it
                    // takes an acknowledged caller to come back.
                    std::thread::yield_now();
                    next = rx.try_recv().ok();
                }
            }
        }
        let mut done = Done {
            result: Ok(()),
            acks: std::mem::take(&mut acks),
            entries: Vec::new(),
            flushes: std::mem::take(&mut flushes),
            shutdown,
        };
        if !entries.is_empty() {
            let result = commit_with_retry(&mut conn, &entries, &mut actor_mark);
            match &result {
                Ok(()) => {
                    stats.committed.fetch_add(entries.len() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.failed.fetch_add(entries.len() as u64, Ordering::Relaxed);
                    tracing::error!(entries = entries.len(), error = %e, "audit batch lost");
                }
            }
            last_acks = done.acks.len();
            done.result = result;
            done.entries = std::mem::replace(&mut entries, Vec::with_capacity(batch_max.min(last_acks.max(64))));
        }
        let stop = done.shutdown.is_some();
        // (Acknowledging inline whenever no entry was waiting, to spare the hand-over, was
        // measured slower: 45–47k vs 52–53k appends/s with 16 awaiting writers.)
        if let Err(e) = completion_tx.send(done) {
            deliver(e.0);
        }
        if stop {
            break;
        }
    }
    // Every acknowledgement (and the shutdown's) is out before the writer thread ends.
    drop(completion_tx);
    let _ = completion.join();
}

/// What the acknowledgement thread hands out after a commit.
struct Done {
    result: Result<(), String>,
    acks: Vec<Ack>,
    /// The committed entries, freed off the writer thread.
    entries: Vec<NewAuditEntry>,
    flushes: Vec<oneshot::Sender<()>>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// Acknowledges committed batches for the writer thread, so the writer goes straight on to the
/// next batch: waking a dozen waiting tasks (a futex call and a scheduler hand-off each) and
/// freeing the entries took a seventh of the writer thread's time in the 16-writer profile, and
/// the writer is the bottleneck there. A flush or the shutdown is answered after the acks of its
/// own batch; [`AuditLog::shutdown`] joins the writer, which joins this thread, so every ack is
/// out before it returns.
fn acknowledge(rx: std::sync::mpsc::Receiver<Done>) {
    for done in rx {
        deliver(done);
    }
}

fn deliver(done: Done) {
    for ack in done.acks {
        let _ = ack.send(done.result.as_ref().map(|_| ()).map_err(|e| AuditError::Commit(e.clone())));
    }
    drop(done.entries);
    for f in done.flushes {
        let _ = f.send(());
    }
    if let Some(s) = done.shutdown {
        let _ = s.send(());
    }
}

fn commit_with_retry(conn: &mut WriterConn, entries: &[NewAuditEntry], actor_mark: &mut i64) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..COMMIT_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(50 << attempt));
        }
        match conn.run(|c| commit_batch(c, entries, actor_mark).map_err(DbError::from)) {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                tracing::warn!(attempt, error = %last, "audit commit failed; retrying");
                // A broken connection is replaced on the next attempt.
                conn.reset();
            }
        }
    }
    Err(last)
}

/// Appends `entries` after the current head in one transaction. On PostgreSQL the head row is
/// written first, which takes its row lock before the head is read, so concurrent writers on
/// other nodes queue up instead of forking the chain; on SQLite `BEGIN IMMEDIATE` already holds
/// the database's write lock.
pub(crate) fn commit_batch(
    conn: &mut DbConnection,
    entries: &[NewAuditEntry],
    actor_mark: &mut i64,
) -> Result<(), diesel::result::Error> {
    crate::db::write_transaction(conn, |conn| {
        let head = audit_head::table.filter(audit_head::id.eq(1));
        if matches!(conn, DbConnection::Pg(_)) {
            diesel::update(head).set(audit_head::seq.eq(audit_head::seq)).execute(conn)?;
        }
        let (head_seq, head_hash): (i64, String) = head.select((audit_head::seq, audit_head::hash)).first(conn)?;
        let mut prev = decode_hash(&head_hash);
        let mut rows = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let (row, h) = RowRef::chain(e, head_seq + 1 + i as i64, &prev);
            rows.push(row);
            prev = h;
        }
        match conn {
            // One prepared (and cached) single-row INSERT, stepped per row: SQLite runs in
            // process, so there is no round trip to save. (Multi-row INSERTs of fixed sizes
            // were measured and gained nothing visible through the machine's noise; diesel
            // caches a multi-row statement by type only for `'static` values, so theirs was
            // looked up by its SQL text. `db::multirow` now prepares fixed-size multi-row
            // statements once per connection and gained 7–9 % for the event writer's rows in
            // the twenty-second session: worth measuring here again.)
            //
            // The columns are bound one by one, absent ones as NULL, rather than inserting the
            // derived `Insertable`: that one omits absent columns, so its SQL depends on which
            // fields an entry has and diesel built the SQL text of every insert again just to
            // look up the cached statement (a tenth of the writer's time in its profile).
            DbConnection::Sqlite(c) => {
                use audit_log::dsl as a;
                for r in &rows {
                    diesel::insert_into(audit_log::table)
                        .values((
                            a::seq.eq(r.seq),
                            a::id.eq(r.id),
                            a::at.eq(r.at),
                            a::actor_id.eq(r.actor_id),
                            a::action.eq(r.action),
                            a::target_type.eq(r.target_type),
                            a::target_id.eq(r.target_id),
                            a::ip.eq(r.ip),
                            a::user_agent.eq(r.user_agent),
                            a::outcome.eq(r.outcome),
                            a::details.eq(r.details),
                            a::prev_hash.eq(&r.prev_hash),
                            a::hash.eq(&r.hash),
                        ))
                        .execute(c)?;
                }
            }
            // Multi-row INSERTs: one round trip per chunk.
            DbConnection::Pg(c) => {
                for chunk in rows.chunks(INSERT_CHUNK) {
                    diesel::insert_into(audit_log::table).values(chunk).execute(c)?;
                }
            }
        }
        let last = rows.last().expect("non-empty batch");
        if matches!(conn, DbConnection::Sqlite(_)) {
            super::actor_index::extend(conn, last.seq, actor_mark)?;
        }
        diesel::update(head).set((audit_head::seq.eq(last.seq), audit_head::hash.eq(&last.hash))).execute(conn)?;
        Ok(())
    })
}

/// Decodes a stored hex hash; a malformed one decodes to all-ones so it never matches.
pub(crate) fn decode_hash(s: &str) -> [u8; 32] {
    // Table-driven: the verify walk decodes two hashes per entry, and the `hex` crate's
    // per-character branching showed in its profile.
    const BAD: u8 = 0xff;
    const VAL: [u8; 256] = {
        let mut t = [BAD; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let b = s.as_bytes();
    let mut out = [0xff; 32];
    if b.len() != 64 {
        return out;
    }
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (VAL[pair[0] as usize], VAL[pair[1] as usize]);
        if hi == BAD || lo == BAD {
            return [0xff; 32];
        }
        *o = hi << 4 | lo;
    }
    out
}
