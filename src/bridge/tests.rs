//! [`run`] against tungstenite's independent framing, and [`run_resumable`] across cut
//! WebSockets.

use super::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role as TRole;

/// Our client framing on one end, tungstenite's server on the other: every test
/// is also an interoperability check against an independent implementation.
async fn ws_pair(buf: usize) -> (WebSocket<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = duplex(buf);
    let client = WebSocket::new(a, Role::Client, CLIENT_MAX_FRAME);
    let server = WebSocketStream::from_raw_socket(b, TRole::Server, None).await;
    (client, server)
}

#[tokio::test]
async fn bytes_flow_both_ways_and_eof_closes() {
    let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
    let (local, mut app) = duplex(64 * 1024);
    let pump = tokio::spawn(run(local, client_ws, Options::default()));
    app.write_all(b"hello").await.unwrap();
    let msg = server_ws.next().await.unwrap().unwrap();
    assert_eq!(msg, Message::Binary(Bytes::from_static(b"hello")));
    server_ws
        .send(Message::Binary(Bytes::from_static(b"world")))
        .await
        .unwrap();
    let mut got = [0u8; 5];
    app.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"world");
    app.shutdown().await.unwrap();
    // Without the half-close marker, local EOF is a close frame.
    assert!(matches!(
        server_ws.next().await,
        Some(Ok(Message::Close(_)))
    ));
    // Reading on sends tungstenite's close reply, which ends the pump.
    while server_ws.next().await.is_some() {}
    let stats = pump.await.unwrap().unwrap();
    assert_eq!(stats, Stats { up: 5, down: 5 });
}

#[tokio::test]
async fn half_close_marker_keeps_the_other_direction_open() {
    let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
    let (local, mut app) = duplex(64 * 1024);
    let opts = Options {
        peer_half_close: true,
        ..Options::default()
    };
    let pump = tokio::spawn(run(local, client_ws, opts));
    app.write_all(b"request").await.unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(
        server_ws.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(b"request"))
    );
    assert_eq!(
        server_ws.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::new())
    );
    // The reply still flows after our EOF.
    server_ws
        .send(Message::Binary(Bytes::from_static(b"reply")))
        .await
        .unwrap();
    server_ws.close(None).await.unwrap();
    let mut got = Vec::new();
    app.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"reply");
    assert_eq!(pump.await.unwrap().unwrap(), Stats { up: 7, down: 5 });
}

/// Our edge framing against a stock (tungstenite) client that sends two messages,
/// then `extra` raw bytes, then ends its stream without a close frame. Returns the
/// pump's result and what reached the origin.
async fn end_without_close_frame(
    clean_eof: bool,
    extra: &[u8],
) -> (Result<Stats, BridgeError>, Vec<u8>) {
    let (a, b) = duplex(64 * 1024);
    let ours = WebSocket::new(a, Role::Server, EDGE_MAX_FRAME).with_clean_eof(clean_eof);
    let (local, mut origin) = duplex(64 * 1024);
    let pump = tokio::spawn(run(local, ours, Options::default()));
    let mut peer = WebSocketStream::from_raw_socket(b, TRole::Client, None).await;
    for part in [&b"first "[..], b"second"] {
        peer.send(Message::Binary(Bytes::copy_from_slice(part)))
            .await
            .unwrap();
    }
    let mut raw = peer.into_inner();
    raw.write_all(extra).await.unwrap();
    drop(raw);
    let mut got = Vec::new();
    let _ = origin.read_to_end(&mut got).await;
    (pump.await.unwrap(), got)
}

#[tokio::test]
async fn an_authenticated_end_between_messages_is_a_clean_close() {
    // Stock cloudflared: close_notify, then the socket closes; no close frame.
    let (result, got) = end_without_close_frame(true, &[]).await;
    assert_eq!(got, b"first second");
    assert_eq!(result.unwrap(), Stats { up: 0, down: 12 });
}

#[tokio::test]
async fn an_end_without_close_frame_is_a_cut_unless_authenticated_and_between_messages() {
    let (result, _) = end_without_close_frame(false, &[]).await;
    assert!(
        matches!(result, Err(BridgeError::Truncated(false))),
        "{result:?}"
    );
    // A frame header promising 5 masked bytes, then only 2 of them.
    let partial = [0x82, 0x85, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2];
    let (result, got) = end_without_close_frame(true, &partial).await;
    assert!(
        matches!(result, Err(BridgeError::Truncated(true))),
        "{result:?}"
    );
    assert!(got.starts_with(b"first second"), "{got:?}");
    // Half a header is a cut too.
    let (result, _) = end_without_close_frame(true, &[0x82]).await;
    assert!(
        matches!(result, Err(BridgeError::Truncated(false))),
        "{result:?}"
    );
}

