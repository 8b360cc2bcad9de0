//! `/api/admin/users*` and `/api/admin/invites`: user administration for admins.

use diesel::prelude::*;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, post, Route, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::password::check_policy;
use super::routes::{entry, UserResponse};
use super::users::{self, Role, UserView};
use super::{admin_acts, AdminUser};
use crate::audit::Outcome;
use crate::db::schema::invites;
use crate::db::DbConnection;
use crate::http::pagination::{self, decode_str_cursor, encode_str_cursor};
use crate::http::{ApiError, ApiResult, ClientInfo, JsonBody};
use crate::security::throttle;
use crate::AppState;

pub fn routes() -> Vec<Route> {
    rocket::routes![list, create, unlock, disable, enable, clear_reverify, reset_mfa, create_invite]
}

/// A user as admins see it, with the lock state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminUserView {
    #[serde(flatten)]
    pub user: UserView,
    /// RFC 3339 time the sign-in lock ends, when locked.
    pub locked_until: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminUserList {
    pub users: Vec<AdminUserView>,
    pub next_cursor: Option<String>,
}

/// Every user (disabled ones too), with lock state.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin",
    params(("q" = Option<String>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = AdminUserList), (status = 401), (status = 403)))]
#[get("/admin/users?<q>&<limit>&<cursor>")]
pub async fn list(
    state: &State<AppState>,
    _admin: AdminUser,
    q: Option<String>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<AdminUserList>> {
    let limit = pagination::parse_limit(limit)?;
    let after = decode_str_cursor(cursor)?;
    let (rows, locks) = state
        .db
        .run(move |c| {
            let rows = users::search(c, q.as_deref(), after.as_deref(), limit + 1, true).map_err(ApiError::from)?;
            let now = crate::time::now_micros();
            let locks = rows
                .iter()
                .map(|u| throttle::locked_until(c, &u.email, now))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ApiError::from)?;
            Ok::<_, ApiError>((rows, locks))
        })
        .await?;
    let (rows, next_cursor) = pagination::split_page(rows, limit, |u| encode_str_cursor(&u.id));
    let users = rows
        .iter()
        .zip(locks)
        .map(|(u, l)| AdminUserView { user: UserView::from(u), locked_until: l.map(crate::time::micros_to_rfc3339) })
        .collect();
    Ok(Json(AdminUserList { users, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub display_name: String,
    pub password: String,
    /// `user` (default) or `admin`.
    pub role: Option<String>,
}

/// Creates a user directly.
#[utoipa::path(post, path = "/api/admin/users", tag = "admin", request_body = CreateUser,
    responses((status = 201, body = UserResponse), (status = 400), (status = 409)))]
#[post("/admin/users", data = "<body>")]
pub async fn create(
    state: &State<AppState>,
    client: ClientInfo,
    admin: AdminUser,
    body: JsonBody<CreateUser>,
) -> ApiResult<(Status, Json<UserResponse>)> {
    let req = body.0;
    let role = match req.role.as_deref() {
        None | Some("user") => Role::User,
        Some("admin") => Role::Admin,
        Some(_) => return Err(ApiError::invalid("role", "must be user or admin")),
    };
    let email = users::normalize_email(&req.email)?;
    check_policy(&state.policy.password, &req.password, &[&email, &req.display_name])
        .map_err(|why| ApiError::new(Status::BadRequest, "weak_password", format!("password {why}")))?;
    let hash = state.hasher.hash(req.password).await?;
    let name = req.display_name;
    let user = state.db.run(move |c| users::create(c, &email, &name, Some(hash), role).map_err(ApiError::from)).await?;
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AdminUserCreate, Outcome::Success, &client)
                .actor(Some(admin.0.id))
                .target("user", user.id.clone())
                .details(json!({"role": user.role})),
        )
        .await;
    Ok((Status::Created, Json(UserResponse { user: UserView::from(&user) })))
}

/// Who acts through the API.
fn api_actor(admin: &AdminUser, client: &ClientInfo) -> admin_acts::Actor {
    admin_acts::Actor {
        user_id: Some(admin.0.id.clone()),
        ip: client.ip_string(),
        user_agent: client.user_agent.clone(),
        via: admin_acts::Via::Api,
    }
}

/// The one mapping of a refused account act to the API's error shape.
pub fn act_error(e: admin_acts::ActError) -> ApiError {
    match e {
        admin_acts::ActError::NotFound => ApiError::not_found("no such user"),
        admin_acts::ActError::SelfDisable => {
            ApiError::new(Status::Conflict, "cannot_disable_self", "you cannot disable your own account")
        }
        admin_acts::ActError::Db(e) => e.into(),
    }
}

/// Lifts a sign-in lock.
#[utoipa::path(post, path = "/api/admin/users/{id}/unlock", tag = "admin", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
#[post("/admin/users/<id>/unlock")]
pub async fn unlock(state: &State<AppState>, client: ClientInfo, admin: AdminUser, id: &str) -> ApiResult<Status> {
    admin_acts::unlock(state, &api_actor(&admin, &client), id).await.map_err(act_error)?;
    Ok(Status::NoContent)
}

