//! The server's metrics: one [`Metrics`] per running server, in its own
//! registry (several servers share a test process), rendered in the
//! Prometheus text format on the web listener's `/metrics`.
//!
//! Names start with `sigil_`; counters end in `_total`, units are in the name,
//! labels take small fixed sets of values (a transport, a command, an error
//! code), never a user. The hot paths touch only pre-resolved atomics: the
//! per-command counters are looked up once here, not per frame by label.
//! This module must not decide anything: it counts what the shell reports.

use std::collections::HashMap;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use sigil_proto::command::COMMANDS;
use sigil_proto::error::ErrorCode;
use sigil_proto::event::EVENTS;

/// Transports a connection can come in on, as the `transport` label says them.
pub const TRANSPORTS: &[&str] = &["tcp", "tls", "websocket", "stream"];

/// Every counter and gauge of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: HashMap<&'static str, IntGauge>,
    sessions: HashMap<&'static str, IntGauge>,
    received: HashMap<&'static str, IntCounter>,
    received_other: IntCounter,
    sent: HashMap<&'static str, IntCounter>,
    sent_other: IntCounter,
    /// Messages delivered to a recipient: `CH_MSG` and `MSG` frames written.
    pub deliveries: IntCounter,
    /// Channel messages committed: appends the store made durable.
    pub commits: IntCounter,
    errors: HashMap<&'static str, IntCounter>,
    errors_other: IntCounter,
    /// Authentications refused (bad tag, unknown account, old key, replayed `CNN`).
    pub auth_failures: IntCounter,
    rate_limited: IntCounterVec,
    /// Payload bytes queued towards clients, over every connection.
    pub queued_bytes: IntGauge,
    /// Connections closed because they did not read fast enough.
    pub slow_consumers: IntCounter,
    /// Store writes per batch (one transaction, one fsync).
    pub store_batch: Histogram,
    /// Time to apply and make durable one batch.
    pub store_fsync: Histogram,
    /// Store batches that failed and were kept to retry (read-only mode).
    pub store_write_failures: IntCounter,
    /// 1 while the store takes no writes (read-only mode), else 0.
    pub store_read_only: IntGauge,
    /// Content bytes of channel messages awaiting commit, server-wide.
    pub pending_bytes: IntGauge,
    channels: IntGaugeVec,
}

/// Why a frame or connection was refused by a rate limit, as the `limit` label says it.
#[derive(Debug, Clone, Copy)]
pub enum RateLimit {
    /// A frame dropped: over the connection's frame rate.
    Frames,
    /// A connection closed: far over its frame rate.
    Flood,
    /// A connection refused: the server's or the address's connection limit.
    Connections,
}

impl RateLimit {
    fn label(self) -> &'static str {
        match self {
            RateLimit::Frames => "frames",
            RateLimit::Flood => "flood",
            RateLimit::Connections => "connections",
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), &[label]).unwrap_or_else(|e| unreachable!("{name}: {e}"));
    let _ = registry.register(Box::new(v.clone()));
    v
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), &[label]).unwrap_or_else(|e| unreachable!("{name}: {e}"));
    let _ = registry.register(Box::new(v.clone()));
    v
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(h.clone()));
    h
}

