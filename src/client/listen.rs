//! `tunnel tcp`: listen locally and give every accepted socket its own WebSocket.
//!
//! Accepting is [`crate::serve::run`]: each socket is spawned first and dials the
//! edge in its own task, so one slow edge round trip cannot stall accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Target;
use crate::bridge::Keepalive;
use crate::protocol::host_port::{self, HostPort, HostPortError, Port};

/// A `--url` that could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address is malformed or does not resolve.
    #[error(transparent)]
    BadAddress(#[from] HostPortError),
    /// Resolving or binding failed (port in use, permission).
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The address cannot be listened on as given: listed twice, or not an address
    /// of this machine.
    #[error("cannot listen on {addr} (--url {url:?}): {why}")]
    Unusable {
        /// The `--url` as given.
        url: String,
        /// The address.
        addr: String,
        /// What is wrong and what to do.
        why: &'static str,
    },
}

/// One `--url` (or `up`'s `listen`, named `what` in the error): `host:port` by the
/// one parser's rules ([`host_port`]), port 0 allowed (a free port), after a scheme
/// such as `tcp://` and a trailing `/`, which are ignored.
pub fn parse_url<'a>(what: &str, url: &'a str) -> Result<HostPort<'a>, HostPortError> {
    let raw = url.trim();
    let spec = raw
        .split_once("://")
        .map_or(raw, |(_, rest)| rest)
        .trim_end_matches('/');
    // The error names the value as given, scheme and all.
    host_port::parse(what, spec, Port::Listen)
        .map_err(|e| HostPortError::new(what, url, e.why(), Port::Listen))
}

/// Bind every `--url`. `localhost:5432` binds each address it resolves to (IPv4 and
/// IPv6); a scheme such as `tcp://` is accepted and ignored, as `cloudflared` does.
pub async fn bind(urls: &[String]) -> Result<Vec<TcpListener>, ListenError> {
    let mut listeners = Vec::new();
    for url in urls {
        let at = parse_url("--url", url)?;
        let unresolved =
            || HostPortError::new("--url", url, "the host does not resolve", Port::Listen);
        let mut addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((at.host(), at.port().unwrap_or(0)))
                .await
                .map_err(|_| unresolved())?
                .collect();
        // A resolver may name one address twice; only a repeated --url is a mistake.
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(*a));
        if addrs.is_empty() {
            return Err(unresolved().into());
        }
        for addr in addrs {
            let unusable = |why| ListenError::Unusable {
                url: url.clone(),
                addr: addr.to_string(),
                why,
            };
            if addr.port() != 0
                && listeners
                    .iter()
                    .any(|l: &TcpListener| l.local_addr().ok() == Some(addr))
            {
                return Err(unusable(
                    "--url lists this address twice: give each address once",
                ));
            }
            let listener = TcpListener::bind(addr).await.map_err(|source| {
                if source.kind() == std::io::ErrorKind::AddrNotAvailable {
                    return unusable(
                        "that is not an address of this machine: use 127.0.0.1, [::1], 0.0.0.0 or one of its own addresses",
                    );
                }
                let hint = match source.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        "; another program uses this port: pick another --url or stop it"
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "; ports below 1024 need privileges: pick a higher port"
                    }
                    _ => "",
                };
                ListenError::Bind {
                    addr: addr.to_string(),
                    source,
                    hint,
                }
            })?;
            listeners.push(listener);
        }
    }
    Ok(listeners)
}

/// Serve every listener until `shutdown`, then stop accepting (cancelling `closed`,
/// when given, once every listener is closed) and let live connections drain for
/// at most `grace` (those still open then are reset).
/// Each listener's "listening on" line is logged by this call, before the returned
/// future first runs, so lines appear in the order listeners are started; `name`
/// (a `tunnel up` entry) is added to them.
pub fn serve(
    listeners: Vec<TcpListener>,
    target: Arc<Target>,
    shutdown: CancellationToken,
    closed: Option<CancellationToken>,
    grace: Duration,
    keepalive: Keepalive,
    name: Option<&str>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let named = name.map(|n| format!(" (tunnel {n})")).unwrap_or_default();
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            info!("listening on {addr} for {}{named}", target.url());
        }
    }
    // One shared value, so a connection's task holds a pointer, not copies.
    let shared = Arc::new(Shared { target, keepalive });
    crate::serve::run(
        listeners,
        shutdown,
        closed,
        grace,
        move |socket, peer, _| {
            let shared = shared.clone();
            async move { handle(socket, peer, &shared).await }
        },
    )
}

/// What every connection of one listener uses.
struct Shared {
    target: Arc<Target>,
    keepalive: Keepalive,
}

async fn handle(mut socket: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = socket.set_nodelay(true);
    // Until the stream ends cleanly, closing this socket resets it: a failed dial
    // (an app that waits for the server to speak must not see an orderly empty
    // close), a cut, or a drain whose grace period runs out.
    crate::serve::abort(&socket);
    match super::serve_stream_from(&mut socket, &shared.target, &shared.keepalive, Some(peer)).await
    {
        Ok(stats) => {
            crate::serve::orderly(&socket);
            debug!(%peer, up = stats.up, down = stats.down, "connection closed")
        }
        Err(e) => warn!(%peer, "connection failed: {e}; local socket reset"),
    }
}
