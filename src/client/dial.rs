//! Opening one authenticated WebSocket to the edge, step by step: reach its address
//! ([`super::connect`]: TCP, `--connect-to`, a proxy's `CONNECT`), TLS
//! ([`tls_connect`]), the upgrade ([`super::upgrade`], README: "How it works"), each
//! under a limit; what goes wrong is a [`DialError`] ([`super::errors`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls::stream::TlsStream;
use bytes::BytesMut;
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use super::errors::DialError;
use super::errors::{classify, tls_hint};
use super::target::{Credentials, Scheme, Target};
use super::upgrade::{check_upgrade, handshake_request, sensitive, upgrade};
use crate::protocol;
use crate::secret::Secret;

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
    let tcp = super::connect::reach(&addr, target.proxy(), connect_limit, resume.is_some()).await?;
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

/// TLS with the edge over `tcp` for a `wss://` target (SNI: the app hostname),
/// else the plain stream.
async fn tls_connect(target: &Target, addr: &str, tcp: TcpStream) -> Result<EdgeStream, DialError> {
    let Scheme::Tls(config) = target.scheme() else {
        return Ok(EdgeStream::Plain(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(target.host().to_string()).map_err(|e| {
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
    Ok(EdgeStream::Tls(Box::new(tls)))
}

async fn handshake(
    target: &Target,
    token: Option<&Secret>,
    resume: Option<&protocol::ResumeRequest>,
    addr: &str,
    tcp: TcpStream,
) -> Result<Connected, DialError> {
    let stream = tls_connect(target, addr, tcp).await?;
    let mut request = handshake_request(target, token);
    if let Some(v) = resume.and_then(|r| HeaderValue::from_str(&r.to_header()).ok()) {
        request.headers_mut().insert(protocol::RESUME, sensitive(v));
    }
    let protocol_error = |detail: String| DialError::Protocol {
        url: target.url(),
        detail,
    };
    let answer = upgrade(stream, &request).await.map_err(protocol_error)?;
    let response = answer.response;
    let Some((stream, rest)) = answer.switched else {
        let login_token = token.map(|t| Credentials::Token(t.clone()));
        let credentials = login_token.as_ref().unwrap_or(target.credentials());
        let (parts, ()) = response.into_parts();
        let response = http::Response::from_parts(parts, None);
        return Err(classify(target.host(), credentials, &response));
    };
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
        // What hyper read past the 101: the edge's first frames, decoded first.
        .with_buffered(BytesMut::from(rest))
        // rustls reports a cut as an error: an end it reports is the edge's close_notify.
        .with_clean_eof(target.is_tls()),
    })
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
