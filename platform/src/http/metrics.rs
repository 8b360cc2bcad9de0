//! Prometheus metrics: requests by route and status, a latency histogram, the database pool and
//! the audit queue. `GET /metrics` answers loopback peers, or anyone with `metrics.token`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use rocket::http::{ContentType, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::{get, Request, State};
use subtle::ConstantTimeEq;

use crate::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
}

/// Request counters and latency histograms.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.requests.entry((method.into(), route.into(), status)).or_default() += 1;
        let h = m.latency.entry((method.into(), route.into())).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(m) = self.inner.lock() {
            out.push_str("# HELP seccollab_http_requests_total HTTP requests by route and status.\n");
            out.push_str("# TYPE seccollab_http_requests_total counter\n");
            for ((method, route, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "seccollab_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    esc(route)
                );
            }
            out.push_str("# HELP seccollab_http_request_duration_seconds Request latency.\n");
            out.push_str("# TYPE seccollab_http_request_duration_seconds histogram\n");
            for ((method, route), h) in &m.latency {
                let labels = format!("method=\"{method}\",route=\"{}\"", esc(route));
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "seccollab_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ =
                    writeln!(out, "seccollab_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "seccollab_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "seccollab_http_request_duration_seconds_count{{{labels}}} {}", h.count);
            }
        }
        let (open, idle) = state.db.pool_state();
        let stats = state.audit.stats();
        let ev = state.events.stats();
        let writers = [("events", &ev.conn), ("audit", &stats.conn)];
        type Reading = fn(&crate::db::WriterStats) -> f64;
        let writer_metrics: [(&str, &str, Reading); 3] = [
            (
                "seccollab_db_writer_wait_seconds_total",
                "Time a writer thread waited for the database connection.",
                |w| w.wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
            ),
            ("seccollab_db_writer_busy_seconds_total", "Time a writer thread held the database connection.", |w| {
                w.busy_micros.load(Ordering::Relaxed) as f64 / 1e6
            }),
            ("seccollab_db_writer_transactions_total", "Write transactions a writer thread ran.", |w| {
                w.runs.load(Ordering::Relaxed) as f64
            }),
        ];
        for (name, help, read) in writer_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (writer, w) in writers {
                let _ = writeln!(out, "{name}{{writer=\"{writer}\"}} {}", read(w));
            }
        }
        let gauges = [
            ("seccollab_db_pool_connections", "Open database connections.", "gauge", open as u64),
            ("seccollab_db_pool_idle_connections", "Idle database connections.", "gauge", idle as u64),
            (
                "seccollab_audit_queue_depth",
                "Audit entries waiting for the writer.",
                "gauge",
                state.audit.queue_depth() as u64,
            ),
            (
                "seccollab_audit_entries_committed_total",
                "Audit entries committed.",
                "counter",
                stats.committed.load(Ordering::Relaxed),
            ),
            ("seccollab_audit_batches_total", "Audit group commits.", "counter", stats.batches.load(Ordering::Relaxed)),
            (
                "seccollab_audit_entries_failed_total",
                "Audit entries that could not be committed.",
                "counter",
                stats.failed.load(Ordering::Relaxed),
            ),
            (
                "seccollab_events_committed_total",
                "Event jobs committed.",
                "counter",
                ev.committed.load(Ordering::Relaxed),
            ),
            ("seccollab_event_batches_total", "Event group commits.", "counter", ev.batches.load(Ordering::Relaxed)),
            (
                "seccollab_events_failed_total",
                "Event jobs that could not be committed.",
                "counter",
                ev.failed.load(Ordering::Relaxed),
            ),
            (
                "seccollab_email_sent_total",
                "E-mails accepted by the SMTP server.",
                "counter",
                state.mailer.stats.sent.load(Ordering::Relaxed),
            ),
            (
                "seccollab_email_retried_total",
                "E-mail attempts that failed transiently and were rescheduled.",
                "counter",
                state.mailer.stats.retried.load(Ordering::Relaxed),
            ),
            (
                "seccollab_email_failed_total",
                "E-mails given up on (permanent failure or attempts exhausted).",
                "counter",
                state.mailer.stats.failed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, kind, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        out.push_str(&state.limiter.render());
        let b = &state.storage_breaker;
        let _ = writeln!(
            out,
            "# HELP seccollab_storage_breaker_open 1 while the storage backend's circuit breaker is open.\n# TYPE seccollab_storage_breaker_open gauge\nseccollab_storage_breaker_open {}",
            u8::from(b.health() == "paused")
        );
        let _ = writeln!(
            out,
            "# HELP seccollab_storage_failures_total Storage calls that failed.\n# TYPE seccollab_storage_failures_total counter\nseccollab_storage_failures_total {}",
            b.failures.load(Ordering::Relaxed)
        );
        out
    }
}

/// Admits loopback peers (the socket peer, never a forwarded header) or the configured token.
#[derive(Debug)]
pub struct MetricsAccess;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for MetricsAccess {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let Some(state) = req.rocket().state::<AppState>() else {
            return Outcome::Error((Status::InternalServerError, ()));
        };
        if req.remote().is_some_and(|r| r.ip().is_loopback()) {
            return Outcome::Success(MetricsAccess);
        }
        let token = &state.config.metrics.token;
        let given = req.headers().get_one("Authorization").and_then(|h| h.strip_prefix("Bearer "));
        match given {
            Some(g) if !token.is_empty() && bool::from(g.as_bytes().ct_eq(token.as_bytes())) => {
                Outcome::Success(MetricsAccess)
            }
            _ => Outcome::Error((Status::Forbidden, ())),
        }
    }
}

#[get("/metrics")]
pub fn metrics(_access: MetricsAccess, state: &State<AppState>) -> (ContentType, String) {
    let ct = ContentType::new("text", "plain").with_params([("version", "0.0.4"), ("charset", "utf-8")]);
    (ct, state.metrics.render(state))
}
