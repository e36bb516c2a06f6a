//! Other clients measured in the same run, when they are on `PATH`: `websocat`
//! (client and server over `ws://`) and `wstunnel` (client and server over `ws://`
//! and `wss://`), each in front of the same origin, with its shipped defaults.
//! `cloudflared` is only detected: nothing here drives it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::setup::{self, Proc, Stack};

/// A peer's path: its name in the table, the program's version, and its processes.
pub struct Peer {
    /// Path name (`websocat`, `wstunnel-ws`, `wstunnel-wss`).
    pub name: &'static str,
    /// The program's `--version` line.
    pub version: String,
    /// Its client and server, in front of the origin.
    pub stack: Stack,
}

/// Start every peer found on `PATH`; each one missing or failing to start adds one
/// line to `skipped` (and is printed).
pub fn start_all(origin: SocketAddr) -> (Vec<Peer>, Vec<String>) {
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
        Some(bin) => skip(format!(
            "cloudflared: found at {}, but this bench has no tested driver for it, skipped",
            bin.display()
        )),
    }
    (peers, skipped)
}

/// A command for `bin` with stdin closed.
fn cmd(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.stdin(Stdio::null());
    c
}

/// `websocat -b ws-l:` in front of the origin and `websocat -b tcp-l:` dialing it.
fn websocat(bin: &Path, origin: SocketAddr) -> Result<Stack, String> {
    let dir = tempfile::tempdir().unwrap();
    let server_addr: SocketAddr = ([127, 0, 0, 1], setup::free_port()).into();
    let mut c = cmd(bin);
    c.args([
        "-b".to_string(),
        format!("ws-l:{server_addr}"),
        format!("tcp:{origin}"),
    ]);
    let server: Proc = setup::spawn_listening(c, server_addr)?;
    let addr: SocketAddr = ([127, 0, 0, 1], setup::free_port()).into();
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
    let server_addr: SocketAddr = ([127, 0, 0, 1], setup::free_port()).into();
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
    let addr: SocketAddr = ([127, 0, 0, 1], setup::free_port()).into();
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
