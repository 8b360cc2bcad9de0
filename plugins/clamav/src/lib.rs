//! The `clamav` scanner plugin: sends each file to a running `clamd` with the `INSTREAM`
//! command and reports the signature it names. It joins the scanner chain after YARA-X.
//!
//! Settings (`[plugins.enabled.clamav.settings]`), one of:
//! * `socket` — clamd's local socket (Debian: `/run/clamav/clamd.ctl`), or
//! * `address` — `host:port` of clamd's TCP socket (`127.0.0.1:3310`);
//!
//! and optionally `timeout_secs` (default 60) and `chunk_bytes` (default 1 MiB; keep it below
//! clamd's `StreamMaxLength`). A file larger than clamd's `StreamMaxLength` is reported as a
//! scan error, never as clean.
//!
//! Files too large for the host to hold in memory are streamed (ABI 1.1 `Scanner::stream`):
//! the same `INSTREAM` conversation, fed piece by piece, so clamd sees every byte.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use seccollab_plugin_api::{declare_plugin, ScanMatch, ScanReport, ScanStream, Scanner};

enum Target {
    Unix(String),
    Tcp(String),
}

pub struct ClamAv {
    target: Target,
    timeout: Duration,
    chunk: usize,
    version: OnceLock<String>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl ClamAv {
    pub fn from_config(cfg: &serde_json::Value) -> Result<Self, String> {
        let target = match (cfg["socket"].as_str(), cfg["address"].as_str()) {
            (Some(s), None) => Target::Unix(s.to_string()),
            (None, Some(a)) => Target::Tcp(a.to_string()),
            _ => {
                return Err(
                    "set exactly one of settings.socket (clamd's local socket) or settings.address (host:port)".into()
                )
            }
        };
        let timeout = match &cfg["timeout_secs"] {
            serde_json::Value::Null => 60,
            v => v.as_u64().filter(|t| (1..=3600).contains(t)).ok_or("settings.timeout_secs must be 1..3600")?,
        };
        let chunk = match &cfg["chunk_bytes"] {
            serde_json::Value::Null => 1 << 20,
            v => v
                .as_u64()
                .filter(|c| (4096..=64 << 20).contains(c))
                .ok_or("settings.chunk_bytes must be 4096..67108864")? as usize,
        };
        Ok(ClamAv { target, timeout: Duration::from_secs(timeout), chunk, version: OnceLock::new() })
    }

    fn connect(&self) -> Result<Box<dyn Stream>, String> {
        match &self.target {
            Target::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| format!("cannot reach clamd at {p}: {e}"))?;
                s.set_read_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
                Ok(Box::new(s))
            }
            Target::Tcp(a) => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(a)
                    .map_err(|e| format!("bad clamd address {a}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("clamd address {a} resolves to nothing"))?;
                let s = TcpStream::connect_timeout(&addr, self.timeout)
                    .map_err(|e| format!("cannot reach clamd at {a}: {e}"))?;
                s.set_read_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
                Ok(Box::new(s))
            }
        }
    }

    /// Opens an `INSTREAM` conversation.
    fn in_stream(&self) -> Result<InStream, String> {
        let engine = self.engine();
        let mut s = self.connect()?;
        s.write_all(b"zINSTREAM\0").map_err(|e| format!("clamd: {e}"))?;
        Ok(InStream { s, chunk: self.chunk, sent: Ok(()), engine })
    }

    fn engine(&self) -> String {
        if let Some(v) = self.version.get() {
            return v.clone();
        }
        let v = self.connect().and_then(|mut s| command(&mut *s, b"zVERSION\0"));
        match v {
            Ok(v) if !v.is_empty() => self.version.get_or_init(|| v).clone(),
            _ => "ClamAV".into(),
        }
    }
}

