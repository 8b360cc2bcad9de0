//! Real-time messaging through a real WebSocket client (tungstenite) against the real binary:
//! live delivery, history, resume, file discussions, media messages, typing, presence,
//! refusal of bad tokens, slow clients, and two nodes on one PostgreSQL database.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

use crate::auth::{get, open_server, post, user_token};
use crate::both_backends;
use crate::files::{multipart, scanned, upload};
use crate::harness::{Backend, Server, TestDb};

/// A signed-in user: id and access token.
pub struct U {
    pub id: String,
    pub token: String,
}

pub fn user(srv: &Server, email: &str) -> U {
    U::of_login(&user_token(srv, email))
}

impl U {
    /// The user and token of a sign-in answer.
    fn of_login(t: &Value) -> U {
        U {
            id: t["user"]["id"].as_str().expect("login answers the user").to_string(),
            token: t["token"].as_str().unwrap().into(),
        }
    }
}

pub struct Ws {
    sock: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for the connection to be live, handed out first by `next`.
    backlog: std::collections::VecDeque<Value>,
}

fn ws_url(srv: &Server, query: &str) -> String {
    format!("{}/ws{query}", srv.base.replacen("http://", "ws://", 1))
}

impl Ws {
    /// Connects and checks the connection answers (`ping` → `pong`); frames that arrive before
    /// the pong are kept for `next`.
    pub fn connect(srv: &Server, token: &str) -> Ws {
        let mut ws = Self::open(srv, &format!("?token={token}")).unwrap_or_else(|e| panic!("websocket refused: {e}"));
        ws.send(json!({"event": "ping"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut early = std::collections::VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ws.next(left) {
                Some(f) if f["event"] == "pong" => break,
                Some(f) => early.push_back(f),
                None => panic!("no pong within 10s of connecting"),
            }
        }
        ws.backlog = early;
        ws
    }

    /// Opens `/ws` with extra request headers (e.g. `X-Forwarded-For` behind a trusted proxy).
    pub fn open_with(srv: &Server, query: &str, headers: &[(&'static str, &str)]) -> Ws {
        use tungstenite::client::IntoClientRequest;
        let mut req = ws_url(srv, query).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let (sock, _) = tungstenite::connect(req).expect("websocket refused");
        Ws { sock, backlog: Default::default() }
    }

    pub fn open(srv: &Server, query: &str) -> Result<Ws, Box<tungstenite::Error>> {
        let (sock, _) = tungstenite::connect(ws_url(srv, query)).map_err(Box::new)?;
        Ok(Ws { sock, backlog: Default::default() })
    }

    pub fn send(&mut self, v: Value) {
        self.sock.send(Message::Text(v.to_string())).expect("send frame");
    }

    fn set_timeout(&mut self, d: Duration) {
        if let MaybeTlsStream::Plain(s) = self.sock.get_mut() {
            s.set_read_timeout(Some(d.max(Duration::from_millis(1)))).unwrap();
        }
    }

    /// The next JSON frame within `within`, `None` on timeout. Panics when the server closed.
    pub fn next(&mut self, within: Duration) -> Option<Value> {
        if let Some(f) = self.backlog.pop_front() {
            return Some(f);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.set_timeout(left);
            match self.sock.read() {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("server frames are JSON")),
                Ok(Message::Close(c)) => panic!("server closed the connection: {c:?}"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(e) => panic!("websocket error: {e}"),
            }
        }
    }

    /// The next frame named `event` (others are skipped), or panics after `within`.
    pub fn expect(&mut self, event: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(f) if f["event"] == event => return f,
                Some(_) => continue,
                None => panic!("no {event} within {within:?}"),
            }
        }
    }

    /// Every frame named one of `events` that arrives until nothing came for `quiet`.
    pub fn drain(&mut self, events: &[&str], quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(f) = self.next(quiet) {
            if events.iter().any(|e| f["event"] == *e) {
                out.push(f);
            }
        }
        out
    }

    /// Reads until the server ends the connection; returns the close code (if a close frame
    /// came) and how many text frames arrived before it.
    pub fn until_closed(&mut self, within: Duration) -> (Option<u16>, usize) {
        let deadline = Instant::now() + within;
        let mut frames = 0;
        loop {
            assert!(Instant::now() < deadline, "the server never closed the connection");
            self.set_timeout(Duration::from_secs(1));
            match self.sock.read() {
                Ok(Message::Text(_)) => frames += 1,
                Ok(Message::Close(c)) => return (c.map(|c| u16::from(c.code)), frames),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return (None, frames),
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.sock.close(None);
        let _ = self.sock.flush();
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn send_text(srv: &Server, from: &U, to: &U, content: &str) -> Value {
    let r = post(
        srv,
        "/api/messages/send",
        Some(&from.token),
        json!({"receiver_id": to.id, "content": content, "type": "text"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["message"].clone()
}

fn unlimited(b: Backend, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("SECCOLLAB_AUTH__REGISTRATION", "open"), ("SECCOLLAB_MESSAGES__SEND_RATE_PER_SEC", "0")];
    env.extend_from_slice(extra);
    Server::start_with(TestDb::new(b), &env)
}

both_backends!(message_is_delivered_live_paged_and_resumed_exactly_once, |b: Backend| {
    let srv = unlimited(b, &[]);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let mut bob_ws = Ws::connect(&srv, &bob.token);
    let sent = send_text(&srv, &alice, &bob, "hello bob");
    assert_eq!((sent["sender_id"].as_str(), sent["receiver_id"].as_str()), (Some(&*alice.id), Some(&*bob.id)));
    assert_eq!((sent["type"].as_str(), sent["content"].as_str()), (Some("text"), Some("hello bob")));
    let f = bob_ws.expect("new_message", WAIT);
    assert_eq!(f["data"]["message"], sent, "the event carries the stored message");
    let first_seq = f["seq"].as_i64().expect("stored events carry seq");

    // History: newest page first, each page oldest first.
    for i in 1..=5 {
        send_text(
            &srv,
            if i % 2 == 0 { &bob } else { &alice },
            if i % 2 == 0 { &alice } else { &bob },
            &format!("m{i}"),
        );
    }
    let page = get(&srv, &format!("/api/messages/{}?limit=4", alice.id), &bob.token).json();
    let texts: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts, ["m2", "m3", "m4", "m5"]);
    let cursor = page["next_cursor"].as_str().expect("more to come");
    let older = get(&srv, &format!("/api/messages/{}?limit=4&before={cursor}", alice.id), &bob.token).json();
    let texts: Vec<&str> =
        older["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello bob", "m1"]);
    assert!(older["next_cursor"].is_null());
    // The same conversation from the other side.
    let alice_view = get(&srv, &format!("/api/messages/{}?limit=200", bob.id), &alice.token).json();
    assert_eq!(alice_view["messages"].as_array().unwrap().len(), 6);

    // Drop the connection, miss 100 messages, resume: all 100, once, in order.
    let seen = bob_ws.drain(&["new_message"], Duration::from_millis(500));
    let last_seq = seen.last().map(|f| f["seq"].as_i64().unwrap()).unwrap_or(first_seq);
    assert_eq!(last_seq, first_seq + 5, "bob saw his own sends too (other devices): {seen:?}");
    bob_ws.close();
    for i in 0..100 {
        send_text(&srv, &alice, &bob, &format!("missed {i}"));
    }
    let mut again = Ws::connect(&srv, &bob.token);
    again.send(json!({"event": "resume", "data": {"after": last_seq}}));
    let got = again.drain(&["new_message"], Duration::from_millis(1500));
    let contents: Vec<String> =
        got.iter().map(|f| f["data"]["message"]["content"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("missed {i}")).collect();
    assert_eq!(contents, expected);
    let seqs: Vec<i64> = got.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, ((last_seq + 1)..=(last_seq + 100)).collect::<Vec<_>>());
    // A second resume from the same point on another device gives the same, and nothing twice.
    let mut other = Ws::open(&srv, &format!("?token={}&after={last_seq}", bob.token)).unwrap();
    assert_eq!(other.drain(&["new_message"], Duration::from_millis(1500)).len(), 100);
});

/// The server registers the connection for live delivery before it answers the upgrade, so an
/// event committed the moment the client sees `101` arrives live, without `resume`. (Before the
/// fix the registration happened just after the answer; this test caught the window.)
#[test]
fn an_event_right_after_the_upgrade_arrives_live() {
    let srv = unlimited(Backend::Sqlite, &[]);
    let (alice, bob) = (user(&srv, "ada@example.org"), user(&srv, "ben@example.org"));
    for i in 0..40 {
        let mut ws = Ws::open(&srv, &format!("?token={}", bob.token)).unwrap();
        let sent = send_text(&srv, &alice, &bob, &format!("right away {i}"));
        let f = ws.expect("new_message", WAIT);
        assert_eq!(f["data"]["message"]["id"], sent["id"], "connection {i}");
        ws.close();
    }
}

#[test]
fn bad_messages_are_refused_and_change_nothing() {
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_MESSAGES__SEND_BURST", "3"),
            ("SECCOLLAB_MESSAGES__SEND_RATE_PER_SEC", "0.2"),
        ],
    );
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let send = |body: Value| post(&srv, "/api/messages/send", Some(&alice.token), body);
    send(json!({"receiver_id": bob.id, "content": "   "})).assert_error(400, "invalid_input");
    send(json!({"receiver_id": bob.id, "content": "x".repeat(10_001)})).assert_error(400, "invalid_input");
    send(json!({"receiver_id": alice.id, "content": "me"})).assert_error(400, "invalid_input");
    send(json!({"receiver_id": bob.id, "content": "hi", "type": "image"})).assert_error(400, "invalid_input");
    send(json!({"receiver_id": bob.id, "content": "hi", "sender_id": bob.id})).assert_error(400, "invalid_json");
    send(json!({"receiver_id": bob.id})).assert_error(400, "invalid_json");
    post(&srv, "/api/messages/send", None, json!({"receiver_id": bob.id, "content": "hi"}))
        .assert_error(401, "unauthenticated");
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages"), "0", "nothing stored by refused sends");
    // Unknown receiver and history with an unknown user: 404.
    send(json!({"receiver_id": "0190-nobody", "content": "hi"})).assert_error(404, "user_not_found");
    get(&srv, "/api/messages/0190-nobody", &alice.token).assert_error(404, "user_not_found");
    get(&srv, &format!("/api/messages/{}?limit=0", bob.id), &alice.token).assert_error(400, "invalid_input");
    get(&srv, &format!("/api/messages/{}?before=zzz", bob.id), &alice.token).assert_error(400, "invalid_input");
    // The send rate: a burst of 3. Invalid input costs nothing; the unknown receiver (a valid
    // request) cost one; two more pass, then 429 with Retry-After.
    send(json!({"receiver_id": bob.id, "content": "one"}));
    send(json!({"receiver_id": bob.id, "content": "two"}));
    let r = send(json!({"receiver_id": bob.id, "content": "three"}));
    r.assert_error(429, "rate_limited");
    let wait: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=5).contains(&wait), "{wait}");
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages"), "2");
}

both_backends!(file_discussion_reaches_exactly_the_users_with_access, |b: Backend| {
    let srv = unlimited(b, &[]);
    let owner = user(&srv, "owner@example.org");
    let (viewer, revoked, stranger) =
        (user(&srv, "viewer@example.org"), user(&srv, "revoked@example.org"), user(&srv, "stranger@example.org"));
    let f = upload(&srv, &owner.token, "plan.txt", b"the plan");
    let fid = f["file_id"].as_str().unwrap().to_string();
    let share = |u: &U, p: &str| {
        let r = post(
            &srv,
            "/api/files/share",
            Some(&owner.token),
            json!({"file_id": fid, "user_ids": [u.id], "permissions": p}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    share(&viewer, "view");
    share(&revoked, "download");
    let r = srv.request(
        "DELETE",
        &format!("/api/files/{fid}/shares/{}", revoked.id),
        &[("Authorization", &format!("Bearer {}", owner.token))],
        None,
    );
    assert_eq!(r.status, 204);
    let mut sockets: Vec<(&str, Ws)> =
        [("owner", &owner), ("viewer", &viewer), ("revoked", &revoked), ("stranger", &stranger)]
            .into_iter()
            .map(|(n, u)| (n, Ws::connect(&srv, &u.token)))
            .collect();
    // Let the connections settle (presence frames), then post as the viewer.
    for (_, s) in sockets.iter_mut() {
        s.drain(&[], Duration::from_millis(300));
    }
    let r = post(&srv, &format!("/api/files/{fid}/messages"), Some(&viewer.token), json!({"content": "looks good"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let msg = r.json()["message"].clone();
    assert_eq!((msg["file_id"].as_str(), msg["sender_id"].as_str()), (Some(fid.as_str()), Some(viewer.id.as_str())));
    for (name, s) in sockets.iter_mut() {
        let got = s.drain(&["file_message_update"], Duration::from_millis(1000));
        match *name {
            "owner" | "viewer" => {
                assert_eq!(got.len(), 1, "{name} must get the update once: {got:?}");
                assert_eq!(got[0]["data"]["message"], msg);
                assert_eq!(got[0]["data"]["file_id"], fid.as_str());
            }
            _ => assert!(got.is_empty(), "{name} must not see the discussion: {got:?}"),
        }
    }
    // Reading and posting follow the same access.
    let list = get(&srv, &format!("/api/files/{fid}/messages"), &owner.token).json();
    assert_eq!(list["messages"].as_array().unwrap().len(), 1);
    assert_eq!(list["messages"][0]["content"], "looks good");
    for u in [&revoked, &stranger] {
        get(&srv, &format!("/api/files/{fid}/messages"), &u.token).assert_error(404, "file_not_found");
        post(&srv, &format!("/api/files/{fid}/messages"), Some(&u.token), json!({"content": "let me in"}))
            .assert_error(404, "file_not_found");
    }
    post(&srv, &format!("/api/files/{fid}/messages"), Some(&owner.token), json!({"content": ""}))
        .assert_error(400, "invalid_input");
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages"), "1");
});

/// A minimal valid PNG (1x1).
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

fn media_form(receiver: &str, content: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut b = Vec::new();
    let boundary = crate::files::BOUNDARY;
    write!(b, "--{boundary}\r\nContent-Disposition: form-data; name=\"receiver_id\"\r\n\r\n{receiver}\r\n").unwrap();
    write!(b, "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\n{content}\r\n").unwrap();
    let file = multipart("dot.png", "image/png", data, None);
    b.extend_from_slice(&file);
    b
}

fn post_media(srv: &Server, token: &str, body: &[u8]) -> crate::harness::Resp {
    let ct = format!("multipart/form-data; boundary={}", crate::files::BOUNDARY);
    srv.request(
        "POST",
        "/api/messages/upload",
        &[("Authorization", &format!("Bearer {token}")), ("Content-Type", &ct)],
        Some(body),
    )
}

#[test]
fn media_message_is_downloadable_by_the_receiver_only() {
    let srv = unlimited(Backend::Sqlite, &[]);
    let (alice, bob, carol) =
        (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"), user(&srv, "carol@example.org"));
    let mut bob_ws = Ws::connect(&srv, &bob.token);
    let r = post_media(&srv, &alice.token, &media_form(&bob.id, "look at this", PNG));
    assert_eq!(r.status, 201, "{}", r.text());
    let m = r.json()["message"].clone();
    assert_eq!(m["type"], "image");
    assert_eq!(m["content"], "look at this");
    assert_eq!(m["media"]["mime_type"], "image/png");
    assert_eq!(m["media"]["size"], PNG.len());
    let fid = m["media"]["file_id"].as_str().unwrap().to_string();
    let f = bob_ws.expect("new_message", WAIT);
    assert_eq!(f["data"]["message"]["media"]["file_id"], fid.as_str());
    assert_eq!(scanned(&srv, &alice.token, &fid), "clean");
    let dl = |t: &str| {
        srv.request("GET", &format!("/api/files/download/{fid}"), &[("Authorization", &format!("Bearer {t}"))], None)
    };
    let got = dl(&bob.token);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, PNG);
    dl(&carol.token).assert_error(404, "file_not_found");
    // The history shows the media.
    let h = get(&srv, &format!("/api/messages/{}", alice.id), &bob.token).json();
    assert_eq!(h["messages"][0]["media"]["file_id"], fid.as_str());
    // Refused: no receiver, unknown receiver; neither leaves a file or a message behind.
    let files_before = srv.db.sql("SELECT count(*) FROM files");
    let no_receiver = multipart("dot.png", "image/png", PNG, None);
    post_media(&srv, &alice.token, &no_receiver).assert_error(400, "invalid_input");
    post_media(&srv, &alice.token, &media_form("0190-nobody", "", PNG)).assert_error(404, "user_not_found");
    assert_eq!(srv.db.sql("SELECT count(*) FROM files"), files_before);
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages"), "1");
}

#[test]
fn typing_and_presence_reach_the_right_user_only() {
    let srv = unlimited(
        Backend::Sqlite,
        &[("SECCOLLAB_REALTIME__TYPING_EXPIRY_SECS", "1"), ("SECCOLLAB_REALTIME__PRESENCE_GRACE_SECS", "1")],
    );
    let (alice, bob, carol) =
        (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"), user(&srv, "carol@example.org"));
    send_text(&srv, &alice, &bob, "we are contacts now");
    let mut bob_ws = Ws::connect(&srv, &bob.token);
    let mut carol_ws = Ws::connect(&srv, &carol.token);
    bob_ws.drain(&[], Duration::from_millis(300));
    let mut alice_ws = Ws::connect(&srv, &alice.token);
    // Alice comes online: her contact Bob is told, Carol (no contact) is not.
    let p = bob_ws.expect("presence_update", WAIT);
    assert_eq!(p["data"], json!({"user_id": alice.id, "status": "online"}));
    // And Alice learns that Bob is online.
    let p = alice_ws.expect("presence_update", WAIT);
    assert_eq!(p["data"], json!({"user_id": bob.id, "status": "online"}));
    alice_ws.send(json!({"event": "typing_start", "data": {"to": bob.id}}));
    let t = bob_ws.expect("typing_start", WAIT);
    assert_eq!(t["data"], json!({"user_id": alice.id}));
    assert!(t.get("seq").is_none(), "typing is not stored");
    // Not refreshed: it ends by itself.
    let t = bob_ws.expect("typing_stop", Duration::from_secs(5));
    assert_eq!(t["data"], json!({"user_id": alice.id}));
    // Away, then gone (after the grace period).
    alice_ws.send(json!({"event": "user_away", "data": {}}));
    assert_eq!(bob_ws.expect("presence_update", WAIT)["data"]["status"], "away");
    alice_ws.close();
    assert_eq!(bob_ws.expect("presence_update", WAIT)["data"], json!({"user_id": alice.id, "status": "offline"}));
    let carol_saw = carol_ws.drain(&["presence_update", "typing_start", "typing_stop"], Duration::from_millis(500));
    assert!(carol_saw.is_empty(), "carol is nobody's contact: {carol_saw:?}");
    // Bad frames get an error frame, not a dropped connection.
    carol_ws.send(json!({"event": "typing_start", "data": {}}));
    assert_eq!(carol_ws.expect("error", WAIT)["data"]["code"], "invalid_frame");
    carol_ws.send(json!({"event": "no_such_thing"}));
    assert_eq!(carol_ws.expect("error", WAIT)["data"]["code"], "unknown_event");
    carol_ws.send(json!({"event": "ping"}));
    carol_ws.expect("pong", WAIT);
}

#[test]
fn unauthenticated_and_revoked_connections_are_refused() {
    let srv = open_server(Backend::Sqlite);
    let bob = user(&srv, "bob@example.org");
    let status = |r: Result<Ws, Box<tungstenite::Error>>| match r.map_err(|e| *e) {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connection accepted"),
    };
    assert_eq!(status(Ws::open(&srv, "")), 401);
    assert_eq!(status(Ws::open(&srv, "?token=abc.def.ghi")), 401);
    assert_eq!(status(Ws::open(&srv, &format!("?token={}&after=-3", bob.token))), 400);
    // A live connection is closed when its session is revoked (logout).
    let mut live = Ws::connect(&srv, &bob.token);
    let r = post(&srv, "/api/auth/logout", Some(&bob.token), json!({}));
    assert!(r.status == 204 || r.status == 200, "{}", r.text());
    let (code, _) = live.until_closed(WAIT);
    assert_eq!(code, Some(4401), "closed as session_revoked");
    assert_eq!(status(Ws::open(&srv, &format!("?token={}", bob.token))), 401);
}

#[test]
fn a_client_that_never_reads_is_cut_off_while_others_keep_flowing() {
    let srv = unlimited(
        Backend::Sqlite,
        &[
            ("SECCOLLAB_REALTIME__WRITE_TIMEOUT_SECS", "2"),
            ("SECCOLLAB_REALTIME__QUEUE_CAPACITY", "16"),
            ("SECCOLLAB_MESSAGES__MAX_CONTENT_CHARS", "200000"),
        ],
    );
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let mut stalled = Ws::connect(&srv, &bob.token); // never reads until the end
    let mut reader = Ws::connect(&srv, &bob.token);
    let big = "z".repeat(150_000);
    let n = 200; // 30 MB: far more than the socket buffers hold
    let reader_thread = std::thread::spawn(move || {
        let got = reader.drain(&["new_message"], Duration::from_secs(5));
        got.iter().map(|f| f["seq"].as_i64().unwrap()).collect::<Vec<i64>>()
    });
    for _ in 0..n {
        send_text(&srv, &alice, &bob, &big);
    }
    let seqs = reader_thread.join().unwrap();
    assert_eq!(seqs.len(), n, "the reading device got everything");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order, once");
    let (_, frames) = stalled.until_closed(Duration::from_secs(30));
    assert!(frames < n, "the stalled client was cut off (it got {frames} of {n})");
}

#[test]
fn two_nodes_on_one_postgres_deliver_in_order_once() {
    let a = unlimited(Backend::Postgres, &[]);
    let b = a.start_peer(&[("SECCOLLAB_MESSAGES__SEND_RATE_PER_SEC", "0")]);
    let (alice, bob) = (user(&a, "alice@example.org"), user(&a, "bob@example.org"));
    let mut bob_on_a = Ws::connect(&a, &bob.token);
    bob_on_a.drain(&[], Duration::from_millis(300));
    // Sent through node B (the token from node A works there: shared keys and database).
    for i in 0..50 {
        send_text(&b, &alice, &bob, &format!("via b {i}"));
    }
    let got = bob_on_a.drain(&["new_message"], Duration::from_secs(2));
    let contents: Vec<&str> = got.iter().map(|f| f["data"]["message"]["content"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("via b {i}")).collect();
    assert_eq!(contents, expected);
    let seqs: Vec<i64> = got.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // Typing crosses nodes too.
    let mut alice_on_b = Ws::connect(&b, &alice.token);
    alice_on_b.send(json!({"event": "typing_start", "data": {"to": bob.id}}));
    assert_eq!(bob_on_a.expect("typing_start", WAIT)["data"]["user_id"], alice.id.as_str());
}

#[test]
fn a_dead_nodes_users_are_swept_and_announced_offline() {
    // Heartbeat 1 s: rows not refreshed for 3 s belong to a dead node.
    let env = [
        ("SECCOLLAB_REALTIME__PRESENCE_GRACE_SECS", "1"),
        ("SECCOLLAB_REALTIME__PRESENCE_HEARTBEAT_SECS", "1"),
        ("SECCOLLAB_MESSAGES__SEND_RATE_PER_SEC", "0"),
    ];
    let a = unlimited(Backend::Postgres, &env);
    let mut b = a.start_peer(&env);
    let (alice, bob) = (user(&a, "alice@example.org"), user(&a, "bob@example.org"));
    send_text(&a, &alice, &bob, "contacts");
    let mut bob_on_a = Ws::connect(&a, &bob.token);
    bob_on_a.drain(&[], Duration::from_millis(300));
    let _alice_on_b = Ws::connect(&b, &alice.token);
    assert_eq!(bob_on_a.expect("presence_update", WAIT)["data"], json!({"user_id": alice.id, "status": "online"}));
    // Node B crashes: it cannot say goodbye, its row for Alice stays behind.
    b.kill9();
    assert_eq!(a.db.sql(&format!("SELECT count(*) FROM presence WHERE user_id = '{}'", alice.id)), "1");
    // Node A's heartbeat sweeps the row once it is 3 s old and tells Bob.
    let started = std::time::Instant::now();
    let update = loop {
        let u = bob_on_a.expect("presence_update", Duration::from_secs(10));
        // A repeat of "online" (each node tells what it sees) changes nothing; wait past it.
        if u["data"] != json!({"user_id": alice.id, "status": "online"}) {
            break u;
        }
    };
    assert_eq!(update["data"], json!({"user_id": alice.id, "status": "offline"}));
    assert!(started.elapsed() >= Duration::from_secs(1), "announced before the row went stale");
    assert_eq!(a.db.sql(&format!("SELECT count(*) FROM presence WHERE user_id = '{}'", alice.id)), "0");
    // Node A's own rows are refreshed, not swept: Bob is still online for Alice elsewhere.
    assert_eq!(a.db.sql(&format!("SELECT count(*) FROM presence WHERE user_id = '{}'", bob.id)), "1");
}

#[test]
fn presence_holds_across_two_nodes_until_the_last_device_leaves() {
    let grace = [("SECCOLLAB_REALTIME__PRESENCE_GRACE_SECS", "1"), ("SECCOLLAB_MESSAGES__SEND_RATE_PER_SEC", "0")];
    let a = unlimited(Backend::Postgres, &grace);
    let b = a.start_peer(&grace);
    let (alice, bob) = (user(&a, "alice@example.org"), user(&a, "bob@example.org"));
    send_text(&a, &alice, &bob, "contacts");
    let mut bob_on_b = Ws::connect(&b, &bob.token);
    bob_on_b.drain(&[], Duration::from_millis(300));
    // Alice comes online on node A: Bob (on B) is told, and Alice learns Bob is online on B.
    let mut alice_on_a = Ws::connect(&a, &alice.token);
    assert_eq!(bob_on_b.expect("presence_update", WAIT)["data"], json!({"user_id": alice.id, "status": "online"}));
    assert_eq!(alice_on_a.expect("presence_update", WAIT)["data"], json!({"user_id": bob.id, "status": "online"}));
    // A second device on node B, then the first one leaves: Alice is still online.
    let alice_on_b = Ws::connect(&b, &alice.token);
    alice_on_a.close();
    let seen = bob_on_b.drain(&["presence_update"], Duration::from_secs(3));
    assert!(
        seen.iter().all(|f| f["data"]["status"] == "online"),
        "a device left but another is still connected: {seen:?}"
    );
    assert_eq!(a.db.sql(&format!("SELECT count(*) FROM presence WHERE user_id = '{}'", alice.id)), "1");
    // The last device leaves: offline, once the grace period is over.
    alice_on_b.close();
    assert_eq!(bob_on_b.expect("presence_update", WAIT)["data"], json!({"user_id": alice.id, "status": "offline"}));
    // Back on node A: told again, although node A had announced her online before.
    let _alice_again = Ws::connect(&a, &alice.token);
    assert_eq!(bob_on_b.expect("presence_update", WAIT)["data"], json!({"user_id": alice.id, "status": "online"}));
}

#[test]
fn file_events_reach_the_owner_the_sharee_and_admins() {
    let srv = unlimited(Backend::Sqlite, &[]);
    let admin_tok = crate::auth::admin_token(&srv);
    let (owner, friend, other) =
        (user(&srv, "owner@example.org"), user(&srv, "friend@example.org"), user(&srv, "other@example.org"));
    let mut admin_ws = Ws::connect(&srv, &admin_tok);
    let mut owner_ws = Ws::connect(&srv, &owner.token);
    let mut friend_ws = Ws::connect(&srv, &friend.token);
    let mut other_ws = Ws::connect(&srv, &other.token);
    // Upload: the owner hears of it, then of the scan verdict.
    let f = upload(&srv, &owner.token, "notes.txt", b"plain notes");
    let fid = f["file_id"].as_str().unwrap().to_string();
    let up = owner_ws.expect("file_update", WAIT);
    assert_eq!(
        (up["data"]["change"].as_str(), up["data"]["file"]["id"].as_str()),
        (Some("uploaded"), Some(fid.as_str()))
    );
    let scan = owner_ws.expect("file_update", WAIT);
    assert_eq!(
        (scan["data"]["change"].as_str(), scan["data"]["scan_status"].as_str()),
        (Some("scanned"), Some("clean"))
    );
    // Share: the friend is told, with the permission.
    let r = post(
        &srv,
        "/api/files/share",
        Some(&owner.token),
        json!({"file_id": fid, "user_ids": [friend.id], "permissions": "view"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sh = friend_ws.expect("file_share", WAIT);
    assert_eq!(
        (sh["data"]["file"]["id"].as_str(), sh["data"]["permissions"].as_str()),
        (Some(fid.as_str()), Some("view"))
    );
    // Malware: quarantined, and every admin gets a security_alert; users do not.
    let bad = upload(&srv, &owner.token, "eicar.txt", crate::files::EICAR.as_bytes());
    let bad_id = bad["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, &owner.token, &bad_id), "quarantined");
    let alert = admin_ws.expect("security_alert", WAIT);
    assert_eq!(alert["data"]["kind"], "malware_detected");
    assert_eq!(alert["data"]["subject"], json!({"type": "file", "id": bad_id}));
    assert!(alert["seq"].as_i64().is_some(), "alerts are stored for resume");
    for (name, ws) in [("owner", &mut owner_ws), ("friend", &mut friend_ws)] {
        let seen = ws.drain(&["security_alert"], Duration::from_millis(300));
        assert!(seen.is_empty(), "{name} must not get admin alerts");
    }
    let other_seen = other_ws.drain(&["security_alert", "file_update", "file_share"], Duration::from_millis(300));
    assert!(other_seen.is_empty(), "other has nothing to do with these files: {other_seen:?}");
}

/// What a `send_message` frame should get back.
pub enum Expect {
    Sent(String),
    Refused(&'static str),
}

/// Sends `frames` over one socket without waiting, then reads one answer per frame: the answers
/// come in the frames' order and carry each frame's `client_id` (`null` when it had none usable).
/// Returns the stored messages, in the order their answers came.
pub fn send_over_socket(ws: &mut Ws, frames: &[(Value, Expect)]) -> Vec<Value> {
    for (f, _) in frames {
        ws.sock.write(Message::Text(f.to_string())).expect("queue frame");
    }
    ws.sock.flush().expect("send frames");
    let mut stored = Vec::new();
    let mut others = Vec::new();
    for (i, (frame, expect)) in frames.iter().enumerate() {
        let a = loop {
            let f = ws.next(WAIT).unwrap_or_else(|| panic!("no answer to frame {i}"));
            if f["event"] == "message_sent" || f["event"] == "error" {
                break f;
            }
            others.push(f);
        };
        let id = match &frame["data"]["client_id"] {
            Value::String(s) => json!(s),
            _ => Value::Null,
        };
        assert_eq!(a["data"]["client_id"], id, "answer {i} belongs to frame {i}: {a}");
        assert!(a.get("seq").is_none(), "answers are not stored events: {a}");
        match expect {
            Expect::Sent(content) => {
                assert_eq!(a["event"], "message_sent", "frame {i}: {a}");
                assert_eq!(a["data"]["message"]["content"].as_str(), Some(content.as_str()), "frame {i}");
                stored.push(a["data"]["message"].clone());
            }
            Expect::Refused(code) => {
                assert_eq!(a["event"], "error", "frame {i}: {a}");
                assert_eq!(a["data"]["code"], *code, "frame {i}: {a}");
            }
        }
    }
    // Everything else (the sender's own `new_message` copies, ...) is still there for `next`.
    ws.backlog.extend(others);
    stored
}

both_backends!(messages_sent_over_the_websocket_are_answered_in_order_stored_and_delivered, |b: Backend| {
    // A budget of 60 sends that does not refill during the test.
    let srv = Server::start_with(
        TestDb::new(b),
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_MESSAGES__SEND_RATE_PER_SEC", "0.001"),
            ("SECCOLLAB_MESSAGES__SEND_BURST", "60"),
        ],
    );
    let admin = crate::auth::admin_token(&srv);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let mut alice_ws = Ws::connect(&srv, &alice.token);
    let mut bob_ws = Ws::connect(&srv, &bob.token);
    let to_bob = |cid: &str, content: &str| json!({"event": "send_message", "data": {"client_id": cid, "receiver_id": bob.id, "content": content}});
    // 10,000 characters that JSON escapes at up to 6 bytes each: a frame far over 16 KiB.
    let big: String = "\"\u{1}é\\".repeat(2500);
    let mut frames = Vec::new();
    for i in 0..50 {
        frames.push((to_bob(&format!("c{i}"), &format!("ws {i}")), Expect::Sent(format!("ws {i}"))));
        let refusal = match i {
            10 => Some((to_bob("e1", "   "), "invalid_input")),
            20 => Some((
                json!({"event": "send_message", "data": {"client_id": "e2", "receiver_id": alice.id, "content": "me"}}),
                "invalid_input",
            )),
            // An unknown receiver takes from the budget, as over HTTP.
            30 => Some((
                json!({"event": "send_message", "data": {"client_id": "e3", "receiver_id": "nobody", "content": "x"}}),
                "user_not_found",
            )),
            40 => Some((
                json!({"event": "send_message",
                       "data": {"client_id": "e4", "receiver_id": bob.id, "content": "x", "type": "image"}}),
                "invalid_input",
            )),
            41 => Some((
                json!({"event": "send_message",
                       "data": {"client_id": "e5", "receiver_id": bob.id, "content": "x", "colour": "red"}}),
                "invalid_json",
            )),
            42 => Some((json!({"event": "send_message", "data": "hello"}), "invalid_input")),
            43 => Some((
                json!({"event": "send_message", "data": {"client_id": 7, "receiver_id": bob.id, "content": "x"}}),
                "invalid_input",
            )),
            44 => Some((to_bob("e8", &"x".repeat(10_001)), "invalid_input")),
            _ => None,
        };
        if let Some((f, code)) = refusal {
            frames.push((f, Expect::Refused(code)));
        }
    }
    frames.push((to_bob("big", &big), Expect::Sent(big.clone())));
    // 50 + "nobody" + big = 52 of 60: of 12 more, 8 are stored and 4 refused.
    for j in 0..12 {
        let expect = if j < 8 { Expect::Sent(format!("late {j}")) } else { Expect::Refused("rate_limited") };
        frames.push((to_bob(&format!("l{j}"), &format!("late {j}")), expect));
    }
    let stored = send_over_socket(&mut alice_ws, &frames);
    assert_eq!(stored.len(), 59);
    let stored_ids: Vec<Value> = stored.iter().map(|m| m["id"].clone()).collect();
    let ids = |v: &[Value]| v.iter().map(|f| f["data"]["message"]["id"].clone()).collect::<Vec<_>>();
    // The sender's socket gets its copies too, like her other devices.
    let own = alice_ws.drain(&["new_message"], Duration::from_millis(500));
    assert_eq!(ids(&own), stored_ids, "the sender's socket gets its copies too");
    // A refusal for the rate says when to try again, and HTTP shares the budget.
    alice_ws.send(to_bob("again", "again"));
    let a = alice_ws.expect("error", WAIT);
    assert_eq!((a["data"]["code"].as_str(), a["data"]["client_id"].as_str()), (Some("rate_limited"), Some("again")));
    assert!(a["data"]["retry_after"].as_u64().unwrap_or(0) >= 1, "{a}");
    let r = post(&srv, "/api/messages/send", Some(&alice.token), json!({"receiver_id": bob.id, "content": "http"}));
    r.assert_error(429, "rate_limited");

    // Bob got each stored message once, in the order Alice sent them.
    let got = bob_ws.drain(&["new_message"], Duration::from_millis(1500));
    assert_eq!(ids(&got), stored_ids);
    assert_eq!(got[50]["data"]["message"]["content"].as_str(), Some(big.as_str()), "the big one arrives intact");
    let seqs: Vec<i64> = got.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // The conversation holds exactly those, in that order.
    let page = get(&srv, &format!("/api/messages/{}?limit=200", alice.id), &bob.token).json();
    let history: Vec<Value> = page["messages"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect();
    assert_eq!(history, stored_ids);

    // Every frame is audited with who sent it and what became of it, in the order sent: a
    // refused frame by an entry of its own, accepted ones by entries that list the stored
    // messages (one entry for a run of them; see docs/realtime.md).
    let mut expected: Vec<Value> = Vec::new();
    let mut stored_iter = stored_ids.iter();
    for (_, e) in &frames {
        expected.push(match e {
            Expect::Sent(_) => stored_iter.next().unwrap().clone(),
            Expect::Refused(_) => json!("refused"),
        });
    }
    expected.push(json!("refused")); // "again"
    let deadline = Instant::now() + WAIT;
    let (entries, audited) = loop {
        let l = get(&srv, &format!("/api/admin/logs?action=ws.send_message&actor_id={}&limit=200", alice.id), &admin)
            .json();
        let mut e = l["entries"].as_array().unwrap().clone();
        e.reverse(); // oldest first
        let audited: Vec<Value> = e
            .iter()
            .flat_map(|x| match x["outcome"].as_str() {
                Some("success") if x["target_type"] == "message" => vec![x["target_id"].clone()],
                Some("success") => {
                    x["details"]["messages"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect()
                }
                _ => vec![json!("refused")],
            })
            .collect();
        if audited.len() >= expected.len() || Instant::now() > deadline {
            break (e, audited);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(audited, expected, "each frame audited once, in order");
    let ok: Vec<&Value> = entries.iter().filter(|e| e["outcome"] == "success").collect();
    assert!(ok.len() < 59, "accepted sends are audited in batches: {} entries for 59", ok.len());
    for e in &ok {
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
        assert_eq!(e["details"]["status"], 201, "{e}");
        if let Some(list) = e["details"]["messages"].as_array() {
            assert_eq!(e["details"]["count"].as_u64(), Some(list.len() as u64), "{e}");
            assert!(list.iter().all(|m| m["receiver_id"] == json!(bob.id)), "{e}");
        } else {
            assert_eq!(e["details"]["receiver_id"], json!(bob.id), "{e}");
        }
    }
    let limited = entries.iter().filter(|e| e["details"]["status"] == 429).count();
    assert_eq!(limited, 5);
});

/// `n` `send_message` frames to `to`, contents "`tag` 0", "`tag` 1", …, each expected stored.
fn numbered_sends(to: &str, tag: &str, n: usize) -> Vec<(Value, Expect)> {
    (0..n)
        .map(|i| {
            let data = json!({"client_id": format!("{tag}{i}"), "receiver_id": to, "content": format!("{tag} {i}")});
            (json!({"event": "send_message", "data": data}), Expect::Sent(format!("{tag} {i}")))
        })
        .collect()
}

// Accepted sends are audited in runs (docs/realtime.md); a server stopped (SIGTERM) right after
// a run still writes its entry: every stored message is in the log, once, in order.
both_backends!(a_run_of_accepted_sends_is_audited_when_the_server_stops, |b: Backend| {
    let mut srv = unlimited(b, &[]);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let mut alice_ws = Ws::connect(&srv, &alice.token);
    let frames = numbered_sends(&bob.id, "stop", 40);
    let stored = send_over_socket(&mut alice_ws, &frames);
    let ids: Vec<String> = stored.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(srv.stop(), 0, "clean exit on SIGTERM");
    let db = seccollab::db::Db::open(&srv.db.config()).expect("open db");
    let mut conn = db.get().expect("conn");
    let f = seccollab::audit::LogFilter { action: Some("ws.send_message".into()), ..Default::default() };
    let mut entries = seccollab::audit::query::list(&mut conn, &f, None, 10_000).expect("list");
    entries.sort_by_key(|e| e.seq);
    let mut audited = Vec::new();
    for e in &entries {
        assert_eq!((e.outcome.as_str(), e.actor_id.as_deref()), ("success", Some(alice.id.as_str())));
        let d: Value = serde_json::from_str(&e.details).unwrap();
        match e.target_id.clone() {
            Some(id) => audited.push(id),
            None => {
                audited.extend(d["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()))
            }
        }
    }
    assert_eq!(audited, ids, "every stored message audited once, in order");
    assert!(entries.len() < ids.len(), "in runs: {} entries for {} messages", entries.len(), ids.len());
});

/// 500 frames written at once: the server holds back (stops reading) while 32 wait, stores
/// every one in order, and keeps the connection.
#[test]
fn a_burst_of_sends_is_held_back_not_lost() {
    let srv = unlimited(Backend::Sqlite, &[]);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let mut alice_ws = Ws::connect(&srv, &alice.token);
    let mut bob_ws = Ws::connect(&srv, &bob.token);
    let frames = numbered_sends(&bob.id, "burst", 500);
    let stored = send_over_socket(&mut alice_ws, &frames);
    assert_eq!(stored.len(), 500);
    let got = bob_ws.drain(&["new_message"], Duration::from_millis(1500));
    let contents: Vec<&str> = got.iter().map(|f| f["data"]["message"]["content"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..500).map(|i| format!("burst {i}")).collect();
    assert_eq!(contents, expected);
    // The longest message a client can write: 10,000 characters outside the BMP, each escaped
    // as a surrogate pair (12 bytes: a ~120 KB frame), as e.g. Python's json.dumps writes it.
    let raw = format!(
        r#"{{"event":"send_message","data":{{"client_id":"emoji","receiver_id":"{}","content":"{}"}}}}"#,
        bob.id,
        "\\ud83d\\ude00".repeat(10_000)
    );
    assert!(raw.len() > 120_000);
    alice_ws.sock.send(Message::Text(raw)).expect("send frame");
    let a = alice_ws.expect("message_sent", WAIT);
    assert_eq!(a["data"]["client_id"], "emoji");
    assert_eq!(a["data"]["message"]["content"].as_str(), Some("\u{1F600}".repeat(10_000).as_str()));
    let f = bob_ws.expect("new_message", WAIT);
    assert_eq!(f["data"]["message"]["id"], a["data"]["message"]["id"]);
    // Still connected and answering.
    alice_ws.send(json!({"event": "ping"}));
    alice_ws.expect("pong", WAIT);
}

/// The admin console's socket (console cookie) only listens: `send_message` is refused there
/// and the connection stays usable; a cross-site page cannot open it.
#[test]
fn the_admin_consoles_socket_only_listens() {
    use tungstenite::client::IntoClientRequest;
    let srv = unlimited(Backend::Sqlite, &[]);
    crate::auth::admin_password_only(&srv, "root@example.org");
    let bob = user(&srv, "bob@example.org");
    let (browser, _) = crate::admin_console::first_sign_in(&srv);
    let url = format!("{}/admin/ws", srv.base.replacen("http://", "ws://", 1));
    let request = |origin: &str| {
        let mut r = url.as_str().into_client_request().unwrap();
        r.headers_mut().insert("Cookie", browser.cookie_header().parse().unwrap());
        r.headers_mut().insert("Origin", origin.parse().unwrap());
        r
    };
    match tungstenite::connect(request("https://evil.example")) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
        other => panic!("a cross-site upgrade must be refused: {:?}", other.map(|_| ())),
    }
    let own = srv.base.clone();
    let (sock, _) = tungstenite::connect(request(&own)).expect("the console's own page may connect");
    let mut ws = Ws { sock, backlog: Default::default() };
    let f = json!({"event": "send_message", "data": {"client_id": "x", "receiver_id": bob.id, "content": "hi"}});
    assert!(send_over_socket(&mut ws, &[(f, Expect::Refused("forbidden"))]).is_empty());
    ws.send(json!({"event": "ping"}));
    ws.expect("pong", WAIT);
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages"), "0", "nothing was stored");
}

/// A socket opened with an access token sends only while that token is valid (it may go on
/// receiving while the session lives); a fresh connection sends again.
#[test]
fn sending_over_a_socket_ends_with_its_access_token() {
    let srv = unlimited(Backend::Sqlite, &[("SECCOLLAB_AUTH__ACCESS_TOKEN_TTL_SECS", "3")]);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let mut ws = Ws::connect(&srv, &alice.token);
    let to_bob =
        |cid: &str| json!({"event": "send_message", "data": {"client_id": cid, "receiver_id": bob.id, "content": cid}});
    assert_eq!(send_over_socket(&mut ws, &[(to_bob("early"), Expect::Sent("early".into()))]).len(), 1);
    std::thread::sleep(Duration::from_millis(3500));
    assert!(send_over_socket(&mut ws, &[(to_bob("late"), Expect::Refused("token_expired"))]).is_empty());
    // Still receiving: a message from Bob (fresh sign-in) arrives on the same socket.
    let bob_again = user_token_again(&srv, "bob@example.org");
    let m = send_text(&srv, &bob_again, &alice, "still here");
    let mine = ws.expect("new_message", WAIT); // her own copy of "early"
    assert_eq!(mine["data"]["message"]["content"], "early");
    assert_eq!(ws.expect("new_message", WAIT)["data"]["message"]["id"], m["id"]);
    let fresh = user_token_again(&srv, "alice@example.org");
    let mut ws2 = Ws::connect(&srv, &fresh.token);
    assert_eq!(send_over_socket(&mut ws2, &[(to_bob("again"), Expect::Sent("again".into()))]).len(), 1);
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages WHERE content = 'late'"), "0");
}

/// Signs an existing user in again (a fresh access token).
fn user_token_again(srv: &Server, email: &str) -> U {
    let r = crate::auth::login(srv, email, crate::auth::PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    U::of_login(&r.json())
}

/// A `/metrics` sample by its full name with labels.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

both_backends!(the_event_writers_work_shows_in_metrics, |b: Backend| {
    let srv = unlimited(b, &[]);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let before = srv.get("/metrics").text();
    for i in 0..20 {
        send_text(&srv, &alice, &bob, &format!("m{i}"));
    }
    let after = srv.get("/metrics").text();
    let d = |name: &str| metric(&after, name) - metric(&before, name);
    // Each send waited for its own commit: 20 jobs, in at most 20 group commits.
    assert!(d("seccollab_events_committed_total") >= 20.0, "{after}");
    let batches = d("seccollab_event_batches_total");
    assert!((1.0..=d("seccollab_events_committed_total")).contains(&batches), "{after}");
    assert_eq!(d("seccollab_events_failed_total"), 0.0);
    let tx = r#"seccollab_db_writer_transactions_total{writer="events"}"#;
    // Every commit is a transaction of the events writer (give or take the one a snapshot may
    // have caught between counting its transaction and counting its commit).
    assert!(d(tx) + 1.0 >= batches, "{after}");
    assert!(d(r#"seccollab_db_writer_busy_seconds_total{writer="events"}"#) > 0.0, "{after}");
    assert!(after.contains("# TYPE seccollab_db_writer_wait_seconds_total counter"), "{after}");
    // The 20 requests' audit entries are written by the audit writer (queued, so soon after).
    let audit_tx = r#"seccollab_db_writer_transactions_total{writer="audit"}"#;
    crate::harness::wait_until("the audit writer's transactions to show", 10, || {
        metric(&srv.get("/metrics").text(), audit_tx) > metric(&before, audit_tx)
    });
});
