//! `GET /ws`: one task per connection.
//!
//! The task sends what the hub queues for it (stored events in `seq` order, exactly once per
//! connection; ephemeral frames as they come), answers the client's frames (`typing_start`,
//! `typing_stop`, `user_away`, `user_active`, `resume`, `ping`, and on `/ws` `send_message`),
//! pings every
//! `heartbeat_secs` and closes after `idle_timeout_secs` without a frame from the client,
//! re-checks the session every `session_check_secs` (and at once when this node revokes it),
//! and gives up on a client that does not take a frame within `write_timeout_secs`.
//!
//! Ordering: the task remembers the last `seq` it sent. A stored event at or below it is a
//! duplicate and skipped; one past a gap (events from another node, a full queue) first makes
//! the task read the missing ones from the database. `resume {after}` replays from the
//! database. `?after=N` on the URL does the same before anything else is sent.
//!
//! `send_message {client_id?, receiver_id, content, type?}` stores a direct message exactly as
//! `POST /api/messages/send` does (same checks, same rate budget). The frames of one connection
//! are stored one after the other, in the order they came, so the receiver sees them in the
//! order they were typed; each gets one answer, in that order (`message_sent`, or an `error`
//! carrying the frame's `client_id`). Up to [`SEND_QUEUE`] may wait; then the task stops reading
//! the socket until one is answered (TCP pushes back on the client) while it keeps delivering.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocket::futures::future::BoxFuture;
use rocket::futures::stream::FuturesOrdered;
use rocket::futures::{FutureExt, SinkExt, StreamExt};
use rocket::{get, Shutdown, State};
use rocket_ws::frame::{CloseCode, CloseFrame};
use rocket_ws::stream::DuplexStream;
use rocket_ws::{Message, WebSocket};
use serde_json::json;

use super::hub::{ConnHandle, Kick, Out, Presence};
use super::{ephemeral, store};
use crate::audit::{NewAuditEntry, Outcome};
use crate::auth::WsUser;
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::AppState;

/// Events replayed per database read.
const REPLAY_PAGE: i64 = 500;
/// Who opened a connection, and whether it may send messages.
#[derive(Debug)]
pub struct Peer {
    /// Address, agent and upgrade request id, for the audit log.
    pub client: ClientInfo,
    /// `false`: the connection only listens (the admin console's); `send_message` is refused.
    pub may_send: bool,
    /// When the access token the connection was opened with expires (Unix seconds): sending
    /// stops then. `None` for the web UI's session cookie.
    pub send_until: Option<i64>,
    /// Opened with a browser session's cookie: its kind (`web`, `admin`) and idle timeout in
    /// seconds. The connection closes once that session has idled out, as its pages would.
    pub cookie: Option<(&'static str, u64)>,
}

/// Smallest limit on a client's frame; with `send_message` the limit grows with
/// `messages.max_content_chars` (see [`max_client_frame`]).
const MIN_CLIENT_FRAME: usize = 16 * 1024;
/// `send_message` frames waiting per connection before the task stops reading the socket.
pub const SEND_QUEUE: usize = 32;
/// Longest `client_id` a `send_message` frame may carry.
const MAX_CLIENT_ID: usize = 128;
/// How long a closing connection waits for its `send_message` frames to be stored.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Queued frames a connection takes in one turn before flushing (a bound, so a busy connection
/// still answers its own client's frames in between).
const OUT_BURST: usize = 64;

/// The largest frame a client may send: room for a `send_message` whose content has
/// `max_content_chars` characters, each escaped in JSON at its longest (a character outside
/// the BMP as a surrogate pair, `\ud83d\ude00`: 12 bytes).
fn max_client_frame(state: &AppState) -> usize {
    state.config.messages.max_content_chars.saturating_mul(12).saturating_add(4096).max(MIN_CLIENT_FRAME)
}

/// Opens a WebSocket for the signed-in user (token by `?token=` or bearer header).
#[get("/ws?<after>")]
pub async fn ws(
    state: &State<AppState>,
    user: WsUser,
    client: ClientInfo,
    socket: WebSocket,
    after: Option<&str>,
    shutdown: Shutdown,
) -> Result<rocket_ws::Channel<'static>, ApiError> {
    let after = match after.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::invalid("after", "must be a non-negative whole number"))?,
        ),
    };
    let cookie = user.1.is_none().then_some((crate::web::KIND, state.config.web.idle_timeout_secs));
    let peer = Peer { client, may_send: true, send_until: user.1, cookie };
    Ok(open_channel(state.inner().clone(), user.0.id, user.0.sid, socket, after, shutdown, peer).await)
}

