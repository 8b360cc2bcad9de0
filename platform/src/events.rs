//! The event writer: every user-addressed event that matters later (`new_message`,
//! `file_message_update`, `file_update`, `file_share`, `security_alert`, ...) is given a per-user
//! `seq`, stored, and only then delivered to the user's live WebSocket connections.
//!
//! One thread does the writing with group commit, as the audit writer does: it takes everything
//! queued (up to a batch), runs each job's own rows (a message, say) and the event rows in one
//! write transaction — on PostgreSQL with a `NOTIFY` that announces them to the other nodes —
//! and commits. A second thread (`event-deliver`) then hands the batch's frames to the
//! [`Hub`](crate::realtime::hub::Hub) and answers its callers, in commit order, while the writer
//! writes the next batch. A job that fails on its own (a foreign key gone meanwhile) is retried
//! alone so it cannot sink the batch.
//!
//! Callers either wait for the commit ([`EventBus::commit`], used where the answer promises the
//! data is stored, as `POST /api/messages/send` does) or only for queue space
//! ([`EventBus::publish_to`]); [`EventBus::shutdown`] commits whatever is queued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::db::{write_transaction, Db, DbConnection, DbError, WriterConn, WriterStats};
use crate::realtime::hub::Hub;
use crate::realtime::store;

/// Extra rows a job writes in the same transaction as its events (a message, say). It may run
/// twice (batch, then alone after a batch failure), so it is `Fn`, not `FnOnce`.
pub type Rows = Box<dyn Fn(&mut DbConnection) -> diesel::QueryResult<()> + Send>;

/// One event for some users.
#[derive(Debug, Clone)]
pub struct Event {
    pub to: Vec<String>,
    pub name: &'static str,
    pub data: EventData,
}

/// An event's `data`: a JSON value, or JSON text its caller already has (a message's view,
/// serialised once for the event and the sender's answer instead of as a `Value` tree each).
#[derive(Debug, Clone)]
pub enum EventData {
    Value(serde_json::Value),
    /// Must be a JSON object's text.
    Text(Arc<str>),
}

impl From<serde_json::Value> for EventData {
    fn from(v: serde_json::Value) -> Self {
        Self::Value(v)
    }
}

/// An [`Event`] as the writer takes it: its data already JSON text, serialised by the caller's
/// task so the one writer thread does not.
struct Prepared {
    to: Vec<String>,
    name: &'static str,
    data: Arc<str>,
}

impl From<Event> for Prepared {
    fn from(e: Event) -> Self {
        let data = match e.data {
            EventData::Value(v) => v.to_string().into(),
            EventData::Text(t) => t,
        };
        Self { to: e.to, name: e.name, data }
    }
}

type Ack = oneshot::Sender<Result<(), CommitError>>;

struct Job {
    rows: Option<Rows>,
    events: Vec<Prepared>,
    ack: Option<Ack>,
}

impl Job {
    fn new(rows: Option<Rows>, events: Vec<Event>, ack: Option<Ack>) -> Self {
        Self { rows, events: events.into_iter().map(Prepared::from).collect(), ack }
    }
}

/// Why a job was not stored (nothing of it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The job's own rows refused (returned `NotFound`: the thing they change is gone or no
    /// longer in the state they expect). Retrying will not help.
    #[error("refused: the record is gone or changed")]
    Refused,
    /// The database failed or the writer stopped.
    #[error("{0}")]
    Failed(String),
}

enum Cmd {
    Job(Job),
    Shutdown(oneshot::Sender<()>),
}

/// Counters for `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Jobs committed.
    pub committed: AtomicU64,
    pub batches: AtomicU64,
    pub failed: AtomicU64,
    /// The writer thread's time waiting for and holding the database connection.
    pub conn: Arc<WriterStats>,
}

/// Handle to the event writer; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    tx: mpsc::Sender<Cmd>,
    stats: Arc<EventStats>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

const BATCH_MAX: usize = 512;
/// Committed batches waiting for the delivery thread.
const DELIVERY_QUEUE: usize = 16;
const COMMIT_ATTEMPTS: u32 = 5;

