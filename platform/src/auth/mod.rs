//! Accounts and authentication: registration, password and TOTP sign-in, sessions with
//! short-lived JWT access tokens and rotating refresh tokens, lockout, and the request guards.
//!
//! Guards: [`AuthUser`] (any signed-in user) and [`AdminUser`] (role `admin`, and a session
//! that passed a second factor: otherwise 403 `mfa_required`). Both validate the
//! JWT and then the server-side session it names, so revocation takes effect at once. Without a
//! bearer token they accept the web UI's session cookie (`crate::web`), and then require its
//! CSRF token in `X-CSRF-Token` on every state-changing request.

pub mod admin_acts;
pub mod admin_routes;
pub mod browser;
pub mod mfa;
pub mod oauth;
pub mod password;
pub mod routes;
pub mod secrets;
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
    /// An automatic response (`force_mfa`) asks this session to be confirmed again: the
    /// guards refuse it (403 `mfa_reverify_required`) except on `POST /api/auth/reverify`
    /// and `POST /api/auth/logout` ([`PendingUser`]).
    pub reverify: bool,
    /// The session passed a second factor when it started.
    pub mfa_passed: bool,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// A signed-in administrator.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

/// A signed-in user whose session may still wait for re-verification (the re-verify and
/// sign-out calls).
#[derive(Debug, Clone)]
pub struct PendingUser(pub AuthUser);

/// The answer to a session that must be confirmed again before use.
pub fn reverify_required() -> ApiError {
    ApiError::new(
        rocket::http::Status::Forbidden,
        "mfa_reverify_required",
        "confirm it is you: POST /api/auth/reverify with your authenticator code (or your password when MFA is off)",
    )
}

/// The answer to an admin session that has not passed a second factor.
pub fn mfa_required() -> ApiError {
    ApiError::new(
        rocket::http::Status::Forbidden,
        "mfa_required",
        "administration needs a sign-in with a second factor: enrol one (POST /api/auth/mfa/setup, then /api/auth/mfa/enable) and sign in again through verify-mfa",
    )
}

/// Refuses a session waiting for re-verification unless `allow`.
fn gate(u: AuthUser, allow: bool) -> Result<AuthUser, ApiError> {
    if u.reverify && !allow {
        return Err(reverify_required());
    }
    Ok(u)
}

fn bearer<'a>(req: &'a Request<'_>) -> Option<&'a str> {
    req.headers().get_one("Authorization").and_then(|h| h.strip_prefix("Bearer ")).map(str::trim)
}

async fn authenticate(req: &Request<'_>, allow_reverify: bool) -> Result<AuthUser, ApiError> {
    let Some(state) = req.rocket().state::<AppState>() else {
        return Err(ApiError::internal("guard", "no state"));
    };
    let user = match bearer(req) {
        Some(token) => authenticate_token(state, token).await?,
        None if req.cookies().get(crate::web::COOKIE).is_some() => cookie_user(req, true).await?,
        None => return Err(ApiError::unauthenticated("sign in first: this call needs a valid access token")),
    };
    req.local_cache(|| CurrentActor(Some(user.id.clone())));
    gate(user, allow_reverify)
}

/// The user of the web UI's session cookie. With `csrf`, a state-changing request (anything
/// but GET, HEAD and OPTIONS) must also carry the session's CSRF token in `X-CSRF-Token`.
async fn cookie_user(req: &Request<'_>, csrf: bool) -> Result<AuthUser, ApiError> {
    let Some(s) = crate::web::current(req).await else {
        return Err(ApiError::new(
            rocket::http::Status::Unauthorized,
            "session_expired",
            "your session has ended; sign in again",
        ));
    };
    let safe =
        matches!(req.method(), rocket::http::Method::Get | rocket::http::Method::Head | rocket::http::Method::Options);
    if csrf && !safe {
        let given = req.headers().get_one(crate::web::CSRF_HEADER).unwrap_or("");
        if !browser::csrf_ok(&s.csrf, given) {
            return Err(ApiError::new(
                rocket::http::Status::Forbidden,
                "csrf_failed",
                "the request's X-CSRF-Token header is missing or wrong; reload the page",
            ));
        }
    }
    Ok(AuthUser {
        id: s.user_id.clone(),
        sid: s.sid.clone(),
        role: s.role.clone(),
        reverify: s.reverify,
        mfa_passed: s.mfa_passed,
    })
}

