//! Resumable streams across cut WebSockets, and what their acknowledgements cost.

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

/// One side's local stream, WebSocket stream, session and the peer's delivered count.
type Start<S> = (DuplexStream, S, Session, u64);

/// A client side and an edge side, each running in its own task.
fn both_sides<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    (local_c, c_io, sc, c_peer_has): Start<S>,
    (local_s, s_io, ss, s_peer_has): Start<S>,
) -> (tokio::task::JoinHandle<Side>, tokio::task::JoinHandle<Side>) {
    let c = WebSocket::new(c_io, Role::Client, CLIENT_MAX_FRAME);
    let s = WebSocket::new(s_io, Role::Server, EDGE_MAX_FRAME);
    (
        tokio::spawn(side(local_c, c, sc, c_peer_has)),
        tokio::spawn(side(local_s, s, ss, s_peer_has)),
    )
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
    let (c, s) = both_sides(
        (local_c, c_io, Session::new(256 * 1024), 0),
        (local_s, s_io, Session::new(256 * 1024), 0),
    );
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
    let (c, s) = both_sides((local_c, c_io, sc, s_has), (local_s, s_io, ss, c_has));
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
    let (c, s) = both_sides(
        (local_c, c_io, Session::new(256 * 1024), 0),
        (local_s, s_io, Session::new(256 * 1024), 0),
    );
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
    let (c, s) = both_sides(
        (local_c, c_io, Session::new(256 * 1024), 0),
        (local_s, s_io, Session::new(256 * 1024), 0),
    );
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