/// Sends one `z`-command (NUL-terminated) and reads the NUL-terminated reply.
fn command(s: &mut dyn Stream, body: &[u8]) -> Result<String, String> {
    s.write_all(body).map_err(|e| format!("clamd: {e}"))?;
    let mut reply = Vec::new();
    let mut b = [0u8; 512];
    loop {
        let n = s.read(&mut b).map_err(|e| format!("clamd: {e}"))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&b[..n]);
        if reply.last() == Some(&0) || reply.len() > 64 * 1024 {
            break;
        }
    }
    while reply.last() == Some(&0) {
        reply.pop();
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_string())
}

/// One `INSTREAM` conversation: chunks as they come, then the zero-length end and the reply.
/// A write clamd refused (it closes early past `StreamMaxLength`) is kept for the verdict,
/// which then reads clamd's own reason.
pub struct InStream {
    s: Box<dyn Stream>,
    chunk: usize,
    sent: std::io::Result<()>,
    engine: String,
}

impl ScanStream for InStream {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if self.sent.is_err() {
            return Ok(());
        }
        for c in data.chunks(self.chunk) {
            let r = self.s.write_all(&(c.len() as u32).to_be_bytes()).and_then(|_| self.s.write_all(c));
            if r.is_err() {
                self.sent = r;
                break;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ScanReport, String> {
        let sent = match self.sent {
            Ok(()) => self.s.write_all(&0u32.to_be_bytes()),
            Err(e) => Err(e),
        };
        // clamd closes the connection early when the stream exceeds its limit; its reply says so.
        let reply = command(&mut *self.s, b"");
        let reply = match (sent, reply) {
            (_, Ok(r)) if !r.is_empty() => r,
            (Err(e), _) => return Err(format!("clamd: {e}")),
            (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(_)) => return Err("clamd closed the connection without an answer".into()),
        };
        let matches = parse_reply(&reply)?
            .map(|sig| ScanMatch {
                rule: sig.clone(),
                namespace: "clamav".into(),
                tags: vec![],
                severity: Some("high".into()),
                description: Some(format!("ClamAV signature {sig}")),
            })
            .into_iter()
            .collect();
        Ok(ScanReport { engine: self.engine, matches })
    }
}

/// Reads clamd's INSTREAM answer: `stream: OK`, `stream: <signature> FOUND` or `... ERROR`.
pub fn parse_reply(reply: &str) -> Result<Option<String>, String> {
    let rest = reply.strip_prefix("stream:").map(str::trim).unwrap_or(reply);
    if rest == "OK" {
        Ok(None)
    } else if let Some(sig) = rest.strip_suffix(" FOUND") {
        Ok(Some(sig.trim().to_string()))
    } else {
        Err(format!("clamd could not scan the file: {reply}"))
    }
}

impl Scanner for ClamAv {
    fn name(&self) -> &str {
        "clamav"
    }

    fn scan(&self, data: &[u8]) -> Result<ScanReport, String> {
        let mut st = Box::new(self.in_stream()?);
        st.write(data)?;
        st.finish()
    }

    fn stream(&self) -> Option<Result<Box<dyn ScanStream>, String>> {
        Some(self.in_stream().map(|s| Box::new(s) as Box<dyn ScanStream>))
    }
}

declare_plugin! {
    kind: Scanner,
    type: ClamAv,
    name: "clamav",
    version: env!("CARGO_PKG_VERSION"),
    init: ClamAv::from_config,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_exactly() {
        assert_eq!(parse_reply("stream: OK"), Ok(None));
        assert_eq!(parse_reply("stream: Eicar-Test-Signature FOUND"), Ok(Some("Eicar-Test-Signature".into())));
        assert!(parse_reply("INSTREAM size limit exceeded. ERROR").is_err());
        assert!(parse_reply("").is_err());
    }

    #[test]
    fn settings_name_one_target() {
        assert!(ClamAv::from_config(&serde_json::json!({"socket": "/run/clamav/clamd.ctl"})).is_ok());
        assert!(ClamAv::from_config(&serde_json::json!({})).is_err());
        assert!(ClamAv::from_config(&serde_json::json!({"socket": "/x", "address": "127.0.0.1:3310"})).is_err());
        assert!(ClamAv::from_config(&serde_json::json!({"address": "127.0.0.1:3310", "chunk_bytes": 1})).is_err());
    }
}
