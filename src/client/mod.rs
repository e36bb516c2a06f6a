//! The client side: where to dial and with what credentials ([`Target`]), opening one
//! authenticated WebSocket ([`dial`]: reaching the address in [`connect`], the
//! upgrade in [`upgrade`], both HTTP/1 exchanges through [`http1`], failures read in
//! [`errors`]), the local listener of `tunnel tcp` ([`listen`]) and the stdio mode
//! of `tunnel ssh` ([`stdio`]).

pub mod connect;
pub mod dial;
pub mod errors;
pub mod http1;
pub mod listen;
pub mod stdio;
pub mod target;
pub mod upgrade;

pub use dial::DialError;
pub use target::{Credentials, Target, TargetError};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::bridge::{self, BridgeError, Stats};

/// Why one tunnelled connection ended in failure.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The WebSocket to the edge could not be opened.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The app needed a login and none could be had.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The stream failed after it was established.
    #[error("tunnel to {host} broke: {source}")]
    Bridge {
        /// The app hostname.
        host: String,
        /// What failed.
        #[source]
        source: BridgeError,
    },
    /// The stream's WebSocket broke and the stream could not be resumed.
    #[error("tunnel to {host} broke ({broke}) and could not be resumed: {why}")]
    Resume {
        /// The app hostname.
        host: String,
        /// How the WebSocket broke.
        broke: BridgeError,
        /// Why resuming failed.
        why: String,
    },
}

impl ConnError {
    /// The process exit code for this failure (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            ConnError::Dial(e) => e.exit_code(),
            ConnError::Auth(e) => e.exit_code(),
            ConnError::Bridge { .. } | ConnError::Resume { .. } => crate::exit::NETWORK,
        }
    }
}

/// Dial the edge for `target` and bridge `local` through it until both sides end,
/// checking the edge's liveness with `keepalive`.
pub async fn serve_stream<L>(
    local: L,
    target: &Target,
    keepalive: &bridge::Keepalive,
) -> Result<Stats, ConnError>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    serve_stream_from(local, target, keepalive, None).await
}

/// [`serve_stream`] for a connection from `peer`, listed for `tunnel status` while it
/// lives (with its bytes counted as they move) when the target has a status tap.
pub async fn serve_stream_from<L>(
    local: L,
    target: &Target,
    keepalive: &bridge::Keepalive,
    peer: Option<std::net::SocketAddr>,
) -> Result<Stats, ConnError>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    match target.status() {
        Some(tap) => {
            let live = tap.registry.open(&tap.name, peer);
            bridged(live.count(local), target, keepalive).await
        }
        None => bridged(local, target, keepalive).await,
    }
}

async fn bridged<L>(
    local: L,
    target: &Target,
    keepalive: &bridge::Keepalive,
) -> Result<Stats, ConnError>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    let counted = target.metrics().map(Counted::start);
    let started = std::time::Instant::now();
    // Boxed: the handshake's state (TLS, HTTP) is large and needed only briefly;
    // inline it would stay in every connection's task for its whole life.
    let conn = match Box::pin(connect(target)).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(c) = &counted {
                c.failed(if matches!(e, ConnError::Auth(_)) {
                    "auth"
                } else {
                    "dial"
                });
            }
            return Err(e);
        }
    };
    if let Some(c) = &counted {
        c.m.metrics
            .dial_seconds
            .with_label_values(&[&c.m.name])
            .observe(started.elapsed().as_secs_f64());
    }
    let opts = bridge::Options {
        peer_half_close: conn.peer_half_close,
        keepalive: *keepalive,
        ..Default::default()
    };
    let result = match conn.resume {
        None => bridge::run(local, conn.ws, opts)
            .await
            .map_err(|source| ConnError::Bridge {
                host: target.host().to_string(),
                source,
            }),
        Some(offer) => resumable(local, conn.ws, opts, offer, target).await,
    };
    if let Some(c) = &counted {
        match &result {
            Ok(s) => {
                let bytes = &c.m.metrics.bytes_total;
                bytes.with_label_values(&[&c.m.name, "up"]).inc_by(s.up);
                bytes.with_label_values(&[&c.m.name, "down"]).inc_by(s.down);
            }
            Err(_) => c.failed("cut"),
        }
    }
    result
}

