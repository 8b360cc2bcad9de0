//! The admin console at `/admin`: server-rendered pages (views in `admin-ui/`) behind a browser
//! session of its own.
//!
//! * **Sign-in** is the API's password step and MFA step (`auth::routes::password_step`,
//!   `mfa_step`: the same lockout, back-off, failure counting and audit), limited to admins, and
//!   an admin without MFA enrols a second factor before the console opens.
//! * **Session**: a row of `sessions` (so it is listed and revoked like any other, and ends
//!   with the account) plus a `browser_sessions` row holding the keyed hash of the cookie
//!   secret, a CSRF token and the last request time. Cookie `seccollab_admin`: HttpOnly,
//!   SameSite=Strict, Path=/admin, Secure under TLS. Idle timeout `admin.idle_timeout_secs`,
//!   absolute `admin.absolute_timeout_secs`.
//! * **CSRF**: every form carries the session's token, compared in constant time on every POST;
//!   the sign-in forms (no session yet) use a double-submit cookie.
//! * Every page and act is audited by the HTTP layer (per request, with the admin as actor), and
//!   each act also by the API function it calls (`admin.user_unlock`, ...).

pub mod routes;

use diesel::prelude::*;
use rocket::http::{Cookie, CookieJar, SameSite};
use rocket::request::{FromRequest, Outcome};
use rocket::Request;

use crate::auth::browser::{self, BrowserSession};
use crate::auth::CurrentActor;
use crate::db::DbConnection;
use crate::AppState;

pub const COOKIE: &str = "seccollab_admin";
/// Double-submit CSRF cookie of the sign-in forms.
pub const PRE_COOKIE: &str = "seccollab_admin_pre";
pub(crate) const KIND: &str = "admin";

/// A live console session.
pub type ConsoleSession = BrowserSession;

pub use crate::auth::browser::csrf_ok;

/// The console session a cookie secret belongs to, if it is live (see [`browser::lookup`]).
pub fn lookup(
    conn: &mut DbConnection,
    master: &[u8; 32],
    token: &str,
    now: i64,
    idle_micros: i64,
) -> QueryResult<Option<ConsoleSession>> {
    browser::lookup(conn, master, token, KIND, now, idle_micros)
}

fn secure(state: &AppState) -> bool {
    state.config.admin.secure_cookie.unwrap_or_else(|| state.config.server.tls_enabled())
}

/// The session cookie: HttpOnly, SameSite=Strict, only under `/admin`, Secure under TLS; a
/// browser-session cookie (no Max-Age): the server enforces the timeouts.
pub fn session_cookie(state: &AppState, token: String) -> Cookie<'static> {
    Cookie::build((COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/admin")
        .secure(secure(state))
        .build()
}

/// The double-submit token of the sign-in forms: the cookie's value, set when missing.
pub fn pre_token(state: &AppState, jar: &CookieJar<'_>) -> String {
    browser::pre_token(jar, PRE_COOKIE, "/admin", secure(state))
}

/// Who is asking for a console page.
#[derive(Debug)]
pub enum Console {
    /// A live console session of an administrator.
    Admin(ConsoleSession),
    /// A live session, or an API token, of someone who is not an administrator.
    NotAdmin,
    /// No (live) credentials: sign in first.
    SignedOut,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Console {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let Some(state) = req.rocket().state::<AppState>() else { return Outcome::Success(Console::SignedOut) };
        if let Some(token) = req.cookies().get(COOKIE).map(|c| c.value().to_string()) {
            let master = state.keys.hash_key;
            let idle = state.config.admin.idle_timeout_secs as i64 * 1_000_000;
            let found = state.db.q(move |c| lookup(c, &master, &token, crate::time::now_micros(), idle)).await;
            match found {
                // A session that must be confirmed again (`force_mfa`) signs in anew here:
                // the console's sign-in asks for the password and the second factor.
                Ok(Some(s)) if !s.reverify => {
                    req.local_cache(|| CurrentActor(Some(s.user_id.clone())));
                    // Console sessions open only after a second factor; one that has not
                    // passed it (none should exist) is not an admin's.
                    let admin = s.role == "admin" && s.mfa_passed;
                    return Outcome::Success(if admin { Console::Admin(s) } else { Console::NotAdmin });
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "console session lookup failed"),
            }
        }
        // An API bearer token of a non-admin gets 403 like the API's admin routes.
        if let Some(t) = req.headers().get_one("Authorization").and_then(|h| h.strip_prefix("Bearer ")) {
            if let Ok(u) = crate::auth::authenticate_token(state, t.trim()).await {
                req.local_cache(|| CurrentActor(Some(u.id.clone())));
                if !u.is_admin() {
                    return Outcome::Success(Console::NotAdmin);
                }
            }
        }
        Outcome::Success(Console::SignedOut)
    }
}
