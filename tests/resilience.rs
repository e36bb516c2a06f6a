//! Faults, end to end (issue 12, bugs A to E): a drain that runs out of time, a slow
//! reader, a frozen edge, a dead edge, and healthy sessions that end untidily. Each
//! runs the real binary against real sockets on loopback. What a test checks is how
//! a stream ends (a reset or a clean end) and what the logs say, never how fast.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::origin::{random_bytes, sha256_hex};
use crate::support::proc::output_with_timeout;
use crate::support::sshd::{Sshd, shell_quote};
use crate::support::{self, CI_TOKEN, Edge, Proc, bin, tunnel_tcp};

const SERVICE: [&str; 4] = ["--id", "ci.access", "--secret", "s3cret"];
/// Generous bound for anything that should end a stream (not a speed check).
const END: Duration = Duration::from_secs(60);

fn app(host: &str, origin: SocketAddr) -> String {
    format!(
        "[[apps]]\nhostname = \"{host}\"\norigin = \"{origin}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}"
    )
}

/// An origin that runs `handler` on its first connection, in a thread.
fn origin<F: FnOnce(TcpStream) + Send + 'static>(handler: F) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            handler(s);
        }
    });
    addr
}

/// An origin that writes without end until its socket fails.
fn endless_origin() -> SocketAddr {
    origin(|mut s| {
        let chunk = vec![0x5au8; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
    })
}

/// An origin that reads until its socket ends, counting bytes into `count`, and
/// reports how the stream ended: `Ok(())` for EOF, the error kind otherwise.
fn sink_origin(count: Arc<AtomicU64>) -> (SocketAddr, mpsc::Receiver<Result<(), ErrorKind>>) {
    let (tx, rx) = mpsc::channel();
    let addr = origin(move |mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    count.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) => break Err(e.kind()),
            }
        };
        let _ = tx.send(end);
    });
    (addr, rx)
}

/// Read until the stream ends; `Ok(bytes)` on a clean EOF, the error kind otherwise.
fn read_to_end(s: &mut TcpStream) -> Result<Vec<u8>, ErrorKind> {
    s.set_read_timeout(Some(END)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.kind()),
        }
    }
}

/// Read exactly `n` bytes (a stream that is flowing).
fn read_some(s: &mut TcpStream, n: usize) {
    s.set_read_timeout(Some(END)).unwrap();
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("the stream flows");
}

/// Wait until `count` reaches `at_least`, or panic after [`END`].
fn wait_count(count: &AtomicU64, at_least: u64) {
    let deadline = Instant::now() + END;
    while count.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "the stream never started flowing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines at WARN or above in a log.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// Bug A: a download still running when the grace period ends is reset, never
/// closed as if complete.
#[test]
fn a_download_past_the_grace_period_is_reset_not_ended() {
    let edge = Edge::start(&app("dl.test", endless_origin()));
    let mut args = SERVICE.to_vec();
    args.extend(["--grace-period", "300ms"]);
    let (mut tcp, local) = tunnel_tcp(&edge, "http://dl.test", &args);
    let mut s = TcpStream::connect(local).unwrap();
    read_some(&mut s, 1 << 20);
    tcp.terminate();
    // Keep reading: the transfer goes on through the drain, then must be cut.
    let end = read_to_end(&mut s).map(|got| got.len());
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the local socket must be reset; stderr:\n{}",
        tcp.stderr()
    );
    assert!(tcp.wait_exit(END).success(), "stderr:\n{}", tcp.stderr());
    assert!(tcp.stderr().contains("resetting them"), "{}", tcp.stderr());
}

