//! `tunnel ssh` without `--url`: stdin and stdout are the local side, for
//! `ssh -o ProxyCommand=...`. Nothing but tunnelled bytes is ever written to stdout.

use super::{ConnError, Target};
use crate::bridge::Stats;

/// Bridge stdin/stdout through one WebSocket to `target` until both sides end.
pub async fn run(target: &Target) -> Result<Stats, ConnError> {
    let local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    super::serve_stream(local, target).await
}
