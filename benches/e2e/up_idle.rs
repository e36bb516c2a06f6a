//! The idle cost of `tunnel up` with many tunnels configured: resident memory and
//! CPU of one `tunnel up` serving `N` tunnels (each its own listener, no traffic)
//! beside one `tunnel tcp` serving one, both against the same edge, side by side.
//!
//! `BENCH_ONLY=up_idle cargo bench --bench e2e`; `BENCH_UP_TUNNELS` sets `N`
//! (default 20), `BENCH_UP_SECS` the idle window CPU is measured over (default 10).
//! Writes `target/bench/up_idle.json`. The smoke pass runs it with 1 s.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::setup::{self, TOKEN};

const APP: &str = "bench.test";

/// Start an edge, `tunnel up` with `tunnels` tunnels and `tunnel tcp` with one;
/// after they settle, read RSS and CPU over `secs` of idleness.
pub fn section(bin: &Path, tunnels: usize, secs: u64) -> Value {
    let origin = setup::origin();
    let (_edge, edge, _edge_dir) = setup::edge(
        bin,
        origin,
        APP,
        false,
        None,
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("edge starts");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("up.toml");
    let mut text = format!("connect_to = \"{edge}\"\n");
    for i in 0..tunnels {
        text.push_str(&format!(
            "[[tunnels]]\nname = \"t{i}\"\nhostname = \"http://{APP}\"\nlisten = \"127.0.0.1:0\"\n\
             service_token_id_env = \"BENCH_UP_ID\"\nservice_token_secret_env = \"BENCH_UP_SECRET\"\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let runtime = dir.path().join("run");
    let mut up_cmd = setup::child_command(bin);
    up_cmd
        .arg("up")
        .arg("--config")
        .arg(&config)
        .env("BENCH_UP_ID", TOKEN.0)
        .env("BENCH_UP_SECRET", TOKEN.1)
        .env("TUNNEL_RUNTIME_DIR", &runtime)
        .stdin(Stdio::null());
    let (up, rx) = setup::start(up_cmd).expect("tunnel up starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listening = Vec::new();
    while listening.len() < tunnels && Instant::now() < deadline {
        if let Ok(a) = rx.recv_timeout(Duration::from_millis(100)) {
            listening.push(a);
        }
    }
    assert_eq!(listening.len(), tunnels, "tunnel up: {}", up.last_words());
    // One round trip through the last tunnel, so its code paths are warm too.
    let echoed = crate::measure::latency(listening[tunnels - 1], 1, 10);
    let mut tcp_cmd = setup::child_command(bin);
    tcp_cmd
        .args([
            "tcp",
            "--hostname",
            &format!("http://{APP}"),
            "--connect-to",
        ])
        .arg(edge.to_string())
        .args(["--url", "127.0.0.1:0", "--id", TOKEN.0, "--secret", TOKEN.1])
        .env("TUNNEL_RUNTIME_DIR", &runtime)
        .stdin(Stdio::null());
    let (tcp, tcp_addr) = setup::spawn_cmd(tcp_cmd).expect("tunnel tcp starts");
    crate::measure::latency(tcp_addr, 1, 10);
    std::thread::sleep(Duration::from_millis(500));
    let (up_pid, tcp_pid) = (up.child.id(), tcp.child.id());
    let (up_cpu0, tcp_cpu0) = (setup::cpu_secs(up_pid), setup::cpu_secs(tcp_pid));
    std::thread::sleep(Duration::from_secs(secs));
    let up_cpu = setup::cpu_secs(up_pid) - up_cpu0;
    let tcp_cpu = setup::cpu_secs(tcp_pid) - tcp_cpu0;
    let (up_rss, tcp_rss) = (setup::rss_kib(up_pid), setup::rss_kib(tcp_pid));
    let per_tunnel = (up_rss as f64 - tcp_rss as f64) / (tunnels.max(2) - 1) as f64;
    json!({
        "tunnels": tunnels,
        "idle_secs": secs,
        "up_rss_kib": up_rss,
        "tcp_one_tunnel_rss_kib": tcp_rss,
        "kib_per_extra_tunnel": per_tunnel,
        "up_cpu_ms_idle": up_cpu * 1000.0,
        "tcp_cpu_ms_idle": tcp_cpu * 1000.0,
        "warm_rtt_p50_us": echoed.p50,
    })
}

/// Print the figure.
pub fn print(v: &Value) {
    println!("\n== tunnel up, idle ==");
    println!(
        "{} tunnels in one `tunnel up`: {} KiB RSS; one `tunnel tcp`: {} KiB; {:.0} KiB per extra tunnel",
        v["tunnels"],
        v["up_rss_kib"],
        v["tcp_one_tunnel_rss_kib"],
        v["kib_per_extra_tunnel"].as_f64().unwrap_or(0.0)
    );
    println!(
        "CPU while idle for {} s: up {:.1} ms, tcp {:.1} ms",
        v["idle_secs"],
        v["up_cpu_ms_idle"].as_f64().unwrap_or(0.0),
        v["tcp_cpu_ms_idle"].as_f64().unwrap_or(0.0)
    );
}
