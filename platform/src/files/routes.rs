//! `/api/files/*`: upload, list, get, delete, share, revoke, shared-with-me, download; and the
//! admin integrity check `/api/audit/integrity-check/{id}`.

use std::pin::Pin;
use std::task::{Context, Poll};

use rocket::data::{Data, ToByteUnit};
use rocket::http::{ContentType, Header, Status};
use rocket::request::{FromRequest, Outcome as ReqOutcome};
use rocket::response::{self, Responder, Response};
use rocket::serde::json::Json;
use rocket::tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use rocket::tokio::sync::mpsc;
use rocket::{delete, get, post, Request, Route, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pipeline::{self, UploadError};
use super::{names, Access, FileRecord, FileView, ShareGrant, SharedFileView};
use crate::audit::Outcome;
use crate::auth::routes::entry;
use crate::auth::{AdminUser, AuthUser};
use crate::http::pagination::{self, decode_str_cursor, encode_str_cursor};
use crate::http::{ApiError, ApiResult, ClientInfo, JsonBody};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![upload, list, shared, get_file, delete_file, share, unshare, list_shares, download, integrity_check]
}

fn not_found() -> ApiError {
    ApiError::new(Status::NotFound, "file_not_found", "no such file, or it is not shared with you")
}

async fn visible(state: &AppState, file_id: &str, user_id: &str) -> ApiResult<(FileRecord, Access)> {
    let (f, u) = (file_id.to_string(), user_id.to_string());
    state.db.q(move |c| super::visible(c, &f, &u)).await?.ok_or_else(not_found)
}

// ---------- upload ----------