/// The WebSocket of an authenticated user's session `sid`: `/ws` (token) and the admin
/// console's `/admin/ws` (console cookie) both end here.
pub async fn open_channel(
    state: AppState,
    user_id: String,
    sid: String,
    socket: WebSocket,
    after: Option<i64>,
    shutdown: Shutdown,
    peer: Peer,
) -> rocket_ws::Channel<'static> {
    let limit = if peer.may_send { max_client_frame(&state) } else { MIN_CLIENT_FRAME };
    let cfg = rocket_ws::Config { max_message_size: Some(limit), max_frame_size: Some(limit), ..Default::default() };
    // Registered with the hub, and the counter read, before the 101 answer goes out: a client
    // that sees the upgrade succeed gets every event committed after it, live. (Registering
    // inside the channel, after the answer, left a window in which an event was neither queued
    // nor below the counter's reading.) If the upgrade never completes, the guard unregisters.
    let reg = Registration::new(&state, &user_id, &sid).await;
    socket.config(cfg).channel(move |stream| {
        Box::pin(async move {
            let mut conn = Connection::open(state, user_id, sid, stream, reg, peer);
            conn.run(after, shutdown).await;
            conn.close().await;
            Ok(())
        })
    })
}

/// A hub registration made before the WebSocket handshake completes; unregistered on drop
/// unless a [`Connection`] took it over.
struct Registration {
    hub: Arc<super::hub::Hub>,
    handle: Arc<ConnHandle>,
    rx: Option<tokio::sync::mpsc::Receiver<Out>>,
    last: i64,
    armed: bool,
}

impl Registration {
    async fn new(state: &AppState, user_id: &str, sid: &str) -> Self {
        // Register before reading the counter: an event committed in between is then queued
        // (and skipped as a duplicate if the counter already covers it), never missed.
        let (handle, rx) = state.hub.register(user_id, sid, state.config.realtime.queue_capacity);
        let mut reg = Self { hub: state.hub.clone(), handle, rx: Some(rx), last: 0, armed: true };
        let uid = user_id.to_string();
        reg.last = state.db.q(move |c| store::last_seq(c, &uid)).await.unwrap_or(0);
        reg
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.armed {
            self.hub.unregister(&self.handle);
        }
    }
}

#[derive(Debug)]
enum Stop {
    ClientClosed,
    Idle,
    TooSlow,
    Revoked,
    Shutdown,
}

struct Connection {
    state: AppState,
    user_id: String,
    sid: String,
    stream: DuplexStream,
    handle: Arc<ConnHandle>,
    rx: tokio::sync::mpsc::Receiver<Out>,
    /// The last stored `seq` sent on this connection.
    last: i64,
    /// `last` when the connection opened: a `resume` below it after live events went out
    /// replays only what precedes them.
    live_from: i64,
    sent_stored: bool,
    typing: HashMap<String, Instant>,
    typing_targets: HashMap<String, bool>,
    bucket: (f64, Instant),
    stop: Option<Stop>,
    /// Who is connected and whether they may send.
    peer: Arc<Peer>,
    /// `send_message` frames read and not yet being stored, oldest first.
    waiting: VecDeque<serde_json::Value>,
    /// The `send_message` frame being stored (at most one: frames are stored in order).
    pending: FuturesOrdered<BoxFuture<'static, Answer>>,
    /// Frames written to the socket's buffer and not yet flushed ([`Connection::flush`]).
    unflushed: bool,
    /// Accepted sends not yet audited.
    accepted: Accepted,
}

/// What a `send_message` frame gets back.
struct Answer {
    frame: String,
    /// The session was found revoked: the connection closes after this answer.
    revoked: bool,
    /// What the audit log is to hold of the frame.
    audit: SendAudit,
}

impl Connection {
    fn open(
        state: AppState,
        user_id: String,
        sid: String,
        stream: DuplexStream,
        mut reg: Registration,
        peer: Peer,
    ) -> Self {
        // From here `close` unregisters.
        reg.armed = false;
        let (handle, rx, last) = (reg.handle.clone(), reg.rx.take().expect("receiver taken once"), reg.last);
        Self {
            state,
            user_id,
            sid,
            stream,
            handle,
            rx,
            last,
            live_from: last,
            sent_stored: false,
            typing: HashMap::new(),
            typing_targets: HashMap::new(),
            bucket: (TYPING_BURST, Instant::now()),
            stop: None,
            peer: Arc::new(peer),
            waiting: VecDeque::new(),
            pending: FuturesOrdered::new(),
            unflushed: false,
            accepted: Accepted::default(),
        }
    }

