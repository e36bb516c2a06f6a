//! Test support: spawn the real `tunnel` binary (edge, tcp listener, ssh stdio) and
//! real TCP origins on port 0, read back the addresses they report, kill on drop.
//!
//! Every child's stderr is captured; `Proc::stderr()` returns it so failing
//! assertions can print it. Nothing here sleeps to wait for readiness: we wait for
//! the "listening on ADDR" line each long-running command prints.
#![allow(dead_code)]

pub mod hostile;
pub mod origin;
pub mod postgres;
pub mod proc;
pub mod proxy;
pub mod sshd;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use proc::Proc;

/// How long a child may take to report readiness before the test fails.
pub const READY: Duration = Duration::from_secs(30);

/// Path of the `tunnel` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tunnel"))
}

/// A fresh temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tunnel-test-")
        .tempdir()
        .expect("tempdir")
}

/// A running `tunnel edge` with its config directory.
pub struct Edge {
    /// Directory holding `edge.toml`, the signing key and any TLS material.
    pub dir: tempfile::TempDir,
    /// The config file path.
    pub config: PathBuf,
    /// Address the edge reported it listens on.
    pub addr: SocketAddr,
    /// The edge process.
    pub proc: Proc,
}

/// The default `[[service_tokens]]` stanza most tests use: `service:ci`.
pub const CI_TOKEN: &str = r#"
[[service_tokens]]
name = "ci"
client_id = "ci.access"
client_secret = "s3cret"
"#;

impl Edge {
    /// Start an edge on 127.0.0.1:0 whose config is the global part below plus `body`
    /// (apps, service tokens, users). `body` may use `{dir}` for the config directory.
    pub fn start(body: &str) -> Edge {
        Self::start_with(body, "")
    }

    /// Like [`Edge::start`], with extra top-level keys (e.g. `tls_cert = ...`).
    pub fn start_with(body: &str, top: &str) -> Edge {
        Self::start_in(tempdir(), body, top)
    }

    /// Like [`Edge::start`], serving `wss://` with a certificate for `names` from a
    /// fresh test CA ([`Edge::ca`]), all in the edge's directory.
    pub fn start_tls(body: &str, names: &[&str]) -> Edge {
        let dir = tempdir();
        write_test_pki(dir.path(), names);
        Self::start_in(dir, body, "tls_cert = \"edge.crt\"\ntls_key = \"edge.key\"")
    }

    /// The test CA that signed the certificate of an edge from [`Edge::start_tls`].
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Like [`Edge::start`], also serving Prometheus metrics (`--metrics
    /// 127.0.0.1:0`; the address is in its `metrics on` log line).
    pub fn start_with_metrics(body: &str) -> Edge {
        Self::start_args(body, &["--metrics", "127.0.0.1:0"])
    }

    /// Like [`Edge::start`], with extra command-line flags (e.g. `--grace-period`).
    pub fn start_args(body: &str, args: &[&str]) -> Edge {
        Self::start_full(tempdir(), body, "", args)
    }

    fn start_in(dir: tempfile::TempDir, body: &str, top: &str) -> Edge {
        Self::start_full(dir, body, top, &[])
    }

    fn start_full(dir: tempfile::TempDir, body: &str, top: &str, args: &[&str]) -> Edge {
        let config = dir.path().join("edge.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nauth_domain = \"auth.example.test\"\nsigning_key = \"signing-key.pem\"\n{top}\n{body}\n"
        )
        .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config, text).unwrap();
        let mut argv = vec!["edge", "--config", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        let mut proc = Proc::spawn(bin(), argv, &[]);
        let addr = proc.wait_listening();
        Edge {
            dir,
            config,
            addr,
            proc,
        }
    }

    /// `tunnel edge mint-token` for `app` and `email`, valid for `ttl` (e.g. "1h").
    pub fn mint(&self, app: &str, email: &str, ttl: &str) -> String {
        let out = std::process::Command::new(bin())
            .args(["edge", "mint-token", "--config"])
            .arg(&self.config)
            .args(["--app", app, "--email", email, "--ttl", ttl])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mint-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Address string for `--connect-to`.
    pub fn connect_to(&self) -> String {
        self.addr.to_string()
    }
}

/// Start `tunnel tcp --hostname <hostname> --connect-to <edge> --url 127.0.0.1:0 <extra>`
/// and return it with the local address it listens on.
pub fn tunnel_tcp(edge: &Edge, hostname: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    tunnel_tcp_env(edge, hostname, extra, &[])
}

/// Like [`tunnel_tcp`], with extra environment variables.
pub fn tunnel_tcp_env(
    edge: &Edge,
    hostname: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, SocketAddr) {
    let mut args = vec![
        "tcp".to_string(),
        "--hostname".into(),
        hostname.into(),
        "--connect-to".into(),
        edge.connect_to(),
        "--url".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut proc = Proc::spawn(bin(), args, env);
    let addr = proc.wait_listening();
    (proc, addr)
}

/// Run `tunnel` to completion with `args` (stdin closed) and return its output.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    run_in(args, env, None)
}

/// Run `tunnel` to completion, optionally in `dir`, with a 60 s limit.
pub fn run_in(args: &[&str], env: &[(&str, &str)], dir: Option<&Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    proc::output_with_timeout(cmd, Duration::from_secs(60))
}

/// Run `tunnel` to completion with its stdout a pipe whose reader is already gone
/// (`tunnel token | head -c1` once `head` has exited), with a 60 s limit. The
/// returned stdout is empty; stderr is what it printed.
pub fn run_into_closed_pipe(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reading = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tunnel {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: reading.join().expect("the stderr reader"),
    }
}

/// Assert a finished command exited with `code`, showing its stderr otherwise.
pub fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Read an HTTP head (through the blank line) one byte at a time, so nothing after it
/// is consumed; `None` if the stream ends or fails first.
pub fn read_head(r: &mut impl std::io::Read) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        r.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    Some(head)
}

/// A test CA plus a server certificate for `names`, written as PEM files in `dir`:
/// `ca.pem`, `edge.crt`, `edge.key`.
pub fn write_test_pki(dir: &Path, names: &[&str]) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tunnel test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("edge.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("edge.key"), key.serialize_pem()).unwrap();
}
