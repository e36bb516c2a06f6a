//! The handshake promise both ways: our edge accepts what a stock `cloudflared`
//! sends, byte for byte, and our client sends the same header set (plus only the
//! half-close capability header, which stock peers ignore).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::support::origin::EchoOrigin;
use crate::support::{CI_TOKEN, Edge, read_head, run};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

fn edge_for(origin: SocketAddr) -> Edge {
    Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{origin}\"\nallow = [\"service:ci\", \"alice@example.test\"]\n{CI_TOKEN}"
    ))
}

/// Send raw request bytes, return the response head, and prove the stream then
/// carries a binary frame to the echo origin and back.
fn raw_handshake(edge: &Edge, request: &str) -> String {
    let mut s = TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    if head.starts_with("HTTP/1.1 101") {
        // One masked binary frame "hi" (client frames are masked, RFC 6455 5.3).
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x82, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&frame).unwrap();
        let mut echo = [0u8; 4];
        reader.read_exact(&mut echo).unwrap();
        assert_eq!(echo, [0x82, 2, b'h', b'i'], "echoed frame");
    }
    head
}

#[test]
fn edge_accepts_stock_cloudflared_handshake_with_service_token() {
    let origin = EchoOrigin::start();
    let edge = edge_for(origin.addr);
    let head = raw_handshake(&edge, &fixture("cloudflared-service-token.http"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(
        !lower.contains("tunnel-half-close"),
        "a stock client is offered nothing extra"
    );
}

#[test]
fn edge_accepts_stock_cloudflared_handshake_with_token() {
    let origin = EchoOrigin::start();
    let edge = edge_for(origin.addr);
    let token = edge.mint("db.test", "alice@example.test", "1h");
    let head = raw_handshake(
        &edge,
        &fixture("cloudflared-token.http").replace("{TOKEN}", &token),
    );
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

#[test]
fn edge_answers_stock_handshake_without_credentials_with_login_redirect() {
    let origin = EchoOrigin::start();
    let edge = edge_for(origin.addr);
    let request = fixture("cloudflared-service-token.http")
        .lines()
        .filter(|l| !l.starts_with("Cf-Access-Client"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let head = raw_handshake(&edge, &request);
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    let location = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("location:"))
        .expect("a Location header");
    assert!(
        location.contains("/cdn-cgi/access/login/db.test"),
        "{location}"
    );
}

/// Parse a request head into (request line, [(lower-case name, value)]).
fn parse_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (request_line, headers)
}

#[test]
fn our_client_sends_the_stock_handshake() {
    // A fake edge that records the request and answers 403.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let buf = read_head(&mut s).expect("client closed before finishing its request");
        s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8(buf).unwrap()
    });
    let out = run(
        &[
            "ssh",
            "--hostname",
            "http://db.test",
            "--connect-to",
            &addr.to_string(),
            "--id",
            "ci.access",
            "--secret",
            "s3cret",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(9));
    let ours = recorder.join().unwrap();
    let (our_line, mut our_headers) = parse_head(&ours);
    let (stock_line, mut stock_headers) = parse_head(&fixture("cloudflared-service-token.http"));
    // Our two additions: the half-close and resume capabilities, ignored by stock
    // peers.
    let before = our_headers.len();
    our_headers.retain(|(n, v)| !((n == "tunnel-half-close" || n == "tunnel-resume") && v == "1"));
    assert_eq!(
        our_headers.len(),
        before - 2,
        "our handshake offers half-close and resuming:\n{ours}"
    );
    assert_eq!(our_line, stock_line);
    // The key is random per request and the User-Agent names the program.
    for h in [&mut our_headers, &mut stock_headers] {
        for (n, v) in h.iter_mut() {
            if n == "sec-websocket-key" {
                assert_eq!(v.len(), 24, "a 16-byte base64 key");
                *v = "KEY".into();
            }
            if n == "user-agent" {
                *v = "UA".into();
            }
        }
        h.sort();
    }
    assert_eq!(our_headers, stock_headers, "our handshake:\n{ours}");
}

/// Stock cloudflared ends a stream by closing its TLS session (close_notify) and the
/// socket, with no WebSocket close frame. That is a clean end, not a cut: the origin
/// must get every byte, then a FIN (a reset would drop what it had not read yet).
#[test]
fn edge_takes_cloudflared_close_notify_without_close_frame_as_a_clean_end() {
    const TOTAL: usize = 4 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // A slow reader: the edge still holds data when the client goes away.
        std::thread::sleep(Duration::from_millis(300));
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got += n,
                Err(e) => break Err(e.kind()),
            }
        };
        tx.send((got, end)).unwrap();
    });
    let edge = Edge::start_tls(
        &format!(
            "[[apps]]\nhostname = \"db.test\"\norigin = \"{origin}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}"
        ),
        &["db.test"],
    );
    let config = tunnel::client_config(Some(&edge.ca())).unwrap();
    let name = "db.test".try_into().unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(edge.addr).unwrap());
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tls.write_all(fixture("cloudflared-service-token.http").as_bytes())
        .unwrap();
    let head = read_head(&mut tls).expect("the edge's answer");
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    // 64 KiB binary frames, masked as a client must (RFC 6455 5.3).
    let mask = [9u8, 8, 7, 6];
    let payload: Vec<u8> = (0..64 * 1024)
        .map(|i| (i % 251) as u8 ^ mask[i % 4])
        .collect();
    for _ in 0..TOTAL / payload.len() {
        tls.write_all(&[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap();
        tls.write_all(&mask).unwrap();
        tls.write_all(&payload).unwrap();
    }
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    drop(tls);
    let (got, end) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        (got, end),
        (TOTAL, Ok(())),
        "bytes at the origin, and how it ended"
    );
}
