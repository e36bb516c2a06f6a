//! Resumable streams (issue 12): the WebSocket under a live `tunnel tcp` stream is
//! killed (`ss -K` on the client's socket to the edge, so both ends see a reset);
//! the local socket stays open, the client redials and the stream goes on. Real
//! binaries, real sockets on loopback; the tests need root for `ss -K` (and `nft`,
//! for the black hole).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::origin::random_bytes;
use crate::support::{CI_TOKEN, Edge, tunnel_tcp};

const SERVICE: [&str; 4] = ["--id", "ci.access", "--secret", "s3cret"];
/// Generous bound for anything that should happen (not a speed check).
const END: Duration = Duration::from_secs(120);

fn app(host: &str, origin: SocketAddr, extra: &str) -> String {
    format!(
        "[[apps]]\nhostname = \"{host}\"\norigin = \"{origin}\"\nallow = [\"service:ci\"]\n{extra}\n{CI_TOKEN}"
    )
}

/// Kill every established TCP socket whose destination port is `port` (the
/// client's sockets to the edge): the kernel resets both ends. Returns how many.
pub fn kill_sockets_to(port: u16) -> usize {
    let out = Command::new("ss")
        .args(["-K", "-t", "-n", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss runs");
    assert!(
        out.status.success(),
        "ss -K failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A header line, then one line per killed socket.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Wait until `count` reaches `at_least`, or panic after [`END`].
fn wait_count(count: &AtomicU64, at_least: u64, what: &str) {
    let deadline = Instant::now() + END;
    while count.load(Ordering::SeqCst) < at_least {
        assert!(Instant::now() < deadline, "{what}: stalled at {count:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Send `data` on `s` (then EOF) while reading it to the end, counting what
/// arrives into `count`. Returns the sha256 of what arrived, or how it ended.
fn exchange(s: TcpStream, data: Arc<Vec<u8>>, count: Arc<AtomicU64>) -> Result<String, ErrorKind> {
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let r = w.write_all(&data);
        let _ = w.shutdown(Shutdown::Write);
        r.map_err(|e| e.kind())
    });
    let mut r = s;
    r.set_read_timeout(Some(END)).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let end = loop {
        match r.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                h.update(&buf[..n]);
                count.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) => break Err(e.kind()),
        }
    };
    let wrote = writer.join().unwrap();
    end?;
    wrote?;
    Ok(format!("{:x}", h.finalize()))
}

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// An origin that runs [`exchange`] with `data` on its first connection; the
/// result comes on the channel.
fn exchange_origin(
    data: Arc<Vec<u8>>,
    count: Arc<AtomicU64>,
) -> (SocketAddr, mpsc::Receiver<Result<String, ErrorKind>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let _ = tx.send(exchange(s, data, count));
        }
    });
    (addr, rx)
}

/// (a) 64 MiB each way through `tunnel tcp` and `tunnel edge`; the client's
/// WebSocket is killed twice in the middle (the second resume needs the rotated
/// ticket). Both directions arrive whole.
#[test]
fn a_bulk_transfer_survives_its_websocket_being_killed_twice() {
    bulk_transfer_through_two_kills("");
}

/// The same with the smallest replay buffer the edge takes (`resume_buffer`, 128
/// KiB): backpressure on the edge's side keeps every byte across both resumes.
#[test]
fn a_small_resume_buffer_still_loses_nothing_across_kills() {
    bulk_transfer_through_two_kills("resume_buffer = 131072\n");
}

