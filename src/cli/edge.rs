//! Flags of the self-hosting commands: `edge` and its tools, and `demo`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::duration;

/// `tunnel edge --config edge.toml`, or one of its tools. `--config` may come before
/// or after the tool's name (`tunnel edge --config X check-config`).
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The edge's config file (TOML); see examples/edge.toml.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "TUNNEL_EDGE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9091.
    #[arg(long, env = "TUNNEL_EDGE_METRICS", value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// A tool instead of running the edge.
    #[command(subcommand)]
    pub tool: Option<EdgeTool>,
    /// After Ctrl-C or SIGTERM, how long live streams may finish; those still open
    /// then are reset (origin and client), never closed as if complete.
    #[arg(
        long,
        env = "TUNNEL_GRACE_PERIOD",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = duration
    )]
    pub grace_period: Duration,
}

/// Tools that work on an edge's config.
#[derive(Debug, Subcommand)]
pub enum EdgeTool {
    /// Print a token for an app, signed with the edge's key (for scripts and tests).
    MintToken(MintArgs),
    /// Check a config file: exit 0 only when the edge would start with it and every
    /// user could log in.
    CheckConfig,
    /// Print the argon2id hash of a password for `[[users]] password_hash`: asked for
    /// twice without echo on a terminal, else read from stdin (first line).
    HashPassword,
}

/// Flags of `edge mint-token` (besides `--config`).
#[derive(Debug, Args)]
pub struct MintArgs {
    /// The app's hostname.
    #[arg(long)]
    pub app: String,
    /// The identity the token names.
    #[arg(long)]
    pub email: String,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo's tunnel listener listens.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "HOST:PORT")]
    pub url: String,
    /// Exit after proving the round trip instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}
