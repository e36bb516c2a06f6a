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
//!   [`MAX_HEADER`] bytes of room, write the frame header into that room, mask in
//!   place (clients), and hand header and payload to the socket in one write. Read
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

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

mod keepalive;
pub mod resume;

pub use keepalive::Settings as Keepalive;
pub use resume::Session;

pub use crate::frame::Role;
use crate::frame::{self, FrameError, MAX_HEADER, MaskKeys, OpCode};

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

/// One direction's read buffer: reads land behind `room` bytes (for a frame
/// header), it doubles from [`MIN_READ`] to [`MAX_READ`] while reads keep filling
/// it, and an idle connection gives it back ([`ReadBuffer::release`]).
struct ReadBuffer {
    buf: BytesMut,
    /// What the next allocation holds, besides the room.
    size: usize,
    /// `buf` holds no allocation (a new or idle connection): reads go through
    /// a small stack buffer first.
    idle: bool,
    room: usize,
}

impl ReadBuffer {
    /// A buffer starting with `buffered` bytes (already read elsewhere).
    fn new(room: usize, buffered: BytesMut) -> Self {
        ReadBuffer {
            idle: buffered.is_empty(),
            buf: buffered,
            size: MIN_READ,
            room,
        }
    }

    /// Read more from `r` after what is buffered; `Ok(0)` is EOF.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.idle {
            let n = ready!(self.poll_fill_idle(r, cx))?;
            self.idle = n == 0;
            return Poll::Ready(Ok(n));
        }
        if self.buf.is_empty() {
            // Reclaims the previous allocation once its frames or pieces are gone.
            self.buf.reserve(self.size + self.room);
            self.buf.put_bytes(0, self.room);
        } else if self.buf.capacity() - self.buf.len() < self.size / 2 {
            self.buf
                .reserve(self.size - self.buf.len().min(self.size / 2));
        }
        let spare = self.buf.capacity() - self.buf.len();
        let n = ready!(poll_read_buf(Pin::new(r), cx, &mut self.buf))?;
        if n >= spare {
            self.size = (self.size * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(n))
    }

    /// Read while no buffer is allocated: into a small stack buffer, and only when
    /// bytes arrive allocate one and copy them in. So a connection that stays idle
    /// holds no heap buffer, and one that wakes up pays one small copy.
    fn poll_fill_idle<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut stack = [0u8; IDLE_READ];
        let mut read = ReadBuf::new(&mut stack);
        ready!(Pin::new(r).poll_read(cx, &mut read))?;
        let got = read.filled();
        if !got.is_empty() {
            self.buf.reserve(self.size + self.room);
            self.buf.put_bytes(0, self.room);
            self.buf.extend_from_slice(got);
        }
        Poll::Ready(Ok(got.len()))
    }

    /// Give the allocation back if it holds no unconsumed bytes (at most the empty
    /// header room); it comes back small when bytes arrive. Whether it was released.
    fn release(&mut self) -> bool {
        if self.idle || self.buf.len() > self.room {
            return false;
        }
        self.buf = BytesMut::new();
        self.idle = true;
        self.size = MIN_READ;
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    /// Reading local data.
    Open,
    /// Local EOF seen; our EOF signal (marker or close) is still to be queued.
    Eof,
    /// Our EOF signal was queued, or the peer can take nothing more.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// Receiving frames.
    Open,
    /// Peer EOF seen; shutting down the local write side.
    Closing,
    /// Local write side shut down.
    Done,
}

/// Where the parser is in the incoming byte stream.
#[derive(Debug, Clone, Copy)]
enum Rx {
    /// At a frame boundary.
    Header,
    /// Inside a data frame's payload.
    Payload {
        left: u64,
        mask: Option<[u8; 4]>,
        offset: usize,
        fin: bool,
    },
}

/// What the incoming side produced.
enum Event {
    /// Payload bytes of a binary message, unmasked.
    Data(BytesMut),
    /// A binary message with no bytes at all: the peer's half-close marker.
    EmptyMessage,
    /// A control frame and its (unmasked) payload.
    Control(OpCode, BytesMut),
    /// The stream ended without a close frame.
    Eof,
}

struct Pump<'a, L, S> {
    local: L,
    /// Offsets and replay buffer of a resumable stream.
    session: Option<&'a mut Session>,
    io: S,
    role: Role,
    max_frame: u64,
    /// See [`WebSocket::with_clean_eof`].
    clean_eof: bool,
    opts: Options,
    masks: MaskKeys,
    // Up: local -> WebSocket.
    up: Up,
    /// The local side ended its stream (EOF, or a reset once it had all of ours).
    local_eof: bool,
    up_buf: ReadBuffer,
    /// Frame bytes being written to the WebSocket stream.
    out: BytesMut,
    io_unflushed: bool,
    /// A ping's payload, to be answered with a pong.
    pong: Option<BytesMut>,
    // Down: WebSocket -> local.
    down: Down,
    rx: Rx,
    rx_buf: ReadBuffer,
    in_message: bool,
    message_bytes: u64,
    /// Payload bytes being written to the local side.
    data: BytesMut,
    local_unflushed: bool,
    /// The peer's EOF marker came: its stream is still read for control frames,
    /// until anything else arrives.
    after_eof: bool,
    /// The peer sent a close frame (or vanished): nothing more can be sent to it.
    peer_closed: bool,
    /// The status code of the peer's close frame, echoed in our reply.
    close_code: Option<[u8; 2]>,
    /// We queued a close frame.
    close_sent: bool,
    /// Both directions ended; waiting for the close handshake since this instant.
    closing_since: Option<Instant>,
    /// We sent a close frame: the peer's reply is awaited until this instant.
    close_deadline: Option<Instant>,
    keepalive: keepalive::Keepalive,
    last_data: Instant,
    timer: Pin<Box<Sleep>>,
    stats: Stats,
}

