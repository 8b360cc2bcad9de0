//! `seccollab backup DIR` and `seccollab restore DIR`: a consistent online backup of the
//! database, the keys and the stored objects, and its restore into an empty installation.
//!
//! Layout of a backup folder (created as `DIR.partial`, renamed to `DIR` when complete, so a
//! folder named `DIR` is always a whole backup):
//!
//! ```text
//! manifest.json      format, version, time, backend, and every object: key, size, sha256
//! seccollab.db       SQLite: a transactionally consistent copy (`VACUUM INTO`)
//! database.pgdump    PostgreSQL: `pg_dump --format=custom` of the same snapshot the object list
//!                    was read from (`pg_export_snapshot`)
//! keys/              the JWT signing key, the master key and retired master keys (0600)
//! objects/<key>      the encrypted objects the database refers to, as stored (ciphertext)
//! ```
//! The backup holds the master key: whoever has it can read every file. Keep it like the keys
//! themselves (the folder is created 0700, files 0600).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::db::{Backend, Db};

pub const FORMAT: &str = "seccollab-backup";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub seccollab_version: String,
    pub created_at: String,
    /// `sqlite` or `postgres`: a backup restores onto the same backend.
    pub backend: String,
    pub objects: Vec<ObjectEntry>,
    /// Objects the database referred to that were gone when copied (deleted meanwhile).
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// What a backup or restore did.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dir: String,
    pub backend: String,
    pub objects: usize,
    pub bytes: u64,
    pub missing: usize,
    pub seconds: f64,
}

impl Summary {
    fn of(dir: &Path, manifest: Manifest, bytes: u64, started: Instant) -> Self {
        Summary {
            dir: dir.display().to_string(),
            backend: manifest.backend,
            objects: manifest.objects.len(),
            bytes,
            missing: manifest.missing.len(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Reads `from` to the end in 256 KiB blocks, handing each to `to`; returns (bytes, SHA-256 hex).
fn copy_hashed(
    from: &mut dyn Read,
    what: &str,
    to: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(u64, String), String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| format!("{what}: {e}"))?;
        if n == 0 {
            return Ok((size, hex::encode(h.finalize())));
        }
        h.update(&buf[..n]);
        to(&buf[..n])?;
        size += n as u64;
    }
}

fn io(ctx: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("{ctx}: {e}")
}

fn private_dir(p: &Path) -> Result<(), String> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p).map_err(io(p.display()))
}

fn private_file(p: &Path) -> Result<fs::File, String> {
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p).map_err(io(p.display()))
}