/// Disables a user and ends all their sessions at once.
#[utoipa::path(post, path = "/api/admin/users/{id}/disable", tag = "admin", params(("id" = String, Path)), responses((status = 204), (status = 404), (status = 409)))]
#[post("/admin/users/<id>/disable")]
pub async fn disable(state: &State<AppState>, client: ClientInfo, admin: AdminUser, id: &str) -> ApiResult<Status> {
    admin_acts::disable(state, &api_actor(&admin, &client), id).await.map_err(act_error)?;
    Ok(Status::NoContent)
}

/// Enables a disabled account, or reinstates one an automatic response suspended (the undo
/// of `suspend_account`). Enabling an active account changes nothing.
#[utoipa::path(post, path = "/api/admin/users/{id}/enable", tag = "admin", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
#[post("/admin/users/<id>/enable")]
pub async fn enable(state: &State<AppState>, client: ClientInfo, admin: AdminUser, id: &str) -> ApiResult<Status> {
    admin_acts::enable(state, &api_actor(&admin, &client), id).await.map_err(act_error)?;
    Ok(Status::NoContent)
}

/// Lifts the re-verification demand of every session of a user (the undo of `force_mfa`).
#[utoipa::path(post, path = "/api/admin/users/{id}/clear-reverify", tag = "admin", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
#[post("/admin/users/<id>/clear-reverify")]
pub async fn clear_reverify(
    state: &State<AppState>,
    client: ClientInfo,
    admin: AdminUser,
    id: &str,
) -> ApiResult<Status> {
    admin_acts::clear_reverify(state, &api_actor(&admin, &client), id).await.map_err(act_error)?;
    Ok(Status::NoContent)
}

/// Turns a user's MFA off (lost device) and ends their sessions.
#[utoipa::path(post, path = "/api/admin/users/{id}/reset-mfa", tag = "admin", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
#[post("/admin/users/<id>/reset-mfa")]
pub async fn reset_mfa(state: &State<AppState>, client: ClientInfo, admin: AdminUser, id: &str) -> ApiResult<Status> {
    admin_acts::reset_mfa(state, &api_actor(&admin, &client), id).await.map_err(act_error)?;
    Ok(Status::NoContent)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// Only this email may use the invite.
    pub email: Option<String>,
    /// Hours until it expires (1–720, default 72).
    pub expires_in_hours: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Invite {
    /// Shown once; only its keyed hash is stored.
    pub code: String,
    pub email: Option<String>,
    pub expires_at: String,
}

/// Creates a single-use, expiring registration invite.
#[utoipa::path(post, path = "/api/admin/invites", tag = "admin", request_body = CreateInvite, responses((status = 201, body = Invite), (status = 400)))]
#[post("/admin/invites", data = "<body>")]
pub async fn create_invite(
    state: &State<AppState>,
    client: ClientInfo,
    admin: AdminUser,
    body: JsonBody<CreateInvite>,
) -> ApiResult<(Status, Json<Invite>)> {
    let req = body.0;
    let hours = req.expires_in_hours.unwrap_or(72);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::invalid("expires_in_hours", "must be between 1 and 720"));
    }
    let email = req.email.as_deref().map(users::normalize_email).transpose()?;
    let code = crate::crypto::random_token(18);
    let hash = crate::crypto::keyed_hash(&state.keys.hash_key, "invite", &code);
    let now = crate::time::now_micros();
    let expires_at = now + hours as i64 * 3600 * 1_000_000;
    let (by, email2) = (admin.0.id.clone(), email.clone());
    state
        .db
        .run(move |c| {
            diesel::insert_into(invites::table)
                .values((
                    invites::code_hash.eq(hash),
                    invites::created_by.eq(by),
                    invites::email.eq(email2),
                    invites::created_at.eq(now),
                    invites::expires_at.eq(expires_at),
                ))
                .execute(c)
                .map_err(ApiError::from)
        })
        .await?;
    state
        .audit
        .record(
            entry(crate::audit::AuditAction::AdminInviteCreate, Outcome::Success, &client)
                .actor(Some(admin.0.id))
                .details(json!({"email": email, "hours": hours})),
        )
        .await;
    Ok((Status::Created, Json(Invite { code, email, expires_at: crate::time::micros_to_rfc3339(expires_at) })))
}

/// Spends an invite for `email`: true when it was valid, unused, unexpired and (if bound) for
/// this email. Runs inside the registration transaction.
pub fn consume_invite(c: &mut DbConnection, code_hash: &str, email: &str) -> QueryResult<bool> {
    let now = crate::time::now_micros();
    let n = diesel::update(
        invites::table
            .filter(invites::code_hash.eq(code_hash))
            .filter(invites::used_at.is_null())
            .filter(invites::expires_at.gt(now))
            .filter(invites::email.is_null().or(invites::email.eq(email))),
    )
    .set((invites::used_at.eq(now), invites::used_by.eq(email)))
    .execute(c)?;
    Ok(n == 1)
}
