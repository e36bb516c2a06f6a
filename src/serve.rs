//! The accept loop both `tunnel tcp` and `tunnel edge` use: never awaits a
//! handshake (each socket is spawned first), caps live connections, backs off on
//! accept errors such as EMFILE, stops on shutdown, and drains under a grace period.
//!
//! **A drain never lies.** Every socket whose stream has not ended cleanly is armed
//! to reset on close ([`abort`], undone by [`orderly`] once the stream ended
//! cleanly). So a stream still open when the grace period runs out is reset when
//! the process exits (or its task is dropped), as is one whose dial failed or that
//! was cut: no app takes a partial transfer for a complete one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Most live connections one process serves at once.
pub const MAX_CONNECTIONS: usize = 65_536;

/// Accept on every listener until `shutdown`; run `handler` for each socket in its
/// own task; then stop accepting and wait up to `grace` for live connections.
///
/// `handler` may spawn follow-up work into the tracker it is given (the edge does,
/// for upgraded streams) so that the drain waits for it too. `closed`, when given,
/// is cancelled once every listener is closed (before the drain), so a caller can
/// tell when the addresses stopped accepting.
pub async fn run<H, F>(
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
    closed: Option<CancellationToken>,
    grace: Duration,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, TaskTracker) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut loops = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let (shutdown, limit, tracker2, handler) = (
            shutdown.clone(),
            limit.clone(),
            tracker.clone(),
            handler.clone(),
        );
        loops.push(tracker.spawn(async move {
            let mut backoff = Duration::from_millis(10);
            loop {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
                };
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((socket, peer)) => {
                        backoff = Duration::from_millis(10);
                        let fut = handler(socket, peer, tracker2.clone());
                        tracker2.spawn(holding(fut, permit));
                    }
                    Err(e) => {
                        // EMFILE/ENFILE and friends: wait for connections to finish.
                        warn!("accept failed: {e}; retrying in {} ms", backoff.as_millis());
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }));
    }
    shutdown.cancelled().await;
    tracker.close();
    // Each loop returns on `shutdown` and drops its listener.
    for accept_loop in loops {
        let _ = accept_loop.await;
    }
    if let Some(closed) = closed {
        closed.cancel();
    }
    // The command says so once at info (shutdown::announce); a process may run
    // several accept loops (the demo runs two).
    debug!(
        "accept loop stopped; draining live connections for up to {} s",
        grace.as_secs()
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        // Their sockets are armed (see the module docs): they are reset, not closed.
        warn!(
            "{} connections still open after the {} grace period; resetting them",
            tracker.len(),
            humantime::format_duration(grace)
        );
    }
}

/// `fut`, then let `permit` go. A combinator, not `async move { fut.await; .. }`:
/// an async block keeps the future it captured and the one it awaits side by
/// side, so every connection's task would be twice the size of its future (about
/// 1.4 KiB more per idle connection, client and edge; rust-lang/rust#62958).
fn holding<F: Future<Output = ()>, P>(fut: F, permit: P) -> impl Future<Output = ()> {
    use futures_util::FutureExt;
    fut.map(move |()| drop(permit))
}

/// Raise the open-files soft limit to the hard limit (on macOS also capped by
/// `kern.maxfilesperproc`), so thousands of connections work. Returns the new soft
/// limit; `None` on Windows, which has no such limit on sockets.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Make the close of `socket` a reset (RST) instead of an orderly FIN, however it
/// comes (dropped, or closed by the OS when the process exits): for a stream that
/// has not ended cleanly, so the peer sees an error rather than a clean end.
/// Call it as soon as the socket carries a stream; [`orderly`] undoes it.
pub fn abort(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// Undo [`abort`]: the stream ended cleanly (its EOF was sent), so closing the
/// socket lets queued bytes drain and ends with a FIN.
pub fn orderly(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(None);
}

/// TCP_NODELAY (every chunk is a message; don't delay small ones) and keepalive.
pub fn tune(s: &tokio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
    let _ = socket2::SockRef::from(s).set_tcp_keepalive(&keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_task_is_no_bigger_than_its_future() {
        async fn connection() {
            let state = [7u8; 1024];
            tokio::task::yield_now().await;
            std::hint::black_box(&state);
        }
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let inner = std::mem::size_of_val(&connection());
        let spawned = std::mem::size_of_val(&holding(connection(), permit));
        assert!(
            spawned <= inner + 64,
            "the spawned future takes {spawned} bytes for a {inner}-byte connection"
        );
    }
}
