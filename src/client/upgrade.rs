//! The WebSocket upgrade: the handshake request (the header set of stock
//! `cloudflared`, README: "How it works", plus our capability headers), sent with
//! the client's one HTTP/1 exchange ([`super::http1`]), and the checks a 101 must pass.

use http::{HeaderValue, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use super::http1::{self, Answer};
use super::target::{Credentials, Target};
use crate::protocol;
use crate::secret::Secret;

/// Build the handshake request for `target`: the header set of stock `cloudflared`
/// (README: "How it works") plus our half-close capability header.
pub fn handshake_request(target: &Target, token: Option<&Secret>) -> Request<()> {
    let mut req = Request::builder()
        .method("GET")
        .uri(target.url())
        .header("Host", target.host_header())
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", protocol::websocket_key())
        .header("User-Agent", protocol::USER_AGENT)
        .header(protocol::HALF_CLOSE, "1")
        .header(protocol::RESUME, "1")
        .body(())
        .expect("static request parts are valid");
    let headers = req.headers_mut();
    let login_token = token.map(|t| Credentials::Token(t.clone()));
    match login_token.as_ref().unwrap_or(target.credentials()) {
        Credentials::None | Credentials::Login(_) => {}
        Credentials::Token(token) => {
            if let Ok(v) = HeaderValue::from_str(token.expose()) {
                headers.insert(protocol::ACCESS_TOKEN, sensitive(v));
            }
        }
        Credentials::ServiceToken { id, secret } => {
            if let (Ok(i), Ok(s)) = (
                HeaderValue::from_str(id),
                HeaderValue::from_str(secret.expose()),
            ) {
                headers.insert(protocol::CLIENT_ID, i);
                headers.insert(protocol::CLIENT_SECRET, sensitive(s));
            }
        }
    }
    if let Some(dest) = target.destination()
        && let Ok(v) = HeaderValue::from_str(dest)
    {
        headers.insert(protocol::JUMP_DESTINATION, v);
    }
    for (name, value) in target.headers() {
        headers.append(name.clone(), value.clone());
    }
    req
}

/// `v`, marked so that hyper and `Debug` never show it.
pub fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// Send the upgrade request and read the response head. A 101 comes back with the
/// stream and whatever arrived after the head (the first frames); any other answer
/// without them (the caller reports it and drops the connection).
pub async fn upgrade<S>(io: S, request: &Request<()>) -> Result<Answer<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // On the wire: the origin form (`GET /path HTTP/1.1`), as stock cloudflared sends.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut wire = Request::builder()
        .method(request.method())
        .uri(path)
        .body(())
        .map_err(|e| format!("building the request: {e}"))?;
    *wire.headers_mut() = request.headers().clone();
    http1::exchange(io, wire, "the edge").await.map_err(|e| e.0)
}

/// A 101 must agree to the upgrade and prove it read our key (RFC 6455 4.1).
pub fn check_upgrade(request: &Request<()>, response: &http::Response<()>) -> Result<(), String> {
    let get = |name: http::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    if !get(http::header::UPGRADE).eq_ignore_ascii_case("websocket") {
        return Err("101 response without Upgrade: websocket".into());
    }
    if !get(http::header::CONNECTION)
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err("101 response without Connection: Upgrade".into());
    }
    let key = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map_or(&[][..], |k| k.as_bytes());
    if get(http::header::SEC_WEBSOCKET_ACCEPT) != protocol::websocket_accept(key) {
        return Err("101 response with a wrong Sec-WebSocket-Accept".into());
    }
    Ok(())
}

/// Parse the HTTP/1.1 response head at the start of `buf`: the response and the
/// head's length, or `None` while incomplete. The client reads with hyper
/// ([`upgrade`]); this reading (httparse, hyper's parser) feeds the fuzz harness's
/// handshake-response target, which checks what [`super::errors::classify`] makes of
/// any head.
#[cfg(any(fuzzing, test))]
pub fn parse_response(buf: &[u8]) -> Result<Option<(http::Response<()>, usize)>, String> {
    let mut raw = [httparse::EMPTY_HEADER; http1::MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP response: {e}")),
    };
    let code = resp.code.ok_or("response without a status")?;
    let mut builder = http::Response::builder().status(code);
    for h in resp.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let response = builder
        .body(())
        .map_err(|e| format!("malformed HTTP response: {e}"))?;
    Ok(Some((response, len)))
}
