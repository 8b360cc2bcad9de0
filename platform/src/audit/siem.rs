//! Forwards audit entries and security alerts to a SIEM collector (`[siem]`): RFC 5424 syslog
//! over UDP or TCP (octet-counted frames, RFC 6587) or JSON lines.
//!
//! A durable cursor (`<data_dir>/siem-cursor.json`: the last audit `seq` and the last alert
//! sent, written by temp file + fsync + rename after each batch the collector took) makes the
//! forwarding resume where it stopped: nothing is skipped across restarts or collector outages.
//! Delivery is at least once: a crash between sending a batch and saving the cursor resends that
//! batch. Over UDP the collector cannot acknowledge, so a datagram lost on the network is lost.
//! On PostgreSQL with several nodes, configure `[siem]` on one node only.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::SiemFormat;
use crate::db::schema::{audit_log as al, security_alerts as sa};
use crate::AppState;

const BATCH: i64 = 500;
/// Private Enterprise Number placeholder used in the structured-data id (RFC 5424 §7.2.2
/// reserves `@` names for registered numbers; 32473 is the documentation example number).
const SD_ID: &str = "seccollab@32473";
/// Facility 13 (log audit).
const FACILITY: u8 = 13;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    pub audit_seq: i64,
    pub alert_at: i64,
    pub alert_id: String,
    /// The last anchored audit head sent (`audit-anchor.json`'s `seq`).
    #[serde(default)]
    pub anchor_seq: i64,
}

impl Cursor {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("siem-cursor.json")
    }

    /// The saved cursor; `None` when forwarding never ran here.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).expect("cursor serialises"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

type AuditTuple = (
    i64,
    String,
    i64,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
);
type AlertTuple = (String, i64, String, String, Option<String>, Option<String>, String);

fn sd_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]")
}

/// MSGID: printable US-ASCII, at most 32 characters.
fn msgid(s: &str) -> String {
    let m: String = s.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    if m.is_empty() {
        "-".into()
    } else {
        m
    }
}

fn rfc3339(micros: i64) -> String {
    crate::time::micros_to_rfc3339(micros)
}

/// One audit entry as an RFC 5424 message.
pub fn audit_syslog(host: &str, e: &AuditTuple) -> String {
    let (seq, id, at, actor, action, tt, tid, ip, _ua, outcome, details) = e;
    let severity = match outcome.as_str() {
        "success" => 6,
        "error" => 3,
        _ => 4,
    };
    let target = match (tt, tid) {
        (Some(t), Some(i)) => format!("{t}:{i}"),
        _ => String::new(),
    };
    format!(
        "<{}>1 {} {} seccollab {} {} [{SD_ID} type=\"audit\" seq=\"{seq}\" id=\"{}\" actor=\"{}\" outcome=\"{}\" ip=\"{}\" target=\"{}\"] {}",
        FACILITY * 8 + severity,
        rfc3339(*at),
        host,
        std::process::id(),
        msgid(action),
        sd_escape(id),
        sd_escape(actor.as_deref().unwrap_or("")),
        sd_escape(outcome),
        sd_escape(ip.as_deref().unwrap_or("")),
        sd_escape(&target),
        details
    )
}

pub fn alert_syslog(host: &str, a: &AlertTuple) -> String {
    let (id, at, kind, severity, st, sid, details) = a;
    let sev = match severity.as_str() {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        _ => 5,
    };
    format!(
        "<{}>1 {} {} seccollab {} security_alert [{SD_ID} type=\"alert\" id=\"{}\" kind=\"{}\" severity=\"{}\" subject=\"{}\"] {}",
        FACILITY * 8 + sev,
        rfc3339(*at),
        host,
        std::process::id(),
        sd_escape(id),
        sd_escape(kind),
        sd_escape(severity),
        sd_escape(&format!("{}:{}", st.as_deref().unwrap_or(""), sid.as_deref().unwrap_or(""))),
        details
    )
}

fn audit_json(e: &AuditTuple) -> String {
    let (seq, id, at, actor, action, tt, tid, ip, ua, outcome, details) = e;
    json!({
        "type": "audit", "seq": seq, "id": id, "at": rfc3339(*at), "actor_id": actor, "action": action,
        "target_type": tt, "target_id": tid, "ip": ip, "user_agent": ua, "outcome": outcome,
        "details": serde_json::from_str::<Value>(details).unwrap_or(Value::Null),
    })
    .to_string()
}

