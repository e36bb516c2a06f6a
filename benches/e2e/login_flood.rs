//! Login flood: how long a WebSocket handshake (service token, straight to the
//! edge, plain `ws://`) takes while `N` clients hammer the login page with bogus
//! passwords. Password hashing is deliberately slow (argon2); if it ran on the
//! edge's async workers, every tunnel would wait behind it.
//!
//! `BENCH_ONLY=login_flood cargo bench --bench e2e`; `BENCH_FLOOD` sets `N`
//! (default 40), `BENCH_HANDSHAKES` the handshakes measured per phase (default 200).
//! Writes `target/bench/login_flood.json`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{Percentiles, percentiles};
use crate::setup::{self, TOKEN};

const APP: &str = "bench.test";

/// Start an edge with one user and one service token, measure handshake latency
/// idle and under a flood of `flood` concurrent bogus logins.
pub fn section(bin: &Path, flood: usize, handshakes: usize) -> Value {
    let origin = setup::origin();
    let dir = tempfile::tempdir().unwrap();
    let hash = hash_password(bin, "correct horse");
    let config = dir.path().join("edge.toml");
    // The flood is meant to reach the password check: the edge's login rate
    // limits (which would answer most of it 429 at once) are raised out of reach.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nauth_domain = \"auth.bench.test\"\n{limits}\
             [[apps]]\nhostname = \"{APP}\"\norigin = \"{origin}\"\n\
             allow = [\"service:bench\", \"alice@bench.test\"]\n\
             [[service_tokens]]\nname = \"bench\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
             [[users]]\nemail = \"alice@bench.test\"\npassword_hash = \"{hash}\"\n",
            TOKEN.0,
            TOKEN.1,
            limits = LIMITS_OFF,
        ),
    )
    .unwrap();
    let mut cmd = setup::child_command(bin);
    cmd.arg("edge")
        .arg("--config")
        .arg(&config)
        .args(["--log-level", "info"])
        .stdin(Stdio::null());
    let (edge, addr) = setup::spawn_cmd(cmd).unwrap();
    // Warm up.
    for _ in 0..20 {
        handshake(addr);
    }
    let idle = measure(addr, handshakes);
    let stop = Arc::new(AtomicBool::new(false));
    let posts = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..flood)
        .map(|_| {
            let (stop, posts) = (stop.clone(), posts.clone());
            std::thread::spawn(move || bogus_logins(addr, &stop, &posts))
        })
        .collect();
    // Let the flood build up before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let before = posts.load(Ordering::Relaxed);
    let flooded = measure(addr, handshakes);
    let rate = (posts.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    let rss = setup::rss_kib(edge.child.id());
    drop(edge);
    json!({
        "flood": flood,
        "handshakes": handshakes,
        "idle_p50_us": idle.p50,
        "idle_p99_us": idle.p99,
        "flood_p50_us": flooded.p50,
        "flood_p99_us": flooded.p99,
        "flood_over_idle_p50": flooded.p50 / idle.p50,
        "bogus_logins_per_sec": rate,
        "edge_rss_kib_after": rss,
    })
}

/// Config lines raising the login limits out of the flood's reach (an edge
/// from before `[login_limits]` existed refuses the table: measure those with the
/// lines removed).
const LIMITS_OFF: &str = "[login_limits]\naddress_attempts = 1000000\naddress_window = \"10ms\"\n\
                          account_attempts = 1000000\naccount_window = \"10ms\"\n";

/// Print the section.
pub fn print(v: &Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nlogin flood: handshake latency, {} concurrent bogus logins",
        v["flood"]
    );
    println!("{:<30} {:>12} {:>12}", "figure", "idle", "flood");
    println!(
        "{:<30} {:>12.0} {:>12.0}",
        "handshake p50 (us)",
        f("idle_p50_us"),
        f("flood_p50_us")
    );
    println!(
        "{:<30} {:>12.0} {:>12.0}",
        "handshake p99 (us)",
        f("idle_p99_us"),
        f("flood_p99_us")
    );
    println!(
        "flood/idle p50 {:.2}; {:.0} bogus logins/s answered; edge RSS {} KiB",
        f("flood_over_idle_p50"),
        f("bogus_logins_per_sec"),
        v["edge_rss_kib_after"]
    );
}

fn measure(addr: SocketAddr, n: usize) -> Percentiles {
    let mut us: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            handshake(addr);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    percentiles(&mut us)
}

/// One WebSocket handshake with the service token, up to the `101`.
fn handshake(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {APP}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Cf-Access-Client-Id: {}\r\nCf-Access-Client-Secret: {}\r\n\r\n",
        TOKEN.0, TOKEN.1
    );
    s.write_all(req.as_bytes()).unwrap();
    let head = read_head(&mut s);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "handshake refused: {head}"
    );
}

/// Bogus logins in a loop, each on a fresh connection, until `stop`.
fn bogus_logins(addr: SocketAddr, stop: &AtomicBool, posts: &AtomicU64) {
    let id = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let aud = tunnel::derive_aud(APP);
    let path = format!("/cdn-cgi/access/cli?token={id}&aud={aud}&redirect_url=%2F");
    while !stop.load(Ordering::Relaxed) {
        let page = request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: auth.bench.test\r\nConnection: close\r\n\r\n"),
        );
        let Some(csrf) = between(&page, "tunnel_csrf=", ";") else {
            continue;
        };
        let body = format!("csrf={csrf}&email=alice%40bench.test&password=wrong&confirm=on");
        request(
            addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: auth.bench.test\r\nConnection: close\r\n\
                 Cookie: tunnel_csrf={csrf}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        posts.fetch_add(1, Ordering::Relaxed);
    }
}

fn request(addr: SocketAddr, req: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read_exact(&mut byte).is_err() {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = text.find(start)? + start.len();
    let j = text[i..].find(end)? + i;
    Some(&text[i..j])
}

fn hash_password(bin: &Path, password: &str) -> String {
    let mut child = setup::child_command(bin)
        .args(["edge", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hash-password failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
