//! The data path: a local byte stream pumped through a WebSocket, both ways.
//!
//! One [`run`] call owns one connection: a local `AsyncRead + AsyncWrite` (a TCP
//! socket, stdio, or the edge's origin socket) and a [`WebSocket`] (the stream after
//! the upgrade handshake). It is a single poll loop with separate state per
//! direction (the shape of linkerd's `duplex`), so there is no lock and no extra task
//! per connection. The framing is our own ([`crate::frame`]) so that no byte is
//! copied on our side:
//!
//! - **up** (local -> WebSocket): read straight into a reusable buffer behind
//!   [`MAX_HEADER`](crate::frame::MAX_HEADER) bytes of room, write the frame header into that room, mask in
//!   place (clients), and hand header and payload to the socket in one write (on a
//!   resumable stream the room also holds a due acknowledgement, see [`resume`]). Read
//!   again only once the socket has taken the whole frame.
//! - **down** (WebSocket -> local): read into a reusable buffer, parse a header, and
//!   write the payload to the local side straight out of that buffer (unmasked in
//!   place), piece by piece as it arrives. No message is ever assembled, so a large
//!   frame costs no memory; read again only once the local side has taken it all.
//!
//! Buffers start at [`MIN_READ`] and double while reads keep filling them, up to
//! [`MAX_READ`]; an idle connection holds two small buffers. Neither side is read
//! faster than the other side accepts: memory per connection is bounded by the two
//! buffers.
//!
//! **Half-close.** RFC 6455 forbids data after a close frame, so a close frame can only
//! end both directions. When the peer understands it (our edge says so with the
//! [`crate::protocol::HALF_CLOSE`] response header), local EOF is sent as an *empty*
//! binary message and the other direction keeps flowing until it ends too; otherwise
//! local EOF is sent as a close frame, as stock `cloudflared` does. An empty binary
//! message received is always taken as the peer's EOF (stock peers never send one).
//! Once one direction has ended, the other must show data within
//! [`Options::half_open_idle`] or the connection is closed, so a peer that never
//! finishes cannot hold it open forever.
//!
//! **Keepalive** (`bridge/keepalive.rs`). When nothing has been heard from the peer for
//! [`Keepalive::interval`] a ping is due; if nothing at all (pong or data) arrives
//! within [`Keepalive::timeout`] after that, the peer is presumed dead, also when our
//! writer is blocked and the ping cannot leave (a frozen peer). Backpressure is not
//! death: while we hold data the peer sent that the local side has not taken, the
//! peer is alive (its pong waits behind that data), and we keep pinging it so that
//! it keeps hearing from us. Pings from the peer are answered.
//!
//! **Ends.** A local side that resets after it was given the peer's whole stream
//! and our EOF, or after it sent its own EOF (then what we still write to it is
//! dropped, as a direct TCP peer's would be), has finished: PostgreSQL closes like
//! that after `Terminate` with bytes unread. That is a clean end, not a cut. A reset
//! at any other moment is a cut ([`BridgeError::LocalRead`], `LocalWrite`).
//!
//! **Closing.** When both directions are done, a close frame is sent (unless one was
//! already) and the peer's reply is awaited for at most [`CLOSE_WAIT`], so the peer
//! reads everything before our socket goes away.
//!
//! **Resuming** ([`resume`]). [`run_resumable`] is the same pump for a stream that
//! may outlive its WebSocket: it keeps each direction's offsets and a bounded replay
//! buffer in a [`Session`] owned by the caller, acknowledges what it delivered with
//! 8-byte pongs, and returns with the local side intact when the WebSocket fails;
//! the caller brings a new WebSocket and calls it again. [`run`] carries none of it.
//!
//! **Layout.** `buffer.rs`: the read buffers. `decode.rs`: the incoming frame
//! decoder, sans IO (bytes in, events out). `pump.rs`: one connection's state, the
//! close handshake and the timer; `pump/up.rs` and `pump/down.rs`: one direction
//! each. `keepalive.rs`: liveness. `resume.rs`: offsets and replay buffer.

use std::future::poll_fn;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

mod buffer;
pub(crate) mod decode;
mod keepalive;
mod pump;
pub mod resume;

use pump::Pump;

pub use keepalive::Settings as Keepalive;
pub use resume::Session;

use crate::frame::FrameError;
pub use crate::frame::Role;

/// Smallest read buffer, each direction: what an interactive connection holds
/// (an idle one holds none). Small, because thousands of connections each touch
/// their buffers; bulk transfer doubles it within a few reads.
pub const MIN_READ: usize = 2 * 1024;
/// Largest read buffer: reached only while reads keep filling the buffer (bulk
/// transfer); one read becomes one WebSocket frame of at most this size.
pub const MAX_READ: usize = 256 * 1024;
/// How long to wait for the peer's close frame after sending ours.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A connection with no traffic for this long gives its read buffers back; until
/// bytes arrive again it waits with [`IDLE_READ`] bytes of stack instead.
pub const IDLE_RELEASE: Duration = Duration::from_secs(1);
/// The stack buffer an idle direction reads into; what arrives is copied into a
/// freshly allocated buffer, and reads go straight to that one from then on.
pub const IDLE_READ: usize = 512;

/// Largest frame the client accepts from the edge.
pub const CLIENT_MAX_FRAME: u64 = 16 << 20;
/// Largest frame the edge accepts from a client (ours send at most [`MAX_READ`]);
/// anything larger fails closed.
pub const EDGE_MAX_FRAME: u64 = 1 << 20;

/// A byte stream after a successful WebSocket upgrade, ready for [`run`].
#[derive(Debug)]
pub struct WebSocket<S> {
    io: S,
    role: Role,
    max_frame: u64,
    buffered: BytesMut,
    clean_eof: bool,
}

