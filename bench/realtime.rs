//! Real-time load benchmark against the real server binary (release build, SQLite):
//! `cargo bench -p seccollab --bench realtime`.
//!
//! For each client count (default 1,000 and 10,000; `RT_BENCH_CLIENTS=1000,10000`) it opens that
//! many authenticated WebSocket connections, measures the server's RSS growth per idle
//! connection, then lets a share of the users (`RT_BENCH_SENDERS`, default 200) send text
//! messages to other connected users for `RT_BENCH_SECS` (default 10) seconds, over HTTP
//! keep-alive connections (`POST /api/messages/send`) and over a WebSocket (`send_message`):
//! `RT_BENCH_VIA=http`, `ws` or `http,ws` (default). Each sender waits for its answer before
//! sending again (`RT_BENCH_WS_DEPTH` frames in flight over the socket, default 1). Over the
//! WebSocket a sending client sends on the socket it also receives on (`RT_BENCH_SOCKETS=shared`,
//! default) or on a second socket of its user (`separate`: a second device, which also gets the
//! sender's copy; the figures before 2026-11-29's sixteenth session). It reports messages persisted and delivered per second (a message
//! counts when its receiver's socket got the `new_message`) and the send-to-receive latency
//! percentiles (the send time travels in the message text).
//!
//! Users, sessions and tokens are written straight into the database through the library
//! before the server starts: 10,000 argon2 sign-ins would take minutes and measure nothing
//! this benchmark is about.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;