/// The declared `Content-Length`, if any.
#[derive(Debug)]
pub struct ContentLength(Option<u64>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ContentLength {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> ReqOutcome<Self, Self::Error> {
        ReqOutcome::Success(ContentLength(req.headers().get_one("Content-Length").and_then(|v| v.trim().parse().ok())))
    }
}

/// Deletes `key` a few times over the next minutes (best effort): after a storage outage an
/// object the client gave up on can still land in the store, and nothing else names it.
fn clean_up_later(state: &AppState, key: String) {
    let storage = state.storage.clone();
    tokio::spawn(async move {
        for wait in [2u64, 10, 30, 120, 600] {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            let (s, k) = (storage.clone(), key.clone());
            let _ = tokio::task::spawn_blocking(move || s.delete(&k)).await;
        }
    });
}

fn quota_exceeded(quota: u64) -> ApiError {
    ApiError::new(
        Status::InsufficientStorage,
        "quota_exceeded",
        format!("this upload would exceed your storage quota of {quota} bytes; delete files or ask an administrator"),
    )
}

/// Bytes of files `user` owns.
async fn used_bytes(state: &AppState, user: &str) -> ApiResult<u64> {
    use diesel::prelude::*;
    let uid = user.to_string();
    let n: i64 = state
        .db
        .q(move |c| {
            crate::db::schema::files::table
                .filter(crate::db::schema::files::owner_id.eq(&uid))
                .select(diesel::dsl::sql::<diesel::sql_types::BigInt>("CAST(COALESCE(SUM(size), 0) AS BIGINT)"))
                .first(c)
        })
        .await?;
    Ok(n.max(0) as u64)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(Status::PayloadTooLarge, "file_too_large", format!("the file exceeds the limit of {max} bytes"))
}

fn type_blocked(mime: &str) -> ApiError {
    ApiError::new(
        Status::UnsupportedMediaType,
        "file_type_blocked",
        format!("files of type {mime} are not allowed here"),
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadResponse {
    pub file_id: String,
    pub file: FileView,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadMetadata {
    description: Option<String>,
}

/// Streams one multipart `file` part through hashing and encryption into storage.
#[utoipa::path(post, path = "/api/files/upload", tag = "files",
    request_body(content_type = "multipart/form-data", description = "`file` (exactly one) and optional `metadata` JSON text `{description?}`"),
    responses((status = 201, body = UploadResponse), (status = 400, description = "malformed multipart, bad name or metadata"),
              (status = 413, description = "over the size limit"), (status = 415, description = "type blocked by policy")))]
#[post("/files/upload", data = "<data>")]
pub async fn upload(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    ct: Option<&ContentType>,
    content_length: ContentLength,
    data: Data<'_>,
) -> ApiResult<(Status, Json<UploadResponse>)> {
    let no_check =
        |_: &UploadForm| -> futures_util::future::BoxFuture<'static, ApiResult<()>> { Box::pin(async { Ok(()) }) };
    let (record, _) = receive_upload(state, &client, &user, ct, content_length, data, &["metadata"], no_check).await?;
    Ok((Status::Created, Json(UploadResponse { file_id: record.id.clone(), file: FileView::from(&record) })))
}

/// The form fields of an upload besides `file`.
#[derive(Debug, Default)]
pub struct UploadForm {
    /// From `metadata.description`.
    pub description: String,
    /// Other accepted text fields (as named by the caller of [`receive_upload`]).
    pub fields: std::collections::HashMap<String, String>,
}

/// Receives a multipart upload: streams the one `file` part through type check, hashing and
/// encryption into storage, collects the text fields named in `accepted` (`metadata` is parsed
/// as `{description?}`), runs `check` on them, and only then records the file, queues the scan
/// and audits. On any error nothing remains: no object, no record.
#[allow(clippy::too_many_arguments)]
pub async fn receive_upload(
    state: &AppState,
    client: &ClientInfo,
    user: &AuthUser,
    ct: Option<&ContentType>,
    content_length: ContentLength,
    data: Data<'_>,
    accepted: &[&str],
    check: impl FnOnce(&UploadForm) -> futures_util::future::BoxFuture<'static, ApiResult<()>>,
) -> ApiResult<(FileRecord, UploadForm)> {
    let boundary = ct
        .filter(|ct| ct.is_form_data())
        .and_then(|ct| {
            ct.params().find(|(k, _)| k.as_str().eq_ignore_ascii_case("boundary")).map(|(_, v)| v.to_string())
        })
        .ok_or_else(|| {
            ApiError::new(
                Status::UnsupportedMediaType,
                "unsupported_media_type",
                "send the file as multipart/form-data with a boundary",
            )
        })?;
    let Some(_slot) = super::limits::take(state, &user.id, state.policy.upload.max_concurrent_per_user).await? else {
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                Status::TooManyRequests,
                "too_many_uploads",
                format!(
                    "you already have {} uploads in progress; wait for one to finish",
                    state.policy.upload.max_concurrent_per_user
                ),
            )
        });
    };
    let quota = state.policy.upload.quota_bytes_per_user;
    let remaining = if quota > 0 {
        let used = used_bytes(state, &user.id).await?;
        if used >= quota {
            return Err(quota_exceeded(quota));
        }
        Some(quota - used)
    } else {
        None
    };
    let max_size = state.config.files.max_upload_bytes;
    // The smaller of the size limit and what is left of the quota bounds this file.
    let max = remaining.map_or(max_size, |r| r.min(max_size));
    let over = move |limit: u64| if limit < max_size { quota_exceeded(quota) } else { too_large(limit) };
    // The whole body may exceed the file limit by the multipart framing and metadata only.
    let body_limit = max + 1024 * 1024;
    if content_length.0.is_some_and(|n| n > body_limit) {
        return Err(over(max));
    }
    // Counts what arrives, so a body cut off at the limit is told apart from a malformed one.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let stream =
        // 256 KiB reads: the default 4 KiB chunks cost a channel hop and a multer pass each.
        futures_util::StreamExt::inspect(tokio_util::io::ReaderStream::with_capacity(data.open(body_limit.bytes()), 256 * 1024), move |r| {
            if let Ok(b) = r {
                counter.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let file_id = uuid::Uuid::now_v7().to_string();
    let mut form = UploadForm::default();
    let mut stored: Option<(String, pipeline::Stored)> = None;
    // The key the object was being written under: after a storage failure a write the store
    // finished late (it answered after the client gave up) must not stay behind.
    let mut attempted_key: Option<String> = None;
    let malformed = |e: multer::Error| ApiError::invalid("body", format!("malformed multipart: {e}"));
    let result: ApiResult<()> = async {
        while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
            match field.name() {
                Some("metadata") if accepted.contains(&"metadata") => {
                    let mut text = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                        text.extend_from_slice(&chunk);
                        if text.len() > 64 * 1024 {
                            return Err(ApiError::invalid("metadata", "must be at most 64 KiB"));
                        }
                    }
                    let m: UploadMetadata =
                        serde_json::from_slice(&text).map_err(|e| ApiError::invalid("metadata", e))?;
                    form.description = m.description.unwrap_or_default();
                    if form.description.chars().count() > 2000 {
                        return Err(ApiError::invalid("metadata.description", "must be at most 2000 characters"));
                    }
                }
                Some("file") => {
                    if stored.is_some() {
                        return Err(ApiError::invalid("file", "send exactly one file part"));
                    }
                    let name = names::check(field.file_name().unwrap_or(""))
                        .map_err(|why| ApiError::invalid("file name", why))?;
                    let (tx, rx) = mpsc::channel::<Option<bytes::Bytes>>(4);
                    let (storage, master, fid) = (state.storage.clone(), state.keys.master, file_id.clone());
                    let blocked = state.policy.upload.blocked_types.clone();
                    let key = pipeline::new_storage_key();
                    attempted_key = Some(key.clone());
                    let worker = tokio::task::spawn_blocking(move || {
                        pipeline::store(storage, master, fid, key, max, blocked, rx)
                    });
                    let mut feed_error = None;
                    // Pieces are gathered into 1 MiB hand-offs: each hand-off wakes the
                    // encryption and hashing threads, and with multer's small pieces those
                    // wake-ups cost more CPU than the copy into one buffer.
                    // Every buffer is exactly HANDOFF bytes (never grown by doubling), so the
                    // allocator reuses the same few blocks and memory stays flat.
                    let mut pending = bytes::BytesMut::with_capacity(HANDOFF);
                    let mut stopped = false;
                    loop {
                        match field.chunk().await {
                            Ok(Some(mut chunk)) => {
                                let pace = state.upload_pace.delay(
                                    &user.id,
                                    chunk.len(),
                                    state.policy.upload.bandwidth_bytes_per_sec_per_user,
                                    std::time::Instant::now(),
                                );
                                if let Some(wait) = pace {
                                    tokio::time::sleep(wait).await;
                                }
                                while !chunk.is_empty() {
                                    let take = (HANDOFF - pending.len()).min(chunk.len());
                                    pending.extend_from_slice(&chunk.split_to(take));
                                    if pending.len() == HANDOFF {
                                        let full =
                                            std::mem::replace(&mut pending, bytes::BytesMut::with_capacity(HANDOFF));
                                        if tx.send(Some(full.freeze())).await.is_err() {
                                            stopped = true; // the pipeline stopped (too large, blocked type, storage)
                                            break;
                                        }
                                    }
                                }
                                if stopped {
                                    break;
                                }
                            }
                            Ok(None) => {
                                if !pending.is_empty() && tx.send(Some(pending.split().freeze())).await.is_err() {
                                    break;
                                }
                                let _ = tx.send(None).await; // the whole part arrived: commit
                                break;
                            }
                            Err(e) => {
                                feed_error = Some(malformed(e));
                                break;
                            }
                        }
                    }
                    drop(tx); // without the end marker the pipeline aborts
                    if let Some(e) = feed_error {
                        // The body was cut off; if the pipeline had already refused the file
                        // (too large, blocked type), that is the better answer.
                        return Err(match worker.await {
                            Ok(Err(UploadError::TooLarge(max))) => over(max),
                            Ok(Err(UploadError::Blocked(m))) => type_blocked(&m),
                            _ if received.load(std::sync::atomic::Ordering::Relaxed) >= body_limit => over(max),
                            _ => e,
                        });
                    }
                    let s = worker.await.map_err(|e| ApiError::internal("upload task", e))?.map_err(|e| match e {
                        UploadError::TooLarge(max) => over(max),
                        UploadError::Blocked(m) => type_blocked(&m),
                        UploadError::Storage(e) => {
                            tracing::error!(error = %e, "storage failed during upload");
                            state.storage_unavailable()
                        }
                        UploadError::Envelope(e) => ApiError::internal("encryption", e),
                        UploadError::Incomplete => {
                            ApiError::invalid("file", "the upload ended before the whole file arrived")
                        }
                    })?;
                    stored = Some((name, s));
                }
                Some(other) if accepted.contains(&other) && other != "file" => {
                    let name = other.to_string();
                    let mut text = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                        text.extend_from_slice(&chunk);
                        if text.len() > 64 * 1024 {
                            return Err(ApiError::invalid(&name, "must be at most 64 KiB"));
                        }
                    }
                    let text = String::from_utf8(text).map_err(|_| ApiError::invalid(&name, "must be UTF-8 text"))?;
                    form.fields.insert(name, text);
                }
                Some(other) => {
                    return Err(ApiError::invalid(
                        other,
                        format!("unexpected form field (send `file` and optionally {})", accepted.join(", ")),
                    ))
                }
                None => return Err(ApiError::invalid("body", "a form field has no name")),
            }
        }
        Ok(())
    }
    .await;
    // Whatever failed after an object was stored must not leave the object behind.
    let cleanup = |state: &AppState, s: &pipeline::Stored| {
        let storage = state.storage.clone();
        let key = s.storage_key.clone();
        tokio::task::spawn_blocking(move || storage.delete(&key))
    };
    if let Err(e) = result {
        if let Some((_, s)) = &stored {
            let _ = cleanup(state, s).await;
        }
        if let (Some(key), true) = (attempted_key, e.status == Status::ServiceUnavailable) {
            clean_up_later(state, key);
        }
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::FileUpload, Outcome::Failure, client)
                    .actor(Some(user.id.clone()))
                    .details(json!({"error": e.code})),
            )
            .await;
        return Err(e);
    }
    let Some((name, s)) = stored else {
        return Err(ApiError::invalid("file", "the form has no file part"));
    };
    if let Err(e) = check(&form).await {
        let _ = cleanup(state, &s).await;
        return Err(e);
    }
    let record = FileRecord {
        id: file_id.clone(),
        owner_id: user.id.clone(),
        name,
        size: s.size as i64,
        mime_type: s.mime_type.clone(),
        sha256: s.sha256.clone(),
        scan_status: state.scanner.initial_status().into(),
        integrity: "ok".into(),
        description: form.description.clone(),
        storage_key: s.storage_key.clone(),
        wrapped_key: s.wrapped_key.clone(),
        key_id: state.keys.master_id.clone(),
        created_at: crate::time::now_micros(),
        checked_at: None,
    };
    let rec = record.clone();
    // The quota is checked again in the transaction that records the file (uploads that ran
    // side by side may together pass it).
    let inserted = state.db.q(move |c| super::insert_within_quota(c, &rec, quota)).await;
    if let Ok(false) = inserted {
        let _ = cleanup(state, &s).await;
        return Err(quota_exceeded(quota));
    }
    if let Err(e) = inserted {
        let _ = cleanup(state, &s).await;
        return Err(e.into());
    }
    // "uploaded" is queued to the event writer before the scan is, so the scan's verdict (its
    // own event) can never overtake it.
    state
        .events
        .publish_to(
            std::slice::from_ref(&user.id),
            "file_update",
            json!({"file": FileView::from(&record), "change": "uploaded"}),
        )
        .await;
    state.scanner.enqueue(file_id.clone());
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::FileUpload, Outcome::Success, client)
                .actor(Some(user.id.clone()))
                .target("file", file_id.clone())
                .details(json!({
                    "size": s.size, "mime_type": s.mime_type, "sha256": s.sha256,
                })),
        )
        .await;
    Ok((record, form))
}

