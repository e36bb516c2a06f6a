//! Running a parsed command: flags are validated once into the structs the rest of
//! the crate uses ([`Target`], [`Config`]), then the command runs. Every failure
//! comes back as an [`Error`] that knows its exit code; `main` prints it once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use clap::CommandFactory;

pub use crate::access::{builder_from, target_from};
use crate::cli::{AccessArgs, Cli, Command, EdgeArgs, EdgeTool};
use crate::client::listen;
use crate::client::stdio;
use crate::client::target::{AppUrl, Target};
use crate::console::{Console, OutputError};
use crate::edge::{self, Config, Edge, EdgeError};
use crate::{commands, exit, shutdown};

pub use crate::error::Error;

/// Run `command` until it finishes or `shutdown` is cancelled, writing its results
/// and notes to `console`; `Ok` carries the exit code (0, or curl's own for
/// `tunnel curl`). A reader that went away ends the command quietly with 0.
pub async fn run(
    command: Command,
    shutdown: CancellationToken,
    console: &mut Console,
) -> Result<u8, Error> {
    match dispatch(command, shutdown, console).await {
        Err(Error::Output(OutputError::Closed)) => Ok(exit::OK),
        result => result,
    }
}

async fn dispatch(
    command: Command,
    shutdown: CancellationToken,
    console: &mut Console,
) -> Result<u8, Error> {
    match command {
        Command::Login(args) => {
            let json = args.auth.json;
            let r = commands::login(args, shutdown, console).await;
            reported(json, r.map(|_| exit::OK), console)
        }
        Command::Token(args) => {
            let json = args.auth.json;
            let r = commands::token(args, console).await;
            reported(json, r.map(|_| exit::OK), console)
        }
        Command::Logout(args) => {
            let json = args.auth.json;
            let r = commands::logout(args, console).await;
            reported(json, r.map(|_| exit::OK), console)
        }
        Command::Curl(args) => {
            let json = args.auth.json;
            let r = commands::curl(args, shutdown, console).await;
            reported(json, r, console)
        }
        Command::Tcp(args) => {
            if args.url.is_empty() {
                return Err(Error::Usage(
                    "tcp needs --url HOST:PORT to listen on (e.g. --url 127.0.0.1:5432)".into(),
                ));
            }
            listen_mode(&args, shutdown, console)
                .await
                .map(|_| exit::OK)
        }
        Command::Ssh(args) if !args.url.is_empty() => listen_mode(&args, shutdown, console)
            .await
            .map(|_| exit::OK),
        Command::Ssh(args) => stdio_mode(&args, shutdown, console).await,
        Command::SshConfig(args) => {
            let t = AppUrl::parse(&args.hostname)?;
            let exe = std::env::current_exe()
                .map_err(|e| Error::Io(format!("cannot find this program's path: {e}")))?;
            console.line(ssh_config(&t, &exe.display().to_string()))?;
            Ok(exit::OK)
        }
        Command::Edge(args) => edge_command(args, shutdown, console)
            .await
            .map(|_| exit::OK),
        Command::Demo(args) => crate::demo::run(&args, shutdown, console)
            .await
            .map(|_| exit::OK),
        Command::Up(args) => up_command(args, shutdown, console).await.map(|_| exit::OK),
        Command::Doctor(args) => doctor_command(args, console).await,
        Command::Status(args) => status_command(args.json, console).await,
        Command::Completions(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "tunnel", &mut out);
            console.write(&out)?;
            Ok(exit::OK)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| Error::Io(format!("cannot render the man page: {e}")))?;
            console.write(&out)?;
            Ok(exit::OK)
        }
    }
}

/// `tunnel ssh` without `--url`: one stream over stdin and stdout.
async fn stdio_mode(
    args: &AccessArgs,
    shutdown: CancellationToken,
    console: &Console,
) -> Result<u8, Error> {
    let target = target_from(args, console.notice())?;
    // OpenSSH sends SIGHUP to its ProxyCommand on exit: a clean end of input.
    let hangup = shutdown::on_hangup();
    tokio::select! {
        r = stdio::run(&target, keepalive(args), hangup) => {
            r.map(|_| exit::OK).map_err(Error::from)
        }
        _ = shutdown.cancelled() => Err(Error::Interrupted),
    }
}

/// `tunnel status`: every running tunnel process's answer, as text or JSON.
async fn status_command(json: bool, console: &mut Console) -> Result<u8, Error> {
    let (docs, errors) = crate::status::query().await;
    for e in errors {
        tracing::warn!("a status socket did not answer: {e}");
    }
    let text = if json {
        serde_json::Value::Array(docs).to_string() + "\n"
    } else {
        crate::status::text(&docs)
    };
    console.write(text.as_bytes())?;
    Ok(exit::OK)
}

