//! Database access: one code path over SQLite (embedded default) and PostgreSQL (multi-node).
//!
//! Diesel is blocking, so every query goes through [`Db::run`], which moves it onto Tokio's
//! blocking pool and keeps the async workers free. SQLite connections are opened in WAL mode
//! with a busy timeout and foreign keys on; migrations for both backends are embedded.

pub mod multirow;
pub mod schema;
#[cfg(test)]
pub(crate) mod testing;
mod walbuf;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel::QueryableByName;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::Config;

pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// A connection to whichever backend the configuration names.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

pub type DbPool = Pool<ConnectionManager<DbConnection>>;
pub type PooledConn = PooledConnection<ConnectionManager<DbConnection>>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("no database connection available: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("database task failed: {0}")]
    Task(String),
}

/// Which backend a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// WAL pages (~256 MiB) at which the [`Checkpointer`] starts the WAL over. Every pass of that
/// thread copies what was committed since the last one, so the window does not change what is
/// copied; it sets how often the WAL restarts, and each restart holds the writers for one short
/// checkpoint with its two fsyncs (~40 ms here). At ~64 MiB that came every second under the
/// realtime benchmark and set its p99; at 256 MiB it comes every few seconds at that load and
/// never at an ordinary one (a light load lets each pass copy everything, and the WAL restarts
/// at the next commit without the lock). Writers that append faster than a pass copies (seen
/// at ~135 MB/s of WAL on a slow machine) never leave a short tail, and the WAL then grows to
/// the [`AUTOCHECKPOINT_PAGES`] backstop instead. (History: SQLite's default of 1,000 pages made nearly
/// every message batch pay a checkpoint on its commit; 16,384 pages, with checkpoints still on
/// the commit path, was the eighth session's fix; see `docs/architecture.md`.) Durability is
/// unchanged: with `synchronous = NORMAL` a commit survives a process crash at once and a power
/// cut after the next WAL sync, as before.
const WAL_CHECKPOINT_PAGES: u32 = 65_536;

/// Bytes the WAL file is cut back to when it starts over (`journal_size_limit`): the longest WAL
/// the writers let grow ([`AUTOCHECKPOINT_PAGES`] frames of a 4 KiB page and its 24-byte
/// header). Cut back to the checkpoint window instead, the WAL — which the checkpointer starts
/// over a little past that window — was truncated at every restart, and dropping the truncated
/// part's cached pages took ~50 ms of kernel time inside whichever writer's transaction came
/// next: every message waited (the 1-second stalls that set the benchmark's p99). Not cut back,
/// the file's pages are overwritten in place.
const WAL_SIZE_LIMIT: u64 = AUTOCHECKPOINT_PAGES as u64 * (4096 + 24);

#[derive(Debug)]
struct SqlitePragmas {
    busy_timeout_ms: u32,
}

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        if let DbConnection::Sqlite(c) = conn {
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                 PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}; PRAGMA journal_size_limit = {};",
                self.busy_timeout_ms, WAL_SIZE_LIMIT
            ))
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// WAL pages (~1 GiB) after which a commit checkpoints by itself (`wal_autocheckpoint` on every
/// connection): a backstop only. Checkpoints are the [`Checkpointer`]'s job, off the commit
/// path; should it fall behind (or not run, as in CLI commands), a commit still bounds the WAL
/// here. (A process's last connection to close also checkpoints and removes the WAL.)
const AUTOCHECKPOINT_PAGES: u32 = 4 * WAL_CHECKPOINT_PAGES;

/// How often the [`Checkpointer`] copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Once the WAL holds [`WAL_CHECKPOINT_PAGES`], the checkpointer copies what its unlocked pass
/// left (at most this many pages) while holding the writer connection, so that the next commit
/// starts the WAL over; a longer tail is left to the next pass rather than stall the writers.
const CHECKPOINT_TAIL_PAGES: i64 = 256;

/// Unlocked passes the checkpointer makes, at most, to bring the uncopied tail of a long WAL
/// down to [`CHECKPOINT_TAIL_PAGES`] before it takes the writer connection.
const CATCH_UP_PASSES: usize = 4;

