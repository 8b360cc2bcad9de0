//! The internal event bus: services publish user-addressed events (`file_update`,
//! `file_share`, ...) once; the realtime hub and the notifier subscribe. Publishing never
//! blocks: a subscriber that falls behind loses the oldest events and is told how many.

use rocket::tokio::sync::broadcast;

/// One event for some users.
#[derive(Debug, Clone)]
pub struct Event {
    pub to: Vec<String>,
    pub name: &'static str,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self { tx: broadcast::channel(4096).0 }
    }
}

impl EventBus {
    pub fn publish_to(&self, to: &[String], name: &'static str, data: serde_json::Value) {
        // No subscriber is not an error: the event simply has no listener yet.
        let _ = self.tx.send(Event { to: to.to_vec(), name, data });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subscribers_receive_published_events() {
        let bus = super::EventBus::default();
        let mut rx = bus.subscribe();
        bus.publish_to(&["u1".into()], "file_update", serde_json::json!({"x": 1}));
        let e = rx.try_recv().unwrap();
        assert_eq!((e.name, e.to), ("file_update", vec!["u1".to_string()]));
    }
}
