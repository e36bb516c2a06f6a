//! The bench's topology on loopback: one origin (upload sink, download source,
//! echo), two plain TCP relays (the relay limit), and `tunnel edge` + `tunnel tcp` as
//! separate processes of the real binary, over `ws://` and `wss://`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Chunk size for writers and readers in the bench itself.
pub const CHUNK: usize = 256 * 1024;

/// Start the origin. A connection's first byte picks its mode: `U` reads to EOF
/// then answers the byte count (8 bytes, little endian); `D` + u64 size writes that
/// many bytes then closes; `E` echoes.
pub fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_origin(conn));
        }
    });
    addr
}

fn serve_origin(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    match mode[0] {
        b'U' => {
            let mut n = 0u64;
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            let _ = s.write_all(&n.to_le_bytes());
        }
        b'D' => {
            let mut size = [0u8; 8];
            if s.read_exact(&mut size).is_err() {
                return;
            }
            let mut left = u64::from_le_bytes(size);
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                if s.write_all(&buf[..k]).is_err() {
                    return;
                }
                left -= k as u64;
            }
        }
        _ => loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => {
                    if s.write_all(&buf[..k]).is_err() {
                        return;
                    }
                }
            }
        },
    }
}

/// A plain TCP relay to `upstream` (tokio `copy_bidirectional` with large buffers)
/// on its own thread and runtime.
pub fn relay(upstream: SocketAddr) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut down, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let _ =
                        tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, CHUNK, CHUNK)
                            .await;
                });
            }
        });
    });
    addr
}

/// A child process killed on drop, whose stderr is drained by a thread.
pub struct Proc {
    /// The child.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn `bin args` and wait for its `listening on ADDR` line.
pub fn spawn(bin: &Path, args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tunnel");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("tunnel exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (Proc { child }, addr)
}

/// An edge and a `tunnel tcp` client for `origin`, over TLS when `tls`.
pub struct Tunnel {
    /// The edge process.
    pub edge: Proc,
    /// The client process.
    pub client: Proc,
    /// Where the client listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Start `tunnel edge` and `tunnel tcp` for `origin`.
pub fn tunnel(bin: &Path, origin: SocketAddr, tls: bool) -> Tunnel {
    let dir = tempfile::tempdir().unwrap();
    let mut top = String::new();
    if tls {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["bench.test".to_string()]).unwrap();
        let cert = params
            .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("edge.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("edge.key"), key.serialize_pem()).unwrap();
        top = "tls_cert = \"edge.crt\"\ntls_key = \"edge.key\"\n".into();
    }
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nauth_domain = \"auth.bench.test\"\n{top}\
             [[apps]]\nhostname = \"bench.test\"\norigin = \"{origin}\"\nallow = [\"service:bench\"]\n\
             [[service_tokens]]\nname = \"bench\"\nclient_id = \"bench.access\"\nclient_secret = \"bench-secret\"\n"
        ),
    )
    .unwrap();
    let (edge, edge_addr) = spawn(
        bin,
        &[
            "edge",
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "info",
        ],
    );
    let ca = dir.path().join("ca.pem");
    let edge_addr = edge_addr.to_string();
    let mut args = vec![
        "tcp",
        "--hostname",
        if tls {
            "https://bench.test"
        } else {
            "http://bench.test"
        },
        "--connect-to",
        &edge_addr,
        "--url",
        "127.0.0.1:0",
        "--id",
        "bench.access",
        "--secret",
        "bench-secret",
    ];
    if tls {
        args.extend(["--ca-file", ca.to_str().unwrap()]);
    }
    let (client, addr) = spawn(bin, &args);
    Tunnel {
        edge,
        client,
        addr,
        _dir: dir,
    }
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}
