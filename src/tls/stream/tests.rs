//! The client's TLS stream against a real rustls server: how it ends, and what it holds while idle.

use super::*;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::mpsc;

use rustls::pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Serve = Box<dyn FnOnce(&mut rustls::ServerConnection, &mut std::net::TcpStream) + Send>;

/// A server and a client config for `stream.test`, the client limited to
/// `version`.
fn configs(
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["stream.test".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(super::super::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(super::super::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A blocking rustls server (rustls' own buffered stream, the reference) for
/// one connection: the handshake, then `serve`.
fn server(config: Arc<rustls::ServerConfig>, serve: Serve) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        serve(&mut conn, &mut tcp);
    });
    addr
}

/// Send `data` as TLS records; `cut` bytes of them are held back.
fn send(
    conn: &mut rustls::ServerConnection,
    tcp: &mut std::net::TcpStream,
    data: &[u8],
    cut: usize,
) {
    conn.writer().write_all(data).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    tcp.write_all(&wire[..wire.len() - cut]).unwrap();
}

async fn client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("stream.test").unwrap();
    TlsStream::connect(config, name, tcp).await.unwrap()
}

const VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

/// A TCP end without close_notify is a cut, whether it falls between two records
/// or inside one: the bytes before it are delivered, then `UnexpectedEof`, never
/// `Ok(0)` (the bridge takes `Ok(0)` over TLS for a clean end).
#[tokio::test]
async fn a_tcp_end_without_close_notify_is_unexpected_eof_not_an_end() {
    for version in VERSIONS {
        for cut in [0, 7] {
            let (server_config, client_config) = configs(version);
            let addr = server(
                server_config,
                Box::new(move |conn, tcp| {
                    send(conn, tcp, b"complete", 0);
                    send(conn, tcp, b"cut short", cut);
                    tcp.shutdown(std::net::Shutdown::Both).unwrap();
                }),
            );
            let mut s = client(addr, client_config).await;
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            let end = loop {
                match s.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e.kind()),
                }
            };
            let want: &[u8] = if cut == 0 {
                b"completecut short"
            } else {
                b"complete"
            };
            assert_eq!(got, want, "{version:?}, cut {cut}");
            assert_eq!(
                end,
                Err(io::ErrorKind::UnexpectedEof),
                "{version:?}, cut {cut}"
            );
        }
    }
}

/// The peer's close_notify ends reading cleanly (`Ok(0)`, and again after); we
/// can still write, and our shutdown sends our close_notify.
#[tokio::test]
async fn close_notify_is_a_clean_end_and_each_direction_closes_on_its_own() {
    for version in VERSIONS {
        let (server_config, client_config) = configs(version);
        let (done, heard) = mpsc::channel();
        let addr = server(
            server_config,
            Box::new(move |conn, tcp| {
                send(conn, tcp, b"last words", 0);
                conn.send_close_notify();
                send(conn, tcp, b"", 0);
                // Read the client's data until its close_notify.
                let mut got = Vec::new();
                let mut s = rustls::Stream::new(conn, tcp);
                let end = s.read_to_end(&mut got).map(|_| ()).map_err(|e| e.kind());
                done.send((got, end)).unwrap();
            }),
        );
        let mut s = client(addr, client_config).await;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0, "stays ended");
        s.write_all(b"still talking").await.unwrap();
        s.shutdown().await.unwrap();
        let (got, end) = heard.recv().unwrap();
        assert_eq!(got, b"still talking", "{version:?}");
        assert_eq!(end, Ok(()), "{version:?}: our close_notify arrived");
    }
}

/// A connection waiting for data holds no buffer (rustls' buffered connection
/// held 4 KiB for good), and wakes up with every byte intact: read through a
/// 512-byte buffer, as an idle bridge does, and in one big read.
#[tokio::test]
async fn a_waiting_connection_holds_no_buffers_and_wakes_intact() {
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for version in VERSIONS {
        let (server_config, client_config) = configs(version);
        let (go, wait) = mpsc::channel::<()>();
        let sent = payload.clone();
        let addr = server(
            server_config,
            Box::new(move |conn, tcp| {
                let mut s = rustls::Stream::new(conn, tcp);
                // Echo the first message, then send the payload when told to,
                // twice.
                let mut ping = [0u8; 4];
                s.read_exact(&mut ping).unwrap();
                s.write_all(&ping).unwrap();
                for _ in 0..2 {
                    wait.recv().unwrap();
                    s.write_all(&sent).unwrap();
                }
                let _ = s.read(&mut [0u8; 1]);
            }),
        );
        let mut s = client(addr, client_config).await;
        s.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"ping");
        for small in [true, false] {
            // Nothing more is coming: the read waits, holding nothing.
            let waiting = std::future::poll_fn(|cx| {
                let mut buf = [0u8; 512];
                let mut buf = ReadBuf::new(&mut buf);
                Poll::Ready(Pin::new(&mut s).poll_read(cx, &mut buf).is_pending())
            })
            .await;
            assert!(waiting, "{version:?}: nothing was sent, so the read waits");
            let held = (s.rx.capacity(), s.plain.capacity(), s.tx.capacity());
            assert_eq!(held, (0, 0, 0), "{version:?}: buffers held while waiting");
            go.send(()).unwrap();
            let mut got = vec![0u8; payload.len()];
            if small {
                let mut at = 0;
                while at < got.len() {
                    let end = (at + 512).min(got.len());
                    let n = s.read(&mut got[at..end]).await.unwrap();
                    assert!(n > 0);
                    at += n;
                }
            } else {
                s.read_exact(&mut got).await.unwrap();
            }
            assert!(got == payload, "{version:?}: every byte, in order");
        }
    }
}