    async fn run(&mut self, after: Option<i64>, mut shutdown: Shutdown) {
        if let Some(n) = after {
            self.resume(n).await;
        }
        // One contacts lookup serves both: announce this user, and show them their contacts.
        let uid = self.user_id.clone();
        let contacts = self.state.db.q(move |c| crate::messages::contacts(c, &uid)).await.unwrap_or_default();
        announce_presence_to(&self.state, &self.user_id, Some(contacts.clone())).await;
        self.send_contacts_presence(contacts).await;
        let rt = self.state.config.realtime.clone();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(rt.heartbeat_secs.max(1)));
        heartbeat.tick().await;
        let mut session_check = tokio::time::interval(Duration::from_secs(rt.session_check_secs.max(1)));
        session_check.tick().await;
        let mut typing_tick = tokio::time::interval(Duration::from_millis(500));
        let idle = Duration::from_secs(rt.idle_timeout_secs.max(1));
        let mut last_heard = Instant::now();
        let kick = self.handle.kick.clone();
        self.flush().await; // what resume and the contacts' presence queued
        while self.stop.is_none() {
            tokio::select! {
                biased;
                _ = kick.cancelled() => {
                    self.stop = Some(match self.handle.kick_reason() {
                        Kick::SessionRevoked => Stop::Revoked,
                        _ => Stop::Shutdown,
                    });
                }
                _ = &mut shutdown => self.stop = Some(Stop::Shutdown),
                Some(answer) = self.pending.next(), if !self.pending.is_empty() => self.on_answer(answer).await,
                // With SEND_QUEUE sends waiting, the socket is not read until one is answered.
                msg = self.stream.next(), if self.waiting.len() < SEND_QUEUE => match msg {
                    Some(Ok(m)) => {
                        last_heard = Instant::now();
                        self.on_client_frame(m).await;
                    }
                    _ => self.stop = Some(Stop::ClientClosed),
                },
                out = self.rx.recv() => match out {
                    Some(o) => self.on_out(o).await,
                    None => self.stop = Some(Stop::Shutdown),
                },
                _ = heartbeat.tick() => {
                    // A client whose frames wait to be stored is not idle (its socket is not
                    // read meanwhile).
                    if !self.waiting.is_empty() || !self.pending.is_empty() {
                        last_heard = Instant::now();
                    }
                    if last_heard.elapsed() > idle {
                        self.stop = Some(Stop::Idle);
                    } else {
                        self.send(Message::Ping(Vec::new())).await;
                    }
                }
                _ = session_check.tick() => {
                    if session_ended(self.state.clone(), self.sid.clone(), self.peer.cookie).await {
                        self.stop = Some(Stop::Revoked);
                    }
                }
                _ = typing_tick.tick() => {
                    self.expire_typing().await;
                    if self.accepted.due() {
                        self.audit_accepted().await;
                    }
                }
            }
            // Whatever else is already queued for this connection (a burst of deliveries, the
            // sender's own copy next to its answer) goes out in the same socket write.
            for _ in 0..OUT_BURST {
                if self.stop.is_some() {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(o) => self.on_out(o).await,
                    Err(_) => break,
                }
            }
            self.flush().await;
        }
    }

    /// Sends a `send_message` answer; a revoked session closes the connection after it.
    async fn on_answer(&mut self, a: Answer) {
        // The next frame is stored while this answer is written.
        self.start_next_send();
        self.send_text(&a.frame).await;
        self.audit_send(a.audit).await;
        if a.revoked && self.stop.is_none() {
            self.stop = Some(Stop::Revoked);
        }
    }

    /// Audits a `send_message` frame when `audit.log_requests` is on: a refused one at once
    /// (after the accepted ones before it), an accepted one with its batch ([`Accepted`]).
    async fn audit_send(&mut self, audit: SendAudit) {
        if !self.state.config.audit.log_requests {
            return;
        }
        match audit {
            SendAudit::Accepted { at, message_id, receiver_id } => {
                if self.accepted.push(at, message_id, receiver_id) {
                    self.audit_accepted().await;
                }
            }
            SendAudit::Refused { status } => {
                self.audit_accepted().await;
                let c = &self.peer.client;
                let entry = NewAuditEntry::new(crate::audit::AuditAction::WsSendMessage, Outcome::of_status(status))
                    .actor(Some(self.user_id.clone()))
                    .client(c.ip_string(), c.user_agent.clone())
                    .details(json!({"status": status, "receiver_id": null, "request_id": c.request_id}));
                self.state.audit.record(entry).await;
            }
        }
    }

    /// Records the accepted sends gathered so far, if any.
    async fn audit_accepted(&mut self) {
        if let Some(entry) = self.accepted.take(&self.user_id, &self.peer) {
            self.state.audit.record(entry).await;
        }
    }

    /// Starts storing the oldest waiting `send_message` frame unless one is being stored.
    fn start_next_send(&mut self) {
        if !self.pending.is_empty() {
            return;
        }
        if let Some(data) = self.waiting.pop_front() {
            let job = SendJob {
                state: self.state.clone(),
                user_id: self.user_id.clone(),
                sid: self.sid.clone(),
                peer: self.peer.clone(),
                data,
            };
            self.pending.push_back(send_message(job).boxed());
        }
    }

    async fn close(mut self) {
        let stop = self.stop.take().unwrap_or(Stop::ClientClosed);
        self.state.hub.unregister(&self.handle);
        // `send_message` frames already read are stored (or refused) before the socket closes;
        // their answers go out while the client is still there to read them.
        let mut answer = matches!(stop, Stop::Idle | Stop::Revoked | Stop::Shutdown);
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        loop {
            self.start_next_send();
            if self.pending.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.pending.next()).await {
                Ok(Some(a)) => {
                    if answer {
                        let sent = tokio::time::timeout_at(deadline, self.stream.send(Message::Text(a.frame))).await;
                        answer = matches!(sent, Ok(Ok(())));
                    }
                    self.audit_send(a.audit).await;
                }
                Ok(None) => break,
                Err(_) => {
                    let left = self.waiting.len() + self.pending.len();
                    tracing::warn!(user = %self.user_id, left, "websocket closed before its sends were stored");
                    break;
                }
            }
        }
        self.audit_accepted().await;
        let targets: Vec<String> = self.typing.drain().map(|(k, _)| k).collect();
        for to in targets {
            self.relay(&to, "typing_stop");
        }
        let (code, reason) = match stop {
            Stop::ClientClosed | Stop::TooSlow => (None, ""),
            Stop::Idle => (Some(CloseCode::Library(4408)), "idle_timeout"),
            Stop::Revoked => (Some(CloseCode::Library(4401)), "session_revoked"),
            Stop::Shutdown => (Some(CloseCode::Away), "server_shutdown"),
        };
        if let Some(code) = code {
            let frame = CloseFrame { code, reason: reason.into() };
            let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.close(Some(frame))).await;
        }
        // Offline only after the last connection is gone for the grace period.
        let (state, user) = (self.state.clone(), self.user_id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(state.config.realtime.presence_grace_secs)).await;
            announce_presence(&state, &user).await;
        });
    }

    /// Queues one frame in the socket's write buffer; the run loop flushes after each turn
    /// ([`Connection::flush`]), so frames that are ready together leave in one write. The buffer
    /// is written out by itself when it grows large; a client that does not take it within the
    /// write timeout is cut off.
    async fn send(&mut self, m: Message) -> bool {
        if self.stop.is_some() {
            return false;
        }
        let ok = self.write_timed(Some(m)).await;
        self.unflushed |= ok;
        ok
    }

    /// Writes the buffered frames to the socket.
    async fn flush(&mut self) -> bool {
        if !self.unflushed || self.stop.is_some() {
            return true;
        }
        self.unflushed = false;
        self.write_timed(None).await
    }

    /// Queues `m` (or, with `None`, flushes) within the write timeout; a failure stops the
    /// connection.
    async fn write_timed(&mut self, m: Option<Message>) -> bool {
        let limit = Duration::from_secs(self.state.config.realtime.write_timeout_secs.max(1));
        let kick = self.handle.kick.clone();
        let ok = tokio::select! {
            r = tokio::time::timeout(limit, async {
                match m {
                    Some(m) => self.stream.feed(m).await,
                    None => self.stream.flush().await,
                }
            }) => matches!(r, Ok(Ok(()))),
            _ = kick.cancelled() => false,
        };
        if !ok && self.stop.is_none() {
            self.stop = Some(if kick.is_cancelled() { Stop::Revoked } else { Stop::TooSlow });
            if matches!(self.stop, Some(Stop::TooSlow)) {
                tracing::info!(user = %self.user_id, "websocket client too slow; disconnected (it can resume)");
            }
        }
        ok
    }

    async fn send_text(&mut self, text: &str) -> bool {
        self.send(Message::Text(text.to_string())).await
    }

    async fn on_out(&mut self, o: Out) {
        match o {
            Out::Persisted { seq, frame } => {
                if seq <= self.last {
                    return;
                }
                if seq > self.last + 1 {
                    self.catch_up().await; // the ones in between are stored: read them
                    if seq <= self.last {
                        return;
                    }
                }
                if self.send_text(&frame).await {
                    self.last = seq;
                    self.sent_stored = true;
                }
            }
            Out::Ephemeral(f) => {
                self.send_text(&f).await;
            }
            Out::Resync => self.catch_up().await,
        }
        if self.handle.lagged.swap(false, Ordering::Relaxed) {
            self.catch_up().await;
        }
    }

    /// Sends every stored event after `last`, in order.
    async fn catch_up(&mut self) {
        let upto = i64::MAX;
        self.replay(self.last, upto, true).await;
    }

    /// Sends stored events in `(from, upto]`; `advance` moves `last` along.
    async fn replay(&mut self, from: i64, upto: i64, advance: bool) {
        let mut pos = from;
        while self.stop.is_none() {
            let uid = self.user_id.clone();
            let rows = match self.state.db.q(move |c| store::after(c, &uid, pos, REPLAY_PAGE)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read events to replay");
                    return;
                }
            };
            let n = rows.len() as i64;
            for r in rows {
                if r.seq > upto {
                    return;
                }
                if !self.send_text(&r.frame()).await {
                    return;
                }
                pos = r.seq;
                if advance {
                    self.last = r.seq;
                    self.sent_stored = true;
                }
            }
            if n < REPLAY_PAGE {
                return;
            }
        }
    }

    async fn resume(&mut self, after: i64) {
        let uid = self.user_id.clone();
        let (max, oldest) =
            match self.state.db.q(move |c| Ok((store::last_seq(c, &uid)?, store::oldest_seq(c, &uid)?))).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event counter");
                    return;
                }
            };
        if after > max {
            let f = error_frame("invalid_resume", &format!("after ({after}) is beyond the last event ({max})"));
            self.send_text(&f).await;
            return;
        }
        if let Some(oldest) = oldest {
            if oldest > after + 1 {
                // Older events are past their retention: the client must reload by REST.
                let f = ephemeral("resume_gap", json!({"after": after, "oldest_available": oldest}));
                self.send_text(&f).await;
            }
        }
        if !self.sent_stored {
            self.last = after;
            self.catch_up().await;
        } else if after < self.live_from {
            // Live events already went out: send only what precedes them (each exactly once).
            let upto = self.live_from;
            self.replay(after, upto, false).await;
            self.live_from = after;
        }
    }

    async fn on_client_frame(&mut self, m: Message) {
        let text = match m {
            Message::Text(t) => t,
            Message::Close(_) => {
                self.stop = Some(Stop::ClientClosed);
                return;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return,
            Message::Binary(_) => {
                let f = error_frame("invalid_frame", "send JSON text frames");
                self.send_text(&f).await;
                return;
            }
        };
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let f = error_frame("invalid_frame", &format!("not JSON: {e}"));
                self.send_text(&f).await;
                return;
            }
        };
        let event = v["event"].as_str().unwrap_or("").to_string();
        let data = &v["data"];
        match event.as_str() {
            "ping" => {
                let f = ephemeral("pong", json!({}));
                self.send_text(&f).await;
            }
            "resume" => match data["after"].as_i64().filter(|n| *n >= 0) {
                Some(n) => self.resume(n).await,
                None => {
                    let f = error_frame("invalid_frame", "resume needs data.after, a non-negative number");
                    self.send_text(&f).await;
                }
            },
            ev @ ("typing_start" | "typing_stop") => {
                let Some(to) = data["to"].as_str().map(str::to_string) else {
                    let f = error_frame("invalid_frame", &format!("{ev} needs data.to, a user id"));
                    self.send_text(&f).await;
                    return;
                };
                self.on_typing(ev == "typing_start", to).await;
            }
            "send_message" => self.on_send_message(v),
            ev @ ("user_away" | "user_active") => {
                self.state.hub.set_away(&self.handle, ev == "user_away");
                self.presence_changed().await;
            }
            other => {
                let f = error_frame("unknown_event", &format!("unknown event {other:?}"));
                self.send_text(&f).await;
            }
        }
    }

    /// Queues a `send_message` frame; [`send_message`] answers it.
    fn on_send_message(&mut self, mut frame: serde_json::Value) {
        let data = frame.get_mut("data").map(serde_json::Value::take).unwrap_or(serde_json::Value::Null);
        self.waiting.push_back(data);
        self.start_next_send();
    }

    async fn on_typing(&mut self, start: bool, to: String) {
        if !self.take_token() {
            let f = error_frame("rate_limited", "typing events are limited; slow down");
            self.send_text(&f).await;
            return;
        }
        if to == self.user_id || !self.may_reach(&to).await {
            let f = error_frame("invalid_frame", "data.to is not a user you can reach");
            self.send_text(&f).await;
            return;
        }
        if start {
            let fresh = self.typing.insert(to.clone(), Instant::now()).is_none();
            if fresh {
                self.relay(&to, "typing_start");
            }
        } else if self.typing.remove(&to).is_some() {
            self.relay(&to, "typing_stop");
        }
    }

    /// Whether `to` is an active user (cached per connection).
    async fn may_reach(&mut self, to: &str) -> bool {
        if let Some(ok) = self.typing_targets.get(to) {
            return *ok;
        }
        if self.typing_targets.len() > 1000 {
            self.typing_targets.clear();
        }
        let id = to.to_string();
        let ok = self.state.db.q(move |c| crate::messages::active_user(c, &id)).await.unwrap_or(false);
        self.typing_targets.insert(to.to_string(), ok);
        ok
    }

    fn relay(&self, to: &str, name: &str) {
        let f: Arc<str> = ephemeral(name, json!({"user_id": self.user_id})).into();
        self.state.hub.deliver_ephemeral(to, &f);
        if self.state.db.backend() == crate::db::Backend::Postgres {
            let (db, node, to, f) = (self.state.db.clone(), self.state.node_id.clone(), vec![to.to_string()], f);
            tokio::task::spawn_blocking(move || super::notify::announce_ephemeral(&db, &node, &to, &f));
        }
    }

    async fn expire_typing(&mut self) {
        let ttl = Duration::from_secs(self.state.config.realtime.typing_expiry_secs.max(1));
        let expired: Vec<String> =
            self.typing.iter().filter(|(_, at)| at.elapsed() > ttl).map(|(k, _)| k.clone()).collect();
        for to in expired {
            self.typing.remove(&to);
            self.relay(&to, "typing_stop");
        }
    }

    /// A small token bucket for typing frames: `TYPING_RATE` per second, bursts of `TYPING_BURST`.
    fn take_token(&mut self) -> bool {
        let (tokens, at) = self.bucket;
        let now = Instant::now();
        let tokens = (tokens + at.elapsed().as_secs_f64() * TYPING_RATE).min(TYPING_BURST);
        if tokens >= 1.0 {
            self.bucket = (tokens - 1.0, now);
            true
        } else {
            self.bucket = (tokens, now);
            false
        }
    }

    async fn presence_changed(&mut self) {
        announce_presence(&self.state, &self.user_id).await;
    }

    /// Tells this client which of its contacts are online or away now (on any node).
    async fn send_contacts_presence(&mut self, contacts: Vec<String>) {
        let elsewhere = if self.state.db.backend() == crate::db::Backend::Postgres && !contacts.is_empty() {
            let cs = contacts.clone();
            let stale = super::presence::stale_after(&self.state.config.realtime);
            self.state
                .db
                .q(move |c| super::presence::lookup(c, &cs, crate::time::now_micros(), stale))
                .await
                .unwrap_or_default()
        } else {
            Default::default()
        };
        for c in contacts {
            let here = self.state.hub.presence(&c);
            let p = super::presence::best([here, elsewhere.get(&c).copied().unwrap_or(Presence::Offline)]);
            if p != Presence::Offline {
                let f = ephemeral("presence_update", json!({"user_id": c, "status": p.as_str()}));
                self.send_text(&f).await;
            }
        }
    }
}