fn alert_json(a: &AlertTuple) -> String {
    let (id, at, kind, severity, st, sid, details) = a;
    json!({
        "type": "alert", "id": id, "at": rfc3339(*at), "kind": kind, "severity": severity,
        "subject_type": st, "subject_id": sid,
        "details": serde_json::from_str::<Value>(details).unwrap_or(Value::Null),
    })
    .to_string()
}

enum Conn {
    Udp(UdpSocket, String),
    Tcp(TcpStream),
}

fn connect(target: &str) -> std::io::Result<Conn> {
    if let Some(hp) = target.strip_prefix("udp://") {
        let s = UdpSocket::bind(if hp.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" })?;
        Ok(Conn::Udp(s, hp.to_string()))
    } else {
        let hp = target.trim_start_matches("tcp://");
        let addr =
            std::net::ToSocketAddrs::to_socket_addrs(hp)?.next().ok_or_else(|| std::io::Error::other("no address"))?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn::Tcp(s))
    }
}

impl Conn {
    fn send(&mut self, msg: &str, format: SiemFormat) -> std::io::Result<()> {
        match self {
            Conn::Udp(s, to) => {
                let b = msg.as_bytes();
                s.send_to(&b[..b.len().min(8192)], to.as_str()).map(|_| ())
            }
            Conn::Tcp(s) => match format {
                SiemFormat::Rfc5424 => write!(s, "{} {msg}", msg.len()),
                SiemFormat::Jsonl => writeln!(s, "{msg}"),
            },
        }
    }
}

