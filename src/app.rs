//! Running a parsed command: flags are validated once into the structs the rest of
//! the crate uses ([`Target`], [`Config`]), then the command runs. Every failure
//! comes back as an [`Error`] that knows its exit code; `main` prints it once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::{AccessArgs, Command, EdgeArgs, EdgeTool};
use crate::client::listen::{self, ListenError};
use crate::client::{ConnError, Credentials, Target, TargetError, stdio, target};
use crate::edge::{self, Config, Edge, EdgeError};
use crate::secret::Secret;
use crate::{commands, exit, shutdown};

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
    /// Stopped by a signal before finishing.
    #[error("interrupted")]
    Interrupted,
    /// Writing output or another local operation failed.
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// The process exit code (see [`crate::exit`] and the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Target(_) => exit::USAGE,
            Error::Listen(ListenError::BadAddress(_)) => exit::USAGE,
            Error::Listen(_) | Error::Tls(_) | Error::Edge(_) | Error::Io(_) => exit::LOCAL,
            Error::Conn(e) => e.exit_code(),
            Error::Auth(e) => e.exit_code(),
            Error::Interrupted => exit::INTERRUPTED,
        }
    }
}

/// Run `command` until it finishes or `shutdown` is cancelled; `Ok` carries the
/// exit code (0, or curl's own for `tunnel curl`).
pub async fn run(command: Command, shutdown: CancellationToken) -> Result<u8, Error> {
    match command {
        Command::Login(args) => {
            let json = args.auth.json;
            reported(
                json,
                commands::login(args, shutdown).await.map(|_| exit::OK),
            )
        }
        Command::Token(args) => {
            let json = args.auth.json;
            reported(json, commands::token(args).await.map(|_| exit::OK))
        }
        Command::Logout(args) => {
            let json = args.auth.json;
            reported(json, commands::logout(args).await.map(|_| exit::OK))
        }
        Command::Curl(args) => {
            let json = args.auth.json;
            reported(json, commands::curl(args, shutdown).await)
        }
        Command::Tcp(args) => {
            if args.url.is_empty() {
                return Err(Error::Usage(
                    "tcp needs --url HOST:PORT to listen on (e.g. --url 127.0.0.1:5432)".into(),
                ));
            }
            listen_mode(&args, shutdown).await.map(|_| exit::OK)
        }
        Command::Ssh(args) if !args.url.is_empty() => {
            listen_mode(&args, shutdown).await.map(|_| exit::OK)
        }
        Command::Ssh(args) => {
            let target = target_from(&args)?;
            tokio::select! {
                r = stdio::run(&target) => r.map(|_| exit::OK).map_err(Error::from),
                _ = shutdown.cancelled() => Err(Error::Interrupted),
            }
        }
        Command::SshConfig(args) => {
            let t = Target::parse(&args.hostname)?;
            let exe = std::env::current_exe()
                .map_err(|e| Error::Io(format!("cannot find this program's path: {e}")))?;
            println!("{}", ssh_config(&t, &exe.display().to_string()));
            Ok(exit::OK)
        }
        Command::Edge(args) => edge_command(args, shutdown).await.map(|_| exit::OK),
        Command::Demo(args) => crate::demo::run(&args, shutdown).await.map(|_| exit::OK),
    }
}

/// With `--json`, an error is also printed as one JSON object on stdout.
fn reported(json: bool, result: Result<u8, Error>) -> Result<u8, Error> {
    if let (true, Err(e)) = (json, &result) {
        commands::print_json_error(e);
    }
    result
}

async fn listen_mode(args: &AccessArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let target = Arc::new(target_from(args)?);
    crate::serve::raise_fd_limit();
    let listeners = listen::bind(&args.url).await?;
    if let (true, Some(auth)) = (args.login_now, &target.auth) {
        tokio::select! {
            r = auth.token(None) => { r?; }
            _ = shutdown.cancelled() => return Err(Error::Interrupted),
        }
    }
    listen::serve(listeners, target, shutdown, shutdown::GRACE).await;
    Ok(())
}

/// Validate the access flags into the [`Target`] every connection uses.
pub fn target_from(args: &AccessArgs) -> Result<Target, Error> {
    let mut t = Target::parse(&args.hostname)?;
    if let Some(c) = &args.edge.connect_to {
        t.connect_to = Some(target::parse_host_port("--connect-to", c)?);
    }
    if let Some(d) = &args.destination {
        t.destination = Some(target::parse_host_port("--destination", d)?);
    }
    for h in &args.header {
        t.headers.push(target::parse_header(h)?);
    }
    let id = args.service_token_id.as_deref().filter(|s| !s.is_empty());
    let secret = args
        .service_token_secret
        .as_deref()
        .filter(|s| !s.is_empty());
    let token = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    t.credentials = match (id, secret, token) {
        (Some(_), Some(_), Some(_)) => {
            return Err(Error::Usage(
                "give either --token or a service token (--service-token-id/--service-token-secret), not both".into(),
            ));
        }
        (Some(id), Some(secret), None) => Credentials::ServiceToken {
            id: id.to_string(),
            secret: Secret::new(secret),
        },
        (Some(_), None, _) => {
            return Err(Error::Usage(
                "--service-token-id needs --service-token-secret too".into(),
            ));
        }
        (None, Some(_), _) => {
            return Err(Error::Usage(
                "--service-token-secret needs --service-token-id too".into(),
            ));
        }
        (None, None, Some(tok)) => Credentials::Token(Secret::new(tok)),
        (None, None, None) => Credentials::None,
    };
    if t.connect_to.is_none() {
        t.proxy = crate::client::proxy::from_env(t.tls, &t.host, |k| std::env::var(k).ok());
    }
    if t.tls || args.edge.ca_file.is_some() {
        t.tls_config = Some(crate::tls::client_config(args.edge.ca_file.as_deref())?);
    }
    if matches!(t.credentials, Credentials::None) {
        let auth = commands::auth_for(
            &t,
            args.edge.token_dir.as_deref(),
            args.edge.transfer_url.clone(),
            t.connect_to.clone(),
            args.edge.ca_file.as_deref(),
            true,
        )?;
        t.auth = Some(Arc::new(auth));
    }
    Ok(t)
}

