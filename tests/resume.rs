//! Resumable streams (issue 12): the WebSocket under a live `tunnel tcp` stream is
//! killed (`ss -K` on the client's socket to the edge, so both ends see a reset);
//! the local socket stays open, the client redials and the stream goes on. Real
//! binaries, real sockets on loopback; the tests need root for `ss -K`.

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
    const SIZE: usize = 64 << 20;
    let up = Arc::new(random_bytes(SIZE, 0x1a));
    let down = Arc::new(random_bytes(SIZE, 0x2b));
    let at_origin = Arc::new(AtomicU64::new(0));
    let (origin, origin_end) = exchange_origin(down.clone(), at_origin.clone());
    let edge = Edge::start(&app("bulk.test", origin, ""));
    let (tcp, local) = tunnel_tcp(&edge, "http://bulk.test", &SERVICE);
    let at_client = Arc::new(AtomicU64::new(0));
    let s = TcpStream::connect(local).unwrap();
    let client = {
        let (up, at_client) = (up.clone(), at_client.clone());
        std::thread::spawn(move || exchange(s, up, at_client))
    };
    for (i, mark) in [SIZE / 4, SIZE / 2].into_iter().enumerate() {
        wait_count(&at_origin, mark as u64, "upload");
        wait_count(&at_client, mark as u64 / 2, "download");
        let killed = kill_sockets_to(edge.addr.port());
        assert_eq!(killed, 1, "kill {i}: one WebSocket to the edge");
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
