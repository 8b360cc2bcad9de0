//! Server-side sessions and refresh tokens.
//!
//! A session is one sign-in. Access tokens name it (`sid`) and the guards check it on every
//! request (through a cache of a few seconds that this node clears on revocation), so logout,
//! password change, disable and MFA reset take effect at once. Refresh tokens are stored as
//! keyed hashes, rotated on every use; presenting a spent one revokes the whole session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::prelude::*;

use crate::crypto::{keyed_hash, random_token};
use crate::db::schema::{refresh_tokens as rt, sessions as st, users};
use crate::db::DbConnection;

const CACHE_TTL: Duration = Duration::from_secs(5);
const REFRESH_PURPOSE: &str = "refresh";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = st)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The sign-in passed a second factor.
    pub mfa_passed: bool,
}

/// What the guards need to know about a live session.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub user_id: String,
    pub role: String,
    /// An automatic response (`force_mfa`) asks this session to be confirmed again before use.
    pub reverify: bool,
    /// The sign-in passed a second factor: the admin API and console require it.
    pub mfa_passed: bool,
}

/// Per-node cache of session checks.
#[derive(Debug, Default)]
pub struct SessionCache {
    map: Mutex<HashMap<String, (Instant, Option<LiveSession>)>>,
}

impl SessionCache {
    pub fn get(&self, sid: &str) -> Option<Option<LiveSession>> {
        let map = self.map.lock().ok()?;
        map.get(sid).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, s)| s.clone())
    }

    pub fn put(&self, sid: &str, s: Option<LiveSession>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() > 100_000 {
                map.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            }
            map.insert(sid.to_string(), (Instant::now(), s));
        }
    }

    pub fn forget(&self, sids: &[String]) {
        if let Ok(mut map) = self.map.lock() {
            for s in sids {
                map.remove(s);
            }
        }
    }

    /// Forgets every entry (after a missed revocation could have gone unheard).
    pub fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}

/// Looks a session up: live only when not revoked, not expired and its user not disabled.
pub fn live(conn: &mut DbConnection, sid: &str, now: i64) -> QueryResult<Option<LiveSession>> {
    let row: Option<(String, String, bool, bool, bool)> = st::table
        .inner_join(users::table.on(users::id.eq(st::user_id)))
        .filter(st::id.eq(sid))
        .filter(st::revoked_at.is_null())
        .filter(st::expires_at.gt(now))
        .select((st::user_id, users::role, users::disabled, st::reverify_required, st::mfa_passed))
        .first(conn)
        .optional()?;
    Ok(row.filter(|(_, _, disabled, _, _)| !disabled).map(|(user_id, role, _, reverify, mfa_passed)| LiveSession {
        user_id,
        role,
        reverify,
        mfa_passed,
    }))
}

/// The user's sessions no longer count as having passed a second factor (MFA turned off or
/// reset): an admin among them must sign in again through one. Returns their ids.
pub fn drop_mfa_passed(conn: &mut DbConnection, user_id: &str) -> QueryResult<Vec<String>> {
    let ids: Vec<String> =
        st::table.filter(st::user_id.eq(user_id)).filter(st::mfa_passed.eq(true)).select(st::id).load(conn)?;
    if !ids.is_empty() {
        diesel::update(st::table.filter(st::id.eq_any(&ids))).set(st::mfa_passed.eq(false)).execute(conn)?;
    }
    Ok(ids)
}

/// `force_mfa`: every live session of `user_id` must be confirmed again; returns their ids.
pub fn require_reverify(conn: &mut DbConnection, user_id: &str) -> QueryResult<Vec<String>> {
    let now = crate::time::now_micros();
    let ids: Vec<String> = st::table
        .filter(st::user_id.eq(user_id))
        .filter(st::revoked_at.is_null())
        .filter(st::expires_at.gt(now))
        .select(st::id)
        .load(conn)?;
    if !ids.is_empty() {
        diesel::update(st::table.filter(st::id.eq_any(&ids))).set(st::reverify_required.eq(true)).execute(conn)?;
    }
    Ok(ids)
}

/// Clears the re-verification demand of one session (`None`: of every session of `user_id`,
/// an admin's undo); returns the sessions cleared.
pub fn clear_reverify(conn: &mut DbConnection, user_id: &str, sid: Option<&str>) -> QueryResult<Vec<String>> {
    let mut q = st::table.filter(st::user_id.eq(user_id)).filter(st::reverify_required.eq(true)).into_boxed();
    if let Some(sid) = sid {
        q = q.filter(st::id.eq(sid));
    }
    let ids: Vec<String> = q.select(st::id).load(conn)?;
    if !ids.is_empty() {
        diesel::update(st::table.filter(st::id.eq_any(&ids))).set(st::reverify_required.eq(false)).execute(conn)?;
    }
    Ok(ids)
}

