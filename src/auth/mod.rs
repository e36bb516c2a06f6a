//! Authentication, lazy and single-flight: [`login`] runs the flow (discovery,
//! cached token, org-token exchange, browser login with the encrypted hand-off) for
//! one app; [`store`] is the token cache; [`discovery`], [`exchange`] and
//! [`browser`] are its steps (the hand-off crypto and the metadata claims both sides
//! share live in [`crate::protocol`]); [`jwt`] reads claims on the client;
//! [`binding`] says which token may go where.

pub mod binding;
pub mod browser;
pub mod discovery;
pub mod exchange;
pub mod jwt;
pub mod login;
mod private;
pub mod store;

pub use login::{AuthConfig, Authenticator, Source};

use crate::exit;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid token and a login is not allowed here (`tunnel token`).
    #[error("no valid token for {app}; run `tunnel login {app}`")]
    LoginNeeded {
        /// The app URL.
        app: String,
    },
    /// The login did not complete (timeout, tampered hand-off, service error).
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// App discovery failed or returned something we must not trust.
    #[error("app discovery failed: {0}")]
    Discovery(String),
    /// The auth domain knows the user but does not let them into this app.
    #[error("{0}")]
    Forbidden(String),
    /// The edge, auth domain or hand-off service could not be reached.
    #[error("{0}")]
    Network(String),
    /// The token cache could not be used.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// A network error with its whole cause chain on one line (reqwest's own message
/// says only "error sending request").
pub fn network(context: &str, e: &reqwest::Error) -> AuthError {
    let mut msg = format!("{context}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    AuthError::Network(msg)
}

/// Read at most `limit` bytes of a response body: whatever an edge sends, the client
/// never holds more than that (a JWKS, a hand-off, are a few KiB).
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, AuthError> {
    let too_big = || AuthError::Discovery(format!("{what} is larger than {limit} bytes; refused"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| network(&format!("reading {what}"), &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl AuthError {
    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            AuthError::LoginNeeded { .. } => exit::LOGIN_NEEDED,
            AuthError::LoginFailed(_) | AuthError::Discovery(_) => exit::AUTH_REFUSED,
            AuthError::Forbidden(_) => exit::EDGE_REFUSED,
            AuthError::Network(_) => exit::NETWORK,
            AuthError::Store(_) => exit::LOCAL,
        }
    }

    /// A short stable code for `--json` errors.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::LoginNeeded { .. } => "login_needed",
            AuthError::LoginFailed(_) => "login_failed",
            AuthError::Discovery(_) => "discovery_failed",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::Network(_) => "network",
            AuthError::Store(_) => "local_io",
        }
    }
}