const TYPING_RATE: f64 = 5.0;
const TYPING_BURST: f64 = 10.0;

/// The session is revoked or expired, held for re-verification, or (a cookie's) idle.
/// Revocations on any node also close the socket at once (`AppState::sessions_revoked`);
/// this periodic check is the backstop.
async fn session_ended(state: AppState, sid: String, cookie: Option<(&'static str, u64)>) -> bool {
    match crate::auth::session_live(&state, &sid).await {
        Ok(None) => return true,
        Ok(Some(live)) if live.reverify => return true,
        _ => {}
    }
    let Some((kind, idle_secs)) = cookie else { return false };
    let idle = idle_secs as i64 * 1_000_000;
    let now = crate::time::now_micros();
    let idled = state.db.q(move |c| crate::auth::browser::idled_out(c, &sid, kind, now, idle)).await;
    matches!(idled, Ok(true))
}

fn error_frame(code: &str, message: &str) -> String {
    ephemeral("error", json!({"code": code, "message": message}))
}

/// One `send_message` frame to answer.
struct SendJob {
    state: AppState,
    user_id: String,
    sid: String,
    peer: Arc<Peer>,
    data: serde_json::Value,
}

/// A `send_message` frame's `client_id`: absent or `null` → `Ok(None)`; a string of at most
/// [`MAX_CLIENT_ID`] bytes → `Ok(Some)`; anything else is unusable.
fn usable_client_id(v: Option<&serde_json::Value>) -> Result<Option<&str>, ()> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.len() <= MAX_CLIENT_ID => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// Stores a `send_message` frame's message as `POST /api/messages/send` would and makes its
/// answer: `message_sent {client_id, message}` or `error {code, message, client_id,
/// retry_after?}`, and what the audit log is to hold of it ([`SendAudit`]; the connection
/// records it, see [`Accepted`]).
async fn send_message(job: SendJob) -> Answer {
    let SendJob { state, user_id, sid, peer, data } = job;
    // An unusable client_id is refused below and not echoed.
    let echo = json!(usable_client_id(data.get("client_id")).unwrap_or(None));
    let (result, revoked) = match send_checked(&state, &user_id, &sid, &peer, data).await {
        Ok(view) => (Ok(view), false),
        Err((e, revoked)) => (Err(e), revoked),
    };
    let (frame, audit) = match result {
        Ok((view, text)) => {
            // The view's JSON text as the event has it, not serialised again.
            let frame = format!(r#"{{"event":"message_sent","data":{{"client_id":{echo},"message":{text}}}}}"#);
            let at = crate::time::now_micros();
            (frame, SendAudit::Accepted { at, message_id: view.id, receiver_id: view.receiver_id })
        }
        Err(e) => {
            let mut d = json!({"code": e.code, "message": e.message, "client_id": echo});
            if let Some(s) = e.retry_after {
                d["retry_after"] = json!(s);
            }
            (ephemeral("error", d), SendAudit::Refused { status: e.status.code })
        }
    };
    Answer { frame, revoked, audit }
}

/// What the audit log holds of one `send_message` frame.
enum SendAudit {
    /// Stored: recorded with the connection's other accepted sends ([`Accepted`]).
    Accepted { at: i64, message_id: String, receiver_id: Option<String> },
    /// Refused with this HTTP status: its own entry, as an HTTP request's.
    Refused { status: u16 },
}

/// Accepted sends gathered per connection for one `ws.send_message` audit entry (see
/// docs/realtime.md and the Decisions entry "Accepted WebSocket sends are audited in runs"
/// in docs/architecture.md). The entry lists every message (id and receiver) in order; it is
/// written when [`Accepted::MAX`] have gathered, [`Accepted::AGE`] after the first, before a
/// refused frame's entry (so the log keeps the frames' order), and when the connection closes.
struct Accepted {
    /// (id, receiver) of each stored message, oldest first.
    messages: Vec<(String, Option<String>)>,
    /// When the first and the last of them were stored (µs since the Unix epoch).
    first_at: i64,
    last_at: i64,
    /// When the first was gathered, for [`Accepted::AGE`] (meaningless while empty).
    since: Instant,
}

impl Default for Accepted {
    fn default() -> Self {
        Self { messages: Vec::new(), first_at: 0, last_at: 0, since: Instant::now() }
    }
}

impl Accepted {
    /// Accepted sends per entry at most.
    const MAX: usize = 256;
    /// How long the first of them waits for others at most.
    const AGE: Duration = Duration::from_secs(1);

    /// Adds one; returns whether the batch is full.
    fn push(&mut self, at: i64, message_id: String, receiver_id: Option<String>) -> bool {
        if self.messages.is_empty() {
            self.first_at = at;
            self.since = Instant::now();
        }
        self.last_at = at;
        self.messages.push((message_id, receiver_id));
        self.messages.len() >= Self::MAX
    }

    fn due(&self) -> bool {
        !self.messages.is_empty() && self.since.elapsed() >= Self::AGE
    }

    /// The entry for what has gathered (none when nothing has), and empties the batch. One
    /// message makes the entry an HTTP-like one (its target the message, `details.receiver_id`);
    /// several make one entry without a target whose `details.messages` lists them in order,
    /// `details.count` how many, and `details.first_at`/`last_at` when the first and last were
    /// stored. The entry's `at` is the first one's time.
    fn take(&mut self, user_id: &str, peer: &Peer) -> Option<NewAuditEntry> {
        if self.messages.is_empty() {
            return None;
        }
        let messages = std::mem::take(&mut self.messages);
        let c = &peer.client;
        let mut entry = NewAuditEntry::new(crate::audit::AuditAction::WsSendMessage, Outcome::Success)
            .actor(Some(user_id.to_string()))
            .client(c.ip_string(), c.user_agent.clone());
        entry.at = self.first_at;
        match messages.len() {
            1 => {
                let (id, receiver) = messages.into_iter().next().expect("one");
                entry = entry
                    .target("message", id)
                    .details(json!({"status": 201, "receiver_id": receiver, "request_id": c.request_id}));
            }
            n => {
                let list: Vec<serde_json::Value> =
                    messages.into_iter().map(|(id, r)| json!({"id": id, "receiver_id": r})).collect();
                entry = entry.details(json!({
                    "status": 201,
                    "count": n,
                    "messages": list,
                    "first_at": self.first_at,
                    "last_at": self.last_at,
                    "request_id": c.request_id,
                }));
            }
        }
        Some(entry)
    }
}

/// The checks of a `send_message` frame, then [`crate::messages::routes::send_text`]. The error
/// says whether the session was found revoked.
async fn send_checked(
    state: &AppState,
    user_id: &str,
    sid: &str,
    peer: &Peer,
    data: serde_json::Value,
) -> Result<(crate::messages::MessageView, Arc<str>), (ApiError, bool)> {
    use rocket::http::Status;
    if !peer.may_send {
        let e = ApiError::forbidden("this connection cannot send messages; use /ws or POST /api/messages/send");
        return Err((e, false));
    }
    let now = crate::time::now_micros();
    // Sending lasts as long as the credential the socket was opened with.
    if peer.send_until.is_some_and(|exp| now / 1_000_000 >= exp) {
        let e = ApiError::new(
            Status::Unauthorized,
            "token_expired",
            "the access token this connection was opened with has expired; reconnect with a fresh one",
        );
        return Err((e, false));
    }
    // An address blocked since the socket opened gets what its HTTP requests get.
    if let Some(secs) = peer.client.ip.and_then(|ip| state.blocks.check(ip, now)) {
        return Err((crate::security::responses::blocked_error(secs), false));
    }
    // The session may have been revoked (or put on re-verification) since the socket opened.
    match crate::auth::session_live(state, sid).await {
        Ok(Some(s)) if s.reverify => return Err((crate::auth::reverify_required(), false)),
        Ok(Some(_)) => {}
        Ok(None) => {
            let e = ApiError::new(Status::Unauthorized, "session_revoked", "your session has ended; sign in again");
            return Err((e, true));
        }
        Err(e) => return Err((e, false)),
    }
    let serde_json::Value::Object(mut fields) = data else {
        return Err((ApiError::invalid("data", "send_message needs data, an object"), false));
    };
    if usable_client_id(fields.remove("client_id").as_ref()).is_err() {
        let why = format!("must be a string of at most {MAX_CLIENT_ID} bytes");
        return Err((ApiError::invalid("client_id", why), false));
    }
    let req: crate::messages::routes::SendRequest = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| (ApiError::new(Status::BadRequest, "invalid_json", format!("data: {e}")), false))?;
    crate::messages::routes::send_text(state, user_id, req).await.map_err(|e| (e, false))
}

/// Pushes `presence_update` to the user's contacts when their presence changed.
async fn announce_presence(state: &AppState, user: &str) {
    announce_presence_to(state, user, None).await;
}

/// [`announce_presence`] for a user whose rows a dead node left (swept by the heartbeat): this
/// node may never have announced them, so it tells their contacts whatever the presence is now.
pub(super) async fn announce_presence_forced(state: &AppState, user: &str) {
    announce(state, user, None, true).await;
}

/// [`announce_presence`] with the contacts already looked up, if they were.
async fn announce_presence_to(state: &AppState, user: &str, contacts: Option<Vec<String>>) {
    announce(state, user, contacts, false).await;
}

/// Works out `user`'s presence (this node's devices; on PostgreSQL with the other nodes') and
/// tells their contacts, here and on the other nodes, when it changed (or when `force`).
async fn announce(state: &AppState, user: &str, contacts: Option<Vec<String>>, force: bool) {
    let here = state.hub.presence(user);
    let shared = state.db.backend() == crate::db::Backend::Postgres;
    let p = if shared {
        let (node, uid) = (state.node_id.clone(), user.to_string());
        let stale = super::presence::stale_after(&state.config.realtime);
        match state
            .db
            .q(move |c| super::presence::publish(c, &node, &uid, here, crate::time::now_micros(), stale))
            .await
        {
            Ok(p) => super::presence::best([here, p]),
            Err(e) => {
                tracing::warn!(error = %e, "presence could not be shared with the other nodes");
                here
            }
        }
    } else {
        here
    };
    let changed = state.hub.announce(user, p);
    // Alone, this node knows what it announced last. With several nodes another node may have
    // announced since (the user went offline there, then came back here), so every change seen
    // here is told — a repeated status is harmless, a missed one is not — except a device
    // leaving this node while the user is still present on another: nothing changed for anyone.
    let tell = force || if shared { !(here == Presence::Offline && p != Presence::Offline) } else { changed };
    if !tell {
        return;
    }
    let contacts = match contacts {
        Some(c) => c,
        None => {
            let uid = user.to_string();
            state.db.q(move |c| crate::messages::contacts(c, &uid)).await.unwrap_or_default()
        }
    };
    let f: Arc<str> = ephemeral("presence_update", json!({"user_id": user, "status": p.as_str()})).into();
    for c in &contacts {
        state.hub.deliver_ephemeral(c, &f);
    }
    if state.db.backend() == crate::db::Backend::Postgres && !contacts.is_empty() {
        let (db, node) = (state.db.clone(), state.node_id.clone());
        tokio::task::spawn_blocking(move || super::notify::announce_ephemeral(&db, &node, &contacts, &f));
    }
}
