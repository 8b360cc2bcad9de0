//! Audit log benchmark: append throughput on SQLite with 1 and 16 concurrent writers, and
//! verify speed. Run with `cargo bench -p seccollab --bench audit` (set `AUDIT_BENCH_N` to
//! change the entry count). Each figure is the median of three runs; a raw SHA-256 pass over
//! the same canonical encoding is printed beside verify as the ceiling it is measured against.

use std::sync::Arc;
use std::time::Instant;

use seccollab::audit::{AuditLog, AuditRow, NewAuditEntry, Outcome, GENESIS_HASH};
use seccollab::config::Config;
use seccollab::db::Db;

fn entry(i: usize) -> NewAuditEntry {
    NewAuditEntry::new("http.request", Outcome::Success)
        .actor(Some(format!("01a2-user-{}", i % 100)))
        .client(Some("192.0.2.10".into()), Some("Mozilla/5.0 (X11; Linux x86_64) bench".into()))
        .details(serde_json::json!({"method": "GET", "path": "/api/files", "status": 200, "duration_ms": 1.25}))
}

fn fresh_db(dir: &std::path::Path) -> Db {
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.to_path_buf();
    let db = Db::open(&cfg).expect("open");
    db.migrate().expect("migrate");
    db
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Appends `n` entries from `writers` tasks; `wait_each` makes every append wait for its commit.
/// Returns entries per second and entries per commit.
fn appends_per_sec(n: usize, writers: usize, wait_each: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let log = AuditLog::start(db, 4096, 65536);
    let start = Instant::now();
    rt.block_on(async {
        let log = Arc::new(log.clone());
        let mut tasks = Vec::new();
        for w in 0..writers {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(writers) {
                    if wait_each {
                        log.append(entry(i)).await.expect("append");
                    } else {
                        log.record(entry(i)).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        log.flush().await;
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(log.stats().committed.load(std::sync::atomic::Ordering::Relaxed) as usize, n);
    let commits = log.stats().batches.load(std::sync::atomic::Ordering::Relaxed).max(1);
    rt.block_on(log.shutdown());
    (n as f64 / secs, n as f64 / commits as f64)
}

fn main() {
    let n: usize = std::env::var("AUDIT_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    println!("audit benchmark, {n} entries per run, SQLite (WAL, synchronous=NORMAL), median of 3");

    let cases = [
        ("1 writer, pipelined (request auditing path)", 1, false),
        ("16 writers, each waits for its commit", 16, true),
        ("1 writer, waits for every commit (worst case)", 1, true),
    ];
    // `AUDIT_BENCH_ONLY=verify` (or `=16`, the writer count of one append case) runs only that
    // part, for profiling it alone.
    let only = std::env::var("AUDIT_BENCH_ONLY").ok();
    let only_verify = only.as_deref() == Some("verify");
    let wanted = |writers: usize| only.as_deref().is_none_or(|o| o == writers.to_string());
    for (name, writers, wait) in cases.into_iter().filter(|c| wanted(c.1)) {
        let runs = if wait && writers == 1 { n / 10 } else { n };
        let (v, per_commit): (Vec<f64>, Vec<f64>) = (0..3).map(|_| appends_per_sec(runs, writers, wait)).unzip();
        println!(
            "append  {name:<48} {:>10.0} entries/s  (runs: {:.0?}; entries per commit {:.1})",
            median(v.clone()),
            v,
            median(per_commit)
        );
    }

    if only.is_some() && !only_verify {
        return;
    }
    // Verify: one log of n entries, verified three times; hashing alone as the ceiling.
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path());
    let log = AuditLog::start(db.clone(), 4096, 65536);
    for i in 0..n {
        log.record_blocking(entry(i));
    }
    log.shutdown_blocking();
    let mut verify_rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let r = seccollab::audit::verify(&db, &mut |_| {}).expect("verify");
        assert!(r.ok && r.checked == n as u64, "{r:?}");
        verify_rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let row = AuditRow::chain(&entry(1), 1, &GENESIS_HASH).0;
    let mut hash_rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut h = GENESIS_HASH;
        for _ in 0..n {
            h = std::hint::black_box(row.compute_hash(&h));
        }
        hash_rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    println!(
        "verify  {:<48} {:>10.0} entries/s  (runs: {:.0?})",
        "full chain walk, SQLite",
        median(verify_rates.clone()),
        verify_rates
    );
    println!(
        "hash    {:<48} {:>10.0} entries/s  (ceiling: SHA-256 only, no I/O)",
        "canonical encoding + SHA-256",
        median(hash_rates)
    );
}
