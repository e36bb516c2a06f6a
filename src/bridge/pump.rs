//! One connection's pump: the state both directions share, the close handshake,
//! and the timer (keepalive, idle release, half-open idle).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::buffer::ReadBuffer;
use super::decode::{Decoder, Event};
use super::resume::ACK_FRAME;
use super::{
    BridgeError, CLOSE_WAIT, IDLE_RELEASE, MAX_READ, Options, Session, Stats, WebSocket, keepalive,
};
use crate::frame::{self, MAX_HEADER, MaskKeys, OpCode, Role};

mod down;
mod up;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Up {
    /// Reading local data.
    Open,
    /// Local EOF seen; our EOF signal (marker or close) is still to be queued.
    Eof,
    /// Our EOF signal was queued, or the peer can take nothing more.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Down {
    /// Receiving frames.
    Open,
    /// Peer EOF seen; shutting down the local write side.
    Closing,
    /// Local write side shut down.
    Done,
}

/// Our side of the close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OurClose {
    /// We have not closed.
    Unsent,
    /// Our close frame is queued (or there is nobody left to send it to); the
    /// wait for the peer's reply is not armed yet.
    Queued,
    /// Our close frame was queued: the peer's reply is awaited until this instant.
    Awaiting(Instant),
}

impl OurClose {
    /// Whether we queued a close frame (or need none).
    fn sent(self) -> bool {
        self != OurClose::Unsent
    }

    /// Until when the peer's reply to our close is awaited, once armed.
    fn reply_by(self) -> Option<Instant> {
        match self {
            OurClose::Awaiting(d) => Some(d),
            _ => None,
        }
    }

    /// We queued a close frame (or need none).
    fn queue(&mut self) {
        if *self == OurClose::Unsent {
            *self = OurClose::Queued;
        }
    }
}

pub(super) struct Pump<'a, L, S> {
    local: L,
    /// Offsets and replay buffer of a resumable stream.
    pub(super) session: Option<&'a mut Session>,
    pub(super) io: S,
    role: Role,
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
    decoder: Decoder,
    rx_buf: ReadBuffer,
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
    /// Our close frame: not sent, queued, or awaiting the peer's reply.
    close: OurClose,
    /// Both directions ended; waiting for the close handshake since this instant.
    closing_since: Option<Instant>,
    keepalive: keepalive::Keepalive,
    last_data: Instant,
    timer: Pin<Box<Sleep>>,
    pub(super) stats: Stats,
}

impl<'a, L, S> Pump<'a, L, S>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn new(
        local: L,
        ws: WebSocket<S>,
        opts: Options,
        session: Option<&'a mut Session>,
    ) -> Self {
        let now = Instant::now();
        // A resumable stream's acknowledgement rides in front of a data frame.
        let room = MAX_HEADER + if session.is_some() { ACK_FRAME } else { 0 };
        Pump {
            local,
            session,
            io: ws.io,
            role: ws.role,
            clean_eof: ws.clean_eof,
            opts,
            masks: MaskKeys::new(),
            up: Up::Open,
            local_eof: false,
            up_buf: ReadBuffer::new(room, BytesMut::new()),
            out: BytesMut::new(),
            io_unflushed: false,
            pong: None,
            down: Down::Open,
            decoder: Decoder::new(ws.role, ws.max_frame),
            rx_buf: ReadBuffer::new(0, ws.buffered),
            data: BytesMut::new(),
            local_unflushed: false,
            after_eof: false,
            peer_closed: false,
            close_code: None,
            close: OurClose::Unsent,
            closing_since: None,
            keepalive: keepalive::Keepalive::new(now),
            last_data: now,
            timer: Box::pin(tokio::time::sleep_until(now + opts.keepalive.interval)),
            stats: Stats::default(),
        }
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stats, BridgeError>> {
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
            if self.close == OurClose::Queued {
                let deadline = Instant::now() + CLOSE_WAIT;
                self.close = OurClose::Awaiting(deadline);
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
        // The replay buffer may be empty now: let the idle timer look at it.
        self.arm_release();
        Ok(true)
    }

    /// Start on a new WebSocket: send again what the peer has not delivered, and
    /// take up each direction where it was.
    pub(super) fn rewind(&mut self, peer_has: u64) -> Result<(), BridgeError> {
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

    /// An acknowledgement pong, when one is due (`any`: however little; otherwise
    /// only a busy stream's or one the idle timer asked for).
    fn take_ack(&mut self, any: bool) -> Option<BytesMut> {
        let ack = self.session.as_deref_mut()?.take_ack(any)?;
        Some(self.control(OpCode::Pong, &ack))
    }

    /// A control frame (or an empty data frame) with `payload`, ready to write.
    fn control(&mut self, opcode: OpCode, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::zeroed(self.control_len(payload.len()));
        self.write_control(&mut b, opcode, payload);
        b
    }

    /// Bytes a control frame with `len` bytes of payload takes.
    fn control_len(&self, len: usize) -> usize {
        frame::header_len(len, self.role == Role::Client) + len
    }

    /// Write a control frame with `payload` into `out`, which is
    /// [`Pump::control_len`] long.
    fn write_control(&mut self, out: &mut [u8], opcode: OpCode, payload: &[u8]) {
        let mask = (self.role == Role::Client).then(|| self.masks.next_key());
        let h = frame::header_len(payload.len(), mask.is_some());
        frame::write_header(&mut out[..h], opcode, mask, payload.len());
        out[h..].copy_from_slice(payload);
        if let Some(key) = mask {
            frame::apply_mask(&mut out[h..], key, 0);
        }
    }

    /// Our close frame: the peer's status code echoed, or none. On a resumable
    /// stream a due acknowledgement goes first: it is our last chance to send one.
    fn close_frame(&mut self) -> BytesMut {
        self.close.queue();
        let code = self.close_code;
        let close = self.control(OpCode::Close, code.as_ref().map_or(&[][..], |c| &c[..]));
        match self.take_ack(true) {
            Some(mut ack) => {
                ack.unsplit(close);
                ack
            }
            None => close,
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
        if !self.close.sent() {
            let close = self.close_frame();
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
        self.up_buf.release();
        self.rx_buf.release();
        if let Some(s) = self.session.as_deref_mut() {
            s.release();
        }
    }

    /// Keepalive and idle checks; `Pending` once the timer is armed again,
    /// `Ready(Ok(true))` when the connection should end now without error,
    /// `Ready(Ok(false))` when a ping or an acknowledgement just became due (the up
    /// direction sends it).
    ///
    /// The timer is armed for the earliest thing that can happen next, never in
    /// the past: a connection that waits (idle, or blocked on a frozen peer) wakes
    /// only when a deadline of its own is due.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BridgeError>> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            if self.close.reply_by().is_some_and(|d| now >= d) {
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
            if self.session.as_deref_mut().is_some_and(Session::flush_ack) {
                // Nothing carried the acknowledgement: the up direction sends it.
                return Poll::Ready(Ok(false));
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
            if let Some(d) = self.close.reply_by() {
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
mod tests;
