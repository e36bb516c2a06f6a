//! WebSocket frames (RFC 6455 section 5) as the data path needs them: parse a
//! header out of a read buffer, write one in front of a payload that is already in
//! place, and mask or unmask in place.
//!
//! The bridge streams payload bytes straight from its read buffer to the other
//! side, so no message is ever assembled in memory: a frame's header is parsed, then
//! its payload passes through in whatever pieces the socket delivers. The handshake
//! (HTTP upgrade) happens elsewhere; this module is only the framing after it.

use std::fmt;

/// The longest header: 2 bytes, 8 of extended length, 4 of mask key.
pub const MAX_HEADER: usize = 14;
/// Control frames (close, ping, pong) carry at most this many payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// The next fragment of a message.
    Continue,
    /// The first frame of a text message.
    Text,
    /// The first frame of a binary message.
    Binary,
    /// The close handshake.
    Close,
    /// A ping; the peer answers with a pong carrying the same payload.
    Ping,
    /// A pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0 => OpCode::Continue,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continue => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
        }
    }

    /// Close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Which end of the connection we are: clients mask what they send, servers don't.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the upgrade request (`tunnel tcp|ssh`).
    Client,
    /// The side that accepted it (`tunnel edge`).
    Server,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

/// Why a peer's frame was refused; each one fails the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set, but no extension was negotiated.
    Reserved,
    /// An opcode RFC 6455 reserves.
    UnknownOpcode(u8),
    /// A control frame longer than 125 bytes or fragmented.
    BadControl,
    /// A client sent an unmasked frame, or a server a masked one.
    Masking(Role),
    /// A frame longer than this side accepts.
    TooLarge {
        /// The frame's length.
        len: u64,
        /// The most this side accepts.
        max: u64,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Reserved => write!(f, "frame has reserved bits set"),
            FrameError::UnknownOpcode(op) => write!(f, "frame has reserved opcode {op}"),
            FrameError::BadControl => {
                write!(f, "control frame is fragmented or longer than 125 bytes")
            }
            FrameError::Masking(Role::Server) => write!(f, "client sent an unmasked frame"),
            FrameError::Masking(Role::Client) => write!(f, "server sent a masked frame"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Parse the header at the start of `buf`, received by `us`. `Ok(None)` means more
/// bytes are needed; otherwise the header and its length in bytes.
pub fn parse_header(
    buf: &[u8],
    us: Role,
    max_len: u64,
) -> Result<Option<(Header, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(FrameError::UnknownOpcode(b0 & 0x0f))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    if masked != (us == Role::Server) {
        return Err(FrameError::Masking(us));
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(FrameError::BadControl);
    }
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some(key.try_into().expect("4 bytes"))
    } else {
        None
    };
    Ok(Some((
        Header {
            fin,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// Bytes of header for a payload of `len`, masked or not.
pub fn header_len(len: usize, masked: bool) -> usize {
    let base = match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    base + if masked { 4 } else { 0 }
}

/// Write the header of a final frame into `out`, which is exactly
/// [`header_len`]`(len, mask.is_some())` bytes long.
pub fn write_header(out: &mut [u8], opcode: OpCode, mask: Option<[u8; 4]>, len: usize) {
    debug_assert_eq!(out.len(), header_len(len, mask.is_some()));
    out[0] = 0x80 | opcode.bits();
    let m = if mask.is_some() { 0x80 } else { 0 };
    let at = match len {
        0..=125 => {
            out[1] = m | len as u8;
            2
        }
        126..=0xffff => {
            out[1] = m | 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = m | 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        out[at..at + 4].copy_from_slice(&key);
    }
}

/// XOR `buf` with `key`, as if `buf` started `offset` bytes into the payload.
/// Masking and unmasking are the same operation.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    // Align to 8 bytes so the bulk runs on whole words the compiler vectorises.
    let head = buf.as_ptr().align_offset(8).min(buf.len());
    let (start, rest) = buf.split_at_mut(head);
    for (i, b) in start.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    let key = rotate(key, head);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

fn rotate(key: [u8; 4], by: usize) -> [u8; 4] {
    let mut k = key;
    k.rotate_left(by % 4);
    k
}

/// Masking keys from the OS's random source, drawn 16 at a time so a frame costs
/// no system call. RFC 6455 asks for unpredictable keys.
pub struct MaskKeys {
    pool: [u8; 64],
    used: usize,
}

impl MaskKeys {
    /// An empty pool; the first key fills it.
    pub fn new() -> Self {
        MaskKeys {
            pool: [0; 64],
            used: 64,
        }
    }

    /// The next key.
    pub fn next_key(&mut self) -> [u8; 4] {
        if self.used == self.pool.len() {
            crate::protocol::random_fill(&mut self.pool);
            self.used = 0;
        }
        let key = self.pool[self.used..self.used + 4]
            .try_into()
            .expect("4 bytes");
        self.used += 4;
        key
    }
}

impl Default for MaskKeys {
    fn default() -> Self {
        MaskKeys::new()
    }
}

impl fmt::Debug for MaskKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKeys")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn mask_matches_the_bytewise_definition_at_every_alignment() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 3, 7, 8, 9, 31, 64, 1000] {
            for start in 0..8 {
                for offset in 0..5 {
                    let data: Vec<u8> = (0..len + start).map(|i| (i * 31) as u8).collect();
                    let mut fast = data.clone();
                    let mut slow = data.clone();
                    apply_mask(&mut fast[start..], key, offset);
                    naive(&mut slow[start..], key, offset);
                    assert_eq!(fast, slow, "len {len} start {start} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn rfc6455_examples_parse() {
        // Section 5.7: a single-frame unmasked text message "Hello".
        let (h, n) = parse_header(&[0x81, 0x05, 0x48], Role::Client, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.len, n),
            (true, OpCode::Text, None, 5, 2)
        );
        // A masked "Hello".
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = parse_header(&masked, Role::Server, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let mut payload = masked[n..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
        // 256 bytes binary, unmasked: 16-bit length.
        let (h, n) = parse_header(&[0x82, 0x7e, 0x01, 0x00], Role::Client, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.len, n), (OpCode::Binary, 256, 4));
        // 64 KiB: 64-bit length.
        let b = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            parse_header(&b, Role::Client, 1 << 20)
                .unwrap()
                .unwrap()
                .0
                .len,
            65536
        );
    }

    #[test]
    fn short_input_asks_for_more() {
        let full = [0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(
                parse_header(&full[..cut], Role::Server, 1 << 20),
                Ok(None),
                "{cut}"
            );
        }
        assert!(
            parse_header(&full, Role::Server, 1 << 20)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn bad_frames_are_refused() {
        let max = 1 << 20;
        assert_eq!(
            parse_header(&[0xc2, 0x00], Role::Client, max),
            Err(FrameError::Reserved)
        );
        assert_eq!(
            parse_header(&[0x83, 0x00], Role::Client, max),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_header(&[0x09, 0x00], Role::Client, max),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            parse_header(&[0x89, 0x7e, 0, 126], Role::Client, max),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            parse_header(&[0x82, 0x00], Role::Server, max),
            Err(FrameError::Masking(Role::Server))
        );
        assert_eq!(
            parse_header(&[0x82, 0x80, 1, 2, 3, 4], Role::Client, max),
            Err(FrameError::Masking(Role::Client))
        );
        let huge = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            parse_header(&huge, Role::Client, max),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn written_headers_parse_back() {
        let mut keys = MaskKeys::new();
        for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
            for masked in [false, true] {
                let mask = masked.then(|| keys.next_key());
                let mut out = vec![0u8; header_len(len, masked)];
                write_header(&mut out, OpCode::Binary, mask, len);
                let us = if masked { Role::Server } else { Role::Client };
                let (h, n) = parse_header(&out, us, u64::MAX).unwrap().unwrap();
                assert_eq!(
                    (h.fin, h.opcode, h.mask, h.len, n),
                    (true, OpCode::Binary, mask, len as u64, out.len())
                );
            }
        }
    }

    #[test]
    fn mask_keys_vary() {
        let mut keys = MaskKeys::new();
        let all: std::collections::HashSet<[u8; 4]> = (0..100).map(|_| keys.next_key()).collect();
        assert!(all.len() > 90);
    }
}
