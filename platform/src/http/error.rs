//! The one JSON error shape of the API and the catchers that give Rocket's own errors that shape.
//!
//! `{"error": {"code": "snake_case_code", "message": "text a person can act on"}}`

use rocket::http::{ContentType, Header, Status};
use rocket::response::{self, Responder, Response};
use rocket::{Catcher, Request};
use serde_json::json;

use crate::db::DbError;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: Status,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: Status, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 400 naming the field at fault.
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(Status::BadRequest, "invalid_input", format!("{field}: {why}"))
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Status::Unauthorized, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Status::Forbidden, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Status::NotFound, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(Status::ServiceUnavailable, "unavailable", message) }
    }

    /// 500 whose details go to the log, never to the client.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new(Status::InternalServerError, "internal_error", "an internal error occurred; it has been logged")
    }

    pub fn body(&self) -> String {
        json!({"error": {"code": self.code, "message": self.message}}).to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.code, self.code, self.message)
    }
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let body = self.body();
        let mut res = Response::build();
        res.status(self.status).header(ContentType::JSON).sized_body(body.len(), std::io::Cursor::new(body));
        if let Some(secs) = self.retry_after {
            res.header(Header::new("Retry-After", secs.to_string()));
        }
        res.ok()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Pool(_) | DbError::Connect(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("the database is unavailable; try again shortly", 5)
            }
            other => ApiError::internal("database error", other),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::from(DbError::Query(e))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Set by a guard that failed, so the catcher can say *why* instead of only the status.
#[derive(Debug, Clone, Default)]
pub struct FailureDetail(pub Option<ApiError>);

/// Records `err` on the request for the catcher and returns its status.
pub fn fail_with(req: &Request<'_>, err: ApiError) -> Status {
    let status = err.status;
    req.local_cache(|| FailureDetail(Some(err)));
    status
}

fn default_for(status: Status) -> (&'static str, String) {
    match status.code {
        400 => ("bad_request", "the request is malformed".into()),
        401 => ("unauthenticated", "sign in first: this call needs a valid access token".into()),
        403 => ("forbidden", "you are not allowed to do this".into()),
        404 => ("not_found", "no such resource or API route".into()),
        405 => ("method_not_allowed", "this method is not allowed here".into()),
        413 => ("payload_too_large", "the request body is too large".into()),
        415 => ("unsupported_media_type", "send the body as application/json".into()),
        422 => ("invalid_input", "the request body does not have the expected fields or types".into()),
        429 => ("rate_limited", "too many requests; slow down".into()),
        503 => ("unavailable", "a dependency is unavailable; try again shortly".into()),
        s if s >= 500 => ("internal_error", "an internal error occurred; it has been logged".into()),
        _ => ("error", status.reason_lossy().to_string()),
    }
}

#[rocket::catch(default)]
fn api_catcher(status: Status, req: &Request<'_>) -> ApiError {
    if let FailureDetail(Some(e)) = req.local_cache(FailureDetail::default) {
        if e.status == status {
            return e.clone();
        }
    }
    let (code, message) = default_for(status);
    ApiError::new(status, code, message)
}

/// Catchers mounted at `/api`: every error below it answers JSON.
pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![api_catcher]
}
