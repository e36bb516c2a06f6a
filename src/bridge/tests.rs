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

mod resume {
    use super::*;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    type Side = (DuplexStream, Session, Result<Stats, BridgeError>);

    async fn side<S: AsyncRead + AsyncWrite + Unpin>(
        mut local: DuplexStream,
        ws: WebSocket<S>,
        mut session: Session,
        peer_has: u64,
    ) -> Side {
        let r = run_resumable(&mut local, ws, Options::default(), &mut session, peer_has).await;
        (local, session, r)
    }

    /// The application: writes `sent` and its EOF, and reads the echo to its end.
    fn app_round_trip(app: DuplexStream, sent: Vec<u8>) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(app);
            let writer = async {
                w.write_all(&sent).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let reader = r.read_to_end(&mut back);
            let (_, got) = tokio::join!(writer, reader);
            got.unwrap();
            back
        })
    }

    /// An echoing origin: returns what it received.
    fn echo_origin(mut origin: DuplexStream) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = origin.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                origin.write_all(&buf[..n]).await.unwrap();
            }
            origin.shutdown().await.unwrap();
            got
        })
    }

    /// A relay between two WebSocket ends that is cut once `limit` bytes went up.
    fn cutting_relay(
        relay_c: DuplexStream,
        relay_s: DuplexStream,
        limit: usize,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (mut cr, mut cw) = tokio::io::split(relay_c);
            let (mut sr, mut sw) = tokio::io::split(relay_s);
            let up = async {
                let mut buf = vec![0u8; 16 * 1024];
                let mut passed = 0;
                while passed < limit {
                    let n = cr.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    sw.write_all(&buf[..n]).await?;
                    passed += n;
                }
                Ok::<_, io::Error>(())
            };
            let down = tokio::io::copy(&mut sr, &mut cw);
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        })
    }

    /// Two resumable pumps whose WebSocket is cut mid-transfer (a relay between them
    /// is dropped) and joined again by a new one: both directions arrive whole.
    #[tokio::test]
    async fn a_cut_websocket_is_resumed_and_no_byte_is_lost_or_repeated() {
        let (local_c, app) = duplex(64 * 1024);
        let (local_s, origin) = duplex(64 * 1024);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
        let app_task = app_round_trip(app, data.clone());
        let origin_task = echo_origin(origin);
        // First WebSocket: through a relay that is cut once 1 MiB went up.
        let (c_io, relay_c) = duplex(16 * 1024);
        let (s_io, relay_s) = duplex(16 * 1024);
        let relay = cutting_relay(relay_c, relay_s, 1 << 20);
        let c = tokio::spawn(side(
            local_c,
            WebSocket::new(c_io, Role::Client, CLIENT_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        let s = tokio::spawn(side(
            local_s,
            WebSocket::new(s_io, Role::Server, EDGE_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        relay.await.unwrap();
        let (local_c, sc, rc) = c.await.unwrap();
        let (local_s, ss, rs) = s.await.unwrap();
        assert!(rc.as_ref().is_err_and(|e| e.is_link_failure()), "{rc:?}");
        assert!(rs.as_ref().is_err_and(|e| e.is_link_failure()), "{rs:?}");
        // Second WebSocket: each side learns what the other delivered.
        let (c_io, s_io) = duplex(16 * 1024);
        let (c_has, s_has) = (sc.delivered(), ss.delivered());
        assert!(
            c_has < data.len() as u64 && s_has < data.len() as u64,
            "cut too late"
        );
        let c = tokio::spawn(side(
            local_c,
            WebSocket::new(c_io, Role::Client, CLIENT_MAX_FRAME),
            sc,
            s_has,
        ));
        let s = tokio::spawn(side(
            local_s,
            WebSocket::new(s_io, Role::Server, EDGE_MAX_FRAME),
            ss,
            c_has,
        ));
        let (_, _, rc) = c.await.unwrap();
        let (_, _, rs) = s.await.unwrap();
        rc.unwrap();
        rs.unwrap();
        assert!(origin_task.await.unwrap() == data, "origin got other bytes");
        assert!(app_task.await.unwrap() == data, "echo differs");
    }

    /// A stream that counts the writes reaching it.
    struct CountWrites {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountWrites {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountWrites {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Request and reply, one at a time (a database session): each side's
    /// acknowledgement rides in front of its next data frame, so a message costs one
    /// write per side, as on a stream that is not resumable.
    #[tokio::test]
    async fn acknowledgements_ride_along_replies_and_cost_no_write() {
        const ROUNDS: usize = 50;
        let (local_c, mut app) = duplex(64 * 1024);
        let (local_s, origin) = duplex(64 * 1024);
        let origin_task = echo_origin(origin);
        let (c_io, s_io) = duplex(64 * 1024);
        let (c_writes, s_writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let c_io = CountWrites {
            inner: c_io,
            writes: c_writes.clone(),
        };
        let s_io = CountWrites {
            inner: s_io,
            writes: s_writes.clone(),
        };
        let c = tokio::spawn(side(
            local_c,
            WebSocket::new(c_io, Role::Client, CLIENT_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        let s = tokio::spawn(side(
            local_s,
            WebSocket::new(s_io, Role::Server, EDGE_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        let mut reply = [0u8; 100];
        for round in 0..ROUNDS {
            let query = [round as u8; 100];
            app.write_all(&query).await.unwrap();
            app.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply, query, "round {round}");
        }
        let (c_during, s_during) = (
            c_writes.load(Ordering::Relaxed),
            s_writes.load(Ordering::Relaxed),
        );
        app.shutdown().await.unwrap();
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let (_, sc, rc) = c.await.unwrap();
        let (_, ss, rs) = s.await.unwrap();
        rc.unwrap();
        rs.unwrap();
        assert!(
            sc.complete() && ss.complete(),
            "the end acknowledged everything: {sc:?} {ss:?}"
        );
        assert_eq!(origin_task.await.unwrap().len(), ROUNDS * 100);
        // One write per message; a few more only if the idle timer fired meanwhile.
        // An acknowledgement written on its own would double both.
        let most = ROUNDS + ROUNDS / 5;
        assert!(
            c_during <= most,
            "client wrote {c_during} times for {ROUNDS} queries"
        );
        assert!(
            s_during <= most,
            "edge wrote {s_during} times for {ROUNDS} replies"
        );
    }

    /// Data that only flows one way has nothing to carry its acknowledgement: the
    /// idle timer sends it, so the sender's replay buffer empties.
    #[tokio::test(start_paused = true)]
    async fn an_acknowledgement_nothing_carries_is_sent_once_the_stream_is_quiet() {
        let (local_c, mut app) = duplex(64 * 1024);
        let (local_s, mut origin) = duplex(64 * 1024);
        let (c_io, relay_c) = duplex(64 * 1024);
        let (s_io, relay_s) = duplex(64 * 1024);
        let (cut, cut_rx) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            let (mut cr, mut cw) = tokio::io::split(relay_c);
            let (mut sr, mut sw) = tokio::io::split(relay_s);
            tokio::select! {
                _ = tokio::io::copy(&mut cr, &mut sw) => {}
                _ = tokio::io::copy(&mut sr, &mut cw) => {}
                _ = cut_rx => {}
            }
        });
        let c = tokio::spawn(side(
            local_c,
            WebSocket::new(c_io, Role::Client, CLIENT_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        let s = tokio::spawn(side(
            local_s,
            WebSocket::new(s_io, Role::Server, EDGE_MAX_FRAME),
            Session::new(256 * 1024),
            0,
        ));
        origin.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        app.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(IDLE_RELEASE * 3).await;
        cut.send(()).unwrap();
        relay.await.unwrap();
        let (_, sc, rc) = c.await.unwrap();
        let (_, ss, rs) = s.await.unwrap();
        assert!(rc.is_err() && rs.is_err(), "the WebSocket was cut");
        assert_eq!(sc.delivered(), 5);
        assert_eq!(
            ss.buffered(),
            0,
            "the client acknowledged what it delivered"
        );
    }
}
