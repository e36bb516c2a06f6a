//! The incoming side's frame decoder, sans IO: bytes in, events out.
//!
//! [`Decoder::decode`] takes what the WebSocket stream delivered so far and hands
//! back the next [`Event`], consuming only the bytes that event used. Payload is
//! handed out piece by piece as it arrives (split off the buffer, unmasked in place),
//! so a large frame is never assembled; a control frame waits until it is whole.
//! The pump owns the reads, the clock and the end of the stream ([`Event::Eof`]).

use bytes::{Buf, BytesMut};

use super::BridgeError;
use crate::frame::{self, OpCode, Role};

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
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Payload bytes of a binary message, unmasked.
    Data(BytesMut),
    /// A binary message with no bytes at all: the peer's half-close marker.
    EmptyMessage,
    /// A control frame and its (unmasked) payload.
    Control(OpCode, BytesMut),
    /// The stream ended without a close frame (produced by the pump, not here).
    Eof,
}

/// The incoming frame parser of one WebSocket, as `role`.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_frame: u64,
    rx: Rx,
    in_message: bool,
    message_bytes: u64,
}

impl Decoder {
    /// A decoder at a message boundary; frames larger than `max_frame` are refused.
    pub fn new(role: Role, max_frame: u64) -> Self {
        Decoder {
            role,
            max_frame,
            rx: Rx::Header,
            in_message: false,
            message_bytes: 0,
        }
    }

    /// The next event from the front of `buf`, consuming the bytes it used;
    /// `Ok(None)` when `buf` holds no complete event (read more, call again).
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, BridgeError> {
        loop {
            match self.rx {
                Rx::Payload {
                    left,
                    mask,
                    offset,
                    fin,
                } if !buf.is_empty() => {
                    let k = left.min(buf.len() as u64) as usize;
                    let mut piece = buf.split_to(k);
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
                    return Ok(Some(Event::Data(piece)));
                }
                Rx::Payload { .. } => return Ok(None),
                Rx::Header => {
                    let Some((h, n)) = frame::parse_header(buf, self.role, self.max_frame)? else {
                        return Ok(None);
                    };
                    if h.opcode.is_control() {
                        let total = n + h.len as usize;
                        if buf.len() < total {
                            return Ok(None);
                        }
                        buf.advance(n);
                        let mut payload = buf.split_to(h.len as usize);
                        if let Some(key) = h.mask {
                            frame::apply_mask(&mut payload, key, 0);
                        }
                        return Ok(Some(Event::Control(h.opcode, payload)));
                    }
                    match (h.opcode, self.in_message) {
                        (OpCode::Text, _) => return Err(BridgeError::TextFrame),
                        (OpCode::Binary, false) | (OpCode::Continue, true) => {}
                        _ => return Err(BridgeError::Fragmentation),
                    }
                    buf.advance(n);
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
                            return Ok(Some(Event::EmptyMessage));
                        }
                    }
                }
            }
        }
    }

    /// Between two messages: no frame or message is partly read.
    pub(super) fn at_boundary(&self) -> bool {
        matches!(self.rx, Rx::Header) && !self.in_message
    }

    /// Inside a data frame's payload.
    pub(super) fn mid_frame(&self) -> bool {
        matches!(self.rx, Rx::Payload { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// One frame as a client sends it (masked), `fin` or not.
    fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let h = frame::header_len(payload.len(), true);
        let mut b = vec![0; h + payload.len()];
        frame::write_header(&mut b[..h], opcode, Some(KEY), payload.len());
        if !fin {
            b[0] &= 0x7f;
        }
        b[h..].copy_from_slice(payload);
        frame::apply_mask(&mut b[h..], KEY, 0);
        b
    }

    /// Feed `wire` `step` bytes at a time; the events, with adjacent data merged.
    fn decode_all(wire: &[u8], step: usize) -> Result<Vec<Event>, BridgeError> {
        let mut d = Decoder::new(Role::Server, 1 << 20);
        let mut buf = BytesMut::new();
        let mut events: Vec<Event> = Vec::new();
        for chunk in wire.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some(e) = d.decode(&mut buf)? {
                match (events.last_mut(), e) {
                    (Some(Event::Data(a)), Event::Data(b)) => a.extend_from_slice(&b),
                    (_, e) => events.push(e),
                }
            }
        }
        assert!(buf.is_empty() && d.at_boundary(), "bytes left over");
        Ok(events)
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_events() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = frame(OpCode::Binary, false, b"hello ");
        wire.extend(frame(OpCode::Ping, true, b"p"));
        wire.extend(frame(OpCode::Continue, false, b"world"));
        wire.extend(frame(OpCode::Continue, true, b""));
        wire.extend(frame(OpCode::Binary, true, &big));
        wire.extend(frame(OpCode::Binary, true, b""));
        wire.extend(frame(OpCode::Close, true, &1000u16.to_be_bytes()));
        let bytes = |b: &[u8]| BytesMut::from(b);
        let want = [
            Event::Data(bytes(b"hello ")),
            Event::Control(OpCode::Ping, bytes(b"p")),
            // An empty final fragment ends a message with bytes: no marker.
            Event::Data(bytes(&[&b"world"[..], &big].concat())),
            Event::EmptyMessage,
            Event::Control(OpCode::Close, bytes(&1000u16.to_be_bytes())),
        ];
        for step in [1, 2, 3, 7, 64, 4096, wire.len()] {
            assert!(decode_all(&wire, step).unwrap() == want, "step {step}");
        }
    }

    #[test]
    fn text_and_misplaced_fragments_are_refused() {
        let text = frame(OpCode::Text, true, b"hi");
        assert!(matches!(decode_all(&text, 1), Err(BridgeError::TextFrame)));
        let stray = frame(OpCode::Continue, true, b"hi");
        assert!(matches!(
            decode_all(&stray, 1),
            Err(BridgeError::Fragmentation)
        ));
        let mut interleaved = frame(OpCode::Binary, false, b"a");
        interleaved.extend(frame(OpCode::Binary, true, b"b"));
        assert!(matches!(
            decode_all(&interleaved, 3),
            Err(BridgeError::Fragmentation)
        ));
    }

    #[test]
    fn a_partial_frame_waits_and_says_where_it_stopped() {
        let mut d = Decoder::new(Role::Server, 1 << 20);
        let wire = frame(OpCode::Binary, true, b"abcdef");
        let mut buf = BytesMut::from(&wire[..3]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert!(d.at_boundary() && !d.mid_frame());
        buf.extend_from_slice(&wire[3..wire.len() - 2]);
        assert!(d.decode(&mut buf).unwrap() == Some(Event::Data(BytesMut::from(&b"abcd"[..]))));
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert!(d.mid_frame() && !d.at_boundary());
    }
}