#[path = "common.rs"]
mod common;
use common::{metrics, pct, start, thread_cpu, Http};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A sending client's part, handed to its connection's task when sending starts
/// (`RT_BENCH_SOCKETS=shared`: the client sends over the one socket it also reads).
struct Plan {
    to: String,
    depth: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

fn send_frame(to: &str, epoch: Instant) -> tokio_tungstenite::tungstenite::Message {
    let ts = epoch.elapsed().as_micros() as u64;
    tokio_tungstenite::tungstenite::Message::Text(format!(
        r#"{{"event":"send_message","data":{{"receiver_id":"{to}","content":"{ts}","type":"text"}}}}"#
    ))
}

async fn run(n: usize, senders: usize, secs: u64, via_ws: bool, depth: usize, shared: bool) {
    let (srv, ids, tokens) =
        tokio::task::spawn_blocking(move || start(n, &[("SECCOLLAB_MESSAGES__SEND_RATE_PER_SEC", "0")])).await.unwrap();
    let pid = srv.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::<u64>::with_capacity(1 << 20)));
    let measuring = Arc::new(AtomicBool::new(false));
    // `RT_BENCH_DUMP=FILE`: every latency sample with its arrival time, for a look at when the
    // slow ones happen (one line per sample: arrival µs since start, latency µs).
    let dump_to = std::env::var("RT_BENCH_DUMP").ok();
    let dump = dump_to.is_some();
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let shared = shared && via_ws;
    let mut plans = Vec::new();
    let t_connect = Instant::now();
    let mut readers = Vec::with_capacity(n);
    let mut ready = Vec::with_capacity(n);
    for (i, tok) in tokens.iter().enumerate() {
        let url = format!("ws://{}/ws?token={tok}", srv.addr);
        let stream = TcpStream::connect(&srv.addr).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("ws handshake");
        let me = ids[i].clone();
        let (delivered, lat, measuring, samples) = (delivered.clone(), lat.clone(), measuring.clone(), samples.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(ready_rx);
        let mut plan_rx = None;
        if shared && i < senders {
            let (tx, rx) = tokio::sync::oneshot::channel::<Plan>();
            plans.push(tx);
            plan_rx = Some(rx);
        }
        readers.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let _ = ready_tx.send(());
            let mut local = Vec::new();
            let mut timed = Vec::new();
            let mut plan: Option<Plan> = None;
            loop {
                let m = tokio::select! {
                    p = async { plan_rx.as_mut().expect("guarded").await }, if plan_rx.is_some() => {
                        plan_rx = None;
                        if let Ok(p) = p {
                            for _ in 0..p.depth {
                                if sink.send(send_frame(&p.to, epoch)).await.is_err() {
                                    return;
                                }
                            }
                            plan = Some(p);
                        }
                        continue;
                    }
                    m = stream.next() => m,
                };
                let Some(Ok(m)) = m else { break };
                match m {
                    tokio_tungstenite::tungstenite::Message::Text(t) => {
                        if let Some(p) = &plan {
                            let ok = t.starts_with(r#"{"event":"message_sent""#);
                            if ok || t.starts_with(r#"{"event":"error""#) {
                                if measuring.load(Ordering::Relaxed) {
                                    if ok {
                                        p.sent.fetch_add(1, Ordering::Relaxed);
                                    } else {
                                        p.failed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                if !p.stop.load(Ordering::Relaxed) && sink.send(send_frame(&p.to, epoch)).await.is_err()
                                {
                                    break;
                                }
                                continue;
                            }
                        }
                        if !t.starts_with(r#"{"event":"new_message""#) {
                            continue;
                        }
                        // Only the two fields it needs, borrowed from the frame: the load
                        // generator shares the machine's two cores with the server.
                        let f: Frame = serde_json::from_str(&t).unwrap();
                        if f.data.message.receiver_id != Some(me.as_str()) {
                            continue; // the sender's own copy
                        }
                        let sent_us: u64 = f.data.message.content.parse().unwrap_or(0);
                        let now_us = epoch.elapsed().as_micros() as u64;
                        if measuring.load(Ordering::Relaxed) {
                            delivered.fetch_add(1, Ordering::Relaxed);
                            local.push(now_us.saturating_sub(sent_us));
                            if dump {
                                timed.push((now_us, now_us.saturating_sub(sent_us)));
                            }
                            if local.len() >= 256 {
                                lat.lock().unwrap().append(&mut local);
                                samples.lock().unwrap().append(&mut timed);
                            }
                        }
                    }
                    tokio_tungstenite::tungstenite::Message::Ping(p) => {
                        let _ = sink.send(tokio_tungstenite::tungstenite::Message::Pong(p)).await;
                    }
                    tokio_tungstenite::tungstenite::Message::Close(_) => break,
                    _ => {}
                }
            }
            lat.lock().unwrap().append(&mut local);
            samples.lock().unwrap().append(&mut timed);
        }));
    }
    for r in ready {
        let _ = r.await;
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    println!(
        "{n} connections opened in {connect_secs:.1} s; server RSS {:.0} MiB → {:.0} MiB idle: {:.1} KiB per connection",
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        (rss_idle.saturating_sub(rss_before)) as f64 / n as f64
    );

    // Senders: user i sends to user (i + n/2) % n, as fast as the server answers.
    let mut tasks = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let to = ids[(i + n / 2) % n].clone();
        let _ = plan.send(Plan { to, depth, stop: stop.clone(), sent: sent.clone(), failed: failed.clone() });
    }
    for i in 0..senders.min(n) {
        let (addr, tok, to) = (srv.addr.clone(), tokens[i].clone(), ids[(i + n / 2) % n].clone());
        let (stop, sent, failed, measuring) = (stop.clone(), sent.clone(), failed.clone(), measuring.clone());
        if shared {
            break; // they send over the sockets opened above
        }
        if via_ws {
            tasks.push(tokio::spawn(ws_sender(addr, tok, to, depth, stop, sent, failed, measuring, epoch)));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(&addr).await;
            while !stop.load(Ordering::Relaxed) {
                let ts = epoch.elapsed().as_micros() as u64;
                let body = format!(r#"{{"receiver_id":"{to}","content":"{ts}","type":"text"}}"#);
                let st = http.post("/api/messages/send", &tok, &body).await;
                if measuring.load(Ordering::Relaxed) {
                    if st == 201 {
                        sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let addr = srv.addr.clone();
    let snapshot = move || {
        let a = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || (metrics(&a), thread_cpu(pid), thread_cpu(std::process::id())))
                .await
                .unwrap()
        }
    };
    let before = snapshot().await;
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let mut peak = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_kib(pid));
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    let after = snapshot().await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (d, s, f) = (delivered.load(Ordering::Relaxed), sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(srv); // closes every socket; readers flush their samples
    for r in readers {
        let _ = r.await;
    }
    if let Some(path) = &dump_to {
        let mut all = std::mem::take(&mut *samples.lock().unwrap());
        all.sort_unstable();
        let text: String = all.iter().map(|(t, l)| format!("{t} {l}\n")).collect();
        std::fs::write(path, text).expect("write RT_BENCH_DUMP");
    }
    let mut l = std::mem::take(&mut *lat.lock().unwrap());
    l.sort_unstable();
    let via = match (via_ws, shared) {
        (true, true) => format!("WebSocket send_message on the client's one socket, {depth} in flight each"),
        (true, false) => format!("WebSocket send_message on a second socket, {depth} in flight each"),
        _ => "HTTP POST".into(),
    };
    println!(
        "{n} connections, {senders} senders ({via}), {elapsed:.1} s: {:.0} messages/s stored (201), {:.0} messages/s delivered, {f} failed; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; peak RSS {:.0} MiB",
        s as f64 / elapsed,
        d as f64 / elapsed,
        pct(&l, 0.50),
        pct(&l, 0.99),
        pct(&l, 1.0),
        peak as f64 / 1024.0
    );
    report_occupancy(&before, &after, elapsed);
}

/// The part of a `new_message` frame the load generator reads.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    data: FrameData<'a>,
}

#[derive(serde::Deserialize)]
struct FrameData<'a> {
    #[serde(borrow)]
    message: FrameMessage<'a>,
}

#[derive(serde::Deserialize)]
struct FrameMessage<'a> {
    receiver_id: Option<&'a str>,
    content: &'a str,
}

type Threads = std::collections::BTreeMap<String, (f64, f64)>;
type Snapshot = (std::collections::HashMap<String, f64>, Threads, Threads);

/// Where the time went during the measured window: CPU per server thread (threads of one name
/// summed) with the time it was runnable but waited for a CPU, the load generator's own CPU,
/// and the database writers' occupancy from `/metrics` (absent for a server build without those
/// metrics).
fn report_occupancy(before: &Snapshot, after: &Snapshot, secs: f64) {
    let per_name = |a: &Threads, b: &Threads| {
        let mut v: Vec<(String, f64, f64)> = b
            .iter()
            .map(|(k, (run, queued))| {
                let (r0, q0) = a.get(k).copied().unwrap_or_default();
                (k.clone(), (run - r0) / secs * 100.0, (queued - q0) / secs * 100.0)
            })
            .collect();
        v.sort_by(|x, y| y.1.total_cmp(&x.1));
        v
    };
    let server = per_name(&before.1, &after.1);
    let total: f64 = server.iter().map(|x| x.1).sum();
    let top: Vec<String> = server
        .iter()
        .filter(|x| x.1 >= 1.0)
        .map(|(k, run, queued)| format!("{k} {run:.0} (+{queued:.0} waiting for a CPU)"))
        .collect();
    let client: f64 = per_name(&before.2, &after.2).iter().map(|x| x.1).sum();
    println!("  CPU, % of one core: server {total:.0}: {}; load generator {client:.0}", top.join(", "));
    let d = |k: &str| Some(after.0.get(k)? - before.0.get(k)?);
    let mut parts = Vec::new();
    if let (Some(jobs), Some(batches)) = (d("seccollab_events_committed_total"), d("seccollab_event_batches_total")) {
        parts.push(format!("{:.0} event jobs per commit", jobs / batches.max(1.0)));
    }
    for w in ["events", "audit"] {
        let busy = d(&format!("seccollab_db_writer_busy_seconds_total{{writer=\"{w}\"}}"));
        let wait = d(&format!("seccollab_db_writer_wait_seconds_total{{writer=\"{w}\"}}"));
        if let (Some(busy), Some(wait)) = (busy, wait) {
            parts.push(format!(
                "{w} writer holds the connection {:.0} % of the time, waits for it {:.0} %",
                busy / secs * 100.0,
                wait / secs * 100.0
            ));
        }
    }
    if !parts.is_empty() {
        println!("  {}", parts.join("; "));
    }
}

/// A sender over its own second WebSocket: `send_message` frames, `depth` in flight, each
/// answered by `message_sent` or `error`.
#[allow(clippy::too_many_arguments)]
async fn ws_sender(
    addr: String,
    tok: String,
    to: String,
    depth: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
    epoch: Instant,
) {
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{addr}/ws?token={tok}");
    let stream = TcpStream::connect(&addr).await.expect("tcp connect");
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("ws handshake");
    let (mut sink, mut stream) = ws.split();
    let frame = |to: &str| send_frame(to, epoch);
    let mut in_flight = 0;
    while !stop.load(Ordering::Relaxed) || in_flight > 0 {
        while in_flight < depth && !stop.load(Ordering::Relaxed) {
            if sink.send(frame(&to)).await.is_err() {
                return;
            }
            in_flight += 1;
        }
        let Some(Ok(m)) = stream.next().await else { return };
        match m {
            Message::Text(t) => {
                let ok = t.starts_with(r#"{"event":"message_sent""#);
                if !ok && !t.starts_with(r#"{"event":"error""#) {
                    continue; // its own new_message copies, presence
                }
                in_flight -= 1;
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Message::Ping(p) => {
                let _ = sink.send(Message::Pong(p)).await;
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

fn main() {
    let counts: Vec<usize> = std::env::var("RT_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let senders: usize = std::env::var("RT_BENCH_SENDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let secs: u64 = std::env::var("RT_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let via: Vec<bool> = std::env::var("RT_BENCH_VIA")
        .unwrap_or_else(|_| "http,ws".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "http" => Some(false),
            "ws" => Some(true),
            _ => None,
        })
        .collect();
    let depth: usize = std::env::var("RT_BENCH_WS_DEPTH").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    // `shared` (default): a sending client sends over the one socket it also receives on, as a
    // browser tab does; `separate`: over a second socket of the same user (a second device,
    // which then also receives the sender's copy) — the topology of the figures before
    // 2026-11-29's sixteenth session.
    let shared = match std::env::var("RT_BENCH_SOCKETS").as_deref() {
        Ok("separate") => false,
        Ok("shared") | Err(_) => true,
        Ok(other) => panic!("RT_BENCH_SOCKETS={other}: use shared or separate"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for n in counts {
        for &ws in &via {
            rt.block_on(run(n, senders, secs, ws, depth, shared));
        }
    }
}
