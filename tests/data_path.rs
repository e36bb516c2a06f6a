//! The data path end to end: real `tunnel tcp` + real `tunnel edge` + real TCP
//! origins, checked byte for byte.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::origin::{EchoOrigin, random_bytes, sha256_hex};
use crate::support::{CI_TOKEN, Edge, read_head, tunnel_tcp, write_test_pki};

const SERVICE: [&str; 4] = ["--id", "ci.access", "--secret", "s3cret"];

fn app(host: &str, origin: SocketAddr) -> String {
    format!(
        "[[apps]]\nhostname = \"{host}\"\norigin = \"{origin}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}"
    )
}

/// An origin that reads everything (hashing it) while it writes `send` bytes of its
/// own; once it has read EOF and written everything, it reports the hash and closes.
fn hashing_origin(send: Vec<u8>) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&send).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        tx.send(sha256_hex(&got)).unwrap();
    });
    (addr, rx)
}

/// Send `up` and receive everything at once (full duplex), return what came back.
fn duplex_exchange(local: SocketAddr, up: Vec<u8>) -> Vec<u8> {
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&up).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

fn sixty_four_mib_each_way(tls: bool) {
    const SIZE: usize = 64 << 20;
    let up = random_bytes(SIZE, 1);
    let down = random_bytes(SIZE, 2);
    let (up_hash, down_hash) = (sha256_hex(&up), sha256_hex(&down));
    let (origin, origin_hash) = hashing_origin(down);
    let (edge, hostname, extra) = if tls {
        let edge = Edge::start_tls(&app("db.test", origin), &["db.test"]);
        let ca = edge.ca().display().to_string();
        (edge, "https://db.test", vec!["--ca-file".to_string(), ca])
    } else {
        (
            Edge::start(&app("db.test", origin)),
            "http://db.test",
            vec![],
        )
    };
    let mut args: Vec<&str> = SERVICE.to_vec();
    args.extend(extra.iter().map(String::as_str));
    let (_tcp, local) = tunnel_tcp(&edge, hostname, &args);
    let got = duplex_exchange(local, up);
    assert_eq!(got.len(), SIZE, "bytes received from the origin");
    assert_eq!(sha256_hex(&got), down_hash, "origin -> client bytes differ");
    let at_origin = origin_hash.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(at_origin, up_hash, "client -> origin bytes differ");
}

#[test]
fn sixty_four_mib_each_way_over_ws() {
    sixty_four_mib_each_way(false);
}

#[test]
fn sixty_four_mib_each_way_over_tls() {
    sixty_four_mib_each_way(true);
}

#[test]
fn two_hundred_concurrent_connections_echo_one_mib_each() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("echo.test", origin.addr));
    let (_tcp, local) = tunnel_tcp(&edge, "http://echo.test", &SERVICE);
    let workers: Vec<_> = (0..200u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = random_bytes(1 << 20, 100 + i);
                let back = duplex_exchange(local, data.clone());
                assert!(
                    back == data,
                    "connection {i}: echo differs ({} bytes back)",
                    back.len()
                );
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a connection failed");
    }
    assert_eq!(
        origin.accepted.load(std::sync::atomic::Ordering::SeqCst),
        200
    );
}

#[test]
fn half_close_still_delivers_the_whole_reply() {
    // The origin reads the request until EOF, then answers with its hash and 1 MiB.
    let origin = EchoOrigin::start_with(|mut s| {
        let mut req = Vec::new();
        s.read_to_end(&mut req).unwrap();
        let mut reply = format!("{}\n", sha256_hex(&req)).into_bytes();
        reply.extend(random_bytes(1 << 20, 7));
        s.write_all(&reply).unwrap();
    });
    let edge = Edge::start(&app("half.test", origin.addr));
    let (_tcp, local) = tunnel_tcp(&edge, "http://half.test", &SERVICE);
    let request = random_bytes(300_000, 3);
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&request).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let mut expected = format!("{}\n", sha256_hex(&request)).into_bytes();
    expected.extend(random_bytes(1 << 20, 7));
    assert_eq!(reply.len(), expected.len());
    assert!(reply == expected, "reply after half-close differs");
}