// ---------- listing ----------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileList {
    pub files: Vec<FileView>,
    pub next_cursor: Option<String>,
}

/// The caller's own files, newest first.
#[utoipa::path(get, path = "/api/files", tag = "files", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = FileList), (status = 401)))]
#[get("/files?<limit>&<cursor>")]
pub async fn list(
    state: &State<AppState>,
    user: AuthUser,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<FileList>> {
    let limit = pagination::parse_limit(limit)?;
    let before = decode_str_cursor(cursor)?;
    let uid = user.id.clone();
    let rows = state.db.q(move |c| super::list_own(c, &uid, before.as_deref(), limit + 1)).await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |f| encode_str_cursor(&f.id));
    Ok(Json(FileList { files: rows.iter().map(FileView::from).collect(), next_cursor }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SharedList {
    pub files: Vec<SharedFileView>,
    pub next_cursor: Option<String>,
}

/// Files others shared with the caller (expired shares excluded).
#[utoipa::path(get, path = "/api/files/shared", tag = "files", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = SharedList), (status = 401)))]
#[get("/files/shared?<limit>&<cursor>")]
pub async fn shared(
    state: &State<AppState>,
    user: AuthUser,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<SharedList>> {
    let limit = pagination::parse_limit(limit)?;
    let before = decode_str_cursor(cursor)?;
    let uid = user.id.clone();
    let rows = state.db.q(move |c| super::list_shared(c, &uid, before.as_deref(), limit + 1)).await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |f| encode_str_cursor(&f.file.id));
    Ok(Json(SharedList { files: rows, next_cursor }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileResponse {
    pub file: FileView,
}

/// One file, for its owner or anyone it is shared with.
#[utoipa::path(get, path = "/api/files/{file_id}", tag = "files", params(("file_id" = String, Path)),
    responses((status = 200, body = FileResponse), (status = 404)))]
#[get("/files/<file_id>", rank = 2)]
pub async fn get_file(state: &State<AppState>, user: AuthUser, file_id: &str) -> ApiResult<Json<FileResponse>> {
    let (f, _) = visible(state, file_id, &user.id).await?;
    Ok(Json(FileResponse { file: FileView::from(&f) }))
}

/// Deletes a file (owner only): its record, shares and stored object.
#[utoipa::path(delete, path = "/api/files/{file_id}", tag = "files", params(("file_id" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)))]
#[delete("/files/<file_id>")]
pub async fn delete_file(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    file_id: &str,
) -> ApiResult<Status> {
    let (f, access) = visible(state, file_id, &user.id).await?;
    if access != Access::Owner {
        return Err(ApiError::forbidden("only the owner can delete a file"));
    }
    remove(state, &f).await?;
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::FileDelete, Outcome::Success, &client)
                .actor(Some(user.id.clone()))
                .target("file", f.id.clone()),
        )
        .await;
    Ok(Status::NoContent)
}

/// Deletes a file's record (and shares) and its stored object, and tells the owner and everyone
/// it was shared with (`file_update` / `deleted`). The caller audits who did it.
pub async fn remove(state: &AppState, f: &super::FileRecord) -> ApiResult<()> {
    let id = f.id.clone();
    let mut audience = state
        .db
        .q(move |c| {
            let audience = super::audience(c, &id)?;
            diesel::RunQueryDsl::execute(
                diesel::delete(diesel::QueryDsl::find(crate::db::schema::files::table, &id)),
                c,
            )?;
            Ok(audience)
        })
        .await?;
    let storage = state.storage.clone();
    let key = f.storage_key.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || storage.delete(&key)).await {
        // The record is gone, so the object is unreachable; orphan collection removes it later.
        tracing::warn!(error = %e, "could not delete a stored object; left for orphan collection");
    }
    audience.push(f.owner_id.clone());
    state.events.publish_to(&audience, "file_update", json!({"file_id": f.id, "change": "deleted"})).await;
    Ok(())
}

// ---------- sharing ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    pub file_id: String,
    pub user_ids: Vec<String>,
    /// `view` or `download`.
    pub permissions: String,
    /// RFC 3339; the share stops working then.
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareResponse {
    pub shares: Vec<ShareGrant>,
}

/// Shares a file with users (owner only); sharing again replaces the grant.
#[utoipa::path(post, path = "/api/files/share", tag = "files", request_body = ShareRequest,
    responses((status = 200, body = ShareResponse), (status = 400), (status = 403), (status = 404)))]
