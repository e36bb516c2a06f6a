//! The Windows build, end to end under Wine (issue 16): the real `tunnel.exe`
//! (cross-built for x86_64-pc-windows-gnu by `scripts/test.sh`, which passes its path
//! in `TUNNEL_WINDOWS_EXE`) against a real Linux `tunnel edge`, Linux OpenSSH and
//! real TCP origins on loopback.
//!
//! Scaffolding, never shipped: Debian's Wine 8 has no `bcryptprimitives.dll`, whose
//! `ProcessPrng` every Rust exe imports, so a ten-line shim
//! (`tests/fixtures/processprng_shim.c`, calling advapi32's `SystemFunction036`) is
//! built with `x86_64-w64-mingw32-gcc` and put beside a link to the exe. The Wine
//! prefix is made once under `target/wine/` (about 20 s the first time).
//!
//! Without the exe or Wine the tests say so and pass, except under `CI=true`, where
//! they fail: CI must run them. Each part of the proof is its own test, so a part
//! Wine cannot run fails by name while the others still run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::login::World;
use crate::support::origin::{EchoOrigin, random_bytes, sha256_hex};
use crate::support::proc::output_with_timeout;
use crate::support::sshd::{Sshd, shell_quote};
use crate::support::{CI_TOKEN, Edge, Proc, bin};

/// Limit for one short `tunnel.exe` command (Wine starts its server on first use).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Wine, its prefix and the Windows `tunnel.exe` ready to run.
struct Wine {
    /// The Wine loader (`wine`, or Debian's `/usr/lib/wine/wine64`).
    loader: PathBuf,
    /// `WINEPREFIX`.
    prefix: PathBuf,
    /// A link to `tunnel.exe` in a directory whose name has a space, beside the shim.
    exe: PathBuf,
}

impl Wine {
    /// `wine tunnel.exe args...`, quiet, in our prefix.
    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.loader);
        cmd.arg(&self.exe).args(args);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// The environment every Wine process gets.
    fn env(&self) -> [(&'static str, String); 3] {
        [
            ("WINEPREFIX", self.prefix.display().to_string()),
            ("WINEDEBUG", "-all".into()),
            // No Mono or Gecko install prompts while the prefix is made.
            ("WINEDLLOVERRIDES", "mscoree,mshtml=".into()),
        ]
    }
}

/// `path` as Windows programs under Wine see it (drive `Z:` is `/`).
fn win_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// Wine and the exe, set up once per test run; `None` (with a note) when this
/// machine cannot run them and we are not in CI.
fn wine() -> Option<&'static Wine> {
    static WINE: OnceLock<Result<Wine, String>> = OnceLock::new();
    match WINE.get_or_init(setup) {
        Ok(w) => Some(w),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the Windows end-to-end tests must run in CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping the Windows end-to-end test: {why}");
            None
        }
    }
}

