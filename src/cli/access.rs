//! Flags of the client commands: `tcp` and `ssh` ([`AccessArgs`]), the credentials
//! and the way to the edge they share, and the `login`, `token`, `logout`, `curl`
//! and `ssh-config` commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{duration, positive_duration};

/// Flags shared by `tcp` and `ssh`.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// The app: `db.example.com`, `https://db.example.com[:port]`, or `http://...` for a
    /// plain (non-TLS) loopback edge.
    #[arg(
        long,
        visible_alias = "tunnel-host",
        short = 'T',
        env = "TUNNEL_SERVICE_HOSTNAME"
    )]
    pub hostname: String,
    /// Local address to listen on, `host:port` (repeatable, or comma-separated).
    #[arg(
        long,
        visible_alias = "listener",
        short = 'L',
        env = "TUNNEL_SERVICE_URL",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// Bastion mode: the `host:port` the edge should connect this stream to.
    #[arg(long, env = "TUNNEL_SERVICE_DESTINATION", value_name = "HOST:PORT")]
    pub destination: Option<String>,
    /// A service token (machines: no browser, ever).
    #[command(flatten)]
    pub service: ServiceToken,
    /// An Access token (JWT) to send as Cf-Access-Token.
    #[arg(long, env = "TUNNEL_ACCESS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra request header for the edge, e.g. -H 'X-Team: blue' (repeatable).
    #[arg(long, short = 'H', value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// How to reach the edge and where the login keeps its tokens.
    #[command(flatten)]
    pub edge: Reach,
    /// Log in at start instead of at the first connection (listener mode).
    #[arg(long)]
    pub login_now: bool,
    /// Serve Prometheus metrics on this address (listener mode), e.g. 127.0.0.1:9090.
    #[arg(long, env = "TUNNEL_METRICS", value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Ping the edge after this long without hearing from it (e.g. 54s, 500ms).
    #[arg(
        long,
        env = "TUNNEL_KEEPALIVE_INTERVAL",
        value_name = "DURATION",
        default_value = "54s",
        value_parser = positive_duration
    )]
    pub keepalive_interval: Duration,
    /// Presume the edge dead (and reset the local socket) when nothing arrives this
    /// long after a ping was due. Data the edge sent that the local app has not read
    /// yet counts as hearing from it: a slow reader is not a dead edge.
    #[arg(
        long,
        env = "TUNNEL_KEEPALIVE_TIMEOUT",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = positive_duration
    )]
    pub keepalive_timeout: Duration,
    /// After Ctrl-C, SIGTERM or SIGHUP, how long live connections may finish (listener
    /// mode); those still open then are reset, never closed as if complete.
    #[arg(
        long,
        env = "TUNNEL_GRACE_PERIOD",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = duration
    )]
    pub grace_period: Duration,
}

/// A service token, as `cloudflared` takes it: `Cf-Access-Client-Id` and
/// `Cf-Access-Client-Secret`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServiceToken {
    /// Service token client id (machines: no browser, ever).
    #[arg(
        long = "service-token-id",
        visible_alias = "id",
        env = "TUNNEL_SERVICE_TOKEN_ID"
    )]
    pub service_token_id: Option<String>,
    /// Service token client secret.
    #[arg(
        long = "service-token-secret",
        visible_alias = "secret",
        env = "TUNNEL_SERVICE_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub service_token_secret: Option<String>,
}

/// Reaching the edge, and the login's token cache: shared by `tcp`, `ssh` and the
/// token commands.
#[derive(Debug, Args)]
pub struct Reach {
    /// Send every request to this `host:port` instead of the hostname's, keeping
    /// Host and TLS SNI.
    #[arg(long, env = "TUNNEL_CONNECT_TO", value_name = "HOST:PORT")]
    pub connect_to: Option<String>,
    /// Extra trusted CA certificates (PEM) for the edge's TLS.
    #[arg(long, env = "TUNNEL_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Where tokens are cached [default: ~/.config/tunnel].
    #[arg(long, env = "TUNNEL_TOKEN_DIR", value_name = "DIR")]
    pub token_dir: Option<PathBuf>,
    /// Base URL of the login hand-off service (when the app's metadata names none).
    #[arg(long, env = "TUNNEL_TRANSFER_URL", value_name = "URL")]
    pub transfer_url: Option<String>,
}

/// Flags every token command shares.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// How to reach the edge and where tokens are cached.
    #[command(flatten)]
    pub edge: Reach,
    /// Print one JSON object (the token and what it says, or the error).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The app, e.g. `https://app.example.com`.
    pub url: String,
    /// Shared token flags.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Print the token on stdout after logging in.
    #[arg(long, conflicts_with = "quiet")]
    pub print: bool,
    /// Print nothing on success.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Flags of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The app, e.g. `https://app.example.com`.
    #[arg(long)]
    pub app: String,
    /// Shared token flags.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Flags of `logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The app whose tokens to forget.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub url: Option<String>,
    /// Forget every cached token.
    #[arg(long)]
    pub all: bool,
    /// Shared token flags.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Flags of `curl`.
#[derive(Debug, Args)]
pub struct CurlArgs {
    /// Shared token flags (before the URL).
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The app URL to request.
    pub url: String,
    /// Arguments passed to curl as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub curl_args: Vec<String>,
}

/// Flags of `ssh-config`.
#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// The SSH app's hostname.
    #[arg(
        long,
        visible_alias = "tunnel-host",
        short = 'T',
        env = "TUNNEL_SERVICE_HOSTNAME"
    )]
    pub hostname: String,
}
