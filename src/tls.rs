//! rustls configurations: the client trusts webpki-roots plus `--ca-file` (and
//! `SSL_CERT_FILE`, as stock `cloudflared` does); the edge serves a cert/key pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod stream;

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong, and what to do.
        what: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// aws-lc-rs's suites (the project's one crypto provider) with AES-128-GCM first
/// (rustls lists AES-256-GCM first). AES-128-GCM seals 16 KiB records faster than
/// AES-256-GCM (fewer rounds; 9.8 against 8.6 GB/s measured on this project's
/// bench machine), and the cipher is the largest single cost of a `wss://` byte
/// (about a fifth of either process's CPU). Cloudflare's edge and Go's
/// `crypto/tls` make the same choice; both suites are TLS 1.3's own.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS13_AES_128_GCM_SHA256,
    };
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // A stable sort: the AES-128-GCM suites move up, the rest keep rustls' order.
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

/// Read every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |what: String| TlsError::File {
        path: path.to_path_buf(),
        what,
    };
    let data = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            "holds no PEM certificate (expected BEGIN CERTIFICATE)".into(),
        ));
    }
    Ok(certs)
}

/// `SSL_CERT_FILE`'s certificates, read and parsed once per process: a process
/// builds a client config per tunnel, per token command and on every `tunnel up`
/// reload, and all of them share the first reading (or its error).
type EnvCerts = Option<(PathBuf, Vec<CertificateDer<'static>>)>;

fn env_certs() -> Result<Option<&'static (PathBuf, Vec<CertificateDer<'static>>)>, TlsError> {
    static CERTS: OnceLock<Result<EnvCerts, TlsError>> = OnceLock::new();
    CERTS
        .get_or_init(|| match std::env::var_os("SSL_CERT_FILE") {
            Some(path) => {
                let path = PathBuf::from(path);
                load_certs(&path).map(|certs| Some((path, certs)))
            }
            None => Ok(None),
        })
        .as_ref()
        .map(Option::as_ref)
        .map_err(Clone::clone)
}

/// Client config: webpki roots, `SSL_CERT_FILE` when set (read once per process),
/// and `ca_file` when given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut trust = |path: &Path, certs: &[CertificateDer<'static>]| {
        for cert in certs {
            roots.add(cert.clone()).map_err(|e| TlsError::File {
                path: path.to_path_buf(),
                what: format!("certificate not usable as a trust anchor: {e}"),
            })?;
        }
        Ok::<_, TlsError>(())
    };
    if let Some((path, certs)) = env_certs()? {
        trust(path, certs)?;
    }
    if let Some(path) = ca_file {
        trust(path, &load_certs(path)?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 only: the WebSocket handshake is an HTTP/1.1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        path: key.to_path_buf(),
        what: format!("no usable PEM private key: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless resumption tickets, so any number of clients reconnect with an
    // abbreviated handshake (the default session cache holds only 256).
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// Bytes [`ReadAhead`] asks the socket for at once.
pub const READ_AHEAD: usize = 128 * 1024;

/// How much encrypted data rustls may queue for the socket (its default is 64 KiB):
/// room for one whole bridge frame ([`crate::bridge::MAX_READ`]), so a frame is
/// encrypted in one go instead of being accepted a quarter at a time.
pub const TLS_BUFFER: usize = 256 * 1024 + 4096;

/// A read-ahead buffer under TLS. rustls asks its transport for at most a few KiB
/// per call (one 16 KiB record took four `recv` calls, measured with `strace -c`);
/// this reads up to [`READ_AHEAD`] bytes per system call and hands them out from
/// memory. The buffer exists only while it holds bytes: it is allocated once the
/// socket is readable and given back when drained or when the read finds nothing,
/// so a connection waiting for data (every idle one) holds none. Writes pass
/// straight through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    buf: bytes::BytesMut,
}

impl<S> ReadAhead<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: bytes::BytesMut::new(),
        }
    }
}

impl tokio::io::AsyncRead for ReadAhead<tokio::net::TcpStream> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        dst: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use bytes::Buf;
        use std::task::{Poll, ready};
        let this = &mut *self;
        if this.buf.is_empty() {
            if dst.remaining() >= READ_AHEAD {
                return std::pin::Pin::new(&mut this.inner).poll_read(cx, dst);
            }
            // Wait for readability before allocating: a connection parked here
            // (idle) must not hold READ_AHEAD bytes of heap. This costs no system
            // call; the read below clears readiness on a short read as before.
            ready!(this.inner.poll_read_ready(cx))?;
            this.buf.reserve(READ_AHEAD);
            let read = tokio_util::io::poll_read_buf(
                std::pin::Pin::new(&mut this.inner),
                cx,
                &mut this.buf,
            );
            match read {
                Poll::Ready(Ok(n)) if n > 0 => {}
                other => {
                    // EOF, an error, or nothing after all: give the buffer back.
                    this.buf = bytes::BytesMut::new();
                    return other.map_ok(|_| ());
                }
            }
        }
        let k = dst.remaining().min(this.buf.len());
        dst.put_slice(&this.buf[..k]);
        this.buf.advance(k);
        if this.buf.is_empty() {
            this.buf = bytes::BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod read_ahead_tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn small_reads_come_from_one_big_read_and_bytes_stay_in_order() {
        let (mut w, r) = pair().await;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            })
        };
        let mut r = ReadAhead::new(r);
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
            // After the first small read, the rest of a big read is buffered.
            assert!(r.buf.len() < READ_AHEAD);
        }
        writer.await.unwrap();
        assert!(got == data);
        assert_eq!(r.buf.capacity(), 0, "a drained buffer is given back");
    }

    #[tokio::test]
    async fn a_connection_waiting_for_data_holds_no_buffer() {
        let (mut w, r) = pair().await;
        let mut r = ReadAhead::new(r);
        let mut small = [0u8; 4096];
        // Some bytes first, so that the socket has been read and drained once.
        w.write_all(b"hello").await.unwrap();
        let n = r.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"hello");
        // Now nothing arrives: the read waits, and must not keep READ_AHEAD
        // bytes allocated meanwhile (that was 128 KiB per idle wss connection).
        let mut buf = tokio::io::ReadBuf::new(&mut small);
        let waiting = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(
                std::pin::Pin::new(&mut r)
                    .poll_read(cx, &mut buf)
                    .is_pending(),
            )
        })
        .await;
        assert!(waiting, "no bytes were sent, so the read waits");
        assert_eq!(r.buf.capacity(), 0, "a waiting read holds no buffer");
        // And it is woken when bytes do arrive.
        w.write_all(b"again").await.unwrap();
        let n = r.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"again");
    }
}
