//! The data path: a local byte stream pumped through a WebSocket, both ways.
//!
//! One [`run`] call owns one connection: a local `AsyncRead + AsyncWrite` (a TCP
//! socket, stdio, or the edge's origin socket) and a [`WebSocketStream`]. It is a
//! single poll loop with separate state per direction (the shape of linkerd's
//! `duplex`), so there is no lock and no extra task per connection:
//!
//! - **up** (local -> WebSocket): read straight into a reusable [`BytesMut`], freeze
//!   what was read into one binary message (no copy on our side), and only read again
//!   once the WebSocket sink has accepted that message. The sink is flushed when the
//!   local side has nothing more ready, not after every message.
//! - **down** (WebSocket -> local): take one binary message and write it out fully
//!   before asking for the next, flushing when no further message is ready.
//!
//! So neither side is ever read faster than the other side accepts: memory per
//! connection is bounded by the read buffer plus one message each way.
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
//! **Keepalive.** When nothing has been received for [`Options::ping_interval`] a ping
//! is sent; if nothing at all (pong or data) arrives within [`Options::pong_timeout`]
//! after it, the connection is presumed dead.
//!
//! **Closing.** When both directions are done, a close frame is sent (unless one was
//! already) and the peer's reply is awaited for at most [`CLOSE_WAIT`], so the peer
//! reads everything before our socket goes away.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::io::poll_read_buf;

/// Smallest read buffer: what an idle or interactive connection holds.
pub const MIN_READ: usize = 8 * 1024;
/// Largest read buffer: reached only while reads keep filling the buffer (bulk
/// transfer); one read becomes one WebSocket message of at most this size.
pub const MAX_READ: usize = 256 * 1024;
/// How long to wait for the peer's close frame after sending ours.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Largest message the client accepts from the edge.
pub const CLIENT_MAX_MESSAGE: usize = 16 << 20;
/// Largest message the edge accepts from a client (ours send at most [`MAX_READ`]);
/// anything larger fails closed.
pub const EDGE_MAX_MESSAGE: usize = 1 << 20;
/// tungstenite's read buffer per connection, allocated up front and held while
/// idle. 8 KiB measured as fast as 64 KiB for bulk transfer on loopback (a larger
/// frame grows the buffer as needed) and cut idle memory from 80 to 20 KiB per
/// connection (1,000 idle connections, release build).
pub const WS_READ_BUFFER: usize = 8 * 1024;

/// The WebSocket configuration both sides use: frames go out as soon as they are
/// handed over (the pump decides when to flush), incoming messages are capped.
pub fn ws_config(max_message: usize) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Tunables of one bridged connection.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Send a ping after this long without receiving anything.
    pub ping_interval: Duration,
    /// Presume the peer dead when nothing arrives this long after a ping.
    pub pong_timeout: Duration,
    /// Once one direction has ended, close if no data moves for this long.
    pub half_open_idle: Duration,
    /// The peer understands the empty-message half-close marker.
    pub peer_half_close: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ping_interval: Duration::from_secs(54),
            pong_timeout: Duration::from_secs(60),
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
    /// The WebSocket failed (I/O, protocol violation, frame too large).
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The peer sent a text frame; the tunnel protocol carries binary frames only.
    #[error("peer sent a text frame; tunnels carry binary frames only")]
    TextFrame,
    /// Nothing arrived in answer to a ping.
    #[error("peer silent for {0:?} after a ping; presumed dead")]
    Dead(Duration),
    /// One direction ended and the other stayed idle too long.
    #[error("half-closed connection idle for {0:?}; closed")]
    HalfOpenIdle(Duration),
}

/// Pump bytes between `local` and `ws` until both directions have ended.
///
/// Returns the bytes moved each way. Cancel safety: dropping the future drops both
/// streams (an abrupt close); callers that shut down gracefully let it finish.
pub async fn run<L, S>(
    local: L,
    ws: WebSocketStream<S>,
    opts: Options,
) -> Result<Stats, BridgeError>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pump = Pump::new(local, ws, opts);
    poll_fn(|cx| pump.poll(cx)).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    /// Reading local data.
    Open,
    /// Local EOF seen; our EOF signal (marker or close) is queued in `up_msg`.
    Eof,
    /// Our EOF signal was handed to the sink.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// Receiving messages.
    Open,
    /// Peer EOF seen; shutting down the local write side.
    Closing,
    /// Local write side shut down.
    Done,
}

