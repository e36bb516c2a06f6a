//! End-to-end benchmark: the real `tunnel` binary (edge and client as separate
//! processes) against raw loopback TCP (the ceiling) and the relay limit (the same
//! three hops through plain TCP relays), side by side in one run.
//!
//! `cargo bench --bench e2e` (or `scripts/bench.sh`). Knobs: `BENCH_BYTES` (per
//! throughput figure, default 1 GiB), `BENCH_RTT` (round trips, 10000),
//! `BENCH_SETUP` (connections, 500), `BENCH_IDLE` (idle connections, 1000),
//! `BENCH_ROUNDS` (repeat and report medians, 1). Prints one table and writes
//! `target/bench/results.json`. Run without `--bench` (as `cargo test --benches`
//! does) it makes one tiny pass, to prove the harness works.

mod measure;
mod setup;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Figures for one path, by name.
type Figures = BTreeMap<&'static str, f64>;

fn path_figures(addr: SocketAddr, bytes: u64, rtt: usize, conns: usize) -> Figures {
    let mut f = Figures::new();
    f.insert("upload_gbps", measure::upload(addr, bytes));
    f.insert("download_gbps", measure::download(addr, bytes));
    f.insert("parallel8_gbps", measure::parallel_upload(addr, 8, bytes));
    f.insert("parallel64_gbps", measure::parallel_upload(addr, 64, bytes));
    for (name, size) in [("rtt1", 1usize), ("rtt1k", 1024)] {
        let p = measure::latency(addr, size, rtt);
        f.insert(
            if name == "rtt1" {
                "rtt1_p50_us"
            } else {
                "rtt1k_p50_us"
            },
            p.p50,
        );
        f.insert(
            if name == "rtt1" {
                "rtt1_p99_us"
            } else {
                "rtt1k_p99_us"
            },
            p.p99,
        );
        f.insert(
            if name == "rtt1" {
                "rtt1_p999_us"
            } else {
                "rtt1k_p999_us"
            },
            p.p999,
        );
    }
    let (p, rate) = measure::setup(addr, conns);
    f.insert("setup_p50_us", p.p50);
    f.insert("setup_p99_us", p.p99);
    f.insert("conns_per_sec", rate);
    f
}

/// CPU seconds per GiB moved (up and down) by the client and the edge.
fn cpu_per_gib(t: &setup::Tunnel, bytes: u64) -> (f64, f64) {
    let (c0, e0) = (
        setup::cpu_secs(t.client.child.id()),
        setup::cpu_secs(t.edge.child.id()),
    );
    measure::upload(t.addr, bytes);
    measure::download(t.addr, bytes);
    let gib = 2.0 * bytes as f64 / (1u64 << 30) as f64;
    let (c1, e1) = (
        setup::cpu_secs(t.client.child.id()),
        setup::cpu_secs(t.edge.child.id()),
    );
    ((c1 - c0) / gib, (e1 - e0) / gib)
}

