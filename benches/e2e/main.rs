//! End-to-end benchmark: the real `tunnel` binary (edge and client as separate
//! processes) against raw loopback TCP (the ceiling) and the relay limit (the same
//! three hops through plain TCP relays), side by side in one run; optionally other
//! clients (peers) on the same paths, and a WAN figure across an emulated link.
//!
//! `cargo bench --bench e2e` (or `scripts/bench.sh`). Knobs: `BENCH_BYTES` (per
//! throughput figure, default 1 GiB), `BENCH_RTT` (round trips, 10000),
//! `BENCH_SETUP` (connections, 500), `BENCH_IDLE` (idle connection counts, a
//! comma-separated list, `1000,10000`), `BENCH_ROUNDS` (repeat, 1; the tables show
//! medians, the JSON's `spread` min, median and max), `BENCH_PEERS=1` or `--peers`
//! (also measure `websocat`, `wstunnel` and `cloudflared` from `PATH`),
//! `BENCH_WAN_SECS` (per WAN throughput figure, 10),
//! `BENCH_WAN_LINK=tun` (WAN over the userspace TUN link even where netem works),
//! `BENCH_WAN_NETEM=off` (WAN over the bare veth), `BENCH_WAN_CC` (TCP congestion
//! control on the WAN link, e.g. `cubic`; default the system's), `BENCH_WAN=off` (no WAN),
//! `BENCH_ONLY=wan` (only the WAN section, written to `target/bench/wan.json`),
//! `BENCH_ONLY=login_flood` (only handshake latency idle and under a flood of
//! `BENCH_FLOOD` concurrent bogus logins, 40, written to `target/bench/login_flood.json`),
//! `BENCH_ONLY=small` (only small messages: `redis-benchmark` GET against a real
//! `redis-server` directly, through the relays, `tunnel` ws/wss and the peers, min,
//! median and max over `BENCH_ROUNDS`, written to `target/bench/small.json`),
//! `BENCH_RESUME_WINDOW` (the edge's `resume_window`; `0` turns resumable streams
//! off, to measure their cost), `BENCH_ONLY=resume` (only a stream's recovery time
//! after its WebSocket is killed and after a black hole, `BENCH_RESUME_ROUNDS` of
//! each, 10; needs root; written to `target/bench/resume.json`; the full run
//! includes it),
//! `BENCH_ONLY=setup` (only connection setup, ws and wss, `BENCH_ROUNDS` rounds of
//! `BENCH_SETUP` connections, written to `target/bench/setup.json`),
//! `BENCH_TUNNEL_BIN` (measure that build of `tunnel` instead of this one's),
//! `BENCH_ONLY=idle` (only idle memory per connection, KiB of RSS for client and
//! edge, with fresh `ws` and `wss` processes for each of `BENCH_ROUNDS` rounds and
//! each `BENCH_IDLE` count; written to `target/bench/idle.json`),
//! `BENCH_ONLY=up_idle` (only the idle cost of one `tunnel up` with `BENCH_UP_TUNNELS`
//! tunnels, 20, beside one `tunnel tcp`, written to `target/bench/up_idle.json`).
//! Prints tables and writes `target/bench/results.json`. Run without `--bench` (as
//! `cargo test --benches` does) it makes one tiny pass without the WAN section, to
//! prove the harness works, and writes `target/bench/smoke.json`.
//!
//! Linux only (network namespaces, TUN devices, `/proc`): on other targets the crate
//! is empty, so `cargo clippy --target x86_64-pc-windows-gnu --all-targets` passes.
#![cfg_attr(not(unix), no_main)]
#![cfg(unix)]

mod login_flood;
mod measure;
mod peers;
mod resume;
mod setup;
mod small;
mod tun;
mod up_idle;
mod wan;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

/// An integer knob from the environment, or `default`.
fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Figures for one path, by name.
type Figures = BTreeMap<&'static str, f64>;

