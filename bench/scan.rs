//! YARA-X scan throughput of the shipped rules (`policies/yara`) inside SecCollab against the
//! `yr` command line scanning the same plaintext: `cargo bench -p seccollab --bench scan`.
//!
//! The plaintext is `SCAN_BENCH_MIB` (default 64, the server's whole-file scan limit) of mixed
//! content (text lines and pseudo-random bytes) written to a temporary file. SecCollab's figure
//! is the scanner the server uses (`Scanner::scan` on the whole buffer, as for every file up to
//! 64 MiB); `yr` (from `cargo install yara-x-cli`, same YARA-X version; `YR` names another
//! path) scans the file with the same rule files. Each side runs 5 times; medians are printed
//! with the ratio. `yr` is timed as a process, so its figure includes compiling the rules and
//! reading the file; the compile time is measured separately (`yr` on an empty file) and
//! subtracted.

use std::process::Command;
use std::time::{Duration, Instant};

use seccollab_plugin_api::Scanner;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mib: usize = std::env::var("SCAN_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let rules_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/yara");
    let mut data = Vec::with_capacity(mib << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < mib << 20 {
        // Alternate 4 KiB of text with 4 KiB of noise: documents and binaries both occur.
        for i in 0..64 {
            data.extend_from_slice(format!("line {i:04} of an ordinary quarterly report, nothing to see\n").as_bytes());
        }
        for _ in 0..512 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    data.truncate(mib << 20);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.bin");
    let empty = dir.path().join("empty.bin");
    std::fs::write(&file, &data).unwrap();
    std::fs::write(&empty, b"").unwrap();

    let scanner = seccollab::security::scan::YaraScanner::load(&rules_dir).expect("rules compile");
    let ours = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let report = scanner.scan(&data).unwrap();
                assert!(report.matches.is_empty(), "the bench data must be clean");
                t.elapsed()
            })
            .collect(),
    );
    let mb = data.len() as f64 / 1e6;
    println!(
        "SecCollab (in-process YARA-X, whole buffer): {:.0} MB/s ({:?} for {mib} MiB)",
        mb / ours.as_secs_f64(),
        ours
    );

    let yr = std::env::var("YR").unwrap_or_else(|_| "yr".into());
    let rule_files: Vec<_> = std::fs::read_dir(&rules_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yar"))
        .collect();
    let run = |target: &std::path::Path| -> Option<Duration> {
        let t = Instant::now();
        let out = Command::new(&yr).arg("scan").args(&rule_files).arg(target).output().ok()?;
        let d = t.elapsed();
        if !out.status.success() {
            eprintln!("{yr} failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        if !out.stdout.is_empty() {
            eprintln!("yr printed: {}", String::from_utf8_lossy(&out.stdout).trim());
        }
        Some(d)
    };
    let Some(_) = run(&empty) else {
        println!("`{yr}` is not available: install it with `cargo install yara-x-cli` (or set YR) to compare");
        return;
    };
    let base = median((0..5).filter_map(|_| run(&empty)).collect());
    let full = median((0..5).filter_map(|_| run(&file)).collect());
    let scan = full.saturating_sub(base);
    println!(
        "yr command line: {:.0} MB/s ({:?} for {mib} MiB after subtracting {:?} of start-up and rule compilation)",
        mb / scan.as_secs_f64(),
        scan,
        base
    );
    println!("SecCollab / yr throughput: {:.2}", scan.as_secs_f64() / ours.as_secs_f64());
}
