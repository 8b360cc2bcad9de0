//! Per-user bounds on uploads (`[upload]` in `policies/security.toml`):
//!
//! * **Parallel uploads** (`max_concurrent_per_user`): a slot is taken for each upload in
//!   flight. On SQLite (one process) the count lives in memory. On PostgreSQL it is shared by
//!   every node: a row in `upload_slots` per upload, taken under a per-user advisory lock, held
//!   by a lease the node renews while the upload runs — a node that dies leaves rows that stop
//!   counting when their lease runs out ([`LEASE`]).
//! * **Bandwidth** (`bandwidth_bytes_per_sec_per_user`): the request body of every upload of a
//!   user is read no faster than this, together (a GCRA token bucket per user and node; the
//!   first second's worth passes at once). Slowing the reads slows the client through TCP flow
//!   control; nothing is buffered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;

use crate::db::schema::upload_slots as us;
use crate::db::{Backend, Db, DbConnection};

/// How long a shared slot counts without renewal.
pub const LEASE: Duration = Duration::from_secs(120);
/// How often a running upload renews its slot.
const RENEW: Duration = Duration::from_secs(30);

/// Uploads in flight per user on this node (SQLite installations).
#[derive(Debug, Default)]
pub struct UploadSlots(Mutex<HashMap<String, u32>>);

/// A user's upload in flight; the slot is given back when it is dropped.
pub struct UploadSlot {
    local: Option<(Arc<UploadSlots>, String)>,
    shared: Option<(Db, String, tokio::task::JoinHandle<()>)>,
}

impl UploadSlots {
    fn take_local(self: &Arc<Self>, user: &str, max: u32) -> Option<UploadSlot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(user.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UploadSlot { local: Some((self.clone(), user.to_string())), shared: None })
    }
}

/// Takes a slot for `user` unless `max` are taken (on PostgreSQL: across all nodes).
pub async fn take(state: &crate::AppState, user: &str, max: u32) -> Result<Option<UploadSlot>, crate::db::DbError> {
    if state.db.backend() != Backend::Postgres {
        return Ok(state.upload_slots.take_local(user, max));
    }
    let (uid, id) = (user.to_string(), uuid::Uuid::now_v7().to_string());
    let id2 = id.clone();
    let taken = state.db.q(move |c| take_shared(c, &uid, &id2, max, crate::time::now_micros())).await?;
    if !taken {
        return Ok(None);
    }
    let (db, sid) = (state.db.clone(), id.clone());
    let renew = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW);
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = sid.clone();
            let until = crate::time::now_micros() + LEASE.as_micros() as i64;
            let _ = db.q(move |c| diesel::update(us::table.find(&s)).set(us::expires_at.eq(until)).execute(c)).await;
        }
    });
    Ok(Some(UploadSlot { local: None, shared: Some((state.db.clone(), id, renew)) }))
}

/// Counts the live slots of `user` and takes one (row `id`) when fewer than `max` are taken,
/// serialised per user by a transaction-scoped advisory lock (PostgreSQL).
pub fn take_shared(conn: &mut DbConnection, user: &str, id: &str, max: u32, now: i64) -> QueryResult<bool> {
    crate::db::write_transaction(conn, |c| {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind::<diesel::sql_types::Text, _>(format!("upload_slots:{user}"))
            .execute(c)?;
        diesel::delete(us::table.filter(us::user_id.eq(user)).filter(us::expires_at.lt(now))).execute(c)?;
        let n: i64 = us::table.filter(us::user_id.eq(user)).count().get_result(c)?;
        if n >= i64::from(max) {
            return Ok(false);
        }
        diesel::insert_into(us::table)
            .values((us::id.eq(id), us::user_id.eq(user), us::expires_at.eq(now + LEASE.as_micros() as i64)))
            .execute(c)?;
        Ok(true)
    })
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Some((slots, user)) = self.local.take() {
            let mut m = slots.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&user);
                }
            }
        }
        if let Some((db, id, renew)) = self.shared.take() {
            renew.abort();
            // Given back at once; if this fails (database gone), the lease runs out.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = db.q(move |c| diesel::delete(us::table.find(&id)).execute(c)).await;
                });
            }
        }
    }
}

/// Paces the upload bodies of each user (this node): a GCRA bucket per user.
#[derive(Debug, Default)]
pub struct UploadPace(Mutex<HashMap<String, Instant>>);

/// The burst a user's uploads may take at once, in time at the configured rate.
const BURST: Duration = Duration::from_secs(1);

impl UploadPace {
    /// How long to wait before reading `n` more bytes of `user`'s uploads at `rate` bytes/s
    /// (0: no limit), `now` being the current instant.
    pub fn delay(&self, user: &str, n: usize, rate: u64, now: Instant) -> Option<Duration> {
        if rate == 0 || n == 0 {
            return None;
        }
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 10_000 {
            m.retain(|_, tat| *tat > now);
        }
        let tat = m.get(user).copied().unwrap_or(now).max(now);
        let next = tat + Duration::from_secs_f64(n as f64 / rate as f64);
        m.insert(user.to_string(), next);
        let wait = next.saturating_duration_since(now);
        (wait > BURST).then(|| wait - BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_lets_a_second_through_then_holds_the_rate() {
        let p = UploadPace::default();
        let t0 = Instant::now();
        // 1000 B/s: the first second's worth passes at once…
        assert_eq!(p.delay("u", 1000, 1000, t0), None);
        // …then each 500 B waits half a second more.
        assert_eq!(p.delay("u", 500, 1000, t0), Some(Duration::from_millis(500)));
        assert_eq!(p.delay("u", 500, 1000, t0), Some(Duration::from_millis(1000)));
        // Another user is not held by the first.
        assert_eq!(p.delay("v", 800, 1000, t0), None);
        // After idling, the bucket is full again (no credit beyond one second).
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.delay("u", 1000, 1000, later), None);
        assert_eq!(p.delay("u", 1000, 1000, later), Some(Duration::from_secs(1)));
        // No limit configured: never waits.
        assert_eq!(p.delay("w", 1 << 30, 0, t0), None);
    }

    #[test]
    fn local_slots_are_given_back_when_dropped() {
        let s = Arc::new(UploadSlots::default());
        let a = s.take_local("u", 2).unwrap();
        let _b = s.take_local("u", 2).unwrap();
        assert!(s.take_local("u", 2).is_none());
        assert!(s.take_local("v", 2).is_some(), "per user");
        drop(a);
        assert!(s.take_local("u", 2).is_some());
    }
}