/// 64 MiB each way through an app with `extra` config, the WebSocket killed twice.
fn bulk_transfer_through_two_kills(extra: &str) {
    const SIZE: usize = 64 << 20;
    let up = Arc::new(random_bytes(SIZE, 0x1a));
    let down = Arc::new(random_bytes(SIZE, 0x2b));
    let at_origin = Arc::new(AtomicU64::new(0));
    let (origin, origin_end) = exchange_origin(down.clone(), at_origin.clone());
    let edge = Edge::start(&app("bulk.test", origin, extra));
    let (tcp, local) = tunnel_tcp(&edge, "http://bulk.test", &SERVICE);
    let at_client = Arc::new(AtomicU64::new(0));
    let s = TcpStream::connect(local).unwrap();
    let client = {
        let (up, at_client) = (up.clone(), at_client.clone());
        std::thread::spawn(move || exchange(s, up, at_client))
    };
    for (i, mark) in [SIZE / 4, SIZE / 2].into_iter().enumerate() {
        // Both directions under way (and neither finished, so the stream lives).
        wait_count(&at_origin, mark as u64, "upload");
        wait_count(&at_client, mark as u64, "download");
        let killed = kill_sockets_to(edge.addr.port());
        assert_eq!(killed, 1, "kill {i}: one WebSocket to the edge");
        // The next kill only once the stream runs on its new WebSocket.
        let deadline = Instant::now() + END;
        while tcp.stderr().matches("resumed").count() <= i {
            assert!(Instant::now() < deadline, "no resume:\n{}", tcp.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let got_down = client.join().unwrap();
    let got_up = origin_end.recv_timeout(END).expect("the origin finishes");
    assert_eq!(
        got_down,
        Ok(sha(&down)),
        "download; client stderr:\n{}",
        tcp.stderr()
    );
    assert_eq!(
        got_up,
        Ok(sha(&up)),
        "upload; edge stderr:\n{}",
        edge.proc.stderr()
    );
    assert_eq!(
        tcp.stderr().matches("resumed").count(),
        2,
        "{}",
        tcp.stderr()
    );
}

/// An origin that echoes its first connection and reports how it ended: `Ok(())`
/// for EOF, the error kind otherwise.
fn echo_origin() -> (SocketAddr, mpsc::Receiver<Result<(), ErrorKind>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = vec![0u8; 64 * 1024];
            let end = loop {
                match s.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if let Err(e) = s.write_all(&buf[..n]) {
                            break Err(e.kind());
                        }
                    }
                    Err(e) => break Err(e.kind()),
                }
            };
            let _ = tx.send(end);
        }
    });
    (addr, rx)
}

/// (d) and the client's side of a refusal: a client that cannot come back within
/// the window (it is stopped) leaves the edge to reset the origin when the window
/// ends; the resume it tries afterwards finds no stream, and its local socket is
/// reset, never closed as if complete.
#[test]
fn the_window_ending_resets_the_origin_and_a_late_resume_resets_the_local_socket() {
    let (origin, origin_end) = echo_origin();
    let mut edge = Edge::start(&app("late.test", origin, "resume_window = \"3s\""));
    let (mut tcp, local) = tunnel_tcp(&edge, "http://late.test", &SERVICE);
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(END)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    tcp.signal("STOP");
    assert_eq!(kill_sockets_to(edge.addr.port()), 1);
    edge.proc.wait_for("keeping the origin", END);
    assert!(
        origin_end.try_recv().is_err(),
        "the origin must stay open while the stream waits for its client"
    );
    edge.proc.wait_for("resume window of 3s passed", END);
    let end = origin_end
        .recv_timeout(END)
        .expect("the origin's stream ends");
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "edge stderr:\n{}",
        edge.proc.stderr()
    );
    tcp.signal("CONT");
    let mut rest = Vec::new();
    let got = s.read_to_end(&mut rest).map_err(|e| e.kind());
    assert_eq!(
        got,
        Err(ErrorKind::ConnectionReset),
        "stderr:\n{}",
        tcp.stderr()
    );
    tcp.wait_for("could not be resumed", END);
}

/// A raw upgrade request to `edge` for `host` with `headers`; returns the
/// response head and the open stream.
fn upgrade(edge: &Edge, host: &str, headers: &[(&str, &str)]) -> (String, TcpStream) {
    let mut s = TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(END)).unwrap();
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nTunnel-Half-Close: 1\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let head = crate::support::read_head(&mut s).expect("a response head");
    (String::from_utf8_lossy(&head).into_owned(), s)
}

/// The value of header `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("")
}