/// Page cache of a dedicated writer thread's SQLite connection, in KiB. 16 MiB holds the
/// writers' working set (the index leaves and interior pages a batch touches: no re-reads
/// under the realtime benchmark at 16 MiB, a few at 8 MiB, many at 4 MiB) without making each
/// commit pay for a big cache: when a B-tree split reorders sibling pages, SQLite parks a page
/// under the pending-byte page number (page 262,145 with 4 KiB pages) for a moment, and the
/// commit that follows then walks the *whole* page cache to drop pages past the end of the
/// database (`pcache1TruncateUnsafe`). At 64 MiB that walk was 6–9 % of the event writer's time;
/// at 16 MiB it is ~2.5 % (docs/decisions/0004).
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// Prepares a connection that a dedicated writer thread (audit log, events) keeps for good.
/// SQLite's default page cache (2 MiB) is smaller than the pages one batch of a few hundred
/// messages dirties (index leaves of many users), so a batch spilled and re-read its own pages
/// through the WAL; a larger cache keeps a batch's pages in memory until commit.
fn prepare_writer(conn: &mut DbConnection) {
    if let DbConnection::Sqlite(c) = conn {
        if let Err(e) = c.batch_execute(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}")) {
            tracing::warn!(error = %e, "could not enlarge the writer's page cache");
        }
    }
}

/// Runs `f` in a transaction that holds the write lock from its first statement.
///
/// Use it for every transaction that writes. On SQLite a plain (deferred) transaction that
/// reads and then writes fails at once with `SQLITE_BUSY` when another connection committed in
/// between — `busy_timeout` does not help there — whereas `BEGIN IMMEDIATE` waits its turn.
/// Nested `transaction` calls inside `f` become savepoints as usual.
pub fn write_transaction<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    type Tm = <DbConnection as diesel::Connection>::TransactionManager;
    AFTER_COMMIT.with_borrow_mut(Vec::clear);
    match f(conn) {
        Ok(v) => {
            if let Err(e) = Tm::commit_transaction(conn) {
                let _ = Tm::rollback_transaction(conn);
                AFTER_COMMIT.with_borrow_mut(Vec::clear);
                return Err(e.into());
            }
            for done in AFTER_COMMIT.take() {
                done();
            }
            Ok(v)
        }
        Err(e) => {
            let _ = Tm::rollback_transaction(conn);
            AFTER_COMMIT.with_borrow_mut(Vec::clear);
            Err(e)
        }
    }
}

