//! Health, OpenAPI document and other platform-level endpoints.

use rocket::serde::json::Json;
use rocket::{get, Route};
use serde::Serialize;
use utoipa::OpenApi;

pub fn routes() -> Vec<Route> {
    rocket::routes![health, openapi]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}

/// 200 once the server accepts requests.
#[utoipa::path(get, path = "/api/health", tag = "system", responses((status = 200, body = Health)))]
#[get("/health")]
pub fn health() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

/// This API as OpenAPI 3, generated from the code.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3 document")))]
#[get("/openapi.json")]
pub fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}