/// Bug A, mirrored: an upload still running when the edge's grace period ends
/// reaches the origin as a reset.
#[test]
fn an_upload_past_the_edges_grace_period_resets_the_origin() {
    let count = Arc::new(AtomicU64::new(0));
    let (origin, ended) = sink_origin(count.clone());
    let mut edge = Edge::start_args(&app("ul.test", origin), &["--grace-period", "300ms"]);
    let (_tcp, local) = tunnel_tcp(&edge, "http://ul.test", &SERVICE);
    let mut s = TcpStream::connect(local).unwrap();
    std::thread::spawn(move || {
        let chunk = vec![0xa5u8; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
    });
    wait_count(&count, 1 << 20);
    edge.proc.terminate();
    let end = ended.recv_timeout(END).expect("the origin's stream ends");
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "the origin socket must be reset; edge stderr:\n{}",
        edge.proc.stderr()
    );
    assert!(edge.proc.wait_exit(END).success());
}

/// Bug D: when the edge cannot be reached, an app that waits for the server to
/// speak first (MySQL, SMTP) sees a reset, not an orderly empty close.
#[test]
fn a_failed_dial_resets_the_local_socket() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let mut args = vec![
        "tcp",
        "--hostname",
        "http://db.test",
        "--connect-to",
        &dead_addr,
        "--url",
        "127.0.0.1:0",
    ];
    args.extend(SERVICE);
    let mut tcp = Proc::spawn(bin(), args, &[]);
    let local = tcp.wait_listening();
    let mut s = TcpStream::connect(local).unwrap();
    let end = read_to_end(&mut s).map(|got| got.len());
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "stderr:\n{}",
        tcp.stderr()
    );
}