/// How many live sessions of `user_id` wait for re-verification.
pub fn reverify_pending(conn: &mut DbConnection, user_id: &str) -> QueryResult<i64> {
    st::table
        .filter(st::user_id.eq(user_id))
        .filter(st::revoked_at.is_null())
        .filter(st::expires_at.gt(crate::time::now_micros()))
        .filter(st::reverify_required.eq(true))
        .count()
        .get_result(conn)
}

/// How a session starts: who, for how long, from where, and whether the sign-in passed a
/// second factor.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: String,
    pub ttl_secs: u64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub mfa_passed: bool,
}

/// Creates a session and its first refresh token (returned in clear, stored hashed).
pub fn create(conn: &mut DbConnection, master: &[u8; 32], new: NewSession) -> QueryResult<(Session, String)> {
    let NewSession { user_id, ttl_secs, ip, user_agent, mfa_passed } = new;
    let now = crate::time::now_micros();
    let s = Session {
        id: uuid::Uuid::now_v7().to_string(),
        user_id,
        created_at: now,
        expires_at: now + ttl_secs as i64 * 1_000_000,
        revoked_at: None,
        revoked_reason: None,
        ip,
        user_agent: user_agent.map(|u| u.chars().take(512).collect()),
        mfa_passed,
    };
    let token = random_token(32);
    crate::db::write_transaction(conn, |conn| {
        diesel::insert_into(st::table).values(&s).execute(conn)?;
        diesel::insert_into(rt::table)
            .values((
                rt::token_hash.eq(keyed_hash(master, REFRESH_PURPOSE, &token)),
                rt::session_id.eq(&s.id),
                rt::created_at.eq(now),
            ))
            .execute(conn)
    })?;
    Ok((s, token))
}

/// Outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Refresh {
    /// Rotated: the new refresh token and the session's user.
    Rotated { session_id: String, user_id: String, refresh_token: String },
    /// Unknown, expired, or its session is revoked.
    Invalid,
    /// A spent token came back: the session has been revoked.
    Reused { session_id: String, user_id: String },
}

pub fn refresh(conn: &mut DbConnection, master: &[u8; 32], token: &str) -> QueryResult<Refresh> {
    let now = crate::time::now_micros();
    let hash = keyed_hash(master, REFRESH_PURPOSE, token);
    crate::db::write_transaction(conn, |conn| {
        let found: Option<(Option<i64>, Session)> = rt::table
            .inner_join(st::table.on(st::id.eq(rt::session_id)))
            .filter(rt::token_hash.eq(&hash))
            .select((rt::spent_at, Session::as_select()))
            .first(conn)
            .optional()?;
        let Some((spent, session)) = found else { return Ok(Refresh::Invalid) };
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Ok(Refresh::Invalid);
        }
        // Mark spent only if still unspent: two concurrent uses cannot both win.
        let won = spent.is_none()
            && diesel::update(rt::table.filter(rt::token_hash.eq(&hash)).filter(rt::spent_at.is_null()))
                .set(rt::spent_at.eq(now))
                .execute(conn)?
                == 1;
        if !won {
            revoke(conn, &session.id, "refresh_token_reuse")?;
            return Ok(Refresh::Reused { session_id: session.id, user_id: session.user_id });
        }
        let disabled: bool = users::table.find(&session.user_id).select(users::disabled).first(conn)?;
        if disabled {
            return Ok(Refresh::Invalid);
        }
        let new = random_token(32);
        diesel::insert_into(rt::table)
            .values((
                rt::token_hash.eq(keyed_hash(master, REFRESH_PURPOSE, &new)),
                rt::session_id.eq(&session.id),
                rt::created_at.eq(now),
            ))
            .execute(conn)?;
        Ok(Refresh::Rotated { session_id: session.id, user_id: session.user_id, refresh_token: new })
    })
}

pub fn revoke(conn: &mut DbConnection, sid: &str, reason: &str) -> QueryResult<()> {
    diesel::update(st::table.filter(st::id.eq(sid)).filter(st::revoked_at.is_null()))
        .set((st::revoked_at.eq(crate::time::now_micros()), st::revoked_reason.eq(reason)))
        .execute(conn)?;
    Ok(())
}

/// Revokes every live session of `user_id` except `keep`; returns the revoked ids.
pub fn revoke_all(
    conn: &mut DbConnection,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
) -> QueryResult<Vec<String>> {
    let ids: Vec<String> =
        st::table.filter(st::user_id.eq(user_id)).filter(st::revoked_at.is_null()).select(st::id).load(conn)?;
    let ids: Vec<String> = ids.into_iter().filter(|i| Some(i.as_str()) != keep).collect();
    if !ids.is_empty() {
        diesel::update(st::table.filter(st::id.eq_any(&ids)))
            .set((st::revoked_at.eq(crate::time::now_micros()), st::revoked_reason.eq(reason)))
            .execute(conn)?;
    }
    Ok(ids)
}
