//! Multi-node fan-out over PostgreSQL `LISTEN/NOTIFY`.
//!
//! Notifications carry only keys, never event data: `seccollab_events` carries
//! `node\nuser:seq\n...` (sent inside the writing transaction, so it arrives only if the rows
//! committed), and each listening node re-reads the rows it has connections for. Payloads are
//! cut into chunks below PostgreSQL's 8000-byte limit. Ephemeral frames (typing, presence) go
//! on `seccollab_ephemeral` as small JSON; an oversized one is not sent across nodes.
//!
//! Sessions revoked or changed on one node (sign-out, disable, MFA turned off, a hold for
//! re-verification) go on `seccollab_sessions` as `node\nsid\n...`: every other node drops
//! them from its session cache and closes their WebSockets at once.
//!
//! A notification missed while the listener was reconnecting is not lost: after reconnecting
//! the node tells every local connection to catch up from the database by `seq` (and forgets
//! its whole session cache, so a missed revocation cannot outlive the reconnect).

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::hub::Hub;
use crate::db::{Db, DbConnection, DbError};

const EVENTS: &str = "seccollab_events";
const EPHEMERAL: &str = "seccollab_ephemeral";
const SESSIONS: &str = "seccollab_sessions";

/// What a node does with sessions another node revoked: forget them in its cache and close
/// their sockets (`None`: forget the whole cache).
pub type OnSessions = Arc<dyn Fn(Option<&[String]>) + Send + Sync>;
const MAX_PAYLOAD: usize = 7800;

