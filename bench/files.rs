//! File transfer benchmark against the real server binary (release build): upload and download
//! of a 1 GiB file over loopback HTTP, beside the single-core AES-256-GCM and SHA-256 speeds of
//! the crates the server uses (the ceilings), the background YARA-X scan time of that file, and
//! the server's peak RSS growth. `cargo bench -p seccollab --bench files`; `FILES_BENCH_MIB`
//! sets the size.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use sha2::Digest;

const PASSWORD: &str = "violet tractor sings at noon";
const BOUNDARY: &str = "benchBOUNDARYx7";

/// A multipart body generated on the fly: `len` bytes cycling through a 1 MiB pseudo-random
/// block (copied, so the client costs little CPU next to the server on the same 2 cores).
struct Body {
    head: Vec<u8>,
    tail: Vec<u8>,
    block: Vec<u8>,
    len: u64,
    pos: u64,
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let head_len = self.head.len() as u64;
        let total = head_len + self.len + self.tail.len() as u64;
        if self.pos >= total {
            return Ok(0);
        }
        let p = self.pos;
        let n = if p < head_len {
            let src = &self.head[p as usize..];
            let n = src.len().min(out.len());
            out[..n].copy_from_slice(&src[..n]);
            n
        } else if p < head_len + self.len {
            let off = (p - head_len) as usize % self.block.len();
            let left = (head_len + self.len - p) as usize;
            let n = (self.block.len() - off).min(out.len()).min(left);
            out[..n].copy_from_slice(&self.block[off..off + n]);
            n
        } else {
            let src = &self.tail[(p - head_len - self.len) as usize..];
            let n = src.len().min(out.len());
            out[..n].copy_from_slice(&src[..n]);
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

fn vm(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mib: u64 = std::env::var("FILES_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let len = mib * 1024 * 1024;

    // Ceilings: one core, 256 MiB each, the same crates and segment size as the server.
    let buf = vec![0x5au8; 64 * 1024];
    let n = 4096; // 256 MiB
    let cipher = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
    let mut seg = buf.clone();
    let t = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&(i as u32).to_be_bytes());
        seg.truncate(64 * 1024);
        cipher.encrypt_in_place(&nonce.into(), b"hdr", &mut seg).unwrap();
    }
    let aes = (n as f64 * 64.0 / 1024.0) / t.elapsed().as_secs_f64();
    let ring_key =
        ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7u8; 32]).unwrap());
    let mut seg = buf.clone();
    let t = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&(i as u32).to_be_bytes());
        let tag = ring_key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(b"hdr"),
                &mut seg,
            )
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
    let ring_aes = (n as f64 * 64.0 / 1024.0) / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut h = sha2::Sha256::new();
    for _ in 0..n {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    let sha = (n as f64 * 64.0 / 1024.0) / t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let bin = std::env::var("BENCH_SERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_seccollab").to_string());
    let mut child = Command::new(bin)
        .arg("serve")
        .env("SECCOLLAB_SERVER__PORT", "0")
        .env("SECCOLLAB_STORAGE__DATA_DIR", dir.path())
        .env("SECCOLLAB_AUTH__REGISTRATION", "open")
        .env("SECCOLLAB_SECURITY__POLICY_DIR", policy)
        .env("SECCOLLAB_FILES__MAX_UPLOAD_BYTES", (len + 1024).to_string())
        .env("SECCOLLAB_LOG__LEVEL", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start server");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("SecCollab listening on ").unwrap().to_string();
    let _ = ureq::post(&format!("{base}/api/auth/register"))
        .send_json(serde_json::json!({"email": "b@example.org", "password": PASSWORD, "display_name": "B"}));
    let login: serde_json::Value = ureq::post(&format!("{base}/api/auth/login"))
        .send_json(serde_json::json!({"email": "b@example.org", "password": PASSWORD}))
        .unwrap()
        .into_json()
        .unwrap();
    let auth = format!("Bearer {}", login["token"].as_str().unwrap());
    let rss0 = vm(pid, "VmRSS:");

    let body = Body {
        head: format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n")
            .into_bytes(),
        tail: format!("\r\n--{BOUNDARY}--\r\n").into_bytes(),
        block: (0u64..1 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(),
        len,
        pos: 0,
    };
    let t = Instant::now();
    let r: serde_json::Value = ureq::post(&format!("{base}/api/files/upload"))
        .timeout(Duration::from_secs(3600))
        .set("Authorization", &auth)
        .set("Content-Type", &format!("multipart/form-data; boundary={BOUNDARY}"))
        .send(body)
        .expect("upload")
        .into_json()
        .unwrap();
    let up = t.elapsed().as_secs_f64();
    let id = r["file_id"].as_str().unwrap().to_string();
    let rss_up = vm(pid, "VmHWM:");

    let t = Instant::now();
    loop {
        let f: serde_json::Value = ureq::get(&format!("{base}/api/files/{id}"))
            .set("Authorization", &auth)
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        if f["file"]["scan_status"] != "pending" {
            assert_eq!(f["file"]["scan_status"], "clean");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let scan = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut reader = ureq::get(&format!("{base}/api/files/download/{id}"))
        .timeout(Duration::from_secs(3600))
        .set("Authorization", &auth)
        .call()
        .expect("download")
        .into_reader();
    let mut got = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let down = t.elapsed().as_secs_f64();
    assert_eq!(got, len);
    let rss_end = vm(pid, "VmHWM:");
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();

    let mb = len as f64 / 1e6;
    println!("files benchmark: {mib} MiB over loopback HTTP (release build, 2 cores)");
    println!("ceiling  AES-256-GCM, one core (aes-gcm crate)  {:>8.0} MB/s", aes * 1.048576);
    println!("ceiling  AES-256-GCM, one core (ring, server)   {:>8.0} MB/s", ring_aes * 1.048576);
    println!("ceiling  SHA-256, one core (sha2 crate)         {:>8.0} MB/s", sha * 1.048576);
    println!("upload                                          {:>8.0} MB/s  ({up:.2} s)", mb / up);
    println!("YARA-X scan of the upload (block mode)          {:>8.0} MB/s  ({scan:.2} s)", mb / scan);
    println!("download                                        {:>8.0} MB/s  ({down:.2} s)", mb / down);
    println!(
        "server RSS  {} MiB idle, peak {} MiB after upload, {} MiB after scan+download",
        rss0 / 1024,
        rss_up / 1024,
        rss_end / 1024
    );
}
