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

/// Where logs go and how much is said. Listed under their own heading in every
/// command's `--help`, apart from the command's own flags.
#[derive(Debug, Args)]
#[command(next_help_heading = "Logging (every command)")]
pub struct LogArgs {
    /// Append logs to this file instead of stderr (`tunnel edge` reopens it on SIGHUP).
    #[arg(long, global = true, env = "TUNNEL_LOGFILE", value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// Write logs to `tunnel.log` in this directory (created if missing) instead of
    /// stderr.
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
    /// How log lines look: `text` for people, `json` (one object per event, stable
    /// field names) for log shippers.
    #[arg(
        long = "log-format",
        global = true,
        env = "TUNNEL_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL message key=value ...`.
    Text,
    /// `{"timestamp", "level", "message", ...fields}`, one object per line.
    Json,
}

/// Log levels, named as `cloudflared` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including a line per connection opened and closed.
    Debug,
    /// Listeners, refusals, login steps, and the edge's summary per minute.
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
    /// Run a self-hosted edge from its config file (`tunnel edge --config edge.toml`),
    /// or one of its tools.
    Edge(EdgeArgs),
    /// Start a local edge, an echo origin and a listener in this process, and prove a
    /// round trip through them.
    Demo(DemoArgs),
    /// Walk the path to an app and say where it breaks, with a fix for each step.
    Doctor(DoctorArgs),
    /// Show what every running `tunnel up` and `tunnel tcp` of this user is doing.
    Status(StatusArgs),
    /// Serve every tunnel of one config file in one process (one login per auth
    /// domain; reloads on SIGHUP and when the file changes).
    Up(UpArgs),
    /// Print a shell completion script, e.g. `tunnel completions bash >
    /// /etc/bash_completion.d/tunnel`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `tunnel man > ~/.local/share/man/man1/tunnel.1`.
    Man,
}

/// Flags of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON array (one object per process).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The app, as for `tcp --hostname`.
    pub hostname: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// A service token to check the path with instead of a login.
    #[command(flatten)]
    pub service: ServiceToken,
    /// How to reach the edge and where tokens are cached.
    #[command(flatten)]
    pub edge: Reach,
}

/// Flags of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The tunnels file (TOML) [default: CONFIG_DIR/tunnel/up.toml].
    #[arg(long, short = 'c', env = "TUNNEL_UP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the file, print the plan (one line per tunnel) and exit.
    #[arg(long)]
    pub check: bool,
    /// Print a `cloudflared` config.yml's `forwarders:` as this command's TOML, and exit.
    #[arg(long, value_name = "CONFIG_YML", conflicts_with = "check")]
    pub from_cloudflared: Option<PathBuf>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9090.
    #[arg(long, env = "TUNNEL_METRICS", value_name = "HOST:PORT")]
    pub metrics: Option<String>,
}

/// Flags of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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

/// A clap error (as clap renders it) on one line for `tunnel: error: ...`: the
/// message, clap's tips (such as "a similar argument exists: '--hostname'") and which
/// `--help` to read.
pub fn one_line_error(rendered: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut command = None;
    let mut in_usage = false;
    for line in rendered.lines().map(str::trim) {
        if let Some(usage) = line.strip_prefix("Usage:") {
            in_usage = true;
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '<', '[']))
                .collect();
            command.get_or_insert(words.join(" "));
        } else if line.is_empty() || line.starts_with("For more information") {
            in_usage = false;
        } else if !in_usage {
            let line = line.strip_prefix("error:").unwrap_or(line);
            let line = line.strip_prefix("tip:").unwrap_or(line).trim();
            let line = line
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .unwrap_or(line);
            parts.push(line.to_string());
        }
    }
    let command = command.filter(|c| !c.is_empty());
    parts.push(format!(
        "see '{} --help'",
        command.as_deref().unwrap_or("tunnel")
    ));
    parts.join("; ")
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
        assert_eq!(a.service.service_token_secret.as_deref(), Some("s"));
        assert_eq!(cli.log.log_level, Some(LogLevel::Debug));
        assert!(Cli::try_parse_from(["tunnel", "rdp", "-T", "x", "-L", "127.0.0.1:1"]).is_ok());
    }

    #[test]
    fn clap_errors_become_one_line_with_the_tip() {
        let e = Cli::try_parse_from(["tunnel", "tcp", "--hostnme", "x"]).unwrap_err();
        let line = one_line_error(&e.render().to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("'--hostnme'"), "{line}");
        assert!(line.contains("'--hostname'"), "{line}");
        assert!(line.ends_with("see 'tunnel tcp --help'"), "{line}");
        let e = Cli::try_parse_from(["tunnel", "logni"]).unwrap_err();
        let line = one_line_error(&e.render().to_string());
        assert!(line.contains("'login'"), "{line}");
        assert!(line.ends_with("see 'tunnel --help'"), "{line}");
    }

    #[test]
    fn edge_config_goes_before_or_after_the_tool() {
        for args in [
            ["tunnel", "edge", "--config", "e.toml", "check-config"],
            ["tunnel", "edge", "check-config", "--config", "e.toml"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Edge(e) = cli.command else {
                panic!("not edge")
            };
            assert_eq!(e.config.as_deref(), Some(std::path::Path::new("e.toml")));
            assert!(matches!(e.tool, Some(EdgeTool::CheckConfig)));
        }
    }
}
