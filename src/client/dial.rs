//! Opening one authenticated WebSocket to the edge: TCP (with `--connect-to`), TLS,
//! the handshake (README: "How it works"), and errors that say what went wrong and
//! what to do (status, `Location`, `cf-ray`, the edge's stated reason).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls::stream::TlsStream;
use bytes::BytesMut;
use http::{HeaderValue, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::target::{Credentials, Scheme, Target};
use crate::secret::Secret;
use crate::{exit, protocol};

/// Limit for resolving and connecting to the edge.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for the TLS and WebSocket handshakes together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// A resume attempt's limit for connecting, and again for its handshake: short, so
/// a SYN or handshake lost in a black hole does not hold a stream that waits.
pub const RESUME_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// While a resume attempt's TCP connect is pending, a new one starts this often
/// (jittered 0.5x to 1.5x), so a SYN goes out soon after the link is back.
pub const RESUME_CONNECT_EVERY: Duration = Duration::from_millis(500);

/// `d` scaled by a random factor from 0.5 to 1.5, so many streams spread out.
pub fn jittered(d: Duration) -> Duration {
    let mut r = [0u8; 1];
    protocol::random_fill(&mut r);
    d.mul_f64(0.5 + f64::from(r[0]) / 255.0)
}

/// The byte stream under the WebSocket: plain TCP or TLS (enum dispatch, no `dyn`).
#[derive(Debug)]
pub enum EdgeStream {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<TlsStream>),
}

/// An open, authenticated stream to the edge.
#[derive(Debug)]
pub struct Connected {
    /// The WebSocket, ready for [`crate::bridge::run`].
    pub ws: crate::bridge::WebSocket<EdgeStream>,
    /// The edge understands the half-close marker.
    pub peer_half_close: bool,
    /// The edge keeps this stream for a resume (README: "Resumable streams").
    pub resume: Option<protocol::ResumeOffer>,
}

/// Why the WebSocket to the edge could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Name resolution failed.
    #[error("cannot resolve {addr}: {source}; check --hostname (or --connect-to)")]
    Resolve {
        /// What was looked up.
        addr: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// No address accepted the TCP connection.
    #[error("cannot connect to the edge at {addr}: {source}; check that it is up and reachable")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The last connect error.
        #[source]
        source: io::Error,
    },
    /// The HTTP proxy from the environment refused or failed the `CONNECT`.
    #[error(
        "the proxy {proxy} could not open a tunnel to {addr}: {detail}; check https_proxy/http_proxy and no_proxy"
    )]
    Proxy {
        /// The proxy.
        proxy: String,
        /// The edge address asked for.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// A step took too long.
    #[error(
        "timed out {stage} the edge at {addr} after {secs} s; check the network or --connect-to"
    )]
    Timeout {
        /// The address dialled.
        addr: String,
        /// What we were doing.
        stage: &'static str,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The TLS handshake failed (certificate not trusted, name mismatch, ...).
    #[error("TLS with {host} ({addr}) failed: {detail}{hint}")]
    Tls {
        /// The app hostname (SNI).
        host: String,
        /// The address dialled.
        addr: String,
        /// What rustls said.
        detail: String,
        /// What to do, for this cause ([`tls_hint`]).
        hint: &'static str,
    },
    /// The WebSocket handshake failed at the protocol level.
    #[error("WebSocket handshake with {url} failed: {detail}; is this a tunnel edge?")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The app needs a login and no credentials were given.
    #[error(
        "{host} needs a login ({detail}); pass a service token with --service-token-id and --service-token-secret, or an Access token with --token"
    )]
    LoginRequired {
        /// The app hostname.
        host: String,
        /// Status, redirect and ray.
        detail: String,
    },
    /// The service token was refused. Never falls back to a browser login.
    #[error(
        "the edge refused service token {id:?} for {host} ({detail}); check --service-token-id and --service-token-secret, and that the app's policy allows this token"
    )]
    ServiceTokenRefused {
        /// The app hostname.
        host: String,
        /// The client id (not secret).
        id: String,
        /// Status, redirect, reason and ray.
        detail: String,
    },
    /// The Access token was refused (expired, wrongly signed, for another app).
    #[error(
        "the edge refused the access token for {host} ({detail}); it is expired or not valid for this app: get a new one"
    )]
    TokenRefused {
        /// The app hostname.
        host: String,
        /// Status, redirect, reason and ray.
        detail: String,
    },
    /// The edge could not reach the origin.
    #[error(
        "the edge could not reach the origin of {host} ({detail}); check that the service behind the edge is running"
    )]
    Origin {
        /// The app hostname.
        host: String,
        /// Status, reason and ray.
        detail: String,
    },
    /// The edge refused for another reason (policy, unknown app, bad destination).
    #[error("the edge refused the connection to {host} ({detail})")]
    Refused {
        /// The app hostname.
        host: String,
        /// Status, reason and ray.
        detail: String,
    },
}