/// Every per-path figure: throughput, latency percentiles and connection setup.
fn path_figures(addr: SocketAddr, bytes: u64, rtt: usize, conns: usize) -> Figures {
    let mut f = Figures::new();
    f.insert("upload_gbps", measure::upload(addr, bytes));
    f.insert("download_gbps", measure::download(addr, bytes));
    f.insert("parallel8_gbps", measure::parallel_upload(addr, 8, bytes));
    f.insert("parallel64_gbps", measure::parallel_upload(addr, 64, bytes));
    for (size, keys) in [
        (1usize, ["rtt1_p50_us", "rtt1_p99_us", "rtt1_p999_us"]),
        (1024, ["rtt1k_p50_us", "rtt1k_p99_us", "rtt1k_p999_us"]),
    ] {
        let p = measure::latency(addr, size, rtt);
        f.insert(keys[0], p.p50);
        f.insert(keys[1], p.p99);
        f.insert(keys[2], p.p999);
    }
    let (p, rate) = measure::setup(addr, conns);
    f.insert("setup_p50_us", p.p50);
    f.insert("setup_p99_us", p.p99);
    f.insert("conns_per_sec", rate);
    f
}

/// CPU seconds per GiB moved (up and down) by the client and the server.
fn cpu_per_gib(t: &setup::Stack, bytes: u64) -> (f64, f64) {
    let (c0, e0) = (
        setup::cpu_secs(t.client.child.id()),
        setup::cpu_secs(t.server.child.id()),
    );
    measure::upload(t.addr, bytes);
    measure::download(t.addr, bytes);
    let gib = 2.0 * bytes as f64 / (1u64 << 30) as f64;
    let (c1, e1) = (
        setup::cpu_secs(t.client.child.id()),
        setup::cpu_secs(t.server.child.id()),
    );
    ((c1 - c0) / gib, (e1 - e0) / gib)
}

/// Idle figures for `n` connections held open: KiB of RSS per connection for the
/// client and the server, and how many connections failed (to open, to echo at
/// once, or to echo again after the memory was read).
fn idle_kib(t: &setup::Stack, n: usize) -> (f64, f64, usize) {
    let (c0, e0) = (
        setup::rss_kib(t.client.child.id()),
        setup::rss_kib(t.server.child.id()),
    );
    let (mut held, failed_open) = measure::idle(t.addr, n);
    // Idle means quiet for longer than the bridge keeps buffers of a quiet
    // connection: what a long-lived idle connection costs.
    std::thread::sleep(tunnel::bridge::IDLE_RELEASE * 2);
    let (c1, e1) = (
        setup::rss_kib(t.client.child.id()),
        setup::rss_kib(t.server.child.id()),
    );
    let failed_echo = measure::idle_check(&mut held);
    drop(held);
    // Let both sides close them before anything else is measured.
    std::thread::sleep(std::time::Duration::from_millis(500));
    (
        (c1 as f64 - c0 as f64) / n as f64,
        (e1 as f64 - e0 as f64) / n as f64,
        failed_open + failed_echo,
    )
}

/// Idle memory alone, with fresh processes: for each round, a new `ws` and a new
/// `wss` stack, and [`idle_kib`] at each count. (In the full run the idle figure
/// comes after the throughput figures, whose freed memory new connections reuse,
/// so there it reads low and varies.) Prints one line per figure; min, median and
/// max over the rounds.
fn idle_section(bin: &Path, counts: &[usize], rounds: usize) -> Value {
    let origin = setup::origin();
    let mut out = serde_json::Map::new();
    for (name, tls) in [("ws", false), ("wss", true)] {
        let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for _ in 0..rounds {
            for &n in counts {
                let t = setup::tunnel(bin, origin, tls);
                let (c, s, failed) = idle_kib(&t, n);
                assert_eq!(failed, 0, "{name}: {failed} of {n} idle connections failed");
                per.entry(format!("client_kib_per_idle_conn_{n}"))
                    .or_default()
                    .push(c);
                per.entry(format!("server_kib_per_idle_conn_{n}"))
                    .or_default()
                    .push(s);
            }
        }
        let mut figures = serde_json::Map::new();
        for (k, v) in per {
            let (min, max) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let mid = median(v);
            println!("{name:<4} {k:<32} {min:>7.2} {mid:>7.2} {max:>7.2}  (min median max)");
            figures.insert(k, json!({ "min": min, "median": mid, "max": max }));
        }
        out.insert(name.to_string(), figures.into());
    }
    json!({ "rounds": rounds, "idle_connections": counts, "figures": out })
}