#[post("/files/share", data = "<body>")]
pub async fn share(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    body: JsonBody<ShareRequest>,
) -> ApiResult<Json<ShareResponse>> {
    let req = body.0;
    if req.permissions != "view" && req.permissions != "download" {
        return Err(ApiError::invalid("permissions", "must be view or download"));
    }
    if req.user_ids.is_empty() || req.user_ids.len() > 100 {
        return Err(ApiError::invalid("user_ids", "must name 1 to 100 users"));
    }
    let expires_at = match req.expires_at.as_deref() {
        None => None,
        Some(s) => {
            let t = crate::time::parse_rfc3339_micros(s)
                .ok_or_else(|| ApiError::invalid("expires_at", "must be an RFC 3339 time"))?;
            if t <= crate::time::now_micros() {
                return Err(ApiError::invalid("expires_at", "must be in the future"));
            }
            Some(t)
        }
    };
    let (f, access) = visible(state, &req.file_id, &user.id).await?;
    if access != Access::Owner {
        return Err(ApiError::forbidden("only the owner can share a file"));
    }
    if req.user_ids.contains(&user.id) {
        return Err(ApiError::invalid("user_ids", "you cannot share a file with yourself"));
    }
    let (fid, by, ids, perm) = (f.id.clone(), user.id.clone(), req.user_ids.clone(), req.permissions.clone());
    let grants = state
        .db
        .q(move |c| super::share(c, &fid, &by, &ids, &perm, expires_at))
        .await?
        .map_err(|why| ApiError::invalid("user_ids", why))?;
    for g in &grants {
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::FileShare, Outcome::Success, &client)
                    .actor(Some(user.id.clone()))
                    .target("file", f.id.clone())
                    .details(json!({
                        "user_id": g.user_id, "permissions": g.permissions, "expires_at": g.expires_at,
                    })),
            )
            .await;
    }
    // `file_share` event, in-app notification and e-mail (per the sharee's preferences), stored
    // together. The shares themselves are committed already, so a failure here is logged only.
    if let Err(e) =
        crate::notify::file_shared(state, &FileView::from(&f), &user.id, &req.user_ids, &req.permissions).await
    {
        tracing::error!(error = %e, file_id = %f.id, "file-share notices not stored");
    }
    Ok(Json(ShareResponse { shares: grants }))
}