thread_local! {
    /// What [`after_commit`] queued during this thread's running [`write_transaction`].
    static AFTER_COMMIT: std::cell::RefCell<Vec<Box<dyn FnOnce()>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` once the [`write_transaction`] this thread is running commits; dropped if it rolls
/// back. For in-memory knowledge that must only ever describe committed rows (a cache filled
/// while writing). Outside a `write_transaction` it waits for the thread's next one.
pub fn after_commit(f: impl FnOnce() + 'static) {
    AFTER_COMMIT.with_borrow_mut(|v| v.push(Box::new(f)));
}

/// The shared connection pool plus the backend it talks to.
#[derive(Clone)]
pub struct Db {
    pool: DbPool,
    backend: Backend,
    /// SQLite: the one connection the dedicated writer threads share ([`WriterConn`]).
    shared_writer: Arc<Mutex<Option<PooledConn>>>,
    /// SQLite: the checkpoint thread, started with the shared writer connection and stopped
    /// when the last clone of this `Db` goes.
    checkpointer: Arc<Mutex<Option<Checkpointer>>>,
}

/// SQLite's WAL checkpoints, done by a thread of their own instead of inside a writer's commit.
///
/// With `wal_autocheckpoint` the commit that crosses the threshold copies every page changed
/// since the last checkpoint into the database file and syncs it, while the writer (and every
/// message waiting for its batch) waits: a tenth of the event writer's time under load, and its
/// slowest commits. Here a thread copies the WAL every [`CHECKPOINT_EVERY`] through a pool
/// connection, concurrently with the writers (a checkpoint takes no write lock). Because the
/// writers keep appending meanwhile, such a pass rarely leaves the WAL fully copied, and SQLite
/// only starts the WAL over when it is; so once the WAL has reached [`WAL_CHECKPOINT_PAGES`] and
/// a pass left a short tail (at most [`CHECKPOINT_TAIL_PAGES`]), the thread copies that tail
/// while holding the shared writer connection (no commit can append then), and the next commit
/// starts the WAL from its beginning. Should the thread fall behind, the writer connection's
/// own automatic checkpoint ([`AUTOCHECKPOINT_PAGES`]) still bounds the WAL. Durability is
/// unchanged: a checkpoint only copies what is already committed in the WAL.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(pool: DbPool, writer: std::sync::Weak<Mutex<Option<PooledConn>>>) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("wal-checkpoint".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                let mut conn = match pool.get() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint: no connection");
                        continue;
                    }
                };
                let Some((wal, mut left)) = checkpoint(&mut conn) else { continue };
                if wal < i64::from(WAL_CHECKPOINT_PAGES) {
                    continue;
                }
                // Time to start the WAL over. Catch up without the lock first, so that what is
                // copied under it (and synced: a checkpoint syncs the WAL, then the database
                // file) is only what the last pass could not reach.
                for _ in 0..CATCH_UP_PASSES {
                    if left <= CHECKPOINT_TAIL_PAGES {
                        break;
                    }
                    match checkpoint(&mut conn) {
                        Some((_, l)) => left = l,
                        None => break,
                    }
                }
                drop(conn);
                if left > 0 && left <= CHECKPOINT_TAIL_PAGES {
                    let Some(writer) = writer.upgrade() else { return };
                    let mut slot = writer.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = slot.as_mut() {
                        checkpoint(c);
                    }
                }
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One passive checkpoint; returns the WAL's length in frames and how many of them it could not
/// copy yet (`None` on failure).
fn checkpoint(conn: &mut DbConnection) -> Option<(i64, i64)> {
    #[derive(QueryableByName)]
    struct Ckpt {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        busy: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        log: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        checkpointed: i32,
    }
    use diesel::RunQueryDsl;
    let DbConnection::Sqlite(c) = conn else { return None };
    match diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result::<Ckpt>(c) {
        Ok(r) if r.busy == 0 && r.log >= 0 => Some((i64::from(r.log), i64::from(r.log - r.checkpointed.max(0)))),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed");
            None
        }
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish()
    }
}

/// Process-wide SQLite settings, applied once before SQLite's first use in this process:
/// * `SQLITE_CONFIG_MULTITHREAD`: no mutex around each call on a connection. Every connection
///   here is used by one thread at a time (a diesel connection is not `Sync`; the pool and
///   [`WriterConn`] hand it out exclusively), which is all this mode asks.
/// * `SQLITE_CONFIG_MEMSTATUS` off: no global mutex around every allocation SQLite makes to
///   keep memory statistics nobody reads (SQLite's own list of recommended options).
///
/// SQLite's mutexes were a tenth of the event writer's time in its profile (`pthread_mutex_*`);
/// with these two options, 6 % (docs/decisions/0004).
/// Too late (SQLite already initialised, as in a test process that opened a database first)
/// they are refused and SQLite keeps its defaults, which are safe too.
#[allow(unsafe_code)] // sqlite3_config has no safe wrapper in diesel or libsqlite3-sys
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use libsqlite3_sys as ffi;
        // SAFETY: both options take the documented arguments. sqlite3_config must run before
        // sqlite3_initialize (afterwards SQLite refuses it with SQLITE_MISUSE) and while no other
        // thread uses SQLite: in the server and the CLI the first use of SQLite is `Db::open`,
        // before any thread that touches a database starts. (In the unit-test process a test may
        // race it; the worst case there is a mode chosen per connection opened after, each used by
        // one thread, or memory counters nobody reads.)
        let (threading, memstatus) = unsafe {
            (
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MULTITHREAD),
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::os::raw::c_int),
            )
        };
        if threading != ffi::SQLITE_OK || memstatus != ffi::SQLITE_OK {
            tracing::debug!(threading, memstatus, "SQLite was initialised already; its default settings stay");
        }
    });
}

impl Db {
    /// Opens the pool described by the configuration (creating the SQLite folder if needed).
    pub fn open(cfg: &Config) -> Result<Self, DbError> {
        let url = cfg.database_url();
        let (backend, conn_url) = match url.strip_prefix("sqlite://") {
            Some(path) => {
                if let Some(parent) = std::path::Path::new(path).parent() {
                    if !parent.as_os_str().is_empty() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| DbError::Connect(format!("cannot create {}: {e}", parent.display())))?;
                    }
                }
                configure_sqlite();
                // Each transaction's WAL frames written together, in 64 KiB pieces
                // (db/walbuf.rs); the environment variable turns it off, should it ever be
                // suspected (docs/operations.md).
                if std::env::var("SECCOLLAB_SQLITE_WAL_BUFFER").as_deref() != Ok("off") {
                    walbuf::register();
                }
                (Backend::Sqlite, path.to_string())
            }
            None => (Backend::Postgres, url.clone()),
        };
        let manager = ConnectionManager::<DbConnection>::new(conn_url);
        let pool = Pool::builder()
            .max_size(cfg.database.pool_size)
            .connection_timeout(Duration::from_secs(cfg.database.connect_timeout_secs))
            .connection_customizer(Box::new(SqlitePragmas { busy_timeout_ms: cfg.database.sqlite_busy_timeout_ms }))
            .build(manager)
            .map_err(|e| DbError::Connect(e.to_string()))?;
        Ok(Self { pool, backend, shared_writer: Arc::new(Mutex::new(None)), checkpointer: Arc::new(Mutex::new(None)) })
    }

    /// A connection for a dedicated writer thread (audit log, events), with the writer's page
    /// cache ([`prepare_writer`]). Writer threads use [`WriterConn`], which shares one on SQLite.
    fn get_writer(&self) -> Result<PooledConn, DbError> {
        let mut c = self.get()?;
        prepare_writer(&mut c);
        Ok(c)
    }

    /// Starts the [`Checkpointer`] unless it runs (SQLite only).
    fn start_checkpointer(&self) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let mut slot = self.checkpointer.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            match Checkpointer::start(self.pool.clone(), Arc::downgrade(&self.shared_writer)) {
                Ok(c) => *slot = Some(c),
                // The writer's own checkpoints (AUTOCHECKPOINT_PAGES) still bound the WAL.
                Err(e) => tracing::warn!(error = %e, "could not start the WAL checkpoint thread"),
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for blocking code (CLI, background threads).
    pub fn get(&self) -> Result<PooledConn, DbError> {
        Ok(self.pool.get()?)
    }

    /// Pool figures for `/metrics`: (connections open, idle).
    pub fn pool_state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }

    /// Applies every pending embedded migration; returns how many ran.
    pub fn migrate(&self) -> Result<usize, DbError> {
        let mut conn = self.get()?;
        let applied = match &mut *conn {
            DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
            DbConnection::Pg(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()),
        };
        applied.map_err(|e| DbError::Migration(e.to_string()))
    }

    /// [`Db::run`] for plain diesel work.
    pub async fn q<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.run(move |c| f(c).map_err(DbError::from)).await
    }

    /// Runs blocking database work on the blocking pool.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }
}

/// The connection a dedicated writer thread (audit log, events) writes through.
///
/// On SQLite every writer thread of the process goes through **one** shared connection, taken
/// under a mutex for each transaction. Two reasons: SQLite lets one writer in at a time anyway
/// (the mutex queues them in Rust instead of SQLite's busy handler, which sleeps 1, 2, 5, 10…
/// ms between attempts), and a commit made through *another* connection makes SQLite drop a
/// connection's whole page cache at its next transaction. With a connection each, every audit
/// commit threw away the event writer's 64 MiB cache, which then re-read its index pages
/// (`pread` was 15 % of the event writer's profile); through one connection the cache stays
/// warm. On PostgreSQL each thread keeps a connection of its own: row locks queue writers
/// precisely and the server keeps the cache.
pub struct WriterConn {
    db: Db,
    own: Option<PooledConn>,
    stats: Arc<WriterStats>,
}

/// How a writer thread spends its time on the connection, for `/metrics` and the benchmarks:
/// the share of a second a writer waits for, or holds, the connection tells whether the one
/// SQLite write path is what bounds throughput.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Microseconds spent waiting for the shared connection (SQLite: another writer thread held
    /// it; always 0 on PostgreSQL, where each writer has its own).
    pub wait_micros: std::sync::atomic::AtomicU64,
    /// Microseconds spent holding the connection (running transactions, including any wait
    /// inside them for a lock held by another connection).
    pub busy_micros: std::sync::atomic::AtomicU64,
    /// Transactions run.
    pub runs: std::sync::atomic::AtomicU64,
}

impl WriterStats {
    /// Runs `f` and counts it: `waited` is how long the connection took to get (the shared
    /// connection's lock), `f`'s own time is busy time.
    fn timed<R>(&self, waited: std::time::Duration, f: impl FnOnce() -> R) -> R {
        use std::sync::atomic::Ordering::Relaxed;
        let start = std::time::Instant::now();
        let r = f();
        self.wait_micros.fetch_add(waited.as_micros() as u64, Relaxed);
        self.busy_micros.fetch_add(start.elapsed().as_micros() as u64, Relaxed);
        self.runs.fetch_add(1, Relaxed);
        r
    }
}

impl WriterConn {
    /// A writer connection that counts its waiting and busy time into `stats`.
    pub fn new(db: Db, stats: Arc<WriterStats>) -> Self {
        Self { db, own: None, stats }
    }

    /// Runs `f` on the writer connection, opening it first if there is none. Nothing else
    /// writes through the connection while `f` runs.
    pub fn run<T, E: From<DbError>>(&mut self, f: impl FnOnce(&mut DbConnection) -> Result<T, E>) -> Result<T, E> {
        match self.db.backend {
            Backend::Sqlite => {
                let asked = std::time::Instant::now();
                let mut slot = self.db.shared_writer.lock().unwrap_or_else(|e| e.into_inner());
                let waited = asked.elapsed();
                let conn = match &mut *slot {
                    Some(c) => c,
                    None => {
                        self.db.start_checkpointer();
                        slot.insert(self.db.get_writer()?)
                    }
                };
                self.stats.timed(waited, || f(conn))
            }
            Backend::Postgres => {
                let conn = match &mut self.own {
                    Some(c) => c,
                    None => self.own.insert(self.db.get_writer()?),
                };
                self.stats.timed(std::time::Duration::ZERO, || f(conn))
            }
        }
    }

    /// Drops the connection after a failure that may have broken it; the next [`WriterConn::run`]
    /// opens a new one.
    pub fn reset(&mut self) {
        match self.db.backend {
            Backend::Sqlite => *self.db.shared_writer.lock().unwrap_or_else(|e| e.into_inner()) = None,
            Backend::Postgres => self.own = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl;

    /// Commits through the shared writer connection reach the database file itself (not only
    /// the WAL) without a writer checkpointing, and once the thread has copied everything the
    /// next commit starts the WAL over (a short load never reaches the restart window, so it is
    /// the thread's full passes that let it restart).
    #[test]
    fn the_checkpoint_thread_copies_the_wal_and_lets_it_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.storage.data_dir = dir.path().to_path_buf();
        let db = Db::open(&cfg).unwrap();
        let mut w = WriterConn::new(db.clone(), Default::default());
        w.run(|c| c.batch_execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)").map_err(DbError::from))
            .unwrap();
        let row = "x".repeat(3000);
        let (rounds, per_round) = (48, 256);
        for _ in 0..rounds {
            w.run(|c| {
                write_transaction(c, |c| {
                    for _ in 0..per_round {
                        diesel::sql_query("INSERT INTO t (v) VALUES (?)")
                            .bind::<diesel::sql_types::Text, _>(&row)
                            .execute(c)?;
                    }
                    Ok::<_, DbError>(())
                })
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(25));
        }
        // The database file alone (a copy without its WAL) holds every committed row.
        let copy = dir.path().join("copy.db");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let n = loop {
            std::fs::copy(dir.path().join("seccollab.db"), &copy).unwrap();
            let mut c = <SqliteConnection as diesel::Connection>::establish(copy.to_str().unwrap()).unwrap();
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let n = diesel::sql_query("SELECT count(*) AS n FROM t").get_result::<N>(&mut c).map(|r| r.n).unwrap_or(-1);
            drop(c);
            if n == (rounds * per_round) as i64 || std::time::Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(n, (rounds * per_round) as i64, "rows in the database file without its WAL");
        // Passive checkpoints of ours until one gets through (it comes back busy while the
        // thread's pass runs) and `done(frames, left)` holds; returns its WAL length in frames.
        let checkpoint_until = |done: fn(i64, i64) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match checkpoint(&mut db.get().unwrap()) {
                    Some((log, left)) if done(log, left) => break log,
                    _ => assert!(std::time::Instant::now() < deadline, "no such checkpoint in 10 s"),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        // A copy can see every row while the thread's pass is still finishing (its pages written,
        // the WAL not yet marked copied), and the WAL starts over only at a commit after a
        // completed pass: wait until nothing is left to copy.
        checkpoint_until(|_, left| left == 0);

        // Everything is copied: the next commit starts the WAL from its beginning, so the WAL
        // then holds that commit's frames only (not the ~9,000 written above).
        w.run(|c| {
            write_transaction(c, |c| c.batch_execute("INSERT INTO t (v) VALUES ('after')").map_err(DbError::from))
        })
        .unwrap();
        let log = checkpoint_until(|_, _| true);
        assert!((1..100).contains(&log), "{log} frames in the WAL after the restart");
    }
}
