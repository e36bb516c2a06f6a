//! The WAN figure: single-stream throughput each way across a link into a network
//! namespace made for this run, with 25 ms each way (50 ms RTT) and 0.1% loss on the
//! way in. The link is a veth pair with netem; where the kernel has no netem (or
//! `BENCH_WAN_LINK=tun`), a pair of TUN devices with this process carrying the
//! packets between them (see the `tun` module) with the same delay and loss. The
//! origin (this bench re-executed with `--wan-origin`) and `tunnel edge` (over
//! `wss://`: off loopback the edge wants TLS) run inside the namespace; `tunnel tcp`
//! runs here and dials the edge across the link; plain TCP connects straight to the
//! origin across the same link. `BENCH_WAN_NETEM=off` measures the bare veth (no
//! delay, no loss) instead.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{measure, setup, tun};

/// One way's delay of the emulated link.
const DELAY: Duration = Duration::from_millis(25);

/// Share of packets lost on the way in (into the namespace).
const LOSS: f64 = 0.001;

/// What makes the link's delay and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emulator {
    /// netem on both ends of a veth pair.
    Netem,
    /// A TUN pair, this process forwarding between them.
    Tun,
    /// Nothing: the bare veth pair.
    None,
}

impl Emulator {
    /// The name in the JSON.
    fn name(self) -> &'static str {
        match self {
            Emulator::Netem => "netem",
            Emulator::Tun => "tun",
            Emulator::None => "none",
        }
    }

    /// What the link is, for the output.
    fn label(self) -> &'static str {
        match self {
            Emulator::Netem => {
                "veth into a namespace; netem 25 ms each way (50 ms RTT), loss 0.1% on the way in"
            }
            Emulator::Tun => {
                "userspace TUN pair forwarded by the bench: 25 ms each way (50 ms RTT), \
                 0.1% loss on the way in"
            }
            Emulator::None => {
                "bare veth into a namespace (BENCH_WAN_NETEM=off): no added delay, no loss"
            }
        }
    }
}

/// A namespace and the link into it (veth or TUN pair) made for this run, removed
/// (with anything still running inside) on drop, also when the bench panics.
pub struct Link {
    /// Namespace name, `tbench<pid>`.
    ns: String,
    /// The link's end in this namespace.
    host_if: String,
    /// The link's end inside the namespace.
    ns_if: String,
    /// Address of the end in this namespace.
    host_ip: Ipv4Addr,
    /// Address of the end inside the namespace.
    pub ns_ip: Ipv4Addr,
    /// Congestion control set on the link's routes (`BENCH_WAN_CC`), if any.
    cc: Option<String>,
    /// What makes the delay and loss.
    emulator: Emulator,
    /// The threads carrying packets across a TUN pair (and its descriptors).
    forwarder: Option<tun::Forwarder>,
}

impl Link {
    /// Bytes sent and received by the link's end in this namespace so far.
    fn counters(&self) -> (u64, u64) {
        let read = |what: &str| {
            let path = format!("/sys/class/net/{}/statistics/{what}", self.host_if);
            read_file(&path, None).parse().unwrap_or(0)
        };
        (read("tx_bytes"), read("rx_bytes"))
    }

    /// Packets dropped by each end's device because its queue was full (loss nobody
    /// asked for): here and inside the namespace.
    fn queue_drops(&self) -> (u64, u64) {
        let read = |dev: &str, ns| {
            let path = format!("/sys/class/net/{dev}/statistics/tx_dropped");
            read_file(&path, ns).parse().unwrap_or(0)
        };
        (read(&self.host_if, None), read(&self.ns_if, Some(&self.ns)))
    }

    /// Make every connection across the link use congestion control `cc`, whatever
    /// the system default says: a host route with `congctl` at each end.
    fn set_congestion_control(&mut self, cc: &str) -> Result<(), String> {
        let (host_ip, ns_ip) = (self.host_ip.to_string(), self.ns_ip.to_string());
        run(&[
            "ip",
            "route",
            "replace",
            &ns_ip,
            "dev",
            &self.host_if,
            "src",
            &host_ip,
            "congctl",
            cc,
        ])?;
        run(&[
            "ip",
            "-n",
            &self.ns,
            "route",
            "replace",
            &host_ip,
            "dev",
            &self.ns_if,
            "src",
            &ns_ip,
            "congctl",
            cc,
        ])?;
        self.cc = Some(cc.to_string());
        Ok(())
    }