/// Revokes one user's share (owner only).
#[utoipa::path(delete, path = "/api/files/{file_id}/shares/{user_id}", tag = "files",
    params(("file_id" = String, Path), ("user_id" = String, Path)), responses((status = 204), (status = 403), (status = 404)))]
#[delete("/files/<file_id>/shares/<user_id>")]
pub async fn unshare(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    file_id: &str,
    user_id: &str,
) -> ApiResult<Status> {
    let (f, access) = visible(state, file_id, &user.id).await?;
    if access != Access::Owner {
        return Err(ApiError::forbidden("only the owner can revoke a share"));
    }
    let (fid, uid) = (f.id.clone(), user_id.to_string());
    if !state.db.q(move |c| super::unshare(c, &fid, &uid)).await? {
        return Err(ApiError::new(Status::NotFound, "share_not_found", "this file is not shared with that user"));
    }
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::FileUnshare, Outcome::Success, &client)
                .actor(Some(user.id.clone()))
                .target("file", f.id.clone())
                .details(json!({"user_id": user_id})),
        )
        .await;
    state.events.publish_to(&[user_id.to_string()], "file_share", json!({"file_id": f.id, "revoked": true})).await;
    Ok(Status::NoContent)
}

// ---------- download ----------

/// The `Range` request header, if any.
#[derive(Debug)]
pub struct RangeHeader(Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RangeHeader {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> ReqOutcome<Self, Self::Error> {
        ReqOutcome::Success(RangeHeader(req.headers().get_one("Range").map(str::to_string)))
    }
}

pub use super::range::{parse_range, Unsatisfiable};

/// A body fed by the decrypting thread, with its length known in advance.
struct ChannelBody {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl AsyncRead for ChannelBody {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.pos < self.buf.len() {
                let n = (self.buf.len() - self.pos).min(out.remaining());
                let pos = self.pos;
                out.put_slice(&self.buf[pos..pos + n]);
                self.pos += n;
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                // The decrypting side stopped early: end the body short so the client sees an
                // incomplete transfer rather than bytes that failed authentication.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncSeek for ChannelBody {
    fn start_seek(self: Pin<&mut Self>, _: std::io::SeekFrom) -> std::io::Result<()> {
        Err(std::io::Error::other("a download stream cannot seek"))
    }
    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Err(std::io::Error::other("a download stream cannot seek")))
    }
}

pub struct Download {
    name: String,
    size: u64,
    total: u64,
    range: Option<(u64, u64)>,
    body: ChannelBody,
}

impl<'r> Responder<'r, 'static> for Download {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let mut r = Response::build();
        r.header(ContentType::Binary)
            .header(Header::new("Content-Disposition", names::content_disposition(&self.name)))
            .header(Header::new("Accept-Ranges", "bytes"))
            .sized_body(Some(self.size as usize), self.body)
            // Rocket hands the body to hyper in pieces of this size. Its default, 4 KiB, costs a
            // channel send and a socket write per 4 KiB (1 GiB: ~1.1 GB/s vs 1.5-2.1 GB/s here).
            .max_chunk_size(DOWNLOAD_CHUNK);
        if let Some((a, b)) = self.range {
            r.status(Status::PartialContent)
                .header(Header::new("Content-Range", format!("bytes {a}-{}/{}", b - 1, self.total)));
        }
        r.ok()
    }
}

