//! Micro-benchmarks of the data path, in process and without sockets: masking,
//! frame headers, and a client pump bridged to an edge pump over in-memory pipes;
//! plus the edge's RS256 signing and verification (`cargo bench --bench micro -- rs256`).
//!
//! `cargo bench --bench micro` measures; `cargo test --benches` runs each once
//! (with a smaller transfer, as unoptimised code is slow).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tunnel::bridge::{self, Options, Role, WebSocket};
use tunnel::frame::{self, MAX_HEADER, OpCode};

/// Masking (the client's cost per byte sent, the edge's per byte received).
fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_mask");
    for (name, len) in [("1KiB", 1024), ("256KiB", 256 * 1024)] {
        let mut buf = vec![0x5au8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter(|| frame::apply_mask(black_box(&mut buf), black_box([1, 2, 3, 4]), 0))
        });
    }
    group.finish();
}

/// One header written and parsed back, as the two ends do per frame.
fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("header");
    for len in [100usize, 16 * 1024, 256 * 1024] {
        group.bench_with_input(BenchmarkId::new("write+parse", len), &len, |b, &len| {
            let mut out = [0u8; MAX_HEADER];
            b.iter(|| {
                let n = frame::header_len(len, true);
                frame::write_header(&mut out[..n], OpCode::Binary, Some([9, 8, 7, 6]), len);
                frame::parse_header(black_box(&out[..n]), Role::Server, u64::MAX)
                    .expect("a valid header")
                    .expect("a whole header")
            })
        });
    }
    group.finish();
}

/// Bytes pushed one way through a client pump and an edge pump, each with its
/// local side, all on one current-thread runtime.
fn pumps(c: &mut Criterion) {
    // Criterion runs each bench once in test mode, unoptimised: keep that short.
    let bench = std::env::args().any(|a| a == "--bench");
    let total: usize = if bench { 64 << 20 } else { 4 << 20 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("bridge");
    group.throughput(Throughput::Bytes(total as u64));
    group.sample_size(10);
    group.bench_function(format!("client-to-edge/{}MiB", total >> 20), |b| {
        b.iter(|| rt.block_on(one_way(total)))
    });
    group.finish();
}

/// App -> client pump -> WebSocket -> edge pump -> origin: `total` bytes, then EOF
/// and the close handshake.
async fn one_way(total: usize) {
    const PIPE: usize = 256 * 1024;
    let (client_io, edge_io) = duplex(PIPE);
    let (client_local, mut app) = duplex(PIPE);
    let (edge_local, mut origin) = duplex(PIPE);
    let client_ws = WebSocket::new(client_io, Role::Client, bridge::CLIENT_MAX_FRAME);
    let edge_ws = WebSocket::new(edge_io, Role::Server, bridge::EDGE_MAX_FRAME);
    let opts = Options {
        peer_half_close: true,
        ..Options::default()
    };
    let send = async {
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            app.write_all(&chunk[..n]).await.expect("app write");
            left -= n;
        }
        app.shutdown().await.expect("app shutdown");
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.expect("app read");
    };
    let receive = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        loop {
            match origin.read(&mut buf).await.expect("origin read") {
                0 => break,
                n => got += n,
            }
        }
        assert_eq!(got, total);
        origin.shutdown().await.expect("origin shutdown");
    };
    let (c, e, (), ()) = tokio::join!(
        bridge::run(client_local, client_ws, opts),
        bridge::run(edge_local, edge_ws, opts),
        send,
        receive
    );
    assert_eq!(c.expect("client pump").up, total as u64);
    assert_eq!(e.expect("edge pump").down, total as u64);
}

/// The edge's RS256 JWT signing and verification (RSA-2048), as every login,
/// metadata answer and handshake with a token pays them.
fn rs256(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let issuer =
        tunnel::Issuer::load_or_create(&dir.path().join("k.pem"), "auth.bench.test").unwrap();
    let ttl = std::time::Duration::from_secs(3600);
    let token = issuer.mint("aud", "alice@bench.test", ttl);
    let mut group = c.benchmark_group("rs256");
    group.bench_function("sign", |b| {
        b.iter(|| issuer.mint(black_box("aud"), "alice@bench.test", ttl))
    });
    group.bench_function("verify", |b| {
        b.iter(|| issuer.verify(black_box(&token), "aud").unwrap())
    });
    group.finish();
}

// The macro's `pub fn benches` has no doc comment of its own.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::mask,
        super::header,
        super::pumps,
        super::rs256
    );
}
criterion_main!(group::benches);
