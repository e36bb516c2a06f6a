//! Resumable streams, the part inside the bridge: stream offsets, acknowledgements
//! and the replay buffer of one connection that may outlive its WebSocket.
//!
//! Both directions are numbered from 0; a stream's EOF takes one position after its
//! last byte. Each side counts what it has *delivered* to its local socket (bytes
//! written, plus one once the peer's EOF was passed on) and reports that count to
//! the peer in an acknowledgement: an unsolicited pong (RFC 6455 5.5.3 allows them)
//! carrying the count as 8 bytes, big-endian. Our pings are empty, so a pong of 8
//! bytes is never an answer to one. An acknowledgement costs no write of its own
//! while data flows the other way: it rides in front of the next data frame. A busy
//! one-way stream sends one every [`ACK_EVERY`] bytes; otherwise the pump's idle
//! timer sends what is due (`Session::flush_ack`). What a side read locally stays in its replay
//! buffer until the peer acknowledges it; when the buffer holds [`Session::limit`]
//! bytes the local side is not read (backpressure). After a new WebSocket is
//! established, each side learns the peer's delivered count from the handshake and
//! sends again everything after it.

use bytes::{Buf, BytesMut};

/// Default bound of the replay buffer, per direction and connection.
pub const REPLAY_LIMIT: usize = 512 * 1024;
/// Send an acknowledgement at the latest after this many delivered bytes.
pub const ACK_EVERY: u64 = 64 * 1024;
/// Payload length of an acknowledgement pong.
pub const ACK_LEN: usize = 8;
/// Most bytes an acknowledgement pong takes on the wire (masked, from a client).
pub const ACK_FRAME: usize = 2 + 4 + ACK_LEN;

/// The peer's count in a handshake is not possible for this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the peer acknowledged {acked} positions of {sent} sent (after {floor} acknowledged before)"
)]
pub struct BadAck {
    /// What the peer claimed.
    pub acked: u64,
    /// What we sent, EOF included.
    pub sent: u64,
    /// What it had acknowledged already.
    pub floor: u64,
}

/// The offsets and replay buffer of one resumable connection; lives as long as the
/// connection, across WebSockets.
pub struct Session {
    /// Bytes read from the local side.
    read: u64,
    /// The local side's EOF was read (it takes position `read`).
    eof: bool,
    /// Positions the peer acknowledged.
    acked: u64,
    /// Read bytes not yet acknowledged: positions `acked.min(read)..read`.
    replay: BytesMut,
    /// Positions delivered to the local side (the peer's EOF included).
    delivered: u64,
    /// The peer's EOF was delivered.
    peer_eof: bool,
    /// The last count sent in an acknowledgement.
    ack_sent: u64,
    /// Send what is due with the next chance, however little ([`Session::flush_ack`]).
    ack_flush: bool,
    /// Most bytes the replay buffer holds before the local side waits.
    limit: usize,
}

