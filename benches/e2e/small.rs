//! Small messages: a real `redis-server` origin driven by `redis-benchmark` (GET,
//! 50 clients, without pipelining and with `-P 16`) directly, through the relay
//! limit (two plain TCP relays), through `tunnel` over `ws://` and `wss://`, and
//! through the peers found on `PATH` (`wstunnel`), all in one run, and through
//! `tunnel` again with resumption off (`ws-no-resume`, `wss-no-resume`: the edge's
//! `resume_window = "0"`), so resumption's cost is read side by side. Each figure is
//! the min, median and max over `BENCH_ROUNDS` rounds, each round going through
//! every path in turn (runs vary by ~20% here), with the CPU microseconds per
//! request of each process of a proxied path.
//!
//! `BENCH_ONLY=small cargo bench --bench e2e` (add `--peers` or `BENCH_PEERS=1`);
//! `BENCH_SMALL_REQUESTS` per run (default 200000). Writes `target/bench/small.json`.
//! `scripts/bench.sh` installs `redis-server` (with `redis-benchmark`) when missing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::peers;
use crate::setup::{self, Proc, Stack};

/// Pipelining depths measured.
const PIPELINES: [u32; 2] = [1, 16];
/// Concurrent clients, as in the redis-benchmark figure.
const CLIENTS: u32 = 50;

/// Start `redis-server` on a free loopback port (nothing saved to disk).
fn redis(dir: &Path) -> (Proc, SocketAddr) {
    let addr = setup::free_addr();
    let mut c = setup::child_command("redis-server");
    c.args(["--bind", "127.0.0.1", "--port"])
        .arg(addr.port().to_string())
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null());
    let p = setup::spawn_listening(c, addr)
        .expect("redis-server starts (apt-get install redis-server)");
    (p, addr)
}

/// One `redis-benchmark` run against `addr`: GET requests per second.
fn run(addr: SocketAddr, requests: u64, pipeline: u32) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .args(["-t", "get", "--csv", "-q", "-c"])
        .arg(CLIENTS.to_string())
        .arg("-n")
        .arg(requests.to_string())
        .arg("-P")
        .arg(pipeline.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("\"GET\""))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no GET figure from redis-benchmark: {text}"))
}

/// min, median, max.
fn spread(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    json!({ "min": v[0], "median": v[v.len() / 2], "max": v[v.len() - 1] })
}

/// Measure every path `rounds` times at each pipelining depth.
pub fn section(bin: &Path, rounds: usize, requests: u64, want_peers: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, origin) = redis(dir.path());
    // Let the origin accept before anything measures it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(origin).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let relay = setup::relay(setup::relay(origin));
    let ws = setup::tunnel(bin, origin, false);
    let wss = setup::tunnel(bin, origin, true);
    let (found, skipped) = if want_peers {
        peers::start_all(bin, origin)
    } else {
        (Vec::new(), Vec::new())
    };
    // Resumption's cost, side by side: the same tunnels with `resume_window = "0"`
    // (unless `BENCH_RESUME_WINDOW=0` already turned it off for every edge).
    let resume_off = std::env::var("BENCH_RESUME_WINDOW").is_ok_and(|w| w == "0");
    let unresumable = (!resume_off).then(|| {
        (
            setup::tunnel_resume_window(bin, origin, false, "0"),
            setup::tunnel_resume_window(bin, origin, true, "0"),
        )
    });
    let mut stacks: Vec<(&str, &Stack)> = vec![("ws", &ws), ("wss", &wss)];
    if let Some((ws0, wss0)) = &unresumable {
        stacks.extend([("ws-no-resume", ws0), ("wss-no-resume", wss0)]);
    }
    stacks.extend(found.iter().map(|p| (p.name, &p.stack)));
    let mut paths: Vec<(&str, SocketAddr, Option<&Stack>)> =
        vec![("direct", origin, None), ("relay", relay, None)];
    paths.extend(stacks.iter().map(|(n, s)| (*n, s.addr, Some(*s))));

    // Rounds go round the paths, so a slow spell of the shared machine falls on
    // every path alike instead of on whichever ran then.
    let cpu = |s: &Stack| {
        (
            setup::cpu_secs(s.client.child.id()),
            setup::cpu_secs(s.server.child.id()),
        )
    };
    let mut samples: BTreeMap<(usize, u32), [Vec<f64>; 3]> = BTreeMap::new();
    for p in PIPELINES {
        for _ in 0..rounds {
            for (i, (_, addr, stack)) in paths.iter().enumerate() {
                let before = stack.map(cpu);
                let rate = run(*addr, requests, p);
                let [rates, client_us, server_us] = samples.entry((i, p)).or_default();
                rates.push(rate);
                if let (Some(s), Some((c0, s0))) = (stack, before) {
                    let (c1, s1) = cpu(s);
                    client_us.push((c1 - c0) * 1e6 / requests as f64);
                    server_us.push((s1 - s0) * 1e6 / requests as f64);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (i, (name, _, stack)) in paths.iter().enumerate() {
        let mut fig = serde_json::Map::new();
        for p in PIPELINES {
            let [rates, client_us, server_us] = samples.remove(&(i, p)).unwrap_or_default();
            fig.insert(format!("get_per_sec_p{p}"), spread(rates));
            if stack.is_some() {
                fig.insert(format!("client_cpu_us_per_request_p{p}"), spread(client_us));
                fig.insert(format!("server_cpu_us_per_request_p{p}"), spread(server_us));
            }
        }
        out.insert(name.to_string(), Value::Object(fig));
    }
    json!({
        "params": { "clients": CLIENTS, "requests": requests, "rounds": rounds, "pipelines": PIPELINES },
        "order": paths.iter().map(|p| p.0).collect::<Vec<_>>(),
        "paths": out,
        "skipped": skipped,
    })
}

/// Print the table: GET/s (median, with min-max) and x direct per depth, and CPU
/// per request of the proxied paths' client and server.
pub fn print(v: &Value) {
    println!(
        "\n== small messages: redis-benchmark GET, {} clients ==",
        v["params"]["clients"]
    );
    let direct = |p: u32| {
        v["paths"]["direct"][format!("get_per_sec_p{p}")]["median"]
            .as_f64()
            .unwrap_or(1.0)
    };
    println!(
        "{:<14} {:>28} {:>7} {:>28} {:>7} {:>18} {:>18}",
        "path",
        "GET/s P1 med (min-max)",
        "x dir",
        "GET/s P16 med (min-max)",
        "x dir",
        "client us/req P1",
        "server us/req P1"
    );
    for name in v["order"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let f = &v["paths"][name];
        let cell = |p: u32| {
            let g = &f[format!("get_per_sec_p{p}")];
            format!(
                "{:.0} ({:.0}-{:.0})",
                g["median"].as_f64().unwrap_or(0.0),
                g["min"].as_f64().unwrap_or(0.0),
                g["max"].as_f64().unwrap_or(0.0)
            )
        };
        let ratio = |p: u32| {
            f[format!("get_per_sec_p{p}")]["median"]
                .as_f64()
                .unwrap_or(0.0)
                / direct(p)
        };
        let us = |k: &str| {
            f[k]["median"]
                .as_f64()
                .map_or("-".to_string(), |u| format!("{u:.1}"))
        };
        println!(
            "{:<14} {:>28} {:>7.2} {:>28} {:>7.2} {:>18} {:>18}",
            name,
            cell(1),
            ratio(1),
            cell(16),
            ratio(16),
            us("client_cpu_us_per_request_p1"),
            us("server_cpu_us_per_request_p1")
        );
    }
}