impl DialError {
    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            DialError::Resolve { .. }
            | DialError::Connect { .. }
            | DialError::Timeout { .. }
            | DialError::Proxy { .. }
            | DialError::Protocol { .. } => exit::NETWORK,
            DialError::Tls { .. } => exit::TLS,
            DialError::LoginRequired { .. } => exit::LOGIN_NEEDED,
            DialError::ServiceTokenRefused { .. } | DialError::TokenRefused { .. } => {
                exit::AUTH_REFUSED
            }
            DialError::Origin { .. } => exit::ORIGIN,
            DialError::Refused { .. } => exit::EDGE_REFUSED,
        }
    }
}

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

fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// Open one authenticated WebSocket to the edge for `target`; `token` (from a
/// login) overrides the target's credentials.
pub async fn dial(target: &Target, token: Option<&Secret>) -> Result<Connected, DialError> {
    dial_resuming(target, token, None).await
}

/// [`dial`], resuming the stream `resume` names instead of opening a new one.
pub async fn dial_resuming(
    target: &Target,
    token: Option<&Secret>,
    resume: Option<&protocol::ResumeRequest>,
) -> Result<Connected, DialError> {
    let addr = target.dial_addr();
    // A resume races the clock of a stream that waits: short limits, and TCP
    // connects staggered rather than one SYN left to the kernel's retransmits.
    let (connect_limit, handshake_limit) = match resume {
        None => (CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT),
        Some(_) => (RESUME_ATTEMPT_TIMEOUT, RESUME_ATTEMPT_TIMEOUT),
    };
    let tcp = match target.proxy() {
        Some(proxy) => via_proxy(proxy, &addr, connect_limit, resume.is_some()).await?,
        None => tokio::time::timeout(
            connect_limit,
            connect_maybe_staggered(&addr, resume.is_some()),
        )
        .await
        .map_err(|_| DialError::Timeout {
            addr: addr.clone(),
            stage: "connecting to",
            secs: connect_limit.as_secs(),
        })??,
    };
    tokio::time::timeout(
        handshake_limit,
        handshake(target, token, resume, &addr, tcp),
    )
    .await
    .map_err(|_| DialError::Timeout {
        addr,
        stage: "in the handshake with",
        secs: handshake_limit.as_secs(),
    })?
}

async fn connect_maybe_staggered(addr: &str, staggered: bool) -> Result<TcpStream, DialError> {
    if staggered {
        connect_staggered(addr).await
    } else {
        connect(addr).await
    }
}

/// [`connect`], starting another try every [`RESUME_CONNECT_EVERY`] (jittered)
/// while none has finished; the first to finish wins and the others are dropped.
/// A SYN sent into a black hole is otherwise retried by the kernel only after 1,
/// 3, 7 s: this way one goes out within 0.75 s of the link coming back. The
/// caller bounds the whole (at [`RESUME_ATTEMPT_TIMEOUT`], so a few tries at most).
async fn connect_staggered(addr: &str) -> Result<TcpStream, DialError> {
    let mut tries = tokio::task::JoinSet::new();
    loop {
        let a = addr.to_string();
        tries.spawn(async move { connect(&a).await });
        tokio::select! {
            done = tries.join_next() => {
                return match done {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => Err(DialError::Connect {
                        addr: addr.to_string(),
                        source: io::Error::other(e.to_string()),
                    }),
                    None => unreachable!("a try was just started"),
                };
            }
            () = tokio::time::sleep(jittered(RESUME_CONNECT_EVERY)) => {}
        }
    }
}

