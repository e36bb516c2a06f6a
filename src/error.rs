//! The error every command returns: one enum over the library's typed errors, each
//! variant knowing its documented exit code (see [`crate::exit`]); `main` prints it
//! once.

use crate::client::listen::ListenError;
use crate::client::{ConnError, TargetError};
use crate::edge::EdgeError;
use crate::exit;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A malformed `--hostname`, `--destination`, `--connect-to` or `-H`.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A `--url` that could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// `--ca-file` (or `SSL_CERT_FILE`) unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// No token could be had (login needed, failed, cache unusable).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A tunnelled connection failed (stdio mode).
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The edge could not start.
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// A config file (`tunnel up`) that does not parse or validate.
    #[error("{0}")]
    Config(String),
    /// Stopped by a signal before finishing.
    #[error("interrupted")]
    Interrupted,
    /// Writing output or another local operation failed.
    #[error("{0}")]
    Io(String),
    /// The command's output could not be written (or its reader went away).
    #[error(transparent)]
    Output(#[from] crate::console::OutputError),
}

impl Error {
    /// The process exit code (see [`crate::exit`] and the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Target(_) => exit::USAGE,
            Error::Listen(ListenError::BadAddress(_) | ListenError::Unusable { .. }) => exit::USAGE,
            Error::Listen(_) | Error::Tls(_) | Error::Edge(_) | Error::Io(_) => exit::LOCAL,
            Error::Config(_) => exit::LOCAL,
            Error::Conn(e) => e.exit_code(),
            Error::Auth(e) => e.exit_code(),
            Error::Interrupted => exit::INTERRUPTED,
            Error::Output(crate::console::OutputError::Closed) => exit::OK,
            Error::Output(_) => exit::LOCAL,
        }
    }
}