    /// TCP's congestion control and buffer limits, here (the upload's sender) and
    /// inside the namespace (the download's).
    fn tcp_settings(&self) -> Value {
        let side = |ns| {
            let default = read_file("/proc/sys/net/ipv4/tcp_congestion_control", ns);
            json!({
                "congestion_control": self.cc.clone().unwrap_or(default),
                "congestion_control_from": if self.cc.is_some() { "BENCH_WAN_CC" } else { "sysctl" },
                "tcp_wmem": read_file("/proc/sys/net/ipv4/tcp_wmem", ns),
                "tcp_rmem": read_file("/proc/sys/net/ipv4/tcp_rmem", ns),
            })
        };
        json!({ "here": side(None), "namespace": side(Some(&self.ns)) })
    }
}

/// A small file's contents, whitespace collapsed, read here or inside namespace
/// `ns` (where /proc/sys/net and /sys/class/net show that namespace); empty if
/// unreadable.
fn read_file(path: &str, ns: Option<&str>) -> String {
    let text = match ns {
        None => std::fs::read_to_string(path).ok(),
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns, "cat", path])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
    };
    text.unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Remove the namespace, what runs in it, and the veth or TUN pair.
impl Drop for Link {
    fn drop(&mut self) {
        // Closing the TUN descriptors removes that pair; a veth pair is deleted.
        drop(self.forwarder.take());
        remove(&self.ns);
        if self.emulator != Emulator::Tun {
            let _ = run(&["ip", "link", "del", &self.host_if]);
        }
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

/// Make the namespace and the link into it: a veth pair, with netem on both ends for
/// [`Emulator::Netem`], or a TUN pair and its forwarder for [`Emulator::Tun`].
fn link(emulator: Emulator) -> Result<Link, String> {
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
    let tun = emulator == Emulator::Tun;
    let kind = if tun { "tbt" } else { "tbv" };
    let mut l = Link {
        ns: ns.clone(),
        host_if: format!("{kind}{pid}h"),
        ns_if: format!("{kind}{pid}n"),
        host_ip,
        ns_ip,
        cc: None,
        emulator,
        forwarder: None,
    };
    let ns_if = l.ns_if.clone();
    if tun {
        let host = tun::open(&l.host_if, None)?;
        let inner = tun::open(&ns_if, Some(&ns))?;
        l.forwarder = Some(tun::Forwarder::start(host, inner, DELAY, LOSS));
        // Point to point, each end with the other as its peer. A long queue, so the
        // device does not drop while the forwarder waits for a CPU.
        let (host_ip, ns_ip) = (host_ip.to_string(), ns_ip.to_string());
        let queue = ["mtu", "1500", "txqueuelen", "10000"];
        run(&[
            "ip", "addr", "add", &host_ip, "peer", &ns_ip, "dev", &l.host_if,
        ])?;
        run(&[&["ip", "link", "set", &l.host_if][..], &queue].concat())?;
        run(&[
            "ip", "-n", &ns, "addr", "add", &ns_ip, "peer", &host_ip, "dev", &ns_if,
        ])?;
        run(&[&["ip", "-n", &ns, "link", "set", &ns_if][..], &queue].concat())?;
    } else {
        let (host_cidr, ns_cidr) = (format!("{host_ip}/30"), format!("{ns_ip}/30"));
        run(&[
            "ip", "link", "add", &l.host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
        ])?;
        run(&["ip", "addr", "add", &host_cidr, "dev", &l.host_if])?;
        run(&["ip", "-n", &ns, "addr", "add", &ns_cidr, "dev", &ns_if])?;
    }
    run(&["ip", "link", "set", &l.host_if, "up"])?;
    run(&["ip", "-n", &ns, "link", "set", &ns_if, "up"])?;
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
    if emulator == Emulator::Netem {
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
/// is also printed). The link is netem's unless `BENCH_WAN_LINK=tun` (the userspace
/// TUN pair) or `BENCH_WAN_NETEM=off` (the bare veth); without netem, the TUN pair.
/// `BENCH_WAN_CC=cubic` (say) sets TCP's congestion control on the link's routes.
pub fn section(bin: &Path, secs: u64) -> Value {
    let emulator = if std::env::var("BENCH_WAN_LINK").is_ok_and(|v| v == "tun") {
        Emulator::Tun
    } else if std::env::var("BENCH_WAN_NETEM").is_ok_and(|v| v == "off") {
        Emulator::None
    } else {
        Emulator::Netem
    };
    match measure_wan(bin, Duration::from_secs(secs), emulator) {
        Ok(v) => v,
        Err(why) => {
            println!("WAN: skipped ({why})");
            json!({ "skipped": why })
        }
    }
}

/// Make the link (the TUN pair where netem fails), start origin, edge and client,
/// and measure both paths, each throughput figure for `d`.
fn measure_wan(bin: &Path, d: Duration, emulator: Emulator) -> Result<Value, String> {
    if !is_root() {
        return Err("not root: cannot make a network namespace".into());
    }
    if setup::which("ip").is_none() {
        return Err("no `ip` on PATH (iproute2)".into());
    }
    let mut link = match link(emulator) {
        Err(e) if emulator == Emulator::Netem => {
            println!("WAN: {e}; emulating the link in userspace instead");
            link(Emulator::Tun)
        }
        made => made,
    }?;
    if let Ok(cc) = std::env::var("BENCH_WAN_CC") {
        link.set_congestion_control(&cc)?;
    }
    let mut origin_cmd = setup::child_command("ip");
    origin_cmd
        .args(["netns", "exec", &link.ns])
        .arg(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("--wan-origin")
        .arg(SocketAddr::from((link.ns_ip, 0)).to_string())
        // The origin exits when this pipe closes, i.e. when the bench is gone.
        .stdin(Stdio::piped());
    let (_origin, origin) = setup::spawn_cmd(origin_cmd)?;
    let tunnel = setup::tunnel_at(bin, origin, true, Some(&link.ns), (link.ns_ip, 0).into())?;
    let label = link.emulator.label();
    let secs = d.as_secs_f64();
    println!("WAN: {label}; {secs} s per throughput figure");
    let mut paths = serde_json::Map::new();
    for (name, addr) in [("tcp", origin), ("wss", tunnel.addr)] {
        let figures = std::panic::catch_unwind(|| {
            let rtt = measure::latency(addr, 1, 20);
            let (up, up_bytes) = measure::upload_for(addr, d);
            let (down, down_bytes) = measure::download_for(addr, d);
            json!({
                "upload_mbps": up * 1e3,
                "upload_mib": up_bytes as f64 / (1 << 20) as f64,
                "download_mbps": down * 1e3,
                "download_mib": down_bytes as f64 / (1 << 20) as f64,
                "rtt1_p50_ms": rtt.p50 / 1e3,
            })
        })
        .unwrap_or_else(|_| json!({ "error": "measurement failed (see the panic above)" }));
        paths.insert(name.into(), figures);
    }
    // Proof that the traffic crossed the link: what the four figures moved, plus
    // headers.
    let (tx, rx) = link.counters();
    let (drops_here, drops_inside) = link.queue_drops();
    println!(
        "WAN: {} carried {tx} bytes out, {rx} bytes in; device queues dropped {} packets \
         here, {} inside",
        link.host_if, drops_here, drops_inside
    );
    let tcp = link.tcp_settings();
    let t = |side: &str, key: &str| tcp[side][key].as_str().unwrap_or("").to_string();
    println!(
        "WAN: TCP congestion control {} here, {} inside (from {}); tcp_wmem {} here, {} inside",
        t("here", "congestion_control"),
        t("namespace", "congestion_control"),
        t("here", "congestion_control_from"),
        t("here", "tcp_wmem"),
        t("namespace", "tcp_wmem")
    );
    let emulated = link.emulator != Emulator::None;
    let mut out = json!({
        "link": label,
        "emulator": link.emulator.name(),
        "link_tx_bytes": tx,
        "link_rx_bytes": rx,
        "queue_drops": { "here": drops_here, "namespace": drops_inside },
        "tcp": tcp,
        "rtt_ms": if emulated { 50 } else { 0 },
        "loss_pct": if emulated { 0.1 } else { 0.0 },
        "seconds_per_figure": secs,
        "paths": paths,
    });
    if let Some(f) = &link.forwarder {
        let c = f.counts();
        println!(
            "WAN: the forwarder carried {} packets in (dropped {}, {:.3}%) and {} out; {} \
             refused by a device",
            c.packets_in,
            c.dropped_in,
            c.dropped_in as f64 * 100.0 / (c.packets_in + c.dropped_in).max(1) as f64,
            c.packets_out,
            c.write_errors
        );
        out["forwarder"] = json!(c);
    }
    Ok(out)
}

/// The hidden `--wan-origin ADDR` mode: serve the origin on ADDR, say where on
/// stderr, and exit when stdin closes.
pub fn origin_main(bind: &str) {
    let addr = setup::origin_on(bind.parse().expect("--wan-origin ADDR"));
    eprintln!("listening on {addr}");
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}
