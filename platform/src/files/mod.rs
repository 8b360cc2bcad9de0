//! Files: streamed, encrypted uploads; sharing with `view`/`download` permissions; downloads;
//! integrity checks.
//!
//! Content never touches disk in clear: the upload pipeline hashes and encrypts each chunk
//! ([`envelope`]) before it reaches the storage backend ([`local`] or a plugin). The database
//! holds metadata, the SHA-256 of the plaintext and the wrapped data key.

pub mod envelope;
pub mod limits;
pub mod local;
pub mod moderation;
pub mod names;
pub mod orphans;
pub mod pipeline;
pub mod range;
pub mod routes;

use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{file_shares as fs_, files, users};
use crate::db::DbConnection;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = files)]
pub struct FileRecord {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub size: i64,
    pub mime_type: String,
    pub sha256: String,
    pub scan_status: String,
    pub integrity: String,
    pub description: String,
    pub storage_key: String,
    pub wrapped_key: String,
    pub key_id: String,
    pub created_at: i64,
    pub checked_at: Option<i64>,
}

/// A file as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileView {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub mime_type: String,
    pub sha256: String,
    pub scan_status: String,
    pub integrity: String,
    pub owner_id: String,
    pub description: String,
    pub created_at: String,
}

impl From<&FileRecord> for FileView {
    fn from(f: &FileRecord) -> Self {
        Self {
            id: f.id.clone(),
            name: f.name.clone(),
            size: f.size,
            mime_type: f.mime_type.clone(),
            sha256: f.sha256.clone(),
            scan_status: f.scan_status.clone(),
            integrity: f.integrity.clone(),
            owner_id: f.owner_id.clone(),
            description: f.description.clone(),
            created_at: crate::time::micros_to_rfc3339(f.created_at),
        }
    }
}

/// What the caller may do with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Owner,
    View,
    Download,
}

impl Access {
    pub fn can_download(self) -> bool {
        matches!(self, Access::Owner | Access::Download)
    }
}

/// The file and the caller's access, or `None` when the caller may not see it (also when it
/// does not exist: the two are indistinguishable to the caller).
pub fn visible(conn: &mut DbConnection, file_id: &str, user_id: &str) -> QueryResult<Option<(FileRecord, Access)>> {
    let Some(f) = files::table.find(file_id).select(FileRecord::as_select()).first(conn).optional()? else {
        return Ok(None);
    };
    if f.owner_id == user_id {
        return Ok(Some((f, Access::Owner)));
    }
    let now = crate::time::now_micros();
    let perm: Option<String> = fs_::table
        .filter(fs_::file_id.eq(file_id))
        .filter(fs_::user_id.eq(user_id))
        .filter(fs_::expires_at.is_null().or(fs_::expires_at.gt(now)))
        .select(fs_::permissions)
        .first(conn)
        .optional()?;
    Ok(perm.map(|p| (f, if p == "download" { Access::Download } else { Access::View })))
}

pub fn by_id(conn: &mut DbConnection, file_id: &str) -> QueryResult<Option<FileRecord>> {
    files::table.find(file_id).select(FileRecord::as_select()).first(conn).optional()
}

/// The caller's own files, newest first, before `before` (an id).
pub fn list_own(
    conn: &mut DbConnection,
    owner: &str,
    before: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<FileRecord>> {
    let mut q = files::table.filter(files::owner_id.eq(owner)).select(FileRecord::as_select()).into_boxed();
    if let Some(b) = before {
        q = q.filter(files::id.lt(b.to_string()));
    }
    q.order(files::id.desc()).limit(limit).load(conn)
}

/// A file shared with the caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SharedFileView {
    #[serde(flatten)]
    pub file: FileView,
    pub permissions: String,
    pub shared_by: String,
    pub expires_at: Option<String>,
}

pub fn list_shared(
    conn: &mut DbConnection,
    user: &str,
    before: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<SharedFileView>> {
    let now = crate::time::now_micros();
    let mut q = fs_::table
        .inner_join(files::table)
        .filter(fs_::user_id.eq(user))
        .filter(fs_::expires_at.is_null().or(fs_::expires_at.gt(now)))
        .select((FileRecord::as_select(), fs_::permissions, fs_::shared_by, fs_::expires_at))
        .into_boxed();
    if let Some(b) = before {
        q = q.filter(files::id.lt(b.to_string()));
    }
    let rows: Vec<(FileRecord, String, String, Option<i64>)> = q.order(files::id.desc()).limit(limit).load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(f, permissions, shared_by, exp)| SharedFileView {
            file: FileView::from(&f),
            permissions,
            shared_by,
            expires_at: exp.map(crate::time::micros_to_rfc3339),
        })
        .collect())
}

/// One grant as the share call answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShareGrant {
    pub file_id: String,
    pub user_id: String,
    pub permissions: String,
    pub expires_at: Option<String>,
}

/// Grants (or replaces) shares; every user id must exist and be enabled.
pub fn share(
    conn: &mut DbConnection,
    file_id: &str,
    by: &str,
    user_ids: &[String],
    permissions: &str,
    expires_at: Option<i64>,
) -> QueryResult<Result<Vec<ShareGrant>, String>> {
    crate::db::write_transaction(conn, |conn| share_in(conn, file_id, by, user_ids, permissions, expires_at))
}

