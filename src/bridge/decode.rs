//! The incoming side's parser state and what it produces.

use bytes::BytesMut;

use crate::frame::OpCode;

/// Where the parser is in the incoming byte stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rx {
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
pub(super) enum Event {
    /// Payload bytes of a binary message, unmasked.
    Data(BytesMut),
    /// A binary message with no bytes at all: the peer's half-close marker.
    EmptyMessage,
    /// A control frame and its (unmasked) payload.
    Control(OpCode, BytesMut),
    /// The stream ended without a close frame.
    Eof,
}
