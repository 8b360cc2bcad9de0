//! Request rate limits by route class, per credential and per client address (token buckets,
//! `[rate_limits]` in `policies/security.toml`). The HTTP layer checks every request before
//! routing; one over its budget is answered `429 rate_limited` with `Retry-After` and counted
//! in `/metrics` (`seccollab_rate_limited_total{class, scope}`).
//!
//! Classes: `auth` (sign-in, registration, MFA, refresh — by address only, there is no
//! credential yet), `upload` (file and media uploads), `admin` (`/api/admin`, `/admin`), `ws`
//! (WebSocket connects), `api` (everything else under `/api` and the web pages). Message sends
//! have their own per-user limiter (`messages.send_rate_per_sec`) and are not counted here.
//! Addresses in `responses.never_block` (loopback by default) have no per-address budget, so a
//! reverse proxy on the same machine must be listed in `server.trusted_proxies` (it should be
//! anyway).
//!
//! On SQLite (one process) the buckets live in memory. On PostgreSQL, where several nodes may
//! serve behind a balancer, the counts are shared: one row per budget key and minute in
//! `rate_counters`, incremented atomically (`INSERT … ON CONFLICT … DO UPDATE … RETURNING`),
//! refused above `max(per_minute, bucket size)` until the minute ends. If the database cannot
//! be asked, the request passes (the limits protect the service; they must not take it down).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The route classes, each with its own budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Auth,
    Upload,
    Admin,
    Ws,
    Api,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Auth => "auth",
            Class::Upload => "upload",
            Class::Admin => "admin",
            Class::Ws => "ws",
            Class::Api => "api",
        }
    }
}

/// One class's budgets: tokens per minute and bucket size, per credential and per address.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub per_user_per_minute: f64,
    pub per_ip_per_minute: f64,
    pub burst: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitPolicy {
    pub enabled: bool,
    pub auth: Limit,
    pub upload: Limit,
    pub admin: Limit,
    pub ws: Limit,
    pub api: Limit,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        let l = |u: f64, i: f64, b: f64| Limit { per_user_per_minute: u, per_ip_per_minute: i, burst: b };
        Self {
            enabled: true,
            auth: l(0.0, 120.0, 30.0),
            upload: l(6000.0, 12000.0, 1000.0),
            admin: l(1200.0, 6000.0, 300.0),
            ws: l(120.0, 1200.0, 60.0),
            api: l(6000.0, 12000.0, 1000.0),
        }
    }
}

impl RateLimitPolicy {
    fn limit(&self, c: Class) -> &Limit {
        match c {
            Class::Auth => &self.auth,
            Class::Upload => &self.upload,
            Class::Admin => &self.admin,
            Class::Ws => &self.ws,
            Class::Api => &self.api,
        }
    }
}

/// The class of a request, or `None` when it is not limited here.
pub fn classify(method: &str, path: &str) -> Option<Class> {
    let post = method == "POST";
    if path == "/api/health" || path == "/metrics" || path.starts_with("/assets/") || path.starts_with("/admin/assets/")
    {
        return None;
    }
    if path == "/api/messages/send" || (post && path.starts_with("/api/files/") && path.ends_with("/messages")) {
        return None; // the per-user send limiter
    }
    if post && (path == "/api/files/upload" || path == "/api/messages/upload") {
        return Some(Class::Upload);
    }
    if path.starts_with("/api/auth/")
        && post
        && ["login", "register", "verify-mfa", "refresh"].iter().any(|p| path == format!("/api/auth/{p}"))
    {
        return Some(Class::Auth);
    }
    if post
        && (path == "/login"
            || path == "/login/mfa"
            || path == "/register"
            || path == "/admin/login"
            || path == "/admin/mfa")
    {
        return Some(Class::Auth);
    }
    if path == "/ws" || path == "/admin/ws" {
        return Some(Class::Ws);
    }
    if path.starts_with("/api/admin/") || path.starts_with("/admin") {
        return Some(Class::Admin);
    }
    Some(Class::Api)
}

