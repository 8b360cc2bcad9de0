//! Automatic responses to anomaly alerts (`[responses]` in `policies/security.toml`) and the
//! address block list they feed.
//!
//! * `block_ip` (rules about an address): every request from the address is answered 403
//!   `ip_blocked` with `Retry-After` until the block expires or an admin lifts it. Addresses in
//!   `never_block` (loopback by default) are never blocked automatically — the break-glass path.
//! * `revoke_sessions` (rules about a user): every session of the user ends at once; never
//!   applied to an administrator, so no rule can lock every admin out.
//! * `suspend_account` (rules about a user): the account is disabled pending an admin's review
//!   (`users.suspended_at`/`suspended_reason`) and its sessions end; sign-in answers 403
//!   `account_suspended`. Never applied to an administrator. Undo: enable the account.
//! * `force_mfa` (rules about a user, the only response allowed for `admin_new_location`):
//!   every live session of the user must be confirmed again (`POST /api/auth/reverify` with
//!   the second factor, or the password without MFA) before it can be used; until then the
//!   API answers 403 `mfa_reverify_required`. Undo: clear the demand.
//!
//! Every response and every lift is audited (`security.response`, `security.ip_unblock`). The
//! block list lives in `ip_blocks`; each node keeps a copy in memory, refreshed every
//! [`REFRESH`] and at once on its own changes, so a block holds across nodes within seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;

use diesel::prelude::*;
use serde::Serialize;
use serde_json::json;

use super::policy::{ResponseAction, ResponsePolicy};
use crate::audit::{NewAuditEntry, Outcome};
use crate::db::schema::{ip_blocks as ib, users};
use crate::db::DbConnection;
use crate::AppState;

/// How often each node re-reads the block list.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The active blocks of this node: address → end (µs).
#[derive(Debug, Default)]
pub struct Blocks {
    map: RwLock<HashMap<IpAddr, i64>>,
}

impl Blocks {
    /// Seconds left of a block of `ip` at `now`, if blocked.
    pub fn check(&self, ip: IpAddr, now: i64) -> Option<u64> {
        let until = *self.map.read().unwrap_or_else(|e| e.into_inner()).get(&ip)?;
        (until > now).then(|| ((until - now) as u64).div_ceil(1_000_000).max(1))
    }

    fn replace(&self, rows: Vec<(String, i64)>) {
        let mut m = HashMap::new();
        for (ip, until) in rows {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                let e = m.entry(ip).or_insert(until);
                *e = (*e).max(until);
            }
        }
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = m;
    }
}

/// An active or past block, as the console and `GET /api/admin/blocks` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BlockView {
    pub id: String,
    pub ip: String,
    pub reason: String,
    pub alert_id: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub lifted_at: Option<String>,
    pub lifted_by: Option<String>,
    pub active: bool,
}

type Row = (String, String, String, Option<String>, i64, i64, Option<i64>, Option<String>);

fn view(r: Row, now: i64) -> BlockView {
    let (id, ip, reason, alert_id, created, expires, lifted, lifted_by) = r;
    BlockView {
        id,
        ip,
        reason,
        alert_id,
        created_at: crate::time::micros_to_rfc3339(created),
        expires_at: crate::time::micros_to_rfc3339(expires),
        lifted_at: lifted.map(crate::time::micros_to_rfc3339),
        lifted_by,
        active: lifted.is_none() && expires > now,
    }
}

