//! Sign-in throttling: per-account lockout with growing durations and per-IP exponential
//! back-off, kept in the database (`login_throttle`) so every node and restart sees the same.
//! Keys are `acct:<email>` (also for unknown emails, so a lock reveals nothing) and `ip:<addr>`
//! (IPv6 addresses by their /64: one host usually holds a whole /64, so counting single
//! addresses would give it 2^64 fresh buckets).
//!
//! Every secret check counts here (passwords, second factors, re-verification; see
//! `auth::secrets`), and only a *complete* sign-in clears an account's counter: a correct
//! password followed by a second-factor step does not, so asking for fresh challenges never
//! buys new guesses. Failures are counted inside a write transaction that holds the account's
//! row (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock on the key),
//! so parallel failures are never lost.

use diesel::prelude::*;

use super::policy::LockoutPolicy;
use crate::db::schema::login_throttle as lt;
use crate::db::DbConnection;

pub fn account_key(email: &str) -> String {
    format!("acct:{}", email.trim().to_lowercase())
}

/// The back-off bucket of an address: IPv4 (and IPv4-mapped IPv6) by address, IPv6 by /64.
pub fn ip_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let net = ipnet::Ipv6Net::new(v6, 64).map(|n| n.trunc()).expect("64 is a valid prefix");
                format!("ip:{net}")
            }
        },
        Ok(std::net::IpAddr::V4(v4)) => format!("ip:{v4}"),
        Err(_) => format!("ip:{ip}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The account is locked for this many more seconds (423).
    AccountLocked(u64),
    /// This client must wait this many more seconds (429).
    IpBackoff(u64),
}

#[derive(Debug, Queryable, Insertable, AsChangeset, Clone)]
#[diesel(table_name = lt)]
struct Row {
    key: String,
    failures: i32,
    lock_count: i32,
    locked_until: i64,
    last_failure_at: i64,
}

const MICROS: i64 = 1_000_000;

fn load(conn: &mut DbConnection, key: &str, p: &LockoutPolicy, now: i64) -> QueryResult<Row> {
    let row: Option<Row> = lt::table.find(key).first(conn).optional()?;
    Ok(match row {
        // Forgotten after a quiet window, unless still locked.
        Some(r) if now - r.last_failure_at <= p.window_secs as i64 * MICROS || r.locked_until > now => r,
        _ => Row { key: key.to_string(), failures: 0, lock_count: 0, locked_until: 0, last_failure_at: 0 },
    })
}

fn save(conn: &mut DbConnection, r: &Row) -> QueryResult<()> {
    let n = diesel::update(lt::table.find(&r.key)).set(r).execute(conn)?;
    if n == 0 {
        diesel::insert_into(lt::table).values(r).execute(conn)?;
    }
    Ok(())
}

fn ceil_secs(micros: i64) -> u64 {
    ((micros + MICROS - 1) / MICROS).max(1) as u64
}

fn ip_wait_micros(p: &LockoutPolicy, failures: i32) -> i64 {
    let over = failures as i64 - p.ip_free_failures as i64;
    if over < 0 {
        return 0;
    }
    let secs = 1i64.checked_shl(over.min(30) as u32).unwrap_or(i64::MAX).min(p.ip_max_backoff_secs as i64);
    secs * MICROS
}

/// May this sign-in attempt proceed?
pub fn check(
    conn: &mut DbConnection,
    p: &LockoutPolicy,
    acct: &str,
    ip: Option<&str>,
    now: i64,
) -> QueryResult<Verdict> {
    if let Some(ip) = ip {
        let r = load(conn, &ip_key(ip), p, now)?;
        let until = r.last_failure_at + ip_wait_micros(p, r.failures);
        if r.failures as i64 >= p.ip_free_failures as i64 && until > now {
            return Ok(Verdict::IpBackoff(ceil_secs(until - now)));
        }
    }
    let r = load(conn, &account_key(acct), p, now)?;
    if r.locked_until > now {
        return Ok(Verdict::AccountLocked(ceil_secs(r.locked_until - now)));
    }
    Ok(Verdict::Allowed)
}

