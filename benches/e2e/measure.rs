//! The measurements, each over one path (an address that leads to the origin):
//! throughput each way, aggregate throughput of parallel streams, round-trip
//! latency percentiles, connection setup, idle connections held open, and whether
//! a half-close gets through.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::setup::CHUNK;

/// Connect with no delay and generous (120 s) timeouts, so a stuck path fails.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(30)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// Upload `bytes` on one stream; Gbit/s until the origin confirmed them all. The
/// size goes first (mode `S`), so this needs no half-close: see [`half_close`].
pub fn upload(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect(addr);
    let buf = vec![7u8; CHUNK];
    let t = Instant::now();
    s.write_all(b"S").unwrap();
    s.write_all(&bytes.to_le_bytes()).unwrap();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
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

/// Upload on one stream for `d`, then half-close (mode `U`: the origin counts to
/// EOF); Gbit/s until the origin confirmed every byte, and how many bytes that was.
/// For paths whose speed is not known beforehand (the WAN link).
pub fn upload_for(addr: SocketAddr, d: Duration) -> (f64, u64) {
    let mut s = connect(addr);
    let buf = vec![7u8; CHUNK];
    let t = Instant::now();
    s.write_all(b"U").unwrap();
    let mut sent = 0u64;
    while t.elapsed() < d {
        s.write_all(&buf).unwrap();
        sent += CHUNK as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(
        u64::from_le_bytes(ack),
        sent,
        "origin received a different count"
    );
    (gbits(sent, t.elapsed()), sent)
}

/// Download on one stream for `d` (the origin would send for ever), then close;
/// Gbit/s and the bytes received.
pub fn download_for(addr: SocketAddr, d: Duration) -> (f64, u64) {
    let mut s = connect(addr);
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    s.write_all(b"D").unwrap();
    s.write_all(&u64::MAX.to_le_bytes()).unwrap();
    let mut got = 0u64;
    while t.elapsed() < d {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "the path closed after {got} bytes");
        got += k as u64;
    }
    (gbits(got, t.elapsed()), got)
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

/// Whether a half-close crosses the path: send 4 KiB, shut down the write side,
/// and expect the origin's count (mode `U` reads to EOF) within 10 s.
pub fn half_close(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return false;
    };
    let mut ack = [0u8; 8];
    s.set_read_timeout(Some(Duration::from_secs(10))).is_ok()
        && s.write_all(b"U").is_ok()
        && s.write_all(&[5u8; 4096]).is_ok()
        && s.shutdown(Shutdown::Write).is_ok()
        && s.read_exact(&mut ack).is_ok()
        && u64::from_le_bytes(ack) == 4096
}

/// One echo of one byte on `s` within 10 s.
fn echo_once(s: &mut TcpStream, byte: u8) -> bool {
    let mut b = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(10))).is_ok()
        && s.write_all(&[byte]).is_ok()
        && s.read_exact(&mut b).is_ok()
        && b[0] == byte
}

/// Open `n` connections (from 8 threads, so slow setups do not take minutes), prove
/// each with one echo, and keep them open; also how many could not be opened or
/// did not echo.
pub fn idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let threads = 8.min(n.max(1));
    let parts: Vec<(Vec<TcpStream>, usize)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let share = n / threads + usize::from(i < n % threads);
                scope.spawn(move || open_idle(addr, share))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    parts
        .into_iter()
        .fold((Vec::with_capacity(n), 0), |(mut held, failed), (h, f)| {
            held.extend(h);
            (held, failed + f)
        })
}

/// Open `n` connections one after another, each proven with one echo.
fn open_idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let ok = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .ok()
            .and_then(|mut s| {
                let _ = s.set_nodelay(true);
                (s.write_all(b"E").is_ok() && echo_once(&mut s, b'x')).then_some(s)
            });
        match ok {
            Some(s) => held.push(s),
            None => failed += 1,
        }
    }
    (held, failed)
}

/// Prove every held connection still echoes one byte; how many did not.
pub fn idle_check(held: &mut [TcpStream]) -> usize {
    held.iter_mut()
        .map(|s| echo_once(s, b'y'))
        .filter(|ok| !ok)
        .count()
}

/// p50, p99 and p99.9 of `v` (sorted in place).
pub fn percentiles(v: &mut [f64]) -> Percentiles {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// `bytes` in `d` as Gbit/s.
fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}