#[test]
fn ipv6_listener_and_several_urls() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("v6.test", origin.addr));
    let mut args: Vec<&str> = SERVICE.to_vec();
    args.extend(["--url", "[::1]:0"]);
    let (mut tcp, v4) = tunnel_tcp(&edge, "http://v6.test", &args);
    let v6 = tcp.nth_listening(1);
    assert!(v6.is_ipv6(), "second listener {v6} is IPv6");
    for addr in [v4, v6] {
        assert_eq!(duplex_exchange(addr, b"ping".to_vec()), b"ping");
    }
}

#[test]
fn sigterm_stops_the_listener_cleanly() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("stop.test", origin.addr));
    let (mut tcp, local) = tunnel_tcp(&edge, "http://stop.test", &SERVICE);
    assert_eq!(duplex_exchange(local, b"x".to_vec()), b"x");
    tcp.terminate();
    let status = tcp.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "stderr: {}", tcp.stderr());
    assert!(
        TcpStream::connect(local).is_err(),
        "still accepting after SIGTERM"
    );
}

#[test]
fn through_an_http_proxy_from_the_environment() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("db.test", origin.addr));
    let (proxy_url, requests) = crate::support::proxy::recording_proxy(edge.addr);
    let mut args = vec![
        "tcp",
        "--hostname",
        "http://db.test",
        "--url",
        "127.0.0.1:0",
    ];
    args.extend(SERVICE);
    let mut tcp = crate::support::Proc::spawn(
        crate::support::bin(),
        &args,
        &[
            ("http_proxy", proxy_url.as_str()),
            ("no_proxy", "localhost"),
        ],
    );
    let local = tcp.wait_listening();
    assert_eq!(duplex_exchange(local, b"via proxy".to_vec()), b"via proxy");
    let line = requests.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(line, "CONNECT db.test:80 HTTP/1.1");
}

#[test]
fn second_tls_connection_resumes_the_session() {
    let origin = EchoOrigin::start();
    let edge = Edge::start_tls(&app("echo.test", origin.addr), &["echo.test"]);
    let ca = edge.ca().display().to_string();
    let mut args: Vec<&str> = SERVICE.to_vec();
    args.extend(["--ca-file", &ca, "--log-level", "debug"]);
    let (mut tcp, local) = tunnel_tcp(&edge, "https://echo.test", &args);
    for i in 0..2u64 {
        let data = random_bytes(1000, i);
        assert!(duplex_exchange(local, data.clone()) == data, "echo {i}");
    }
    tcp.wait_for("TLS handshake: Some(Resumed)", Duration::from_secs(10));
    let log = tcp.stderr();
    assert_eq!(log.matches("TLS handshake: Some(Full)").count(), 1, "{log}");
    // Our client and edge agree on AES-128-GCM, the faster cipher (see tls.rs).
    assert_eq!(
        log.matches("Some(TLS13_AES_128_GCM_SHA256)").count(),
        2,
        "{log}"
    );
}