/// Serialises the writers of `key` until the running transaction ends (PostgreSQL; on SQLite
/// the `BEGIN IMMEDIATE` of [`crate::db::write_transaction`] already does).
fn hold(conn: &mut DbConnection, key: &str) -> QueryResult<()> {
    if let DbConnection::Pg(_) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind::<diesel::sql_types::Text, _>(format!("login_throttle:{key}"))
            .execute(conn)?;
    }
    Ok(())
}

/// Counts a failure; returns the lock duration in seconds when this failure locked the account.
/// Atomic: parallel failures each count.
pub fn record_failure(
    conn: &mut DbConnection,
    p: &LockoutPolicy,
    acct: &str,
    ip: Option<&str>,
    now: i64,
) -> QueryResult<Option<u64>> {
    crate::db::write_transaction(conn, |c| {
        if let Some(ip) = ip {
            hold(c, &ip_key(ip))?;
        }
        hold(c, &account_key(acct))?;
        count_failure(c, p, acct, ip, now)
    })
}

fn count_failure(
    conn: &mut DbConnection,
    p: &LockoutPolicy,
    acct: &str,
    ip: Option<&str>,
    now: i64,
) -> QueryResult<Option<u64>> {
    if let Some(ip) = ip {
        let mut r = load(conn, &ip_key(ip), p, now)?;
        r.failures = r.failures.saturating_add(1);
        r.last_failure_at = now;
        save(conn, &r)?;
    }
    let mut r = load(conn, &account_key(acct), p, now)?;
    r.failures += 1;
    r.last_failure_at = now;
    let mut locked = None;
    if r.failures >= p.max_failures as i32 {
        r.lock_count += 1;
        r.failures = 0;
        let secs = p.first_lock_secs.saturating_mul(1u64 << (r.lock_count - 1).clamp(0, 20)).min(p.max_lock_secs);
        r.locked_until = now + secs as i64 * MICROS;
        locked = Some(secs);
    }
    save(conn, &r)?;
    Ok(locked)
}

/// A complete sign-in (every factor the account has) clears the account's counters (not the
/// IP's: one valid account must not let an attacker reset the back-off they earned guessing
/// others). Never call it after a password step that still asks for a second factor.
pub fn record_success(conn: &mut DbConnection, acct: &str) -> QueryResult<()> {
    diesel::delete(lt::table.find(account_key(acct))).execute(conn)?;
    Ok(())
}

/// Admin unlock.
pub fn unlock(conn: &mut DbConnection, acct: &str) -> QueryResult<bool> {
    Ok(diesel::delete(lt::table.find(account_key(acct))).execute(conn)? > 0)
}

/// When the account is locked until (microseconds), if it is.
pub fn locked_until(conn: &mut DbConnection, acct: &str, now: i64) -> QueryResult<Option<i64>> {
    let r: Option<Row> = lt::table.find(account_key(acct)).first(conn).optional()?;
    Ok(r.map(|r| r.locked_until).filter(|u| *u > now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_their_64_bucket() {
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(ip_key("2001:db8:1:2:ffff:1:2:3"), ip_key("2001:db8:1:2::9"));
        assert_ne!(ip_key("2001:db8:1:3::1"), ip_key("2001:db8:1:2::1"));
        assert_eq!(ip_key("::ffff:192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(ip_key("192.0.2.7"), "ip:192.0.2.7");
    }

    #[test]
    fn ip_wait_doubles_and_caps() {
        let p = LockoutPolicy::default();
        assert_eq!(ip_wait_micros(&p, 9), 0);
        assert_eq!(ip_wait_micros(&p, 10), MICROS);
        assert_eq!(ip_wait_micros(&p, 12), 4 * MICROS);
        assert_eq!(ip_wait_micros(&p, 60), 30 * MICROS);
    }
}
