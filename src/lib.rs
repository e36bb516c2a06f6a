//! `tunnel`: reach private TCP services behind an identity-aware edge (Cloudflare
//! Access or our own `tunnel edge`) from the command line, and self-host that edge.
//!
//! The public surface is small and deliberate: what the binary (`main.rs`), the
//! end-to-end tests, the benches and the fuzz harness need.
//! - [`run`]: run a parsed [`cli::Command`] (failing with an [`Error`] that knows its
//!   exit code); with [`on_signal`], [`LogFile`] and
//!   [`reopen_on_hangup`], everything `main.rs` calls; a [`Console`] carries the
//!   command's results and notes (the library never prints by itself).
//! - [`cli`]: command-line definitions (clap), parsed once in `main`.
//! - [`exit`]: the documented process exit codes.
//! - [`protocol`]: header names, paths, claims, the clock and the hand-off crypto
//!   both sides share (the wire contract).
//! - [`frame`] and [`bridge`]: the WebSocket frame codec and the data path, which
//!   the micro-benchmarks drive in process.
//! - [`Issuer`], [`Claims`], [`derive_aud`]: the edge's tokens, for tests that mint
//!   their own.
//! - [`client_config`], [`server_config`]: rustls configurations, for tests that
//!   stand up TLS peers.
//!
//! Everything else is internal (`pub(crate)`), one job per module; README
//! "Development" has the module map, and `tests/layers.rs` checks its layers.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod cli;
pub mod exit;
pub mod frame;
pub mod protocol;

pub use app::run;
pub use console::{Console, Notice, OutputError};
pub use edge::config::derive_aud;
pub use edge::issuer::{Claims, Issuer};
pub use error::Error;
pub use logfile::{LogFile, reopen_on_hangup};
pub use shutdown::on_signal;
pub use tls::{client_config, server_config};

pub(crate) mod access;
pub(crate) mod app;
pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod commands;
pub(crate) mod console;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod edge;
pub(crate) mod error;
pub(crate) mod logfile;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub(crate) mod secret;
pub(crate) mod serve;
pub(crate) mod shutdown;
pub(crate) mod status;
pub(crate) mod tls;
pub(crate) mod up;

/// What the fuzz harness (`fuzz/src/lib.rs`) reaches inside the crate: compiled
/// only for cargo-fuzz (`--cfg fuzzing`) and for the seed replay in the unit
/// tests. Not an API.
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzz_api {
    /// The data path, as the frame target drives it.
    pub mod bridge {
        pub use crate::bridge::decode::{Decoder, Event};
        pub use crate::bridge::{
            BridgeError, CLIENT_MAX_FRAME, EDGE_MAX_FRAME, Options, Role, Stats, WebSocket, run,
        };
    }
    /// The client's handshake request and its reading of the answer.
    pub mod dial {
        pub use crate::client::errors::{DialError, classify};
        pub use crate::client::upgrade::{handshake_request, parse_response};
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
