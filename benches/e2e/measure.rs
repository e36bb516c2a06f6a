//! The measurements, each over one path (an address that leads to the origin):
//! throughput each way, aggregate throughput of parallel streams, round-trip
//! latency percentiles, connection setup, and idle connections held open.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::setup::CHUNK;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// Upload `bytes` on one stream; Gbit/s until the origin confirmed them all.
pub fn upload(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect(addr);
    let buf = vec![7u8; CHUNK];
    let t = Instant::now();
    s.write_all(b"U").unwrap();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(
        u64::from_le_bytes(ack),
        bytes,
        "origin received a different count"
    );
    gbits(bytes, t.elapsed())
}

/// Download `bytes` on one stream; Gbit/s.
pub fn download(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect(addr);
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    s.write_all(b"D").unwrap();
    s.write_all(&bytes.to_le_bytes()).unwrap();
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    assert_eq!(got, bytes, "received a different count");
    gbits(bytes, t.elapsed())
}

/// `streams` parallel uploads sharing `bytes`; aggregate Gbit/s.
pub fn parallel_upload(addr: SocketAddr, streams: usize, bytes: u64) -> f64 {
    let each = bytes / streams as u64;
    let t = Instant::now();
    let workers: Vec<_> = (0..streams)
        .map(|_| std::thread::spawn(move || upload(addr, each)))
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    gbits(each * streams as u64, t.elapsed())
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// `n` echo round trips of `size` bytes on one connection.
pub fn latency(addr: SocketAddr, size: usize, n: usize) -> Percentiles {
    let mut s = connect(addr);
    s.write_all(b"E").unwrap();
    let msg = vec![1u8; size];
    let mut back = vec![0u8; size];
    // Warm up the path before measuring.
    for _ in 0..100 {
        s.write_all(&msg).unwrap();
        s.read_exact(&mut back).unwrap();
    }
    let mut us: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            s.write_all(&msg).unwrap();
            s.read_exact(&mut back).unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    percentiles(&mut us)
}

/// Connection setup: connect to first echoed byte, `n` times in a row; also the
/// sustained rate of new connections per second.
pub fn setup(addr: SocketAddr, n: usize) -> (Percentiles, f64) {
    let start = Instant::now();
    let mut us: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut s = connect(addr);
            s.write_all(b"Ex").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (percentiles(&mut us), rate)
}

/// Open `n` connections, prove each with one echo, and keep them open.
pub fn idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"Ex").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s
        })
        .collect()
}

fn percentiles(v: &mut [f64]) -> Percentiles {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
    }
}

fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}