/// Offsets only: the replay buffer holds the user's bytes, which never reach a log.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("read", &self.read)
            .field("eof", &self.eof)
            .field("acked", &self.acked)
            .field("replay_len", &self.replay.len())
            .field("delivered", &self.delivered)
            .field("peer_eof", &self.peer_eof)
            .field("ack_sent", &self.ack_sent)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Session {
    /// A new stream whose replay buffer holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Session {
            read: 0,
            eof: false,
            acked: 0,
            replay: BytesMut::new(),
            delivered: 0,
            peer_eof: false,
            ack_sent: 0,
            ack_flush: false,
            limit: limit.max(1),
        }
    }

    /// Positions delivered locally: what the peer must not send again.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes read locally (sent) and bytes delivered locally, over the stream's life.
    pub fn stats(&self) -> super::Stats {
        super::Stats {
            up: self.read,
            down: self.delivered - u64::from(self.peer_eof),
        }
    }

    /// The bound of the replay buffer.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held for a replay right now.
    pub fn buffered(&self) -> usize {
        self.replay.len()
    }

    /// Everything we sent, our EOF included, was acknowledged, and the peer's EOF
    /// was delivered: the stream is complete whatever happens to the WebSocket.
    pub fn complete(&self) -> bool {
        self.eof && self.peer_eof && self.acked == self.read + 1
    }

    /// The local side's EOF was read (our EOF marker is part of the stream).
    pub(super) fn local_eof(&self) -> bool {
        self.eof
    }

    /// The peer's EOF was delivered.
    pub(super) fn peer_eof(&self) -> bool {
        self.peer_eof
    }

    /// Whether the local side may be read now (the replay buffer has room).
    pub(super) fn may_read(&self) -> bool {
        self.replay.len() < self.limit
    }

    /// `bytes` were read from the local side and are about to be sent.
    pub(super) fn on_read(&mut self, bytes: &[u8]) {
        self.read += bytes.len() as u64;
        self.replay.extend_from_slice(bytes);
    }

    /// The local side's EOF was read.
    pub(super) fn on_local_eof(&mut self) {
        self.eof = true;
    }

    /// `n` bytes from the peer were written to the local side.
    pub(super) fn on_delivered(&mut self, n: usize) {
        self.delivered += n as u64;
    }

    /// The peer's EOF was passed on to the local side.
    pub(super) fn on_peer_eof(&mut self) {
        if !self.peer_eof {
            self.peer_eof = true;
            self.delivered += 1;
        }
    }

    /// The peer acknowledged `acked` positions: drop what it has.
    pub(super) fn on_ack(&mut self, acked: u64) -> Result<(), BadAck> {
        let sent = self.read + u64::from(self.eof);
        if acked < self.acked || acked > sent {
            return Err(BadAck {
                acked,
                sent,
                floor: self.acked,
            });
        }
        let drop = (acked.min(self.read) - self.acked.min(self.read)) as usize;
        // The allocation stays for the next message (no allocation per message on
        // a busy stream); the pump's idle release gives it back ([`Session::release`]).
        self.replay.advance(drop);
        self.acked = acked;
        Ok(())
    }

    /// The connection is idle: give back the replay buffer's allocation when
    /// nothing waits for an acknowledgement, so an idle stream holds nothing.
    pub(super) fn release(&mut self) {
        if self.replay.is_empty() && self.replay.capacity() > 0 {
            self.replay = BytesMut::new();
        }
    }

    /// An acknowledgement is worth sending now: `any` takes whatever is due (it
    /// rides along a data frame at no cost); otherwise only a busy stream's
    /// [`ACK_EVERY`] or a flush the idle timer asked for. Returns the payload and
    /// marks it sent.
    pub(super) fn take_ack(&mut self, any: bool) -> Option<[u8; ACK_LEN]> {
        let due = self.delivered - self.ack_sent;
        if due == 0 || !(any || self.ack_flush || due >= ACK_EVERY) {
            return None;
        }
        self.ack_sent = self.delivered;
        self.ack_flush = false;
        Some(self.delivered.to_be_bytes())
    }

    /// Delivered positions wait for an acknowledgement.
    pub(super) fn ack_due(&self) -> bool {
        self.delivered > self.ack_sent
    }

    /// The connection went quiet with an acknowledgement due: send it with the
    /// next chance even if small. Whether that is news (false when already asked
    /// for, or nothing is due), so a timer does not ask twice.
    pub(super) fn flush_ack(&mut self) -> bool {
        let news = self.ack_due() && !self.ack_flush;
        self.ack_flush |= news;
        news
    }

    /// A new WebSocket replaces the old one; the peer has delivered `peer_has`
    /// positions. Returns the bytes to send again, and whether our EOF must be
    /// sent again after them.
    pub(super) fn rewind(&mut self, peer_has: u64) -> Result<(&[u8], bool), BadAck> {
        self.on_ack(peer_has)?;
        // Whatever we acknowledged before is what the peer starts from now.
        self.ack_sent = self.delivered;
        self.ack_flush = false;
        let eof_again = self.eof && peer_has <= self.read;
        Ok((&self.replay[..], eof_again))
    }

    /// Parse an acknowledgement pong's payload.
    pub(super) fn parse_ack(payload: &[u8]) -> Option<u64> {
        let b: [u8; ACK_LEN] = payload.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_drop_replayed_bytes_and_rewind_resends_the_rest() {
        let mut s = Session::new(10);
        s.on_read(b"hello ");
        assert!(s.may_read());
        s.on_read(b"world");
        assert!(!s.may_read(), "11 bytes reach the limit of 10");
        s.on_ack(3).unwrap();
        assert_eq!(s.buffered(), 8);
        s.on_local_eof();
        let (again, eof) = s.rewind(6).unwrap();
        assert_eq!(again, b"world");
        assert!(eof);
        let (again, eof) = s.rewind(12).unwrap();
        assert!(again.is_empty());
        assert!(!eof, "the peer has our EOF");
        assert!(s.rewind(5).is_err(), "acks never go back");
        assert!(s.on_ack(13).is_err(), "nothing past what was sent");
    }

    #[test]
    fn debug_output_shows_offsets_never_the_bytes() {
        let mut s = Session::new(64);
        s.on_read(b"hunter2");
        let shown = format!("{s:?}");
        assert!(shown.contains("replay_len: 7"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn an_acked_buffer_is_kept_while_busy_and_released_when_idle() {
        let mut s = Session::new(1 << 20);
        s.on_read(b"query");
        s.on_ack(5).unwrap();
        assert!(s.replay.capacity() > 0, "kept for the next message");
        s.on_read(b"unacked");
        s.release();
        assert!(s.replay.capacity() > 0, "bytes waiting for an ack stay");
        s.on_ack(12).unwrap();
        s.release();
        assert_eq!(s.replay.capacity(), 0, "an idle stream holds nothing");
    }

    #[test]
    fn acks_ride_along_data_or_go_every_ack_every_bytes_or_when_flushed() {
        let mut s = Session::new(10);
        assert_eq!(s.take_ack(true), None);
        assert!(!s.flush_ack(), "nothing to flush");
        s.on_delivered(5);
        assert_eq!(s.take_ack(false), None);
        assert_eq!(s.take_ack(true), Some(5u64.to_be_bytes()));
        s.on_delivered(3);
        assert!(s.flush_ack());
        assert!(!s.flush_ack(), "asked for once");
        assert_eq!(s.take_ack(false), Some(8u64.to_be_bytes()));
        assert!(!s.ack_due());
        s.on_delivered(ACK_EVERY as usize - 1);
        assert_eq!(s.take_ack(false), None, "not busy enough");
        s.on_delivered(1);
        assert_eq!(s.take_ack(false), Some((8 + ACK_EVERY).to_be_bytes()));
        s.on_peer_eof();
        s.on_peer_eof();
        assert_eq!(s.delivered(), 9 + ACK_EVERY);
        assert!(!s.complete());
        s.on_local_eof();
        s.on_ack(1).unwrap();
        assert!(s.complete());
    }
}
