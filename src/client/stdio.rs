//! `tunnel ssh` without `--url`: stdin and stdout are the local side, for
//! `ssh -o ProxyCommand=...`. Nothing but tunnelled bytes is ever written to stdout.
//!
//! OpenSSH closes its end of our pipes when it exits and then sends us SIGHUP. That
//! is the end of a healthy session, not a death: a hangup ends our input like EOF
//! on stdin (after at most [`HANGUP_DRAIN`] for what stdin still holds), and the
//! stream to the edge is closed properly.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{ConnError, Target};
use crate::bridge::{Keepalive, Stats};

/// After a hangup, how long stdin may still deliver what its writer left in the
/// pipe before it is taken as ended.
pub const HANGUP_DRAIN: Duration = Duration::from_secs(1);

/// Bridge stdin/stdout through one WebSocket to `target` until both sides end;
/// `hangup` cancelled ends the input as EOF on stdin would.
pub async fn run(
    target: &Target,
    keepalive: Keepalive,
    hangup: CancellationToken,
) -> Result<Stats, ConnError> {
    let stdin = UntilHangup {
        inner: tokio::io::stdin(),
        hangup: Box::pin(hangup.cancelled_owned()),
        drain: None,
    };
    let local = tokio::io::join(stdin, tokio::io::stdout());
    super::serve_stream(local, target, &keepalive).await
}

/// A reader that reports EOF once `hangup` fired and its drain time passed.
struct UntilHangup<R> {
    inner: R,
    hangup: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once the hangup came: the end of the drain time.
    drain: Option<Pin<Box<Sleep>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for UntilHangup<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.drain.is_none() && this.hangup.as_mut().poll(cx).is_ready() {
            this.drain = Some(Box::pin(tokio::time::sleep(HANGUP_DRAIN)));
        }
        if let Some(drain) = &mut this.drain
            && drain.as_mut().poll(cx).is_ready()
        {
            // Nothing read: EOF.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}