#[test]
fn an_edge_that_vanishes_mid_stream_resets_the_local_connection() {
    // The origin sends a first part of its reply and then waits forever.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&[7u8; 1000]).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    });
    let mut edge = Edge::start(&app("db.test", origin));
    let (_tcp, local) = tunnel_tcp(&edge, "http://db.test", &SERVICE);
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut first = [0u8; 1000];
    s.read_exact(&mut first).unwrap();
    // SIGKILL: the edge's sockets close without a WebSocket close frame.
    edge.proc.child.kill().unwrap();
    let mut rest = [0u8; 16];
    let err = s
        .read(&mut rest)
        .expect_err("a cut stream must not end like a complete one");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

/// A stand-in `wss://` edge for `echo.test` that answers one upgrade (any
/// credentials) and then hands its TLS stream to `serve`, and a `tunnel tcp` in
/// front of it with one local connection open: (the edge's directory, the tunnel,
/// the connection).
fn through_a_stand_in_tls_edge(
    serve: impl FnOnce(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) + Send + 'static,
) -> (tempfile::TempDir, crate::support::proc::Proc, TcpStream) {
    let dir = crate::support::tempdir();
    write_test_pki(dir.path(), &["echo.test"]);
    let certs =
        tunnel::server_config(&dir.path().join("edge.crt"), &dir.path().join("edge.key")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let edge_addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(certs).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let head = String::from_utf8(read_head(&mut tls).expect("a request head")).unwrap();
        let key = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or(l.strip_prefix("sec-websocket-key: "))
            })
            .expect("a WebSocket key")
            .trim()
            .to_string();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        write!(
            tls,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .unwrap();
        serve(&mut tls);
    });
    let ca = dir.path().join("ca.pem");
    let connect_to = edge_addr.to_string();
    let mut args = vec![
        "tcp",
        "--hostname",
        "https://echo.test",
        "--connect-to",
        &connect_to,
    ];
    args.extend(["--url", "127.0.0.1:0", "--ca-file", ca.to_str().unwrap()]);
    args.extend(SERVICE);
    let mut tcp = crate::support::proc::Proc::spawn(crate::support::bin(), args, &[]);
    let local = tcp.wait_listening();
    let s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (dir, tcp, s)
}

/// An edge that, like stock `cloudflared` at the other end, ends its stream with a
/// TLS close_notify and no WebSocket close frame: the app gets every byte and a
/// clean EOF, not a reset. (A stand-in edge: ours always sends a close frame.)
#[test]
fn an_edge_ending_with_close_notify_but_no_close_frame_is_a_clean_end() {
    const TOTAL: usize = 300_000;
    let (_dir, _tcp, mut s) = through_a_stand_in_tls_edge(|tls| {
        let data = random_bytes(TOTAL, 7);
        for chunk in data.chunks(60_000) {
            tls.write_all(&[0x82, 127]).unwrap(); // FIN + binary; 64-bit length, unmasked
            tls.write_all(&(chunk.len() as u64).to_be_bytes()).unwrap();
            tls.write_all(chunk).unwrap();
        }
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        // Leave the socket open a moment, then close it without a close frame.
        std::thread::sleep(Duration::from_millis(200));
    });
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got).map(|_| ()).map_err(|e| e.kind());
    assert_eq!(end, Ok(()), "a clean EOF, not a reset");
    assert!(got == random_bytes(TOTAL, 7), "{} bytes arrived", got.len());
}

/// An edge whose TLS connection ends without close_notify (a TCP FIN between two
/// WebSocket messages, as a killed process or a middlebox leaves it) has cut the
/// stream: the app gets the bytes that came and then a reset, never a clean EOF.
/// (Over TLS only a close_notify ends a stream cleanly; a FIN can be forged by a cut.)
#[test]
fn an_edge_ending_tls_without_close_notify_resets_the_local_connection() {
    const TOTAL: usize = 100_000;
    let (_dir, _tcp, mut s) = through_a_stand_in_tls_edge(|tls| {
        // Whole messages, then a FIN with no close_notify and no close frame.
        let data = random_bytes(TOTAL, 9);
        for chunk in data.chunks(25_000) {
            tls.write_all(&[0x82, 127]).unwrap(); // FIN + binary; 64-bit length, unmasked
            tls.write_all(&(chunk.len() as u64).to_be_bytes()).unwrap();
            tls.write_all(chunk).unwrap();
        }
        tls.flush().unwrap();
        tls.sock.shutdown(Shutdown::Both).unwrap();
    });
    let mut got = vec![0u8; TOTAL];
    s.read_exact(&mut got)
        .expect("every byte sent before the cut");
    assert!(got == random_bytes(TOTAL, 9));
    let err = s
        .read(&mut [0u8; 16])
        .expect_err("a TLS end without close_notify must not look like a complete stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}