/// Announces committed events to the other nodes (PostgreSQL only; SQLite is single-node).
pub fn announce(
    conn: &mut DbConnection,
    node_id: &str,
    delivery: &[(String, i64, &'static str, Arc<str>)],
) -> Result<(), DbError> {
    let DbConnection::Pg(pg) = conn else { return Ok(()) };
    let mut payload = String::with_capacity(MAX_PAYLOAD);
    for (user, seq, _, _) in delivery {
        let line = format!("\n{user}:{seq}");
        if payload.len() + line.len() > MAX_PAYLOAD {
            notify(pg, EVENTS, &payload)?;
            payload.clear();
        }
        if payload.is_empty() {
            payload.push_str(node_id);
        }
        payload.push_str(&line);
    }
    if !payload.is_empty() {
        notify(pg, EVENTS, &payload)?;
    }
    Ok(())
}

fn notify(pg: &mut PgConnection, channel: &str, payload: &str) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_notify($1, $2)").bind::<Text, _>(channel).bind::<Text, _>(payload).execute(pg)?;
    Ok(())
}

/// Sends an ephemeral frame for `to` to the other nodes (best effort).
pub fn announce_ephemeral(db: &Db, node_id: &str, to: &[String], frame: &str) {
    let payload = serde_json::json!({"n": node_id, "to": to, "f": frame}).to_string();
    if payload.len() > MAX_PAYLOAD {
        return;
    }
    let Ok(mut conn) = db.get() else { return };
    if let DbConnection::Pg(pg) = &mut *conn {
        if let Err(e) = notify(pg, EPHEMERAL, &payload) {
            tracing::warn!(error = %e, "could not announce an ephemeral event to other nodes");
        }
    }
}

/// Tells the other nodes that these sessions were revoked or changed (PostgreSQL only; after
/// the change committed). A failure is logged: the nodes' periodic checks remain.
pub fn announce_sessions(db: &Db, node_id: &str, sids: &[String]) {
    if sids.is_empty() {
        return;
    }
    let Ok(mut conn) = db.get() else {
        tracing::warn!("could not announce revoked sessions to other nodes: no database connection");
        return;
    };
    let DbConnection::Pg(pg) = &mut *conn else { return };
    let mut payload = String::from(node_id);
    for sid in sids {
        if payload.len() + sid.len() + 1 > MAX_PAYLOAD {
            if let Err(e) = notify(pg, SESSIONS, &payload) {
                tracing::warn!(error = %e, "could not announce revoked sessions to other nodes");
            }
            payload = String::from(node_id);
        }
        payload.push('\n');
        payload.push_str(sid);
    }
    if let Err(e) = notify(pg, SESSIONS, &payload) {
        tracing::warn!(error = %e, "could not announce revoked sessions to other nodes");
    }
}

/// Starts the listener thread of this node (PostgreSQL only).
pub fn start_listener(db: Db, url: String, hub: Arc<Hub>, node_id: String, on_sessions: OnSessions) {
    let spawned = std::thread::Builder::new().name("pg-listener".into()).spawn(move || {
        let mut first = true;
        loop {
            match PgConnection::establish(&url) {
                Ok(mut pg) => {
                    let listening = diesel::sql_query(format!("LISTEN {EVENTS}"))
                        .execute(&mut pg)
                        .and_then(|_| diesel::sql_query(format!("LISTEN {EPHEMERAL}")).execute(&mut pg))
                        .and_then(|_| diesel::sql_query(format!("LISTEN {SESSIONS}")).execute(&mut pg));
                    if let Err(e) = listening {
                        tracing::warn!(error = %e, "LISTEN failed; retrying");
                    } else {
                        if !first {
                            // Whatever was announced while we were away: re-read by seq, and
                            // check every session afresh.
                            hub.resync_all();
                            on_sessions(None);
                        }
                        first = false;
                        listen(&db, &mut pg, &hub, &node_id, &on_sessions);
                        tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot open the PostgreSQL notification connection"),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the PostgreSQL listener thread");
    }
}

/// Receives until the connection fails.
fn listen(db: &Db, pg: &mut PgConnection, hub: &Hub, node_id: &str, on_sessions: &OnSessions) {
    let mut last_check = Instant::now();
    loop {
        let mut got = false;
        let mut wanted: Vec<(String, i64)> = Vec::new();
        for n in pg.notifications_iter() {
            let Ok(n) = n else { return };
            got = true;
            if n.channel == EVENTS {
                let mut lines = n.payload.lines();
                if lines.next() == Some(node_id) {
                    continue; // our own
                }
                for l in lines {
                    if let Some((user, seq)) = l.rsplit_once(':') {
                        if let Ok(seq) = seq.parse::<i64>() {
                            if hub.is_connected(user) {
                                wanted.push((user.to_string(), seq));
                            }
                        }
                    }
                }
            } else if n.channel == SESSIONS {
                let mut lines = n.payload.lines();
                if lines.next() == Some(node_id) {
                    continue; // our own
                }
                let sids: Vec<String> = lines.filter(|l| !l.is_empty()).map(str::to_string).collect();
                on_sessions(Some(&sids));
            } else if n.channel == EPHEMERAL {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&n.payload) {
                    if v["n"].as_str() == Some(node_id) {
                        continue;
                    }
                    if let (Some(to), Some(f)) = (v["to"].as_array(), v["f"].as_str()) {
                        let frame: Arc<str> = f.into();
                        for u in to.iter().filter_map(|u| u.as_str()) {
                            hub.deliver_ephemeral(u, &frame);
                        }
                    }
                }
            }
        }
        if !wanted.is_empty() {
            if let Ok(mut conn) = db.get() {
                for (user, seq) in wanted {
                    match super::store::get(&mut conn, &user, seq) {
                        Ok(Some(e)) => hub.deliver_persisted(&user, e.seq, &e.name, &e.data),
                        Ok(None) => {} // pruned already
                        Err(e) => tracing::warn!(error = %e, "cannot read an announced event"),
                    }
                }
            }
        }
        if last_check.elapsed() > Duration::from_secs(5) {
            // notifications_iter does not report a dead socket; a query does.
            if diesel::sql_query("SELECT 1").execute(pg).is_err() {
                return;
            }
            last_check = Instant::now();
        }
        if !got {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