/// [`share`] inside the caller's write transaction.
pub fn share_in(
    conn: &mut DbConnection,
    file_id: &str,
    by: &str,
    user_ids: &[String],
    permissions: &str,
    expires_at: Option<i64>,
) -> QueryResult<Result<Vec<ShareGrant>, String>> {
    {
        let found: Vec<String> = users::table
            .filter(users::id.eq_any(user_ids))
            .filter(users::disabled.eq(false))
            .select(users::id)
            .load(conn)?;
        if let Some(missing) = user_ids.iter().find(|u| !found.contains(u)) {
            return Ok(Err(format!("no such user: {missing}")));
        }
        let now = crate::time::now_micros();
        let mut grants = Vec::new();
        for uid in user_ids {
            diesel::delete(fs_::table.filter(fs_::file_id.eq(file_id)).filter(fs_::user_id.eq(uid))).execute(conn)?;
            diesel::insert_into(fs_::table)
                .values((
                    fs_::file_id.eq(file_id),
                    fs_::user_id.eq(uid),
                    fs_::permissions.eq(permissions),
                    fs_::shared_by.eq(by),
                    fs_::expires_at.eq(expires_at),
                    fs_::created_at.eq(now),
                ))
                .execute(conn)?;
            grants.push(ShareGrant {
                file_id: file_id.into(),
                user_id: uid.clone(),
                permissions: permissions.into(),
                expires_at: expires_at.map(crate::time::micros_to_rfc3339),
            });
        }
        Ok(Ok(grants))
    }
}

/// Records an uploaded file unless it would take its owner past `quota` bytes (0: none).
/// Checked and inserted in one write transaction, serialised per owner (PostgreSQL: an
/// advisory lock; SQLite: `BEGIN IMMEDIATE`), so parallel uploads cannot overshoot together.
/// `false`: over the quota, nothing written.
pub fn insert_within_quota(conn: &mut DbConnection, rec: &FileRecord, quota: u64) -> QueryResult<bool> {
    crate::db::write_transaction(conn, |c| {
        if quota > 0 {
            if let DbConnection::Pg(_) = c {
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind::<diesel::sql_types::Text, _>(format!("quota:{}", rec.owner_id))
                    .execute(c)?;
            }
            let used: i64 = files::table
                .filter(files::owner_id.eq(&rec.owner_id))
                .select(diesel::dsl::sql::<diesel::sql_types::BigInt>("CAST(COALESCE(SUM(size), 0) AS BIGINT)"))
                .first(c)?;
            if (used.max(0) as u64).saturating_add(rec.size.max(0) as u64) > quota {
                return Ok(false);
            }
        }
        diesel::insert_into(files::table).values(rec).execute(c)?;
        Ok(true)
    })
}

pub fn unshare(conn: &mut DbConnection, file_id: &str, user_id: &str) -> QueryResult<bool> {
    Ok(diesel::delete(fs_::table.filter(fs_::file_id.eq(file_id)).filter(fs_::user_id.eq(user_id))).execute(conn)? > 0)
}

/// Users who can see the file now besides its owner (unexpired shares): who hears of it.
pub fn audience(conn: &mut DbConnection, file_id: &str) -> QueryResult<Vec<String>> {
    let now = crate::time::now_micros();
    fs_::table
        .filter(fs_::file_id.eq(file_id))
        .filter(fs_::expires_at.is_null().or(fs_::expires_at.gt(now)))
        .select(fs_::user_id)
        .load(conn)
}

pub fn set_integrity(conn: &mut DbConnection, file_id: &str, integrity: &str) -> QueryResult<()> {
    diesel::update(files::table.find(file_id))
        .set((files::integrity.eq(integrity), files::checked_at.eq(crate::time::now_micros())))
        .execute(conn)?;
    Ok(())
}

pub fn set_scan_status(conn: &mut DbConnection, file_id: &str, status: &str) -> QueryResult<()> {
    diesel::update(files::table.find(file_id)).set(files::scan_status.eq(status)).execute(conn)?;
    Ok(())
}

/// Re-checks the integrity of every file every `hours` hours, in the background, one file at a
/// time; compromised files are flagged and alerted by [`routes::check_integrity`].
pub fn start_scrub(state: crate::AppState, hours: u64) {
    if hours == 0 {
        return;
    }
    tokio::spawn(async move {
        let period = std::time::Duration::from_secs(hours * 3600);
        loop {
            tokio::time::sleep(period).await;
            let ids = state.db.q(|c| files::table.order(files::id.asc()).select(files::id).load::<String>(c)).await;
            let Ok(ids) = ids else { continue };
            let (mut bad, started) = (0usize, std::time::Instant::now());
            for id in &ids {
                let fid = id.clone();
                let Ok(Some(f)) = state.db.q(move |c| by_id(c, &fid)).await else { continue };
                if let Ok(r) = routes::check_integrity(&state, &f).await {
                    if r.status != "ok" {
                        bad += 1;
                    }
                }
            }
            tracing::info!(
                files = ids.len(),
                compromised = bad,
                secs = started.elapsed().as_secs(),
                "integrity scrub done"
            );
        }
    });
}

/// The file's data key, unwrapped under the master key it records.
pub fn data_key(keys: &crate::keys::Keys, f: &FileRecord) -> Option<[u8; 32]> {
    envelope::unwrap_key(&keys.master_for(&f.key_id)?, &f.id, &f.wrapped_key)
}
