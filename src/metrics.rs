//! Prometheus metrics for `--metrics ADDR` (`tcp`, `ssh` in listener mode, `up`,
//! `edge`): the `prometheus` crate's registry, served as text on `GET /metrics` by a
//! small hyper server on a listener the caller bound. Names follow Prometheus
//! conventions (`_total`, `_seconds`, `_bytes`); labels are tunnel names, app
//! hostnames and fixed reason words, never anything secret.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::protocol::host_port::{self, Port};

/// Buckets for dial and connect latencies (seconds): 1 ms to 30 s.
const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric of one process, client and edge side (a process uses one side).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Client: connections being served, per tunnel.
    pub connections_open: IntGaugeVec,
    /// Client: connections accepted, per tunnel.
    pub connections_total: IntCounterVec,
    /// Client: connections that failed, per tunnel and reason.
    pub connection_failures_total: IntCounterVec,
    /// Client: bytes moved, per tunnel and direction (`up` is local -> edge).
    pub bytes_total: IntCounterVec,
    /// Client: time to open an authenticated WebSocket (TCP, TLS, upgrade).
    pub dial_seconds: HistogramVec,
    /// Client: tokens obtained, by source (`browser`, `exchange`, `cache`) and
    /// whether it replaced a refused one (`refresh`).
    pub tokens_total: IntCounterVec,
    /// Client: resumes of streams whose WebSocket broke, per tunnel and outcome
    /// (`resumed`, `failed`).
    pub resumes_total: IntCounterVec,
    /// Edge: streams being bridged, per app.
    pub streams_open: IntGaugeVec,
    /// Edge: streams opened, per app.
    pub streams_total: IntCounterVec,
    /// Edge: streams that ended in failure, per app.
    pub stream_failures_total: IntCounterVec,
    /// Edge: bytes moved, per app and direction (`up` is client -> origin).
    pub edge_bytes_total: IntCounterVec,
    /// Edge: requests answered with a refusal, by reason.
    pub refusals_total: IntCounterVec,
    /// Edge: time to connect to an origin.
    pub origin_connect_seconds: HistogramVec,
    /// Edge: resumes, per app and outcome (`resumed`, `refused`, `expired`).
    pub edge_resumes_total: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with every family (and, on Linux, the process basics).
    pub fn new() -> Arc<Metrics> {
        let registry =
            Registry::new_custom(Some("tunnel".into()), None).unwrap_or_else(|_| Registry::new());
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let m = Metrics {
            connections_open: gauge(
                "connections_open",
                "Local connections being served.",
                &["tunnel"],
            ),
            connections_total: counter(
                "connections_total",
                "Local connections accepted.",
                &["tunnel"],
            ),
            connection_failures_total: counter(
                "connection_failures_total",
                "Local connections that ended in failure, by reason.",
                &["tunnel", "reason"],
            ),
            bytes_total: counter(
                "bytes_total",
                "Bytes moved through finished connections (up: local to edge).",
                &["tunnel", "direction"],
            ),
            dial_seconds: histogram(
                "dial_seconds",
                "Time to open an authenticated WebSocket to the edge.",
                &["tunnel"],
            ),
            tokens_total: counter(
                "tokens_total",
                "App tokens obtained, by source (browser, exchange, cache) and kind (new, refresh).",
                &["source", "kind"],
            ),
            resumes_total: counter(
                "resumes_total",
                "Streams resumed after their WebSocket broke, by outcome (resumed, failed).",
                &["tunnel", "outcome"],
            ),
            streams_open: gauge(
                "edge_streams_open",
                "Streams being bridged to origins.",
                &["app"],
            ),
            streams_total: counter("edge_streams_total", "Streams opened to origins.", &["app"]),
            stream_failures_total: counter(
                "edge_stream_failures_total",
                "Streams that ended in failure (the origin was reset).",
                &["app"],
            ),
            edge_bytes_total: counter(
                "edge_bytes_total",
                "Bytes moved through finished streams (up: client to origin).",
                &["app", "direction"],
            ),
            refusals_total: counter(
                "edge_refusals_total",
                "Requests refused, by reason.",
                &["reason"],
            ),
            origin_connect_seconds: histogram(
                "edge_origin_connect_seconds",
                "Time to connect to an origin.",
                &["app"],
            ),
            edge_resumes_total: counter(
                "edge_resumes_total",
                "Resumes of streams, by outcome (resumed, refused, expired: the window passed).",
                &["app", "outcome"],
            ),
            registry,
        };
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = m.registry.register(Box::new(pc));
        }
        Arc::new(m)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The reason word for an edge refusal with `status` (a label, so a fixed set).
pub fn refusal_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        302 => "login_required",
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "no_app",
        429 => "rate_limited",
        502..=504 => "origin_unreachable",
        _ => "other",
    }
}

/// Serve `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!("metrics on http://{addr}/metrics");
    }
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => { debug!("metrics accept failed: {e}"); continue; }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let r = if req.uri().path() == "/metrics" {
                            Response::builder()
                                .header(
                                    header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(metrics.render())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                        };
                        Ok::<_, Infallible>(r.unwrap_or_default())
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Bind `addr` (`host:port`, by the one parser's rules: [`host_port`]) for
/// [`serve`]; the error names the flag and what to do.
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    let at = host_port::parse("--metrics", addr, Port::Listen).map_err(|e| e.to_string())?;
    let port = at.port().unwrap_or(0);
    TcpListener::bind((at.host(), port)).await.map_err(|e| {
        format!("cannot listen on --metrics {addr}: {e}; pick another address, e.g. 127.0.0.1:9090")
    })
}

/// One tunnel's view of the metrics: its label fixed.
#[derive(Debug, Clone)]
pub struct TunnelMetrics {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The tunnel's label (its name in `tunnel up`, else the hostname).
    pub name: String,
}
