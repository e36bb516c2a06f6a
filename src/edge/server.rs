//! The edge's HTTP side (hyper, HTTP/1.1): routes by `Host`, checks every
//! WebSocket upgrade against the app's policy, dials the origin *before* answering
//! `101` (so a dead origin is a clear `502`, not a stream that closes at once), then
//! bridges the upgraded connection with the same [`crate::bridge`] as the client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::Edge;
use super::policy::{self, Decision};
use crate::{bridge, protocol};

/// Limit for a client's TLS handshake plus its request headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for connecting to an origin.
pub const ORIGIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of every response the edge makes.
pub(super) type Body = Full<Bytes>;

/// Serve one accepted TCP connection: TLS (when configured) under a timeout, then
/// HTTP/1.1 with upgrades. Upgraded streams are spawned into `tracker`.
pub async fn connection(
    edge: Arc<Edge>,
    tcp: TcpStream,
    peer: SocketAddr,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    match &edge.tls {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                acceptor.accept(crate::tls::ReadAhead::new(tcp)),
            )
            .await
            {
                Ok(Ok(mut tls)) => {
                    tls.get_mut()
                        .1
                        .set_buffer_limit(Some(crate::tls::TLS_BUFFER));
                    tls
                }
                Ok(Err(e)) => return debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return debug!(%peer, "TLS handshake too slow; dropped"),
            };
            http(edge, TokioIo::new(tls), peer, tracker, shutdown).await
        }
        None => http(edge, TokioIo::new(tcp), peer, tracker, shutdown).await,
    }
}

async fn http<I>(
    edge: Arc<Edge>,
    io: I,
    peer: SocketAddr,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (edge, tracker) = (edge.clone(), tracker.clone());
        async move {
            let polling = req.uri().path().starts_with("/transfer/");
            let response = route(&edge, req, peer, &tracker).await;
            let status = response.status();
            if let Some(m) = edge.metrics.get()
                && !polling
                && (status.is_client_error()
                    || status.is_server_error()
                    || status == StatusCode::FOUND)
            {
                let reason = crate::metrics::refusal_reason(status);
                m.refusals_total.with_label_values(&[reason]).inc();
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, "HTTP connection ended: {e}");
    }
}

async fn route(
    edge: &Edge,
    req: Request<Incoming>,
    peer: SocketAddr,
    tracker: &TaskTracker,
) -> Response<Body> {
    let ray = ray_id();
    if let Err(reason) = policy::single_authority(req.uri(), req.headers()) {
        info!(%peer, ray, "refused: {reason}");
        return refusal(StatusCode::BAD_REQUEST, reason, &ray);
    }
    let path = req.uri().path();
    if path == protocol::CERTS_PATH && matches!(*req.method(), Method::GET | Method::HEAD) {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "max-age=3600")
            .body(Body::from(edge.issuer.jwks().to_string()))
            .expect("valid response");
    }
    if let Some(id) = path.strip_prefix("/transfer/") {
        let id = id.to_string();
        if crate::protocol::transfer::decode_key(&id).is_ok() {
            // Shown on the login page: which terminal waits for this login.
            edge.handoffs.record_poll(&id, peer.ip());
        }
        return match edge.handoffs.take(&id, super::handoff::POLL_WAIT).await {
            super::handoff::Poll::Ready(sealed) => Response::builder()
                .header("service-public-key", sealed.service_public_key)
                .header(header::CACHE_CONTROL, "no-store")
                .body(Body::from(sealed.body))
                .unwrap_or_default(),
            super::handoff::Poll::Pending => refusal(StatusCode::NOT_FOUND, "pending", &ray),
            super::handoff::Poll::Gone => {
                refusal(StatusCode::GONE, "already picked up or expired", &ray)
            }
        };
    }
    if path == protocol::CLI_PATH {
        return super::login::cli_page(edge, req, peer).await;
    }
    if path.starts_with(protocol::LOGIN_PATH) {
        let query = req.uri().query().unwrap_or("").to_string();
        return super::exchange::login(edge, path, &query, req.headers());
    }
    let Some(host) = policy::request_host(req.headers()) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "missing or invalid Host header",
            &ray,
        );
    };
    let Some(app) = policy::find_app(&edge.config.apps, &host) else {
        edge.activity.refused();
        info!(%peer, %host, ray, "refused: no app for this host");
        return refusal(
            StatusCode::NOT_FOUND,
            &format!("no app is configured for {host}"),
            &ray,
        );
    };
    if req
        .headers()
        .get(protocol::METADATA_REQUEST)
        .is_some_and(|v| v == "true")
    {
        return super::exchange::metadata(edge, app, &host);
    }
    if path == protocol::AUTHORIZED_PATH {
        let query = req.uri().query().unwrap_or("").to_string();
        return super::exchange::authorized(edge, app, &host, &query);
    }
    tunnel(edge, app, &host, req, peer, tracker, &ray).await
}

