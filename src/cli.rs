//! Command-line definitions (clap derive) and nothing else. Flag names follow
//! `cloudflared access tcp` so scripts port by renaming the binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod access;
mod edge;

pub use access::{
    AccessArgs, AuthArgs, CurlArgs, LoginArgs, LogoutArgs, Reach, ServiceToken, SshConfigArgs,
    TokenArgs,
};
pub use edge::{DemoArgs, EdgeArgs, EdgeTool, MintArgs};

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