/// Bug B: a local reader that pauses for many keepalive periods is backpressure,
/// not a dead edge; afterwards it gets every byte.
#[test]
fn a_paused_reader_outlives_many_keepalive_periods_and_gets_every_byte() {
    const SIZE: usize = 16 << 20;
    let data = random_bytes(SIZE, 0xb);
    let want = sha256_hex(&data);
    let origin = origin(move |mut s| {
        let _ = s.write_all(&data);
        let _ = s.shutdown(Shutdown::Write);
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let edge = Edge::start(&app("slow.test", origin));
    let mut args = SERVICE.to_vec();
    args.extend([
        "--keepalive-interval",
        "200ms",
        "--keepalive-timeout",
        "300ms",
    ]);
    let (tcp, local) = tunnel_tcp(&edge, "http://slow.test", &args);
    let mut s = TcpStream::connect(local).unwrap();
    let mut first = vec![0u8; 64 * 1024];
    s.set_read_timeout(Some(END)).unwrap();
    s.read_exact(&mut first).unwrap();
    // A pause of ten keepalive cycles (interval + timeout) with the tunnel's
    // buffers full: the old code declared the edge dead after one.
    std::thread::sleep(Duration::from_secs(5));
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_end(&mut s);
    let rest = rest.unwrap_or_else(|e| panic!("stream failed ({e:?}); stderr:\n{}", tcp.stderr()));
    first.extend_from_slice(&rest);
    assert_eq!(first.len(), SIZE, "bytes received");
    assert_eq!(sha256_hex(&first), want, "bytes differ");
    assert!(
        warnings(&tcp.stderr()).is_empty(),
        "stderr:\n{}",
        tcp.stderr()
    );
}

/// CPU time (ticks) and context switches of process `pid`, all threads.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("status");
        let Ok(status) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches")
                || line.starts_with("nonvoluntary_ctxt_switches")
            {
                switches += line
                    .split_whitespace()
                    .last()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
    }
    (ticks, switches)
}

/// Bug C: an edge that freezes (SIGSTOP) while data waits to go up is detected
/// within keepalive interval + timeout, the local socket is reset, and the tunnel
/// sleeps meanwhile instead of waking every millisecond.
#[test]
fn a_frozen_edge_is_detected_while_data_waits_and_the_tunnel_stays_idle() {
    let count = Arc::new(AtomicU64::new(0));
    let (origin, _ended) = sink_origin(count.clone());
    // Not resumable: this is about detecting the frozen edge; a resumable stream
    // would then redial the frozen edge for its resume window.
    let edge = Edge::start(&app("frozen.test", origin).replacen(
        "allow",
        "resume_window = \"0\"\nallow",
        1,
    ));
    let mut args = SERVICE.to_vec();
    args.extend(["--keepalive-interval", "1s", "--keepalive-timeout", "6s"]);
    let (mut tcp, local) = tunnel_tcp(&edge, "http://frozen.test", &args);
    let mut s = TcpStream::connect(local).unwrap();
    let chunk = vec![0xc3u8; 64 * 1024];
    s.write_all(&chunk).unwrap();
    wait_count(&count, chunk.len() as u64);
    edge.proc.signal("STOP");
    // Write until every buffer on the way is full (no progress for a second).
    s.set_nonblocking(true).unwrap();
    let mut stuck_since = Instant::now();
    while stuck_since.elapsed() < Duration::from_secs(1) {
        match s.write(&chunk) {
            Ok(_) => stuck_since = Instant::now(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!(
                "write failed before detection: {e}; stderr:\n{}",
                tcp.stderr()
            ),
        }
    }
    s.set_nonblocking(false).unwrap();
    // A ping is due (or overdue) now and cannot leave; the old code re-armed its
    // timer every millisecond from here on.
    let pid = tcp.child.id();
    let (ticks0, switches0) = cpu_and_switches(pid);
    std::thread::sleep(Duration::from_secs(2));
    let (ticks1, switches1) = cpu_and_switches(pid);
    let end = read_to_end(&mut s).map(|got| got.len());
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "stderr:\n{}",
        tcp.stderr()
    );
    tcp.wait_for("presumed dead", END);
    // Generous: an idle process uses next to nothing; a spinning timer woke
    // hundreds of times a second.
    assert!(
        switches1 - switches0 < 100,
        "{} context switches in 2 s while waiting",
        switches1 - switches0
    );
    assert!(
        ticks1 - ticks0 < 50,
        "{} clock ticks of CPU in 2 s while waiting",
        ticks1 - ticks0
    );
}

/// The edge's own keepalive is set in edge.toml (`keepalive_interval`,
/// `keepalive_timeout`): a client that freezes (SIGSTOP) is presumed dead after the
/// configured time, not the default 114 s, and its origin socket is reset, never
/// closed as if the stream were complete.
#[test]
fn the_edges_keepalive_is_configurable_and_finds_a_frozen_client() {
    let count = Arc::new(AtomicU64::new(0));
    let (origin, ended) = sink_origin(count.clone());
    let edge = Edge::start_with(
        &app("still.test", origin).replacen("allow", "resume_window = \"0\"\nallow", 1),
        "keepalive_interval = \"500ms\"\nkeepalive_timeout = \"1s\"",
    );
    let (tcp, local) = tunnel_tcp(&edge, "http://still.test", &SERVICE);
    let mut s = TcpStream::connect(local).unwrap();
    s.write_all(b"hello").unwrap();
    wait_count(&count, 5);
    tcp.signal("STOP");
    // The default keepalive would take 54 + 60 s, longer than this wait.
    let end = ended.recv_timeout(END);
    tcp.signal("CONT");
    assert_eq!(
        end,
        Ok(Err(ErrorKind::ConnectionReset)),
        "edge:\n{}",
        edge.proc.stderr()
    );
    assert!(
        edge.proc.stderr().contains("presumed dead"),
        "edge:\n{}",
        edge.proc.stderr()
    );
}

/// Bug E (1): an origin that resets its socket after both directions finished
/// (PostgreSQL after `Terminate`) ends the stream cleanly: the client gets the whole
/// reply and an orderly end, and neither log warns.
#[test]
fn an_origin_reset_after_both_directions_finished_is_a_clean_end() {
    let reply = random_bytes(100_000, 0xe1);
    let want = reply.clone();
    let origin = origin(move |mut s| {
        let _ = std::io::copy(&mut s, &mut std::io::sink());
        s.write_all(&reply).unwrap();
        // Close with a reset instead of a FIN.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let mut edge = Edge::start_args(&app("pg.test", origin), &["--log-level", "debug"]);
    let (mut tcp, local) = tunnel_tcp(&edge, "http://pg.test", &SERVICE);
    let mut s = TcpStream::connect(local).unwrap();
    s.write_all(b"Terminate").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_to_end(&mut s);
    let got = got.unwrap_or_else(|e| {
        panic!(
            "stream failed ({e:?})\n--- tunnel ---\n{}\n--- edge ---\n{}",
            tcp.stderr(),
            edge.proc.stderr()
        )
    });
    assert!(got == want, "reply differs ({} bytes)", got.len());
    edge.proc.wait_for("stream closed", END);
    // Stop both (draining) so that every line is written before reading the logs.
    tcp.terminate();
    edge.proc.terminate();
    tcp.wait_exit(END);
    edge.proc.wait_exit(END);
    assert!(
        warnings(&tcp.stderr()).is_empty(),
        "tunnel warned:\n{}",
        tcp.stderr()
    );
    assert!(
        warnings(&edge.proc.stderr()).is_empty(),
        "edge warned:\n{}",
        edge.proc.stderr()
    );
}

/// Bug E (2): OpenSSH sends SIGHUP to its ProxyCommand when it exits. That is a
/// clean end of input for `tunnel ssh`: the stream is closed properly and neither
/// tunnel's log file nor the edge warns.
#[test]
fn an_ssh_session_that_ends_leaves_no_warning_in_either_log() {
    let sshd = Sshd::start();
    sshd.trust_host("ssh.test");
    let mut edge = Edge::start_args(&app("ssh.test", sshd.addr()), &["--log-level", "debug"]);
    let logs = support::tempdir();
    let logfile = logs.path().join("tunnel.log");
    let proxy = format!(
        "{} ssh --hostname http://%h --connect-to {} --id ci.access --secret s3cret --logfile {}",
        shell_quote(bin().to_str().unwrap()),
        edge.connect_to(),
        shell_quote(logfile.to_str().unwrap())
    );
    let mut cmd = sshd.command("ssh", Some(&proxy));
    cmd.arg(format!("{}@ssh.test", sshd.user)).arg("echo hello");
    let out = output_with_timeout(cmd, END);
    assert!(
        out.status.success(),
        "ssh failed: {}\n--- edge ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        edge.proc.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    // The edge logs the stream's end either way; then stop it to flush its log.
    let deadline = Instant::now() + END;
    while !edge.proc.stderr().contains("stream closed")
        && !edge.proc.stderr().contains("stream failed")
    {
        assert!(Instant::now() < deadline, "{}", edge.proc.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    edge.proc.terminate();
    edge.proc.wait_exit(END);
    let edge_log = edge.proc.stderr();
    assert!(warnings(&edge_log).is_empty(), "edge warned:\n{edge_log}");
    let tunnel_log = std::fs::read_to_string(&logfile).unwrap_or_default();
    assert!(
        warnings(&tunnel_log).is_empty(),
        "tunnel ssh warned:\n{tunnel_log}"
    );
}

/// Bug E (2): in listener mode SIGHUP takes the one shutdown path, as SIGTERM does.
#[test]
fn sighup_stops_a_listener_through_the_shutdown_path() {
    let edge = Edge::start(&app("hup.test", endless_origin()));
    let (mut tcp, _) = tunnel_tcp(&edge, "http://hup.test", &SERVICE);
    tcp.signal("HUP");
    let status = tcp.wait_exit(END);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", tcp.stderr());
    assert!(tcp.stderr().contains("shutting down"), "{}", tcp.stderr());
}

/// The keepalive flags refuse zero with a usage error naming the flag.
#[test]
fn a_zero_keepalive_is_a_usage_error() {
    let out = support::run(
        &[
            "tcp",
            "--hostname",
            "http://db.test",
            "--url",
            "127.0.0.1:0",
            "--keepalive-timeout",
            "0s",
        ],
        &[],
    );
    support::assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--keepalive-timeout"), "{err}");
}
