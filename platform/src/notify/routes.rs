//! `/api/notifications*` (in-app notifications and channel preferences) and
//! `/api/admin/email/outbox*` (e-mail delivery state for administrators).

use diesel::prelude::*;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, post, put, routes, Route, State};
use serde::Serialize;

use super::email::{OutboxRow, OutboxView};
use super::{NotificationRow, NotificationView, Prefs};
use crate::audit::Outcome;
use crate::auth::routes::entry;
use crate::auth::{AdminUser, AuthUser};
use crate::db::schema::{email_outbox as eo, notification_preferences as np, notifications as nt};
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::JsonBody;
use crate::http::pagination::{self, decode_str_cursor, encode_str_cursor};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    routes![list, read_one, read_all, get_prefs, put_prefs, outbox, retry]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    /// Newest first.
    pub notifications: Vec<NotificationView>,
    pub unread_count: i64,
    pub next_cursor: Option<String>,
}

/// The caller's in-app notifications, newest first (`unread=true`: only unread ones).
#[utoipa::path(get, path = "/api/notifications", tag = "notifications",
    params(("unread" = Option<bool>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = NotificationList)))]
#[get("/notifications?<unread>&<limit>&<cursor>")]
pub async fn list(
    state: &State<AppState>,
    user: AuthUser,
    unread: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<NotificationList>> {
    let unread = match unread {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("unread", "must be true or false")),
    };
    let limit = pagination::parse_limit(limit)?;
    let before = decode_str_cursor(cursor)?;
    let uid = user.id.clone();
    let (rows, unread_count) = state
        .db
        .q(move |c| {
            let mut q = nt::table.filter(nt::user_id.eq(&uid)).into_boxed();
            if unread {
                q = q.filter(nt::read_at.is_null());
            }
            if let Some(b) = &before {
                q = q.filter(nt::id.lt(b.clone()));
            }
            let rows: Vec<NotificationRow> =
                q.order(nt::id.desc()).limit(limit + 1).select(NotificationRow::as_select()).load(c)?;
            let n: i64 = nt::table.filter(nt::user_id.eq(&uid)).filter(nt::read_at.is_null()).count().get_result(c)?;
            Ok((rows, n))
        })
        .await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |r| encode_str_cursor(&r.id));
    Ok(Json(NotificationList {
        notifications: rows.iter().map(NotificationView::from).collect(),
        unread_count,
        next_cursor,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationResponse {
    pub notification: NotificationView,
}

/// Marks one of the caller's notifications read (idempotent).
#[utoipa::path(post, path = "/api/notifications/{id}/read", tag = "notifications", params(("id" = String, Path)),
    responses((status = 200, body = NotificationResponse), (status = 404)))]
#[post("/notifications/<id>/read")]
pub async fn read_one(state: &State<AppState>, user: AuthUser, id: &str) -> ApiResult<Json<NotificationResponse>> {
    let (id, uid) = (id.to_string(), user.id.clone());
    let row = state
        .db
        .q(move |c| {
            let mine = nt::table.filter(nt::id.eq(&id)).filter(nt::user_id.eq(&uid));
            diesel::update(mine.filter(nt::read_at.is_null()))
                .set(nt::read_at.eq(crate::time::now_micros()))
                .execute(c)?;
            mine.select(NotificationRow::as_select()).first(c).optional()
        })
        .await?
        .ok_or_else(|| ApiError::new(Status::NotFound, "notification_not_found", "no such notification"))?;
    Ok(Json(NotificationResponse { notification: NotificationView::from(&row) }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadAllResponse {
    /// How many notifications were unread and are read now.
    pub updated: usize,
}

/// Marks all of the caller's notifications read.
#[utoipa::path(post, path = "/api/notifications/read-all", tag = "notifications",
    responses((status = 200, body = ReadAllResponse)))]
#[post("/notifications/read-all")]
pub async fn read_all(state: &State<AppState>, user: AuthUser) -> ApiResult<Json<ReadAllResponse>> {
    let uid = user.id.clone();
    let updated = state
        .db
        .q(move |c| {
            diesel::update(nt::table.filter(nt::user_id.eq(&uid)).filter(nt::read_at.is_null()))
                .set(nt::read_at.eq(crate::time::now_micros()))
                .execute(c)
        })
        .await?;
    Ok(Json(ReadAllResponse { updated }))
}

/// Which channels the caller gets notifications on (both by default).
#[utoipa::path(get, path = "/api/notifications/preferences", tag = "notifications",
    responses((status = 200, body = Prefs)))]
#[get("/notifications/preferences")]
pub async fn get_prefs(state: &State<AppState>, user: AuthUser) -> ApiResult<Json<Prefs>> {
    let uid = user.id.clone();
    let p = state.db.q(move |c| super::prefs_of(c, std::slice::from_ref(&uid))).await?;
    Ok(Json(p.get(&user.id).copied().unwrap_or_default()))
}