/// The middle value of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Raise the open-files limit for the bench and the processes it starts (they
/// inherit it): as root past the hard limit, else up to it. Returns the soft limit.
fn raise_nofile() -> u64 {
    use rlimit::Resource;
    let want = 1 << 20;
    if rlimit::setrlimit(Resource::NOFILE, want, want).is_err() {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
    }
    rlimit::getrlimit(Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

/// `BENCH_ONLY=setup`: only the connection setup figure (accept, dial, TLS,
/// upgrade, origin connect, one echo) of `ws` and `wss`, `rounds` rounds of `conns`
/// connections each; prints and returns the per-round p50/p99 and their medians.
fn setup_only(bin: &Path, rounds: usize, conns: usize) -> Value {
    let origin = setup::origin();
    let ws = setup::tunnel(bin, origin, false);
    let wss = setup::tunnel(bin, origin, true);
    let mut out = serde_json::Map::new();
    out.insert("bin".into(), json!(bin.display().to_string()));
    for (name, t) in [("ws", &ws), ("wss", &wss)] {
        let (mut p50, mut p99) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (p, _) = measure::setup(t.addr, conns);
            p50.push(p.p50);
            p99.push(p.p99);
        }
        let (m50, m99) = (median(p50.clone()), median(p99.clone()));
        println!(
            "{name}: setup p50 {m50:.0} us, p99 {m99:.0} us (medians of {rounds} rounds of {conns} connections)"
        );
        out.insert(
            name.into(),
            json!({"setup_p50_us": m50, "setup_p99_us": m99, "rounds_p50_us": p50, "rounds_p99_us": p99}),
        );
    }
    Value::Object(out)
}

/// Run the bench (or, re-executed with `--wan-origin`, serve the WAN origin).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--wan-origin") {
        wan::origin_main(args.get(i + 1).map_or("", String::as_str));
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let want_peers =
        args.iter().any(|a| a == "--peers") || std::env::var("BENCH_PEERS").is_ok_and(|v| v == "1");
    let scale = |name, full_default, smoke| if full { env(name, full_default) } else { smoke };
    let bytes = scale("BENCH_BYTES", 1 << 30, 4 << 20);
    let rtt = scale("BENCH_RTT", 10_000, 200) as usize;
    let conns = scale("BENCH_SETUP", 500, 20) as usize;
    let rounds = scale("BENCH_ROUNDS", 1, 1).max(1) as usize;
    let wan_secs = env("BENCH_WAN_SECS", 10);
    let idle_list = if full {
        std::env::var("BENCH_IDLE").unwrap_or_else(|_| "1000,10000".into())
    } else {
        "20".into()
    };
    let mut idle: Vec<usize> = idle_list
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    // A proxy (our client and edge, a peer's) holds two descriptors per connection,
    // and so does this process (the bench's end and the origin's); the processes
    // inherit the limit.
    let nofile = raise_nofile() as usize;
    let cap = (nofile.saturating_sub(256) / 2) / 100 * 100;
    if idle.iter().any(|&n| n > cap) {
        println!(
            "open-files limit {nofile} (the hard limit here): two descriptors per proxied \
             connection, so idle counts are capped at {cap}"
        );
        idle.iter_mut().for_each(|n| *n = (*n).min(cap));
        idle.dedup();
    }

    // `BENCH_TUNNEL_BIN`: another build of `tunnel` to measure (say, the previous
    // commit's), so two builds can be compared turn about on one machine.
    let other = std::env::var_os("BENCH_TUNNEL_BIN").map(std::path::PathBuf::from);
    let bin = other
        .as_deref()
        .unwrap_or(Path::new(env!("CARGO_BIN_EXE_tunnel")));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    if full && std::env::var("BENCH_ONLY").is_ok_and(|v| v == "wan") {
        let w = wan::section(bin, wan_secs);
        print_wan(&w);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("wan.json"),
            serde_json::to_string_pretty(&w).unwrap(),
        )
        .unwrap();
        println!("\nwrote {}", dir.join("wan.json").display());
        return;
    }
    if full && std::env::var("BENCH_ONLY").is_ok_and(|v| v == "login_flood") {
        let flood = env("BENCH_FLOOD", 40) as usize;
        let v = login_flood::section(bin, flood, env("BENCH_HANDSHAKES", 200) as usize);
        login_flood::print(&v);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("login_flood.json");
        std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        println!("\nwrote {}", file.display());
        return;
    }
    if full && std::env::var("BENCH_ONLY").is_ok_and(|v| v == "small") {
        let requests = env("BENCH_SMALL_REQUESTS", 200_000);
        let v = small::section(bin, rounds.max(3), requests, want_peers);
        small::print(&v);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("small.json");
        std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        println!("\nwrote {}", file.display());
        return;
    }
    if full && std::env::var("BENCH_ONLY").is_ok_and(|v| v == "setup") {
        let v = setup_only(bin, rounds, conns);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("setup.json");
        std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        println!("\nwrote {}", file.display());
        return;
    }
    if full && std::env::var("BENCH_ONLY").is_ok_and(|v| v == "idle") {
        let v = idle_section(bin, &idle, rounds);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("idle.json");
        std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        println!("\nwrote {}", file.display());
        return;
    }
    let resume_rounds = scale("BENCH_RESUME_ROUNDS", 10, 1).max(1) as usize;
    if full && std::env::var("BENCH_ONLY").is_ok_and(|v| v == "resume") {
        let v = resume::section(bin, resume_rounds);
        resume::print(&v);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("resume.json");
        std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        println!("\nwrote {}", file.display());
        return;
    }
    if !full || std::env::var("BENCH_ONLY").is_ok_and(|v| v == "up_idle") {
        let tunnels = scale("BENCH_UP_TUNNELS", 20, 3) as usize;
        let v = up_idle::section(bin, tunnels, scale("BENCH_UP_SECS", 10, 1));
        up_idle::print(&v);
        if full {
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("up_idle.json");
            std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
            println!("\nwrote {}", file.display());
            return;
        }
    }
    let origin = setup::origin();
    let relay = setup::relay(setup::relay(origin));
    let ws = setup::tunnel(bin, origin, false);
    let wss = setup::tunnel(bin, origin, true);
    let (peers, mut skipped) = if want_peers {
        peers::start_all(bin, origin)
    } else {
        (Vec::new(), Vec::new())
    };
    // Stacks with processes of their own, ours first.
    let mut stacks: Vec<(&'static str, &setup::Stack)> = vec![("ws", &ws), ("wss", &wss)];
    stacks.extend(peers.iter().map(|p| (p.name, &p.stack)));
    let mut paths: Vec<(&'static str, SocketAddr)> = vec![("raw", origin), ("relay", relay)];
    paths.extend(stacks.iter().map(|(n, s)| (*n, s.addr)));

    // Say which of a stack's processes died, if one did, around a measurement of it.
    let check = |name: &str, when: &str| {
        for (_, t) in stacks.iter().filter(|(n, _)| *n == name) {
            for line in t.dead() {
                println!("{name}: {line} ({when})");
            }
        }
    };
    // A peer whose measurement fails is dropped with one line; ours fails the run.
    let mut failed: Vec<&str> = Vec::new();
    let mut guarded = |name: &'static str, f: &mut dyn FnMut()| {
        if failed.contains(&name) {
            return;
        }
        check(name, "before measuring it");
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            check(name, "after a measurement failed");
            if name == "ws" || name == "wss" {
                std::panic::resume_unwind(e);
            }
            let line = format!("{name}: a measurement failed (see above), path dropped");
            println!("{line}");
            skipped.push(line);
            failed.push(name);
        }
    };
    let mut runs: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
    for _ in 0..rounds {
        for &(name, addr) in &paths {
            guarded(name, &mut || {
                let f = path_figures(addr, bytes, rtt, conns);
                runs.entry(name).or_default().push(f);
            });
        }
    }
    let mut half_close: BTreeMap<&str, bool> = paths
        .iter()
        .map(|&(name, addr)| (name, measure::half_close(addr)))
        .collect();

    let mut processes = serde_json::Map::new();
    for &(name, t) in &stacks {
        guarded(name, &mut || {
            let (c, s) = cpu_per_gib(t, bytes);
            let mut p = json!({
                "server_role": t.server_role,
                "client_cpu_s_per_gib": c,
                "server_cpu_s_per_gib": s,
            });
            for &n in &idle {
                let (c, s, failed) = idle_kib(t, n);
                p[format!("client_kib_per_idle_conn_{n}")] = json!(c);
                p[format!("server_kib_per_idle_conn_{n}")] = json!(s);
                p[format!("idle_failures_{n}")] = json!(failed);
            }
            processes.insert(name.to_string(), p);
        });
    }
    for name in failed {
        runs.remove(name);
        half_close.remove(name);
        processes.remove(name);
    }
    // Each figure's min, median and max over the rounds (runs vary by ~20% on a
    // shared machine); the tables and the chart use the medians.
    let spread: BTreeMap<&str, BTreeMap<&str, Value>> = runs
        .iter()
        .map(|(path, rs)| {
            let keys: Vec<&'static str> = rs[0].keys().copied().collect();
            let by_key = keys
                .into_iter()
                .map(|k| {
                    let v: Vec<f64> = rs.iter().map(|r| r[k]).collect();
                    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (k, json!({ "min": min, "median": median(v), "max": max }))
                })
                .collect();
            (*path, by_key)
        })
        .collect();
    let figures: BTreeMap<&str, Figures> = spread
        .iter()
        .map(|(path, by_key)| {
            let medians = by_key
                .iter()
                .map(|(k, v)| (*k, v["median"].as_f64().unwrap_or(f64::NAN)))
                .collect();
            (*path, medians)
        })
        .collect();

    let resumed = resume::section(bin, resume_rounds);

    let wan = if full && std::env::var("BENCH_WAN").map_or(true, |v| v != "off") {
        Some(wan::section(bin, wan_secs))
    } else {
        None
    };

    let order: Vec<&str> = paths
        .iter()
        .map(|p| p.0)
        .filter(|p| figures.contains_key(p))
        .collect();
    print_table(&order, &figures, &half_close);
    if rounds > 1 {
        print_spread(&order, &spread);
    }
    print_processes(&order, &processes);
    if let Some(w) = &wan {
        print_wan(w);
    }
    resume::print(&resumed);
    let mut json = json!({
        "params": {
            "bytes": bytes, "round_trips": rtt, "setup_connections": conns,
            "idle_connections": idle, "nofile_limit": nofile, "rounds": rounds, "full": full, "peers": want_peers,
        },
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "order": order,
        "paths": figures.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "spread": spread.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "half_close": half_close,
        "processes": processes,
        "resume": resumed,
    });
    if want_peers {
        json["peers"] = peers
            .iter()
            .filter(|p| figures.contains_key(p.name))
            .map(|p| (p.name.to_string(), json!({ "version": p.version })))
            .collect::<serde_json::Map<String, Value>>()
            .into();
        json["skipped"] = json!(skipped);
    }
    if let Some(w) = wan {
        json["wan"] = w;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let file = if full { "results.json" } else { "smoke.json" };
    std::fs::write(dir.join(file), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("\nwrote {}", dir.join(file).display());
}

/// Each figure's min-max over the rounds, one line per path and figure.
fn print_spread(order: &[&str], spread: &BTreeMap<&str, BTreeMap<&str, Value>>) {
    println!("\nspread over rounds (min / median / max):");
    for p in order {
        for (k, v) in &spread[p] {
            let f = |q: &str| v[q].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {p:<14} {k:<18} {:>12.1} {:>12.1} {:>12.1}",
                f("min"),
                f("median"),
                f("max")
            );
        }
    }
}

