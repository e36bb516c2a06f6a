//! The bench's topology on loopback: one origin (upload sink, download source,
//! echo), two plain TCP relays (the relay limit), and `tunnel edge` + `tunnel tcp` as
//! separate processes of the real binary, over `ws://` and `wss://`. Also the
//! helpers the peers and the WAN section share: processes, certificates, the edge,
//! `PATH`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Chunk size for writers and readers in the bench itself.
pub const CHUNK: usize = 256 * 1024;

/// Start the origin on loopback (see [`origin_on`]).
pub fn origin() -> SocketAddr {
    origin_on("127.0.0.1:0".parse().unwrap())
}

/// Start the origin on `bind`, on its own thread and single-threaded tokio runtime
/// (so ten thousand idle connections cost tasks, not threads). A connection's first
/// byte picks its mode: `U` reads to EOF then answers the byte count (8 bytes, little
/// endian); `S` + u64 size reads that many bytes then answers the count; `D` + u64
/// size writes that many bytes then closes; anything else echoes.
pub fn origin_on(bind: SocketAddr) -> SocketAddr {
    serve_on_thread(bind, serve_origin)
}

/// Accept on `bind` on a thread of its own with a single-threaded tokio runtime,
/// spawning `handle` for every connection; backs off when accepting fails (out of
/// descriptors, say) instead of spinning.
fn serve_on_thread<F, Fut>(bind: SocketAddr, handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let listener = std::net::TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                match listener.accept().await {
                    Ok((conn, _)) => {
                        tokio::task::spawn_local(handle(conn));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    });
    addr
}

/// Serve one origin connection in the mode its first byte names.
async fn serve_origin(mut s: tokio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let Ok(mode) = s.read_u8().await else {
        return;
    };
    match mode {
        b'U' | b'S' => {
            let limit = if mode == b'S' {
                match s.read_u64_le().await {
                    Ok(size) => size,
                    Err(_) => return,
                }
            } else {
                u64::MAX
            };
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0u64;
            while n < limit {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k as u64,
                }
            }
            let _ = s.write_all(&n.to_le_bytes()).await;
        }
        b'D' => {
            let Ok(mut left) = s.read_u64_le().await else {
                return;
            };
            let buf = vec![0u8; CHUNK];
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                if s.write_all(&buf[..k]).await.is_err() {
                    return;
                }
                left -= k as u64;
            }
        }
        _ => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => {
                        if s.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// A plain TCP relay to `upstream` (tokio `copy_bidirectional` with large buffers)
/// on its own thread and runtime.
pub fn relay(upstream: SocketAddr) -> SocketAddr {
    serve_on_thread("127.0.0.1:0".parse().unwrap(), move |mut down| async move {
        let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let _ = down.set_nodelay(true);
        let _ = up.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, CHUNK, CHUNK).await;
    })
}

/// A child process killed on drop, whose stderr is drained by a thread (the last
/// lines are kept for error messages).
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it was started as, for messages.
    pub what: String,
    /// Its last lines of stderr.
    pub tail: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// The child's last stderr lines, joined, for an error message.
    pub fn last_words(&self) -> String {
        self.tail.lock().unwrap().join(" | ")
    }
}

/// Kill and reap the child.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cmd` with stderr piped; a thread drains stderr into the tail, and hands
/// the first `listening on ADDR` it sees to the returned receiver.
pub fn start(mut cmd: Command) -> Result<(Proc, std::sync::mpsc::Receiver<SocketAddr>), String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = tail.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok())
            {
                let _ = tx.send(addr);
            }
            let mut t = keep.lock().unwrap();
            t.push(line);
            if t.len() > 5 {
                t.remove(0);
            }
        }
    });
    Ok((Proc { child, what, tail }, rx))
}

/// Spawn `cmd` and wait (10 s at most) for its `listening on ADDR` line on stderr.
pub fn spawn_cmd(cmd: Command) -> Result<(Proc, SocketAddr), String> {
    let (mut p, rx) = start(cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
            return Ok((p, addr));
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before listening: {}",
                p.what,
                p.last_words()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not say where it listens", p.what));
        }
    }
}

