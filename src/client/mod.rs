//! The client side: where to dial and with what credentials ([`Target`]), opening one
//! authenticated WebSocket ([`dial`]), the local listener of `tunnel tcp`
//! ([`listen`]) and the stdio mode of `tunnel ssh` ([`stdio`]).

pub mod dial;
pub mod listen;
pub mod proxy;
pub mod stdio;
pub mod target;

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
}

impl ConnError {
    /// The process exit code for this failure (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            ConnError::Dial(e) => e.exit_code(),
            ConnError::Auth(e) => e.exit_code(),
            ConnError::Bridge { .. } => crate::exit::NETWORK,
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
    let result = bridge::run(local, conn.ws, opts).await;
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
    result.map_err(|source| ConnError::Bridge {
        host: target.host().to_string(),
        source,
    })
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
    let Some(auth) = target.credentials().login() else {
        return Ok(dial::dial(target, None).await?);
    };
    let mut token = auth.current();
    // At most one login and one refresh of a token the edge refused.
    for _ in 0..2 {
        match dial::dial(target, token.as_ref()).await {
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
    Ok(dial::dial(target, token.as_ref()).await?)
}