/// The newest `limit` blocks, active ones first.
pub fn list(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<BlockView>> {
    let now = crate::time::now_micros();
    let rows: Vec<Row> = ib::table
        .order(ib::created_at.desc())
        .limit(limit)
        .select((
            ib::id,
            ib::ip,
            ib::reason,
            ib::alert_id,
            ib::created_at,
            ib::expires_at,
            ib::lifted_at,
            ib::lifted_by,
        ))
        .load(conn)?;
    let mut v: Vec<BlockView> = rows.into_iter().map(|r| view(r, now)).collect();
    v.sort_by_key(|b| !b.active);
    Ok(v)
}

fn active(conn: &mut DbConnection, now: i64) -> QueryResult<Vec<(String, i64)>> {
    ib::table.filter(ib::lifted_at.is_null()).filter(ib::expires_at.gt(now)).select((ib::ip, ib::expires_at)).load(conn)
}

/// Re-reads the active blocks into this node's list.
pub fn refresh(state: &AppState, conn: &mut DbConnection) -> QueryResult<()> {
    let rows = active(conn, crate::time::now_micros())?;
    state.blocks.replace(rows);
    Ok(())
}

/// Blocks `ip` for `secs` (unless it is in `never_block`); returns the block id.
pub fn block(
    state: &AppState,
    conn: &mut DbConnection,
    ip: &str,
    secs: u64,
    reason: &str,
    alert_id: Option<&str>,
) -> QueryResult<Option<String>> {
    let Ok(addr) = ip.parse::<IpAddr>() else { return Ok(None) };
    if state.policy.responses.never_block.iter().any(|n| n.contains(&addr)) {
        tracing::warn!(%ip, reason, "not blocking an address in responses.never_block");
        return Ok(None);
    }
    let now = crate::time::now_micros();
    let id = uuid::Uuid::now_v7().to_string();
    diesel::insert_into(ib::table)
        .values((
            ib::id.eq(&id),
            ib::ip.eq(addr.to_string()),
            ib::reason.eq(reason),
            ib::alert_id.eq(alert_id),
            ib::created_at.eq(now),
            ib::expires_at.eq(now + secs as i64 * 1_000_000),
        ))
        .execute(conn)?;
    refresh(state, conn)?;
    Ok(Some(id))
}

/// Lifts block `id` (an admin's undo); false when it is not active.
pub fn lift(state: &AppState, conn: &mut DbConnection, id: &str, by: &str) -> QueryResult<bool> {
    let now = crate::time::now_micros();
    let n = diesel::update(ib::table.find(id).filter(ib::lifted_at.is_null()).filter(ib::expires_at.gt(now)))
        .set((ib::lifted_at.eq(now), ib::lifted_by.eq(by)))
        .execute(conn)?;
    refresh(state, conn)?;
    Ok(n > 0)
}

/// Lifts every active block of `ip` (or all when `None`): the CLI's break-glass.
pub fn lift_all(conn: &mut DbConnection, ip: Option<&str>, by: &str) -> QueryResult<usize> {
    let now = crate::time::now_micros();
    let mut q = diesel::update(ib::table).filter(ib::lifted_at.is_null()).filter(ib::expires_at.gt(now)).into_boxed();
    if let Some(ip) = ip {
        q = q.filter(ib::ip.eq(ip.to_string()));
    }
    q.set((ib::lifted_at.eq(now), ib::lifted_by.eq(by))).execute(conn)
}

/// Applies the configured response to an alert just raised by rule `kind` about `subject`.
pub fn respond(state: &AppState, conn: &mut DbConnection, kind: &str, subject: (&str, &str), alert_id: &str) {
    let p: &ResponsePolicy = &state.policy.responses;
    let r = match kind {
        "credential_stuffing" => &p.credential_stuffing,
        "exfiltration" => &p.exfiltration,
        "mass_sharing" => &p.mass_sharing,
        "refresh_token_reuse" => &p.refresh_token_reuse,
        "admin_new_location" => &p.admin_new_location,
        _ => return,
    };
    let done = act(state, conn, r.action, r.duration_secs, kind, subject, alert_id);
    match done {
        Ok(Some(details)) => {
            let mut d = details;
            d["rule"] = json!(kind);
            d["alert_id"] = json!(alert_id);
            d["action"] = json!(r.action);
            state.audit.record_blocking(
                NewAuditEntry::new(crate::audit::AuditAction::SecurityResponse, Outcome::Success)
                    .target(subject.0, subject.1.to_string())
                    .details(d),
            );
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, rule = kind, "automatic response failed"),
    }
}

/// Carries out one response; the audit details when something was done.
fn act(
    state: &AppState,
    conn: &mut DbConnection,
    action: ResponseAction,
    duration_secs: u64,
    kind: &str,
    subject: (&str, &str),
    alert_id: &str,
) -> QueryResult<Option<serde_json::Value>> {
    let user = subject.1;
    match (action, subject.0) {
        (ResponseAction::None, _) => Ok(None),
        (ResponseAction::BlockIp, "ip") => block(state, conn, user, duration_secs, kind, Some(alert_id))
            .map(|b| b.map(|id| json!({"block_id": id, "ip": user, "duration_secs": duration_secs}))),
        (ResponseAction::RevokeSessions, "user") => {
            let role: Option<String> = users::table.find(user).select(users::role).first(conn).optional()?;
            if role.as_deref() == Some("admin") {
                tracing::warn!(user, "not revoking an administrator's sessions automatically");
                return Ok(None);
            }
            let sids = crate::auth::sessions::revoke_all(conn, user, None, "security_response")?;
            state.sessions_revoked(&sids);
            Ok(Some(json!({"user_id": user, "sessions_revoked": sids.len()})))
        }
        (ResponseAction::SuspendAccount, "user") => {
            // `suspend` refuses administrators: no rule can lock every admin out.
            let done = crate::db::write_transaction(conn, |c| {
                if !crate::auth::users::suspend(c, user, kind)? {
                    return Ok(None);
                }
                crate::auth::sessions::revoke_all(c, user, None, "account_suspended").map(Some)
            })?;
            match done {
                Some(sids) => {
                    state.sessions_revoked(&sids);
                    Ok(Some(json!({"user_id": user, "suspended": true, "sessions_revoked": sids.len()})))
                }
                None => {
                    tracing::warn!(user, "not suspending: an administrator, already disabled, or unknown");
                    Ok(None)
                }
            }
        }
        (ResponseAction::ForceMfa, "user") => {
            let sids = crate::auth::sessions::require_reverify(conn, user)?;
            // Open WebSockets of these sessions close; reconnecting asks for the re-verification.
            state.sessions_revoked(&sids);
            Ok(Some(json!({"user_id": user, "sessions_to_reverify": sids.len()})))
        }
        _ => Ok(None),
    }
}

/// An account an automatic response holds: suspended, or with sessions waiting for
/// re-verification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HeldAccount {
    pub user_id: String,
    pub email: String,
    /// `suspended` or `reverify`.
    pub state: String,
    /// The rule that suspended the account (suspensions).
    pub rule: Option<String>,
    /// When it was suspended (suspensions).
    pub since: Option<String>,
    /// Live sessions waiting for re-verification (`reverify`).
    pub sessions: i64,
}