async fn via_proxy(
    proxy: &super::proxy::Proxy,
    addr: &str,
    limit: Duration,
    staggered: bool,
) -> Result<TcpStream, DialError> {
    let mut tcp = tokio::time::timeout(limit, connect_maybe_staggered(&proxy.addr, staggered))
        .await
        .map_err(|_| DialError::Timeout {
            addr: proxy.addr.clone(),
            stage: "connecting to the proxy for",
            secs: limit.as_secs(),
        })??;
    super::proxy::connect(&mut tcp, proxy, addr, limit)
        .await
        .map_err(|detail| DialError::Proxy {
            proxy: proxy.addr.clone(),
            addr: addr.to_string(),
            detail,
        })?;
    Ok(tcp)
}

async fn connect(addr: &str) -> Result<TcpStream, DialError> {
    let addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| DialError::Resolve {
            addr: addr.to_string(),
            source,
        })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                crate::serve::tune(&s);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(DialError::Connect {
        addr: addr.to_string(),
        source: last,
    })
}

/// What to do about a failed TLS handshake, by its cause: only an untrusted issuer
/// is fixed with `--ca-file`.
pub fn tls_hint(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as E};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => {
            "; the edge's certificate is for another name: check --hostname, or give the edge a certificate that names this host"
        }
        Some(E::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "; if the edge uses a private CA, pass it with --ca-file",
        Some(E::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        )) => {
            "; the edge's certificate has expired or is not valid yet: renew it, or check this machine's clock"
        }
        Some(E::InvalidMessage(_)) => {
            "; the edge does not speak TLS on this port: for a plain-HTTP edge use an http:// hostname"
        }
        _ => "",
    }
}

async fn handshake(
    target: &Target,
    token: Option<&Secret>,
    resume: Option<&protocol::ResumeRequest>,
    addr: &str,
    tcp: TcpStream,
) -> Result<Connected, DialError> {
    let stream = if let Scheme::Tls(config) = target.scheme() {
        let name =
            rustls::pki_types::ServerName::try_from(target.host().to_string()).map_err(|e| {
                DialError::Tls {
                    host: target.host().to_string(),
                    addr: addr.to_string(),
                    detail: e.to_string(),
                    hint: "; --hostname must be a DNS name for TLS",
                }
            })?;
        let tls = TlsStream::connect(config.clone(), name, tcp)
            .await
            .map_err(|e| DialError::Tls {
                host: target.host().to_string(),
                addr: addr.to_string(),
                detail: e.to_string(),
                hint: tls_hint(&e),
            })?;
        let conn = tls.state();
        let (kind, suite) = (conn.handshake_kind(), conn.negotiated_cipher_suite());
        tracing::debug!(host = %target.host(), "TLS handshake: {kind:?}, {:?}", suite.map(|s| s.suite()));
        EdgeStream::Tls(Box::new(tls))
    } else {
        EdgeStream::Plain(tcp)
    };
    let mut request = handshake_request(target, token);
    if let Some(v) = resume.and_then(|r| HeaderValue::from_str(&r.to_header()).ok()) {
        request.headers_mut().insert(protocol::RESUME, sensitive(v));
    }
    let protocol_error = |detail: String| DialError::Protocol {
        url: target.url(),
        detail,
    };
    let (stream, response, rest) = upgrade(stream, &request).await.map_err(protocol_error)?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let login_token = token.map(|t| Credentials::Token(t.clone()));
        let credentials = login_token.as_ref().unwrap_or(target.credentials());
        let (parts, ()) = response.into_parts();
        let body = (!rest.is_empty()).then(|| rest.to_vec());
        let response = http::Response::from_parts(parts, body);
        return Err(classify(target.host(), credentials, &response));
    }
    check_upgrade(&request, &response).map_err(protocol_error)?;
    let peer_half_close = response.headers().contains_key(protocol::HALF_CLOSE);
    Ok(Connected {
        peer_half_close,
        resume: response
            .headers()
            .get(protocol::RESUME)
            .and_then(|v| v.to_str().ok())
            .and_then(protocol::ResumeOffer::parse)
            .filter(|_| peer_half_close),
        ws: crate::bridge::WebSocket::new(
            stream,
            crate::bridge::Role::Client,
            crate::bridge::CLIENT_MAX_FRAME,
        )
        .with_buffered(rest)
        // rustls reports a cut as an error: an end it reports is the edge's close_notify.
        .with_clean_eof(target.is_tls()),
    })
}