/// The exact bytes uploaded (or a `Range` of them), decrypted on the fly.
#[utoipa::path(get, path = "/api/files/download/{file_id}", tag = "files", params(("file_id" = String, Path)),
    responses((status = 200, description = "the file"), (status = 206, description = "a range"), (status = 403, description = "view-only share"),
              (status = 404), (status = 416), (status = 423, description = "not scanned yet, quarantined or compromised")))]
#[get("/files/download/<file_id>")]
pub async fn download(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    file_id: &str,
    range: RangeHeader,
) -> ApiResult<Download> {
    let (f, access) = visible(state, file_id, &user.id).await?;
    let refusal = if !access.can_download() {
        Some(("view_only", ApiError::forbidden("this file is shared with you for viewing only")))
    } else if f.integrity == "compromised" {
        Some((
            "file_compromised",
            ApiError::new(
                Status::Locked,
                "file_compromised",
                "this file failed its integrity check and cannot be downloaded",
            ),
        ))
    } else if f.scan_status != "clean" {
        let msg = match f.scan_status.as_str() {
            "quarantined" => "this file is quarantined: the malware scan matched it",
            "error" => "this file could not be scanned; an administrator must rescan it",
            _ => "this file is still being scanned; try again shortly",
        };
        let retry_after = (f.scan_status == "pending").then_some(2);
        Some(("file_quarantined", ApiError { retry_after, ..ApiError::new(Status::Locked, "file_quarantined", msg) }))
    } else {
        None
    };
    if let Some((code, e)) = refusal {
        state
            .audit
            .record(
                entry(crate::audit::AuditAction::FileDownload, Outcome::Denied, &client)
                    .actor(Some(user.id.clone()))
                    .target("file", f.id.clone())
                    .details(json!({"refused": code})),
            )
            .await;
        return Err(e);
    }
    let size = f.size as u64;
    let span = match parse_range(range.0.as_deref(), size) {
        Ok(r) => r,
        Err(Unsatisfiable) => {
            return Err(ApiError::new(
                Status::RangeNotSatisfiable,
                "range_not_satisfiable",
                format!("the file has {size} bytes"),
            ));
        }
    };
    let (start, end) = span.unwrap_or((0, size));
    let dek =
        super::data_key(&state.keys, &f).ok_or_else(|| ApiError::internal("download", "data key does not unwrap"))?;
    // The object must be reachable before the answer starts: a storage outage is a 503 with
    // Retry-After (at once while the breaker is open), not a cut-off body.
    {
        let (storage, key) = (state.storage.clone(), f.storage_key.clone());
        match tokio::task::spawn_blocking(move || storage.stat(&key)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) | Ok(Err(seccollab_plugin_api::StorageError::NotFound)) => {
                tracing::error!(file_id = %f.id, "the file's object is missing from storage");
                return Err(ApiError::internal("download", "object missing"));
            }
            Ok(Err(e)) => {
                tracing::error!(file_id = %f.id, error = %e, "storage failed before a download");
                return Err(state.storage_unavailable());
            }
            Err(e) => return Err(ApiError::internal("download", e)),
        }
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let storage = state.storage.clone();
    let (key, fid, db) = (f.storage_key.clone(), f.id.clone(), state.db.clone());
    tokio::task::spawn_blocking(move || {
        let r = pipeline::read_range(&*storage, &key, &dek, start, end, &mut |p| tx.blocking_send(p.to_vec()).is_ok());
        if let Err(pipeline::ReadError::Envelope(e)) = r {
            tracing::error!(file_id = %fid, error = %e, "stored object failed authentication during download");
            if let Ok(mut c) = db.get() {
                let _ = super::set_integrity(&mut c, &fid, "compromised");
            }
        } else if let Err(e) = r {
            tracing::error!(file_id = %fid, error = %e, "storage failed during download");
        }
    });
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::FileDownload, Outcome::Success, &client)
                .actor(Some(user.id.clone()))
                .target("file", f.id.clone())
                .details(json!({"range": span.map(|(a, b)| format!("{a}-{}", b - 1))})),
        )
        .await;
    Ok(Download {
        name: f.name.clone(),
        size: end - start,
        total: size,
        range: span,
        body: ChannelBody { rx, buf: Vec::new(), pos: 0 },
    })
}