/// Starts the forwarding thread when `[siem] target` is set.
pub fn start(state: AppState) {
    let cfg = state.config.siem.clone();
    if cfg.target.is_empty() {
        return;
    }
    let path = Cursor::path(&state.config.storage.data_dir);
    let host = if cfg.hostname.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "-".into())
    } else {
        cfg.hostname.clone()
    };
    let host = msgid(&host);
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("siem-forwarder".into())
        .spawn(move || {
            let mut cursor = match Cursor::load(&path) {
                Ok(Some(c)) => c,
                Ok(None) => Cursor::default(),
                Err(e) => {
                    tracing::error!(error = %e, "SIEM cursor unreadable; forwarding stopped (fix or remove the file)");
                    return;
                }
            };
            let mut conn: Option<Conn> = None;
            let mut backoff = Duration::from_secs(1);
            loop {
                rt.block_on(state.audit.flush());
                match forward_once(&state, &cfg.target, cfg.format, &host, &mut conn, &mut cursor, &path) {
                    Ok(0) => {
                        backoff = Duration::from_secs(1);
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Ok(_) => backoff = Duration::from_secs(1),
                    Err(e) => {
                        conn = None;
                        tracing::warn!(error = %e, target = %cfg.target, retry_secs = backoff.as_secs(), "SIEM forwarding failed; retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        })
        .expect("start the SIEM forwarder");
}

/// Sends one batch of audit entries and one of alerts after the cursor; returns how many.
fn forward_once(
    state: &AppState,
    target: &str,
    format: SiemFormat,
    host: &str,
    conn: &mut Option<Conn>,
    cursor: &mut Cursor,
    path: &Path,
) -> Result<usize, String> {
    let mut db = state.db.get().map_err(|e| e.to_string())?;
    let entries: Vec<AuditTuple> = al::table
        .filter(al::seq.gt(cursor.audit_seq))
        .order(al::seq.asc())
        .limit(BATCH)
        .select((
            al::seq,
            al::id,
            al::at,
            al::actor_id,
            al::action,
            al::target_type,
            al::target_id,
            al::ip,
            al::user_agent,
            al::outcome,
            al::details,
        ))
        .load(&mut *db)
        .map_err(|e| e.to_string())?;
    let (ca, ci) = (cursor.alert_at, cursor.alert_id.clone());
    let alerts: Vec<AlertTuple> = sa::table
        .filter(sa::at.gt(ca).or(sa::at.eq(ca).and(sa::id.gt(ci))))
        .order((sa::at.asc(), sa::id.asc()))
        .limit(BATCH)
        .select((sa::id, sa::at, sa::kind, sa::severity, sa::subject_type, sa::subject_id, sa::details))
        .load(&mut *db)
        .map_err(|e| e.to_string())?;
    drop(db);
    // The anchored head, sent once per anchor and only after the entries it covers: a copy of
    // the chain's head outside this server, so a rewritten or rolled-back log shows there too.
    let anchor = super::anchor::read(&state.config.storage.data_dir)
        .ok()
        .flatten()
        .filter(|a| a.seq > cursor.anchor_seq && a.seq <= entries.last().map_or(cursor.audit_seq, |e| e.0));
    if entries.is_empty() && alerts.is_empty() && anchor.is_none() {
        return Ok(0);
    }
    if conn.is_none() {
        *conn = Some(connect(target).map_err(|e| format!("connect {target}: {e}"))?);
    }
    let c = conn.as_mut().expect("connected");
    for e in &entries {
        let m = match format {
            SiemFormat::Rfc5424 => audit_syslog(host, e),
            SiemFormat::Jsonl => audit_json(e),
        };
        c.send(&m, format).map_err(|e| e.to_string())?;
    }
    for a in &alerts {
        let m = match format {
            SiemFormat::Rfc5424 => alert_syslog(host, a),
            SiemFormat::Jsonl => alert_json(a),
        };
        c.send(&m, format).map_err(|e| e.to_string())?;
    }
    if let Some(a) = &anchor {
        let m = match format {
            SiemFormat::Rfc5424 => anchor_syslog(host, a),
            SiemFormat::Jsonl => anchor_json(a),
        };
        c.send(&m, format).map_err(|e| e.to_string())?;
    }
    if let Conn::Tcp(s) = c {
        s.flush().map_err(|e| e.to_string())?;
    }
    if let Some(a) = &anchor {
        cursor.anchor_seq = a.seq;
    }
    if let Some(e) = entries.last() {
        cursor.audit_seq = e.0;
    }
    if let Some(a) = alerts.last() {
        cursor.alert_at = a.1;
        cursor.alert_id = a.0.clone();
    }
    cursor.save(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(entries.len() + alerts.len() + usize::from(anchor.is_some()))
}

/// The anchored audit head as an RFC 5424 message (`audit_anchor`).
pub fn anchor_syslog(host: &str, a: &super::anchor::Anchor) -> String {
    format!(
        "<{}>1 {} {} seccollab {} audit_anchor [{SD_ID} type=\"anchor\" seq=\"{}\" hash=\"{}\" mac=\"{}\"] audit head anchored",
        FACILITY * 8 + 5,
        a.at,
        host,
        std::process::id(),
        a.seq,
        sd_escape(&a.hash),
        sd_escape(&a.mac),
    )
}

fn anchor_json(a: &super::anchor::Anchor) -> String {
    json!({"type": "anchor", "seq": a.seq, "hash": a.hash, "at": a.at, "mac": a.mac}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_follow_rfc5424() {
        let e: AuditTuple = (
            7,
            "id-1".into(),
            1_700_000_000_000_000,
            Some("u\"1]".into()),
            "auth.login".into(),
            Some("user".into()),
            Some("u1".into()),
            Some("10.0.0.1".into()),
            None,
            "failure".into(),
            "{\"email\":\"a@x\"}".into(),
        );
        let m = audit_syslog("host", &e);
        assert!(m.starts_with("<108>1 2023-11-14T22:13:20"), "{m}");
        assert!(m.contains(" host seccollab "), "{m}");
        assert!(
            m.contains(" auth.login [seccollab@32473 type=\"audit\" seq=\"7\" id=\"id-1\" actor=\"u\\\"1\\]\""),
            "{m}"
        );
        assert!(m.ends_with("] {\"email\":\"a@x\"}"), "{m}");
        assert_eq!(msgid("a b\u{e9}c"), "abc");
        let a = crate::audit::anchor::Anchor {
            seq: 9,
            hash: "ab".into(),
            at: "2026-11-27T00:00:00.000000Z".into(),
            mac: "cd".into(),
        };
        let m = anchor_syslog("host", &a);
        assert!(m.starts_with("<109>1 2026-11-27T00:00:00.000000Z host seccollab "), "{m}");
        assert!(m.contains(" audit_anchor [seccollab@32473 type=\"anchor\" seq=\"9\" hash=\"ab\" mac=\"cd\"]"), "{m}");
    }

    #[test]
    fn the_cursor_survives_a_save_and_load() {
        let d = tempfile::tempdir().unwrap();
        let p = Cursor::path(d.path());
        assert_eq!(Cursor::load(&p).unwrap(), None);
        let c = Cursor { audit_seq: 42, alert_at: 5, alert_id: "x".into(), anchor_seq: 40 };
        c.save(&p).unwrap();
        assert_eq!(Cursor::load(&p).unwrap(), Some(c));
    }
}
