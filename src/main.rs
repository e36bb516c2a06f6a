//! The `tunnel` binary: parse the command line, set up logging, run, and map the
//! outcome to an exit code (see `tunnel::exit` and the README). Nothing else.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tunnel::LogFile;
use tunnel::cli::{Cli, Command, LogArgs, LogFormat, LogLevel};
use tunnel::exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            // Help and version as clap prints them (stdout), and the help a bare
            // `tunnel` gets (stderr, exit 2). Every other argument error is one
            // line, as every other error is.
            if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
            } else {
                let rendered = e.render().to_string();
                eprintln!("tunnel: error: {}", tunnel::cli::one_line_error(&rendered));
            }
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let stdio_mode = matches!(&cli.command, Command::Ssh(a) if a.url.is_empty());
    let logfile = match init_logging(&cli.log, stdio_mode) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tunnel: error: {e}");
            return ExitCode::from(exit::LOCAL);
        }
    };
    // A running edge reopens its log file on SIGHUP (logrotate: rename, then HUP).
    let reopen = logfile.filter(|_| matches!(&cli.command, Command::Edge(e) if e.tool.is_none()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tunnel: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = tunnel::on_signal();
        if let Some(file) = reopen {
            tokio::spawn(tunnel::reopen_on_hangup(file));
        }
        // Results to stdout, notes for the person to stderr; a closed stderr is
        // not worth failing a command over.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let notice = tunnel::Notice::new(
            |text| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            },
            terminal,
        );
        let mut console = tunnel::Console::new(Box::new(std::io::stdout()), notice);
        tunnel::run(cli.command, shutdown, &mut console).await
    });
    // stdin is read on a blocking thread that may never return; don't wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tunnel: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to stderr (never stdout: `tunnel ssh` owns it) or to `--logfile` (or
/// `--log-directory`), which is returned so that it can be reopened.
fn init_logging(args: &LogArgs, stdio_mode: bool) -> Result<Option<Arc<LogFile>>, String> {
    use tracing_subscriber::EnvFilter;
    let level = match args.log_level {
        Some(LogLevel::Debug) => "debug",
        Some(LogLevel::Info) => "info",
        Some(LogLevel::Warn) => "warn",
        Some(LogLevel::Error | LogLevel::Fatal) => "error",
        None if stdio_mode => "warn",
        None => "info",
    };
    // Our own crate at the chosen level; dependencies one notch quieter at debug.
    let filter = EnvFilter::new(format!("{level},hyper=info,rustls=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let file = match (&args.logfile, &args.log_directory) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(d)) => Some(d.join("tunnel.log")),
        (None, None) => None,
    };
    match file {
        Some(path) => {
            let f = Arc::new(LogFile::open(&path).map_err(|e| {
                format!(
                    "cannot open log file {}: {e}; check --logfile / --log-directory",
                    path.display()
                )
            })?);
            install(builder, args.log_format, false, f.clone());
            Ok(Some(f))
        }
        None => {
            use std::io::IsTerminal;
            let ansi = std::io::stderr().is_terminal();
            install(builder, args.log_format, ansi, std::io::stderr);
            Ok(None)
        }
    }
}

/// Install the subscriber, as text or as one JSON object per event with the event's
/// fields at the top level (`timestamp`, `level`, `message`, then `peer`, `ray`, ...).
fn install<W>(
    builder: tracing_subscriber::fmt::SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        tracing_subscriber::EnvFilter,
    >,
    format: LogFormat,
    ansi: bool,
    writer: W,
) where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => builder.with_ansi(ansi).with_writer(writer).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .init(),
    }
}