/// Spawn `cmd`, which says nothing useful, and wait (10 s at most) until `addr`
/// accepts TCP connections.
pub fn spawn_listening(cmd: Command, addr: SocketAddr) -> Result<Proc, String> {
    let (mut p, _) = start(cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(format!("{} exited ({status}): {}", p.what, p.last_words()));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(format!("{} never listened on {addr}", p.what));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback address whose port was free a moment ago (for programs that cannot
/// say which port they bound).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The first executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A command for a child that lives as long as the bench: run under util-linux
/// `setpriv --pdeathsig KILL` when that is on `PATH`, so it dies with the bench even
/// when the bench itself is killed (`kill -9`, where no `Drop` runs). Spawn it from
/// the main thread: the signal follows the spawning thread's exit.
pub fn child_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match which("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The first line `bin --version` prints, or "unknown".
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Write a fresh CA (`ca.pem`) and a certificate for `name` signed by it
/// (`edge.crt`, `edge.key`) into `dir`.
pub fn write_certs(dir: &Path, name: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("edge.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("edge.key"), key.serialize_pem()).unwrap();
}

/// A client process and the server it dials, in front of the origin: ours
/// (`tunnel tcp` and `tunnel edge`) or a peer's.
pub struct Stack {
    /// The client process (where the bench connects).
    pub client: Proc,
    /// The server process (the edge, for ours).
    pub server: Proc,
    /// What the server is called in figure names: `edge` for ours, else `server`.
    pub server_role: &'static str,
    /// Where the client listens.
    pub addr: SocketAddr,
    /// Certificates and configuration, removed on drop.
    pub _dir: tempfile::TempDir,
}

impl Stack {
    /// Which of the two processes has exited (a zombie or gone), with its last words.
    pub fn dead(&self) -> Vec<String> {
        [("client", &self.client), (self.server_role, &self.server)]
            .into_iter()
            .filter(|(_, p)| {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.child.id()));
                stat.map_or(true, |s| {
                    s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
                })
            })
            .map(|(role, p)| format!("{role} exited: {}", p.last_words()))
            .collect()
    }
}

/// Start `tunnel edge` and `tunnel tcp` for `origin` on loopback, over TLS when `tls`.
pub fn tunnel(bin: &Path, origin: SocketAddr, tls: bool) -> Stack {
    tunnel_at(bin, origin, tls, None, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Like [`tunnel`], with the edge's `resume_window` set to `window` whatever
/// `BENCH_RESUME_WINDOW` says (`"0"`: streams without resumption).
pub fn tunnel_resume_window(bin: &Path, origin: SocketAddr, tls: bool, window: &str) -> Stack {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    tunnel_with(bin, origin, tls, None, any, Some(window)).unwrap()
}

/// The service token every bench edge allows (`service:bench`), as id and secret.
pub const TOKEN: (&str, &str) = ("bench.access", "bench-secret");

/// Start `tunnel edge` listening on `listen` (inside network namespace `netns` when
/// given) and a `tunnel tcp` client on loopback in this namespace that dials it.
pub fn tunnel_at(
    bin: &Path,
    origin: SocketAddr,
    tls: bool,
    netns: Option<&str>,
    listen: SocketAddr,
) -> Result<Stack, String> {
    tunnel_with(bin, origin, tls, netns, listen, None)
}

/// [`tunnel_at`] with the edge's `resume_window` (`None`: `BENCH_RESUME_WINDOW`).
fn tunnel_with(
    bin: &Path,
    origin: SocketAddr,
    tls: bool,
    netns: Option<&str>,
    listen: SocketAddr,
    resume_window: Option<&str>,
) -> Result<Stack, String> {
    let (edge, edge_addr, dir) =
        edge_with(bin, origin, "bench.test", tls, netns, listen, resume_window)?;
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
        TOKEN.0,
        "--secret",
        TOKEN.1,
    ];
    if tls {
        args.extend(["--ca-file", ca.to_str().unwrap()]);
    }
    let mut client_cmd = child_command(bin);
    client_cmd.args(&args).stdin(Stdio::null());
    let (client, addr) = spawn_cmd(client_cmd)?;
    Ok(Stack {
        client,
        server: edge,
        server_role: "edge",
        addr,
        _dir: dir,
    })
}

/// Start `tunnel edge` listening on `listen` (inside network namespace `netns` when
/// given) with one app, `app`, in front of `origin`, allowing [`TOKEN`]; over TLS
/// when `tls`, with a certificate for `app` from a fresh CA. Returns the edge, the
/// address it reports, and the directory holding its `edge.toml`, certificates and
/// `ca.pem` (the CA a client must trust).
pub fn edge(
    bin: &Path,
    origin: SocketAddr,
    app: &str,
    tls: bool,
    netns: Option<&str>,
    listen: SocketAddr,
) -> Result<(Proc, SocketAddr, tempfile::TempDir), String> {
    edge_with(bin, origin, app, tls, netns, listen, None)
}

/// [`edge`] with the app's `resume_window` (`None`: `BENCH_RESUME_WINDOW`, or the
/// edge's default).
fn edge_with(
    bin: &Path,
    origin: SocketAddr,
    app: &str,
    tls: bool,
    netns: Option<&str>,
    listen: SocketAddr,
    resume_window: Option<&str>,
) -> Result<(Proc, SocketAddr, tempfile::TempDir), String> {
    let dir = tempfile::tempdir().unwrap();
    let mut top = String::new();
    if tls {
        write_certs(dir.path(), app);
        top = "tls_cert = \"edge.crt\"\ntls_key = \"edge.key\"\n".into();
    }
    let config = dir.path().join("edge.toml");
    // `BENCH_RESUME_WINDOW=0` measures streams without resumption.
    let resume = resume_window
        .map(str::to_string)
        .or_else(|| std::env::var("BENCH_RESUME_WINDOW").ok())
        .map(|w| format!("resume_window = \"{w}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nauth_domain = \"auth.bench.test\"\n{top}\
             [[apps]]\nhostname = \"{app}\"\norigin = \"{origin}\"\nallow = [\"service:bench\"]\n{resume}\
             [[service_tokens]]\nname = \"bench\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
            TOKEN.0, TOKEN.1
        ),
    )
    .unwrap();
    let mut edge_cmd = match netns {
        Some(ns) => {
            let mut c = child_command("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => child_command(bin),
    };
    edge_cmd
        .arg("edge")
        .arg("--config")
        .arg(&config)
        .args(["--log-level", "info"])
        .stdin(Stdio::null());
    let (edge, addr) = spawn_cmd(edge_cmd)?;
    Ok((edge, addr, dir))
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