/// A request for `app`'s tunnel: the identity its credentials prove (or the login
/// redirect or refusal to answer with).
fn authorize(
    edge: &Edge,
    app: &super::config::App,
    host: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    ray: &str,
) -> Result<policy::Identity, Box<Response<Body>>> {
    match policy::authorize(&edge.config, &edge.issuer, app, headers) {
        Decision::Allow(identity) => Ok(identity),
        Decision::Login(reason) => {
            edge.activity.refused();
            info!(%peer, %host, ray, "login required: {reason}");
            let mut r = login_redirect(edge, host, &app.aud, &reason, ray);
            if websocket_accept(headers).is_none() {
                // A browser-style request starts the org-token exchange.
                if let Ok(v) = HeaderValue::from_str(&super::exchange::app_session_cookie(edge)) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
            }
            Err(Box::new(r))
        }
        Decision::Forbidden(reason) => {
            edge.activity.refused();
            info!(%peer, %host, ray, "forbidden: {reason}");
            Err(Box::new(refusal(StatusCode::FORBIDDEN, &reason, ray)))
        }
    }
}

/// An authorised WebSocket upgrade for `app`: resume a stream, or connect its
/// origin (before answering, so a dead origin is a clear refusal) and bridge a new
/// one in `tracker`.
async fn tunnel(
    edge: &Edge,
    app: &super::config::App,
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
        return super::resume::resume(
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
        .flatten();
    let offer = registered.as_ref().map(|r| r.offer(window));
    // Per stream at debug; `info` gets the summary per interval (edge::activity).
    debug!(%peer, %host, %identity, %dest, ray, "stream opened");
    edge.activity.opened();
    let stream = Stream {
        origin,
        on_upgrade: hyper::upgrade::on(&mut req),
        half_close,
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
pub(super) fn switching_protocols(
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
    tls: bool,
    registered: Option<super::resume::Registered>,
    window: Duration,
    streams: Arc<super::resume::Streams>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    app_label: String,
    activity: Arc<super::activity::Activity>,
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
            ..Default::default()
        };
        let result = match self.registered {
            None => bridge::run(&mut origin, ws, opts).await,
            Some(r) => {
                let id = r.id.clone();
                let result =
                    super::resume::run(&mut origin, ws, opts, r, self.window, peer, &ray).await;
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

/// `v`, marked so that no HTTP library logs or compresses it.
pub(super) fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// The `Sec-WebSocket-Accept` for a well-formed upgrade request, else `None`.
pub fn websocket_accept(headers: &HeaderMap) -> Option<String> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)? != "13" {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    Some(protocol::websocket_accept(key.as_bytes()))
}

/// The URL of the login page for `host`, as Access shapes it.
pub fn login_url(edge: &Edge, host: &str, aud: &str) -> String {
    format!(
        "{}://{}{}/{host}?kid={aud}&redirect_url=%2F",
        protocol::http_scheme(edge.tls.is_some()),
        edge.config.auth_domain,
        protocol::LOGIN_PATH
    )
}

fn login_redirect(edge: &Edge, host: &str, aud: &str, reason: &str, ray: &str) -> Response<Body> {
    let mut r = refusal(StatusCode::FOUND, reason, ray);
    if let Ok(v) = HeaderValue::from_str(&login_url(edge, host, aud)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A refusal with `status`, naming `reason` (never a secret) in a header and the body.
pub(super) fn refusal(status: StatusCode, reason: &str, ray: &str) -> Response<Body> {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(protocol::CF_RAY, ray);
    if let Ok(v) = HeaderValue::from_str(reason) {
        b = b.header(protocol::REFUSAL, v);
    }
    b.body(Body::from(format!("{reason}\n")))
        .expect("valid response")
}

/// A short random request id, returned as `cf-ray` and logged, to match a client's
/// error with the edge's log line.
fn ray_id() -> String {
    let mut b = [0u8; 8];
    crate::protocol::random_fill(&mut b);
    format!("{:016x}-EDGE", u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        assert_eq!(
            websocket_accept(&h).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        h.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(websocket_accept(&h), None);
    }
}
