//! The `webhook` notifier plugin: every notification is POSTed as JSON to a configured URL,
//! signed with HMAC-SHA256 so the receiver can tell it came from this server and was not
//! replayed.
//!
//! Settings (`[plugins.enabled.webhook.settings]`):
//! * `url` — `https://…` (or `http://` for a receiver on the same host);
//! * `secret` — the shared HMAC key, at least 16 bytes;
//! * `timeout_secs` — per request (default 10);
//! * `kinds` — deliver only these notification kinds (default: all).
//!
//! Each request carries `X-SecCollab-Event` (the kind), `X-SecCollab-Delivery` (the
//! notification id, stable across retries: drop duplicates by it), `X-SecCollab-Timestamp`
//! (Unix seconds) and `X-SecCollab-Signature: sha256=HEX(HMAC-SHA256(secret, timestamp "." body))`.
//! A 2xx answer is success; 408, 429 and 5xx are retried by the server with back-off; any other
//! 4xx is final; no connection at all pauses the plugin (circuit breaker).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use seccollab_plugin_api::{declare_plugin, Notifier, NotifyError, Outbound};
use sha2::Sha256;

pub struct Webhook {
    url: String,
    secret: Vec<u8>,
    kinds: Option<Vec<String>>,
    agent: ureq::Agent,
}

/// `sha256=` + hex HMAC-SHA256 of `timestamp.body`: what a receiver recomputes.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn from_config(cfg: &serde_json::Value) -> Result<Self, String> {
        let url = cfg["url"].as_str().ok_or("settings.url is required (the receiver's https:// URL)")?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("settings.url must start with https:// or http://, not `{url}`"));
        }
        let secret = cfg["secret"].as_str().ok_or("settings.secret is required (the shared HMAC key)")?;
        if secret.len() < 16 {
            return Err("settings.secret must be at least 16 bytes".into());
        }
        let timeout = match &cfg["timeout_secs"] {
            serde_json::Value::Null => 10,
            v => v.as_u64().filter(|t| (1..=300).contains(t)).ok_or("settings.timeout_secs must be 1..300")?,
        };
        let kinds = match &cfg["kinds"] {
            serde_json::Value::Null => None,
            serde_json::Value::Array(a) => Some(
                a.iter()
                    .map(|k| k.as_str().map(str::to_string).ok_or("settings.kinds must be a list of strings"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => return Err("settings.kinds must be a list of strings".into()),
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(timeout))
            .redirects(0)
            .user_agent(concat!("SecCollab-Webhook/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Webhook { url: url.to_string(), secret: secret.as_bytes().to_vec(), kinds, agent })
    }
}

impl Notifier for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn channel(&self) -> &str {
        "webhook"
    }

    fn deliver(&self, m: &Outbound) -> Result<(), NotifyError> {
        if self.kinds.as_ref().is_some_and(|k| !k.contains(&m.kind)) {
            return Ok(());
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "id": m.id, "kind": m.kind, "user_id": m.user_id, "subject": m.subject, "text": m.text,
        }))
        .map_err(|e| NotifyError::Permanent(e.to_string()))?;
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let r = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json")
            .set("X-SecCollab-Event", &m.kind)
            .set("X-SecCollab-Delivery", &m.id)
            .set("X-SecCollab-Timestamp", &ts.to_string())
            .set("X-SecCollab-Signature", &signature(&self.secret, ts, &body))
            .send_bytes(&body);
        match r {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, _)) if code == 408 || code == 429 || code >= 500 => {
                Err(NotifyError::Transient(format!("receiver answered {code}")))
            }
            Err(ureq::Error::Status(code, _)) => Err(NotifyError::Permanent(format!("receiver refused with {code}"))),
            Err(ureq::Error::Transport(t)) => Err(NotifyError::Unavailable(format!("cannot reach the receiver: {t}"))),
        }
    }
}

declare_plugin! {
    kind: Notifier,
    type: Webhook,
    name: "webhook",
    version: env!("CARGO_PKG_VERSION"),
    init: Webhook::from_config,
    channel: "webhook",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = serde_json::json!({"url": "https://hooks.example.org/x", "secret": "0123456789abcdef"});
        assert!(Webhook::from_config(&ok).is_ok());
        for (bad, why) in [
            (serde_json::json!({"secret": "0123456789abcdef"}), "url is required"),
            (serde_json::json!({"url": "ftp://x", "secret": "0123456789abcdef"}), "must start with"),
            (serde_json::json!({"url": "https://x", "secret": "short"}), "at least 16"),
            (serde_json::json!({"url": "https://x", "secret": "0123456789abcdef", "kinds": "a"}), "list of strings"),
        ] {
            let e = Webhook::from_config(&bad).err().expect("refused");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // RFC 4231-style check against an independently computed value (Python's hmac module:
        // hmac.new(b"0123456789abcdef", b"1700000000.{}", "sha256").hexdigest()).
        assert_eq!(
            signature(b"0123456789abcdef", 1_700_000_000, b"{}"),
            "sha256=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }
}