/// The buckets of this process.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(Class, String), (f64, Instant)>>,
    limited: Mutex<HashMap<(Class, &'static str), u64>>,
}

impl RateLimiter {
    fn take(&self, key: (Class, String), per_minute: f64, burst: f64) -> Result<(), u64> {
        if per_minute <= 0.0 {
            return Ok(());
        }
        let rate = per_minute / 60.0;
        let burst = burst.max(1.0);
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 200_000 {
            // Forget full buckets: they hold no information.
            b.retain(|(c, _), (t, at)| {
                let _ = c;
                *t + at.elapsed().as_secs_f64() * rate < burst
            });
        }
        let now = Instant::now();
        let (tokens, at) = b.get(&key).copied().unwrap_or((burst, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            b.insert(key, (tokens - 1.0, now));
            Ok(())
        } else {
            b.insert(key, (tokens, now));
            Err(((1.0 - tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Takes one request of `class` from the credential's and the address's budgets;
    /// `Err((seconds, scope))` when one is spent.
    pub fn check(
        &self,
        p: &RateLimitPolicy,
        class: Class,
        credential: Option<&str>,
        ip: Option<IpAddr>,
        ip_exempt: bool,
    ) -> Result<(), (u64, &'static str)> {
        if !p.enabled {
            return Ok(());
        }
        let l = p.limit(class);
        if let Some(c) = credential {
            // Keyed by a hash: the bucket map never holds a credential.
            let h = Sha256::digest(c.as_bytes());
            let key = format!("u:{}", h.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
            self.take((class, key), l.per_user_per_minute, l.burst).map_err(|s| self.count(class, "user", s))?;
        }
        if let (Some(ip), false) = (ip, ip_exempt) {
            self.take((class, format!("i:{ip}")), l.per_ip_per_minute, l.burst * 2.0)
                .map_err(|s| self.count(class, "ip", s))?;
        }
        Ok(())
    }

    /// Counts one refusal for `/metrics`.
    pub fn note_limited(&self, class: Class, scope: &'static str, secs: u64) -> (u64, &'static str) {
        self.count(class, scope, secs)
    }

    fn count(&self, class: Class, scope: &'static str, secs: u64) -> (u64, &'static str) {
        *self.limited.lock().unwrap_or_else(|e| e.into_inner()).entry((class, scope)).or_default() += 1;
        (secs, scope)
    }

    /// `seccollab_rate_limited_total` in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP seccollab_rate_limited_total Requests refused with 429 by route class and budget.\n# TYPE seccollab_rate_limited_total counter\n",
        );
        let m = self.limited.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = m.iter().collect();
        rows.sort_by_key(|((c, s), _)| (c.as_str(), *s));
        for ((c, s), n) in rows {
            out.push_str(&format!("seccollab_rate_limited_total{{class=\"{}\",scope=\"{s}\"}} {n}\n", c.as_str()));
        }
        out
    }
}

/// The budget keys of a request: `(key, limit per minute, scope)`.
pub fn shared_keys(
    p: &RateLimitPolicy,
    class: Class,
    credential: Option<&str>,
    ip: Option<IpAddr>,
    ip_exempt: bool,
) -> Vec<(String, i64, &'static str)> {
    let l = p.limit(class);
    let mut keys = Vec::new();
    if let Some(c) = credential.filter(|_| l.per_user_per_minute > 0.0) {
        let h = Sha256::digest(c.as_bytes());
        let k = format!("{}:u:{}", class.as_str(), h.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
        keys.push((k, l.per_user_per_minute.max(l.burst) as i64, "user"));
    }
    if let (Some(ip), false, true) = (ip, ip_exempt, l.per_ip_per_minute > 0.0) {
        keys.push((format!("{}:i:{ip}", class.as_str()), l.per_ip_per_minute.max(l.burst * 2.0) as i64, "ip"));
    }
    keys
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Counts one request against each shared key in this minute's window (PostgreSQL);
/// `Err((seconds to the next window, scope))` when a count passes its limit.
pub fn check_shared(
    conn: &mut crate::db::DbConnection,
    keys: &[(String, i64, &'static str)],
    now_secs: i64,
) -> diesel::QueryResult<Result<(), (u64, &'static str)>> {
    use diesel::sql_types::{BigInt, Text};
    use diesel::RunQueryDsl;
    let window = now_secs - now_secs.rem_euclid(60);
    for (key, limit, scope) in keys {
        let c: Count = diesel::sql_query(
            "INSERT INTO rate_counters (key, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (key, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count AS n",
        )
        .bind::<Text, _>(key)
        .bind::<BigInt, _>(window)
        .get_result(conn)?;
        if c.n > *limit {
            return Ok(Err(((window + 60 - now_secs).max(1) as u64, *scope)));
        }
    }
    Ok(Ok(()))
}

/// Deletes the counts of windows that ended (PostgreSQL), every minute.
pub fn start_cleanup(state: crate::AppState) {
    if state.db.backend() != crate::db::Backend::Postgres {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let before = (crate::time::now_micros() / 1_000_000) - 120;
            let _ = state
                .db
                .q(move |c| {
                    use crate::db::schema::rate_counters as rc;
                    use diesel::prelude::*;
                    diesel::delete(rc::table.filter(rc::window_start.lt(before))).execute(c)
                })
                .await;
        }
    });
}

/// Where the HTTP layer routes a request over its budget.
pub const LIMITED_PATH: &str = "/_seccollab/limited";

/// Seconds to wait, class and scope of a limited request (set by the HTTP layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitedFor(pub Option<(u64, &'static str, &'static str)>);

#[derive(Debug)]
pub struct LimitedReq(u64, &'static str, &'static str);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for LimitedReq {
    type Error = ();

    async fn from_request(req: &'r rocket::Request<'_>) -> rocket::request::Outcome<Self, ()> {
        let (s, c, scope) = req.local_cache(LimitedFor::default).0.unwrap_or((1, "api", "user"));
        rocket::request::Outcome::Success(LimitedReq(s, c, scope))
    }
}

/// The answer to a request over its budget: 429 `rate_limited` with `Retry-After`.
#[rocket::get("/_seccollab/limited")]
pub fn limited(req: LimitedReq) -> crate::http::ApiError {
    let who = if req.2 == "ip" { "from your address" } else { "for your account" };
    crate::http::ApiError {
        retry_after: Some(req.0),
        ..crate::http::ApiError::new(
            rocket::http::Status::TooManyRequests,
            "rate_limited",
            format!("too many {} requests {who}; try again in {} s", req.1, req.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify("POST", "/api/auth/login"), Some(Class::Auth));
        assert_eq!(classify("POST", "/login"), Some(Class::Auth));
        assert_eq!(classify("GET", "/api/auth/me"), Some(Class::Api));
        assert_eq!(classify("POST", "/api/files/upload"), Some(Class::Upload));
        assert_eq!(classify("GET", "/ws"), Some(Class::Ws));
        assert_eq!(classify("GET", "/api/admin/logs"), Some(Class::Admin));
        assert_eq!(classify("POST", "/admin/users"), Some(Class::Admin));
        assert_eq!(classify("POST", "/api/messages/send"), None);
        assert_eq!(classify("GET", "/api/health"), None);
    }

    #[test]
    fn buckets_refill_and_keep_users_apart() {
        let p = RateLimitPolicy {
            api: Limit { per_user_per_minute: 60.0, per_ip_per_minute: 0.0, burst: 3.0 },
            ..RateLimitPolicy::default()
        };
        let r = RateLimiter::default();
        for _ in 0..3 {
            assert!(r.check(&p, Class::Api, Some("alice"), None, false).is_ok());
        }
        let (secs, scope) = r.check(&p, Class::Api, Some("alice"), None, false).unwrap_err();
        assert_eq!((secs, scope), (1, "user"));
        assert!(r.check(&p, Class::Api, Some("bob"), None, false).is_ok(), "another user has their own budget");
        assert!(r.render().contains("seccollab_rate_limited_total{class=\"api\",scope=\"user\"} 1"));
    }
}
