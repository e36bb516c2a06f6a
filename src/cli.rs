//! Command-line definitions (clap derive) and nothing else. Flag names follow
//! `cloudflared access tcp` so scripts port by renaming the binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Reach private TCP services behind an identity-aware edge, and self-host that edge.
#[derive(Debug, Parser)]
#[command(name = "tunnel", version, about, propagate_version = true)]
pub struct Cli {
    /// Logging options (valid for every command).
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where logs go and how much is said.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Append logs to this file instead of stderr.
    #[arg(long, global = true, env = "TUNNEL_LOGFILE", value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// Write logs to `tunnel.log` in this directory instead of stderr.
    #[arg(long, global = true, env = "TUNNEL_LOG_DIRECTORY", value_name = "DIR")]
    pub log_directory: Option<PathBuf>,
    /// Least severe level logged [default: info; warn for `ssh` in stdio mode].
    #[arg(
        long = "log-level",
        visible_alias = "loglevel",
        global = true,
        env = "TUNNEL_LOGLEVEL",
        value_enum
    )]
    pub log_level: Option<LogLevel>,
}

/// Log levels, named as `cloudflared` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including per-connection details.
    Debug,
    /// Listeners, streams opened and closed.
    Info,
    /// Failed connections and retries.
    Warn,
    /// Errors only.
    Error,
    /// Same as error.
    Fatal,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Listen locally and bridge every accepted connection to an app through the edge.
    #[command(visible_aliases = ["rdp", "smb"])]
    Tcp(AccessArgs),
    /// Bridge stdin/stdout to an app, for `ssh -o ProxyCommand='tunnel ssh --hostname %h'`
    /// (with --url, listen locally like `tcp`).
    Ssh(AccessArgs),
    /// Print an ~/.ssh/config stanza that reaches HOSTNAME through `tunnel ssh`.
    SshConfig(SshConfigArgs),
    /// Log in to an app in the browser (if needed) and cache its token.
    Login(LoginArgs),
    /// Print the cached token for an app; never starts a login.
    Token(TokenArgs),
    /// Forget the cached tokens of an app (or, with --all, every cached token).
    Logout(LogoutArgs),
    /// Run the system `curl` against an app with its token (logging in if needed).
    Curl(CurlArgs),
    /// Run a self-hosted edge (see `tunnel edge --help`), or one of its tools.
    Edge(EdgeArgs),
    /// Start a local edge, an echo origin and a listener in this process, and prove a
    /// round trip through them.
    Demo(DemoArgs),
}

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
    /// An Access token (JWT) to send as Cf-Access-Token.
    #[arg(long, env = "TUNNEL_ACCESS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra request header for the edge, `Name: value` (repeatable).
    #[arg(long, short = 'H', value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// How to reach the edge and where the login keeps its tokens.
    #[command(flatten)]
    pub edge: Reach,
    /// Log in at start instead of at the first connection (listener mode).
    #[arg(long)]
    pub login_now: bool,
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

/// A duration such as `54s`, `500ms` or `2m`.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; use e.g. 10s, 500ms, 2m"))
}

/// A [`duration`] above zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than zero, e.g. 54s".into()),
        d => Ok(d),
    }
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
    /// The app, e.g. https://app.example.com.
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
    /// The app, e.g. https://app.example.com.
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

/// `tunnel edge --config edge.toml`, or one of its tools.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EdgeArgs {
    /// The edge's config file (TOML).
    #[arg(long, short = 'c', env = "TUNNEL_EDGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Check a config file and exit 0 when it is valid.
    CheckConfig(CheckArgs),
    /// Read a password from stdin (first line) and print its argon2id hash for
    /// `[[users]] password_hash`.
    HashPassword,
}

/// Flags of `edge mint-token`.
#[derive(Debug, Args)]
pub struct MintArgs {
    /// The edge's config file.
    #[arg(long, short = 'c', env = "TUNNEL_EDGE_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
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

/// Flags of `edge check-config`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The edge's config file.
    #[arg(long, short = 'c', env = "TUNNEL_EDGE_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cloudflared_flag_names_parse() {
        let cli = Cli::try_parse_from([
            "tunnel",
            "tcp",
            "--tunnel-host",
            "db.test",
            "--listener",
            "127.0.0.1:1",
            "--id",
            "i",
            "--secret",
            "s",
            "-H",
            "X: y",
            "--loglevel",
            "debug",
        ])
        .unwrap();
        let Command::Tcp(a) = cli.command else {
            panic!("not tcp")
        };
        assert_eq!(a.hostname, "db.test");
        assert_eq!(a.service_token_secret.as_deref(), Some("s"));
        assert_eq!(cli.log.log_level, Some(LogLevel::Debug));
        assert!(Cli::try_parse_from(["tunnel", "rdp", "-T", "x", "-L", "127.0.0.1:1"]).is_ok());
    }
}
