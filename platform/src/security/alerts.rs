//! Security alerts: raised by integrity checks and malware scans (and, later, anomaly rules);
//! listed and acknowledged by admins.

use diesel::prelude::*;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, post, Route, State};
use serde::Serialize;

use crate::auth::AdminUser;
use crate::db::schema::security_alerts as sa;
use crate::db::DbConnection;
use crate::http::pagination::{self, decode_str_cursor, encode_str_cursor};
use crate::http::{ApiError, ApiResult, ClientInfo};
use crate::AppState;

/// Records an alert; returns its id.
pub fn raise(
    conn: &mut DbConnection,
    kind: &str,
    severity: &str,
    subject: Option<(&str, &str)>,
    details: &serde_json::Value,
) -> QueryResult<String> {
    let id = uuid::Uuid::now_v7().to_string();
    diesel::insert_into(sa::table)
        .values((
            sa::id.eq(&id),
            sa::at.eq(crate::time::now_micros()),
            sa::kind.eq(kind),
            sa::severity.eq(severity),
            sa::subject_type.eq(subject.map(|s| s.0)),
            sa::subject_id.eq(subject.map(|s| s.1)),
            sa::details.eq(details.to_string()),
        ))
        .execute(conn)?;
    tracing::warn!(alert_id = %id, kind, severity, "security alert raised");
    Ok(id)
}

/// Tells every enabled admin about an alert just raised: the live `security_alert` event, an
/// e-mail through the outbox (when SMTP is configured; skipped silently otherwise), and every
/// notifier plugin.
pub fn announce(state: &crate::AppState, conn: &mut DbConnection, ev: serde_json::Value) {
    state.plugin_notify.send(&crate::plugins::alert_message(&ev));
    let admins = admins(conn).unwrap_or_default();
    if state.mailer.enabled() {
        let people = crate::notify::people(conn, &admins).unwrap_or_default();
        let s = |k: &str| ev[k].as_str().unwrap_or("").to_string();
        let title = format!("[{}] security alert: {}", s("severity"), s("kind"));
        let summary =
            ev["details"]["summary"].as_str().map(str::to_string).unwrap_or_else(|| ev["details"].to_string());
        let rows: Vec<_> = people
            .values()
            .filter(|p| !p.disabled)
            .filter_map(|p| {
                crate::notify::email::notice(&state.config, p, "security_alert", &title, &summary, "/admin/alerts").ok()
            })
            .collect();
        match crate::notify::email::insert(conn, &rows) {
            Ok(()) => state.mailer.wake(),
            Err(e) => tracing::error!(error = %e, "alert e-mails not queued"),
        }
    }
    state.events.publish_blocking(&admins, "security_alert", ev);
}

/// Enabled administrators: who receives `security_alert` events.
pub fn admins(conn: &mut DbConnection) -> QueryResult<Vec<String>> {
    use crate::db::schema::users;
    users::table.filter(users::role.eq("admin")).filter(users::disabled.eq(false)).select(users::id).load(conn)
}

/// The `security_alert` event data for an alert just raised.
pub fn event(
    id: &str,
    kind: &str,
    severity: &str,
    subject: Option<(&str, &str)>,
    details: &serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "kind": kind, "severity": severity,
        "subject": subject.map(|(t, i)| serde_json::json!({"type": t, "id": i})),
        "details": details,
    })
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = sa)]
struct AlertRow {
    id: String,
    at: i64,
    kind: String,
    severity: String,
    subject_type: Option<String>,
    subject_id: Option<String>,
    details: String,
    acked_at: Option<i64>,
    acked_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    pub at: String,
    pub kind: String,
    pub severity: String,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub acked_at: Option<String>,
    pub acked_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
    pub next_cursor: Option<String>,
}

pub fn routes() -> Vec<Route> {
    rocket::routes![list, ack]
}

/// Alerts, newest first; `?open=true` for unacknowledged ones only.
#[utoipa::path(get, path = "/api/admin/alerts", tag = "admin",
    params(("open" = Option<bool>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = AlertList), (status = 401), (status = 403)))]
#[get("/admin/alerts?<open>&<limit>&<cursor>")]
pub async fn list(
    state: &State<AppState>,
    _admin: AdminUser,
    open: Option<bool>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<AlertList>> {
    let limit = pagination::parse_limit(limit)?;
    let before = decode_str_cursor(cursor)?;
    let rows: Vec<AlertRow> = state
        .db
        .q(move |c| {
            let mut q = sa::table.select(AlertRow::as_select()).into_boxed();
            if open == Some(true) {
                q = q.filter(sa::acked_at.is_null());
            }
            if let Some(b) = before {
                q = q.filter(sa::id.lt(b));
            }
            q.order(sa::id.desc()).limit(limit + 1).load(c)
        })
        .await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |r| encode_str_cursor(&r.id));
    let alerts = rows
        .into_iter()
        .map(|r| Alert {
            details: serde_json::from_str(&r.details).unwrap_or_default(),
            id: r.id,
            at: crate::time::micros_to_rfc3339(r.at),
            kind: r.kind,
            severity: r.severity,
            subject_type: r.subject_type,
            subject_id: r.subject_id,
            acked_at: r.acked_at.map(crate::time::micros_to_rfc3339),
            acked_by: r.acked_by,
        })
        .collect();
    Ok(Json(AlertList { alerts, next_cursor }))
}

/// Acknowledges an alert.
#[utoipa::path(post, path = "/api/admin/alerts/{id}/ack", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
#[post("/admin/alerts/<id>/ack")]
pub async fn ack(state: &State<AppState>, client: ClientInfo, admin: AdminUser, id: &str) -> ApiResult<Status> {
    let (aid, by) = (id.to_string(), admin.0.id.clone());
    let n = state
        .db
        .q(move |c| {
            diesel::update(sa::table.find(&aid).filter(sa::acked_at.is_null()))
                .set((sa::acked_at.eq(crate::time::now_micros()), sa::acked_by.eq(by)))
                .execute(c)
        })
        .await?;
    if n == 0 {
        return Err(ApiError::new(Status::NotFound, "alert_not_found", "no such open alert"));
    }
    state
        .audit
        .record(
            crate::auth::routes::entry(
                crate::audit::AuditAction::AdminAlertAck,
                crate::audit::Outcome::Success,
                &client,
            )
            .actor(Some(admin.0.id))
            .target("alert", id),
        )
        .await;
    Ok(Status::NoContent)
}