fn setup() -> Result<Wine, String> {
    let exe = std::env::var_os("TUNNEL_WINDOWS_EXE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or("TUNNEL_WINDOWS_EXE does not name a built tunnel.exe (scripts/test.sh sets it)")?;
    let loader = std::env::var_os("WINE")
        .map(PathBuf::from)
        .or_else(|| which("wine"))
        .or_else(|| which("wine64"))
        .or_else(|| Some(PathBuf::from("/usr/lib/wine/wine64")).filter(|p| p.is_file()))
        .ok_or("no Wine (Debian: apt-get install wine64; scripts/test.sh does)")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wine");
    let dir = root.join("windows bin");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let linked = dir.join("tunnel.exe");
    let _ = std::fs::remove_file(&linked);
    if std::fs::hard_link(&exe, &linked).is_err() {
        std::fs::copy(&exe, &linked).map_err(|e| format!("copy {}: {e}", exe.display()))?;
    }
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/processprng_shim.c");
    let out = Command::new("x86_64-w64-mingw32-gcc")
        .args(["-shared", "-O2", "-o"])
        .arg(dir.join("bcryptprimitives.dll"))
        .arg(&shim)
        .arg("-ladvapi32")
        .output()
        .map_err(|e| format!("x86_64-w64-mingw32-gcc (gcc-mingw-w64-x86-64): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the ProcessPrng shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let wine = Wine {
        loader,
        prefix: root.join("prefix"),
        exe: linked,
    };
    // Make the prefix (first run) and prove the exe loads at all.
    let started = std::time::Instant::now();
    let out = output_with_timeout(wine.command(&["--version"]), Duration::from_secs(300));
    if !out.status.success() {
        return Err(format!(
            "wine tunnel.exe --version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    eprintln!(
        "wine ready in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(wine)
}

/// The first executable called `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Panic with what `tunnel.exe` said unless it exited 0.
fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} under Wine failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The library's unit tests, cross-built by `scripts/test.sh`
/// (`TUNNEL_WINDOWS_LIB_TESTS`), pass on Windows: the token cache's Windows twins
/// (private files, no link followed, the `LockFileEx` login lock), the browser
/// command parsing, the data path.
#[test]
fn windows_unit_tests_pass_under_wine() {
    let Some(wine) = wine() else { return };
    let Some(tests) = std::env::var_os("TUNNEL_WINDOWS_LIB_TESTS").filter(|p| !p.is_empty()) else {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "TUNNEL_WINDOWS_LIB_TESTS is not set in CI (scripts/test.sh sets it)"
        );
        eprintln!("skipping the Windows unit tests: TUNNEL_WINDOWS_LIB_TESTS is not set");
        return;
    };
    // Beside the shim, like the exe.
    let linked = wine.exe.with_file_name("tunnel-lib-tests.exe");
    let _ = std::fs::remove_file(&linked);
    if std::fs::hard_link(&tests, &linked).is_err() {
        std::fs::copy(&tests, &linked).unwrap();
    }
    let mut cmd = Command::new(&wine.loader);
    cmd.arg(&linked).args(["--test-threads", "2"]);
    for (k, v) in wine.env() {
        cmd.env(k, v);
    }
    let out = output_with_timeout(cmd, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the unit tests failed under Wine ({})\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().find(|l| l.starts_with("test result:"));
    eprintln!("Windows unit tests under Wine: {}", summary.unwrap_or("?"));
}

/// `wine tunnel.exe tcp` with a service token moves 16 MiB each way intact through a
/// Linux edge, and Ctrl-C (Wine turns SIGINT into the console's Ctrl-C event) stops
/// it through the one shutdown path: it drains and exits 0, as the Unix build does
/// on SIGINT/SIGTERM.
#[test]
fn windows_tcp_moves_16_mib_each_way_and_ctrl_c_ends_it() {
    let Some(wine) = wine() else { return };
    let origin = EchoOrigin::start();
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        origin.addr
    ));
    let mut cmd = wine.command(&[
        "tcp",
        "--hostname",
        "http://db.test",
        "--url",
        "127.0.0.1:0",
        "--connect-to",
        &edge.connect_to(),
        "--id",
        "ci.access",
        "--secret",
        "s3cret",
    ]);
    cmd.stdout(std::process::Stdio::null());
    let mut tunnel = Proc::spawn_cmd(cmd);
    let local = tunnel.wait_listening();

    let data = random_bytes(16 << 20, 0x16);
    let mut s = std::net::TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut w = s.try_clone().unwrap();
    let up = data.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        w.write_all(&up).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    std::io::Read::read_to_end(&mut s, &mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), data.len(), "bytes back through tunnel.exe");
    assert_eq!(sha256_hex(&back), sha256_hex(&data), "content");

    let sent = Command::new("kill")
        .args(["-INT", &tunnel.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tunnel.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", tunnel.stderr());
    assert!(
        tunnel.stderr().contains("shutting down"),
        "{}",
        tunnel.stderr()
    );
}

/// Linux OpenSSH runs `wine tunnel.exe ssh` as its ProxyCommand (stdio over pipes,
/// as Windows' `ssh.exe` runs it) and reaches the test sshd through the edge.
#[test]
fn windows_ssh_stdio_mode_is_an_openssh_proxycommand() {
    let Some(wine) = wine() else { return };
    let sshd = Sshd::start();
    sshd.trust_host("ssh.test");
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"ssh.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        sshd.addr()
    ));
    let env: Vec<String> = wine
        .env()
        .iter()
        .map(|(k, v)| format!("{k}={}", shell_quote(v)))
        .collect();
    let proxy = format!(
        "env {} {} {} ssh --hostname http://%h --connect-to {} --id ci.access --secret s3cret",
        env.join(" "),
        shell_quote(wine.loader.to_str().unwrap()),
        shell_quote(wine.exe.to_str().unwrap()),
        edge.connect_to()
    );
    let mut cmd = sshd.command("ssh", Some(&proxy));
    cmd.arg(format!("{}@ssh.test", sshd.user))
        .arg("echo through windows; uname -s");
    let out = output_with_timeout(cmd, RUN_LIMIT);
    assert!(
        out.status.success(),
        "ssh with wine tunnel.exe as ProxyCommand failed ({})\nstderr: {}\n--- edge ---\n{}\n--- sshd ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        edge.proc.stderr(),
        sshd.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through windows\nLinux\n"
    );
}

/// `tunnel.exe login` (browser: the scripted one, a Unix program Wine starts) writes
/// the token cache; a second `tunnel.exe token` uses it without a browser, and so
/// does the Linux build: the layout is the same on both systems.
#[test]
fn windows_login_writes_a_token_cache_a_second_run_reads() {
    let Some(wine) = wine() else { return };
    let w = World::start("1h");
    let tokens = w.tokens.path().join("windows cache");
    let mut env = w.env();
    env.retain(|(k, _)| k != "TUNNEL_TOKEN_DIR");
    env.push(("TUNNEL_TOKEN_DIR".into(), win_path(&tokens)));
    let run = |args: &[&str]| {
        let mut cmd = wine.command(args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        output_with_timeout(cmd, RUN_LIMIT)
    };
    let login = run(&["login", "http://db.test"]);
    assert_ok("tunnel.exe login", &login);
    assert_eq!(w.logins(), 1, "one browser login");
    let mut names: Vec<String> = std::fs::read_dir(&tokens)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-token"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "app and org token files: {names:?}");
    assert!(names.iter().any(|n| n.starts_with("db.test-")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-org-token")), "{names:?}");

    let token = run(&["token", "--app", "http://db.test"]);
    assert_ok("tunnel.exe token (second run)", &token);
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(w.logins(), 1, "the second run used the cache");

    let linux = Command::new(bin())
        .args(["token", "--app", "http://db.test", "--token-dir"])
        .arg(&tokens)
        .env("TUNNEL_CONNECT_TO", w.edge.connect_to())
        .output()
        .unwrap();
    assert_ok("the Linux build reading the Windows cache", &linux);
    assert_eq!(String::from_utf8_lossy(&linux.stdout).trim(), token);
}

/// The login lock on Windows (`LockFileEx`): two `tunnel.exe login` processes racing
/// open one browser, and when the holder is killed the other takes over and logs in.
#[test]
fn windows_racing_logins_open_one_browser_and_a_killed_holder_releases_the_lock() {
    let Some(wine) = wine() else { return };
    let w = World::start("1h");
    let mut env = w.env();
    env.retain(|(k, _)| k != "TUNNEL_TOKEN_DIR");
    env.push(("TUNNEL_TOKEN_DIR".into(), win_path(w.tokens.path())));
    crate::login::race_for_login(&w, env, |env| {
        let mut cmd = wine.command(&["login", "http://db.test"]);
        cmd.envs(env.iter().copied())
            .stdout(std::process::Stdio::null());
        Proc::spawn_cmd(cmd)
    });
}
