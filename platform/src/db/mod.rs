//! Database access: one code path over SQLite (embedded default) and PostgreSQL (multi-node).
//!
//! Diesel is blocking, so every query goes through [`Db::run`], which moves it onto Tokio's
//! blocking pool and keeps the async workers free. SQLite connections are opened in WAL mode
//! with a busy timeout and foreign keys on; migrations for both backends are embedded.

pub mod schema;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::Config;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
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

/// WAL pages after which a commit checkpoints (SQLite's default is 1,000, ~4 MiB). A message
/// batch dirties index leaves of many users, so at the default nearly every batch paid a
/// checkpoint (a copy into the database file plus two fsyncs) on the commit path; at 16,384
/// (~64 MiB) the checkpoint copies each hot page once for many commits. Measured in
/// `docs/architecture.md` (decisions). The WAL file is cut back to this size after a checkpoint.
/// Durability is unchanged: with `synchronous = NORMAL` a commit survives a process crash at
/// once and a power cut after the next WAL sync, as before.
const WAL_CHECKPOINT_PAGES: u32 = 16_384;

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
                 PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}; PRAGMA journal_size_limit = {};",
                self.busy_timeout_ms,
                WAL_CHECKPOINT_PAGES * 4096 // bytes at SQLite's default page size
            ))
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// Page cache of a dedicated writer thread's SQLite connection, in KiB.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

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
    match f(conn) {
        Ok(v) => {
            if let Err(e) = Tm::commit_transaction(conn) {
                let _ = Tm::rollback_transaction(conn);
                return Err(e.into());
            }
            Ok(v)
        }
        Err(e) => {
            let _ = Tm::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// The shared connection pool plus the backend it talks to.
#[derive(Clone)]
pub struct Db {
    pool: DbPool,
    backend: Backend,
    /// SQLite: the one connection the dedicated writer threads share ([`WriterConn`]).
    shared_writer: Arc<Mutex<Option<PooledConn>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish()
    }
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
        Ok(Self { pool, backend, shared_writer: Arc::new(Mutex::new(None)) })
    }

    /// A connection for a dedicated writer thread (audit log, events), with the writer's page
    /// cache ([`prepare_writer`]). Writer threads use [`WriterConn`], which shares one on SQLite.
    fn get_writer(&self) -> Result<PooledConn, DbError> {
        let mut c = self.get()?;
        prepare_writer(&mut c);
        Ok(c)
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
                    None => slot.insert(self.db.get_writer()?),
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
