//! `POST /api/audit/security-scan/{file_id}` (rescan on demand),
//! `POST /api/admin/scanner/reload` (recompile the YARA rules; SIGHUP does the same) and
//! `POST /api/admin/files/{id}/release` (release a held file: `files::moderation`).

use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{post, Route, State};
use serde::Serialize;
use serde_json::json;

use crate::audit::Outcome;
use crate::auth::routes::entry;
use crate::auth::AdminUser;
use crate::http::{ApiError, ApiResult, ClientInfo};
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![security_scan, reload, release]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchView {
    pub rule: String,
    pub namespace: String,
    pub tags: Vec<String>,
    pub severity: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScanResponse {
    pub file_id: String,
    /// `clean`, `infected` or `error`.
    pub status: String,
    pub matches: Vec<MatchView>,
    pub engine: String,
    pub scanned_at: String,
    pub error: Option<String>,
}

/// Rescans a file now; an infected file is quarantined and an alert raised.
#[utoipa::path(post, path = "/api/audit/security-scan/{file_id}", tag = "audit", params(("file_id" = String, Path)),
    responses((status = 200, body = ScanResponse), (status = 403), (status = 404)))]
#[post("/audit/security-scan/<file_id>")]
pub async fn security_scan(state: &State<AppState>, admin: AdminUser, file_id: &str) -> ApiResult<Json<ScanResponse>> {
    let verdict =
        crate::security::scan::rescan(state, file_id, Some(admin.0.id.clone())).await.map_err(rescan_error)?;
    Ok(Json(ScanResponse {
        file_id: file_id.to_string(),
        status: verdict.status.into(),
        matches: verdict
            .matches
            .into_iter()
            .map(|m| MatchView {
                rule: m.rule,
                namespace: m.namespace,
                tags: m.tags,
                severity: m.severity,
                description: m.description,
            })
            .collect(),
        engine: verdict.engine,
        scanned_at: crate::time::micros_to_rfc3339(crate::time::now_micros()),
        error: verdict.error,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReloadResponse {
    pub rule_files: usize,
}

/// Recompiles `policies/yara/*.yar`; on a bad rule the old set stays and the error names the
/// file and line.
#[utoipa::path(post, path = "/api/admin/scanner/reload", tag = "admin",
    responses((status = 200, body = ReloadResponse), (status = 400, description = "a rule does not compile; old rules stay")))]
#[post("/admin/scanner/reload")]
pub async fn reload(state: &State<AppState>, client: ClientInfo, admin: AdminUser) -> ApiResult<Json<ReloadResponse>> {
    let yara = state.scanner.yara.clone();
    let result =
        tokio::task::spawn_blocking(move || yara.reload()).await.map_err(|e| ApiError::internal("reload task", e))?;
    let outcome = if result.is_ok() { Outcome::Success } else { Outcome::Failure };
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AdminScannerReload, outcome, &client)
                .actor(Some(admin.0.id))
                .details(json!({"error": result.as_ref().err()})),
        )
        .await;
    match result {
        Ok(n) => Ok(Json(ReloadResponse { rule_files: n })),
        Err(e) => {
            Err(ApiError::new(Status::BadRequest, "invalid_rules", format!("the rules in force are unchanged: {e}")))
        }
    }
}

/// Recompiles the rules on SIGHUP.
pub fn reload_on_sighup(state: AppState) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let yara = state.scanner.yara.clone();
            match tokio::task::spawn_blocking(move || yara.reload()).await {
                Ok(Ok(n)) => tracing::info!(rule_files = n, "YARA rules reloaded (SIGHUP)"),
                Ok(Err(e)) => tracing::error!(error = %e, "YARA rules not reloaded; the old set stays"),
                Err(_) => {}
            }
        }
    });
}

/// The one mapping of a refused rescan to the API's error shape.
pub fn rescan_error(e: crate::security::scan::RescanError) -> ApiError {
    use crate::security::scan::RescanError;
    match e {
        RescanError::NotFound => ApiError::new(Status::NotFound, "file_not_found", "no such file"),
        RescanError::Failed(why) => ApiError::internal("scan", why),
        RescanError::Db(e) => e.into(),
    }
}

/// The released file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Released {
    pub file: crate::files::FileView,
}

/// Releases a file the scan held (`quarantined` or `error`) after an admin checked it: it is
/// downloadable again. Audited as `admin.file_release`; the console's Release button does the same.
#[utoipa::path(post, path = "/api/admin/files/{id}/release", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = Released), (status = 403, description = "not an admin, or `mfa_required`"),
        (status = 404, description = "`file_not_found`"), (status = 409, description = "`not_held`: the file is not held")))]
#[post("/admin/files/<id>/release")]
pub async fn release(
    state: &State<AppState>,
    client: ClientInfo,
    admin: AdminUser,
    id: &str,
) -> ApiResult<Json<Released>> {
    let by = crate::files::moderation::Moderator {
        user_id: admin.0.id.clone(),
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
    };
    let file = crate::files::moderation::release(state, &by, id).await.map_err(release_error)?;
    Ok(Json(Released { file: crate::files::FileView::from(&file) }))
}

/// The one mapping of a refused release to the API's error shape.
pub fn release_error(e: crate::files::moderation::ReleaseError) -> ApiError {
    use crate::files::moderation::ReleaseError;
    match e {
        ReleaseError::NotFound => ApiError::new(Status::NotFound, "file_not_found", "no such file"),
        ReleaseError::NotHeld(s) => ApiError::new(
            Status::Conflict,
            "not_held",
            format!("the file is not held (scan status {s}); nothing to release"),
        ),
        ReleaseError::Db(e) => e.into(),
    }
}