fn is_empty_or_missing(p: &Path) -> bool {
    match fs::read_dir(p) {
        Ok(mut d) => d.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Copies every file of the keys folder (and `retired/`) into `to`, 0600.
fn copy_keys(from: &Path, to: &Path) -> Result<usize, String> {
    private_dir(to)?;
    let mut n = 0;
    for e in fs::read_dir(from).map_err(io(from.display()))?.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() {
            n += copy_keys(&p, &to.join(&name))?;
        } else if p.is_file() {
            let data = fs::read(&p).map_err(io(p.display()))?;
            private_file(&to.join(&name))?.write_all(&data).map_err(io(p.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

struct Progress {
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Self { started: Instant::now(), last: Instant::now() }
    }

    fn tick(&mut self, what: &str, done: usize, total: usize, bytes: u64) {
        if done == total || self.last.elapsed().as_millis() >= 1000 {
            self.last = Instant::now();
            eprintln!(
                "{what} {done}/{total} objects, {:.1} MiB ({:.1} s)",
                bytes as f64 / 1_048_576.0,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The configured object store (`storage.backend`: local or a storage plugin).
fn storage(cfg: &Config) -> Result<std::sync::Arc<dyn seccollab_plugin_api::StorageBackend>, String> {
    let s = crate::plugins::Registry::load_storage(cfg).storage_backend(cfg).map_err(|e| format!("storage: {e}"))?;
    Ok(s)
}

fn pg_tool(name: &str) -> Result<PathBuf, String> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.ok_or_else(|| format!("{name} is needed for PostgreSQL backups; install the PostgreSQL client tools"))
}

/// Makes a backup into `dir` (which must not exist) while the server may be running.
pub fn backup(cfg: &Config, dir: &Path) -> Result<Summary, String> {
    if dir.exists() {
        return Err(format!("{} exists; give a new folder", dir.display()));
    }
    let partial = PathBuf::from(format!("{}.partial", dir.display()));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(partial.display()))?;
    }
    private_dir(&partial)?;
    let started = Instant::now();
    let db = Db::open(cfg).map_err(|e| e.to_string())?;
    let backend = db.backend();
    // 1. Database snapshot, and the object keys as of that snapshot.
    let keys: Vec<String> = match backend {
        Backend::Sqlite => {
            let target = partial.join("seccollab.db");
            let mut conn = db.get().map_err(|e| e.to_string())?;
            let quoted = target.display().to_string().replace('\'', "''");
            diesel::sql_query(format!("VACUUM INTO '{quoted}'"))
                .execute(&mut *conn)
                .map_err(|e| format!("snapshot: {e}"))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).map_err(io(target.display()))?;
            let mut snap = diesel::SqliteConnection::establish(&target.display().to_string())
                .map_err(|e| format!("snapshot: {e}"))?;
            crate::db::schema::files::table
                .select(crate::db::schema::files::storage_key)
                .load(&mut snap)
                .map_err(|e| format!("snapshot: {e}"))?
        }
        Backend::Postgres => {
            let url = cfg.database_url();
            let pg_dump = pg_tool("pg_dump")?;
            let mut conn = diesel::PgConnection::establish(&url).map_err(|e| format!("database: {e}"))?;
            conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").map_err(|e| e.to_string())?;
            #[derive(QueryableByName)]
            struct Snap {
                #[diesel(sql_type = diesel::sql_types::Text)]
                id: String,
            }
            let snap: Snap = diesel::sql_query("SELECT pg_export_snapshot() AS id")
                .get_result(&mut conn)
                .map_err(|e| format!("snapshot: {e}"))?;
            let keys: Vec<String> = crate::db::schema::files::table
                .select(crate::db::schema::files::storage_key)
                .load(&mut conn)
                .map_err(|e| format!("snapshot: {e}"))?;
            let target = partial.join("database.pgdump");
            let (safe_url, password) = split_password(&url)?;
            let out = pg_command(pg_dump, password)
                .args(["--format=custom", "--no-owner", "--no-privileges", "--snapshot", &snap.id, "--file"])
                .arg(&target)
                .arg(&safe_url)
                .output()
                .map_err(|e| format!("pg_dump: {e}"))?;
            if !out.status.success() {
                return Err(format!("pg_dump failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).map_err(io(target.display()))?;
            let _ = conn.batch_execute("COMMIT");
            keys
        }
    };
    // 2. Keys.
    copy_keys(&cfg.keys_dir(), &partial.join("keys"))?;
    // 3. Objects, as stored (encrypted), checksummed.
    let store = storage(cfg)?;
    private_dir(&partial.join("objects"))?;
    let mut objects = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    let mut bytes = 0u64;
    let mut progress = Progress::new();
    for (i, key) in keys.iter().enumerate() {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("unexpected storage key {key:?} in the database"));
        }
        let mut reader = match store.get(key, 0) {
            Ok(r) => r,
            Err(seccollab_plugin_api::StorageError::NotFound) => {
                missing.push(key.clone());
                continue;
            }
            Err(e) => return Err(format!("object {key}: {e}")),
        };
        let path = partial.join("objects").join(key);
        let mut out = std::io::BufWriter::new(private_file(&path)?);
        let (size, sha256) =
            copy_hashed(&mut reader, &format!("object {key}"), &mut |b| out.write_all(b).map_err(io(path.display())))?;
        out.into_inner().map_err(|e| format!("{}: {e}", path.display()))?.sync_all().map_err(io(path.display()))?;
        bytes += size;
        objects.push(ObjectEntry { key: key.clone(), size, sha256 });
        progress.tick("copied", i + 1, keys.len(), bytes);
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        seccollab_version: env!("CARGO_PKG_VERSION").into(),
        created_at: crate::time::micros_to_rfc3339(crate::time::now_micros()),
        backend: if backend == Backend::Sqlite { "sqlite" } else { "postgres" }.into(),
        objects,
        missing,
    };
    let m = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let mut f = private_file(&partial.join("manifest.json"))?;
    f.write_all(&m).and_then(|_| f.sync_all()).map_err(io("manifest.json"))?;
    fs::rename(&partial, dir).map_err(io(dir.display()))?;
    Ok(Summary::of(dir, manifest, bytes, started))
}

/// Restores the backup in `dir` into the configured installation, which must be empty: no
/// database (no SQLite file / no tables in PostgreSQL), no keys, no objects.
pub fn restore(cfg: &Config, dir: &Path) -> Result<Summary, String> {
    let started = Instant::now();
    let raw = fs::read(dir.join("manifest.json")).map_err(io(format!("{}/manifest.json", dir.display())))?;
    let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| format!("manifest.json: {e}"))?;
    if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
        return Err(format!(
            "{} is not a SecCollab backup of format version {FORMAT_VERSION} (found {} {})",
            dir.display(),
            manifest.format,
            manifest.format_version
        ));
    }
    let url = cfg.database_url();
    let target_pg = url.starts_with("postgres");
    if target_pg != (manifest.backend == "postgres") {
        return Err(format!(
            "the backup is of a {} database and the configuration names a {} one; restore onto the same backend",
            manifest.backend,
            if target_pg { "postgres" } else { "sqlite" }
        ));
    }
    // Refuse to overwrite anything.
    let keys_dir = cfg.keys_dir();
    if !is_empty_or_missing(&keys_dir) {
        return Err(format!("{} is not empty: restore needs an empty installation", keys_dir.display()));
    }
    let store = storage(cfg)?;
    let held = store.list().map_err(|e| format!("storage: {e}"))?.len();
    if held > 0 {
        return Err(format!(
            "the object store ({}) holds {held} objects: restore needs an empty installation",
            cfg.storage.backend
        ));
    }
    // Check the objects before writing anything.
    for o in &manifest.objects {
        let p = dir.join("objects").join(&o.key);
        let meta = fs::metadata(&p).map_err(io(p.display()))?;
        if meta.len() != o.size {
            return Err(format!("{}: {} bytes, the manifest says {}", p.display(), meta.len(), o.size));
        }
    }
    // 1. Database.
    if target_pg {
        let mut conn = diesel::PgConnection::establish(&url).map_err(|e| format!("database: {e}"))?;
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let c: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .get_result(&mut conn)
        .map_err(|e| e.to_string())?;
        if c.n > 0 {
            return Err("the PostgreSQL database is not empty: restore needs an empty database".into());
        }
        let (safe_url, password) = split_password(&url)?;
        let out = pg_command(pg_tool("pg_restore")?, password)
            .args(["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "--dbname"])
            .arg(&safe_url)
            .arg(dir.join("database.pgdump"))
            .output()
            .map_err(|e| format!("pg_restore: {e}"))?;
        if !out.status.success() {
            return Err(format!("pg_restore failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    } else {
        let path = PathBuf::from(url.trim_start_matches("sqlite://"));
        if path.exists() {
            return Err(format!("{} exists: restore needs an empty installation", path.display()));
        }
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        let tmp = PathBuf::from(format!("{}.restoring", path.display()));
        let _ = fs::remove_file(&tmp);
        fs::copy(dir.join("seccollab.db"), &tmp).map_err(io("seccollab.db"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io(tmp.display()))?;
        fs::rename(&tmp, &path).map_err(io(path.display()))?;
    }
    // 2. Keys.
    copy_keys(&dir.join("keys"), &keys_dir)?;
    // 3. Objects, verified against the manifest as they are written.
    let mut bytes = 0u64;
    let mut progress = Progress::new();
    for (i, o) in manifest.objects.iter().enumerate() {
        let p = dir.join("objects").join(&o.key);
        let mut f = fs::File::open(&p).map_err(io(p.display()))?;
        let mut w = store.put(&o.key).map_err(|e| format!("object {}: {e}", o.key))?;
        // A failed or damaged copy is aborted: no partial object is left in the store.
        let copied = copy_hashed(&mut f, &p.display().to_string(), &mut |b| {
            w.write(b).map_err(|e| format!("object {}: {e}", o.key))
        });
        match copied {
            Ok((_, sha)) if sha == o.sha256 => {}
            Ok(_) => {
                w.abort();
                return Err(format!("{}: checksum differs from the manifest (the backup is damaged)", p.display()));
            }
            Err(e) => {
                w.abort();
                return Err(e);
            }
        }
        bytes += w.commit().map_err(|e| format!("object {}: {e}", o.key))?;
        progress.tick("restored", i + 1, manifest.objects.len(), bytes);
    }
    // 4. Bring the schema up to this version.
    let db = Db::open(cfg).map_err(|e| e.to_string())?;
    db.migrate().map_err(|e| e.to_string())?;
    Ok(Summary::of(dir, manifest, bytes, started))
}

/// The database URL without its password, and the password (decoded): the PostgreSQL tools get
/// it through `PGPASSWORD`, never on their command line, where `ps` would show it.
fn split_password(database_url: &str) -> Result<(String, Option<String>), String> {
    let mut u = url::Url::parse(database_url).map_err(|e| format!("database.url: {e}"))?;
    let password = u.password().map(percent_decode);
    if password.is_some() {
        u.set_password(None).map_err(|()| "database.url: cannot remove the password".to_string())?;
    }
    Ok((u.to_string(), password))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A PostgreSQL tool with the password (if any) in its environment.
fn pg_command(tool: impl AsRef<std::ffi::OsStr>, password: Option<String>) -> std::process::Command {
    let mut c = std::process::Command::new(tool);
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    c
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_for_the_environment() {
        let (u, p) = split_password("postgres://sc:s%40cr%2Bet+x@db.example:5432/seccollab?sslmode=require").unwrap();
        assert_eq!(u, "postgres://sc@db.example:5432/seccollab?sslmode=require");
        assert_eq!(p.as_deref(), Some("s@cr+et+x"));
        let (u, p) = split_password("postgres://postgres@127.0.0.1:5432/x").unwrap();
        assert_eq!((u.as_str(), p), ("postgres://postgres@127.0.0.1:5432/x", None));
    }
}
