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
    // Boxed: the handshake's state (TLS, HTTP) is large and needed only briefly;
    // inline it would stay in every connection's task for its whole life.
    let conn = Box::pin(connect(target)).await?;
    let opts = bridge::Options {
        peer_half_close: conn.peer_half_close,
        keepalive: *keepalive,
        ..Default::default()
    };
    bridge::run(local, conn.ws, opts)
        .await
        .map_err(|source| ConnError::Bridge {
            host: target.host.clone(),
            source,
        })
}

/// Dial, logging in lazily: a login redirect (or a refused login token) makes the
/// authenticator produce a token, once per cause, and the dial is tried again. With
/// a service token or `--token` there is no authenticator, so no login ever happens.
pub async fn connect(target: &Target) -> Result<dial::Connected, ConnError> {
    let Some(auth) = &target.auth else {
        return Ok(dial::dial(target, None).await?);
    };
    let mut token = auth.current();
    // At most one login and one refresh of a token the edge refused.
    for _ in 0..2 {
        match dial::dial(target, token.as_ref()).await {
            Ok(conn) => return Ok(conn),
            Err(DialError::LoginRequired { .. } | DialError::TokenRefused { .. }) => {
                token = Some(auth.token(token.as_ref()).await?.token);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(dial::dial(target, token.as_ref()).await?)
}
