//! Recovery time of a resumable stream: one stream through `tunnel tcp` and
//! `tunnel edge` (`wss://`, loopback) moves a steady trickle (a 1-byte echo every
//! 10 ms), then is cut, `rounds` times each way:
//!
//! - `kill_ms`: its WebSocket is killed (`ss -K` on the client's socket to the
//!   edge, so both ends see a reset); the time from the kill to the echo of a byte
//!   sent right after it: noticing the reset, redialing, the TLS and WebSocket
//!   handshakes with a resume, and the replay.
//! - `black_hole_ms`: every packet to and from the edge's port is dropped (`nft`)
//!   while a byte is pending; once the client (keepalive 500 ms, 1 s) has noticed
//!   and is redialing into the hole, it is lifted 0 to 10 s later (a different point
//!   of the redial loop each round); the time from lifting it to that byte's echo
//!   (README's target: under 1 s plus one RTT).
//!
//! `BENCH_ONLY=resume cargo bench --bench e2e` (`BENCH_RESUME_ROUNDS`, default 10)
//! writes `target/bench/resume.json`; the full run and the smoke pass (1 round)
//! include it. Needs root (`ss -K`, `nft`); without it the section, or the black
//! hole, says so and is skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::setup::{self, TOKEN};

const APP: &str = "bench.test";
/// The trickle's pace between kills.
const PING_EVERY: Duration = Duration::from_millis(10);
/// Pings between two kills (the stream settles on its new WebSocket).
const PINGS_BETWEEN: usize = 20;

