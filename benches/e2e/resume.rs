//! Recovery time of a resumable stream: one stream through `tunnel tcp` and
//! `tunnel edge` (`wss://`, loopback) moves a steady trickle (a 1-byte echo every
//! 10 ms); its WebSocket is killed (`ss -K` on the client's socket to the edge, so
//! both ends see a reset) and the figure is the time from the kill to the echo of a
//! byte sent right after it: noticing the reset, redialing, the TLS and WebSocket
//! handshakes with a resume, and the replay. Min, median and max over `rounds`.
//!
//! `BENCH_ONLY=resume cargo bench --bench e2e` (`BENCH_RESUME_ROUNDS`, default 10)
//! writes `target/bench/resume.json`; the full run and the smoke pass include it
//! (the smoke pass with 2 rounds). Needs root for `ss -K`; without it the section
//! says so and is skipped.

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

/// Run the section: `rounds` kills of one stream's WebSocket, each timed from the
/// kill to the next echo.
pub fn section(bin: &Path, rounds: usize) -> Value {
    if std::env::var("BENCH_RESUME_WINDOW").is_ok_and(|w| w == "0") {
        println!("resume: skipped (BENCH_RESUME_WINDOW=0 turns resumable streams off)");
        return json!({ "skipped": "BENCH_RESUME_WINDOW=0" });
    }
    let origin = setup::origin();
    let (_edge, edge, dir) =
        setup::edge(bin, origin, APP, true, None, "127.0.0.1:0".parse().unwrap())
            .expect("edge starts");
    let edge_addr = edge.to_string();
    let ca = dir.path().join("ca.pem");
    let mut cmd = setup::child_command(bin);
    cmd.args(["tcp", "--hostname", &format!("https://{APP}")])
        .args(["--connect-to", &edge_addr, "--url", "127.0.0.1:0"])
        .args(["--id", TOKEN.0, "--secret", TOKEN.1])
        .arg("--ca-file")
        .arg(&ca)
        .stdin(Stdio::null());
    let (_client, local): (_, SocketAddr) = setup::spawn_cmd(cmd).expect("tunnel tcp starts");
    let mut s = TcpStream::connect(local).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Echo mode: any first byte but the origin's mode letters (it is not echoed).
    s.write_all(b"e").unwrap();
    ping(&mut s, 0);
    let mut ms = Vec::with_capacity(rounds);
    let mut n = 0u8;
    for round in 0..rounds {
        for _ in 0..PINGS_BETWEEN {
            n = n.wrapping_add(1);
            ping(&mut s, n);
            std::thread::sleep(PING_EVERY);
        }
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
    let min = ms.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({
        "what": "ms from ss -K on the client's WebSocket to the next echo (wss, loopback)",
        "rounds": rounds,
        "recovery_ms": { "min": min, "median": crate::median(ms.clone()), "max": max },
        "samples_ms": ms,
    })
}

/// One line: the recovery time's min, median and max.
pub fn print(v: &Value) {
    if v.get("skipped").is_some() {
        return;
    }
    let f = |q: &str| v["recovery_ms"][q].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nresume: kill to next echo (ms, {} rounds, wss): min {:.1}, median {:.1}, max {:.1}",
        v["rounds"],
        f("min"),
        f("median"),
        f("max")
    );
}