/// Validates an access token and the live session it names.
pub async fn authenticate_token(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let invalid = || {
        ApiError::new(
            rocket::http::Status::Unauthorized,
            "invalid_token",
            "the access token is invalid, expired or revoked; sign in again",
        )
    };
    let claims = tokens::validate(&state.keys.jwt_signing, token).ok_or_else(invalid)?;
    match session_live(state, &claims.sid).await? {
        Some(s) if s.user_id == claims.sub => Ok(AuthUser {
            id: s.user_id,
            sid: claims.sid,
            role: s.role,
            reverify: s.reverify,
            mfa_passed: s.mfa_passed,
        }),
        _ => Err(invalid()),
    }
}

/// Whether session `sid` is live (cached for a few seconds; revocation on this node clears it).
pub async fn session_live(state: &AppState, sid: &str) -> Result<Option<sessions::LiveSession>, ApiError> {
    if let Some(cached) = state.sessions.get(sid) {
        return Ok(cached);
    }
    let id = sid.to_string();
    let live = state.db.run(move |c| sessions::live(c, &id, crate::time::now_micros()).map_err(ApiError::from)).await?;
    state.sessions.put(sid, live.clone());
    Ok(live)
}

/// A signed-in user of a WebSocket upgrade: the token may also come as `?token=` (browsers
/// cannot set headers on a WebSocket). The second field is when the access token expires (Unix
/// seconds; `None` for the web UI's session cookie): the connection may send messages until then.
#[derive(Debug, Clone)]
pub struct WsUser(pub AuthUser, pub Option<i64>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for WsUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let Some(state) = req.rocket().state::<AppState>() else {
            return Outcome::Error((fail_with(req, ApiError::internal("guard", "no state")), ()));
        };
        let token = bearer(req).map(str::to_string).or_else(|| req.query_value::<String>("token").and_then(Result::ok));
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            // The web UI's session cookie, from a page of this server only (no cross-site
            // WebSocket hijacking, even where a browser would send the cookie).
            if req.cookies().get(crate::web::COOKIE).is_some() {
                if !crate::web::same_origin(req) {
                    let e = ApiError::forbidden("the WebSocket was opened from another site");
                    return Outcome::Error((fail_with(req, e), ()));
                }
                return match cookie_user(req, false).await.and_then(|u| gate(u, false)) {
                    Ok(u) => {
                        req.local_cache(|| CurrentActor(Some(u.id.clone())));
                        Outcome::Success(WsUser(u, None))
                    }
                    Err(e) => Outcome::Error((fail_with(req, e), ())),
                };
            }
            let e = ApiError::unauthenticated(
                "sign in first: pass the access token as ?token= or a bearer header, or use the web session cookie",
            );
            return Outcome::Error((fail_with(req, e), ()));
        };
        match authenticate_token(state, &token).await.and_then(|u| gate(u, false)) {
            Ok(u) => {
                req.local_cache(|| CurrentActor(Some(u.id.clone())));
                let exp = tokens::validate(&state.keys.jwt_signing, &token).map(|c| c.exp);
                Outcome::Success(WsUser(u, exp))
            }
            Err(e) => Outcome::Error((fail_with(req, e), ())),
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        match authenticate(req, false).await {
            Ok(u) => Outcome::Success(u),
            Err(e) => Outcome::Error((fail_with(req, e), ())),
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AdminUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        match authenticate(req, false).await {
            Ok(u) if u.is_admin() && u.mfa_passed => Outcome::Success(AdminUser(u)),
            Ok(u) if u.is_admin() => Outcome::Error((fail_with(req, mfa_required()), ())),
            Ok(_) => Outcome::Error((fail_with(req, ApiError::forbidden("this call is for administrators")), ())),
            Err(e) => Outcome::Error((fail_with(req, e), ())),
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PendingUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        match authenticate(req, true).await {
            Ok(u) => Outcome::Success(PendingUser(u)),
            Err(e) => Outcome::Error((fail_with(req, e), ())),
        }
    }
}