/// With `--json`, an error is also printed as one JSON object on stdout.
fn reported(json: bool, result: Result<u8, Error>, console: &mut Console) -> Result<u8, Error> {
    if let (true, Err(e)) = (json, &result)
        && !matches!(e, Error::Output(_))
    {
        console.line(commands::json_error(e))?;
    }
    result
}

/// The keepalive the access flags ask for.
fn keepalive(args: &AccessArgs) -> crate::bridge::Keepalive {
    crate::bridge::Keepalive {
        interval: args.keepalive_interval,
        timeout: args.keepalive_timeout,
    }
}

async fn listen_mode(
    args: &AccessArgs,
    shutdown: CancellationToken,
    console: &Console,
) -> Result<(), Error> {
    // SIGHUP takes the one shutdown path too, as SIGTERM does.
    let shutdown = {
        let hangup = shutdown::on_hangup();
        let either = shutdown.child_token();
        let stop = either.clone();
        tokio::spawn(async move {
            hangup.cancelled().await;
            stop.cancel();
        });
        either
    };
    let builder = builder_from(args, None, console.notice())?;
    let name = builder.app().host().to_string();
    let metrics = metrics_endpoint(args.metrics.as_deref(), &shutdown)
        .await?
        .map(|metrics| crate::metrics::TunnelMetrics {
            metrics,
            name: name.clone(),
        });
    crate::serve::raise_fd_limit();
    let listeners = listen::bind(&args.url).await?;
    let registry = crate::status::Registry::new();
    let addrs = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let target = builder
        .metrics(metrics)
        .status(crate::status::Tap {
            registry: registry.clone(),
            name: name.clone(),
        })
        .build();
    registry.add_tunnel(
        &name,
        &target.url(),
        addrs,
        target.credentials().login().cloned(),
        target.credentials().kind(),
    );
    tokio::spawn(crate::status::serve(registry, shutdown.clone()));
    let target = Arc::new(target);
    if args.login_now {
        // With a login: log in now. With a service token or --token: prove it to the
        // edge now (one stream, closed at once), so a wrong one fails here with its
        // refusal instead of at every connection.
        tokio::select! {
            r = check_credentials(&target) => r?,
            _ = shutdown.cancelled() => return Err(Error::Interrupted),
        }
    }
    let shutdown = shutdown::announce(&shutdown, args.grace_period);
    listen::serve(
        listeners,
        target,
        shutdown,
        None,
        args.grace_period,
        keepalive(args),
        None,
    )
    .await;
    Ok(())
}

/// With `--metrics ADDR`: bind it (before anything else runs, so a busy port is an
/// error at start), serve the metrics until `shutdown`, and return them.
async fn metrics_endpoint(
    addr: Option<&str>,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<crate::metrics::Metrics>>, Error> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = crate::metrics::bind(addr).await.map_err(Error::Io)?;
    let metrics = crate::metrics::Metrics::new();
    tokio::spawn(crate::metrics::serve(
        listener,
        metrics.clone(),
        shutdown.clone(),
    ));
    Ok(Some(metrics))
}

async fn check_credentials(target: &Target) -> Result<(), Error> {
    match target.credentials().login() {
        Some(auth) => {
            auth.token(None).await?;
        }
        None => crate::client::probe(target, None)
            .await
            .map_err(|e| Error::Conn(e.into()))?,
    }
    Ok(())
}

/// The `~/.ssh/config` stanza for the app `t`, with `exe` (this program's path)
/// quoted for the OS it runs on.
pub fn ssh_config(t: &AppUrl, exe: &str) -> String {
    let scheme = if t.is_tls() { "" } else { "http://" };
    format!(
        "Host {host}\n  ProxyCommand {exe} ssh --hostname {scheme}%h{port}",
        exe = proxy_program(exe, cfg!(windows)),
        host = t.host(),
        port = if t.port() == if t.is_tls() { 443 } else { 80 } {
            String::new()
        } else {
            format!(":{}", t.port())
        },
    )
}

async fn doctor_command(args: crate::cli::DoctorArgs, console: &mut Console) -> Result<u8, Error> {
    let access = AccessArgs {
        hostname: args.hostname,
        url: Vec::new(),
        destination: None,
        service: args.service,
        token: None,
        header: Vec::new(),
        edge: args.edge,
        login_now: false,
        metrics: None,
        keepalive_interval: crate::up::DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_timeout: crate::up::DEFAULT_KEEPALIVE_TIMEOUT,
        grace_period: shutdown::GRACE,
    };
    let target = target_from(&access, console.notice())?;
    let report = crate::doctor::run(&target).await;
    let text = if args.json {
        serde_json::to_string(&report).unwrap_or_default() + "\n"
    } else {
        report.text()
    };
    console.write(text.as_bytes())?;
    Ok(report.exit_code)
}

