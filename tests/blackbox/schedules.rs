//! Meetings, notifications and the e-mail outbox against the real binary and a real SMTP server
//! (aiosmtpd, `tests/support/smtp_sink.py`): invitations with a parseable ICS (parsed by the
//! Python `icalendar` package), RSVP, cancellation, SMTP outages, `kill -9` mid-delivery, and
//! hostile titles.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{admin_token, get, post};
use crate::both_backends;
use crate::harness::{repo_root, Backend, Server, TestDb};
use crate::realtime::{user, Ws, U};

/// A real SMTP server writing what it accepts to a folder, one JSON summary per message.
pub struct Sink {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    delay: f64,
    /// `--tls MODE --ca-out FILE --auth USER:PASSWORD` when asked for.
    extra: Vec<String>,
    /// The CA a TLS sink's certificate chains to (outside `dir`, which holds messages only).
    pub ca: Option<PathBuf>,
    _ca_dir: tempfile::TempDir,
}

fn python() -> String {
    std::env::var("SECCOLLAB_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

impl Sink {
    pub fn start(delay: f64) -> Sink {
        Self::start_with(delay, None, None)
    }

    /// A sink that speaks TLS (`starttls` or `tls`) with a throw-away CA, optionally requiring
    /// AUTH with `user:password`.
    pub fn start_with(delay: f64, tls: Option<&str>, auth: Option<&str>) -> Sink {
        let ca_dir = tempfile::tempdir().unwrap();
        let mut extra = Vec::new();
        let mut ca = None;
        if let Some(mode) = tls {
            let path = ca_dir.path().join("ca.pem");
            extra.extend(["--tls".into(), mode.into(), "--ca-out".into(), path.to_str().unwrap().into()]);
            ca = Some(path);
        }
        if let Some(a) = auth {
            extra.extend(["--auth".into(), a.into()]);
        }
        let mut s = Sink { dir: tempfile::tempdir().unwrap(), port: 0, child: None, delay, extra, ca, _ca_dir: ca_dir };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/support/smtp_sink.py"))
            .args(["--dir", self.dir.path().to_str().unwrap(), "--port", &self.port.to_string()])
            .args(["--delay", &self.delay.to_string()])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the SMTP sink (python3 with aiosmtpd; ./tests/run installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("SMTP sink said {line:?}"));
        self.port = port.parse().unwrap();
        self.child = Some(child);
    }

    /// Stops the server (the port stays reserved for [`Sink::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Everything received so far, in arrival order.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }

    /// Waits until at least `n` messages arrived; returns them.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(Instant::now() < deadline, "only {} of {n} e-mails arrived within {within:?}", m.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The environment that points a server at this sink, with fast retries.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("SECCOLLAB_SMTP__HOST", "127.0.0.1".to_string()),
            ("SECCOLLAB_SMTP__PORT", self.port.to_string()),
            ("SECCOLLAB_SMTP__TLS", "none".into()),
            ("SECCOLLAB_SMTP__FROM", "SecCollab <noreply@seccollab.test>".into()),
            ("SECCOLLAB_SMTP__RETRY_BASE_SECS", "1".into()),
            ("SECCOLLAB_SMTP__RETRY_MAX_SECS", "2".into()),
            ("SECCOLLAB_SMTP__TIMEOUT_SECS", "5".into()),
            ("SECCOLLAB_SMTP__CLAIM_TIMEOUT_SECS", "10".into()),
            ("SECCOLLAB_SMTP__PUBLIC_URL", "https://collab.example.org".into()),
            ("SECCOLLAB_AUTH__REGISTRATION", "open".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start(b: Backend, sink: &Sink) -> Server {
    let env = sink.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_with(TestDb::new(b), &env)
}

fn restart(db: TestDb, sink: &Sink) -> Server {
    let env = sink.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_with(db, &env)
}

const WAIT: Duration = Duration::from_secs(15);

fn meeting(srv: &Server, by: &U, title: &str, participants: &[&U]) -> crate::harness::Resp {
    let ids: Vec<&str> = participants.iter().map(|u| u.id.as_str()).collect();
    post(
        srv,
        "/api/schedules",
        Some(&by.token),
        json!({
            "title": title, "description": "Agenda: budget, roadmap",
            "start_time": "2026-12-01T09:00:00+01:00", "end_time": "2026-12-01T10:30:00+01:00",
            "participants": ids, "notify_via": ["email", "in_app"],
        }),
    )
}

fn request(srv: &Server, method: &str, path: &str, token: &str, body: Option<Value>) -> crate::harness::Resp {
    let auth = format!("Bearer {token}");
    let b = body.map(|b| b.to_string());
    srv.request(
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        b.as_ref().map(|s| s.as_bytes()),
    )
}

/// Messages for `addr`.
fn to<'a>(msgs: &'a [Value], addr: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["rcpt_tos"].as_array().unwrap().iter().any(|r| r == addr)).collect()
}

both_backends!(invitation_response_and_cancellation_by_email_and_live, |b| {
    let sink = Sink::start(0.0);
    let srv = start(b, &sink);
    let (alice, bob, carol) =
        (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"), user(&srv, "carol@example.org"));
    let mut bob_ws = Ws::connect(&srv, &bob.token);
    let mut alice_ws = Ws::connect(&srv, &alice.token);

    let r = meeting(&srv, &alice, "Quarterly planning", &[&bob, &carol]);
    assert_eq!(r.status, 201, "{}", r.text());
    let s = r.json()["schedule"].clone();
    let id = s["id"].as_str().unwrap().to_string();
    // Offsets are normalised to UTC; everyone starts pending.
    assert_eq!(s["start_time"], "2026-12-01T08:00:00Z");
    assert_eq!(s["end_time"], "2026-12-01T09:30:00Z");
    assert_eq!(s["status"], "scheduled");
    assert_eq!(s["creator"]["id"], alice.id.as_str());
    assert_eq!(s["creator"]["email"], "alice@example.org");
    let statuses: Vec<(&str, &str)> = s["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["user_id"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.iter().all(|(_, st)| *st == "pending"));

    // Live: the invitation and its notification.
    let inv = bob_ws.expect("meeting_invitation", WAIT);
    assert_eq!(inv["data"]["schedule"]["id"], id.as_str());
    assert_eq!(inv["data"]["schedule"]["my_status"], "pending");
    assert!(inv["seq"].as_i64().is_some(), "invitations are persisted events");
    let note = bob_ws.expect("notification", WAIT);
    assert_eq!(note["data"]["notification"]["kind"], "meeting_invitation");

    // E-mail: one per participant, right recipient and subject, ICS that icalendar parses.
    let msgs = sink.wait_for(2, WAIT);
    assert_eq!(msgs.len(), 2);
    for (u, addr) in [(&bob, "bob@example.org"), (&carol, "carol@example.org")] {
        let m = to(&msgs, addr);
        assert_eq!(m.len(), 1, "one invitation to {addr}");
        let m = m[0];
        assert_eq!(m["rcpt_tos"], json!([addr]));
        assert!(m["subject"].as_str().unwrap().starts_with("Invitation: Quarterly planning"), "{}", m["subject"]);
        assert!(m["from"].as_str().unwrap().contains("noreply@seccollab.test"));
        assert!(m["text"].as_str().unwrap().contains("Quarterly planning"));
        assert!(m["html"].as_str().unwrap().contains("https://collab.example.org/meetings/"));
        let cal = &m["calendars"][0];
        assert_eq!(cal["method"], "REQUEST");
        let ev = &cal["events"][0];
        assert_eq!(ev["uid"], format!("{id}@seccollab").as_str());
        assert_eq!(ev["sequence"], 0);
        assert_eq!(ev["summary"], "Quarterly planning");
        assert_eq!(ev["dtstart"], "2026-12-01T08:00:00+00:00");
        assert_eq!(ev["dtend"], "2026-12-01T09:30:00+00:00");
        assert_eq!(ev["organizer"], "mailto:alice@example.org");
        let atts: Vec<(&str, &str)> = ev["attendees"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["address"].as_str().unwrap(), a["partstat"].as_str().unwrap()))
            .collect();
        assert!(atts.contains(&("mailto:bob@example.org", "NEEDS-ACTION")), "{atts:?}");
        assert!(atts.contains(&("mailto:carol@example.org", "NEEDS-ACTION")), "{atts:?}");
        let _ = u;
    }

    // The ICS endpoint says the same, to participants only.
    let r = get(&srv, &format!("/api/schedules/{id}/ics"), &carol.token);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/calendar"));
    assert!(r.text().contains(&format!("UID:{id}@seccollab")));
    let outsider = user(&srv, "dave@example.org");
    get(&srv, &format!("/api/schedules/{id}/ics"), &outsider.token).assert_error(404, "schedule_not_found");
    get(&srv, &format!("/api/schedules/{id}"), &outsider.token).assert_error(404, "schedule_not_found");

    // Decline → the creator gets schedule_response; the status shows in everyone's list.
    let r = post(&srv, &format!("/api/schedules/{id}/respond"), Some(&bob.token), json!({"status": "declined"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["schedule"]["my_status"], "declined");
    let resp = alice_ws.expect("schedule_response", WAIT);
    assert_eq!(resp["data"]["schedule_id"], id.as_str());
    assert_eq!(resp["data"]["user_id"], bob.id.as_str());
    assert_eq!(resp["data"]["status"], "declined");
    let list = get(&srv, "/api/schedules", &alice.token).json();
    let mine = &list["schedules"][0];
    let bob_status = mine["participants"].as_array().unwrap().iter().find(|p| p["user_id"] == bob.id.as_str()).unwrap();
    assert_eq!(bob_status["status"], "declined");
    // Bad answers and answers from the wrong people.
    post(&srv, &format!("/api/schedules/{id}/respond"), Some(&bob.token), json!({"status": "maybe"}))
        .assert_error(400, "invalid_input");
    post(&srv, &format!("/api/schedules/{id}/respond"), Some(&alice.token), json!({"status": "accepted"}))
        .assert_error(403, "forbidden");
    post(&srv, &format!("/api/schedules/{id}/respond"), Some(&outsider.token), json!({"status": "accepted"}))
        .assert_error(404, "schedule_not_found");

    // A participant cannot cancel; the creator can, and everyone hears of it.
    request(&srv, "DELETE", &format!("/api/schedules/{id}"), &carol.token, None).assert_error(403, "forbidden");
    assert_eq!(request(&srv, "DELETE", &format!("/api/schedules/{id}"), &alice.token, None).status, 204);
    let c = bob_ws.expect("meeting_cancelled", WAIT);
    assert_eq!(c["data"]["schedule"]["status"], "cancelled");
    let msgs = sink.wait_for(4, WAIT);
    let cancels: Vec<&Value> =
        msgs.iter().filter(|m| m["subject"].as_str().unwrap().starts_with("Cancelled: Quarterly planning")).collect();
    assert_eq!(cancels.len(), 2, "one cancellation per participant");
    for m in cancels {
        assert_eq!(m["calendars"][0]["method"], "CANCEL");
        assert_eq!(m["calendars"][0]["events"][0]["sequence"], 1, "SEQUENCE bumped on cancellation");
        assert_eq!(m["calendars"][0]["events"][0]["uid"], format!("{id}@seccollab").as_str());
    }
    // Marked cancelled, never deleted; no more answers.
    let s = get(&srv, &format!("/api/schedules/{id}"), &bob.token).json();
    assert_eq!(s["schedule"]["status"], "cancelled");
    post(&srv, &format!("/api/schedules/{id}/respond"), Some(&carol.token), json!({"status": "accepted"}))
        .assert_error(409, "schedule_cancelled");
    assert!(get(&srv, &format!("/api/schedules/{id}/ics"), &bob.token).text().contains("METHOD:CANCEL"));

    // In-app notifications: listed, counted, marked read, private.
    let n = get(&srv, "/api/notifications", &bob.token).json();
    let kinds: Vec<&str> = n["notifications"].as_array().unwrap().iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["meeting_cancelled", "meeting_invitation"], "newest first");
    assert_eq!(n["unread_count"], 2);
    let nid = n["notifications"][0]["id"].as_str().unwrap();
    post(&srv, &format!("/api/notifications/{nid}/read"), Some(&carol.token), json!({}))
        .assert_error(404, "notification_not_found");
    let r = post(&srv, &format!("/api/notifications/{nid}/read"), Some(&bob.token), json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["notification"]["read"], true);
    assert_eq!(get(&srv, "/api/notifications", &bob.token).json()["unread_count"], 1);
    assert_eq!(
        get(&srv, "/api/notifications?unread=true", &bob.token).json()["notifications"].as_array().unwrap().len(),
        1
    );

    // Every step is in the audit log.
    let admin = admin_token(&srv);
    let audit = get(&srv, "/api/admin/logs?limit=200", &admin).json();
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["schedule.create", "schedule.respond", "schedule.cancel"] {
        assert!(actions.contains(&a), "{a} missing from the audit log: {actions:?}");
    }
    // No e-mail was sent twice.
    let msgs = sink.messages();
    let ids: std::collections::HashSet<&str> = msgs.iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), msgs.len());
});

both_backends!(bad_meetings_are_refused_and_change_nothing, |b| {
    let sink = Sink::start(0.0);
    let srv = start(b, &sink);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let base = json!({
        "title": "Sync", "description": "", "start_time": "2026-12-01T09:00:00Z",
        "end_time": "2026-12-01T10:00:00Z", "participants": [bob.id],
    });
    let with = |k: &str, v: Value| {
        let mut x = base.clone();
        x[k] = v;
        x
    };
    let cases = [
        with("end_time", json!("2026-12-01T09:00:00Z")),
        with("end_time", json!("2026-12-01T08:00:00Z")),
        with("start_time", json!("tomorrow at nine")),
        with("start_time", json!("2026-12-01T09:00:00")), // no offset
        with("participants", json!(["no-such-user"])),
        with("participants", json!([bob.id, bob.id])),
        with("participants", json!([alice.id])),
        with("participants", json!([])),
        with("title", json!("   ")),
        with("title", json!("x".repeat(100_000))),
        with("notify_via", json!(["pigeon"])),
        with("surprise", json!(1)),
    ];
    for body in cases {
        let r = post(&srv, "/api/schedules", Some(&alice.token), body.clone());
        assert_eq!(r.status, 400, "accepted {body}: {}", r.text());
        let code = r.json()["error"]["code"].as_str().unwrap().to_string();
        assert!(code == "invalid_input" || code == "invalid_json", "{code}");
    }
    assert_eq!(get(&srv, "/api/schedules", &alice.token).json()["schedules"], json!([]));
    assert_eq!(get(&srv, "/api/notifications", &bob.token).json()["notifications"], json!([]));
    // Unauthenticated: 401 in the JSON error shape.
    post(&srv, "/api/schedules", None, base.clone()).assert_error(401, "unauthenticated");
    // Nothing was queued for e-mail either.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.messages().len(), 0);
});

both_backends!(smtp_outage_delays_but_loses_and_duplicates_nothing, |b| {
    let mut sink = Sink::start(0.0);
    sink.stop(); // the SMTP server is down from the start
    let srv = start(b, &sink);
    let (alice, bob, carol) =
        (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"), user(&srv, "carol@example.org"));
    let t0 = Instant::now();
    for i in 0..5 {
        let r = meeting(&srv, &alice, &format!("Standup {i}"), &[&bob, &carol]);
        assert_eq!(r.status, 201, "the request path does not wait on SMTP: {}", r.text());
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "creating meetings with SMTP down took {:?}", t0.elapsed());
    // The admin sees them queued; the ones tried carry the connection error. The workers pause
    // while the server is down (circuit breaker) instead of trying each message, and an outage
    // does not spend a message's attempts.
    let admin = admin_token(&srv);
    let deadline = Instant::now() + WAIT;
    loop {
        let o = get(&srv, "/api/admin/email/outbox?status=queued", &admin).json();
        let msgs = o["messages"].as_array().unwrap();
        let tried: Vec<&Value> = msgs.iter().filter(|m| m["last_error"].is_string()).collect();
        if msgs.len() == 10 && !tried.is_empty() {
            assert!(tried.iter().all(|m| m["last_error"].as_str().unwrap().contains("refused")), "{o}");
            assert!(msgs.iter().all(|m| m["attempts"] == 0), "{o}");
            assert_eq!(o["counts"]["queued"], 10);
            break;
        }
        assert!(Instant::now() < deadline, "outbox never showed the connection error: {o}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A non-admin may not look.
    get(&srv, "/api/admin/email/outbox", &bob.token).assert_error(403, "forbidden");
    sink.restart();
    let msgs = sink.wait_for(10, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3)); // anything duplicated would arrive by now
    let msgs2 = sink.messages();
    assert_eq!(msgs2.len(), 10, "exactly the 10 invitations, none twice");
    let mut per: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        *per.entry(m["message_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(per.values().all(|&n| n == 1), "{per:?}");
    assert_eq!(to(&msgs2, "bob@example.org").len(), 5);
    assert_eq!(to(&msgs2, "carol@example.org").len(), 5);
    let o = get(&srv, "/api/admin/email/outbox", &admin).json();
    assert_eq!(o["counts"]["sent"], 10, "{o}");
});

#[test]
fn kill_9_mid_delivery_then_restart_sends_each_email_exactly_once() {
    // Slow SMTP server (0.3 s per recipient), so transactions are open long enough to kill the
    // sender in the middle of one. (A kill in the instant between the server's final 250 and
    // the commit of `sent` would duplicate that one e-mail, with the same Message-ID: no SMTP
    // client can close that window; see docs/notifications.md.)
    //
    // One delivery worker while the kill happens: with several, another worker may be in that
    // very window when the test sees a transaction open (the marker tells "some worker is in
    // RCPT", not "no worker is between 250 and its commit"). CI failed this test once with 8
    // workers; its output was cut, and this race is a way the assertions below can fail
    // with the code correct.
    // The restart runs the default pool of workers.
    let sink = Sink::start(0.3);
    let mut env = sink.env();
    env.push(("SECCOLLAB_SMTP__WORKERS".into(), "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut srv = Server::start_with(TestDb::new(Backend::Sqlite), &env);
    let alice = user(&srv, "alice@example.org");
    let people: Vec<U> = (0..6).map(|i| user(&srv, &format!("p{i}@example.org"))).collect();
    let refs: Vec<&U> = people.iter().collect();
    for i in 0..4 {
        assert_eq!(meeting(&srv, &alice, &format!("Review {i}"), &refs).status, 201);
    }
    let total = 4 * 6;
    sink.wait_for(3, Duration::from_secs(30));
    // Kill while the SMTP server holds a transaction open (it marks that with `inflight`): the
    // e-mail in hand was claimed but not delivered, others are claimed and waiting.
    let marker = sink.dir.path().join("inflight");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "no SMTP transaction in progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    srv.kill9();
    let before = sink.messages().len();
    assert!(before < total, "all {total} e-mails went out before the kill; the test proves nothing");
    let srv = restart(srv.take_db(), &sink);
    let msgs = sink.wait_for(total, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let msgs2 = sink.messages();
    assert_eq!(msgs2.len(), total, "{} e-mails for {total} invitations", msgs2.len());
    let mut per: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        *per.entry(m["message_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per.len(), total);
    assert!(per.values().all(|&n| n == 1), "{per:?}");
    drop(srv);
}

both_backends!(hostile_titles_never_break_headers_or_html, |b| {
    let sink = Sink::start(0.0);
    let srv = start(b, &sink);
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let hostile = "Hi\r\nBcc: evil@attacker.test\r\n\r\n<script>alert(1)</script> & <b>bold</b>";
    let r = post(
        &srv,
        "/api/schedules",
        Some(&alice.token),
        json!({
            "title": hostile, "description": "</td></tr><img src=x onerror=alert(1)>\r\nline two",
            "start_time": "2026-12-01T09:00:00Z", "end_time": "2026-12-01T10:00:00Z", "participants": [bob.id],
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Line breaks in a title become spaces: one line everywhere.
    let title = r.json()["schedule"]["title"].as_str().unwrap().to_string();
    assert_eq!(title, "Hi Bcc: evil@attacker.test <script>alert(1)</script> & <b>bold</b>");
    // 100 kB titles are refused, not truncated silently.
    let long = json!({
        "title": "A".repeat(100 * 1024), "start_time": "2026-12-01T09:00:00Z",
        "end_time": "2026-12-01T10:00:00Z", "participants": [bob.id],
    });
    post(&srv, "/api/schedules", Some(&alice.token), long).assert_error(400, "invalid_input");

    let msgs = sink.wait_for(1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let msgs = if msgs.len() == 1 { sink.messages() } else { msgs };
    assert_eq!(msgs.len(), 1, "one e-mail, to bob only");
    let m = &msgs[0];
    assert_eq!(m["rcpt_tos"], json!(["bob@example.org"]), "no injected recipient");
    let headers: Vec<&str> = m["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap()).collect();
    assert!(!headers.iter().any(|h| h.eq_ignore_ascii_case("bcc")), "{headers:?}");
    assert_eq!(headers.iter().filter(|h| h.eq_ignore_ascii_case("subject")).count(), 1);
    assert!(m["subject"].as_str().unwrap().starts_with(&format!("Invitation: {title}")), "{}", m["subject"]);
    // Every raw header line is a header or a folded continuation: nothing was split off.
    for line in m["raw_headers"].as_str().unwrap().split("\r\n") {
        assert!(line.starts_with([' ', '\t']) || line.contains(':'), "stray header line {line:?}");
        assert!(!line.to_ascii_lowercase().starts_with("bcc:"), "{line}");
    }
    let html = m["html"].as_str().unwrap();
    // Escaped as entities (askama writes `&#60;`), never raw markup.
    let escaped = |s: &str| {
        html.contains(&s.replace('<', "&#60;").replace('>', "&#62;"))
            || html.contains(&s.replace('<', "&lt;").replace('>', "&gt;"))
    };
    assert!(!html.contains("<script>") && escaped("<script>"), "title not escaped in HTML");
    assert!(!html.contains("<img src=x") && escaped("<img src=x"), "description not escaped in HTML");
    assert!(m["text"].as_str().unwrap().contains(&title), "the text part shows the title as written");
    assert_eq!(m["calendars"][0]["events"][0]["summary"], title.as_str());
    assert!(m["calendars"][0]["events"][0]["description"].as_str().unwrap().contains("line two"));
});

both_backends!(changes_reinvite_and_preferences_are_honoured, |b| {
    let sink = Sink::start(0.0);
    let srv = start(b, &sink);
    let (alice, bob, carol) =
        (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"), user(&srv, "carol@example.org"));
    // Carol wants no e-mail.
    let r = request(
        &srv,
        "PUT",
        "/api/notifications/preferences",
        &carol.token,
        Some(json!({"email": false, "in_app": true})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(&srv, "/api/notifications/preferences", &carol.token).json(),
        json!({"email": false, "in_app": true})
    );
    request(&srv, "PUT", "/api/notifications/preferences", &carol.token, Some(json!({"email": "no"})))
        .assert_error(400, "invalid_json");

    let r = meeting(&srv, &alice, "Design review", &[&bob, &carol]);
    let id = r.json()["schedule"]["id"].as_str().unwrap().to_string();
    post(&srv, &format!("/api/schedules/{id}/respond"), Some(&bob.token), json!({"status": "accepted"}));
    let msgs = sink.wait_for(1, WAIT);
    let mut bob_ws = Ws::connect(&srv, &bob.token);

    // Only the creator may change it; a new time bumps SEQUENCE, resets answers, re-invites.
    request(&srv, "PATCH", &format!("/api/schedules/{id}"), &bob.token, Some(json!({"title": "Mine now"})))
        .assert_error(403, "forbidden");
    request(
        &srv,
        "PATCH",
        &format!("/api/schedules/{id}"),
        &alice.token,
        Some(json!({"end_time": "2026-11-01T00:00:00Z"})),
    )
    .assert_error(400, "invalid_input");
    let r = request(
        &srv,
        "PATCH",
        &format!("/api/schedules/{id}"),
        &alice.token,
        Some(json!({"start_time": "2026-12-02T09:00:00Z", "end_time": "2026-12-02T10:00:00Z"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json()["schedule"].clone();
    assert_eq!(s["sequence"], 1);
    assert!(s["participants"].as_array().unwrap().iter().all(|p| p["status"] == "pending"));
    let inv = bob_ws.expect("meeting_invitation", WAIT);
    assert_eq!(inv["data"]["updated"], true);
    assert_eq!(inv["data"]["schedule"]["start_time"], "2026-12-02T09:00:00Z");
    let msgs2 = sink.wait_for(msgs.len() + 1, WAIT);
    std::thread::sleep(Duration::from_millis(800));
    let all = sink.messages();
    let _ = msgs2;
    // Bob got the invitation and the update; Carol (e-mail off) got nothing by e-mail but both
    // in the app.
    let bobs = to(&all, "bob@example.org");
    assert_eq!(bobs.len(), 2, "{all:?}");
    let upd = bobs.iter().find(|m| m["subject"].as_str().unwrap().starts_with("Updated invitation")).unwrap();
    assert_eq!(upd["calendars"][0]["events"][0]["sequence"], 1);
    assert_eq!(upd["calendars"][0]["method"], "REQUEST");
    assert!(to(&all, "carol@example.org").is_empty());
    let kinds: Vec<String> = get(&srv, "/api/notifications", &carol.token).json()["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["meeting_updated", "meeting_invitation"]);

    // File shares notify through the same path.
    let f = crate::files::upload(&srv, &alice.token, "notes.txt", b"meeting notes");
    let fid = f["file_id"].as_str().unwrap();
    let r = post(
        &srv,
        "/api/files/share",
        Some(&alice.token),
        json!({"file_id": fid, "user_ids": [carol.id], "permissions": "view"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let n = get(&srv, "/api/notifications?limit=1", &carol.token).json();
    assert_eq!(n["notifications"][0]["kind"], "file_share");
    assert_eq!(n["notifications"][0]["data"]["file_id"], fid);
    assert_eq!(r.status, 200);
});

#[test]
fn starttls_and_tls_with_authentication_deliver_and_bad_credentials_fail_visibly() {
    for mode in ["starttls", "tls"] {
        let sink = Sink::start_with(0.0, Some(mode), Some("mailer:s3cret-pass"));
        let ca = sink.ca.clone().unwrap();
        let mut env = sink.env();
        env.retain(|(k, _)| k != "SECCOLLAB_SMTP__TLS");
        env.extend([
            ("SECCOLLAB_SMTP__TLS".to_string(), mode.to_string()),
            ("SECCOLLAB_SMTP__CA_FILE".to_string(), ca.to_str().unwrap().to_string()),
            ("SECCOLLAB_SMTP__USERNAME".to_string(), "mailer".to_string()),
            ("SECCOLLAB_SMTP__PASSWORD".to_string(), "s3cret-pass".to_string()),
        ]);
        let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let srv = Server::start_with(TestDb::new(Backend::Sqlite), &e);
        let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
        assert_eq!(meeting(&srv, &alice, "Encrypted hop", &[&bob]).status, 201);
        let m = sink.wait_for(1, WAIT);
        assert_eq!(m[0]["rcpt_tos"], json!(["bob@example.org"]), "{mode}");
        drop(srv);

        // Wrong password: the server refuses (535, permanent) → `failed` at once, audited, and
        // bob hears of it in the app instead.
        for (k, v) in env.iter_mut() {
            if k == "SECCOLLAB_SMTP__PASSWORD" {
                *v = "wrong".into();
            }
        }
        let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let srv = Server::start_with(TestDb::new(Backend::Sqlite), &e);
        let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
        assert_eq!(meeting(&srv, &alice, "Doomed", &[&bob]).status, 201);
        let admin = admin_token(&srv);
        let deadline = Instant::now() + WAIT;
        let failed = loop {
            let o = get(&srv, "/api/admin/email/outbox?status=failed", &admin).json();
            if let Some(m) = o["messages"].as_array().unwrap().first() {
                break m.clone();
            }
            assert!(Instant::now() < deadline, "the e-mail never failed: {o}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(failed["attempts"], 1, "an authentication failure is not retried");
        assert!(failed["last_error"].as_str().unwrap().contains("535"), "{failed}");
        let deadline = Instant::now() + WAIT;
        loop {
            let n = get(&srv, "/api/notifications", &bob.token).json();
            let kinds: Vec<&str> =
                n["notifications"].as_array().unwrap().iter().map(|x| x["kind"].as_str().unwrap()).collect();
            if kinds.contains(&"email_failed") {
                break;
            }
            assert!(Instant::now() < deadline, "no fallback notice: {kinds:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let audit = get(&srv, "/api/admin/logs?action=notification.delivery_failed", &admin).json();
        assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
        // An admin can queue it again (it fails again: the password is still wrong).
        let id = failed["id"].as_str().unwrap();
        let r = post(&srv, &format!("/api/admin/email/outbox/{id}/retry"), Some(&admin), json!({}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["message"]["status"], "queued");
        assert_eq!(sink.messages().len(), 1, "nothing got through with the wrong password");
    }
}
