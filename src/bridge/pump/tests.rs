//! The pump's own state: the close wait and the idle release, driven directly.

use super::*;
use crate::bridge::{CLIENT_MAX_FRAME, run};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::future::poll_fn;
use std::pin::pin;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role as TRole;

#[tokio::test(start_paused = true)]
async fn unanswered_close_ends_after_close_wait() {
    let (a, b) = duplex(64 * 1024);
    let client_ws = WebSocket::new(a, Role::Client, CLIENT_MAX_FRAME);
    let mut server_ws = WebSocketStream::from_raw_socket(b, TRole::Server, None).await;
    let (local, mut app) = duplex(1024);
    let pump = tokio::spawn(run(local, client_ws, Options::default()));
    // Virtual time (paused clock): deterministic, not a wall-clock assertion.
    let started = Instant::now();
    app.shutdown().await.unwrap();
    // The peer reads our close but never answers it.
    assert!(matches!(
        server_ws.next().await,
        Some(Ok(Message::Close(_)))
    ));
    assert_eq!(pump.await.unwrap().unwrap(), Stats::default());
    let waited = started.elapsed();
    assert!(
        waited >= CLOSE_WAIT && waited < CLOSE_WAIT * 2,
        "{waited:?}"
    );
    drop(server_ws);
}

/// Poll `pump` alongside `f`, on one task, until `f` completes.
async fn alongside<F: Future>(pump: &mut Pump<'_, DuplexStream, DuplexStream>, f: F) -> F::Output {
    let mut f = pin!(f);
    poll_fn(|cx| {
        if let Poll::Ready(out) = f.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if let Poll::Ready(r) = pump.poll(cx) {
            panic!("the pump ended early: {r:?}");
        }
        Poll::Pending
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn idle_connections_give_buffers_back_and_wake_up_intact() {
    let (a, b) = duplex(1 << 20);
    let client_ws = WebSocket::new(a, Role::Client, CLIENT_MAX_FRAME);
    let mut server_ws = WebSocketStream::from_raw_socket(b, TRole::Server, None).await;
    let (local, mut app) = duplex(1 << 20);
    let mut pump = Pump::new(local, client_ws, Options::default(), None);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for round in 0..3 {
        let exchange = async {
            app.write_all(&data).await.unwrap();
            let mut got = Vec::new();
            while got.len() < data.len() {
                match server_ws.next().await.unwrap().unwrap() {
                    Message::Binary(b) => got.extend_from_slice(&b),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(got == data, "round {round}: up bytes differ");
            server_ws
                .send(Message::Binary(Bytes::from(data.clone())))
                .await
                .unwrap();
            let mut back = vec![0u8; data.len()];
            app.read_exact(&mut back).await.unwrap();
            assert!(back == data, "round {round}: down bytes differ");
        };
        alongside(&mut pump, exchange).await;
        assert!(!pump.up_buf.idle && !pump.rx_buf.idle, "round {round}");
        // Virtual time: long enough for both buffers to be released.
        alongside(&mut pump, tokio::time::sleep(IDLE_RELEASE * 3)).await;
        assert!(pump.up_buf.idle && pump.rx_buf.idle, "round {round}");
    }
    app.shutdown().await.unwrap();
    let peer = async { while server_ws.next().await.is_some() {} };
    let (stats, ()) = tokio::join!(poll_fn(|cx| pump.poll(cx)), peer);
    let stats = stats.unwrap();
    assert_eq!(stats.up, 3 * data.len() as u64);
    assert_eq!(stats.down, 3 * data.len() as u64);
}
