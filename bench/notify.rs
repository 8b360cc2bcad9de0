//! Meeting invitations and the e-mail outbox against the real server binary (release, SQLite)
//! and a real SMTP server (aiosmtpd, `tests/support/smtp_sink.py`):
//! `cargo bench -p seccollab --bench notify`.
//!
//! 1. **Request path with SMTP down**: `NOTIFY_BENCH_MEETINGS` (default 500) sequential
//!    `POST /api/schedules` with 20 participants and `notify_via: [email, in_app]` while nothing
//!    listens on the SMTP port: latency percentiles, against a baseline of the same calls with
//!    `notify_via: [in_app]` (no e-mail rendered or queued) in the same run. 500 × 20 = 10,000
//!    e-mails are left queued.
//! 2. **Drain**: the SMTP server starts; time until all queued e-mails arrived → messages/s.
//! 3. **End to end**: 50 more meetings at 5/s with the SMTP server up: delay from the request to
//!    the arrival of each of its e-mails at the SMTP server.
//! 4. **Slow SMTP**: the SMTP server holds each message 0.5 s; 200 more meetings: request
//!    latency percentiles.
//!
//! Needs Python with aiosmtpd (`SECCOLLAB_TEST_PYTHON`, default the venv `./tests/run` makes).

#[path = "common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{pct, start, Http};

struct Sink {
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl Sink {
    fn spawn(dir: &std::path::Path, port: u16, delay: f64) -> Sink {
        let python =
            std::env::var("SECCOLLAB_TEST_PYTHON").unwrap_or_else(|_| "/var/tmp/seccollab-venv/bin/python".into());
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(["--dir", dir.to_str().unwrap(), "--port", &port.to_string(), "--delay", &delay.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink (python with aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening on "), "SMTP sink said {line:?}");
        Sink { child: Some(child), dir: dir.to_path_buf() }
    }

    fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
            .unwrap_or(0)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()
}

async fn create(http: &mut Http, token: &str, participants: &str, channels: &str, title: &str) -> u64 {
    let body = format!(
        r#"{{"title":"{title}","description":"Agenda","start_time":"2026-12-01T09:00:00Z","end_time":"2026-12-01T10:00:00Z","participants":{participants},"notify_via":{channels}}}"#
    );
    let t = Instant::now();
    let status = http.post("/api/schedules", token, &body).await;
    assert_eq!(status, 201, "create meeting");
    t.elapsed().as_micros() as u64
}

fn summary(name: &str, mut l: Vec<u64>) -> (f64, f64) {
    l.sort_unstable();
    let (p50, p99) = (pct(&l, 0.50), pct(&l, 0.99));
    println!("  {name:<44} n={:<5} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  max {:>7.2} ms", l.len(), pct(&l, 1.0));
    (p50, p99)
}

#[tokio::main]
async fn main() {
    let meetings: usize = std::env::var("NOTIFY_BENCH_MEETINGS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let sink_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port(); // nothing listens yet: SMTP is down
    let port_s = smtp_port.to_string();
    let env = [
        ("SECCOLLAB_SMTP__HOST", "127.0.0.1"),
        ("SECCOLLAB_SMTP__PORT", port_s.as_str()),
        ("SECCOLLAB_SMTP__TLS", "none"),
        ("SECCOLLAB_SMTP__FROM", "SecCollab <noreply@bench.example>"),
        ("SECCOLLAB_SMTP__RETRY_BASE_SECS", "1"),
        ("SECCOLLAB_SMTP__RETRY_MAX_SECS", "2"),
        ("SECCOLLAB_SMTP__MAX_ATTEMPTS", "1000"),
        ("SECCOLLAB_SMTP__TIMEOUT_SECS", "10"),
    ];
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (srv, ids, tokens) = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        start(21, &env)
    })
    .await
    .unwrap();
    let participants = format!("[{}]", ids[1..].iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(","));
    let mut http = Http::connect(&srv.addr).await;
    println!("notify bench: 20 participants per meeting, {meetings} meetings, SQLite, release build");

    // 1. SMTP down: with e-mail vs without, interleaved so machine noise hits both alike.
    let (mut with_mail, mut in_app_only) = (Vec::new(), Vec::new());
    for i in 0..meetings {
        with_mail.push(create(&mut http, &tokens[0], &participants, r#"["email","in_app"]"#, &format!("m{i}")).await);
        in_app_only.push(create(&mut http, &tokens[0], &participants, r#"["in_app"]"#, &format!("a{i}")).await);
    }
    println!("1. POST /api/schedules while the SMTP server is down");
    let (_, p99_mail) = summary("email + in_app (20 e-mails queued per call)", with_mail);
    let (_, p99_base) = summary("in_app only (baseline, no e-mail)", in_app_only);
    println!("  p99 ratio email/baseline: {:.2}", p99_mail / p99_base);

    // 2. Drain the backlog.
    let queued = meetings * 20;
    let t = Instant::now();
    let sink = Sink::spawn(sink_dir.path(), smtp_port, 0.0);
    let mut first = None;
    loop {
        let n = sink.count();
        if n > 0 && first.is_none() {
            first = Some(t.elapsed());
        }
        if n >= queued {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1800), "drain stalled at {n}/{queued}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = t.elapsed();
    let first = first.unwrap_or_default();
    let rate = queued as f64 / (total - first).as_secs_f64();
    println!("2. drain of {queued} queued e-mails into aiosmtpd");
    println!(
        "  first after {:.2} s (retry back-off), all after {:.2} s: {rate:.0} messages/s",
        first.as_secs_f64(),
        total.as_secs_f64()
    );

    // 3. End-to-end delay with the SMTP server up: 50 meetings, 5 per second.
    let n3 = 50;
    let before = sink.count();
    for _ in 0..n3 {
        let title = format!("e2e {}", now_micros());
        create(&mut http, &tokens[0], &participants, r#"["email","in_app"]"#, &title).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expect = before + n3 * 20;
    let t = Instant::now();
    while sink.count() < expect && t.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut e2e = Vec::new();
    for e in std::fs::read_dir(sink_dir.path()).unwrap().filter_map(|e| e.ok()) {
        if e.path().extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            let subject = v["subject"].as_str().unwrap_or("");
            let sent: Option<u128> =
                subject.split("e2e ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok());
            if let (Some(sent), Some(at)) = (sent, v["received_at"].as_f64()) {
                e2e.push(((at * 1e6) as u128).saturating_sub(sent) as u64);
            }
        }
    }
    println!("3. end-to-end with the SMTP server up ({} of {} e-mails arrived)", e2e.len(), n3 * 20);
    summary("request start → arrival at the SMTP server", e2e);
    drop(sink);

    // 4. Slow SMTP server (0.5 s per message): the request path does not notice.
    let slow_dir = tempfile::tempdir().unwrap();
    let _slow = Sink::spawn(slow_dir.path(), smtp_port, 0.5);
    let mut lat = Vec::new();
    for i in 0..200 {
        lat.push(create(&mut http, &tokens[0], &participants, r#"["email","in_app"]"#, &format!("s{i}")).await);
    }
    println!("4. SMTP server slow (0.5 s per message)");
    summary("POST /api/schedules, email + in_app", lat);
    drop(srv);
}
