//! Browser sessions: the cookie half of a session of the admin console (`kind = "admin"`) or
//! the web UI (`kind = "web"`).
//!
//! A browser session is a row of `sessions` (listed, revoked and expired like any other, and
//! ended with the account) plus a `browser_sessions` row holding the keyed hash of the cookie
//! secret (the secret itself is only in the cookie), a CSRF token and the last request time.
//! The idle timeout is enforced here; the absolute one is the session's `expires_at`.

use diesel::prelude::*;
use subtle::ConstantTimeEq;

use crate::crypto::{keyed_hash, random_token};
use crate::db::schema::{browser_sessions as bs, sessions as st, users};
use crate::db::DbConnection;

const PURPOSE: &str = "browser-session";
/// `last_seen_at` is written at most this often (microseconds).
const TOUCH_EVERY: i64 = 30 * 1_000_000;

/// Whether the browser session of `sid` (of `kind`) is gone or has been idle for longer than
/// `idle_micros`: a WebSocket opened with its cookie closes then, as the pages would.
pub fn idled_out(conn: &mut DbConnection, sid: &str, kind: &str, now: i64, idle_micros: i64) -> QueryResult<bool> {
    let last: Option<i64> = bs::table
        .filter(bs::session_id.eq(sid))
        .filter(bs::kind.eq(kind))
        .select(diesel::dsl::max(bs::last_seen_at))
        .first::<Option<i64>>(conn)?;
    Ok(last.is_none_or(|l| now - l > idle_micros))
}

/// A live browser session.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub user_id: String,
    pub display_name: String,
    pub email: String,
    pub role: String,
    pub sid: String,
    pub csrf: String,
    /// The session must be confirmed again (`force_mfa`).
    pub reverify: bool,
    /// The sign-in passed a second factor.
    pub mfa_passed: bool,
}

/// Creates the browser half of session `session_id`; returns the cookie secret.
pub fn create(conn: &mut DbConnection, master: &[u8; 32], session_id: &str, kind: &str) -> QueryResult<String> {
    let token = random_token(32);
    let now = crate::time::now_micros();
    diesel::insert_into(bs::table)
        .values((
            bs::token_hash.eq(keyed_hash(master, PURPOSE, &token)),
            bs::session_id.eq(session_id),
            bs::kind.eq(kind),
            bs::csrf_token.eq(random_token(32)),
            bs::created_at.eq(now),
            bs::last_seen_at.eq(now),
        ))
        .execute(conn)?;
    Ok(token)
}

/// The session of kind `kind` a cookie secret belongs to, if it is live: not revoked, not past
/// its absolute end, used within `idle_micros`, its user not disabled. An idle session is
/// revoked here.
pub fn lookup(
    conn: &mut DbConnection,
    master: &[u8; 32],
    token: &str,
    kind: &str,
    now: i64,
    idle_micros: i64,
) -> QueryResult<Option<BrowserSession>> {
    let hash = keyed_hash(master, PURPOSE, token);
    #[allow(clippy::type_complexity)]
    let row: Option<(String, String, i64, String, String, String, String, bool, bool, bool)> = bs::table
        .inner_join(st::table.on(st::id.eq(bs::session_id)))
        .inner_join(users::table.on(users::id.eq(st::user_id)))
        .filter(bs::token_hash.eq(&hash))
        .filter(bs::kind.eq(kind))
        .filter(st::revoked_at.is_null())
        .filter(st::expires_at.gt(now))
        .select((
            bs::session_id,
            bs::csrf_token,
            bs::last_seen_at,
            users::id,
            users::display_name,
            users::email,
            users::role,
            users::disabled,
            st::reverify_required,
            st::mfa_passed,
        ))
        .first(conn)
        .optional()?;
    let Some((sid, csrf, last_seen, user_id, display_name, email, role, disabled, reverify, mfa_passed)) = row else {
        return Ok(None);
    };
    if disabled {
        return Ok(None);
    }
    if now - last_seen > idle_micros {
        super::sessions::revoke(conn, &sid, "idle_timeout")?;
        return Ok(None);
    }
    if now - last_seen > TOUCH_EVERY {
        diesel::update(bs::table.find(&hash)).set(bs::last_seen_at.eq(now)).execute(conn)?;
    }
    Ok(Some(BrowserSession { user_id, display_name, email, role, sid, csrf, reverify, mfa_passed }))
}

/// Whether `given` is the expected CSRF token (constant time).
pub fn csrf_ok(expected: &str, given: &str) -> bool {
    !expected.is_empty() && expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Starts a session of `user_id` (a `sessions` row living `ttl_secs`) with its browser half of
/// `kind`; returns the cookie secret. Shared by the console's and the web UI's sign-in.
/// `mfa_passed`: the sign-in passed a second factor.
pub async fn open(
    state: &crate::AppState,
    client: &crate::http::ClientInfo,
    user_id: &str,
    kind: &'static str,
    ttl_secs: u64,
    mfa_passed: bool,
) -> Result<String, crate::http::ApiError> {
    use crate::http::ApiError;
    let master = state.keys.hash_key;
    let uid = user_id.to_string();
    let (ip, ua) = (client.ip_string(), client.user_agent.clone());
    state
        .db
        .run(move |c| {
            // (sessions::create has its own transaction; a session row left without its browser
            // row by a failure here has no cookie and simply expires.)
            let new = super::sessions::NewSession { user_id: uid, ttl_secs, ip, user_agent: ua, mfa_passed };
            let (s, _refresh) = super::sessions::create(c, &master, new).map_err(ApiError::from)?;
            create(c, &master, &s.id, kind).map_err(ApiError::from)
        })
        .await
}

/// The double-submit token of sign-in forms (no session yet): the value of cookie `name`
/// (HttpOnly, SameSite=Strict, under `path`), set when missing.
pub fn pre_token(jar: &rocket::http::CookieJar<'_>, name: &'static str, path: &'static str, secure: bool) -> String {
    if let Some(c) = jar.get(name).filter(|c| c.value().len() >= 32) {
        return c.value().to_string();
    }
    let t = random_token(32);
    jar.add(
        rocket::http::Cookie::build((name, t.clone()))
            .http_only(true)
            .same_site(rocket::http::SameSite::Strict)
            .path(path)
            .secure(secure)
            .build(),
    );
    t
}
