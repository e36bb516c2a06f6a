//! One direction's read buffer: grows under bulk transfer, released when idle.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::{IDLE_READ, MAX_READ, MIN_READ};

/// One direction's read buffer: reads land behind `room` bytes (for a frame
/// header), it doubles from [`MIN_READ`] to [`MAX_READ`] while reads keep filling
/// it, and an idle connection gives it back ([`ReadBuffer::release`]).
pub(super) struct ReadBuffer {
    pub(super) buf: BytesMut,
    /// What the next allocation holds, besides the room.
    pub(super) size: usize,
    /// `buf` holds no allocation (a new or idle connection): reads go through
    /// a small stack buffer first.
    pub(super) idle: bool,
    pub(super) room: usize,
}

impl ReadBuffer {
    /// A buffer starting with `buffered` bytes (already read elsewhere).
    pub(super) fn new(room: usize, buffered: BytesMut) -> Self {
        ReadBuffer {
            idle: buffered.is_empty(),
            buf: buffered,
            size: MIN_READ,
            room,
        }
    }

    /// Read more from `r` after what is buffered; `Ok(0)` is EOF.
    pub(super) fn poll_fill<R: AsyncRead + Unpin>(
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
    /// header room); it comes back small when bytes arrive.
    pub(super) fn release(&mut self) {
        if self.idle || self.buf.len() > self.room {
            return;
        }
        self.buf = BytesMut::new();
        self.idle = true;
        self.size = MIN_READ;
    }
}