impl EventBus {
    /// Starts the writer thread.
    pub fn start(db: Db, hub: Arc<Hub>, node_id: String, queue_capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue_capacity);
        let stats = Arc::new(EventStats::default());
        let s = stats.clone();
        let thread = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || run_writer(db, hub, node_id, rx, s))
            .expect("spawn event writer thread");
        Self { tx, stats, thread: Arc::new(std::sync::Mutex::new(Some(thread))) }
    }

    /// Stores `rows` and `events` in one transaction, delivers the events, and returns once
    /// committed. An error means nothing of the job was stored.
    pub async fn commit(&self, rows: Option<Rows>, events: Vec<Event>) -> Result<(), CommitError> {
        let (ack, done) = oneshot::channel();
        let stopped = || CommitError::Failed("event writer stopped".into());
        self.tx.send(Cmd::Job(Job::new(rows, events, Some(ack)))).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// [`EventBus::commit`] for blocking code (delivery workers).
    pub fn commit_blocking(&self, rows: Option<Rows>, events: Vec<Event>) -> Result<(), CommitError> {
        let (ack, done) = oneshot::channel();
        let stopped = || CommitError::Failed("event writer stopped".into());
        self.tx.blocking_send(Cmd::Job(Job::new(rows, events, Some(ack)))).map_err(|_| stopped())?;
        done.blocking_recv().map_err(|_| stopped())?
    }

    /// Queues an event for `to` without waiting for the commit (only for queue space).
    pub async fn publish_to(&self, to: &[String], name: &'static str, data: serde_json::Value) {
        if to.is_empty() {
            return;
        }
        let job = Job::new(None, vec![Event { to: to.to_vec(), name, data: data.into() }], None);
        if self.tx.send(Cmd::Job(job)).await.is_err() {
            tracing::error!(event = name, "event writer stopped; event dropped");
        }
    }

    /// [`EventBus::publish_to`] for blocking code (scanner threads, CLI).
    pub fn publish_blocking(&self, to: &[String], name: &'static str, data: serde_json::Value) {
        if to.is_empty() {
            return;
        }
        let job = Job::new(None, vec![Event { to: to.to_vec(), name, data: data.into() }], None);
        if self.tx.blocking_send(Cmd::Job(job)).is_err() {
            tracing::error!(event = name, "event writer stopped; event dropped");
        }
    }

    /// Commits everything queued, then stops the writer thread.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(ack)).await.is_ok() {
            let _ = done.await;
        }
        self.join();
    }

    /// [`EventBus::shutdown`] for blocking code.
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

    pub fn stats(&self) -> &EventStats {
        &self.stats
    }
}

/// What a committed batch delivers: (user, seq, name, data as JSON text).
type Delivery = Vec<store::EventRow>;

/// A written batch's outcome, handed to the delivery thread: the frames go to the hub first,
/// then the callers are told, so a caller that got its answer knows its events were handed on.
#[derive(Default)]
struct Done {
    delivery: Vec<Delivery>,
    acks: Vec<(Ack, Result<(), CommitError>)>,
}

fn run_writer(db: Db, hub: Arc<Hub>, node_id: String, mut rx: mpsc::Receiver<Cmd>, stats: Arc<EventStats>) {
    let mut conn = WriterConn::new(db, stats.conn.clone());
    // Delivery (building each user's frame, queueing it on their connections) and waking the
    // callers run on their own thread, in commit order, while this one writes the next batch.
    // Bounded: a delivery thread that falls behind holds the writer back instead of piling up
    // committed batches in memory.
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Done>(DELIVERY_QUEUE);
    let h = hub.clone();
    let deliverer = std::thread::Builder::new()
        .name("event-deliver".into())
        .spawn(move || {
            for done in done_rx {
                deliver(&h, done);
            }
        })
        .expect("spawn event delivery thread");
    let mut jobs: Vec<Job> = Vec::with_capacity(BATCH_MAX);
    let mut stopped = None;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Job(j) => jobs.push(j),
                Cmd::Shutdown(s) => {
                    stopped = Some(s);
                    break;
                }
            }
            if jobs.len() < BATCH_MAX {
                next = rx.try_recv().ok();
            }
        }
        if stopped.is_some() {
            // Whatever was queued behind the shutdown request is still committed; the queue is
            // closed first, so a later send fails visibly instead of being dropped unseen.
            rx.close();
            while let Some(cmd) = rx.blocking_recv() {
                if let Cmd::Job(j) = cmd {
                    jobs.push(j);
                }
            }
        }
        for batch in jobs.chunks_mut(BATCH_MAX) {
            let done = write_batch(&mut conn, &node_id, batch, &stats);
            if let Err(e) = done_tx.send(done) {
                tracing::error!("event delivery thread stopped; delivering on the writer");
                deliver(&hub, e.0);
            }
        }
        jobs.clear();
        if stopped.is_some() {
            break;
        }
    }
    // Everything committed is delivered and acknowledged before shutdown returns.
    drop(done_tx);
    let _ = deliverer.join();
    if let Some(s) = stopped {
        let _ = s.send(());
    }
}

