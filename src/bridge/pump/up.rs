//! Local -> WebSocket: read into the buffer behind the header room, frame in place,
//! write; control frames queued by either direction go out here too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{Down, Pump, Up};
use crate::bridge::{BridgeError, gone};
use crate::frame::{self, MAX_HEADER, OpCode, Role};

impl<'a, L, S> Pump<'a, L, S>
where
    L: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Write `out` to the WebSocket stream. `Ready(Ok)` once it is all written.
    pub(super) fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BridgeError>> {
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
    pub(super) fn poll_up(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut progress = false;
        loop {
            if !self.out.is_empty() {
                match self.poll_out(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            if self.close.sent() {
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
            if let Some(ack) = self.take_ack(false) {
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
            let Poll::Ready(read) = self.up_buf.poll_fill(&mut self.local, cx) else {
                break;
            };
            self.on_local_read(read, woke)?;
            progress = true;
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

    /// A local read finished (`woke`: into a newly allocated buffer): frame what
    /// it brought, or take its end.
    fn on_local_read(&mut self, read: io::Result<usize>, woke: bool) -> Result<(), BridgeError> {
        match read {
            Ok(0) => self.on_local_eof(),
            Ok(n) => {
                if woke {
                    self.arm_release();
                }
                if let Some(s) = self.session.as_deref_mut() {
                    let room = self.up_buf.room;
                    s.on_read(&self.up_buf.buf[room..room + n]);
                }
                self.stats.up += n as u64;
                self.last_data = Instant::now();
                self.out = self.frame_up(n);
            }
            Err(e) if self.down == Down::Done && gone(&e) => {
                // Both ends of the peer's stream are through (we delivered all of
                // it and our EOF): a local side that resets now has finished, as
                // PostgreSQL does after `Terminate`. Its end is a clean one.
                self.on_local_eof();
            }
            Err(e) => return Err(BridgeError::LocalRead(e)),
        }
        Ok(())
    }

    /// The local side ended its stream: our EOF signal is to be queued.
    fn on_local_eof(&mut self) {
        self.up_buf.buf.clear();
        self.up = Up::Eof;
        self.local_eof = true;
        if let Some(s) = self.session.as_deref_mut() {
            s.on_local_eof();
        }
    }

    /// Turn the `n` bytes read behind the header room into one binary frame, in
    /// place: header written into the room, payload masked where it lies. A due
    /// acknowledgement goes in the room too, in front, so it costs no write.
    fn frame_up(&mut self, n: usize) -> BytesMut {
        let mask = (self.role == Role::Client).then(|| self.masks.next_key());
        let h = frame::header_len(n, mask.is_some());
        let room = self.up_buf.room;
        let mut start = room - h;
        let mut buf = std::mem::take(&mut self.up_buf.buf);
        frame::write_header(&mut buf[start..room], OpCode::Binary, mask, n);
        if let Some(key) = mask {
            frame::apply_mask(&mut buf[room..], key, 0);
        }
        if let Some(ack) = self.session.as_deref_mut().and_then(|s| s.take_ack(true)) {
            let len = self.control_len(ack.len());
            debug_assert!(
                len <= room - MAX_HEADER,
                "the room holds an acknowledgement"
            );
            start -= len;
            self.write_control(&mut buf[start..start + len], OpCode::Pong, &ack);
        }
        buf.advance(start);
        let frame = buf.split();
        self.up_buf.buf = buf;
        frame
    }
}