/// Size of the pieces a download is written to the connection in.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

/// Size of the plaintext pieces handed to the upload pipeline.
const HANDOFF: usize = 1024 * 1024;

// ---------- integrity ----------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrityReport {
    pub file_id: String,
    /// `ok` or `compromised`.
    pub status: String,
    pub expected_sha256: String,
    /// Empty when the object could not be decrypted at all.
    pub actual_sha256: String,
    pub checked_at: String,
    /// Why it is compromised, when it is.
    pub reason: Option<String>,
}

/// Runs the integrity check of one file: read, decrypt, hash, compare.
pub async fn check_integrity(state: &AppState, f: &FileRecord) -> ApiResult<IntegrityReport> {
    let dek = super::data_key(&state.keys, f);
    let (storage, key) = (state.storage.clone(), f.storage_key.clone());
    let result = tokio::task::spawn_blocking(move || match dek {
        Some(dek) => pipeline::hash_object(&*storage, &key, &dek).map_err(|e| e.to_string()),
        None => Err("the data key does not unwrap under the master key".into()),
    })
    .await
    .map_err(|e| ApiError::internal("integrity task", e))?;
    let (actual, reason) = match result {
        Ok(h) if h == f.sha256 => (h, None),
        Ok(h) => (h, Some("the content's SHA-256 differs from the one recorded at upload".to_string())),
        Err(e) => (String::new(), Some(e)),
    };
    let status = if reason.is_none() { "ok" } else { "compromised" };
    let fid = f.id.clone();
    state.db.q(move |c| super::set_integrity(c, &fid, status)).await?;
    // Alert on the transition only: a scrub finding the same damage again is not news.
    if let Some(why) = reason.as_ref().filter(|_| f.integrity != "compromised") {
        let details = json!({"file_id": f.id, "owner_id": f.owner_id, "reason": why});
        let fid = f.id.clone();
        let d = details.clone();
        let st = state.clone();
        state
            .db
            .q(move |c| {
                let id = crate::security::alerts::raise(c, "integrity_compromised", "high", Some(("file", &fid)), &d)?;
                let ev = crate::security::alerts::event(&id, "integrity_compromised", "high", Some(("file", &fid)), &d);
                crate::security::alerts::announce(&st, c, ev);
                Ok(())
            })
            .await?;
        state
            .audit
            .record(
                crate::audit::NewAuditEntry::new(
                    crate::audit::AuditAction::SecurityIntegrityCompromised,
                    Outcome::Failure,
                )
                .target("file", f.id.clone())
                .details(details),
            )
            .await;
    }
    Ok(IntegrityReport {
        file_id: f.id.clone(),
        status: status.into(),
        expected_sha256: f.sha256.clone(),
        actual_sha256: actual,
        checked_at: crate::time::micros_to_rfc3339(crate::time::now_micros()),
        reason,
    })
}

