//! The client's TLS stream, over rustls' unbuffered API, so that an idle connection
//! holds no buffer at all. rustls' buffered connection keeps a 4 KiB read buffer
//! from its first read to its end (it never gives it back: a third of an idle
//! `wss://` connection's memory); here rustls holds no bytes of its own.
//!
//! Ciphertext is read up to [`READ_AHEAD`] bytes per system call into a buffer that
//! is allocated only once the socket is readable and given back when drained, and
//! rustls decrypts it there. Outgoing data is encrypted into a buffer that is
//! given back once the socket has taken all of it. Plaintext that did not fit the
//! reader's buffer waits in a third one, also given back when drained.
//!
//! The rules are those of rustls' own stream (and `tokio-rustls`, which this
//! replaces): the peer's `close_notify` is the only clean end (`Ok(0)`); a TCP end
//! without it, even between two records, is `UnexpectedEof`; a TLS error is
//! `InvalidData` wrapping the [`rustls::Error`]; shutting down sends `close_notify`
//! and then a FIN, and reading goes on after it (half-close).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{READ_AHEAD, TLS_BUFFER};

/// What a TCP end without `close_notify` says (rustls' words).
const UNEXPECTED_EOF: &str = "peer closed connection without sending TLS close_notify";

/// Read more once less than this is free after the buffered ciphertext: room for
/// a whole record (16 KiB and its overhead) and then some.
const MIN_ROOM: usize = 32 * 1024;

/// A TLS client connection over TCP (see the module docs).
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// Ciphertext read and not yet decrypted (at most a partial record between
    /// reads); no allocation while empty.
    rx: BytesMut,
    /// Plaintext decrypted and not yet read; no allocation while empty.
    plain: BytesMut,
    /// Ciphertext for the socket: `tx[sent..end]` is still to go. Given back once
    /// all of it is sent.
    tx: Vec<u8>,
    sent: usize,
    end: usize,
    /// The socket reached its end.
    tcp_eof: bool,
    /// The peer's `close_notify` arrived: reads end cleanly.
    peer_closed: bool,
    /// Our `close_notify` is queued.
    close_sent: bool,
    /// A TLS error ends the connection; every later call reports it again.
    error: Option<rustls::Error>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("peer_closed", &self.peer_closed)
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

/// What to do once rustls can take application data.
enum Action<'a> {
    /// Only decrypt what is buffered.
    Nothing,
    /// Encrypt this (all of it) into `tx`.
    Encrypt(&'a [u8]),
    /// Queue `close_notify` into `tx`.
    CloseNotify,
}

/// Where processing the buffered ciphertext stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// The handshake needs more bytes from the peer.
    Blocked,
    /// Application data flows; the action was done.
    Traffic,
    /// Both sides have sent `close_notify`: nothing can be sent any more.
    Closed,
}

/// A rustls error as the I/O error `tokio-rustls` made of it (so the client's
/// `tls_hint` finds it by downcasting).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Run `encrypt` on the free end of `tx` (at least `need` bytes, more when rustls
/// asks for it) and keep what it wrote.
fn encrypt_into(
    tx: &mut Vec<u8>,
    sent: &mut usize,
    end: &mut usize,
    mut need: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    loop {
        tx_room(tx, sent, end, need);
        match encrypt(&mut tx[*end..]) {
            Ok(n) => {
                *end += n;
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) => need = s.required_size,
            Err(e @ EncryptError::EncryptExhausted) => return Err(io::Error::other(e)),
        }
    }
}

/// Make room for `need` more bytes after `tx[..*end]`, moving the unsent bytes
/// `tx[*sent..*end]` to the front first.
fn tx_room(tx: &mut Vec<u8>, sent: &mut usize, end: &mut usize, need: usize) {
    if tx.len() - *end >= need {
        return;
    }
    if *sent > 0 {
        tx.copy_within(*sent..*end, 0);
        *end -= *sent;
        *sent = 0;
    }
    if tx.len() - *end < need {
        tx.resize(*end + need, 0);
    }
}