/// One counter per value of a label, resolved now so counting needs no lookup by label.
fn per_value(vec: &IntCounterVec, values: impl IntoIterator<Item = &'static str>) -> HashMap<&'static str, IntCounter> {
    values.into_iter().map(|v| (v, vec.with_label_values(&[v]))).collect()
}

impl Metrics {
    /// Every metric at zero, registered in a registry of its own.
    pub fn new() -> Self {
        let r = Registry::new();
        let connections = gauge_vec(&r, "sigil_connections", "Open connections.", "transport");
        let sessions = gauge_vec(&r, "sigil_sessions", "Authenticated sessions.", "transport");
        let received = counter_vec(&r, "sigil_frames_received_total", "Frames received, by command.", "command");
        let sent = counter_vec(&r, "sigil_frames_sent_total", "Frames written to clients, by command.", "command");
        let errors = counter_vec(&r, "sigil_errors_sent_total", "ERR frames written, by code.", "code");
        let codes: Vec<&'static str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let ms = |v: &[f64]| v.iter().map(|s| s / 1000.0).collect::<Vec<f64>>();
        Self {
            connections: TRANSPORTS.iter().map(|t| (*t, connections.with_label_values(&[*t]))).collect(),
            sessions: TRANSPORTS.iter().map(|t| (*t, sessions.with_label_values(&[*t]))).collect(),
            received: per_value(&received, COMMANDS.iter().map(|c| c.name)),
            received_other: received.with_label_values(&["other"]),
            sent: per_value(&sent, EVENTS.iter().copied()),
            sent_other: sent.with_label_values(&["other"]),
            deliveries: counter(
                &r,
                "sigil_deliveries_total",
                "Messages delivered to a recipient (CH_MSG and MSG written).",
            ),
            commits: counter(&r, "sigil_commits_total", "Channel messages committed (durably stored)."),
            errors: per_value(&errors, codes),
            errors_other: errors.with_label_values(&["other"]),
            auth_failures: counter(&r, "sigil_auth_failures_total", "Authentications refused."),
            rate_limited: counter_vec(
                &r,
                "sigil_rate_limited_total",
                "Refusals by a rate or connection limit.",
                "limit",
            ),
            queued_bytes: gauge(&r, "sigil_outbound_queued_bytes", "Payload bytes queued towards clients."),
            slow_consumers: counter(
                &r,
                "sigil_slow_consumers_total",
                "Connections closed for not reading fast enough.",
            ),
            store_write_failures: counter(
                &r,
                "sigil_store_write_failures_total",
                "Store batches that failed and were kept to retry (read-only mode).",
            ),
            store_read_only: gauge(&r, "sigil_store_read_only", "1 while the store takes no writes (read-only mode)."),
            pending_bytes: gauge(
                &r,
                "sigil_pending_bytes",
                "Content bytes of channel messages awaiting commit, server-wide (updated each second).",
            ),
            store_batch: histogram(
                &r,
                "sigil_store_batch_writes",
                "Writes per store batch (one transaction, one fsync).",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 8192.0],
            ),
            store_fsync: histogram(
                &r,
                "sigil_store_batch_seconds",
                "Time to apply a store batch and make it durable.",
                ms(&[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0]),
            ),
            channels: gauge_vec(&r, "sigil_channels", "Channels, by whether they have a leader.", "leader"),
            registry: r,
        }
    }

    /// The gauge of open connections on `transport` (one of [`TRANSPORTS`]).
    pub fn connections(&self, transport: &'static str) -> IntGauge {
        self.connections.get(transport).cloned().unwrap_or_else(|| self.connections["stream"].clone())
    }

    /// The gauge of authenticated sessions on `transport` (one of [`TRANSPORTS`]).
    pub fn sessions(&self, transport: &'static str) -> IntGauge {
        self.sessions.get(transport).cloned().unwrap_or_else(|| self.sessions["stream"].clone())
    }

    /// A frame arrived.
    pub fn frame_received(&self, command: &str) {
        self.received.get(command).unwrap_or(&self.received_other).inc();
    }

    /// A frame was written; `error_code` is the code of an `ERR`.
    pub fn frame_sent(&self, command: &str) {
        self.sent.get(command).unwrap_or(&self.sent_other).inc();
        if command == "CH_MSG" || command == "MSG" {
            self.deliveries.inc();
        }
    }

    /// An `ERR` with `code` was written.
    pub fn error_sent(&self, code: &str) {
        self.errors.get(code).unwrap_or(&self.errors_other).inc();
    }

    /// A rate or connection limit refused something.
    pub fn rate_limited(&self, limit: RateLimit) {
        self.rate_limited.with_label_values(&[limit.label()]).inc();
    }

    /// Sets the channel counts: with a leader, and without.
    pub fn set_channels(&self, led: usize, leaderless: usize) {
        self.channels.with_label_values(&["yes"]).set(i64::try_from(led).unwrap_or(i64::MAX));
        self.channels.with_label_values(&["no"]).set(i64::try_from(leaderless).unwrap_or(i64::MAX));
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on invalid metrics, which `new` cannot make.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` with exactly `labels` in `text`.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let key = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
        text.lines().find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counts_land_on_their_labels_and_render_as_text() {
        let m = Metrics::new();
        m.frame_received("CH_MSG");
        m.frame_received("CH_MSG");
        m.frame_received("NOPE");
        m.frame_sent("CH_MSG");
        m.frame_sent("SINFO");
        m.error_sent("rate_limited");
        m.rate_limited(RateLimit::Flood);
        m.connections("tcp").inc();
        m.set_channels(2, 1);
        m.store_batch.observe(3.0);
        let text = m.render();
        assert_eq!(sample(&text, "sigil_frames_received_total", r#"command="CH_MSG""#), Some(2.0));
        assert_eq!(sample(&text, "sigil_frames_received_total", r#"command="other""#), Some(1.0));
        assert_eq!(sample(&text, "sigil_deliveries_total", ""), Some(1.0), "SINFO is not a delivery");
        assert_eq!(sample(&text, "sigil_errors_sent_total", r#"code="rate_limited""#), Some(1.0));
        assert_eq!(sample(&text, "sigil_rate_limited_total", r#"limit="flood""#), Some(1.0));
        assert_eq!(sample(&text, "sigil_connections", r#"transport="tcp""#), Some(1.0));
        assert_eq!(sample(&text, "sigil_channels", r#"leader="no""#), Some(1.0));
        assert_eq!(sample(&text, "sigil_store_batch_writes_count", ""), Some(1.0));
        assert!(text.contains("# TYPE sigil_commits_total counter"), "{text}");
    }

    #[test]
    fn two_servers_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.commits.inc();
        assert_eq!(sample(&b.render(), "sigil_commits_total", ""), Some(0.0));
    }
}