/// The main table: one column per path, then each non-baseline path over relay.
fn print_table(order: &[&str], f: &BTreeMap<&str, Figures>, half_close: &BTreeMap<&str, bool>) {
    let rows = [
        ("upload, 1 stream (Gbit/s)", "upload_gbps"),
        ("download, 1 stream (Gbit/s)", "download_gbps"),
        ("upload, 8 streams (Gbit/s)", "parallel8_gbps"),
        ("upload, 64 streams (Gbit/s)", "parallel64_gbps"),
        ("RTT 1 B p50 (us)", "rtt1_p50_us"),
        ("RTT 1 B p99 (us)", "rtt1_p99_us"),
        ("RTT 1 B p99.9 (us)", "rtt1_p999_us"),
        ("RTT 1 KiB p50 (us)", "rtt1k_p50_us"),
        ("RTT 1 KiB p99 (us)", "rtt1k_p99_us"),
        ("setup p50 (us)", "setup_p50_us"),
        ("setup p99 (us)", "setup_p99_us"),
        ("new connections/s", "conns_per_sec"),
    ];
    let ratios: Vec<&str> = order
        .iter()
        .copied()
        .filter(|p| *p != "raw" && *p != "relay")
        .collect();
    let width = |name: &str| name.len().max(9);
    let mut head = format!("{:<30}", "figure");
    for p in order {
        head += &format!(" {:>w$}", p, w = width(p));
    }
    for p in &ratios {
        let r = format!("{p}/relay");
        head += &format!(" {:>w$}", r, w = r.len());
    }
    println!("\n{head}");
    for (label, key) in rows {
        let v = |p: &str| f[p][key];
        let mut line = format!("{label:<30}");
        for p in order {
            line += &format!(" {:>w$.1}", v(p), w = width(p));
        }
        for p in &ratios {
            line += &format!(" {:>w$.2}", v(p) / v("relay"), w = p.len() + 6);
        }
        println!("{line}");
    }
    let mut line = format!("{:<30}", "half-close gets through");
    for p in order {
        let yes = if half_close[p] { "yes" } else { "NO" };
        line += &format!(" {:>w$}", yes, w = width(p));
    }
    println!("{line}");
}