/// (c) A resume needs the stream's current ticket *and* the identity that opened
/// it: a wrong ticket, a ticket already used, another service token, or no
/// credentials at all are refused; the right ticket with the right identity is
/// taken, once.
#[test]
fn a_resume_needs_the_current_ticket_and_the_same_identity() {
    let (origin, _end) = echo_origin();
    let other = "\n[[service_tokens]]\nname = \"other\"\nclient_id = \"other.access\"\nclient_secret = \"0ther\"\n";
    let body = format!(
        "[[apps]]\nhostname = \"ticket.test\"\norigin = \"{origin}\"\nallow = [\"service:ci\", \"service:other\"]\n{CI_TOKEN}{other}"
    );
    let edge = Edge::start(&body);
    let ci = [
        ("Cf-Access-Client-Id", "ci.access"),
        ("Cf-Access-Client-Secret", "s3cret"),
    ];
    let mut first = ci.to_vec();
    first.push(("Tunnel-Resume", "1"));
    let (head, s) = upgrade(&edge, "ticket.test", &first);
    assert_eq!(status(&head), "101", "{head}");
    let offer = header(&head, "Tunnel-Resume").expect("a resume offer");
    let parts: Vec<&str> = offer.split_whitespace().collect();
    let (id, ticket) = (parts[0].to_string(), parts[1].to_string());
    assert!(ticket.len() >= 32, "at least 128 bits: {ticket}");
    // The WebSocket breaks.
    drop(s);
    let resume = |creds: &[(&str, &str)], ticket: &str| {
        let value = format!("{id} {ticket} 0");
        let mut h = creds.to_vec();
        h.push(("Tunnel-Resume", &value));
        let (head, s) = upgrade(&edge, "ticket.test", &h);
        (head, s)
    };
    let wrong = "0".repeat(ticket.len());
    let (head, _) = resume(&ci, &wrong);
    assert_eq!(status(&head), "403", "wrong ticket: {head}");
    let others = [
        ("Cf-Access-Client-Id", "other.access"),
        ("Cf-Access-Client-Secret", "0ther"),
    ];
    let (head, _) = resume(&others, &ticket);
    assert_eq!(status(&head), "403", "another identity: {head}");
    let (head, _) = resume(&[], &ticket);
    assert_ne!(status(&head), "101", "no credentials: {head}");
    let (head, s) = resume(&ci, &ticket);
    assert_eq!(
        status(&head),
        "101",
        "the right ticket and identity: {head}"
    );
    let next = header(&head, "Tunnel-Resume").expect("a new ticket");
    assert!(!next.contains(&ticket), "the ticket rotates: {next}");
    drop(s);
    let (head, _) = resume(&ci, &ticket);
    assert_eq!(status(&head), "403", "a used ticket: {head}");
    let stderr = edge.proc.stderr();
    assert!(!stderr.contains(&ticket), "tickets never reach the log");
}

/// (b) OpenSSH through `tunnel ssh`: a session printing a counter and an `scp` of
/// 64 MiB run at once; both WebSockets are killed in the middle. The counter has
/// no gap and the copy arrives whole.
#[test]
fn an_ssh_session_and_an_scp_survive_their_websockets_being_killed() {
    use crate::support::origin::sha256_hex;
    use crate::support::sshd::{Sshd, shell_quote};
    use std::io::BufRead;
    use std::process::Stdio;

    const COUNT: usize = 600;
    let sshd = Sshd::start();
    sshd.trust_host("ssh.test");
    let edge = Edge::start(&app("ssh.test", sshd.addr(), ""));
    let proxy = format!(
        "{} ssh --hostname http://%h --connect-to {} --id ci.access --secret s3cret",
        shell_quote(crate::support::bin().to_str().unwrap()),
        edge.connect_to()
    );
    let mut session = sshd.command("ssh", Some(&proxy));
    session
        .arg(format!("{}@ssh.test", sshd.user))
        .arg(format!(
            "i=0; while [ $i -lt {COUNT} ]; do echo $i; i=$((i+1)); sleep 0.02; done"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut session = session.spawn().unwrap();
    let lines = Arc::new(AtomicU64::new(0));
    let reader = {
        let out = session.stdout.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in std::io::BufReader::new(out).lines() {
                got.push(line.unwrap());
                lines.fetch_add(1, Ordering::SeqCst);
            }
            got
        })
    };
    let data = random_bytes(64 << 20, 0x55);
    let want = sha256_hex(&data);
    let local = crate::support::tempdir();
    let src = local.path().join("up.bin");
    std::fs::write(&src, &data).unwrap();
    let remote = sshd.dir().join("remote.bin");
    let mut scp = sshd.command("scp", Some(&proxy));
    // About 10 MB/s, so the copy is surely in flight when the WebSockets die.
    scp.args(["-q", "-l", "80000"])
        .arg(&src)
        .arg(format!("{}@ssh.test:{}", sshd.user, remote.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let scp = scp.spawn().unwrap();
    wait_count(&lines, 50, "ssh counter");
    let deadline = Instant::now() + END;
    while std::fs::metadata(&remote).map_or(0, |m| m.len()) < 8 << 20 {
        assert!(Instant::now() < deadline, "scp never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        kill_sockets_to(edge.addr.port()),
        2,
        "ssh's and scp's WebSockets"
    );
    let copied = scp.wait_with_output().unwrap();
    assert!(
        copied.status.success(),
        "scp failed: {}\nedge:\n{}",
        String::from_utf8_lossy(&copied.stderr),
        edge.proc.stderr()
    );
    let uploaded = std::fs::read(&remote).unwrap();
    assert_eq!(uploaded.len(), data.len(), "uploaded size");
    assert_eq!(sha256_hex(&uploaded), want, "uploaded content");
    let status = session.wait().unwrap();
    let got = reader.join().unwrap();
    let mut err = String::new();
    let _ = session.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "ssh failed: {err}");
    let want: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    assert!(
        got == want,
        "the counter has a gap or repeats: {got:?}\n{err}"
    );
}

/// A frozen edge (SIGSTOP, as a black-holed link looks to the client): the
/// client's keepalive finds it silent and starts resuming; once the edge runs again
/// the stream goes on with every byte, and ends cleanly.
#[test]
fn a_stream_resumes_after_the_keepalive_finds_the_edge_silent() {
    let (origin, origin_end) = echo_origin();
    let edge = Edge::start(&app("frozen.test", origin, ""));
    let mut args = SERVICE.to_vec();
    args.extend([
        "--keepalive-interval",
        "300ms",
        "--keepalive-timeout",
        "700ms",
    ]);
    let (mut tcp, local) = tunnel_tcp(&edge, "http://frozen.test", &args);
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(END)).unwrap();
    let mut back = [0u8; 5];
    s.write_all(b"first").unwrap();
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"first");
    edge.proc.signal("STOP");
    s.write_all(b"while").unwrap();
    tcp.wait_for("presumed dead; resuming the stream", END);
    edge.proc.signal("CONT");
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"while");
    tcp.wait_for("resumed", END);
    s.write_all(b"after").unwrap();
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"after");
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let end = s.read_to_end(&mut rest).map_err(|e| e.kind());
    assert_eq!(end, Ok(0), "a clean end; stderr:\n{}", tcp.stderr());
    assert_eq!(
        origin_end
            .recv_timeout(END)
            .expect("the origin's stream ends"),
        Ok(()),
        "edge stderr:\n{}",
        edge.proc.stderr()
    );
}

