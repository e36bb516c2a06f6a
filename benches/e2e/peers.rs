//! Other clients measured in the same run, when they are on `PATH`: `websocat`
//! (client and server over `ws://`) and `wstunnel` (client and server over `ws://`
//! and `wss://`), each in front of the same origin, with its shipped defaults; and
//! stock `cloudflared access tcp` against our own `tunnel edge` over `wss://` (the
//! client Cloudflare ships, on the edge this project ships).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::setup::{self, Proc, Stack};

/// A peer's path: its name in the table, the program's version, and its processes.
pub struct Peer {
    /// Path name (`websocat`, `wstunnel-ws`, `wstunnel-wss`, `cloudflared`).
    pub name: &'static str,
    /// The program's `--version` line.
    pub version: String,
    /// Its client and server, in front of the origin.
    pub stack: Stack,
}

/// Start every peer found on `PATH` (`cloudflared` with our edge, `tunnel`); each
/// one missing or failing to start adds one line to `skipped` (and is printed).
pub fn start_all(tunnel: &Path, origin: SocketAddr) -> (Vec<Peer>, Vec<String>) {
    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    let mut skip = |line: String| {
        println!("{line}");
        skipped.push(line);
    };
    match setup::which("websocat") {
        None => skip("websocat: not on PATH, skipped".into()),
        Some(bin) => match websocat(&bin, origin) {
            Ok(stack) => peers.push(Peer {
                name: "websocat",
                version: setup::version(&bin),
                stack,
            }),
            Err(e) => skip(format!("websocat: did not start, skipped: {e}")),
        },
    }
    match setup::which("wstunnel") {
        None => skip("wstunnel: not on PATH, skipped".into()),
        Some(bin) => {
            for (name, tls) in [("wstunnel-ws", false), ("wstunnel-wss", true)] {
                match wstunnel(&bin, origin, tls) {
                    Ok(stack) => peers.push(Peer {
                        name,
                        version: setup::version(&bin),
                        stack,
                    }),
                    Err(e) => skip(format!("{name}: did not start, skipped: {e}")),
                }
            }
        }
    }
    match setup::which("cloudflared") {
        None => skip("cloudflared: not on PATH, skipped".into()),
        Some(bin) => match cloudflared(&bin, tunnel, origin) {
            Ok(stack) => peers.push(Peer {
                name: "cloudflared",
                version: setup::version(&bin),
                stack,
            }),
            Err(e) => skip(format!("cloudflared: did not start, skipped: {e}")),
        },
    }
    (peers, skipped)
}

/// A command for `bin` with stdin closed, dying with the bench.
fn cmd(bin: &Path) -> Command {
    let mut c = setup::child_command(bin);
    c.stdin(Stdio::null());
    c
}

/// `websocat -b ws-l:` in front of the origin and `websocat -b tcp-l:` dialing it.
fn websocat(bin: &Path, origin: SocketAddr) -> Result<Stack, String> {
    let dir = tempfile::tempdir().unwrap();
    let server_addr = setup::free_addr();
    let mut c = cmd(bin);
    c.args([
        "-b".to_string(),
        format!("ws-l:{server_addr}"),
        format!("tcp:{origin}"),
    ]);
    let server: Proc = setup::spawn_listening(c, server_addr)?;
    let addr = setup::free_addr();
    let mut c = cmd(bin);
    c.args([
        "-b".to_string(),
        format!("tcp-l:{addr}"),
        format!("ws://{server_addr}/"),
    ]);
    let client = setup::spawn_listening(c, addr)?;
    Ok(Stack {
        client,
        server,
        server_role: "server",
        addr,
        _dir: dir,
    })
}