/// Re-reads, decrypts and hashes a file; a mismatch marks it compromised and raises an alert.
#[utoipa::path(get, path = "/api/audit/integrity-check/{file_id}", tag = "audit", params(("file_id" = String, Path)),
    responses((status = 200, body = IntegrityReport), (status = 403), (status = 404)))]
#[get("/audit/integrity-check/<file_id>")]
pub async fn integrity_check(
    state: &State<AppState>,
    client: ClientInfo,
    admin: AdminUser,
    file_id: &str,
) -> ApiResult<Json<IntegrityReport>> {
    let fid = file_id.to_string();
    let f = state.db.q(move |c| super::by_id(c, &fid)).await?.ok_or_else(not_found)?;
    let report = check_integrity(state, &f).await?;
    let outcome = if report.status == "ok" { Outcome::Success } else { Outcome::Failure };
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::FileIntegrityCheck, outcome, &client)
                .actor(Some(admin.0.id))
                .target("file", f.id.clone())
                .details(json!({"status": report.status})),
        )
        .await;
    Ok(Json(report))
}

/// One live share of a file, for its owner.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareEntry {
    pub file_id: String,
    pub user_id: String,
    pub display_name: String,
    pub email: String,
    pub permissions: String,
    pub expires_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareEntries {
    pub shares: Vec<ShareEntry>,
}

/// Who a file is shared with (owner only; expired shares left out).
#[utoipa::path(get, path = "/api/files/{file_id}/shares", tag = "files", params(("file_id" = String, Path)),
    responses((status = 200, body = ShareEntries), (status = 403), (status = 404)))]
#[get("/files/<file_id>/shares", rank = 2)]
pub async fn list_shares(state: &State<AppState>, user: AuthUser, file_id: &str) -> ApiResult<Json<ShareEntries>> {
    use crate::db::schema::{file_shares as fs_, users as u};
    use diesel::prelude::*;
    let (f, access) = visible(state, file_id, &user.id).await?;
    if access != Access::Owner {
        return Err(ApiError::forbidden("only the owner can see who a file is shared with"));
    }
    let (fid, now) = (f.id.clone(), crate::time::now_micros());
    #[allow(clippy::type_complexity)]
    let rows: Vec<(String, String, String, String, Option<i64>, i64)> = state
        .db
        .q(move |c| {
            fs_::table
                .inner_join(u::table.on(u::id.eq(fs_::user_id)))
                .filter(fs_::file_id.eq(&fid))
                .filter(fs_::expires_at.is_null().or(fs_::expires_at.gt(now)))
                .order(fs_::created_at.asc())
                .select((fs_::user_id, u::display_name, u::email, fs_::permissions, fs_::expires_at, fs_::created_at))
                .load(c)
        })
        .await?;
    let shares = rows
        .into_iter()
        .map(|(user_id, display_name, email, permissions, expires, created)| ShareEntry {
            file_id: f.id.clone(),
            user_id,
            display_name,
            email,
            permissions,
            expires_at: expires.map(crate::time::micros_to_rfc3339),
            created_at: crate::time::micros_to_rfc3339(created),
        })
        .collect();
    Ok(Json(ShareEntries { shares }))
}