struct Pump<L, S> {
    local: L,
    ws: WebSocketStream<S>,
    opts: Options,
    up: Up,
    up_buf: BytesMut,
    read_size: usize,
    up_msg: Option<Message>,
    ws_unflushed: bool,
    down: Down,
    down_buf: Bytes,
    local_unflushed: bool,
    /// The peer sent a close frame (or vanished): nothing more can be sent to it.
    peer_closed: bool,
    /// We handed a close frame to the sink.
    close_sent: bool,
    /// Both directions ended; waiting for the close handshake since this instant.
    closing_since: Option<Instant>,
    /// We sent a close frame: the peer's reply is awaited until this instant.
    close_deadline: Option<Instant>,
    ping_due: bool,
    ping_sent_at: Option<Instant>,
    last_rx: Instant,
    last_data: Instant,
    timer: Pin<Box<Sleep>>,
    stats: Stats,
}

impl<L, S> Pump<L, S>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(local: L, ws: WebSocketStream<S>, opts: Options) -> Self {
        let now = Instant::now();
        Pump {
            local,
            ws,
            opts,
            up: Up::Open,
            up_buf: BytesMut::new(),
            read_size: MIN_READ,
            up_msg: None,
            ws_unflushed: false,
            down: Down::Open,
            down_buf: Bytes::new(),
            local_unflushed: false,
            peer_closed: false,
            close_sent: false,
            closing_since: None,
            close_deadline: None,
            ping_due: false,
            ping_sent_at: None,
            last_rx: now,
            last_data: now,
            timer: Box::pin(tokio::time::sleep_until(now + opts.ping_interval)),
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

    /// WebSocket -> local. Returns whether anything happened.
    fn poll_down(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut progress = false;
        if self.down == Down::Open && !self.down_buf.is_empty() {
            match Pin::new(&mut self.local).poll_write(cx, &self.down_buf) {
                Poll::Ready(Ok(0)) => {
                    return Err(BridgeError::LocalWrite(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.down_buf.advance(n);
                    self.local_unflushed = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(BridgeError::LocalWrite(e)),
                Poll::Pending => {}
            }
        }
        if self.down == Down::Open && self.down_buf.is_empty() {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    progress = true;
                    self.on_message(msg)?;
                }
                Poll::Ready(Some(Err(e))) => return Err(e.into()),
                Poll::Ready(None) => {
                    // The stream ended: after a close frame tungstenite reports it as
                    // `None` on the next read; a vanished peer looks the same.
                    progress = true;
                    self.peer_closed = true;
                    self.down = Down::Closing;
                }
                Poll::Pending => {
                    if self.local_unflushed {
                        match Pin::new(&mut self.local).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.local_unflushed = false,
                            Poll::Ready(Err(e)) => return Err(BridgeError::LocalWrite(e)),
                            Poll::Pending => {}
                        }
                    }
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
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::NotConnected => {
                    self.down = Down::Done;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(BridgeError::LocalWrite(e)),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    fn on_message(&mut self, msg: Message) -> Result<(), BridgeError> {
        let now = Instant::now();
        self.last_rx = now;
        self.ping_sent_at = None;
        match msg {
            Message::Binary(b) if b.is_empty() => self.down = Down::Closing,
            Message::Binary(b) => {
                self.last_data = now;
                self.stats.down += b.len() as u64;
                self.down_buf = b;
            }
            // tungstenite queues the pong itself; it goes out on our next flush.
            Message::Ping(_) => self.ws_unflushed = true,
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => {
                self.peer_closed = true;
                // tungstenite queued the close reply; make sure it is flushed.
                self.ws_unflushed = true;
                self.down = Down::Closing;
            }
            Message::Text(_) => return Err(BridgeError::TextFrame),
        }
        Ok(())
    }

    /// Local -> WebSocket. Returns whether anything happened.
    fn poll_up(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut progress = false;
        if self.peer_closed {
            // The peer can take nothing more; anything still unread locally has
            // nowhere to go. Stop reading, but keep flushing the close reply.
            self.up_msg = None;
            self.up = Up::Done;
        }
        if self.ping_due && self.up_msg.is_none() && !self.close_sent {
            self.up_msg = Some(Message::Ping(Bytes::new()));
            self.ping_due = false;
            self.ping_sent_at = Some(Instant::now());
        }
        loop {
            if let Some(msg) = self.up_msg.take() {
                match Pin::new(&mut self.ws).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let is_eof = self.up == Up::Eof && !matches!(msg, Message::Ping(_));
                        if matches!(msg, Message::Close(_)) {
                            self.close_sent = true;
                        }
                        Pin::new(&mut self.ws).start_send(msg)?;
                        self.ws_unflushed = true;
                        progress = true;
                        if is_eof {
                            self.up = Up::Done;
                        }
                    }
                    Poll::Ready(Err(e)) => return Err(e.into()),
                    Poll::Pending => {
                        self.up_msg = Some(msg);
                        break;
                    }
                }
            }
            if self.up == Up::Eof {
                self.up_msg = Some(self.eof_message());
                continue;
            }
            if self.up != Up::Open {
                break;
            }
            if self.up_buf.capacity() < self.read_size {
                // Reclaims the previous allocation when the sink has released it.
                self.up_buf.reserve(self.read_size);
            }
            match poll_read_buf(Pin::new(&mut self.local), cx, &mut self.up_buf) {
                Poll::Ready(Ok(0)) => {
                    self.up = Up::Eof;
                    progress = true;
                }
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    self.stats.up += n as u64;
                    self.last_data = Instant::now();
                    if n >= self.read_size {
                        self.read_size = (self.read_size * 2).min(MAX_READ);
                    }
                    self.up_msg = Some(Message::Binary(self.up_buf.split().freeze()));
                }
                Poll::Ready(Err(e)) => return Err(BridgeError::LocalRead(e)),
                Poll::Pending => break,
            }
        }
        // Flush only when there is nothing more to hand over right now.
        if self.ws_unflushed && (self.up_msg.is_none() || self.up == Up::Done) {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.ws_unflushed = false,
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    fn eof_message(&self) -> Message {
        if self.opts.peer_half_close {
            Message::Binary(Bytes::new())
        } else {
            Message::Close(None)
        }
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
        match Pin::new(&mut self.ws).poll_close(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(tungstenite::Error::ConnectionClosed))
            | Poll::Ready(Err(tungstenite::Error::AlreadyClosed)) => {
                return Poll::Ready(Ok(self.stats));
            }
            // The peer went away during the close handshake: the data is delivered.
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(self.stats)),
            Poll::Pending => return Poll::Pending,
        }
        self.close_sent = true;
        if self.peer_closed {
            return Poll::Ready(Ok(self.stats));
        }
        // Drain until the peer's close frame (or the end of the stream).
        loop {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(self.stats)),
                Some(Ok(_)) => continue,
                Some(Err(_)) => return Poll::Ready(Ok(self.stats)),
            }
        }
    }

    /// Keepalive and idle checks; `Pending` once the timer is armed again,
    /// `Ready(Ok(true))` when the connection should end now without error.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BridgeError>> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            if self.close_deadline.is_some_and(|d| now >= d) {
                return Poll::Ready(Ok(true));
            }
            if let Some(sent) = self.ping_sent_at
                && now >= sent + self.opts.pong_timeout
            {
                return Poll::Ready(Err(BridgeError::Dead(now - self.last_rx)));
            }
            let one_way = self.up == Up::Done || self.down == Down::Done;
            if one_way && now >= self.last_data + self.opts.half_open_idle {
                return Poll::Ready(Err(BridgeError::HalfOpenIdle(now - self.last_data)));
            }
            if self.ping_sent_at.is_none()
                && !self.ping_due
                && now >= self.last_rx + self.opts.ping_interval
            {
                self.ping_due = true;
                // Let the up direction send it.
                self.timer.as_mut().reset(now + self.opts.pong_timeout);
                return Poll::Ready(Ok(false));
            }
            let mut next = match self.ping_sent_at {
                Some(sent) => sent + self.opts.pong_timeout,
                None => self.last_rx + self.opts.ping_interval,
            };
            if one_way {
                next = next.min(self.last_data + self.opts.half_open_idle);
            }
            if let Some(d) = self.close_deadline {
                next = next.min(d);
            }
            self.timer
                .as_mut()
                .reset(next.max(now + Duration::from_millis(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn ws_pair(
        buf: usize,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = duplex(buf);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
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
            ping_interval: Duration::from_secs(1),
            pong_timeout: Duration::from_secs(1),
            ..Options::default()
        };
        // The server never reads, so it never answers the ping.
        let _hold = server_ws;
        let res = run(local, client_ws, opts).await;
        assert!(matches!(res, Err(BridgeError::Dead(_))), "{res:?}");
    }

    #[tokio::test]
    async fn large_transfer_keeps_order_under_backpressure() {
        // A tiny pipe forces every write to wait for the reader.
        let (client_ws, server_ws) = ws_pair(4 * 1024).await;
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
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test(start_paused = true)]
    async fn unanswered_close_ends_after_close_wait() {
        let (a, b) = duplex(64 * 1024);
        let client_ws = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let mut server_ws = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
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
