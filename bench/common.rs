//! Shared by the benchmarks that drive the real server binary: seeding users with sessions,
//! starting the server, a minimal keep-alive HTTP client, percentiles.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Server {
    pub child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Seeds `n` users with sessions and returns (user ids, access tokens), then starts the server.
pub fn start(n: usize, env: &[(&str, &str)]) -> (Server, Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut cfg = seccollab::config::Config::default();
    cfg.storage.data_dir = data.clone();
    cfg.security.policy_dir = policies.clone();
    let state = seccollab::open_state(cfg).expect("open state");
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    {
        let mut conn = state.db.get().unwrap();
        // One commit per user (both calls open their own transactions): ~10k small commits.
        let c = &mut *conn;
        for i in 0..n {
            let u = seccollab::auth::users::create(
                c,
                &format!("user{i}@bench.example"),
                &format!("User {i}"),
                None,
                seccollab::auth::users::Role::User,
            )
            .expect("create user");
            let (s, _) = seccollab::auth::sessions::create(
                c,
                &state.keys.master,
                seccollab::auth::sessions::NewSession {
                    user_id: u.id.clone(),
                    ttl_secs: 3600,
                    ip: None,
                    user_agent: None,
                    mfa_passed: false,
                },
            )
            .unwrap();
            tokens.push(seccollab::auth::tokens::issue(&state.keys.jwt_signing, &u.id, &s.id, 900));
            ids.push(u.id);
        }
    }
    state.events.shutdown_blocking();
    state.audit.shutdown_blocking();
    drop(state);

    // `BENCH_SERVER_BIN` runs another build (a baseline copied aside) against the same load, so
    // an A/B comparison can alternate both binaries in one session.
    let bin = std::env::var("BENCH_SERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_seccollab").to_string());
    let mut child = Command::new(bin)
        .arg("serve")
        .env("SECCOLLAB_STORAGE__DATA_DIR", &data)
        .env("SECCOLLAB_SECURITY__POLICY_DIR", &policies)
        .env("SECCOLLAB_SERVER__PORT", "0")
        .env("SECCOLLAB_LOG__LEVEL", "warn")
        .envs(env.iter().copied())
        // One audit entry per HTTP request is the default and part of the cost measured.
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start server");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(a) = l.strip_prefix("SecCollab listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server started");
    (Server { child, addr, _dir: dir }, ids, tokens)
}

/// A minimal HTTP/1.1 keep-alive client for `POST /api/messages/send`.
pub struct Http {
    r: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Http {
    pub async fn connect(addr: &str) -> Http {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        Http { r: tokio::io::BufReader::new(r), w }
    }

    pub async fn post(&mut self, path: &str, token: &str, body: &str) -> u16 {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.write_all(req.as_bytes()).await.unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).await.unwrap();
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await.unwrap();
        status
    }
}

pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The server's `/metrics` samples by name with labels (`name{labels}` → value). Empty when the
/// server does not answer (an older build may lack a metric: callers treat missing as absent).
pub fn metrics(addr: &str) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut out = std::collections::HashMap::new();
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return out };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((k, v)) = l.rsplit_once(' ') {
            if let Ok(v) = v.parse() {
                out.insert(k.to_string(), v);
            }
        }
    }
    out
}

/// Per thread name of process `pid` (threads of one name summed: tokio's workers share
/// theirs): seconds on a CPU and seconds runnable but waiting for one, from
/// `/proc/PID/task/TID/schedstat` (nanoseconds). A thread's wall time minus both is time it
/// was blocked (I/O, a lock, an empty queue).
pub fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in dir.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
        let Ok(stat) = std::fs::read_to_string(t.path().join("schedstat")) else { continue };
        let mut f = stat.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0) / 1e9);
        let (run, queued) = (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0));
        let e: &mut (f64, f64) = out.entry(name).or_default();
        e.0 += run;
        e.1 += queued;
    }
    out
}