async fn up_command(
    args: crate::cli::UpArgs,
    shutdown: CancellationToken,
    console: &mut Console,
) -> Result<(), Error> {
    if let Some(yml) = &args.from_cloudflared {
        let (toml, notes) = crate::up::from_cloudflared(yml)?;
        console.write(toml.as_bytes())?;
        for n in notes {
            console.note(&n);
        }
        return Ok(());
    }
    let path = args.config.unwrap_or_else(crate::up::default_path);
    if args.check {
        let tunnels = crate::up::load(&path, None, &console.notice())?;
        let mut out = String::new();
        for (t, _) in &tunnels {
            out.push_str(&t.plan_line());
            out.push('\n');
        }
        out.push_str(&format!(
            "{}: ok ({} tunnels)\n",
            path.display(),
            tunnels.len()
        ));
        console.write(out.as_bytes())?;
        return Ok(());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let tx = tx.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.try_send(());
                }
            });
        }
    }
    let metrics = metrics_endpoint(args.metrics.as_deref(), &shutdown).await?;
    crate::up::run(&path, shutdown, (tx, rx), metrics, console.notice()).await
}

async fn edge_command(
    args: EdgeArgs,
    shutdown: CancellationToken,
    console: &mut Console,
) -> Result<(), Error> {
    // Every tool but hash-password needs the config; it is read once, here.
    let load = || -> Result<(std::path::PathBuf, Config), Error> {
        let Some(path) = args.config.clone() else {
            return Err(Error::Usage(
                "edge needs --config FILE (e.g. examples/edge.toml; see the README's \"The edge\")"
                    .into(),
            ));
        };
        let config = Config::load(&path).map_err(EdgeError::from)?;
        Ok((path, config))
    };
    match args.tool {
        Some(EdgeTool::HashPassword) => {
            let hash =
                crate::edge::login::hash_password(&read_new_password()?).map_err(Error::Io)?;
            console.line(hash)?;
            Ok(())
        }
        Some(EdgeTool::MintToken(ref m)) => {
            let (_, config) = load()?;
            let ttl = humantime::parse_duration(&m.ttl)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    (d >= Duration::from_secs(1))
                        .then_some(d)
                        .ok_or_else(|| "the token would be expired at once".to_string())
                })
                .map_err(|e| {
                    Error::Usage(format!(
                        "invalid --ttl {:?}: {e}; use at least 1s, e.g. 30m, 1h, 7d",
                        m.ttl
                    ))
                })?;
            let edge = Edge::load(config)?;
            console.line(edge.mint(&m.app, &m.email, ttl)?)?;
            Ok(())
        }
        Some(EdgeTool::CheckConfig) => {
            let (path, config) = load()?;
            Edge::check(&config)?;
            let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
            console.line(format_args!(
                "{}: ok ({}, {}, {}, {})",
                path.display(),
                n(config.apps.len(), "app"),
                n(config.users.len(), "user"),
                n(config.service_tokens.len(), "service token"),
                if config.tls.is_some() {
                    "TLS"
                } else {
                    "plain HTTP on loopback"
                }
            ))?;
            Ok(())
        }
        None => {
            let (_, config) = load()?;
            let edge = Edge::load(config)?;
            if let Some(m) = metrics_endpoint(args.metrics.as_deref(), &shutdown).await? {
                edge.metrics.set(m).ok();
            }
            let edge = Arc::new(edge);
            crate::serve::raise_fd_limit();
            let listener = edge.bind().await?;
            let shutdown = shutdown::announce(&shutdown, args.grace_period);
            edge::serve(edge, listener, shutdown, args.grace_period).await;
            info!("edge stopped");
            Ok(())
        }
    }
}

/// The password for `edge hash-password`: asked for twice without echo on a
/// terminal; otherwise the first line of stdin (scripts: `echo pw | ...`).
fn read_new_password() -> Result<String, Error> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let ask = |prompt: &str| {
            rpassword::prompt_password(prompt)
                .map_err(|e| Error::Io(format!("cannot read the password from the terminal: {e}")))
        };
        let first = ask("Password: ")?;
        if ask("Password again: ")? != first {
            return Err(Error::Usage(
                "the two passwords differ; run tunnel edge hash-password again".into(),
            ));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::Io(format!("cannot read the password from stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        return Err(Error::Usage(
            "hash-password got an empty password: type one, or pipe it in (echo 'the password' | tunnel edge hash-password)".into(),
        ));
    }
    Ok(password)
}

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