impl<S> WebSocket<S> {
    /// Frame `io` as `role`; frames larger than `max_frame` are refused.
    pub fn new(io: S, role: Role, max_frame: u64) -> Self {
        WebSocket {
            io,
            role,
            max_frame,
            buffered: BytesMut::new(),
            clean_eof: false,
        }
    }

    /// Whether `io` ends only by an authenticated close (TLS: `close_notify`; a cut
    /// surfaces as an error instead). Then an end between messages is the peer
    /// closing, not a cut: stock `cloudflared` ends every stream that way, with
    /// `close_notify` and no close frame. Over plain TCP a killed peer's FIN looks
    /// the same as a clean one, so there an end without close frame stays a cut.
    pub fn with_clean_eof(mut self, clean: bool) -> Self {
        self.clean_eof = clean;
        self
    }

    /// Bytes the handshake read past its end: the first frames, already arrived.
    pub fn with_buffered(mut self, bytes: BytesMut) -> Self {
        self.buffered = bytes;
        self
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

/// Tunables of one bridged connection.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// When to ping, and when to give up on a silent peer.
    pub keepalive: Keepalive,
    /// Once one direction has ended, close if no data moves for this long.
    pub half_open_idle: Duration,
    /// The peer understands the empty-message half-close marker.
    pub peer_half_close: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keepalive: Keepalive::default(),
            half_open_idle: Duration::from_secs(300),
            peer_half_close: false,
        }
    }
}

/// Bytes moved by one connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes read locally and sent to the peer.
    pub up: u64,
    /// Bytes received from the peer and written locally.
    pub down: u64,
}

/// Why a bridged connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Reading the local side failed.
    #[error("local read failed: {0}")]
    LocalRead(#[source] io::Error),
    /// Writing the local side failed.
    #[error("local write failed: {0}")]
    LocalWrite(#[source] io::Error),
    /// The WebSocket's stream failed.
    #[error("websocket: {0}")]
    Io(#[source] io::Error),
    /// The peer broke the framing rules (RFC 6455).
    #[error("websocket: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a text frame; the tunnel protocol carries binary frames only.
    #[error("peer sent a text frame; tunnels carry binary frames only")]
    TextFrame,
    /// The peer interleaved messages (a new one began before the last ended).
    #[error("websocket: peer sent a continuation frame out of place")]
    Fragmentation,
    /// The peer's stream ended before its EOF signal (marker or close frame): what
    /// it sent may be incomplete, so the local side must not see a clean end.
    #[error("the peer's stream ended without a close frame{}; data may be missing", if *.0 { " in the middle of a frame" } else { "" })]
    Truncated(bool),
    /// Nothing arrived from the peer within the keepalive timeout after a ping was
    /// due, and we held none of its data: it is dead or frozen.
    #[error("nothing heard from the peer for {0:.1?} (keepalive ping unanswered); presumed dead")]
    Dead(Duration),
    /// One direction ended and the other stayed idle too long.
    #[error("half-closed connection idle for {0:?}; closed")]
    HalfOpenIdle(Duration),
    /// A resumable peer acknowledged bytes it was never sent.
    #[error("websocket: {0}")]
    Ack(#[from] resume::BadAck),
}

impl BridgeError {
    /// The WebSocket under the stream failed (cut, reset, silent peer), while the
    /// local side is fine: a resumable stream can go on over a new WebSocket.
    pub fn is_link_failure(&self) -> bool {
        matches!(
            self,
            BridgeError::Io(_) | BridgeError::Truncated(_) | BridgeError::Dead(_)
        )
    }
}

/// Pump bytes between `local` and `ws` until both directions have ended.
///
/// Returns the bytes moved each way. Cancel safety: dropping the future drops both
/// streams (an abrupt close); callers that shut down gracefully let it finish.
pub async fn run<L, S>(local: L, ws: WebSocket<S>, opts: Options) -> Result<Stats, BridgeError>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pump = Pump::new(local, ws, opts, None);
    let result = poll_fn(|cx| pump.poll(cx)).await;
    if result.is_ok() {
        // Best effort: a FIN (or TLS close_notify) after the close handshake.
        let _ = tokio::time::timeout(Duration::from_secs(1), pump.io.shutdown()).await;
    }
    result
}

/// [`run`] for a resumable stream ([`resume`]): `session` carries the offsets and
/// replay buffer across WebSockets, `peer_has` is what the peer said it delivered
/// in this WebSocket's handshake (0 on the first). An error for which
/// [`BridgeError::is_link_failure`] holds leaves `local` intact for another call
/// with a new WebSocket; once [`Session::complete`] holds, a failing WebSocket
/// is a clean end. The half-close marker is always used.
pub async fn run_resumable<L, S>(
    local: &mut L,
    ws: WebSocket<S>,
    mut opts: Options,
    session: &mut Session,
    peer_has: u64,
) -> Result<Stats, BridgeError>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    opts.peer_half_close = true;
    let mut pump = Pump::new(local, ws.with_clean_eof(false), opts, Some(session));
    pump.rewind(peer_has)?;
    let result = poll_fn(|cx| pump.poll(cx)).await;
    let result = match result {
        Err(e) if e.is_link_failure() && pump.session.as_ref().is_some_and(|s| s.complete()) => {
            Ok(pump.stats)
        }
        r => r,
    };
    if result.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), pump.io.shutdown()).await;
    }
    result
}

/// The local side went away (reset, closed pipe) rather than failing otherwise.
fn gone(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
    )
}

/// Close codes an endpoint may put on the wire (RFC 6455 7.4): echoing any other
/// would make us the one breaking the protocol.
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests;