/// Accounts held by automatic responses, suspensions first.
pub fn held(conn: &mut DbConnection) -> QueryResult<Vec<HeldAccount>> {
    use crate::db::schema::sessions as st;
    let suspended: Vec<(String, String, Option<i64>, Option<String>)> = users::table
        .filter(users::suspended_at.is_not_null())
        .filter(users::disabled.eq(true))
        .order(users::suspended_at.desc())
        .limit(200)
        .select((users::id, users::email, users::suspended_at, users::suspended_reason))
        .load(conn)?;
    let mut out: Vec<HeldAccount> = suspended
        .into_iter()
        .map(|(user_id, email, at, rule)| HeldAccount {
            user_id,
            email,
            state: "suspended".into(),
            rule,
            since: at.map(crate::time::micros_to_rfc3339),
            sessions: 0,
        })
        .collect();
    let now = crate::time::now_micros();
    let waiting: Vec<(String, String)> = st::table
        .inner_join(users::table.on(users::id.eq(st::user_id)))
        .filter(st::reverify_required.eq(true))
        .filter(st::revoked_at.is_null())
        .filter(st::expires_at.gt(now))
        .filter(users::disabled.eq(false))
        .select((users::id, users::email))
        .order(users::id.asc())
        .limit(10_000)
        .load(conn)?;
    // Rows come ordered by user: count each run.
    let mut per_user: Vec<(String, String, i64)> = Vec::new();
    for (id, email) in waiting {
        match per_user.last_mut() {
            Some(last) if last.0 == id => last.2 += 1,
            _ => per_user.push((id, email, 1)),
        }
    }
    out.extend(per_user.into_iter().map(|(user_id, email, n)| HeldAccount {
        user_id,
        email,
        state: "reverify".into(),
        rule: None,
        since: None,
        sessions: n,
    }));
    Ok(out)
}

/// Keeps this node's block list fresh (blocks made or lifted on other nodes, expiries).
pub fn start(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        loop {
            tick.tick().await;
            let st = state.clone();
            let _ = st.db.clone().q(move |c| refresh(&st, c)).await;
        }
    });
}

// ---------- HTTP ----------

