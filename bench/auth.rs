//! Sign-in benchmark against the real server binary (release build):
//! - logins per second at the default argon2id parameters, against the theoretical limit
//!   (cores ÷ the time of one hash, measured in this same run);
//! - p50/p99 latency of `GET /api/auth/me` while 200 concurrent clients hammer `login`;
//! - the server's peak resident memory (VmHWM).
//!
//! Run with `cargo bench -p seccollab --bench auth`. `AUTH_BENCH_SECS` sets the flood length.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seccollab::auth::password::PasswordHasherPool;
use seccollab::security::policy::Argon2Policy;

const PASSWORD: &str = "violet tractor sings at noon";

fn post(base: &str, path: &str, body: serde_json::Value) -> Result<serde_json::Value, u16> {
    match ureq::post(&format!("{base}{path}")).timeout(Duration::from_secs(60)).send_json(body) {
        Ok(r) => Ok(r.into_json().unwrap_or_default()),
        Err(ureq::Error::Status(s, _)) => Err(s),
        Err(_) => Err(0),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let secs: u64 = std::env::var("AUTH_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);

    // One hash at the default parameters, median of 7, on the same pool the server uses (a
    // worker with its memory already in place), one at a time.
    let pool = PasswordHasherPool::new(&Argon2Policy::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(pool.hash(PASSWORD.into())).unwrap(); // warm-up: the worker allocates its memory once
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(rt.block_on(pool.hash(PASSWORD.into())).unwrap());
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t_hash = times[times.len() / 2];
    let limit = cores as f64 / t_hash;

    let dir = tempfile::tempdir().unwrap();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seccollab"))
        .arg("serve")
        .env("SECCOLLAB_SERVER__PORT", "0")
        .env("SECCOLLAB_STORAGE__DATA_DIR", dir.path())
        .env("SECCOLLAB_AUTH__REGISTRATION", "open")
        .env("SECCOLLAB_SECURITY__POLICY_DIR", policy)
        .env("SECCOLLAB_LOG__LEVEL", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("SecCollab listening on ").expect("announce line").to_string();
    let _ = post(
        &base,
        "/api/auth/register",
        serde_json::json!({"email": "bench@example.org", "password": PASSWORD, "display_name": "Bench"}),
    );
    let login =
        || post(&base, "/api/auth/login", serde_json::json!({"email": "bench@example.org", "password": PASSWORD}));
    let token = login().expect("login")["token"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let (stop, ok, refused, base) = (stop.clone(), ok.clone(), refused.clone(), base.clone());
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match post(
                    &base,
                    "/api/auth/login",
                    serde_json::json!({"email": "bench@example.org", "password": PASSWORD}),
                ) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Let the flood build up, then measure `me` for the rest of the window.
    std::thread::sleep(Duration::from_secs(2));
    let ok_at_2s = ok.load(Ordering::Relaxed);
    let measure_from = Instant::now();
    let mut me = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let r = ureq::get(&format!("{base}/api/auth/me")).set("Authorization", &format!("Bearer {token}")).call();
        assert!(r.is_ok(), "me failed during the flood: {r:?}");
        me.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let window = measure_from.elapsed().as_secs_f64();
    let logins_in_window = ok.load(Ordering::Relaxed) - ok_at_2s;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?").to_string();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();

    me.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rate = logins_in_window as f64 / window;
    println!("auth benchmark: {cores} cores, argon2id m=19456 KiB t=2 p=1, 200 login clients, {secs} s");
    println!("one hash (median of 7)          {:>8.1} ms", t_hash * 1000.0);
    println!("theoretical limit (cores/hash)  {limit:>8.1} logins/s");
    println!("measured                        {rate:>8.1} logins/s  = {:.0}% of the limit", 100.0 * rate / limit);
    println!("refused (503 busy / other)      {:>8}", refused.load(Ordering::Relaxed));
    println!(
        "GET /api/auth/me during flood   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples)",
        percentile(&me, 0.5),
        percentile(&me, 0.99),
        me[me.len() - 1],
        me.len()
    );
    println!("server peak RSS                 {}", hwm.trim_start_matches("VmHWM:").trim());
}