/// Bridge a resumable stream: when its WebSocket breaks, keep `local`, dial the
/// edge again (logging in again through the normal lazy flow if needed) with the
/// stream's ticket, and go on where each side stopped. Gives up when the edge's
/// resume window has passed or the edge refuses; the caller then resets `local`.
async fn resumable<L>(
    mut local: L,
    ws: bridge::WebSocket<dial::EdgeStream>,
    opts: bridge::Options,
    mut offer: crate::protocol::ResumeOffer,
    target: &Target,
) -> Result<Stats, ConnError>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = bridge::Session::new(bridge::resume::REPLAY_LIMIT);
    let mut ws = ws;
    let count = |outcome: &str| {
        if let Some(m) = target.metrics() {
            m.metrics
                .resumes_total
                .with_label_values(&[&m.name, outcome])
                .inc();
        }
    };
    loop {
        let broke = match bridge::run_resumable(&mut local, ws, opts, &mut session, offer.delivered)
            .await
        {
            Ok(_) => return Ok(session.stats()),
            Err(e) if e.is_link_failure() => e,
            Err(source) => {
                return Err(ConnError::Bridge {
                    host: target.host().to_string(),
                    source,
                });
            }
        };
        tracing::warn!(
            "tunnel to {} broke: {broke}; resuming the stream (for up to {:?})",
            target.host(),
            offer.window
        );
        let until = tokio::time::Instant::now() + offer.window;
        let request = crate::protocol::ResumeRequest {
            id: offer.id.clone(),
            ticket: offer.ticket.clone(),
            delivered: session.delivered(),
        };
        let conn = match redial(target, &request, until).await {
            Ok(conn) => conn,
            Err(why) => {
                count("failed");
                return Err(ConnError::Resume {
                    host: target.host().to_string(),
                    broke,
                    why,
                });
            }
        };
        let Some(next) = conn.resume else {
            count("failed");
            return Err(ConnError::Resume {
                host: target.host().to_string(),
                broke,
                why: "the edge answered without resuming the stream".into(),
            });
        };
        count("resumed");
        tracing::info!("tunnel to {} resumed", target.host());
        offer = next;
        ws = conn.ws;
    }
}

/// First pause between resume attempts; it doubles up to [`REDIAL_MAX`] (or
/// [`REDIAL_EDGE_MAX`]).
pub const REDIAL_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
/// Longest pause after an attempt the network failed (no connection, a timeout):
/// short, so bytes flow again well within a second of the link coming back.
pub const REDIAL_MAX: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest pause after an attempt the edge itself failed (a bad answer): the link
/// works, so a struggling edge is not pressed harder.
pub const REDIAL_EDGE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Dial with `request` until it succeeds, the edge refuses, or `until` passes;
/// pauses grow exponentially, each with random jitter (0.5x to 1.5x). Each
/// attempt's connect and handshake are bounded by
/// [`dial::RESUME_ATTEMPT_TIMEOUT`] (a login it needs is not).
async fn redial(
    target: &Target,
    request: &crate::protocol::ResumeRequest,
    until: tokio::time::Instant,
) -> Result<dial::Connected, String> {
    let mut pause = REDIAL_FIRST;
    loop {
        // Boxed, like the first dial: inline, the handshake's state would sit in
        // every resumable connection's task for its whole life.
        let attempt =
            tokio::time::timeout_at(until, Box::pin(connect_resuming(target, Some(request))));
        let why = match attempt.await {
            Err(_) => return Err("the edge's resume window passed".into()),
            Ok(Ok(conn)) => return Ok(conn),
            // Nothing listens there any more: the edge process that held the
            // stream is gone, and its streams with it.
            Ok(Err(ConnError::Dial(DialError::Connect { addr, source })))
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                return Err(format!(
                    "nothing listens at {addr} any more: the edge process holding the stream is gone"
                ));
            }
            Ok(Err(ConnError::Dial(
                e @ (DialError::Resolve { .. }
                | DialError::Connect { .. }
                | DialError::Timeout { .. }
                | DialError::Proxy { .. }),
            ))) => {
                pause = pause.min(REDIAL_MAX);
                e.to_string()
            }
            Ok(Err(ConnError::Dial(e @ DialError::Protocol { .. }))) => e.to_string(),
            Ok(Err(e)) => return Err(e.to_string()),
        };
        let jittered = dial::jittered(pause);
        tracing::debug!("resume attempt failed: {why}; next in {jittered:?}");
        if tokio::time::Instant::now() + jittered >= until {
            return Err(format!(
                "the edge's resume window passed; last attempt: {why}"
            ));
        }
        tokio::time::sleep(jittered).await;
        pause = (pause * 2).min(REDIAL_EDGE_MAX);
    }
}