/// `wstunnel server` in front of the origin (restricted to it) and `wstunnel client
/// -L tcp://...` dialing it; over `wss://` with a certificate for `bench.test` that
/// the client verifies against our CA (via `SSL_CERT_FILE`).
fn wstunnel(bin: &Path, origin: SocketAddr, tls: bool) -> Result<Stack, String> {
    let dir = tempfile::tempdir().unwrap();
    let scheme = if tls { "wss" } else { "ws" };
    let server_addr = setup::free_addr();
    let mut c = cmd(bin);
    c.arg("server")
        .arg(format!("{scheme}://{server_addr}"))
        .arg("--restrict-to")
        .arg(origin.to_string());
    if tls {
        setup::write_certs(dir.path(), "bench.test");
        c.arg("--tls-certificate")
            .arg(dir.path().join("edge.crt"))
            .arg("--tls-private-key")
            .arg(dir.path().join("edge.key"));
    }
    let server = setup::spawn_listening(c, server_addr)?;
    let addr = setup::free_addr();
    let mut c = cmd(bin);
    c.arg("client")
        .arg("-L")
        .arg(format!("tcp://{addr}:{origin}"))
        .arg(format!("{scheme}://{server_addr}"));
    if tls {
        c.args([
            "--tls-sni-override",
            "bench.test",
            "--tls-verify-certificate",
        ])
        .env("SSL_CERT_FILE", dir.path().join("ca.pem"));
    }
    let client = setup::spawn_listening(c, addr)?;
    Ok(Stack {
        client,
        server,
        server_role: "server",
        addr,
        _dir: dir,
    })
}

/// Stock `cloudflared access tcp` listening on loopback and dialing our `tunnel edge`
/// over `wss://` with the edge's service token (from the environment, not the
/// command line). `cloudflared` always dials TLS to the host of `--hostname` and
/// checks the certificate against that name, so the app is `localhost` (which
/// `/etc/hosts` maps to loopback) with a certificate for it from our CA, trusted
/// through `SSL_CERT_FILE`. `HOME` is the stack's directory, so it neither reads nor
/// writes the user's `~/.cloudflared`; it logs to `cloudflared.log` there (and to
/// its stderr, drained); `NO_AUTOUPDATE` turns off update checks (`access` makes
/// none anyway). Were the token refused, it would start a browser login instead:
/// the first echo, within 10 s, catches that and the peer is skipped.
fn cloudflared(bin: &Path, tunnel: &Path, origin: SocketAddr) -> Result<Stack, String> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (server, edge_addr, dir) = setup::edge(tunnel, origin, "localhost", true, None, loopback)?;
    let addr = setup::free_addr();
    let mut c = cmd(bin);
    c.args(["access", "tcp", "--hostname"])
        .arg(format!("localhost:{}", edge_addr.port()))
        .arg("--url")
        .arg(addr.to_string())
        .arg("--logfile")
        .arg(dir.path().join("cloudflared.log"))
        .env("TUNNEL_SERVICE_TOKEN_ID", setup::TOKEN.0)
        .env("TUNNEL_SERVICE_TOKEN_SECRET", setup::TOKEN.1)
        .env("SSL_CERT_FILE", dir.path().join("ca.pem"))
        .env("HOME", dir.path())
        .env("NO_AUTOUPDATE", "true");
    let client = setup::spawn_listening(c, addr)?;
    let stack = Stack {
        client,
        server,
        server_role: "edge",
        addr,
        _dir: dir,
    };
    // It dials the edge only when a connection arrives: prove one gets through.
    echo_once(addr).map_err(|e| {
        format!(
            "no echo through it ({e}); cloudflared: {}; edge: {}",
            stack.client.last_words(),
            stack.server.last_words()
        )
    })?;
    Ok(stack)
}

/// One short message through `addr` and back from the origin's echo (mode `E`),
/// within 10 s.
fn echo_once(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"Ehello")?;
    let mut back = [0u8; 5];
    s.read_exact(&mut back)?;
    if &back == b"hello" {
        Ok(())
    } else {
        Err(std::io::Error::other("the echo came back different"))
    }
}