/// Kill the established sockets whose destination port is `port`; how many died.
fn kill_sockets_to(port: u16) -> Result<usize, String> {
    let out = Command::new("ss")
        .args(["-K", "-t", "-n", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .map_err(|e| format!("cannot run ss: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ss -K failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// One byte there and back on `s`.
fn ping(s: &mut TcpStream, byte: u8) {
    s.write_all(&[byte]).expect("ping goes out");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("echo comes back");
    assert_eq!(b[0], byte, "echo of the ping");
}

/// Start `tunnel tcp` (wss, with `extra` flags) against `edge`; its address.
fn client(bin: &Path, edge: SocketAddr, ca: &Path, extra: &[&str]) -> (setup::Proc, SocketAddr) {
    let edge_addr = edge.to_string();
    let mut cmd = setup::child_command(bin);
    cmd.args(["tcp", "--hostname", &format!("https://{APP}")])
        .args(["--connect-to", &edge_addr, "--url", "127.0.0.1:0"])
        .args(["--id", TOKEN.0, "--secret", TOKEN.1])
        .arg("--ca-file")
        .arg(ca)
        .args(extra)
        .stdin(Stdio::null());
    setup::spawn_cmd(cmd).expect("tunnel tcp starts")
}

/// A stream to the echo origin through `local`, proven with one echo.
fn echo_stream(local: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(local).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Echo mode: any first byte but the origin's mode letters (it is not echoed).
    s.write_all(b"e").unwrap();
    ping(&mut s, 0);
    s
}

/// The trickle between two cuts.
fn trickle(s: &mut TcpStream) {
    for n in 1..=PINGS_BETWEEN {
        ping(s, n as u8);
        std::thread::sleep(PING_EVERY);
    }
}

/// Min, median and max of `ms`, and the samples.
fn spread(ms: Vec<f64>) -> Value {
    let min = ms.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({ "min": min, "median": crate::median(ms.clone()), "max": max, "samples": ms })
}

/// Every TCP packet to or from `port` dropped while it lives (an `nft` table of its
/// own on the output hook, which both directions of loopback pass); deleted on drop.
struct BlackHole(String);

impl BlackHole {
    fn port(port: u16) -> Result<BlackHole, String> {
        let hole = BlackHole(format!("tunnel_bench_{}", std::process::id()));
        let t = &hole.0;
        for cmd in [
            format!("add table inet {t}"),
            format!("add chain inet {t} out {{ type filter hook output priority 0 ; }}"),
            format!("add rule inet {t} out tcp dport {port} drop"),
            format!("add rule inet {t} out tcp sport {port} drop"),
        ] {
            let out = Command::new("nft")
                .arg(&cmd)
                .output()
                .map_err(|e| format!("cannot run nft: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "nft {cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(hole)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}

/// Run the section: `rounds` kills of one stream's WebSocket, each timed from the
/// kill to the next echo; then `rounds` black holes of the edge's port, each timed
/// from lifting it to the echo of a byte sent into it.
pub fn section(bin: &Path, rounds: usize) -> Value {
    if std::env::var("BENCH_RESUME_WINDOW").is_ok_and(|w| w == "0") {
        println!("resume: skipped (BENCH_RESUME_WINDOW=0 turns resumable streams off)");
        return json!({ "skipped": "BENCH_RESUME_WINDOW=0" });
    }
    let origin = setup::origin();
    let (_edge, edge, dir) =
        setup::edge(bin, origin, APP, true, None, "127.0.0.1:0".parse().unwrap())
            .expect("edge starts");
    let ca = dir.path().join("ca.pem");
    let mut out = json!({
        "what": "ms until the next echo through one wss stream on loopback: after ss -K on \
                 the client's WebSocket (kill), after lifting a black hole on the edge's port \
                 that the client's keepalive (500 ms, 1 s) noticed (black_hole)",
        "rounds": rounds,
    });

    let (_client, local) = client(bin, edge, &ca, &[]);
    let mut s = echo_stream(local);
    let mut ms = Vec::with_capacity(rounds);
    for round in 0..rounds {
        trickle(&mut s);
        let killed_at = Instant::now();
        match kill_sockets_to(edge.port()) {
            Ok(1) => {}
            Ok(k) => panic!("round {round}: killed {k} sockets to the edge, wanted 1"),
            Err(why) => {
                println!("resume: skipped ({why}; ss -K needs root)");
                return json!({ "skipped": why });
            }
        }
        ping(&mut s, b'k');
        ms.push(killed_at.elapsed().as_secs_f64() * 1e3);
    }
    out["kill_ms"] = spread(ms);
    drop(s);

    let (hole_client, local) = client(
        bin,
        edge,
        &ca,
        &["--keepalive-interval", "500ms", "--keepalive-timeout", "1s"],
    );
    let mut s = echo_stream(local);
    let mut ms = Vec::with_capacity(rounds);
    for round in 0..rounds {
        trickle(&mut s);
        // The client logs "... resuming the stream" when it notices, and
        // "resumed" when it has: the last line says which.
        let resuming = |p: &setup::Proc| {
            let tail = p.tail.lock().unwrap();
            tail.last()
                .is_some_and(|l| l.contains("resuming the stream"))
        };
        let hole = match BlackHole::port(edge.port()) {
            Ok(h) => h,
            Err(why) => {
                println!("resume: black hole skipped ({why})");
                out["black_hole_skipped"] = json!(why);
                return out;
            }
        };
        s.write_all(b"h").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !resuming(&hole_client) {
            assert!(
                Instant::now() < deadline,
                "the client never noticed the hole"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Lift it at a different point of the redial loop each round: 0 to 10 s
        // after the client started redialing into it.
        std::thread::sleep(Duration::from_millis((round as u64 * 3_137) % 10_000));
        // From just before `nft` deletes the table (a few ms of its own): the
        // stream may resume before `nft` has exited.
        let lifted_at = Instant::now();
        drop(hole);
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("echo after the hole");
        assert_eq!(b[0], b'h', "echo of the byte sent into the hole");
        ms.push(lifted_at.elapsed().as_secs_f64() * 1e3);
    }
    out["black_hole_ms"] = spread(ms);
    out
}

/// One line per figure: min, median and max.
pub fn print(v: &Value) {
    if v.get("skipped").is_some() {
        return;
    }
    println!();
    for (key, label) in [
        ("kill_ms", "ss -K to next echo"),
        ("black_hole_ms", "black hole lifted to next echo"),
    ] {
        let f = |q: &str| v[key][q].as_f64().unwrap_or(f64::NAN);
        if v.get(key).is_some() {
            println!(
                "resume: {label} (ms, {} rounds, wss): min {:.1}, median {:.1}, max {:.1}",
                v["rounds"],
                f("min"),
                f("median"),
                f("max")
            );
        }
    }
}
