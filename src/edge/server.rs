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
use tracing::{debug, info};

use super::Edge;
use super::policy::{self, Decision};
use crate::protocol;

mod stream;

pub(super) use stream::switching_protocols;
use stream::tunnel;

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
