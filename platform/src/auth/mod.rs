//! Accounts and authentication: registration, password and TOTP sign-in, sessions with
//! short-lived JWT access tokens and rotating refresh tokens, lockout, and the request guards.
//!
//! Guards: [`AuthUser`] (any signed-in user) and [`AdminUser`] (role `admin`). Both validate the
//! JWT and then the server-side session it names, so revocation takes effect at once.

pub mod admin_routes;
pub mod mfa;
pub mod password;
pub mod routes;
pub mod sessions;
pub mod tokens;
pub mod users;

use rocket::request::{FromRequest, Outcome};
use rocket::Request;

use crate::http::error::{fail_with, ApiError};
use crate::AppState;

/// The authenticated user id of this request, if any, for the per-request audit entry.
#[derive(Debug, Clone, Default)]
pub struct CurrentActor(pub Option<String>);

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    /// The session this request belongs to.
    pub sid: String,
    pub role: String,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// A signed-in administrator.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

fn bearer<'a>(req: &'a Request<'_>) -> Option<&'a str> {
    req.headers().get_one("Authorization").and_then(|h| h.strip_prefix("Bearer ")).map(str::trim)
}

async fn authenticate(req: &Request<'_>) -> Result<AuthUser, ApiError> {
    let Some(state) = req.rocket().state::<AppState>() else {
        return Err(ApiError::internal("guard", "no state"));
    };
    let Some(token) = bearer(req) else {
        return Err(ApiError::unauthenticated("sign in first: this call needs a valid access token"));
    };
    let invalid = || {
        ApiError::new(
            rocket::http::Status::Unauthorized,
            "invalid_token",
            "the access token is invalid, expired or revoked; sign in again",
        )
    };
    let claims = tokens::validate(&state.keys.jwt_signing, token).ok_or_else(invalid)?;
    let live = match state.sessions.get(&claims.sid) {
        Some(cached) => cached,
        None => {
            let sid = claims.sid.clone();
            let live = state
                .db
                .run(move |c| sessions::live(c, &sid, crate::time::now_micros()).map_err(ApiError::from))
                .await?;
            state.sessions.put(&claims.sid, live.clone());
            live
        }
    };
    match live {
        Some(s) if s.user_id == claims.sub => {
            req.local_cache(|| CurrentActor(Some(s.user_id.clone())));
            Ok(AuthUser { id: s.user_id, sid: claims.sid, role: s.role })
        }
        _ => Err(invalid()),
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        match authenticate(req).await {
            Ok(u) => Outcome::Success(u),
            Err(e) => Outcome::Error((fail_with(req, e), ())),
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AdminUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        match authenticate(req).await {
            Ok(u) if u.is_admin() => Outcome::Success(AdminUser(u)),
            Ok(_) => Outcome::Error((fail_with(req, ApiError::forbidden("this call is for administrators")), ())),
            Err(e) => Outcome::Error((fail_with(req, e), ())),
        }
    }
}