/// Hands a batch's events to the hub, then answers its callers.
fn deliver(hub: &Hub, done: Done) {
    for d in &done.delivery {
        for (user, seq, name, data) in d {
            hub.deliver_persisted(user, *seq, name, data);
        }
    }
    for (ack, r) in done.acks {
        let _ = ack.send(r);
    }
}

/// Writes a batch of jobs (a failed batch again job by job, so one bad job cannot sink the
/// others) and returns what to deliver and whom to answer. The jobs' acks are taken.
fn write_batch(conn: &mut WriterConn, node_id: &str, jobs: &mut [Job], stats: &EventStats) -> Done {
    let mut done = Done::default();
    let all: Vec<&Job> = jobs.iter().collect();
    match commit_with_retry(conn, node_id, &all) {
        Ok(delivery) => {
            count(stats, jobs.len());
            done.delivery.push(delivery);
            done.acks.extend(jobs.iter_mut().filter_map(|j| j.ack.take()).map(|a| (a, Ok(()))));
        }
        Err(batch_err) if jobs.len() > 1 => {
            tracing::warn!(error = %batch_err, jobs = jobs.len(), "event batch failed; committing its jobs one by one");
            for j in jobs.iter_mut() {
                let r = commit_with_retry(conn, node_id, &[&*j]);
                let r = match r {
                    Ok(d) => {
                        count(stats, 1);
                        done.delivery.push(d);
                        Ok(())
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "event job failed");
                        Err(e)
                    }
                };
                if let Some(a) = j.ack.take() {
                    done.acks.push((a, r));
                }
            }
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "event job failed");
            done.acks.extend(jobs.iter_mut().filter_map(|j| j.ack.take()).map(|a| (a, Err(e.clone()))));
        }
    }
    done
}

fn count(stats: &EventStats, jobs: usize) {
    stats.committed.fetch_add(jobs as u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
}

fn commit_with_retry(conn: &mut WriterConn, node_id: &str, jobs: &[&Job]) -> Result<Delivery, CommitError> {
    let mut last = String::new();
    for attempt in 0..COMMIT_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
        }
        match conn.run(|c| commit_once(c, node_id, jobs)) {
            Ok(d) => return Ok(d),
            Err(DbError::Query(diesel::result::Error::NotFound)) => return Err(CommitError::Refused),
            Err(e) => {
                last = e.to_string();
                // A failure that is the data's fault fails again: do not retry it.
                // (`NotFound` is what a job's rows return when they refuse, e.g. access gone.)
                if matches!(
                    e,
                    DbError::Query(
                        diesel::result::Error::NotFound
                            | diesel::result::Error::DatabaseError(
                                diesel::result::DatabaseErrorKind::ForeignKeyViolation
                                    | diesel::result::DatabaseErrorKind::CheckViolation
                                    | diesel::result::DatabaseErrorKind::NotNullViolation,
                                _,
                            )
                    )
                ) {
                    break;
                }
                conn.reset(); // a broken connection is replaced on the next attempt
            }
        }
    }
    Err(CommitError::Failed(last))
}

fn commit_once(conn: &mut DbConnection, node_id: &str, jobs: &[&Job]) -> Result<Delivery, DbError> {
    let now = crate::time::now_micros();
    let delivery = write_transaction(conn, |c| -> Result<Delivery, DbError> {
        // One counter update per user per batch (not per event): reserve each user's seqs.
        let mut need: HashMap<&str, i64> = HashMap::new();
        for job in jobs {
            for ev in &job.events {
                for user in &ev.to {
                    *need.entry(user.as_str()).or_default() += 1;
                }
            }
        }
        // In user order: on PostgreSQL each reserve locks a counter row until commit, and two
        // nodes locking the same users in different orders could deadlock.
        let mut need: Vec<(&str, i64)> = need.into_iter().collect();
        need.sort_unstable();
        let mut next: HashMap<&str, i64> = HashMap::with_capacity(need.len());
        for (user, n) in need {
            let last = store::reserve(c, user, n)?;
            next.insert(user, last - n + 1);
        }
        let mut out = Vec::new();
        for job in jobs {
            if let Some(rows) = &job.rows {
                rows(c)?;
            }
            for ev in &job.events {
                for user in &ev.to {
                    let seq = next.get_mut(user.as_str()).map(|s| std::mem::replace(s, *s + 1)).unwrap_or_default();
                    out.push((user.clone(), seq, ev.name, ev.data.clone()));
                }
            }
        }
        // The batch's event rows after its jobs' rows, several to a statement.
        store::insert_many(c, &out, now)?;
        // SQLite: now and then, the per-user key of the rows stored since the last time.
        store::fold_tail(c, store::FOLD_ROWS)?;
        crate::realtime::notify::announce(c, node_id, &out)?;
        Ok(out)
    })?;
    Ok(delivery)
}
