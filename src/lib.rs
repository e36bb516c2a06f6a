//! `tunnel`: reach private TCP services behind an identity-aware edge (Cloudflare
//! Access or our own `tunnel edge`) from the command line, and self-host that edge.
//!
//! Modules, one job each:
//! - [`protocol`]: header names, paths and claims both sides share (the wire contract).
//! - [`access`]: validating the access flags into a `Target`, building a login flow.
//! - [`error`]: the error every command returns, with its exit code.
//! - [`app`]: running a parsed command, and its errors with their exit codes.
//! - [`auth`]: login hand-off crypto, app metadata, token cache and login flow.
//! - [`bridge`]: the data path, a byte stream pumped through a WebSocket with
//!   backpressure, half-close and keepalive. Client and edge use the same pump.
//! - [`client`]: dialing the edge (`dial`), the local listener (`listen`, `tcp` mode)
//!   and stdio (`ssh` mode).
//! - [`edge`]: the self-hostable edge: config, policy, token issuer, HTTP server.
//! - [`tls`]: rustls configurations for both sides.
//! - [`serve`]: the accept loop shared by the listener and the edge.
//! - [`secret`]: strings that never print themselves.
//! - [`status`]: the registry and control socket behind `tunnel status`.
//! - [`shutdown`]: turning SIGINT/SIGTERM into one cancellation token.
//! - [`commands`]: `login`, `token`, `logout` and `curl`.
//! - [`doctor`]: `tunnel doctor`, where the path to an app breaks.
//! - [`demo`]: the embedded default, an edge, an origin and a listener in one process.
//! - [`metrics`]: Prometheus metrics served on `--metrics ADDR`.
//! - [`exit`]: the documented process exit codes.
//! - [`logfile`]: the `--logfile` writer, reopened on SIGHUP for log rotation.
//! - [`up`]: `tunnel up`, every tunnel of one file in one process, hot reload.
//! - [`cli`]: command-line definitions (clap), parsed once in `main`.
#![forbid(unsafe_code)]

pub mod access;
pub mod app;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod client;
pub mod commands;
pub mod demo;
pub mod doctor;
pub mod edge;
pub mod error;
pub mod exit;
pub mod frame;
pub mod logfile;
pub mod metrics;
pub mod protocol;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod status;
pub mod tls;
pub mod up;

/// What the fuzz harness (`fuzz/src/lib.rs`) reaches inside the crate: compiled
/// only for cargo-fuzz (`--cfg fuzzing`) and for the seed replay in the unit
/// tests. Not an API.
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzz_api {
    /// The data path, as the frame target drives it.
    pub mod bridge {
        pub use crate::bridge::{
            BridgeError, CLIENT_MAX_FRAME, EDGE_MAX_FRAME, Options, Role, Stats, WebSocket, run,
        };
    }
    /// The client's handshake request and its reading of the answer.
    pub mod dial {
        pub use crate::client::dial::{DialError, classify, handshake_request, parse_response};
    }
    /// `--hostname`, `--destination` and `-H`.
    pub mod target {
        pub use crate::client::target::{
            AppUrl, Credentials, Target, parse_header, parse_host_port,
        };
    }
    /// The edge's checks of a handshake.
    pub mod policy {
        pub use crate::edge::policy::{
            Decision, authorize, cookie, find_app, request_host, upstream,
        };
    }
    /// The edge's WebSocket accept.
    pub mod server {
        pub use crate::edge::server::websocket_accept;
    }
    /// The frame header codec.
    pub mod frame {
        pub use crate::frame::{MAX_HEADER, header_len, parse_header, write_header};
    }
    pub use crate::edge::{Config, Issuer};
    pub use crate::secret::Secret;
    pub use crate::tls::client_config;
}

// The seed replay: the harness and its replays, compiled into the unit tests on
// stable, reaching the crate as `tunnel` as they do from `fuzz/`.
#[cfg(test)]
extern crate self as tunnel;
#[cfg(test)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_harness;
#[cfg(test)]
#[path = "../tests/fuzz_seeds.rs"]
mod fuzz_seeds;