/// One interactive `psql` session: queries go to its stdin, answers (`-A -t`, one
/// line each) come from its stdout.
struct Psql {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    answers: mpsc::Receiver<String>,
}

impl Psql {
    fn start(pg: &crate::support::postgres::Postgres, addr: SocketAddr) -> Psql {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = pg.psql(addr);
        cmd.args(["-A", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("psql starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Psql {
            child,
            stdin,
            answers,
        }
    }

    /// Send `sql` (one statement); it is answered by [`Psql::answer`].
    fn send(&mut self, sql: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next answer line; `logs` (the tunnel's stderr) if none comes.
    fn answer(&self, logs: impl Fn() -> String) -> String {
        self.answers
            .recv_timeout(END)
            .unwrap_or_else(|_| panic!("psql gave no answer\n{}", logs()))
    }

    /// End the input; psql must exit 0.
    fn finish(mut self) {
        drop(self.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql ended with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 12, proof 2: one interactive `psql` session through `tunnel tcp` to a real
/// PostgreSQL; its WebSocket is killed between two queries and the next query is
/// answered on the same session (the same backend process), and psql ends cleanly.
#[test]
fn a_psql_session_survives_its_websocket_being_killed() {
    let pg = crate::support::postgres::Postgres::start();
    let edge = Edge::start(&app("db.test", pg.addr(), ""));
    let (tcp, local) = tunnel_tcp(&edge, "http://db.test", &SERVICE);
    let logs = || {
        format!(
            "--- client ---\n{}\n--- edge ---\n{}",
            tcp.stderr(),
            edge.proc.stderr()
        )
    };
    let mut psql = Psql::start(&pg, local);
    psql.send("select pg_backend_pid();");
    let before = psql.answer(logs);
    assert!(before.parse::<u32>().is_ok(), "a pid: {before:?}");
    assert_eq!(
        kill_sockets_to(edge.addr.port()),
        1,
        "one WebSocket to the edge"
    );
    psql.send("select pg_backend_pid();");
    assert_eq!(psql.answer(logs), before, "the same backend after the kill");
    psql.send("select 40+2;");
    assert_eq!(psql.answer(logs), "42");
    psql.finish();
    assert!(tcp.stderr().contains("resumed"), "{}", tcp.stderr());
}

/// Every TCP packet to or from `port` dropped (both directions of loopback pass the
/// output hook) while it lives: a black-holed link, not a reset. An `nft` table of
/// its own, deleted on drop (also when the test panics).
struct BlackHole {
    table: String,
}

impl BlackHole {
    fn port(port: u16) -> BlackHole {
        let table = format!("tunnel_test_{}_{port}", std::process::id());
        let hole = BlackHole { table };
        hole.nft(&["add", "table", "inet", &hole.table]);
        hole.nft(&[
            "add chain inet",
            &hole.table,
            "out { type filter hook output priority 0 ; }",
        ]);
        for dir in ["dport", "sport"] {
            hole.nft(&[
                "add rule inet",
                &hole.table,
                "out tcp",
                dir,
                &port.to_string(),
                "drop",
            ]);
        }
        hole
    }

    fn nft(&self, words: &[&str]) {
        let out = Command::new("nft")
            .arg(words.join(" "))
            .output()
            .expect("nft runs (scripts/test.sh installs nftables)");
        assert!(
            out.status.success(),
            "nft {words:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// Issue 12, proof 2 with a black hole: the link to the edge drops every packet for
/// 60 s while a query is pending; the client's keepalive finds the edge silent and
/// redials into the black hole; once the link is back the stream resumes (taking
/// over from the WebSocket the edge still holds), the pending query is answered by
/// the same backend, and psql ends cleanly.
#[test]
fn a_psql_session_survives_a_black_holed_link() {
    let pg = crate::support::postgres::Postgres::start();
    let edge = Edge::start(&app("hole.test", pg.addr(), ""));
    let mut args = SERVICE.to_vec();
    args.extend(["--keepalive-interval", "500ms", "--keepalive-timeout", "1s"]);
    let (mut tcp, local) = tunnel_tcp(&edge, "http://hole.test", &args);
    let mut psql = Psql::start(&pg, local);
    psql.send("select pg_backend_pid();");
    let before = psql.answer(|| tcp.stderr());
    let hole = BlackHole::port(edge.addr.port());
    let started = Instant::now();
    psql.send("select pg_backend_pid();");
    tcp.wait_for("resuming the stream", END);
    std::thread::sleep(Duration::from_secs(60).saturating_sub(started.elapsed()));
    drop(hole);
    let logs = || {
        format!(
            "--- client ---\n{}\n--- edge ---\n{}",
            tcp.stderr(),
            edge.proc.stderr()
        )
    };
    assert_eq!(
        psql.answer(logs),
        before,
        "the same backend after the black hole"
    );
    psql.send("select 40+2;");
    assert_eq!(psql.answer(logs), "42");
    psql.finish();
    assert!(tcp.stderr().contains("resumed"), "{}", tcp.stderr());
}

/// Two streams opened with a browser login whose app token expires while their
/// WebSockets are down: each redial meets "login required", the one lazy login flow
/// gets a fresh token once for both (a resume ticket alone is never enough), and
/// both streams go on where they stopped.
#[test]
fn streams_whose_token_expired_during_the_outage_resume_after_one_refresh() {
    let w = crate::login::World::start("2s");
    let (tcp, local) = w.tcp("http://db.test", &[]);
    let port: u16 = w
        .edge
        .connect_to()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let round = |s: &mut TcpStream, byte: u8| {
        s.write_all(&[byte]).unwrap();
        let mut back = [0u8; 1];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("no echo of {byte} ({e}); stderr:\n{}", tcp.stderr()));
        assert_eq!(back[0], byte);
    };
    let mut streams: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = TcpStream::connect(local).unwrap();
            s.set_read_timeout(Some(END)).unwrap();
            s
        })
        .collect();
    for s in &mut streams {
        round(s, b'a');
    }
    let logins = w.logins();
    assert_eq!(logins, 1, "one browser login opened both streams");
    let refusals = |log: &str| log.matches("login required").count();
    let refused_before = refusals(&w.edge.proc.stderr());
    // Past the app token's 2 s lifetime, then cut both WebSockets.
    std::thread::sleep(Duration::from_secs(3));
    // Both WebSockets (and any pooled HTTP connection the login flow keeps).
    assert!(kill_sockets_to(port) >= 2, "two WebSockets to kill");
    for s in &mut streams {
        round(s, b'b');
    }
    let edge_log = w.edge.proc.stderr();
    assert!(
        refusals(&edge_log) > refused_before,
        "the expired token was never refused, so nothing was refreshed:\n{edge_log}"
    );
    assert_eq!(
        edge_log.matches("stream resumed by its client").count(),
        2,
        "{edge_log}"
    );
    assert!(
        w.logins() <= logins + 1,
        "one refresh serves both streams: {} browser logins",
        w.logins()
    );
    for s in &streams {
        s.shutdown(Shutdown::Write).unwrap();
    }
    for s in &mut streams {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "nothing after the echoes: {rest:?}");
    }
}