impl TlsStream {
    /// Run the TLS handshake over `tcp` as a client of `name`, with `config`'s
    /// roots, ALPN and session cache.
    pub async fn connect(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> io::Result<TlsStream> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = TlsStream {
            tcp,
            conn,
            rx: BytesMut::new(),
            plain: BytesMut::new(),
            tx: Vec::new(),
            sent: 0,
            end: 0,
            tcp_eof: false,
            peer_closed: false,
            close_sent: false,
            error: None,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }

    /// The session's state: negotiated version, suite, handshake kind.
    pub fn state(&self) -> &rustls::CommonState {
        &self.conn
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.process(&mut ReadBuf::new(&mut []), Action::Nothing)? {
                Reached::Traffic => return self.poll_send(cx),
                Reached::Blocked => {
                    // Our flight goes out before we wait for the answer.
                    ready!(self.poll_send(cx))?;
                    if self.tcp_eof {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tls handshake eof",
                        )));
                    }
                    ready!(self.poll_fill(cx))?;
                }
                Reached::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "tls handshake eof",
                    )));
                }
            }
        }
    }

    /// Feed rustls the buffered ciphertext until it waits for more or application
    /// data may flow, then do `action`. Decrypted data goes to `dst` while it has
    /// room (and nothing is waiting in `plain`), the rest to `plain`; records
    /// rustls wants sent (handshake, alerts, key updates) go to `tx`.
    fn process(&mut self, dst: &mut ReadBuf<'_>, action: Action<'_>) -> io::Result<Reached> {
        if let Some(e) = &self.error {
            return Err(tls_error(e.clone()));
        }
        let TlsStream {
            tcp,
            conn,
            rx,
            plain,
            tx,
            sent,
            end,
            peer_closed,
            error,
            ..
        } = self;
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut rx[..]);
            let reached = match state {
                Err(e) => {
                    *error = Some(e.clone());
                    rx.advance(discard);
                    // rustls queued an alert saying why: send it if the socket
                    // takes it now, but do not wait for that.
                    let alert = conn.process_tls_records(&mut rx[..]);
                    if let Ok(ConnectionState::EncodeTlsData(mut enc)) = alert.state {
                        tx_room(tx, sent, end, 64);
                        if let Ok(n) = enc.encode(&mut tx[*end..]) {
                            *end += n;
                        }
                    }
                    let _ = tcp.try_write(&tx[*sent..*end]);
                    return Err(tls_error(e));
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = match record {
                            Ok(r) => r,
                            Err(e) => {
                                *error = Some(e.clone());
                                return Err(tls_error(e));
                            }
                        };
                        discard += record.discard;
                        let p = record.payload;
                        let k = if plain.is_empty() {
                            dst.remaining().min(p.len())
                        } else {
                            0
                        };
                        dst.put_slice(&p[..k]);
                        plain.extend_from_slice(&p[k..]);
                    }
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => {
                    *peer_closed = true;
                    Some(Reached::Closed)
                }
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    let mut need = 0;
                    loop {
                        tx_room(tx, sent, end, need);
                        match enc.encode(&mut tx[*end..]) {
                            Ok(n) => {
                                *end += n;
                                break;
                            }
                            Err(EncodeError::InsufficientSize(s)) => need = s.required_size,
                            Err(EncodeError::AlreadyEncoded) => break,
                        }
                    }
                    None
                }
                // What was encoded is in `tx`, which goes out in order before
                // anything queued later.
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Reached::Blocked),
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    match action {
                        Action::Nothing => {}
                        Action::Encrypt(data) => {
                            // Records of at most 16 KiB, each with at most 29 bytes
                            // of header, nonce and tag; rustls says if more is needed.
                            let need = data.len() + (data.len() / 16384 + 1) * 32;
                            encrypt_into(tx, sent, end, need, |out| w.encrypt(data, out))?;
                        }
                        Action::CloseNotify => {
                            encrypt_into(tx, sent, end, 64, |out| w.queue_close_notify(out))?;
                        }
                    }
                    Some(Reached::Traffic)
                }
                Ok(other) => {
                    return Err(io::Error::other(format!("unexpected TLS state {other:?}")));
                }
            };
            rx.advance(discard);
            if *peer_closed {
                // "Any data received after a closure alert has been received
                // MUST be ignored" (RFC 8446 6.1); rustls ignores it too.
                rx.clear();
            }
            if rx.is_empty() {
                *rx = BytesMut::new();
            }
            if let Some(r) = reached {
                return Ok(r);
            }
        }
    }

    /// Read more ciphertext after what is buffered. The buffer is allocated only
    /// once the socket is readable, and given back if the read finds nothing.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rx.is_empty() {
            // Waiting for readability costs no memory and no system call.
            ready!(self.tcp.poll_read_ready(cx))?;
            self.rx.reserve(READ_AHEAD);
        } else if self.rx.capacity() - self.rx.len() < MIN_ROOM {
            self.rx.reserve(READ_AHEAD);
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.rx);
        if self.rx.is_empty() {
            self.rx = BytesMut::new();
        }
        let n = ready!(read)?;
        if n == 0 {
            self.tcp_eof = true;
        }
        Poll::Ready(Ok(n))
    }

    /// Send everything in `tx`; then give its allocation back.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.end {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.tx[self.sent..self.end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.tx = Vec::new();
        (self.sent, self.end) = (0, 0);
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                let k = dst.remaining().min(this.plain.len());
                dst.put_slice(&this.plain[..k]);
                this.plain.advance(k);
                if this.plain.is_empty() {
                    this.plain = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.error {
                return Poll::Ready(Err(tls_error(e.clone())));
            }
            if !this.rx.is_empty() {
                let before = dst.filled().len();
                this.process(dst, Action::Nothing)?;
                if this.sent < this.end {
                    // Something rustls must answer (a key update): on its way,
                    // and the writer sends the rest.
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                if dst.filled().len() > before {
                    return Poll::Ready(Ok(()));
                }
                if !this.plain.is_empty() || this.peer_closed {
                    continue;
                }
            }
            if this.tcp_eof {
                // The socket ended without close_notify (before it, or in the
                // middle of a record): a cut, never a clean end.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    UNEXPECTED_EOF,
                )));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was accepted before goes out first: that is the backpressure.
        ready!(this.poll_send(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // One whole bridge frame is encrypted in one go.
        let data = &buf[..buf.len().min(TLS_BUFFER)];
        match this.process(&mut ReadBuf::new(&mut []), Action::Encrypt(data))? {
            Reached::Traffic => {}
            Reached::Blocked | Reached::Closed => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS session is closed",
                )));
            }
        }
        // Start sending now; what the socket does not take waits for the next call.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            this.process(&mut ReadBuf::new(&mut []), Action::CloseNotify)?;
        }
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.tcp).poll_shutdown(cx)) {
            // Not being connected any more is fine when shutting down.
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests;
