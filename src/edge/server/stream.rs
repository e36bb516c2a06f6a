//! An authorised upgrade's stream: resume it or dial the app's origin (before the
//! `101`), answer `101 Switching Protocols`, and bridge the upgraded connection to
//! the origin with [`crate::bridge`], counted in the metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{Body, ORIGIN_TIMEOUT, authorize, refusal, sensitive, websocket_accept};
use crate::edge::Edge;
use crate::edge::policy;
use crate::{bridge, protocol};

/// An authorised WebSocket upgrade for `app`: resume a stream, or connect its
/// origin (before answering, so a dead origin is a clear refusal) and bridge a new
/// one in `tracker`.
pub(super) async fn tunnel(
    edge: &Edge,
    app: &crate::edge::config::App,
    host: &str,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    tracker: &TaskTracker,
    ray: &str,
) -> Response<Body> {
    let identity = match authorize(edge, app, host, req.headers(), peer, ray) {
        Ok(identity) => identity,
        Err(response) => return *response,
    };
    let Some(accept) = websocket_accept(req.headers()) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "this app carries TCP over WebSocket: use `tunnel tcp` or `cloudflared access tcp`",
            ray,
        );
    };
    let resume_header = req
        .headers()
        .get(protocol::RESUME)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(value) = resume_header.as_deref().filter(|v| *v != "1") {
        return crate::edge::resume::resume(
            edge, app, host, &identity, value, accept, &mut req, peer, ray,
        )
        .await;
    }
    let dest = match policy::upstream(app, req.headers()) {
        Ok(d) => d,
        Err(reason) => {
            edge.activity.refused();
            info!(%peer, %host, %identity, ray, "refused: {reason}");
            return refusal(StatusCode::FORBIDDEN, &reason, ray);
        }
    };
    let origin = match connect_origin(edge, &app.hostname, host, &dest, peer, ray).await {
        Ok(origin) => origin,
        Err(response) => return *response,
    };
    let half_close = req.headers().contains_key(protocol::HALF_CLOSE);
    // Resumable when the client asks (it speaks half-close too) and the app allows.
    let window = app.resume_window;
    let registered = (half_close && resume_header.as_deref() == Some("1") && !window.is_zero())
        .then(|| edge.streams.register(&app.hostname, &identity))
        .flatten()
        .map(|r| crate::edge::resume::Registered {
            replay_limit: app.resume_buffer,
            ..r
        });
    let offer = registered.as_ref().map(|r| r.offer(window));
    // Per stream at debug; `info` gets the summary per interval (edge::activity).
    debug!(%peer, %host, %identity, %dest, ray, "stream opened");
    edge.activity.opened();
    let stream = Stream {
        origin,
        on_upgrade: hyper::upgrade::on(&mut req),
        half_close,
        keepalive: edge.config.keepalive,
        tls: edge.tls.is_some(),
        registered,
        window,
        streams: edge.streams.clone(),
        metrics: edge.metrics.get().cloned(),
        app_label: app.hostname.clone(),
        activity: edge.activity.clone(),
        peer,
        ray: ray.to_string(),
    };
    tracker.spawn(stream.run());
    switching_protocols(accept, ray, half_close, offer.as_ref())
}

/// The `101` that upgrades to a WebSocket, with our capabilities: half-close, and
/// the resume `offer` (a sensitive header: it carries the ticket).
pub(in crate::edge) fn switching_protocols(
    accept: String,
    ray: &str,
    half_close: bool,
    offer: Option<&protocol::ResumeOffer>,
) -> Response<Body> {
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(protocol::CF_RAY, ray);
    if half_close {
        response = response.header(protocol::HALF_CLOSE, "1");
    }
    if let Some(v) = offer.and_then(|o| HeaderValue::from_str(&o.to_header()).ok()) {
        response = response.header(protocol::RESUME, sensitive(v));
    }
    response.body(Body::default()).expect("valid response")
}

