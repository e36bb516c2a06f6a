//! A real OpenSSH server for one test: its own temp directory, host key, authorized
//! client key and config, listening on 127.0.0.1 on a free port; killed on drop.
//!
//! The login user is whoever runs the tests (root included: `PermitRootLogin
//! prohibit-password`), authenticated by the generated ed25519 key only. The host key
//! is pinned in a private `known_hosts`, so clients check it strictly.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Proc;
use super::proc::output_with_timeout;

/// How often to retry when another process grabbed the port we picked.
const BIND_ATTEMPTS: usize = 5;

/// A running `sshd -D -e` bound to 127.0.0.1.
pub struct Sshd {
    /// Port sshd listens on (127.0.0.1).
    pub port: u16,
    /// The login user (the user running the tests).
    pub user: String,
    /// Private key the server accepts for `user`.
    pub client_key: PathBuf,
    /// `known_hosts` holding the server's host key for 127.0.0.1 and trusted aliases.
    pub known_hosts: PathBuf,
    host_key_line: String,
    // Declared before `dir` so sshd is killed before its files are removed.
    proc: Proc,
    dir: tempfile::TempDir,
}

/// Find an executable by absolute candidates first, then on `PATH`.
fn find_program(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .find(|p| p.is_file())
}

/// Panic with the fix when an OpenSSH tool is missing (never skip silently).
fn require(name: &str, candidates: &[&str], package: &str) -> PathBuf {
    find_program(name, candidates).unwrap_or_else(|| {
        panic!("`{name}` not found: run scripts/test.sh, which installs {package} (apt-get)")
    })
}

/// Name of the user running the tests.
pub fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("run `id -un`");
    assert!(out.status.success(), "`id -un` failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Run `ssh-keygen` to make an unencrypted ed25519 key pair at `path`.
fn keygen(path: &Path, comment: &str) {
    let keygen = require("ssh-keygen", &[], "openssh-client");
    let mut cmd = Command::new(keygen);
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null());
    let out = output_with_timeout(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Single-quote `s` for the shell that runs a ProxyCommand.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Sshd {
    /// Generate keys and config in a temp dir and start sshd; returns once it sends
    /// its `SSH-2.0` banner. Panics (with sshd's stderr) if it cannot start.
    pub fn start() -> Sshd {
        let sshd = require(
            "sshd",
            &["/usr/sbin/sshd", "/usr/local/sbin/sshd"],
            "openssh-server",
        );
        require("ssh", &[], "openssh-client");
        // Privilege separation directory; only root may (and must) create it.
        if !Path::new("/run/sshd").is_dir() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }

        let dir = tempfile::Builder::new()
            .prefix("tunnel-sshd-")
            .tempdir()
            .expect("tempdir");
        let host_key = dir.path().join("host_key");
        let client_key = dir.path().join("client_key");
        keygen(&host_key, "tunnel-test-host");
        keygen(&client_key, "tunnel-test-client");
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        // "ssh-ed25519 AAAA... comment" -> "ssh-ed25519 AAAA..."
        let host_key_line = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");

        let user = current_user();
        let config = dir.path().join("sshd_config");
        let mut last_err = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\n\
                     ListenAddress 127.0.0.1\n\
                     HostKey {host_key}\n\
                     PidFile {pid}\n\
                     AuthorizedKeysFile {authorized}\n\
                     AllowUsers {user}\n\
                     PermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     UseDNS no\n\
                     PrintMotd no\n\
                     PrintLastLog no\n\
                     LoginGraceTime 30\n\
                     Subsystem sftp internal-sftp\n",
                    host_key = host_key.display(),
                    pid = dir.path().join("sshd.pid").display(),
                    authorized = authorized.display(),
                ),
            )
            .unwrap();
            let mut cmd = Command::new(&sshd);
            cmd.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            let mut proc = Proc::spawn_cmd(cmd);
            match wait_banner(&mut proc, port) {
                Ok(()) => {
                    let known_hosts = dir.path().join("known_hosts");
                    let me = Sshd {
                        port,
                        user,
                        client_key,
                        known_hosts,
                        host_key_line,
                        proc,
                        dir,
                    };
                    me.trust_host("127.0.0.1");
                    me.trust_host(&format!("[127.0.0.1]:{port}"));
                    return me;
                }
                Err(err) => {
                    let stderr = proc.stderr();
                    drop(proc);
                    if !stderr.contains("Address already in use") {
                        panic!("sshd did not start: {err}\nsshd stderr:\n{stderr}");
                    }
                    last_err = format!("{err}\n{stderr}");
                }
            }
        }
        panic!("sshd could not bind a port after {BIND_ATTEMPTS} attempts: {last_err}");
    }

    /// Address sshd listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The temp directory owned by this server (a place for test files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Record the server's host key for `alias` (the name `ssh` connects to).
    pub fn trust_host(&self, alias: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.known_hosts)
            .unwrap();
        writeln!(f, "{alias} {}", self.host_key_line).unwrap();
    }

    /// `ssh` or `scp` (`program`) with no user config, batch mode, the client key and
    /// strict host key checking against [`Sshd::known_hosts`]. With `proxy` the
    /// connection goes through that ProxyCommand; without, straight to the port.
    pub fn command(&self, program: &str, proxy: Option<&str>) -> Command {
        let path = require(program, &[], "openssh-client");
        let mut cmd = Command::new(path);
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(&self.client_key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .stdin(Stdio::null());
        match proxy {
            Some(p) => {
                cmd.arg("-o").arg(format!("ProxyCommand={p}"));
            }
            None => {
                let flag = if program == "scp" { "-P" } else { "-p" };
                cmd.arg(flag).arg(self.port.to_string());
            }
        }
        cmd
    }

    /// Everything sshd wrote to stderr so far (its log, `-e`).
    pub fn log(&self) -> String {
        self.proc.stderr()
    }
}

/// Poll until `port` answers with an `SSH-2.0` banner, or sshd exits, or time runs out.
fn wait_banner(proc: &mut Proc, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + super::READY;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = proc.child.try_wait() {
            // Let the stderr reader catch up with the final lines.
            std::thread::sleep(Duration::from_millis(50));
            return Err(format!("sshd exited ({status})"));
        }
        match read_banner(addr) {
            Ok(banner) if banner.starts_with("SSH-2.0") => return Ok(()),
            Ok(banner) => last = format!("unexpected banner {banner:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "no SSH banner on {addr} within {:?}: {last}",
        super::READY
    ))
}

/// Connect and read the first line the server sends.
fn read_banner(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < 255 && !buf.ends_with(b"\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}