/// Per-process figures (CPU per GiB, memory per idle connection), one column per
/// client and server pair.
fn print_processes(order: &[&str], processes: &serde_json::Map<String, Value>) {
    let names: Vec<&str> = order
        .iter()
        .copied()
        .filter(|n| processes.contains_key(*n))
        .collect();
    let Some(first) = names.first().map(|n| &processes[*n]) else {
        return;
    };
    let width = |name: &str| name.len().max(9);
    let mut head = format!("\n{:<36}", "per process (server = edge for ours)");
    for n in &names {
        head += &format!(" {:>w$}", n, w = width(n));
    }
    println!("{head}");
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.retain(|k| k.as_str() != "server_role");
    keys.sort_by_key(|k| (!k.contains("cpu"), k.rsplit('_').next().unwrap().len(), *k));
    for k in keys {
        let mut line = format!("{k:<36}");
        for n in &names {
            let v = processes[*n][k.as_str()].as_f64().unwrap_or(f64::NAN);
            line += &format!(" {:>w$.2}", v, w = width(n));
        }
        println!("{line}");
    }
}

/// The WAN section: Mbit/s each way and the link's RTT, plain TCP against ours.
fn print_wan(w: &Value) {
    if w.get("skipped").is_some() {
        return;
    }
    println!("\nWAN: {}", w["link"].as_str().unwrap_or(""));
    println!(
        "{:<30} {:>9} {:>9} {:>9}",
        "figure", "tcp", "wss", "wss/tcp"
    );
    for (label, key) in [
        ("upload, 1 stream (Mbit/s)", "upload_mbps"),
        ("download, 1 stream (Mbit/s)", "download_mbps"),
        ("upload moved (MiB)", "upload_mib"),
        ("download moved (MiB)", "download_mib"),
        ("RTT 1 B p50 (ms)", "rtt1_p50_ms"),
    ] {
        let v = |p: &str| w["paths"][p][key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{label:<30} {:>9.2} {:>9.2} {:>9.2}",
            v("tcp"),
            v("wss"),
            v("wss") / v("tcp")
        );
    }
}