#[tokio::test]
async fn empty_message_from_peer_shuts_local_write_side() {
    let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
    let (local, mut app) = duplex(64 * 1024);
    let pump = tokio::spawn(run(local, client_ws, Options::default()));
    server_ws
        .send(Message::Binary(Bytes::from_static(b"x")))
        .await
        .unwrap();
    server_ws.send(Message::Binary(Bytes::new())).await.unwrap();
    let mut got = Vec::new();
    app.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"x");
    // The up direction is still open.
    app.write_all(b"late").await.unwrap();
    assert_eq!(
        server_ws.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(b"late"))
    );
    app.shutdown().await.unwrap();
    assert!(matches!(
        server_ws.next().await,
        Some(Ok(Message::Close(_)))
    ));
    while server_ws.next().await.is_some() {}
    assert_eq!(pump.await.unwrap().unwrap(), Stats { up: 4, down: 1 });
}

#[tokio::test]
async fn text_frames_are_refused() {
    let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
    let (local, _app) = duplex(64 * 1024);
    let pump = tokio::spawn(run(local, client_ws, Options::default()));
    server_ws.send(Message::text("nope")).await.unwrap();
    assert!(matches!(pump.await.unwrap(), Err(BridgeError::TextFrame)));
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_detected_by_ping() {
    let (client_ws, server_ws) = ws_pair(64 * 1024).await;
    let (local, _app) = duplex(64 * 1024);
    let opts = Options {
        keepalive: Keepalive {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        },
        ..Options::default()
    };
    // The server never reads, so it never answers the ping.
    let _hold = server_ws;
    let res = run(local, client_ws, opts).await;
    assert!(matches!(res, Err(BridgeError::Dead(_))), "{res:?}");
}

const SHORT: Keepalive = Keepalive {
    interval: Duration::from_secs(1),
    timeout: Duration::from_secs(1),
};

#[tokio::test(start_paused = true)]
async fn a_local_reader_paused_for_many_keepalive_periods_is_not_a_dead_peer() {
    let (client_ws, server_ws) = ws_pair(64 * 1024).await;
    let (local, mut app) = duplex(64 * 1024);
    let opts = Options {
        keepalive: SHORT,
        ..Options::default()
    };
    let pump = tokio::spawn(run(local, client_ws, opts));
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let (mut tx, mut rx) = server_ws.split();
    // The peer keeps reading (it sees our pings) while its writes wait for us.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        tx.send(Message::Binary(Bytes::from(sent))).await.unwrap();
        tx.close().await.unwrap();
    });
    // Virtual time: a hundred keepalive periods without reading.
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert!(!pump.is_finished(), "{:?}", pump.await);
    let mut got = Vec::new();
    app.read_to_end(&mut got).await.unwrap();
    assert!(got == data, "bytes differ");
    writer.await.unwrap();
    app.shutdown().await.unwrap();
    pump.await.unwrap().unwrap();
    reader.abort();
}

#[tokio::test(start_paused = true)]
async fn pongs_are_seen_after_the_peer_ended_its_stream() {
    let (client_ws, mut server_ws) = ws_pair(64 * 1024).await;
    let (local, mut app) = duplex(64 * 1024);
    let opts = Options {
        keepalive: SHORT,
        peer_half_close: true,
        ..Options::default()
    };
    let pump = tokio::spawn(run(local, client_ws, opts));
    server_ws.send(Message::Binary(Bytes::new())).await.unwrap();
    // The peer reads on (answering our pings) while we upload for a long time.
    let peer = tokio::spawn(async move {
        let mut up = 0;
        while let Some(Ok(m)) = server_ws.next().await {
            if let Message::Binary(b) = m {
                up += b.len();
            }
        }
        up
    });
    let mut got = Vec::new();
    app.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty());
    for _ in 0..40 {
        app.write_all(b"tick").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    app.shutdown().await.unwrap();
    let stats = pump.await.unwrap().unwrap();
    assert_eq!(stats.up, 160);
    assert_eq!(peer.await.unwrap(), 160);
}

#[tokio::test]
async fn large_transfer_keeps_order_under_backpressure() {
    // A tiny pipe forces every write to wait for the reader.
    let (a, b) = duplex(4 * 1024);
    let client_ws = WebSocket::new(a, Role::Client, CLIENT_MAX_FRAME);
    let server_ws = WebSocket::new(b, Role::Server, EDGE_MAX_FRAME);
    let (local_c, mut app) = duplex(4 * 1024);
    let (local_s, mut origin) = duplex(4 * 1024);
    let opts = Options {
        peer_half_close: true,
        ..Options::default()
    };
    let c = tokio::spawn(run(local_c, client_ws, opts));
    let s = tokio::spawn(run(local_s, server_ws, Options::default()));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        app.write_all(&sent).await.unwrap();
        app.shutdown().await.unwrap();
        let mut back = Vec::new();
        app.read_to_end(&mut back).await.unwrap();
        back
    });
    let mut got = Vec::new();
    origin.read_to_end(&mut got).await.unwrap();
    assert!(got == data, "origin got different bytes");
    origin.write_all(&got).await.unwrap();
    origin.shutdown().await.unwrap();
    let back = writer.await.unwrap();
    assert!(back == data, "echo differs");
    c.await.unwrap().unwrap();
    s.await.unwrap().unwrap();
}

mod resume;
