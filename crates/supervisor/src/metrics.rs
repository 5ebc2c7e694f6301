//! The optional Prometheus endpoint of `serve` (`service.metrics_addr`, loopback only): `GET
//! /metrics` answers the text exposition format rendered from a status snapshot. It is a
//! one-route, read-only responder on the event loop's runtime; an HTTP framework would be a large
//! dependency for a single GET.

use crate::event::Event;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use trackmill_types::{ControlCommand, ControlResponse, ServiceStatus};

/// Upper bounds (seconds) of the analysis-time histogram.
pub const ANALYSIS_BOUNDS: [f64; 11] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const MAX_REQUEST: usize = 8192;

/// Binds the endpoint (the address was checked to be loopback when the config was validated).
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

pub fn spawn_server(listener: std::net::TcpListener, events: mpsc::UnboundedSender<Event>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics endpoint unusable: {e}");
            return;
        }
    };
    if let Ok(a) = listener.local_addr() {
        tracing::info!("metrics on http://{a}/metrics");
    }
    crate::clients::spawn("metrics endpoint", listener, events, answer);
}

async fn answer(mut stream: tokio::net::TcpStream, events: mpsc::UnboundedSender<Event>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let line = String::from_utf8_lossy(req.split(|&b| b == b'\r').next().unwrap_or(&[]));
    let (code, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET / ") {
        let (tx, rx) = oneshot::channel();
        let _ = events.send(Event::Control {
            command: ControlCommand::Status,
            reply: tx,
        });
        match rx.await {
            Ok(ControlResponse::Status(s)) => ("200 OK", render(&s)),
            _ => ("503 Service Unavailable", "shutting down\n".to_string()),
        }
    } else if line.starts_with("GET ") {
        ("404 Not Found", "only /metrics is served\n".to_string())
    } else {
        ("405 Method Not Allowed", "GET only\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family of one unlabelled gauge.
fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A family with one sample per value of `label`.
fn labelled<L: std::fmt::Display, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) {
    family(out, name, kind, help);
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {v}");
    }
}

/// The Prometheus text exposition of a status snapshot.
pub fn render(s: &ServiceStatus) -> String {
    let mut o = String::new();
    let t = &s.totals;
    let failed: u64 = t.failed.iter().map(|(_, n)| n).sum();
    labelled(
        &mut o,
        "trackmill_files_total",
        "counter",
        "Files settled since the service started, by outcome.",
        "outcome",
        [
            ("analyzed", t.analyzed),
            ("unchanged", t.skipped_unchanged),
            ("failed", failed),
            ("quarantined", t.quarantined),
        ],
    );
    labelled(
        &mut o,
        "trackmill_files_failed_total",
        "counter",
        "Files stored as failed, by failure class.",
        "class",
        t.failed.iter().map(|(c, n)| (c, n)),
    );
    labelled(
        &mut o,
        "trackmill_worker_exits_total",
        "counter",
        "Worker process exits, by cause.",
        "cause",
        t.worker_exits.iter().map(|(c, n)| (c, n)),
    );
    gauge(
        &mut o,
        "trackmill_queue_depth",
        "Checked files waiting for a worker.",
        s.queue_ready,
    );
    gauge(
        &mut o,
        "trackmill_retry_queue_depth",
        "Files waiting for a retry.",
        s.queue_retries,
    );
    gauge(
        &mut o,
        "trackmill_workers_target",
        "Worker processes wanted.",
        s.target_workers,
    );
    workers(&mut o, s);
    gauge(
        &mut o,
        "trackmill_db_unacked",
        "Results sent to the DB writer and not yet committed.",
        s.db_writer.unacked,
    );
    gauge(
        &mut o,
        "trackmill_memory_used_ratio",
        "Share of the host's RAM in use.",
        s.memory.used_share,
    );
    gauge(
        &mut o,
        "trackmill_degraded",
        "1 while worker deaths exceed the restart intensity.",
        u8::from(s.degraded),
    );
    histogram(&mut o, &s.analysis_seconds);
    o
}

/// Workers by state, and each live worker's RSS.
fn workers(o: &mut String, s: &ServiceStatus) {
    labelled(
        o,
        "trackmill_workers",
        "gauge",
        "Worker slots by state.",
        "state",
        ["starting", "idle", "busy", "stopping", "empty"]
            .map(|state| (state, s.workers.iter().filter(|w| w.state == state).count())),
    );
    family(
        o,
        "trackmill_worker_rss_bytes",
        "gauge",
        "Resident memory of each live worker.",
    );
    for w in s.workers.iter().filter(|w| w.pid != 0) {
        let _ = writeln!(
            o,
            "trackmill_worker_rss_bytes{{worker=\"{}\",pid=\"{}\"}} {}",
            w.id, w.pid, w.rss_bytes
        );
    }
}

/// The analysis-time histogram, with cumulative buckets.
fn histogram(o: &mut String, h: &trackmill_types::Histogram) {
    family(
        o,
        "trackmill_analysis_seconds",
        "histogram",
        "Time from dispatch to a worker's answer, per file.",
    );
    let mut cum = 0;
    for (b, n) in h.bounds.iter().zip(&h.counts) {
        cum += n;
        let _ = writeln!(o, "trackmill_analysis_seconds_bucket{{le=\"{b}\"}} {cum}");
    }
    let _ = writeln!(
        o,
        "trackmill_analysis_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count()
    );
    let _ = writeln!(o, "trackmill_analysis_seconds_sum {}", h.sum);
    let _ = writeln!(o, "trackmill_analysis_seconds_count {}", h.count());
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackmill_types::Histogram;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&ANALYSIS_BOUNDS);
        for v in [0.05, 0.3, 0.3, 1000.0] {
            h.observe(v);
        }
        let s = ServiceStatus {
            analysis_seconds: h,
            ..ServiceStatus::default()
        };
        let text = render(&s);
        assert!(
            text.contains("trackmill_analysis_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("trackmill_analysis_seconds_bucket{le=\"0.5\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("trackmill_analysis_seconds_bucket{le=\"300\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("trackmill_analysis_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("trackmill_analysis_seconds_count 4\n"),
            "{text}"
        );
    }
}