/// One counted connection: open while it lives.
struct Counted<'a> {
    m: &'a crate::metrics::TunnelMetrics,
}

impl<'a> Counted<'a> {
    fn start(m: &'a crate::metrics::TunnelMetrics) -> Counted<'a> {
        m.metrics
            .connections_total
            .with_label_values(&[&m.name])
            .inc();
        m.metrics
            .connections_open
            .with_label_values(&[&m.name])
            .inc();
        Counted { m }
    }

    fn failed(&self, reason: &str) {
        self.m
            .metrics
            .connection_failures_total
            .with_label_values(&[&self.m.name, reason])
            .inc();
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.m
            .metrics
            .connections_open
            .with_label_values(&[&self.m.name])
            .dec();
    }
}

/// Open one stream with `token` (or the target's own credentials) and close it at
/// once with a close frame, so the edge ends the origin stream cleanly: proves the
/// credentials without moving data (`--login-now`, `tunnel doctor`).
pub async fn probe(
    target: &Target,
    token: Option<&crate::secret::Secret>,
) -> Result<(), DialError> {
    let conn = dial::dial(target, token).await?;
    let nothing = tokio::io::join(tokio::io::empty(), tokio::io::sink());
    let close = bridge::run(nothing, conn.ws, bridge::Options::default());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), close).await;
    Ok(())
}

/// Dial, logging in lazily: a login redirect (or a refused login token) makes the
/// authenticator produce a token, once per cause, and the dial is tried again. With
/// a service token or `--token` there is no authenticator, so no login ever happens.
pub async fn connect(target: &Target) -> Result<dial::Connected, ConnError> {
    connect_resuming(target, None).await
}

/// [`connect`], resuming the stream `resume` names: the identity is proven again
/// exactly as on a new stream.
pub async fn connect_resuming(
    target: &Target,
    resume: Option<&crate::protocol::ResumeRequest>,
) -> Result<dial::Connected, ConnError> {
    let Some(auth) = target.credentials().login() else {
        return Ok(dial::dial_resuming(target, None, resume).await?);
    };
    let mut token = auth.current();
    // At most one login and one refresh of a token the edge refused.
    for _ in 0..2 {
        match dial::dial_resuming(target, token.as_ref(), resume).await {
            Ok(conn) => return Ok(conn),
            Err(DialError::LoginRequired { .. } | DialError::TokenRefused { .. }) => {
                let obtained = auth.token(token.as_ref()).await?;
                if let Some(m) = target.metrics() {
                    let source = match obtained.source {
                        crate::auth::Source::Cache => "cache",
                        crate::auth::Source::Exchange => "exchange",
                        crate::auth::Source::Browser => "browser",
                    };
                    let kind = if token.is_some() { "refresh" } else { "new" };
                    m.metrics
                        .tokens_total
                        .with_label_values(&[source, kind])
                        .inc();
                }
                token = Some(obtained.token);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(dial::dial_resuming(target, token.as_ref(), resume).await?)
}
