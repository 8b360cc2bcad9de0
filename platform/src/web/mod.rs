//! The end-user web UI at `/`: server-rendered pages (askama, `platform/templates/web`) with
//! small ES modules (`platform/assets/web`, shipped inside the binary, no build step) that call
//! the JSON API and the WebSocket with the browser's session cookie.
//!
//! * **Sign-in** pages post to the same password, MFA and registration steps as the API
//!   (`auth::routes::password_step`, `mfa_step`, `register_user`): same lockout, back-off and
//!   audit. OpenID Connect starts at `/login/oidc/{provider}` and finishes in the API's callback,
//!   which sees the marker cookie set here and opens a browser session instead of answering JSON.
//! * **Session**: a `sessions` row plus a `browser_sessions` row of kind `web` (see
//!   `auth::browser`). Cookie `seccollab_session`: HttpOnly, SameSite=Strict, Path=/, Secure
//!   under TLS (or `web.secure_cookie`). No token ever reaches JavaScript or localStorage.
//! * **CSRF**: the pages carry the session's token in `<meta name="csrf-token">`; the scripts
//!   send it as `X-CSRF-Token` and the API's guards check it on every state-changing request
//!   made with the cookie. Forms carry it as a field. The sign-in forms (no session yet) use a
//!   double-submit cookie. `/ws` with the cookie also requires a same-origin `Origin`.

pub mod routes;

use rocket::http::{Cookie, CookieJar, SameSite};
use rocket::request::{FromRequest, Outcome};
use rocket::Request;

use crate::auth::browser::{self, BrowserSession};
use crate::auth::CurrentActor;
use crate::AppState;

pub use crate::admin::routes::Page;

/// The web session cookie.
pub const COOKIE: &str = "seccollab_session";
/// The header the scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "X-CSRF-Token";
/// Double-submit CSRF cookie of the sign-in forms.
pub const PRE_COOKIE: &str = "seccollab_pre";
/// Set while an OpenID Connect sign-in started from the web UI is under way.
pub const OAUTH_MARKER: &str = "seccollab_oauth_web";
/// The MFA challenge of an OpenID Connect sign-in, for the code page.
pub const MFA_COOKIE: &str = "seccollab_mfa";
pub(crate) const KIND: &str = "web";

fn secure(state: &AppState) -> bool {
    state.config.web.secure_cookie.unwrap_or_else(|| state.config.server.tls_enabled())
}

/// The session cookie: HttpOnly, SameSite=Strict, Path=/, Secure under TLS; no Max-Age (the
/// server enforces the timeouts).
pub fn session_cookie(state: &AppState, token: String) -> Cookie<'static> {
    Cookie::build((COOKIE, token)).http_only(true).same_site(SameSite::Strict).path("/").secure(secure(state)).build()
}

/// A short-lived helper cookie (sign-in flow only).
fn flow_cookie(state: &AppState, name: &'static str, value: String, path: &'static str) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        // Lax: these come back after the provider's cross-site redirect.
        .same_site(SameSite::Lax)
        .path(path)
        .secure(secure(state))
        .max_age(rocket::time::Duration::seconds(600))
        .build()
}

/// The double-submit token of the sign-in forms: the cookie's value, set when missing.
pub fn pre_token(state: &AppState, jar: &CookieJar<'_>) -> String {
    browser::pre_token(jar, PRE_COOKIE, "/", secure(state))
}

/// Whether the sign-in form's token matches the double-submit cookie.
pub fn pre_ok(jar: &CookieJar<'_>, given: &str) -> bool {
    jar.get(PRE_COOKIE).is_some_and(|c| browser::csrf_ok(c.value(), given))
}

/// The live web session of this request's cookie (looked up once per request).
pub async fn current(req: &Request<'_>) -> Option<BrowserSession> {
    req.local_cache_async(async {
        let state = req.rocket().state::<AppState>()?;
        let token = req.cookies().get(COOKIE)?.value().to_string();
        let master = state.keys.hash_key;
        let idle = state.config.web.idle_timeout_secs as i64 * 1_000_000;
        match state.db.q(move |c| browser::lookup(c, &master, &token, KIND, crate::time::now_micros(), idle)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "web session lookup failed");
                None
            }
        }
    })
    .await
    .clone()
}

/// Whether the request's `Origin` (when sent) is this server: scheme-less host comparison
/// with the `Host` header, as browsers send both for a WebSocket.
pub fn same_origin(req: &Request<'_>) -> bool {
    let Some(origin) = req.headers().get_one("Origin") else { return true };
    let Some(host) = req.headers().get_one("Host") else { return false };
    let o = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")).unwrap_or("");
    o.eq_ignore_ascii_case(host)
}

/// Whether a request came from a page of this server ([`same_origin`]), as a guard: the
/// cookie-authenticated WebSockets refuse cross-site upgrades with it.
#[derive(Debug, Clone, Copy)]
pub struct SameOrigin(pub bool);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SameOrigin {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(SameOrigin(same_origin(req)))
    }
}

/// Who is asking for a web page.
#[derive(Debug)]
pub enum Web {
    SignedIn(BrowserSession),
    SignedOut,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Web {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        match current(req).await {
            Some(s) => {
                req.local_cache(|| CurrentActor(Some(s.user_id.clone())));
                Outcome::Success(Web::SignedIn(s))
            }
            None => Outcome::Success(Web::SignedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The web pages, the console, the WebSocket and the API share one router: no two routes
    /// may claim the same request.
    #[rocket::async_test]
    async fn no_route_collides_with_another() {
        let r = rocket::custom(rocket::Config {
            log_level: rocket::config::LogLevel::Off,
            ..rocket::Config::debug_default()
        })
        .mount("/api", crate::api_routes())
        .mount(
            "/",
            rocket::routes![
                crate::http::metrics::metrics,
                crate::realtime::ws::ws,
                crate::security::responses::blocked,
                crate::security::ratelimit::limited
            ],
        )
        .mount("/admin", crate::admin::routes::routes())
        .mount("/", super::routes::routes());
        if let Err(e) = r.ignite().await {
            if let rocket::error::ErrorKind::Collisions(c) = e.kind() {
                let pairs: Vec<String> = c.routes.iter().map(|(a, b)| format!("{a} <-> {b}")).collect();
                panic!("colliding routes: {pairs:#?}");
            }
        }
    }
}