/// Connect `app`'s origin `dest` within [`ORIGIN_TIMEOUT`], tuned, counted and set
/// to reset on close until its stream ends cleanly (so the origin never takes a cut
/// stream, or one the grace period ran out on, for a complete one); else the
/// refusal to answer with.
async fn connect_origin(
    edge: &Edge,
    app: &str,
    host: &str,
    dest: &str,
    peer: SocketAddr,
    ray: &str,
) -> Result<TcpStream, Box<Response<Body>>> {
    let connecting = std::time::Instant::now();
    let origin = match tokio::time::timeout(ORIGIN_TIMEOUT, TcpStream::connect(dest)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            edge.activity.refused();
            warn!(%peer, %host, %dest, ray, "origin unreachable: {e}");
            return Err(Box::new(refusal(
                StatusCode::BAD_GATEWAY,
                &format!("origin unreachable: {e}"),
                ray,
            )));
        }
        Err(_) => {
            edge.activity.refused();
            warn!(%peer, %host, %dest, ray, "origin connect timed out");
            return Err(Box::new(refusal(
                StatusCode::GATEWAY_TIMEOUT,
                "origin connect timed out",
                ray,
            )));
        }
    };
    crate::serve::tune(&origin);
    if let Some(m) = edge.metrics.get() {
        m.origin_connect_seconds
            .with_label_values(&[app])
            .observe(connecting.elapsed().as_secs_f64());
        m.streams_total.with_label_values(&[app]).inc();
        m.streams_open.with_label_values(&[app]).inc();
    }
    crate::serve::abort(&origin);
    Ok(origin)
}

/// One stream the edge bridges once its `101` is sent: everything its task needs.
struct Stream {
    origin: TcpStream,
    on_upgrade: hyper::upgrade::OnUpgrade,
    half_close: bool,
    keepalive: bridge::Keepalive,
    tls: bool,
    registered: Option<crate::edge::resume::Registered>,
    window: Duration,
    streams: Arc<crate::edge::resume::Streams>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    app_label: String,
    activity: Arc<crate::edge::activity::Activity>,
    peer: SocketAddr,
    ray: String,
}

impl Stream {
    /// Bridge the upgraded connection to the origin (resumably when registered),
    /// then count and log how it ended; a stream that failed resets the origin.
    async fn run(self) {
        let Stream {
            mut origin,
            peer,
            ray,
            activity,
            ..
        } = self;
        let upgraded = match self.on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                activity.failed(0, 0);
                return warn!(%peer, ray, "upgrade failed: {e}");
            }
        };
        let ws = bridge::WebSocket::new(
            TokioIo::new(upgraded),
            bridge::Role::Server,
            bridge::EDGE_MAX_FRAME,
        )
        // Stock cloudflared ends its streams with close_notify and no close frame;
        // rustls reports a cut as an error, so an end it reports is that.
        .with_clean_eof(self.tls);
        let opts = bridge::Options {
            peer_half_close: self.half_close,
            keepalive: self.keepalive,
            ..Default::default()
        };
        let result = match self.registered {
            None => bridge::run(&mut origin, ws, opts).await,
            Some(r) => {
                let id = r.id.clone();
                let result =
                    crate::edge::resume::run(&mut origin, ws, opts, r, self.window, peer, &ray)
                        .await;
                self.streams.remove(&id);
                // A broken link is all `run` returns only once the window passed.
                if let (Some(m), Err(e)) = (&self.metrics, &result)
                    && e.is_link_failure()
                {
                    m.edge_resumes_total
                        .with_label_values(&[&self.app_label, "expired"])
                        .inc();
                }
                result
            }
        };
        if let Some(m) = &self.metrics {
            count(m, &self.app_label, &result);
        }
        match result {
            // The client's names: up is client -> origin (what the edge received).
            Ok(s) => {
                crate::serve::orderly(&origin);
                activity.closed(s.down, s.up);
                debug!(%peer, ray, up = s.down, down = s.up, "stream closed")
            }
            Err(e) => {
                activity.failed(0, 0);
                warn!(%peer, ray, "stream failed: {e}; origin socket reset")
            }
        }
    }
}

/// Count a stream of `app` that ended with `result` in the edge's metrics.
fn count(
    m: &crate::metrics::Metrics,
    app: &str,
    result: &Result<bridge::Stats, bridge::BridgeError>,
) {
    m.streams_open.with_label_values(&[app]).dec();
    match result {
        // On the edge the local side is the origin: `down` is client -> origin.
        Ok(s) => {
            let bytes = &m.edge_bytes_total;
            bytes.with_label_values(&[app, "up"]).inc_by(s.down);
            bytes.with_label_values(&[app, "down"]).inc_by(s.up);
        }
        Err(_) => m.stream_failures_total.with_label_values(&[app]).inc(),
    }
}
