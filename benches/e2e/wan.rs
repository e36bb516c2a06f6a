//! The WAN figure: single-stream throughput each way across a veth link into a
//! network namespace made for this run, where netem adds 25 ms each way (50 ms RTT)
//! and 0.1% loss on the way in. The origin (this bench re-executed with
//! `--wan-origin`) and `tunnel edge` (over `wss://`: off loopback the edge wants TLS)
//! run inside the namespace; `tunnel tcp` runs here and dials the edge across the
//! link; plain TCP connects straight to the origin across the same link.
//! `BENCH_WAN_NETEM=off` measures the bare veth (no delay, no loss) instead, to
//! prove the plumbing where the kernel has no netem.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::{measure, setup};

/// A namespace and veth pair made for this run, removed (with anything still
/// running inside) on drop, also when the bench panics.
pub struct Link {
    /// Namespace name, `tbench<pid>`.
    ns: String,
    /// The veth end in this namespace.
    host_if: String,
    /// Address of the end inside the namespace.
    pub ns_ip: Ipv4Addr,
}

impl Link {
    /// Bytes sent and received by the veth end in this namespace so far.
    fn counters(&self) -> (u64, u64) {
        let read = |what: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{what}", self.host_if))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        (read("tx_bytes"), read("rx_bytes"))
    }
}

/// Remove the namespace, what runs in it, and the veth pair.
impl Drop for Link {
    fn drop(&mut self) {
        remove(&self.ns);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// Kill what runs in namespace `ns`, then delete it (its veth end goes with it).
fn remove(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = run(&["ip", "netns", "del", ns]);
}

/// Run a command; on failure, its first line of stderr.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "`{}` failed: {}",
        args.join(" "),
        err.lines().next().unwrap_or("").trim()
    ))
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Remove namespaces left by earlier runs that were killed (their pid is gone).
fn clean_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = name.strip_prefix("tbench")
            && pid.parse::<u32>().is_ok()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            remove(name);
        }
    }
}

/// Make the namespace and the veth link, with netem on both ends when `netem`.
fn link(netem: bool) -> Result<Link, String> {
    clean_stale();
    let pid = std::process::id();
    let ns = format!("tbench{pid}");
    // A /30 of its own per pid, so concurrent runs do not clash.
    let (b, c, d) = (
        160 + ((pid >> 14) % 32) as u8,
        ((pid >> 6) & 0xff) as u8,
        ((pid & 0x3f) * 4) as u8,
    );
    let host_ip = Ipv4Addr::new(10, b, c, d + 1);
    let ns_ip = Ipv4Addr::new(10, b, c, d + 2);
    run(&["ip", "netns", "add", &ns])?;
    let l = Link {
        ns: ns.clone(),
        host_if: format!("tbv{pid}h"),
        ns_ip,
    };
    let ns_if = format!("tbv{pid}n");
    let (host_cidr, ns_cidr) = (format!("{host_ip}/30"), format!("{ns_ip}/30"));
    run(&[
        "ip", "link", "add", &l.host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
    ])?;
    run(&["ip", "addr", "add", &host_cidr, "dev", &l.host_if])?;
    run(&["ip", "link", "set", &l.host_if, "up"])?;
    run(&["ip", "-n", &ns, "addr", "add", &ns_cidr, "dev", &ns_if])?;
    run(&["ip", "-n", &ns, "link", "set", &ns_if, "up"])?;
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
    if netem {
        if setup::which("tc").is_none() {
            return Err("no `tc` on PATH".into());
        }
        // The queue must hold a 50 ms window at a few Gbit/s, or netem drops itself.
        let q = ["root", "netem", "delay", "25ms"];
        let limit = ["limit", "100000"];
        let host: Vec<&str> = [&["tc", "qdisc", "add", "dev", &l.host_if][..], &q]
            .concat()
            .into_iter()
            .chain(["loss", "0.1%"])
            .chain(limit)
            .collect();
        run(&host).map_err(|e| format!("netem unavailable: {e}"))?;
        let inner: Vec<&str> = [
            &[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &ns_if,
            ][..],
            &q,
            &limit,
        ]
        .concat();
        run(&inner).map_err(|e| format!("netem unavailable: {e}"))?;
    }
    Ok(l)
}

/// Run the WAN section; JSON with the figures, or `{"skipped": reason}` (the reason
/// is also printed).
pub fn section(bin: &Path, bytes: u64) -> Value {
    let netem = std::env::var("BENCH_WAN_NETEM").map_or(true, |v| v != "off");
    match measure_wan(bin, bytes, netem) {
        Ok(v) => v,
        Err(why) => {
            println!("WAN: skipped ({why})");
            json!({ "skipped": why })
        }
    }
}

/// Make the link, start origin, edge and client, and measure both paths.
fn measure_wan(bin: &Path, bytes: u64, netem: bool) -> Result<Value, String> {
    if !is_root() {
        return Err("not root: cannot make a network namespace".into());
    }
    if setup::which("ip").is_none() {
        return Err("no `ip` on PATH (iproute2)".into());
    }
    let link = link(netem).map_err(|e| {
        if netem {
            format!("{e}; BENCH_WAN_NETEM=off measures the bare veth")
        } else {
            e
        }
    })?;
    let mut origin_cmd = Command::new("ip");
    origin_cmd
        .args(["netns", "exec", &link.ns])
        .arg(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("--wan-origin")
        .arg(SocketAddr::from((link.ns_ip, 0)).to_string())
        // The origin exits when this pipe closes, i.e. when the bench is gone.
        .stdin(Stdio::piped());
    let (_origin, origin) = setup::spawn_cmd(origin_cmd)?;
    let tunnel = setup::tunnel_at(bin, origin, true, Some(&link.ns), (link.ns_ip, 0).into())?;
    let label = if netem {
        "veth into a namespace; netem 25 ms each way (50 ms RTT), loss 0.1% on the way in"
    } else {
        "bare veth into a namespace (BENCH_WAN_NETEM=off): no added delay, no loss"
    };
    println!("WAN: {label}; {bytes} bytes per figure");
    let mut paths = serde_json::Map::new();
    for (name, addr) in [("tcp", origin), ("wss", tunnel.addr)] {
        let figures = std::panic::catch_unwind(|| {
            let rtt = measure::latency(addr, 1, 20);
            json!({
                "upload_mbps": measure::upload(addr, bytes) * 1e3,
                "download_mbps": measure::download(addr, bytes) * 1e3,
                "rtt1_p50_ms": rtt.p50 / 1e3,
            })
        })
        .unwrap_or_else(|_| json!({ "error": "measurement failed (see the panic above)" }));
        paths.insert(name.into(), figures);
    }
    // Proof that the traffic crossed the link: 4 figures of `bytes`, plus headers.
    let (tx, rx) = link.counters();
    println!("WAN: the veth carried {tx} bytes out, {rx} bytes in");
    Ok(json!({
        "link": label,
        "veth_tx_bytes": tx,
        "veth_rx_bytes": rx,
        "netem": netem,
        "rtt_ms": if netem { 50 } else { 0 },
        "loss_pct": if netem { 0.1 } else { 0.0 },
        "bytes": bytes,
        "paths": paths,
    }))
}

/// The hidden `--wan-origin ADDR` mode: serve the origin on ADDR, say where on
/// stderr, and exit when stdin closes.
pub fn origin_main(bind: &str) {
    let addr = setup::origin_on(bind.parse().expect("--wan-origin ADDR"));
    eprintln!("listening on {addr}");
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}
