//! A real PostgreSQL cluster for one test: `initdb` into a temp dir, trust auth,
//! listening on 127.0.0.1 on a free port with its socket in the temp dir; stopped
//! (`pg_ctl stop -m immediate`) and removed on drop.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server-side
//! tools run as the `postgres` system user (`runuser -u postgres --`) and the temp
//! dir is handed to that user. The client tools (`psql`, `pgbench`) run as us.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::proc::output_with_timeout;

/// How often to retry when another process grabbed the port we picked.
const BIND_ATTEMPTS: usize = 5;

/// Limit for `initdb` and `pg_ctl` runs.
const SERVER_TOOL_LIMIT: Duration = Duration::from_secs(90);

/// The tools a test needs, all from one PostgreSQL bin directory.
const TOOLS: [&str; 5] = ["initdb", "pg_ctl", "postgres", "psql", "pgbench"];

/// A running PostgreSQL cluster with superuser `postgres` and trust auth.
pub struct Postgres {
    /// Port the server listens on (127.0.0.1).
    pub port: u16,
    bindir: PathBuf,
    /// System user the server runs as when we are root.
    run_as: Option<String>,
    data: PathBuf,
    dir: tempfile::TempDir,
}

/// The PostgreSQL bin directory: `$PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian), else `pg_config --bindir`, else the
/// directory of `initdb` on `PATH`. Panics with the fix when a tool is missing.
pub fn bindir() -> PathBuf {
    let complete = |d: &Path| TOOLS.iter().all(|t| d.join(t).is_file());
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("PG_BINDIR") {
        candidates.push(d.into());
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.extend(std::env::split_paths(&path).filter(|d| d.join("initdb").is_file()));
    candidates
        .into_iter()
        .find(|d| complete(d))
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL not found (need {}): run scripts/test.sh, which installs postgresql \
             (apt-get), or set PG_BINDIR",
                TOOLS.join(", ")
            )
        })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// True when the tests run as root.
fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Numeric uid and gid of system user `name`.
fn ids_of(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, name])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no `{name}` system user ({}): run scripts/test.sh, which installs postgresql",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// Panic with the command's output unless it succeeded.
fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// `initdb` a fresh cluster and start it with `pg_ctl -w start` on a free port.
    /// Panics (with the server log) if it cannot start.
    pub fn start() -> Postgres {
        let bindir = bindir();
        let run_as = is_root().then(|| "postgres".to_string());
        // As root, stay under /tmp so the `postgres` user can reach the directory
        // whatever TMPDIR says; the unix socket path must also stay short.
        let mut builder = tempfile::Builder::new();
        builder.prefix("tunnel-pg-");
        let dir = if run_as.is_some() {
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .expect("tempdir");
        if let Some(user) = &run_as {
            let (uid, gid) = ids_of(user);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let data = dir.path().join("data");
        let mut pg = Postgres {
            port: 0,
            bindir,
            run_as,
            data,
            dir,
        };

        let mut initdb = pg.server_tool("initdb");
        initdb
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        check("initdb", &output_with_timeout(initdb, SERVER_TOOL_LIMIT));

        let mut last = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let log = pg.log_path();
            let _ = std::fs::remove_file(&log);
            let mut start = pg.server_tool("pg_ctl");
            start
                .arg("-D")
                .arg(&pg.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
                     -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                    pg.dir.path().display()
                ))
                .arg("start");
            let out = output_with_timeout(start, SERVER_TOOL_LIMIT);
            if out.status.success() {
                pg.port = port;
                return pg;
            }
            let log_text = pg.log();
            last = format!(
                "pg_ctl start failed ({})\nstdout: {}\nstderr: {}\nserver log:\n{log_text}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !log_text.contains("could not bind") {
                break;
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// Address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `psql -X -v ON_ERROR_STOP=1 -h HOST -p PORT -U postgres -d postgres` against
    /// `addr` (the server itself or a tunnel listener); add `-Atc SQL` etc.
    pub fn psql(&self, addr: SocketAddr) -> Command {
        let mut cmd = self.client_tool("psql", addr);
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]);
        cmd
    }

    /// `pgbench -h HOST -p PORT -U postgres` against `addr`; add the mode and database.
    pub fn pgbench(&self, addr: SocketAddr) -> Command {
        self.client_tool("pgbench", addr)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A client tool from the bin dir, pointed at `addr`, with a connect timeout.
    fn client_tool(&self, name: &str, addr: SocketAddr) -> Command {
        let mut cmd = Command::new(self.bindir.join(name));
        cmd.arg("-h")
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string())
            .args(["-U", "postgres"])
            .env("PGCONNECT_TIMEOUT", "20")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .current_dir(self.dir.path());
        cmd
    }

    /// A server tool from the bin dir, run as the `postgres` user when we are root.
    fn server_tool(&self, name: &str) -> Command {
        let program = self.bindir.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        // The tools stat their working directory; ours may be unreadable to `postgres`.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL log ({}) ---\n{}",
                self.log_path().display(),
                self.log()
            );
        }
        if !self.data.join("postmaster.pid").exists() {
            return;
        }
        let mut stop = self.server_tool("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        let out = output_with_timeout(stop, SERVER_TOOL_LIMIT);
        if !out.status.success() {
            // Last resort: the postmaster's pid is the first line of postmaster.pid.
            if let Some(pid) = std::fs::read_to_string(self.data.join("postmaster.pid"))
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string))
            {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
    }
}
