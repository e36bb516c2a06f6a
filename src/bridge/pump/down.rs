//! WebSocket -> local: parse frames as bytes arrive and write payload pieces to the
//! local side straight out of the read buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{Down, Pump};
use crate::bridge::decode::Event;
use crate::bridge::{BridgeError, gone, sendable_close_code};
use crate::frame::OpCode;

impl<'a, L, S> Pump<'a, L, S>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The next thing the peer sent: parse what is buffered, read more if needed.
    pub(super) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, BridgeError>> {
        loop {
            if let Some(event) = self.decoder.decode(&mut self.rx_buf.buf)? {
                return Poll::Ready(Ok(event));
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
    pub(super) fn poll_down(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
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
                            let quiet = !s.ack_due();
                            s.on_delivered(n);
                            if quiet {
                                // The idle timer sends the acknowledgement if no
                                // data frame carries it first.
                                self.arm_release();
                            }
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
            progress |= self.poll_local_shutdown(cx)?;
        }
        progress |= self.poll_after_eof(cx)?;
        Ok(progress)
    }

    /// The peer's stream ended: shut the local write side down. Whether it was.
    fn poll_local_shutdown(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut progress = false;
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
        Ok(progress)
    }

    /// After the peer's EOF marker its stream still carries control frames: answer
    /// its pings and see its pongs, so that a long upload after a half-close is
    /// not taken for a dead peer (nor we for one by the peer). Anything else ends
    /// this listening, and the stream goes on as if nothing had been read. Whether
    /// anything happened.
    fn poll_after_eof(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut progress = false;
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

    /// Take one event of the peer's stream while it is open.
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
                return Err(BridgeError::Truncated(self.decoder.mid_frame()));
            }
            // Cut off before its EOF signal: say so, never a clean end.
            Event::Eof if self.down == Down::Open && !self.clean_end() => {
                return Err(BridgeError::Truncated(self.decoder.mid_frame()));
            }
            // Its data is complete; there is nobody left to reply to.
            Event::Eof => {
                self.peer_closed = true;
                self.close.queue();
                if self.down == Down::Open {
                    self.down = Down::Closing;
                }
            }
        }
        Ok(())
    }

    /// The stream ended by an authenticated close between two messages.
    fn clean_end(&self) -> bool {
        self.clean_eof && self.decoder.at_boundary() && self.rx_buf.buf.is_empty()
    }
}
