//! `--metrics`: the client (`tcp`) and the edge serve Prometheus text that
//! `promtool check metrics` accepts, the counters move with real traffic, and a real
//! Prometheus server scraping both sees the series.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::login::echo;
use crate::support::origin::EchoOrigin;
use crate::support::{CI_TOKEN, Edge, Proc, tempdir, tunnel_tcp};

/// The address a process reported in its `metrics on http://ADDR/metrics` line.
fn metrics_addr(p: &mut Proc) -> SocketAddr {
    let line = p.wait_for("metrics on http://", Duration::from_secs(30));
    let rest = line.split("metrics on http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

/// `GET path` over plain HTTP/1.0; the body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the first sample line starting with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The metrics of `addr` once the gauge `open` reads 0 (within 30 s; then as they are).
fn settled(addr: SocketAddr, open: &str) -> String {
    scrape_until(addr, open, 0.0)
}

/// The metrics of `addr` once `series` reads `value` (within 30 s; then as they are).
fn scrape_until(addr: SocketAddr, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = get(addr, "/metrics");
        if sample(&text, series) == Some(value) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Running {
    _origin: EchoOrigin,
    _edge_proc: Edge,
    edge_metrics: SocketAddr,
    tcp: Proc,
    tcp_metrics: SocketAddr,
    local: SocketAddr,
}

fn start() -> Running {
    let origin = EchoOrigin::start();
    let mut edge = Edge::start_with_metrics(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        origin.addr
    ));
    let edge_metrics = metrics_addr(&mut edge.proc);
    let service = ["--id", "ci.access", "--secret", "s3cret"];
    let extra = [&service[..], &["--metrics", "127.0.0.1:0"]].concat();
    let (mut tcp, local) = tunnel_tcp(&edge, "http://db.test", &extra);
    let tcp_metrics = metrics_addr(&mut tcp);
    Running {
        _origin: origin,
        _edge_proc: edge,
        edge_metrics,
        tcp,
        tcp_metrics,
        local,
    }
}

#[test]
fn client_and_edge_metrics_pass_promtool_and_count_real_traffic() {
    let r = start();
    let payload = vec![7u8; 1 << 20];
    assert_eq!(echo(r.local, &payload).len(), payload.len());
    // The echo ends when the local side has everything; each process counts the
    // connection once its close handshake is through, a moment later.
    let client = settled(r.tcp_metrics, "tunnel_connections_open{tunnel=\"db.test\"}");
    promtool_accepts(&client);
    assert_eq!(
        sample(&client, "tunnel_connections_total{tunnel=\"db.test\"}"),
        Some(1.0),
        "{client}"
    );
    assert_eq!(
        sample(
            &client,
            "tunnel_bytes_total{direction=\"up\",tunnel=\"db.test\"}"
        ),
        Some(1048576.0),
        "{client}"
    );
    assert_eq!(
        sample(
            &client,
            "tunnel_bytes_total{direction=\"down\",tunnel=\"db.test\"}"
        ),
        Some(1048576.0),
        "{client}"
    );
    assert_eq!(
        sample(&client, "tunnel_connections_open{tunnel=\"db.test\"}"),
        Some(0.0),
        "{client}"
    );
    assert!(client.contains("tunnel_dial_seconds_bucket"), "{client}");
    assert!(!client.contains("s3cret"));
    let edge = settled(r.edge_metrics, "tunnel_edge_streams_open{app=\"db.test\"}");
    promtool_accepts(&edge);
    assert_eq!(
        sample(&edge, "tunnel_edge_streams_total{app=\"db.test\"}"),
        Some(1.0),
        "{edge}"
    );
    assert_eq!(
        sample(
            &edge,
            "tunnel_edge_bytes_total{app=\"db.test\",direction=\"up\"}"
        ),
        Some(1048576.0),
        "{edge}"
    );
    #[cfg(target_os = "linux")]
    assert!(edge.contains("process_resident_memory_bytes"), "{edge}");
    drop(r.tcp);
}

#[test]
fn a_real_prometheus_scrapes_client_and_edge() {
    let r = start();
    assert_eq!(echo(r.local, b"scraped"), b"scraped");
    let dir = tempdir();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tunnel\n    static_configs:\n      - targets: ['{}']\n  - job_name: edge\n    static_configs:\n      - targets: ['{}']\n",
            r.tcp_metrics, r.edge_metrics
        ),
    )
    .unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let data = dir.path().join("data");
    let prom = Proc::spawn(
        "prometheus",
        [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address={web}"),
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    let query = "/api/v1/query?query=tunnel_bytes_total%7Bdirection%3D%22up%22%7D%20%2B%20on()%20group_left%20sum(tunnel_edge_bytes_total%7Bdirection%3D%22up%22%7D)";
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(web) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(s, "GET {query} HTTP/1.0\r\nHost: {web}\r\n\r\n");
            last.clear();
            let _ = s.read_to_string(&mut last);
            // Both series present: client "up" bytes (7) plus edge "up" bytes (7).
            if last.contains("\"14\"") {
                drop(prom);
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "prometheus never saw both series; last answer:\n{last}\nprometheus stderr:\n{}",
        prom.stderr()
    );
}

/// A stream whose WebSocket is killed and resumed is counted once on each side,
/// as `resumed`; nothing counts it as failed.
#[test]
fn a_resumed_stream_is_counted_by_client_and_edge() {
    let r = start();
    let port: u16 = r
        ._edge_proc
        .connect_to()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut s = TcpStream::connect(r.local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut round = |byte: u8| {
        s.write_all(&[byte]).unwrap();
        let mut back = [0u8; 1];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back[0], byte);
    };
    round(b'a');
    assert!(
        crate::resume::kill_sockets_to(port) >= 1,
        "a WebSocket to kill"
    );
    round(b'b');
    let resumed = "tunnel_resumes_total{outcome=\"resumed\",tunnel=\"db.test\"}";
    let client = scrape_until(r.tcp_metrics, resumed, 1.0);
    assert_eq!(sample(&client, resumed), Some(1.0), "{client}");
    assert_eq!(
        sample(
            &client,
            "tunnel_resumes_total{outcome=\"failed\",tunnel=\"db.test\"}"
        ),
        None,
        "{client}"
    );
    promtool_accepts(&client);
    let edge_resumed = "tunnel_edge_resumes_total{app=\"db.test\",outcome=\"resumed\"}";
    let edge = scrape_until(r.edge_metrics, edge_resumed, 1.0);
    assert_eq!(sample(&edge, edge_resumed), Some(1.0), "{edge}");
    promtool_accepts(&edge);
}
