//! Real-time delivery: the `/ws` endpoint, the per-node [`hub::Hub`] of live connections,
//! persisted events with per-user `seq` and `resume` ([`store`]), and multi-node fan-out over
//! PostgreSQL `LISTEN/NOTIFY` ([`notify`]) with presence shared across nodes ([`presence`]). Events are written by [`crate::events::EventBus`].

pub mod hub;
pub mod notify;
pub mod presence;
pub mod store;
pub mod ws;

use std::time::Duration;

use crate::AppState;

/// A WebSocket frame: `{"event": NAME, "data": DATA, "seq": N}` (`seq` only for stored events).
/// `data` is JSON text already.
pub fn frame(name: &str, data: &str, seq: Option<i64>) -> String {
    let name = serde_json::Value::from(name);
    match seq {
        Some(s) => format!(r#"{{"event":{name},"data":{data},"seq":{s}}}"#),
        None => format!(r#"{{"event":{name},"data":{data}}}"#),
    }
}

/// An ephemeral frame (typing, presence, errors).
pub fn ephemeral(name: &str, data: serde_json::Value) -> String {
    frame(name, &data.to_string(), None)
}

/// Deletes events older than the retention, hourly.
pub fn start_retention(state: AppState) {
    let days = state.config.realtime.event_retention_days;
    if days == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            let before = crate::time::now_micros() - i64::from(days) * 86_400 * 1_000_000;
            match state.db.q(move |c| store::prune(c, before)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned events past their retention"),
                Err(e) => tracing::warn!(error = %e, "event retention failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_are_json_with_seq_only_when_stored() {
        let f: serde_json::Value = serde_json::from_str(&super::frame("new_message", r#"{"a":1}"#, Some(7))).unwrap();
        assert_eq!(f, serde_json::json!({"event": "new_message", "data": {"a": 1}, "seq": 7}));
        let f: serde_json::Value =
            serde_json::from_str(&super::ephemeral("typing_start", serde_json::json!({"user_id": "u\"1"}))).unwrap();
        assert_eq!(f, serde_json::json!({"event": "typing_start", "data": {"user_id": "u\"1"}}));
    }
}