/// Most response headers the client accepts.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Longest response head the client reads.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Send the upgrade request and read the response head. Returns the stream, the
/// response, and whatever arrived after the head (the first frames, or a body).
async fn upgrade<S>(
    mut io: S,
    request: &Request<()>,
) -> Result<(S, http::Response<()>, BytesMut), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    io.write_all(&head)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    io.flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some((response, len)) = parse_response(&buf)? {
            let rest = buf.split_off(len);
            return Ok((io, response, rest));
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(format!(
                "response head longer than {MAX_RESPONSE_HEAD} bytes"
            ));
        }
        buf.reserve(1024);
        match io.read_buf(&mut buf).await {
            Ok(0) => return Err("the edge closed the connection before answering".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
}

/// Parse the HTTP/1.1 response head at the start of `buf`: the response and the
/// head's length, or `None` while incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<(http::Response<()>, usize)>, String> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
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

/// A 101 must agree to the upgrade and prove it read our key (RFC 6455 4.1).
fn check_upgrade(request: &Request<()>, response: &http::Response<()>) -> Result<(), String> {
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

/// Turn a non-101 handshake response into the error that tells the user what to do.
pub fn classify(
    host: &str,
    credentials: &Credentials,
    response: &http::Response<Option<Vec<u8>>>,
) -> DialError {
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let location = header("location");
    let mut detail = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        detail.push(' ');
        detail.push_str(reason);
    }
    if let Some(loc) = &location {
        detail.push_str(&format!(", redirect to {}", one_line(loc)));
    }
    if let Some(reason) = header(protocol::REFUSAL) {
        detail.push_str(&format!(", edge says: {}", one_line(&reason)));
    }
    if let Some(ray) = header(protocol::CF_RAY) {
        detail.push_str(&format!(", cf-ray {}", one_line(&ray)));
    }
    let host = host.to_string();
    let login = location.as_deref().is_some_and(protocol::is_login_redirect);
    let auth_refusal = login || status == StatusCode::UNAUTHORIZED;
    match (credentials, auth_refusal) {
        (Credentials::ServiceToken { id, .. }, true) => DialError::ServiceTokenRefused {
            host,
            id: id.clone(),
            detail,
        },
        (Credentials::Token(_), true) => DialError::TokenRefused { host, detail },
        (Credentials::None | Credentials::Login(_), true) => {
            DialError::LoginRequired { host, detail }
        }
        _ if matches!(status.as_u16(), 502..=504) => DialError::Origin { host, detail },
        _ => DialError::Refused { host, detail },
    }
}

/// Keep untrusted header text on one short line.
fn one_line(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            EdgeStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            EdgeStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            EdgeStream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            EdgeStream::Plain(s) => s.is_write_vectored(),
            EdgeStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            EdgeStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            EdgeStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<Option<Vec<u8>>> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(None).unwrap()
    }

    #[test]
    fn login_redirect_with_a_service_token_is_a_refusal_not_a_login() {
        let t = Credentials::ServiceToken {
            id: "ci.access".into(),
            secret: Secret::new("x"),
        };
        let r = response(
            302,
            &[
                ("location", "https://a.test/cdn-cgi/access/login/db?kid=1"),
                ("cf-ray", "8a1-LHR"),
            ],
        );
        let e = classify("db.example.com", &t, &r);
        assert_eq!(e.exit_code(), exit::AUTH_REFUSED);
        let msg = e.to_string();
        assert!(
            msg.contains("HTTP 302") && msg.contains("cf-ray 8a1-LHR") && msg.contains("ci.access")
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn statuses_map_to_distinct_errors() {
        let t =
            |r: &http::Response<Option<Vec<u8>>>| classify("db.example.com", &Credentials::None, r);
        let login = response(
            302,
            &[("location", "https://a.test/cdn-cgi/access/login/db")],
        );
        assert_eq!(t(&login).exit_code(), exit::LOGIN_NEEDED);
        assert_eq!(t(&response(502, &[])).exit_code(), exit::ORIGIN);
        assert_eq!(t(&response(403, &[])).exit_code(), exit::EDGE_REFUSED);
    }

    #[test]
    fn secrets_are_sent_but_not_debug_printed() {
        let t = Target::builder(
            crate::client::target::AppUrl::parse("db.example.com").unwrap(),
            crate::tls::client_config(None).unwrap(),
        )
        .credentials(Credentials::ServiceToken {
            id: "id".into(),
            secret: Secret::new("s3cret"),
        })
        .build();
        let req = handshake_request(&t, None);
        assert_eq!(req.headers()[protocol::CLIENT_SECRET], "s3cret");
        assert!(!format!("{req:?}").contains("s3cret"));
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