impl<'a, L, S> Pump<'a, L, S>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(local: L, ws: WebSocket<S>, opts: Options, session: Option<&'a mut Session>) -> Self {
        let now = Instant::now();
        Pump {
            local,
            session,
            io: ws.io,
            role: ws.role,
            max_frame: ws.max_frame,
            clean_eof: ws.clean_eof,
            opts,
            masks: MaskKeys::new(),
            up: Up::Open,
            local_eof: false,
            up_buf: ReadBuffer::new(MAX_HEADER, BytesMut::new()),
            out: BytesMut::new(),
            io_unflushed: false,
            pong: None,
            down: Down::Open,
            rx: Rx::Header,
            rx_buf: ReadBuffer::new(0, ws.buffered),
            in_message: false,
            message_bytes: 0,
            data: BytesMut::new(),
            local_unflushed: false,
            after_eof: false,
            peer_closed: false,
            close_code: None,
            close_sent: false,
            closing_since: None,
            close_deadline: None,
            keepalive: keepalive::Keepalive::new(now),
            last_data: now,
            timer: Box::pin(tokio::time::sleep_until(now + opts.keepalive.interval)),
            stats: Stats::default(),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stats, BridgeError>> {
        loop {
            let mut progress = self.poll_down(cx)?;
            progress |= self.poll_up(cx)?;
            if self.closing_since.is_none()
                && self.down == Down::Done
                && (self.up == Up::Done || self.peer_closed)
            {
                self.closing_since = Some(Instant::now());
            }
            if self.closing_since.is_some() {
                return self.poll_close(cx);
            }
            if self.close_sent && self.close_deadline.is_none() {
                let deadline = Instant::now() + CLOSE_WAIT;
                self.close_deadline = Some(deadline);
                if deadline < self.timer.deadline() {
                    self.timer.as_mut().reset(deadline);
                }
            }
            if !progress && ready!(self.poll_timer(cx))? {
                // Our close frame went unanswered: everything we had was sent.
                return Poll::Ready(Ok(self.stats));
            }
        }
    }

    /// The next thing the peer sent: parse what is buffered, read more if needed.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, BridgeError>> {
        loop {
            match self.rx {
                Rx::Payload {
                    left,
                    mask,
                    offset,
                    fin,
                } if !self.rx_buf.buf.is_empty() => {
                    let k = left.min(self.rx_buf.buf.len() as u64) as usize;
                    let mut piece = self.rx_buf.buf.split_to(k);
                    if let Some(key) = mask {
                        frame::apply_mask(&mut piece, key, offset);
                    }
                    self.message_bytes += k as u64;
                    self.rx = if left == k as u64 {
                        if fin {
                            self.in_message = false;
                            self.message_bytes = 0;
                        }
                        Rx::Header
                    } else {
                        Rx::Payload {
                            left: left - k as u64,
                            mask,
                            offset: offset + k,
                            fin,
                        }
                    };
                    return Poll::Ready(Ok(Event::Data(piece)));
                }
                Rx::Payload { .. } => {}
                Rx::Header => {
                    if let Some((h, n)) =
                        frame::parse_header(&self.rx_buf.buf, self.role, self.max_frame)?
                    {
                        if h.opcode.is_control() {
                            let total = n + h.len as usize;
                            if self.rx_buf.buf.len() >= total {
                                self.rx_buf.buf.advance(n);
                                let mut payload = self.rx_buf.buf.split_to(h.len as usize);
                                if let Some(key) = h.mask {
                                    frame::apply_mask(&mut payload, key, 0);
                                }
                                return Poll::Ready(Ok(Event::Control(h.opcode, payload)));
                            }
                        } else {
                            match (h.opcode, self.in_message) {
                                (OpCode::Text, _) => {
                                    return Poll::Ready(Err(BridgeError::TextFrame));
                                }
                                (OpCode::Binary, false) | (OpCode::Continue, true) => {}
                                _ => return Poll::Ready(Err(BridgeError::Fragmentation)),
                            }
                            self.rx_buf.buf.advance(n);
                            self.in_message = !h.fin;
                            if h.len > 0 {
                                self.rx = Rx::Payload {
                                    left: h.len,
                                    mask: h.mask,
                                    offset: 0,
                                    fin: h.fin,
                                };
                            } else if h.fin {
                                let empty = self.message_bytes == 0;
                                self.message_bytes = 0;
                                if empty {
                                    return Poll::Ready(Ok(Event::EmptyMessage));
                                }
                            }
                            continue;
                        }
                    }
                }
            }
            // Need more bytes.
            let woke = self.rx_buf.idle;
            match ready!(self.rx_buf.poll_fill(&mut self.io, cx)) {
                Ok(0) => return Poll::Ready(Ok(Event::Eof)),
                Ok(_) => {
                    if woke {
                        self.arm_release();
                    }
                    self.keepalive.heard(Instant::now());
                }
                Err(e) => return Poll::Ready(Err(BridgeError::Io(e))),
            }
        }
    }

    /// WebSocket -> local. Returns whether anything happened.
    fn poll_down(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut progress = false;
        while self.down == Down::Open {
            if !self.data.is_empty() {
                match Pin::new(&mut self.local).poll_write(cx, &self.data) {
                    Poll::Ready(Ok(0)) => {
                        return Err(BridgeError::LocalWrite(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.data.advance(n);
                        if let Some(s) = self.session.as_deref_mut() {
                            s.on_delivered(n);
                        }
                        self.local_unflushed = true;
                        progress = true;
                        if self.data.is_empty() {
                            // Let the read buffer reclaim this memory.
                            self.data = BytesMut::new();
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) if self.local_eof && gone(&e) => {
                        // It said it was done and went away: what it did not take,
                        // it did not want (a direct peer would be reset the same).
                        self.data = BytesMut::new();
                        self.down = Down::Done;
                        return Ok(true);
                    }
                    Poll::Ready(Err(e)) => return Err(BridgeError::LocalWrite(e)),
                    Poll::Pending => break,
                }
            }
            match self.poll_event(cx) {
                Poll::Ready(Ok(event)) => {
                    progress = true;
                    self.on_event(event)?;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {
                    if self.local_unflushed {
                        match Pin::new(&mut self.local).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.local_unflushed = false,
                            Poll::Ready(Err(e)) => return Err(BridgeError::LocalWrite(e)),
                            Poll::Pending => {}
                        }
                    }
                    break;
                }
            }
        }
        if self.down == Down::Closing {
            match Pin::new(&mut self.local).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    self.down = Down::Done;
                    progress = true;
                }
                // The local peer is already gone: nothing left to tell it.
                Poll::Ready(Err(e))
                    if e.kind() == io::ErrorKind::NotConnected || (self.local_eof && gone(&e)) =>
                {
                    self.down = Down::Done;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(BridgeError::LocalWrite(e)),
                Poll::Pending => {}
            }
        }
        // After the peer's EOF marker its stream still carries control frames: answer
        // its pings and see its pongs, so that a long upload after a half-close is
        // not taken for a dead peer (nor we for one by the peer). Anything else ends
        // this listening, and the stream goes on as if nothing had been read.
        while self.down == Down::Done && self.after_eof && self.closing_since.is_none() {
            match self.poll_event(cx) {
                Poll::Ready(Ok(Event::Control(OpCode::Ping, payload))) => {
                    self.pong = Some(payload);
                    progress = true;
                }
                Poll::Ready(Ok(Event::Control(OpCode::Close, _))) => {
                    // Its stream was complete already; nothing to echo.
                    self.peer_closed = true;
                    self.after_eof = false;
                    progress = true;
                }
                Poll::Ready(Ok(Event::Control(OpCode::Pong, payload))) => {
                    progress |= self.on_pong(&payload)?;
                }
                Poll::Ready(Ok(Event::Control(..))) => {}
                Poll::Ready(Ok(Event::Eof)) if self.session.is_some() => {
                    self.after_eof = false;
                    if !self.session.as_ref().is_some_and(|s| s.complete()) {
                        return Err(BridgeError::Truncated(false));
                    }
                }
                Poll::Ready(_) => self.after_eof = false,
                Poll::Pending => break,
            }
        }
        Ok(progress)
    }

    fn on_event(&mut self, event: Event) -> Result<(), BridgeError> {
        match event {
            Event::Data(piece) => {
                self.last_data = Instant::now();
                self.stats.down += piece.len() as u64;
                self.data = piece;
            }
            Event::EmptyMessage => {
                self.down = Down::Closing;
                self.after_eof = true;
                if let Some(s) = self.session.as_deref_mut() {
                    s.on_peer_eof();
                }
            }
            Event::Control(OpCode::Ping, payload) => self.pong = Some(payload),
            Event::Control(OpCode::Pong, payload) => {
                self.on_pong(&payload)?;
            }
            Event::Control(OpCode::Close, payload) => {
                self.peer_closed = true;
                self.close_code = payload
                    .get(..2)
                    .map(|c| [c[0], c[1]])
                    .filter(|c| sendable_close_code(u16::from_be_bytes(*c)));
                if self.down == Down::Open {
                    self.down = Down::Closing;
                }
            }
            Event::Control(..) => {}
            // A resumable stream's WebSocket that ends before the stream is complete
            // was cut, whatever state it was in.
            Event::Eof if self.session.as_ref().is_some_and(|s| !s.complete()) => {
                return Err(BridgeError::Truncated(matches!(
                    self.rx,
                    Rx::Payload { .. }
                )));
            }
            // Cut off before its EOF signal: say so, never a clean end.
            Event::Eof if self.down == Down::Open && !self.clean_end() => {
                return Err(BridgeError::Truncated(matches!(
                    self.rx,
                    Rx::Payload { .. }
                )));
            }
            // Its data is complete; there is nobody left to reply to.
            Event::Eof => {
                self.peer_closed = true;
                self.close_sent = true;
                if self.down == Down::Open {
                    self.down = Down::Closing;
                }
            }
        }
        Ok(())
    }

    /// A pong arrived: on a resumable stream, one of 8 bytes is an acknowledgement.
    /// Whether it freed room in the replay buffer.
    fn on_pong(&mut self, payload: &[u8]) -> Result<bool, BridgeError> {
        let Some(s) = self.session.as_deref_mut() else {
            return Ok(false);
        };
        let Some(acked) = Session::parse_ack(payload) else {
            return Ok(false);
        };
        s.on_ack(acked)?;
        Ok(true)
    }

    /// Start on a new WebSocket: send again what the peer has not delivered, and
    /// take up each direction where it was.
    fn rewind(&mut self, peer_has: u64) -> Result<(), BridgeError> {
        let Some(s) = self.session.as_deref_mut() else {
            return Ok(());
        };
        let (again, eof_again) = s.rewind(peer_has)?;
        let again = again.to_vec();
        if s.local_eof() {
            self.up = Up::Done;
            self.local_eof = true;
        }
        if s.peer_eof() {
            self.down = Down::Done;
            self.after_eof = true;
        }
        let mut out = BytesMut::new();
        for chunk in again.chunks(MAX_READ) {
            out.extend_from_slice(&self.control(OpCode::Binary, chunk));
        }
        if eof_again {
            out.extend_from_slice(&self.control(OpCode::Binary, &[]));
        }
        self.out = out;
        Ok(())
    }

    /// An acknowledgement pong, when one is due (`idle`: nothing from the peer
    /// waits to be delivered).
    fn take_ack(&mut self, idle: bool) -> Option<BytesMut> {
        let ack = self.session.as_deref_mut()?.take_ack(idle)?;
        Some(self.control(OpCode::Pong, &ack))
    }

    /// The stream ended by an authenticated close between two messages.
    fn clean_end(&self) -> bool {
        self.clean_eof
            && matches!(self.rx, Rx::Header)
            && !self.in_message
            && self.rx_buf.buf.is_empty()
    }

    /// A control frame (or an empty data frame) with `payload`, ready to write.
    fn control(&mut self, opcode: OpCode, payload: &[u8]) -> BytesMut {
        let mask = (self.role == Role::Client).then(|| self.masks.next_key());
        let h = frame::header_len(payload.len(), mask.is_some());
        let mut b = BytesMut::zeroed(h + payload.len());
        frame::write_header(&mut b[..h], opcode, mask, payload.len());
        b[h..].copy_from_slice(payload);
        if let Some(key) = mask {
            frame::apply_mask(&mut b[h..], key, 0);
        }
        b
    }

    /// Our close frame: the peer's status code echoed, or none.
    fn close_frame(&mut self) -> BytesMut {
        self.close_sent = true;
        let code = self.close_code;
        self.control(OpCode::Close, code.as_ref().map_or(&[][..], |c| &c[..]))
    }

    /// Write `out` to the WebSocket stream. `Ready(Ok)` once it is all written.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BridgeError>> {
        while !self.out.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.out)) {
                Ok(0) => return Poll::Ready(Err(BridgeError::Io(io::ErrorKind::WriteZero.into()))),
                Ok(n) => {
                    self.out.advance(n);
                    self.io_unflushed = true;
                }
                Err(e) => return Poll::Ready(Err(BridgeError::Io(e))),
            }
        }
        // Let the read buffer reclaim this memory.
        self.out = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    /// Local -> WebSocket. Returns whether anything happened.
    fn poll_up(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut progress = false;
        loop {
            if !self.out.is_empty() {
                match self.poll_out(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            if self.close_sent {
                self.up = Up::Done;
                break;
            }
            if self.peer_closed {
                // The peer can take nothing more; anything still unread locally has
                // nowhere to go. Answer its close and stop.
                self.up = Up::Done;
                self.out = self.close_frame();
                continue;
            }
            if let Some(payload) = self.pong.take() {
                self.out = self.control(OpCode::Pong, &payload);
                continue;
            }
            if self.keepalive.take_ping() {
                self.out = self.control(OpCode::Ping, &[]);
                continue;
            }
            if let Some(ack) = self.take_ack(self.data.is_empty()) {
                self.out = ack;
                continue;
            }
            match self.up {
                Up::Done => break,
                Up::Eof => {
                    self.up = Up::Done;
                    self.out = if self.opts.peer_half_close {
                        self.control(OpCode::Binary, &[])
                    } else {
                        self.close_frame()
                    };
                    continue;
                }
                Up::Open => {}
            }
            if self.session.as_ref().is_some_and(|s| !s.may_read()) {
                // The replay buffer is full: wait for the peer's acknowledgement.
                break;
            }
            let woke = self.up_buf.idle;
            match self.up_buf.poll_fill(&mut self.local, cx) {
                Poll::Ready(Ok(0)) => {
                    self.up_buf.buf.clear();
                    self.up = Up::Eof;
                    self.local_eof = true;
                    if let Some(s) = self.session.as_deref_mut() {
                        s.on_local_eof();
                    }
                    progress = true;
                }
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    if woke {
                        self.arm_release();
                    }
                    if let Some(s) = self.session.as_deref_mut() {
                        s.on_read(&self.up_buf.buf[MAX_HEADER..MAX_HEADER + n]);
                    }
                    self.stats.up += n as u64;
                    self.last_data = Instant::now();
                    self.out = self.frame_up(n);
                }
                Poll::Ready(Err(e)) if self.down == Down::Done && gone(&e) => {
                    // Both ends of the peer's stream are through (we delivered all of
                    // it and our EOF): a local side that resets now has finished, as
                    // PostgreSQL does after `Terminate`. Its end is a clean one.
                    self.up_buf.buf.clear();
                    self.up = Up::Eof;
                    self.local_eof = true;
                    if let Some(s) = self.session.as_deref_mut() {
                        s.on_local_eof();
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(BridgeError::LocalRead(e)),
                Poll::Pending => break,
            }
        }
        // Flush only when there is nothing more to write right now.
        if self.io_unflushed && self.out.is_empty() {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.io_unflushed = false,
                Poll::Ready(Err(e)) => return Err(BridgeError::Io(e)),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    /// Turn the `n` bytes read behind the header room into one binary frame, in
    /// place: header written into the room, payload masked where it lies.
    fn frame_up(&mut self, n: usize) -> BytesMut {
        let mask = (self.role == Role::Client).then(|| self.masks.next_key());
        let h = frame::header_len(n, mask.is_some());
        let start = MAX_HEADER - h;
        let buf = &mut self.up_buf.buf;
        frame::write_header(&mut buf[start..MAX_HEADER], OpCode::Binary, mask, n);
        if let Some(key) = mask {
            frame::apply_mask(&mut buf[MAX_HEADER..], key, 0);
        }
        buf.advance(start);
        buf.split()
    }

    /// Both directions are done: send our close (if not yet), flush, and wait a
    /// bounded time for the peer's close so it has read everything we sent.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stats, BridgeError>> {
        let started = self.closing_since.unwrap_or_else(Instant::now);
        let deadline = started + CLOSE_WAIT;
        if Instant::now() >= deadline {
            return Poll::Ready(Ok(self.stats));
        }
        self.timer.as_mut().reset(deadline);
        let _ = self.timer.as_mut().poll(cx);
        if !self.close_sent {
            let mut close = self.take_ack(true).unwrap_or_default();
            close.unsplit(self.close_frame());
            if self.out.is_empty() {
                self.out = close;
            } else {
                self.out.unsplit(close);
            }
        }
        // The peer going away now means the data was delivered (or never can be),
        // unless the stream is resumable and the peer has not acknowledged it all.
        if let Err(e) = ready!(self.poll_out(cx)) {
            return Poll::Ready(self.closed_by(e));
        }
        if self.io_unflushed {
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
                return Poll::Ready(self.closed_by(BridgeError::Io(e)));
            }
            self.io_unflushed = false;
        }
        // Drain until the peer's close frame (or the end of the stream).
        while !self.peer_closed {
            match ready!(self.poll_event(cx)) {
                Ok(Event::Control(OpCode::Close, _)) => self.peer_closed = true,
                Ok(Event::Control(OpCode::Pong, payload)) => {
                    self.on_pong(&payload)?;
                }
                Ok(Event::Eof) => {
                    return Poll::Ready(self.closed_by(BridgeError::Truncated(false)));
                }
                Err(e) => return Poll::Ready(self.closed_by(e)),
                Ok(_) => {}
            }
        }
        Poll::Ready(Ok(self.stats))
    }

    /// The WebSocket ended during the close handshake: a clean end, except on a
    /// resumable stream the peer has not acknowledged completely.
    fn closed_by(&mut self, e: BridgeError) -> Result<Stats, BridgeError> {
        self.peer_closed = true;
        match &self.session {
            Some(s) if !s.complete() => Err(e),
            _ => Ok(self.stats),
        }
    }

    /// A buffer was just allocated: make sure the timer looks at it again.
    fn arm_release(&mut self) {
        let at = Instant::now() + IDLE_RELEASE;
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
    }

    /// Give idle read buffers back: they are allocated again, small, when bytes
    /// arrive. A buffer holding unconsumed bytes is kept.
    fn release_buffers(&mut self) {
        // Between polls `up_buf` holds at most the header room, never data.
        for buf in [&mut self.up_buf, &mut self.rx_buf] {
            if buf.release() {
                #[cfg(test)]
                tests::RELEASED.with(|n| n.set(n.get() + 1));
            }
        }
    }

    /// Keepalive and idle checks; `Pending` once the timer is armed again,
    /// `Ready(Ok(true))` when the connection should end now without error,
    /// `Ready(Ok(false))` when a ping just became due (the up direction sends it).
    ///
    /// The timer is armed for the earliest thing that can happen next, never in
    /// the past: a connection that waits (idle, or blocked on a frozen peer) wakes
    /// only when a deadline of its own is due.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BridgeError>> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            if self.close_deadline.is_some_and(|d| now >= d) {
                return Poll::Ready(Ok(true));
            }
            let holding = self.holding_peer_data();
            match self.keepalive.check(&self.opts.keepalive, now, holding) {
                Ok(true) => return Poll::Ready(Ok(false)),
                Ok(false) => {}
                Err(silent) => return Poll::Ready(Err(BridgeError::Dead(silent))),
            }
            let one_way = self.up == Up::Done || self.down == Down::Done;
            if one_way && now >= self.last_data + self.opts.half_open_idle {
                return Poll::Ready(Err(BridgeError::HalfOpenIdle(now - self.last_data)));
            }
            let active = self.last_data.max(self.keepalive.last_heard());
            if now >= active + IDLE_RELEASE {
                self.release_buffers();
            }
            let mut next = self.keepalive.deadline(&self.opts.keepalive);
            if !(self.up_buf.idle && self.rx_buf.idle) {
                // A buffer still in use is looked at again after a full period.
                let at = active + IDLE_RELEASE;
                next = next.min(if at > now { at } else { now + IDLE_RELEASE });
            }
            if one_way {
                next = next.min(self.last_data + self.opts.half_open_idle);
            }
            if let Some(d) = self.close_deadline {
                next = next.min(d);
            }
            // Every deadline above is in the future by now; the floor only guards
            // against a spin should one ever not be.
            self.timer
                .as_mut()
                .reset(next.max(now + Duration::from_millis(1)));
        }
    }

    /// We hold payload the peer sent that the local side has not taken yet: the
    /// peer was alive to send it, and its pong (if any) waits behind it.
    fn holding_peer_data(&self) -> bool {
        !self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::DuplexStream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role as TRole;

    thread_local! {
        /// Read buffers released on this thread (the test's runtime).
        pub(super) static RELEASED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Our client framing on one end, tungstenite's server on the other: every test
    /// is also an interoperability check against an independent implementation.
    async fn ws_pair(buf: usize) -> (WebSocket<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (a, b) = duplex(buf);
        let client = WebSocket::new(a, Role::Client, CLIENT_MAX_FRAME);
        let server = WebSocketStream::from_raw_socket(b, TRole::Server, None).await;
        (client, server)
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_eof_closes() {
        let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
        let (local, mut app) = duplex(64 * 1024);
        let pump = tokio::spawn(run(local, client_ws, Options::default()));
        app.write_all(b"hello").await.unwrap();
        let msg = server_ws.next().await.unwrap().unwrap();
        assert_eq!(msg, Message::Binary(Bytes::from_static(b"hello")));
        server_ws
            .send(Message::Binary(Bytes::from_static(b"world")))
            .await
            .unwrap();
        let mut got = [0u8; 5];
        app.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"world");
        app.shutdown().await.unwrap();
        // Without the half-close marker, local EOF is a close frame.
        assert!(matches!(
            server_ws.next().await,
            Some(Ok(Message::Close(_)))
        ));
        // Reading on sends tungstenite's close reply, which ends the pump.
        while server_ws.next().await.is_some() {}
        let stats = pump.await.unwrap().unwrap();
        assert_eq!(stats, Stats { up: 5, down: 5 });
    }

    #[tokio::test]
    async fn half_close_marker_keeps_the_other_direction_open() {
        let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
        let (local, mut app) = duplex(64 * 1024);
        let opts = Options {
            peer_half_close: true,
            ..Options::default()
        };
        let pump = tokio::spawn(run(local, client_ws, opts));
        app.write_all(b"request").await.unwrap();
        app.shutdown().await.unwrap();
        assert_eq!(
            server_ws.next().await.unwrap().unwrap(),
            Message::Binary(Bytes::from_static(b"request"))
        );
        assert_eq!(
            server_ws.next().await.unwrap().unwrap(),
            Message::Binary(Bytes::new())
        );
        // The reply still flows after our EOF.
        server_ws
            .send(Message::Binary(Bytes::from_static(b"reply")))
            .await
            .unwrap();
        server_ws.close(None).await.unwrap();
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"reply");
        assert_eq!(pump.await.unwrap().unwrap(), Stats { up: 7, down: 5 });
    }

    /// Our edge framing against a stock (tungstenite) client that sends two messages,
    /// then `extra` raw bytes, then ends its stream without a close frame. Returns the
    /// pump's result and what reached the origin.
    async fn end_without_close_frame(
        clean_eof: bool,
        extra: &[u8],
    ) -> (Result<Stats, BridgeError>, Vec<u8>) {
        let (a, b) = duplex(64 * 1024);
        let ours = WebSocket::new(a, Role::Server, EDGE_MAX_FRAME).with_clean_eof(clean_eof);
        let (local, mut origin) = duplex(64 * 1024);
        let pump = tokio::spawn(run(local, ours, Options::default()));
        let mut peer = WebSocketStream::from_raw_socket(b, TRole::Client, None).await;
        for part in [&b"first "[..], b"second"] {
            peer.send(Message::Binary(Bytes::copy_from_slice(part)))
                .await
                .unwrap();
        }
        let mut raw = peer.into_inner();
        raw.write_all(extra).await.unwrap();
        drop(raw);
        let mut got = Vec::new();
        let _ = origin.read_to_end(&mut got).await;
        (pump.await.unwrap(), got)
    }

    #[tokio::test]
    async fn an_authenticated_end_between_messages_is_a_clean_close() {
        // Stock cloudflared: close_notify, then the socket closes; no close frame.
        let (result, got) = end_without_close_frame(true, &[]).await;
        assert_eq!(got, b"first second");
        assert_eq!(result.unwrap(), Stats { up: 0, down: 12 });
    }

    #[tokio::test]
    async fn an_end_without_close_frame_is_a_cut_unless_authenticated_and_between_messages() {
        let (result, _) = end_without_close_frame(false, &[]).await;
        assert!(
            matches!(result, Err(BridgeError::Truncated(false))),
            "{result:?}"
        );
        // A frame header promising 5 masked bytes, then only 2 of them.
        let partial = [0x82, 0x85, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2];
        let (result, got) = end_without_close_frame(true, &partial).await;
        assert!(
            matches!(result, Err(BridgeError::Truncated(true))),
            "{result:?}"
        );
        assert!(got.starts_with(b"first second"), "{got:?}");
        // Half a header is a cut too.
        let (result, _) = end_without_close_frame(true, &[0x82]).await;
        assert!(
            matches!(result, Err(BridgeError::Truncated(false))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn empty_message_from_peer_shuts_local_write_side() {
        let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
        let (local, mut app) = duplex(64 * 1024);
        let pump = tokio::spawn(run(local, client_ws, Options::default()));
        server_ws
            .send(Message::Binary(Bytes::from_static(b"x")))
            .await
            .unwrap();
        server_ws.send(Message::Binary(Bytes::new())).await.unwrap();
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"x");
        // The up direction is still open.
        app.write_all(b"late").await.unwrap();
        assert_eq!(
            server_ws.next().await.unwrap().unwrap(),
            Message::Binary(Bytes::from_static(b"late"))
        );
        app.shutdown().await.unwrap();
        assert!(matches!(
            server_ws.next().await,
            Some(Ok(Message::Close(_)))
        ));
        while server_ws.next().await.is_some() {}
        assert_eq!(pump.await.unwrap().unwrap(), Stats { up: 4, down: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_give_buffers_back_and_wake_up_intact() {
        let (client_ws, mut server_ws) = ws_pair(1 << 20).await;
        let (local, mut app) = duplex(1 << 20);
        let pump = tokio::spawn(run(local, client_ws, Options::default()));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for round in 0..3 {
            app.write_all(&data).await.unwrap();
            let mut got = Vec::new();
            while got.len() < data.len() {
                match server_ws.next().await.unwrap().unwrap() {
                    Message::Binary(b) => got.extend_from_slice(&b),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(got == data, "round {round}: up bytes differ");
            server_ws
                .send(Message::Binary(Bytes::from(data.clone())))
                .await
                .unwrap();
            let mut back = vec![0u8; data.len()];
            app.read_exact(&mut back).await.unwrap();
            assert!(back == data, "round {round}: down bytes differ");
            // Virtual time: long enough for both buffers to be released.
            let before = RELEASED.with(|n| n.get());
            tokio::time::sleep(IDLE_RELEASE * 3).await;
            assert_eq!(RELEASED.with(|n| n.get()) - before, 2, "round {round}");
        }
        app.shutdown().await.unwrap();
        while server_ws.next().await.is_some() {}
        let stats = pump.await.unwrap().unwrap();
        assert_eq!(stats.up, 3 * data.len() as u64);
        assert_eq!(stats.down, 3 * data.len() as u64);
    }

    #[tokio::test]
    async fn text_frames_are_refused() {
        let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
        let (local, _app) = duplex(64 * 1024);
        let pump = tokio::spawn(run(local, client_ws, Options::default()));
        server_ws.send(Message::text("nope")).await.unwrap();
        assert!(matches!(pump.await.unwrap(), Err(BridgeError::TextFrame)));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_is_detected_by_ping() {
        let (client_ws, server_ws) = ws_pair(64 * 1024).await;
        let (local, _app) = duplex(64 * 1024);
        let opts = Options {
            keepalive: Keepalive {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
            },
            ..Options::default()
        };
        // The server never reads, so it never answers the ping.
        let _hold = server_ws;
        let res = run(local, client_ws, opts).await;
        assert!(matches!(res, Err(BridgeError::Dead(_))), "{res:?}");
    }

    const SHORT: Keepalive = Keepalive {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn a_local_reader_paused_for_many_keepalive_periods_is_not_a_dead_peer() {
        let (client_ws, server_ws) = ws_pair(64 * 1024).await;
        let (local, mut app) = duplex(64 * 1024);
        let opts = Options {
            keepalive: SHORT,
            ..Options::default()
        };
        let pump = tokio::spawn(run(local, client_ws, opts));
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let (mut tx, mut rx) = server_ws.split();
        // The peer keeps reading (it sees our pings) while its writes wait for us.
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            tx.send(Message::Binary(Bytes::from(sent))).await.unwrap();
            tx.close().await.unwrap();
        });
        // Virtual time: a hundred keepalive periods without reading.
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(!pump.is_finished(), "{:?}", pump.await);
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "bytes differ");
        writer.await.unwrap();
        app.shutdown().await.unwrap();
        pump.await.unwrap().unwrap();
        reader.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_are_seen_after_the_peer_ended_its_stream() {
        let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
        let (local, mut app) = duplex(64 * 1024);
        let opts = Options {
            keepalive: SHORT,
            peer_half_close: true,
            ..Options::default()
        };
        let pump = tokio::spawn(run(local, client_ws, opts));
        server_ws.send(Message::Binary(Bytes::new())).await.unwrap();
        // The peer reads on (answering our pings) while we upload for a long time.
        let peer = tokio::spawn(async move {
            let mut up = 0;
            while let Some(Ok(m)) = server_ws.next().await {
                if let Message::Binary(b) = m {
                    up += b.len();
                }
            }
            up
        });
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        for _ in 0..40 {
            app.write_all(b"tick").await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        app.shutdown().await.unwrap();
        let stats = pump.await.unwrap().unwrap();
        assert_eq!(stats.up, 160);
        assert_eq!(peer.await.unwrap(), 160);
    }

    #[tokio::test]
    async fn large_transfer_keeps_order_under_backpressure() {
        // A tiny pipe forces every write to wait for the reader.
        let (a, b) = duplex(4 * 1024);
        let client_ws = WebSocket::new(a, Role::Client, CLIENT_MAX_FRAME);
        let server_ws = WebSocket::new(b, Role::Server, EDGE_MAX_FRAME);
        let (local_c, mut app) = duplex(4 * 1024);
        let (local_s, mut origin) = duplex(4 * 1024);
        let opts = Options {
            peer_half_close: true,
            ..Options::default()
        };
        let c = tokio::spawn(run(local_c, client_ws, opts));
        let s = tokio::spawn(run(local_s, server_ws, Options::default()));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            app.write_all(&sent).await.unwrap();
            app.shutdown().await.unwrap();
            let mut back = Vec::new();
            app.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "origin got different bytes");
        origin.write_all(&got).await.unwrap();
        origin.shutdown().await.unwrap();
        let back = writer.await.unwrap();
        assert!(back == data, "echo differs");
        c.await.unwrap().unwrap();
        s.await.unwrap().unwrap();
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncWriteExt, duplex};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role as TRole;

    #[tokio::test(start_paused = true)]
    async fn unanswered_close_ends_after_close_wait() {
        let (a, b) = duplex(64 * 1024);
        let client_ws = WebSocket::new(a, Role::Client, CLIENT_MAX_FRAME);
        let mut server_ws = WebSocketStream::from_raw_socket(b, TRole::Server, None).await;
        let (local, mut app) = duplex(1024);
        let pump = tokio::spawn(run(local, client_ws, Options::default()));
        // Virtual time (paused clock): deterministic, not a wall-clock assertion.
        let started = Instant::now();
        app.shutdown().await.unwrap();
        // The peer reads our close but never answers it.
        assert!(matches!(
            server_ws.next().await,
            Some(Ok(Message::Close(_)))
        ));
        assert_eq!(pump.await.unwrap().unwrap(), Stats::default());
        let waited = started.elapsed();
        assert!(
            waited >= CLOSE_WAIT && waited < CLOSE_WAIT * 2,
            "{waited:?}"
        );
        drop(server_ws);
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    type Side = (DuplexStream, Session, Result<Stats, BridgeError>);

    async fn side(
        mut local: DuplexStream,
        ws: WebSocket<DuplexStream>,
        mut session: Session,
        peer_has: u64,
    ) -> Side {
        let r = run_resumable(&mut local, ws, Options::default(), &mut session, peer_has).await;
        (local, session, r)
    }

    /// Two resumable pumps whose WebSocket is cut mid-transfer (a relay between them
    /// is dropped) and joined again by a new one: both directions arrive whole.
    #[tokio::test]
    async fn a_cut_websocket_is_resumed_and_no_byte_is_lost_or_repeated() {
        let (local_c, app) = duplex(64 * 1024);
        let (local_s, mut origin) = duplex(64 * 1024);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
        let sent = data.clone();
        let app_task = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(app);
            let writer = async {
                w.write_all(&sent).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let reader = r.read_to_end(&mut back);
            let (_, got) = tokio::join!(writer, reader);
            got.unwrap();
            back
        });
        let origin_task = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = origin.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                origin.write_all(&buf[..n]).await.unwrap();
            }
            origin.shutdown().await.unwrap();
            got
        });
        // First WebSocket: through a relay that is cut once 1 MiB went up.
        let (c_io, relay_c) = duplex(16 * 1024);
        let (s_io, relay_s) = duplex(16 * 1024);
        let relay = tokio::spawn(async move {
            let (mut cr, mut cw) = tokio::io::split(relay_c);
            let (mut sr, mut sw) = tokio::io::split(relay_s);
            let up = async {
                let mut buf = vec![0u8; 16 * 1024];
                let mut passed = 0;
                while passed < 1 << 20 {
                    let n = cr.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    sw.write_all(&buf[..n]).await?;
                    passed += n;
                }
                Ok::<_, io::Error>(())
            };
            let down = tokio::io::copy(&mut sr, &mut cw);
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        });
        let c = tokio::spawn(side(
            local_c,
            WebSocket::new(c_io, Role::Client, CLIENT_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        let s = tokio::spawn(side(
            local_s,
            WebSocket::new(s_io, Role::Server, EDGE_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        relay.await.unwrap();
        let (local_c, sc, rc) = c.await.unwrap();
        let (local_s, ss, rs) = s.await.unwrap();
        assert!(rc.as_ref().is_err_and(|e| e.is_link_failure()), "{rc:?}");
        assert!(rs.as_ref().is_err_and(|e| e.is_link_failure()), "{rs:?}");
        // Second WebSocket: each side learns what the other delivered.
        let (c_io, s_io) = duplex(16 * 1024);
        let (c_has, s_has) = (sc.delivered(), ss.delivered());
        assert!(
            c_has < data.len() as u64 && s_has < data.len() as u64,
            "cut too late"
        );
        let c = tokio::spawn(side(
            local_c,
            WebSocket::new(c_io, Role::Client, CLIENT_MAX_FRAME),
            sc,
            s_has,
        ));
        let s = tokio::spawn(side(
            local_s,
            WebSocket::new(s_io, Role::Server, EDGE_MAX_FRAME),
            ss,
            c_has,
        ));
        let (_, _, rc) = c.await.unwrap();
        let (_, _, rs) = s.await.unwrap();
        rc.unwrap();
        rs.unwrap();
        assert!(origin_task.await.unwrap() == data, "origin got other bytes");
        assert!(app_task.await.unwrap() == data, "echo differs");
    }
}
