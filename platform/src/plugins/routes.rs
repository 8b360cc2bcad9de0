//! `GET /api/admin/plugins`.

use rocket::serde::json::Json;
use rocket::{get, Route, State};
use serde::Serialize;

use super::PluginInfo;
use crate::auth::AdminUser;
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![list]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginInfo>,
}

/// Built-in and loaded plugins: kind, name, version, ABI version, health, last error.
#[utoipa::path(get, path = "/api/admin/plugins", tag = "admin",
    responses((status = 200, body = PluginList), (status = 401), (status = 403)))]
#[get("/admin/plugins")]
pub async fn list(state: &State<AppState>, _admin: AdminUser) -> Json<PluginList> {
    Json(PluginList { plugins: state.plugins.list() })
}