/// Sets the caller's channels: `{email: bool, in_app: bool}`.
#[utoipa::path(put, path = "/api/notifications/preferences", tag = "notifications", request_body = Prefs,
    responses((status = 200, body = Prefs), (status = 400)))]
#[put("/notifications/preferences", data = "<body>")]
pub async fn put_prefs(
    state: &State<AppState>,
    client: ClientInfo,
    user: AuthUser,
    body: JsonBody<Prefs>,
) -> ApiResult<Json<Prefs>> {
    let p = body.0;
    let uid = user.id.clone();
    state
        .db
        .q(move |c| {
            let now = crate::time::now_micros();
            let n = diesel::update(np::table.find(&uid))
                .set((np::email.eq(p.email), np::in_app.eq(p.in_app), np::updated_at.eq(now)))
                .execute(c)?;
            if n == 0 {
                diesel::insert_into(np::table)
                    .values((
                        np::user_id.eq(&uid),
                        np::email.eq(p.email),
                        np::in_app.eq(p.in_app),
                        np::updated_at.eq(now),
                    ))
                    .execute(c)?;
            }
            Ok(())
        })
        .await?;
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::NotificationPreferences, Outcome::Success, &client)
                .actor(Some(user.id.clone()))
                .target("user", user.id.clone())
                .details(serde_json::json!({"email": p.email, "in_app": p.in_app})),
        )
        .await;
    Ok(Json(p))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutboxList {
    pub enabled: bool,
    /// Rows per status: `queued`, `sending`, `sent`, `failed`.
    #[schema(value_type = Object)]
    pub counts: serde_json::Map<String, serde_json::Value>,
    /// Newest first.
    pub messages: Vec<OutboxView>,
    pub next_cursor: Option<String>,
}

/// E-mail outbox state (admin): counts per status and the messages, newest first.
#[utoipa::path(get, path = "/api/admin/email/outbox", tag = "notifications",
    params(("status" = Option<String>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = OutboxList), (status = 403)))]
#[get("/admin/email/outbox?<status>&<limit>&<cursor>")]
pub async fn outbox(
    state: &State<AppState>,
    _admin: AdminUser,
    status: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<OutboxList>> {
    if let Some(s) = status {
        if !["queued", "sending", "sent", "failed"].contains(&s) {
            return Err(ApiError::invalid("status", "must be queued, sending, sent or failed"));
        }
    }
    let limit = pagination::parse_limit(limit)?;
    let before = decode_str_cursor(cursor)?;
    let status = status.map(str::to_string);
    let (rows, counts) = state
        .db
        .q(move |c| {
            let mut q = eo::table.into_boxed();
            if let Some(s) = &status {
                q = q.filter(eo::status.eq(s.clone()));
            }
            if let Some(b) = &before {
                q = q.filter(eo::id.lt(b.clone()));
            }
            let rows: Vec<OutboxRow> =
                q.order(eo::id.desc()).limit(limit + 1).select(OutboxRow::as_select()).load(c)?;
            Ok((rows, super::email::counts(c)?))
        })
        .await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |r| encode_str_cursor(&r.id));
    let mut map = serde_json::Map::new();
    for s in ["queued", "sending", "sent", "failed"] {
        let n = counts.iter().find(|(k, _)| k == s).map(|(_, n)| *n).unwrap_or(0);
        map.insert(s.into(), n.into());
    }
    Ok(Json(OutboxList {
        enabled: state.mailer.enabled(),
        counts: map,
        messages: rows.iter().map(OutboxView::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutboxResponse {
    pub message: OutboxView,
}

/// Queues a `failed` e-mail again (admin), with a fresh attempt budget.
#[utoipa::path(post, path = "/api/admin/email/outbox/{id}/retry", tag = "notifications", params(("id" = String, Path)),
    responses((status = 200, body = OutboxResponse), (status = 404), (status = 409)))]
#[post("/admin/email/outbox/<id>/retry")]
pub async fn retry(
    state: &State<AppState>,
    client: ClientInfo,
    admin: AdminUser,
    id: &str,
) -> ApiResult<Json<OutboxResponse>> {
    let id2 = id.to_string();
    let row = state
        .db
        .q(move |c| {
            diesel::update(eo::table.find(&id2).filter(eo::status.eq("failed")))
                .set((eo::status.eq("queued"), eo::attempts.eq(0), eo::next_attempt_at.eq(crate::time::now_micros())))
                .execute(c)?;
            eo::table.find(&id2).select(OutboxRow::as_select()).first(c).optional()
        })
        .await?
        .ok_or_else(|| ApiError::new(Status::NotFound, "not_found", "no such e-mail"))?;
    if row.status != "queued" {
        return Err(ApiError::new(Status::Conflict, "conflict", format!("the e-mail is {}, not failed", row.status)));
    }
    state.mailer.wake();
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::NotificationEmailRetry, Outcome::Success, &client)
                .actor(Some(admin.0.id.clone()))
                .target("email", row.id.clone()),
        )
        .await;
    Ok(Json(OutboxResponse { message: OutboxView::from(&row) }))
}
