//! Presence across nodes (PostgreSQL).
//!
//! Each node knows the devices connected to it ([`super::hub::Hub::presence`]). With several
//! nodes a user may have a phone on one and a laptop on another, so each node writes its own
//! view of every user it has connections for into `presence` (one row per user and node;
//! none when offline there) and the presence others see is the best of the fresh rows:
//! online if any device anywhere is active, away if all are away, offline with none.
//!
//! Each node refreshes its rows every `realtime.presence_heartbeat_secs` (30 s); rows older
//! than three of those ([`stale_after`]) belong to a node that died and are swept by whichever
//! node sees them first, which then announces the new presence of those users to their
//! contacts. SQLite installations are one process: the hub's own view is the whole truth there
//! and nothing is written.

use std::collections::HashMap;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::hub::Presence;
use crate::db::schema::presence as pr;
use crate::db::DbConnection;

/// How long a row counts without being refreshed: three heartbeats
/// (`realtime.presence_heartbeat_secs`), so one late or failed refresh does not drop anyone.
pub fn stale_after(cfg: &crate::config::RealtimeConfig) -> Duration {
    Duration::from_secs(cfg.presence_heartbeat_secs.saturating_mul(3))
}

fn parse(s: &str) -> Presence {
    match s {
        "online" => Presence::Online,
        "away" => Presence::Away,
        _ => Presence::Offline,
    }
}

/// The presence of a user whose devices report these states.
pub fn best(states: impl IntoIterator<Item = Presence>) -> Presence {
    let mut out = Presence::Offline;
    for p in states {
        match p {
            Presence::Online => return Presence::Online,
            Presence::Away => out = Presence::Away,
            Presence::Offline => {}
        }
    }
    out
}

fn stale_before(now: i64, stale: Duration) -> i64 {
    now - stale.as_micros() as i64
}

/// Records this node's view of `user` and answers the user's presence across all nodes.
pub fn publish(
    conn: &mut DbConnection,
    node: &str,
    user: &str,
    here: Presence,
    now: i64,
    stale: Duration,
) -> QueryResult<Presence> {
    let DbConnection::Pg(pg) = conn else { return Ok(here) };
    if here == Presence::Offline {
        diesel::delete(pr::table.filter(pr::user_id.eq(user)).filter(pr::node_id.eq(node))).execute(pg)?;
    } else {
        diesel::insert_into(pr::table)
            .values((pr::user_id.eq(user), pr::node_id.eq(node), pr::status.eq(here.as_str()), pr::updated_at.eq(now)))
            .on_conflict((pr::user_id, pr::node_id))
            .do_update()
            .set((pr::status.eq(here.as_str()), pr::updated_at.eq(now)))
            .execute(pg)?;
    }
    Ok(lookup_pg(pg, &[user.to_string()], now, stale)?.remove(user).unwrap_or(Presence::Offline))
}

/// The presence across all nodes of each of `users` that is not offline.
pub fn lookup(
    conn: &mut DbConnection,
    users: &[String],
    now: i64,
    stale: Duration,
) -> QueryResult<HashMap<String, Presence>> {
    match conn {
        DbConnection::Pg(pg) => lookup_pg(pg, users, now, stale),
        _ => Ok(HashMap::new()),
    }
}

fn lookup_pg(
    pg: &mut PgConnection,
    users: &[String],
    now: i64,
    stale: Duration,
) -> QueryResult<HashMap<String, Presence>> {
    let mut out: HashMap<String, Vec<Presence>> = HashMap::new();
    for chunk in users.chunks(1000) {
        let rows: Vec<(String, String)> = pr::table
            .filter(pr::user_id.eq_any(chunk))
            .filter(pr::updated_at.ge(stale_before(now, stale)))
            .select((pr::user_id, pr::status))
            .load(pg)?;
        for (u, s) in rows {
            out.entry(u).or_default().push(parse(&s));
        }
    }
    Ok(out.into_iter().map(|(u, v)| (u, best(v))).filter(|(_, p)| *p != Presence::Offline).collect())
}

/// Refreshes this node's rows and sweeps the stale rows of dead nodes; answers the users whose
/// rows were swept (their presence may have changed).
pub fn heartbeat(conn: &mut DbConnection, node: &str, now: i64, stale: Duration) -> QueryResult<Vec<String>> {
    let DbConnection::Pg(pg) = conn else { return Ok(Vec::new()) };
    diesel::update(pr::table.filter(pr::node_id.eq(node))).set(pr::updated_at.eq(now)).execute(pg)?;
    let mut swept: Vec<String> = diesel::delete(pr::table.filter(pr::updated_at.lt(stale_before(now, stale))))
        .returning(pr::user_id)
        .get_results(pg)?;
    swept.sort();
    swept.dedup();
    Ok(swept)
}

/// Starts the heartbeat of this node (PostgreSQL only).
pub fn start(state: crate::AppState) {
    if state.db.backend() != crate::db::Backend::Postgres {
        return;
    }
    let every = Duration::from_secs(state.config.realtime.presence_heartbeat_secs);
    let stale = stale_after(&state.config.realtime);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let node = state.node_id.clone();
            match state.db.q(move |c| heartbeat(c, &node, crate::time::now_micros(), stale)).await {
                Ok(swept) => {
                    for user in swept {
                        super::ws::announce_presence_forced(&state, &user).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence heartbeat failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_device_decides() {
        assert_eq!(best([]), Presence::Offline);
        assert_eq!(best([Presence::Away, Presence::Offline]), Presence::Away);
        assert_eq!(best([Presence::Away, Presence::Online, Presence::Away]), Presence::Online);
        assert_eq!(parse("away"), Presence::Away);
        assert_eq!(parse("bogus"), Presence::Offline);
    }
}