/// KiB of RSS per idle connection, client and edge.
fn idle_kib(t: &setup::Tunnel, n: usize) -> (f64, f64) {
    let (c0, e0) = (
        setup::rss_kib(t.client.child.id()),
        setup::rss_kib(t.edge.child.id()),
    );
    let held = measure::idle(t.addr, n);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (c1, e1) = (
        setup::rss_kib(t.client.child.id()),
        setup::rss_kib(t.edge.child.id()),
    );
    drop(held);
    (
        (c1 as f64 - c0 as f64) / n as f64,
        (e1 as f64 - e0 as f64) / n as f64,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = |name, full_default, smoke| if full { env(name, full_default) } else { smoke };
    let bytes = scale("BENCH_BYTES", 1 << 30, 4 << 20);
    let rtt = scale("BENCH_RTT", 10_000, 200) as usize;
    let conns = scale("BENCH_SETUP", 500, 20) as usize;
    let idle = scale("BENCH_IDLE", 1000, 20) as usize;
    let rounds = scale("BENCH_ROUNDS", 1, 1).max(1) as usize;
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let bin = Path::new(env!("CARGO_BIN_EXE_tunnel"));
    let origin = setup::origin();
    let relay = setup::relay(setup::relay(origin));
    let ws = setup::tunnel(bin, origin, false);
    let wss = setup::tunnel(bin, origin, true);
    let paths: [(&str, SocketAddr); 4] = [
        ("raw", origin),
        ("relay", relay),
        ("ws", ws.addr),
        ("wss", wss.addr),
    ];

    let mut runs: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
    for _ in 0..rounds {
        for (name, addr) in paths {
            runs.entry(name)
                .or_default()
                .push(path_figures(addr, bytes, rtt, conns));
        }
    }
    let figures: BTreeMap<&str, Figures> = runs
        .into_iter()
        .map(|(path, rs)| {
            let keys: Vec<&'static str> = rs[0].keys().copied().collect();
            (
                path,
                keys.into_iter()
                    .map(|k| (k, median(rs.iter().map(|r| r[k]).collect())))
                    .collect(),
            )
        })
        .collect();
    let mut extra = Figures::new();
    for (name, t) in [("ws", &ws), ("wss", &wss)] {
        let (c, e) = cpu_per_gib(t, bytes);
        extra.insert(
            if name == "ws" {
                "ws_client_cpu_s_per_gib"
            } else {
                "wss_client_cpu_s_per_gib"
            },
            c,
        );
        extra.insert(
            if name == "ws" {
                "ws_edge_cpu_s_per_gib"
            } else {
                "wss_edge_cpu_s_per_gib"
            },
            e,
        );
        let (c, e) = idle_kib(t, idle);
        extra.insert(
            if name == "ws" {
                "ws_client_kib_per_idle_conn"
            } else {
                "wss_client_kib_per_idle_conn"
            },
            c,
        );
        extra.insert(
            if name == "ws" {
                "ws_edge_kib_per_idle_conn"
            } else {
                "wss_edge_kib_per_idle_conn"
            },
            e,
        );
    }

    print_table(&figures, &extra);
    let json = json!({
        "params": { "bytes": bytes, "round_trips": rtt, "setup_connections": conns, "idle_connections": idle, "rounds": rounds, "full": full },
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "paths": figures.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "tunnel": extra,
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let file = if full { "results.json" } else { "smoke.json" };
    std::fs::write(dir.join(file), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("\nwrote {}", dir.join(file).display());
}

fn print_table(f: &BTreeMap<&str, Figures>, extra: &Figures) {
    let rows = [
        ("upload, 1 stream (Gbit/s)", "upload_gbps", true),
        ("download, 1 stream (Gbit/s)", "download_gbps", true),
        ("upload, 8 streams (Gbit/s)", "parallel8_gbps", true),
        ("upload, 64 streams (Gbit/s)", "parallel64_gbps", true),
        ("RTT 1 B p50 (us)", "rtt1_p50_us", false),
        ("RTT 1 B p99 (us)", "rtt1_p99_us", false),
        ("RTT 1 B p99.9 (us)", "rtt1_p999_us", false),
        ("RTT 1 KiB p50 (us)", "rtt1k_p50_us", false),
        ("RTT 1 KiB p99 (us)", "rtt1k_p99_us", false),
        ("setup p50 (us)", "setup_p50_us", false),
        ("setup p99 (us)", "setup_p99_us", false),
        ("new connections/s", "conns_per_sec", true),
    ];
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "figure", "raw", "relay", "ws", "wss", "ws/relay", "wss/relay"
    );
    for (label, key, _higher_better) in rows {
        let v = |p: &str| f[p][key];
        println!(
            "{:<30} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.2} {:>10.2}",
            label,
            v("raw"),
            v("relay"),
            v("ws"),
            v("wss"),
            v("ws") / v("relay"),
            v("wss") / v("relay")
        );
    }
    println!();
    for (k, v) in extra {
        println!("{k:<34} {v:>9.2}");
    }
}