/// The `~/.ssh/config` stanza for the app `t`, with `exe` (this program's path)
/// quoted for the OS it runs on.
pub fn ssh_config(t: &Target, exe: &str) -> String {
    let scheme = if t.tls { "" } else { "http://" };
    format!(
        "Host {host}\n  ProxyCommand {exe} ssh --hostname {scheme}%h{port}",
        exe = proxy_program(exe, cfg!(windows)),
        host = t.host,
        port = if t.port == if t.tls { 443 } else { 80 } {
            String::new()
        } else {
            format!(":{}", t.port)
        },
    )
}

async fn edge_command(args: EdgeArgs, shutdown: CancellationToken) -> Result<(), Error> {
    match args.tool {
        Some(EdgeTool::MintToken(m)) => {
            let ttl = humantime::parse_duration(&m.ttl).map_err(|e| {
                Error::Usage(format!(
                    "invalid --ttl {:?}: {e}; use e.g. 30m, 1h, 7d",
                    m.ttl
                ))
            })?;
            let edge = Edge::load(Config::load(&m.config).map_err(EdgeError::from)?)?;
            println!("{}", edge.mint(&m.app, &m.email, ttl)?);
            Ok(())
        }
        Some(EdgeTool::HashPassword) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Error::Io(format!("cannot read the password from stdin: {e}")))?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(Error::Usage(
                    "hash-password reads the password from stdin: got an empty line".into(),
                ));
            }
            let hash = crate::edge::login::hash_password(password).map_err(Error::Io)?;
            println!("{hash}");
            Ok(())
        }
        Some(EdgeTool::CheckConfig(c)) => {
            let config = Config::load(&c.config).map_err(EdgeError::from)?;
            println!("{}: ok ({} apps)", c.config.display(), config.apps.len());
            Ok(())
        }
        None => {
            let Some(path) = args.config else {
                return Err(Error::Usage(
                    "edge needs --config FILE (see `tunnel edge --help`)".into(),
                ));
            };
            let edge = Arc::new(Edge::load(Config::load(&path).map_err(EdgeError::from)?)?);
            crate::serve::raise_fd_limit();
            let listener = edge.bind().await?;
            edge::serve(edge, listener, shutdown, shutdown::GRACE).await;
            info!("edge stopped");
            Ok(())
        }
    }
}

/// How long the demo waits for its round trip.
pub const DEMO_TIMEOUT: Duration = Duration::from_secs(10);

/// `exe` as the program of an ssh `ProxyCommand`. `%` is doubled (ssh expands
/// `%h` and friends there). Unix ssh runs the line with `/bin/sh -c`, so a path
/// with anything but plain characters is single-quoted; Windows' `ssh.exe` passes
/// it to `CreateProcess`, which takes a path with spaces (`C:\Program Files\...`)
/// only in double quotes (a Windows path cannot hold `"`).
fn proxy_program(exe: &str, windows: bool) -> String {
    let exe = exe.replace('%', "%%");
    let plain = |c: char| c.is_ascii_alphanumeric() || "/\\._-+:,@=".contains(c);
    if exe.chars().all(plain) {
        exe
    } else if windows {
        format!("\"{exe}\"")
    } else {
        format!("'{}'", exe.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::proxy_program;

    #[test]
    fn proxy_program_is_quoted_for_the_os() {
        assert_eq!(proxy_program("/usr/bin/tunnel", false), "/usr/bin/tunnel");
        assert_eq!(
            proxy_program(r"C:\Users\al\.cargo\bin\tunnel.exe", true),
            r"C:\Users\al\.cargo\bin\tunnel.exe"
        );
        assert_eq!(
            proxy_program(r"C:\Program Files\tunnel\tunnel.exe", true),
            r#""C:\Program Files\tunnel\tunnel.exe""#
        );
        assert_eq!(
            proxy_program(r"C:\Tools (x86)\100%\tunnel.exe", true),
            r#""C:\Tools (x86)\100%%\tunnel.exe""#
        );
        assert_eq!(
            proxy_program("/Users/al/My Tools/tunnel", false),
            "'/Users/al/My Tools/tunnel'"
        );
        assert_eq!(
            proxy_program("/opt/al's $HOME/tunnel", false),
            r"'/opt/al'\''s $HOME/tunnel'"
        );
    }
}