/// Where the HTTP layer routes a request from a blocked address.
pub const BLOCKED_PATH: &str = "/_seccollab/blocked";

/// Seconds left of the block of this request's address (set by the HTTP layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockedFor(pub Option<u64>);

/// The answer to every request from a blocked address: 403 `ip_blocked` with `Retry-After`.
#[rocket::get("/_seccollab/blocked")]
pub fn blocked(req: BlockedReq) -> crate::http::ApiError {
    blocked_error(req.0)
}

/// 403 `ip_blocked` for an address blocked for `secs` more seconds (HTTP requests and the
/// WebSocket's `send_message` both get it).
pub fn blocked_error(secs: u64) -> crate::http::ApiError {
    crate::http::ApiError {
        retry_after: Some(secs.max(1)),
        ..crate::http::ApiError::new(
            rocket::http::Status::Forbidden,
            "ip_blocked",
            format!("requests from your address are blocked for {} s after suspicious activity", secs.max(1)),
        )
    }
}

/// The block's remaining seconds, as the HTTP layer found them.
#[derive(Debug)]
pub struct BlockedReq(u64);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for BlockedReq {
    type Error = ();

    async fn from_request(req: &'r rocket::Request<'_>) -> rocket::request::Outcome<Self, ()> {
        rocket::request::Outcome::Success(BlockedReq(req.local_cache(BlockedFor::default).0.unwrap_or(1)))
    }
}

pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![list_blocks, lift_block, list_held]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeldList {
    pub accounts: Vec<HeldAccount>,
}

/// Accounts held by automatic responses: suspended ones (undo: `POST
/// /api/admin/users/{id}/enable`) and ones whose sessions wait for re-verification (undo:
/// `POST /api/admin/users/{id}/clear-reverify`). Admins.
#[utoipa::path(get, path = "/api/admin/responses/held", tag = "admin", responses((status = 200, body = HeldList), (status = 403)))]
#[rocket::get("/admin/responses/held")]
pub async fn list_held(
    state: &rocket::State<AppState>,
    _admin: crate::auth::AdminUser,
) -> crate::http::ApiResult<rocket::serde::json::Json<HeldList>> {
    let accounts = state.db.q(held).await?;
    Ok(rocket::serde::json::Json(HeldList { accounts }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlockList {
    pub blocks: Vec<BlockView>,
}

/// Blocked addresses, active first (admins).
#[utoipa::path(get, path = "/api/admin/blocks", tag = "admin", responses((status = 200, body = BlockList), (status = 403)))]
#[rocket::get("/admin/blocks")]
pub async fn list_blocks(
    state: &rocket::State<AppState>,
    _admin: crate::auth::AdminUser,
) -> crate::http::ApiResult<rocket::serde::json::Json<BlockList>> {
    let blocks = state.db.q(|c| list(c, 200)).await?;
    Ok(rocket::serde::json::Json(BlockList { blocks }))
}

/// Lifts a block before it expires (admins; the undo of an automatic response).
#[utoipa::path(delete, path = "/api/admin/blocks/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "block_not_found")))]
#[rocket::delete("/admin/blocks/<id>")]
pub async fn lift_block(
    state: &rocket::State<AppState>,
    client: crate::http::ClientInfo,
    admin: crate::auth::AdminUser,
    id: &str,
) -> crate::http::ApiResult<rocket::http::Status> {
    lift_as(state, &client, &admin.0.id, id).await?;
    Ok(rocket::http::Status::NoContent)
}

/// Lifts block `id` for admin `by` and audits it (API and console).
pub async fn lift_as(
    state: &AppState,
    client: &crate::http::ClientInfo,
    by: &str,
    id: &str,
) -> crate::http::ApiResult<()> {
    let (st, bid, who) = (state.clone(), id.to_string(), by.to_string());
    let lifted = state.db.q(move |c| lift(&st, c, &bid, &who)).await?;
    if !lifted {
        return Err(crate::http::ApiError::new(
            rocket::http::Status::NotFound,
            "block_not_found",
            "no active block with this id",
        ));
    }
    state
        .audit
        .record(
            crate::auth::routes::entry(crate::audit::AuditAction::SecurityIpUnblock, Outcome::Success, client)
                .actor(Some(by.to_string()))
                .target("ip_block", id.to_string()),
        )
        .await;
    Ok(())
}
