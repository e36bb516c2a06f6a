//! One shutdown path: SIGINT and SIGTERM (on Windows: Ctrl-C, Ctrl-Break and the
//! console window closing) cancel one [`CancellationToken`]; accept loops select on
//! it, live connections drain under a grace period.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long live connections may drain after a shutdown signal by default
/// (`--grace-period`); those still open then are reset.
pub const GRACE: Duration = Duration::from_secs(10);

/// A token cancelled on the first SIGINT or SIGTERM. The handlers are registered
/// before this returns, so no signal after this call meets the default action.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    let signalled = wait_for_signal();
    tokio::spawn(async move {
        signalled.await;
        t.cancel();
    });
    token
}

/// Registers SIGINT and SIGTERM now; the returned future ends on the first of them.
#[cfg(unix)]
fn wait_for_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        match handlers {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// A token cancelled on SIGHUP: the terminal or the parent went away (OpenSSH sends
/// it to its ProxyCommand when it exits). Calling this replaces SIGHUP's default
/// action (exit) for the rest of the process, so only commands that handle a hangup
/// call it: `tunnel ssh` in stdio mode (a clean end of input) and the listeners
/// (the one shutdown path, as SIGTERM), not the edge. Never cancelled off Unix.
pub fn on_hangup() -> CancellationToken {
    let token = CancellationToken::new();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered before returning, so no hangup after this call is missed.
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let t = token.clone();
            tokio::spawn(async move {
                hup.recv().await;
                t.cancel();
            });
        }
    }
    token
}

/// Log the shutdown line once, when `shutdown` fires, for a command that serves
/// until then (each accept loop only notes it at debug). Serve on the returned
/// token: it is cancelled only after the line is written, so a process that has
/// nothing to drain cannot exit before saying why.
pub fn announce(shutdown: &CancellationToken, grace: Duration) -> CancellationToken {
    let announced = CancellationToken::new();
    let (shutdown, done) = (shutdown.clone(), announced.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!(
            "shutting down: no new connections; draining live ones for up to {}",
            humantime::format_duration(grace)
        );
        done.cancel();
    });
    announced
}

/// Windows' twin of the Unix signals: Ctrl-C, Ctrl-Break, and the console being
/// closed (the process then has a few seconds before Windows ends it). Registered
/// now; the returned future ends on the first of them.
#[cfg(windows)]
fn wait_for_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
    let handlers = (ctrl_c(), ctrl_break(), ctrl_close());
    async move {
        match handlers {
            (Ok(mut c), Ok(mut brk), Ok(mut close)) => {
                tokio::select! {
                    _ = c.recv() => {}
                    _ = brk.recv() => {}
                    _ = close.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
