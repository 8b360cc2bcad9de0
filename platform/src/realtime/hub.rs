//! The hub: this node's live WebSocket connections by user, delivery to them, and presence.
//!
//! Each connection has a bounded queue. Delivery never waits: when a connection's queue is
//! full, a persisted event is not queued but the connection is marked *lagged* and catches up
//! from the database once it has drained (the event is stored, so nothing is lost and memory
//! stays bounded); an ephemeral one (typing) is dropped. A client that stops reading
//! altogether is cut off by the write timeout of its connection task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a connection task is handed.
#[derive(Debug, Clone)]
pub enum Out {
    /// A stored event: sent unless the connection already sent that `seq`.
    Persisted { seq: i64, frame: Arc<str> },
    /// Typing, presence: sent if there is room, never replayed.
    Ephemeral(Arc<str>),
    /// Catch up from the database (after this node missed notifications).
    Resync,
}

/// Why a connection was told to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    None = 0,
    SessionRevoked = 1,
    Shutdown = 2,
}

/// The hub's side of one connection.
#[derive(Debug)]
pub struct ConnHandle {
    pub id: u64,
    pub user_id: String,
    pub sid: String,
    tx: mpsc::Sender<Out>,
    /// Set when a persisted event could not be queued; the task then catches up from the DB.
    pub lagged: AtomicBool,
    away: AtomicBool,
    pub kick: CancellationToken,
    kick_reason: AtomicU8,
}

impl ConnHandle {
    pub fn kick(&self, why: Kick) {
        self.kick_reason.store(why as u8, Ordering::Relaxed);
        self.kick.cancel();
    }

    pub fn kick_reason(&self) -> Kick {
        match self.kick_reason.load(Ordering::Relaxed) {
            1 => Kick::SessionRevoked,
            2 => Kick::Shutdown,
            _ => Kick::None,
        }
    }
}

/// A user's presence as others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Away,
    Offline,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }
}

/// Figures for `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct HubStats {
    pub connections: AtomicU64,
    pub delivered: AtomicU64,
    pub lagged: AtomicU64,
    pub dropped_ephemeral: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Hub {
    conns: RwLock<HashMap<String, Vec<Arc<ConnHandle>>>>,
    next_id: AtomicU64,
    /// The presence last announced per user (absent = offline).
    announced: Mutex<HashMap<String, Presence>>,
    pub stats: HubStats,
}

impl Hub {
    /// Adds a connection; returns its handle and the queue its task reads.
    pub fn register(&self, user_id: &str, sid: &str, queue: usize) -> (Arc<ConnHandle>, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let h = Arc::new(ConnHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user_id: user_id.to_string(),
            sid: sid.to_string(),
            tx,
            lagged: AtomicBool::new(false),
            away: AtomicBool::new(false),
            kick: CancellationToken::new(),
            kick_reason: AtomicU8::new(0),
        });
        self.conns.write().unwrap_or_else(|e| e.into_inner()).entry(user_id.to_string()).or_default().push(h.clone());
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        (h, rx)
    }

    pub fn unregister(&self, h: &ConnHandle) {
        let mut map = self.conns.write().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = map.get_mut(&h.user_id) {
            v.retain(|c| c.id != h.id);
            if v.is_empty() {
                map.remove(&h.user_id);
            }
        }
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Hands a stored event to every connection of `user` on this node.
    pub fn deliver_persisted(&self, user: &str, seq: i64, name: &str, data: &str) {
        let map = self.conns.read().unwrap_or_else(|e| e.into_inner());
        let Some(conns) = map.get(user) else { return };
        let frame: Arc<str> = super::frame(name, data, Some(seq)).into();
        for c in conns {
            match c.tx.try_send(Out::Persisted { seq, frame: frame.clone() }) {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !c.lagged.swap(true, Ordering::Relaxed) {
                        self.stats.lagged.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Hands an ephemeral frame to every connection of `user` on this node.
    pub fn deliver_ephemeral(&self, user: &str, frame: &Arc<str>) {
        let map = self.conns.read().unwrap_or_else(|e| e.into_inner());
        let Some(conns) = map.get(user) else { return };
        for c in conns {
            if c.tx.try_send(Out::Ephemeral(frame.clone())).is_err() {
                self.stats.dropped_ephemeral.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn is_connected(&self, user: &str) -> bool {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).contains_key(user)
    }

    /// Closes the connections of these sessions (logout, revocation, disable).
    pub fn close_sessions(&self, sids: &[String]) {
        let map = self.conns.read().unwrap_or_else(|e| e.into_inner());
        for c in map.values().flatten() {
            if sids.iter().any(|s| *s == c.sid) {
                c.kick(Kick::SessionRevoked);
            }
        }
    }

    /// Tells every connection to catch up from the database.
    pub fn resync_all(&self) {
        let map = self.conns.read().unwrap_or_else(|e| e.into_inner());
        for c in map.values().flatten() {
            if c.tx.try_send(Out::Resync).is_err() {
                c.lagged.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Closes every connection (server shutdown).
    pub fn close_all(&self) {
        let map = self.conns.read().unwrap_or_else(|e| e.into_inner());
        for c in map.values().flatten() {
            c.kick(Kick::Shutdown);
        }
    }

    pub fn set_away(&self, h: &ConnHandle, away: bool) {
        h.away.store(away, Ordering::Relaxed);
    }

    /// The presence of `user` from this node's connections: online if any device is active,
    /// away if all are away, offline with none.
    pub fn presence(&self, user: &str) -> Presence {
        let map = self.conns.read().unwrap_or_else(|e| e.into_inner());
        match map.get(user) {
            None => Presence::Offline,
            Some(v) if v.iter().all(|c| c.away.load(Ordering::Relaxed)) => Presence::Away,
            Some(_) => Presence::Online,
        }
    }

    /// Records `p` as announced for `user`; true when it differs from what was announced last.
    pub fn announce(&self, user: &str, p: Presence) -> bool {
        let mut a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        let before = a.get(user).copied().unwrap_or(Presence::Offline);
        if p == Presence::Offline {
            a.remove(user);
        } else {
            a.insert(user.to_string(), p);
        }
        before != p
    }

    pub fn connection_count(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }
}
