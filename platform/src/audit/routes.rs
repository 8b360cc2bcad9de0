//! `/api/admin/logs` (filtered pages and streamed CSV/JSONL export) and `/api/audit/verify`.

use rocket::http::{ContentType, Header};
use rocket::response::stream::ByteStream;
use rocket::response::{self, Responder, Response};
use rocket::serde::json::Json;
use rocket::{get, Request, Route, State};
use serde::Serialize;

use super::query::{encode_export, list, ExportFormat, LogFilter, VerifyReport};
use super::AuditEntryView;
use crate::auth::AdminUser;
use crate::http::pagination::{self, decode_cursor, encode_cursor};
use crate::http::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![logs, verify]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogsPage {
    pub entries: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

/// A streamed export with a download name.
pub struct Export {
    format: ExportFormat,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

impl<'r> Responder<'r, 'r> for Export {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'r> {
        let (ct, ext) = match self.format {
            ExportFormat::Csv => (ContentType::CSV, "csv"),
            ExportFormat::Jsonl => (ContentType::new("application", "x-ndjson"), "jsonl"),
        };
        let mut rx = self.rx;
        let stream = ByteStream! {
            while let Some(chunk) = rx.recv().await {
                yield chunk;
            }
        };
        Response::build_from(stream.respond_to(req)?)
            .header(ct)
            .header(Header::new("Content-Disposition", format!("attachment; filename=\"seccollab-audit.{ext}\"")))
            .ok()
    }
}

pub enum LogsAnswer {
    Page(Json<LogsPage>),
    Export(Export),
}

impl<'r> Responder<'r, 'r> for LogsAnswer {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'r> {
        match self {
            LogsAnswer::Page(p) => p.respond_to(req),
            LogsAnswer::Export(e) => e.respond_to(req),
        }
    }
}

fn opt(v: Option<&str>) -> Option<String> {
    v.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

fn time_param(name: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    match opt(v) {
        None => Ok(None),
        Some(s) => crate::time::parse_rfc3339_micros(&s)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 time such as 2026-01-31T12:00:00Z")),
    }
}

/// Lists audit entries newest first, or exports every match as CSV or JSON lines.
#[utoipa::path(
    get, path = "/api/admin/logs", tag = "audit",
    params(
        ("actor_id" = Option<String>, Query, description = "only this actor"),
        ("action" = Option<String>, Query, description = "only this action, e.g. auth.login"),
        ("outcome" = Option<String>, Query, description = "success | failure | denied | error"),
        ("ip" = Option<String>, Query, description = "only this client IP"),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("limit" = Option<i64>, Query, description = "1..200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("format" = Option<String>, Query, description = "csv | jsonl: stream every match as a download"),
    ),
    responses(
        (status = 200, description = "a page of entries, or the export", body = LogsPage),
        (status = 400, description = "a bad filter"),
        (status = 401, description = "not signed in"),
        (status = 403, description = "not an administrator"),
    )
)]
#[allow(clippy::too_many_arguments)]
#[get("/admin/logs?<actor_id>&<action>&<outcome>&<ip>&<since>&<until>&<limit>&<cursor>&<format>")]
pub async fn logs(
    _admin: AdminUser,
    state: &State<AppState>,
    actor_id: Option<&str>,
    action: Option<&str>,
    outcome: Option<&str>,
    ip: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
    format: Option<&str>,
) -> ApiResult<LogsAnswer> {
    let outcome = opt(outcome);
    if let Some(o) = &outcome {
        if !["success", "failure", "denied", "error"].contains(&o.as_str()) {
            return Err(ApiError::invalid("outcome", "must be success, failure, denied or error"));
        }
    }
    if let Some(ip) = opt(ip) {
        ip.parse::<std::net::IpAddr>().map_err(|_| ApiError::invalid("ip", "is not an IP address"))?;
    }
    let filter = LogFilter {
        actor_id: opt(actor_id),
        action: opt(action),
        outcome,
        ip: opt(ip),
        since: time_param("since", since)?,
        until: time_param("until", until)?,
    };
    let limit = match opt(limit) {
        None => pagination::limit(None)?,
        Some(s) => {
            pagination::limit(Some(s.parse().map_err(|_| ApiError::invalid("limit", "must be a whole number"))?))?
        }
    };
    let before = decode_cursor(cursor)?;
    // Everything recorded before this call is readable by it.
    state.audit.flush().await;
    let format = match opt(format).as_deref() {
        None | Some("json") => None,
        Some("csv") => Some(ExportFormat::Csv),
        Some("jsonl") => Some(ExportFormat::Jsonl),
        Some(_) => return Err(ApiError::invalid("format", "must be csv or jsonl")),
    };

    if let Some(format) = format {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let db = state.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut first = true;
            let mut before = before;
            let mut conn = match db.get() {
                Ok(c) => c,
                Err(e) => return tracing::error!(error = %e, "audit export: no connection"),
            };
            loop {
                let rows = match list(&mut conn, &filter, before, 1000) {
                    Ok(r) => r,
                    Err(e) => return tracing::error!(error = %e, "audit export stopped early"),
                };
                let done = rows.len() < 1000;
                before = rows.last().map(|r| r.seq);
                let chunk = encode_export(rows, format, first);
                first = false;
                if (!chunk.is_empty() && tx.blocking_send(chunk).is_err()) || done {
                    return;
                }
            }
        });
        return Ok(LogsAnswer::Export(Export { format, rx }));
    }

    let rows = state.db.run(move |c| list(c, &filter, before, limit + 1).map_err(ApiError::from)).await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |r| encode_cursor(r.seq));
    Ok(LogsAnswer::Page(Json(LogsPage { entries: rows.into_iter().map(AuditEntryView::from).collect(), next_cursor })))
}

/// Walks the audit hash chain and reports the first bad entry.
#[utoipa::path(
    get, path = "/api/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "the verdict", body = VerifyReport),
        (status = 401, description = "not signed in"),
        (status = 403, description = "not an administrator"),
    )
)]
#[get("/audit/verify")]
pub async fn verify(_admin: AdminUser, state: &State<AppState>) -> ApiResult<Json<VerifyReport>> {
    state.audit.flush().await;
    let db = state.db.clone();
    let (keys, dir) = (state.keys.clone(), state.config.storage.data_dir.clone());
    let report = tokio::task::spawn_blocking(move || {
        super::anchor::verify_all(&db, &keys, &dir, &mut |_| {}).map_err(|e| ApiError::internal("audit verify", e))
    })
    .await
    .map_err(|e| ApiError::internal("audit verify task", e))??;
    Ok(Json(report))
}
