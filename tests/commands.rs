//! The smaller commands: `demo` (the README's first command), `ssh-config`,
//! `edge check-config` and `edge mint-token`.

use crate::support::{CI_TOKEN, Edge, assert_exit, run, run_into_closed_pipe, tempdir};

#[test]
fn demo_proves_a_round_trip_and_exits_with_once() {
    let out = run(&["demo", "--once"], &[]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("round trip ok"), "{stdout}");
    assert!(stdout.contains("connect here"), "{stdout}");
}

#[test]
fn ssh_config_prints_a_proxycommand_stanza() {
    let out = run(&["ssh-config", "--hostname", "ssh.example.com"], &[]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = crate::support::bin();
    assert_eq!(
        stdout.trim(),
        format!(
            "Host ssh.example.com\n  ProxyCommand {} ssh --hostname %h",
            bin.display()
        )
    );
    let out = run(&["ssh-config", "--hostname", "http://ssh.test:8080"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--hostname http://%h:8080"));
}

/// A reader that went away (`tunnel ssh-config | head -c1`, once `head` exited)
/// ends the command quietly with 0, as ripgrep does: no panic, no error line.
#[test]
fn a_closed_stdout_ends_quietly_with_zero() {
    for args in [
        &["ssh-config", "--hostname", "ssh.example.com"][..],
        &["demo", "--once"][..],
        &["completions", "bash"][..],
    ] {
        let out = run_into_closed_pipe(args, &[]);
        assert_exit(&out, 0);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn check_config_accepts_good_and_names_bad() {
    let dir = tempdir();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("listen = \"127.0.0.1:0\"\nauth_domain = \"a.test\"\n[[apps]]\nhostname = \"x.test\"\norigin = \"127.0.0.1:1\"\nallow = [\"service:ci\"]\n{CI_TOKEN}"),
    )
    .unwrap();
    assert_exit(
        &run(
            &["edge", "check-config", "--config", good.to_str().unwrap()],
            &[],
        ),
        0,
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nauth_domain = \"a.test\"\n[[apps]]\nhostname = \"x.test\"\norigin = \"127.0.0.1:1\"\nallow = [\"service:ci\"]\n").unwrap();
    let out = run(
        &["edge", "check-config", "--config", bad.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml: apps[0] (x.test): allow names service token \"ci\""),
        "{stderr}"
    );
}

#[test]
fn mint_token_is_accepted_and_unknown_apps_are_refused() {
    let origin = crate::support::origin::EchoOrigin::start();
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"bob@example.test\"]\n",
        origin.addr
    ));
    let token = edge.mint("https://db.test", "bob@example.test", "10m");
    assert_eq!(token.split('.').count(), 3, "a compact JWT");
    let out = run(
        &[
            "ssh",
            "--hostname",
            "http://db.test",
            "--connect-to",
            &edge.connect_to(),
        ],
        &[("TUNNEL_ACCESS_TOKEN", &token)],
    );
    assert_exit(&out, 0);
    // A token naming someone the app does not allow is forbidden (9), not a login.
    let eve = edge.mint("db.test", "eve@example.test", "10m");
    let out = run(
        &[
            "ssh",
            "--hostname",
            "http://db.test",
            "--connect-to",
            &edge.connect_to(),
            "--token",
            &eve,
        ],
        &[],
    );
    assert_exit(&out, 9);
    let out = run(
        &[
            "edge",
            "mint-token",
            "--config",
            edge.config.to_str().unwrap(),
            "--app",
            "nope.test",
            "--email",
            "a@b",
        ],
        &[],
    );
    assert_exit(&out, 3);
}

/// Write `body` after a valid global part into `dir/name` and return its path.
fn config_in(dir: &std::path::Path, name: &str, top: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\nauth_domain = \"a.test\"\n{top}\n[[apps]]\nhostname = \"x.test\"\norigin = \"127.0.0.1:1\"\nallow = [\"service:ci\", \"alice@example.test\"]\n{CI_TOKEN}\n{body}"),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn check_config_says_ok_only_when_the_edge_would_start_and_users_could_log_in() {
    let dir = tempdir();
    let check = |path: &str| run(&["edge", "--config", path, "check-config"], &[]);
    let one_line = |out: &std::process::Output, needles: &[&str]| {
        assert_exit(out, 3);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("tunnel: error: "), "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{stderr} lacks {n:?}");
        }
    };
    // The placeholder the README once showed: no one could ever log in.
    let placeholder = config_in(
        dir.path(),
        "placeholder.toml",
        "",
        "[[users]]\nemail = \"alice@example.test\"\npassword_hash = \"$argon2id$...\"\n",
    );
    one_line(
        &check(&placeholder),
        &[
            "users[0] (alice@example.test): password_hash",
            "tunnel edge hash-password",
        ],
    );
    // TLS files that are not there.
    let tls = config_in(
        dir.path(),
        "tls.toml",
        "tls_cert = \"nope.crt\"\ntls_key = \"nope.key\"",
        "",
    );
    one_line(&check(&tls), &["tls_cert", "nope.crt", "TLS for the edge"]);
    // A signing key in a directory that does not exist.
    let key = config_in(
        dir.path(),
        "key.toml",
        "signing_key = \"no/such/dir/key.pem\"",
        "",
    );
    one_line(
        &check(&key),
        &["no/such/dir", "does not exist", "signing_key"],
    );
    // And the edge itself refuses to start with it, with the same words.
    let out = run(&["edge", "--config", &key], &[]);
    one_line(&out, &["no/such/dir", "signing_key"]);

    // A good one, with a real hash, either flag order.
    let hash = crate::login::hash_password("pw");
    let good = config_in(
        dir.path(),
        "good.toml",
        "",
        &format!("[[users]]\nemail = \"alice@example.test\"\npassword_hash = \"{hash}\"\n"),
    );
    for args in [
        ["edge", "--config", &good, "check-config"],
        ["edge", "check-config", "--config", &good],
    ] {
        let out = run(&args, &[]);
        assert_exit(&out, 0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("good.toml: ok (1 app, 1 user"));
    }
}

#[test]
fn hash_password_reads_a_piped_line_and_refuses_an_empty_one() {
    let hash = crate::login::hash_password("correct horse");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let out = run(&["edge", "hash-password"], &[]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty password"));
}

#[test]
fn log_directory_is_created_when_missing() {
    let dir = tempdir();
    let logs = dir.path().join("new/logs");
    let out = run(
        &[
            "ssh-config",
            "--hostname",
            "ssh.example.com",
            "--log-directory",
            logs.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&out, 0);
    assert!(logs.join("tunnel.log").is_file());
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    for (shell, needle) in [
        ("bash", "_tunnel()"),
        ("zsh", "#compdef tunnel"),
        ("fish", "complete -c tunnel"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run(&["completions", shell], &[]);
        assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{shell}: {text}");
        assert!(text.contains("hostname"), "{shell} lacks the flags");
    }
    let out = run(&["man"], &[]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".TH tunnel"), "{text}");
    assert!(
        text.contains("check\\-config") || text.contains("edge"),
        "{text}"
    );
}

#[test]
fn tcp_help_lists_its_own_flags_apart_from_the_logging_ones() {
    for cmd in ["tcp", "ssh"] {
        let out = run(&[cmd, "--help"], &[]);
        assert_exit(&out, 0);
        let help = String::from_utf8_lossy(&out.stdout);
        let heading = help
            .find("Logging (every command):")
            .unwrap_or_else(|| panic!("no logging heading:\n{help}"));
        let (own, logging) = help.split_at(heading);
        assert!(
            own.contains("--hostname") && own.contains("--connect-to"),
            "{help}"
        );
        assert!(
            !own.contains("--logfile") && !own.contains("--log-level"),
            "{help}"
        );
        assert!(logging.contains("--logfile") && logging.contains("--log-level"));
    }
    // `tunnel --help` names what `edge` needs instead of sending you in a circle.
    let out = run(&["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("see `tunnel edge --help`"), "{help}");
    assert!(help.contains("tunnel edge --config edge.toml"), "{help}");
}

#[test]
fn demo_logs_its_shutdown_line_once() {
    let out = run(&["demo", "--once"], &[]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("shutting down").count(), 1, "{stderr}");
}

#[test]
fn curl_gets_connect_to_and_ca_file_too() {
    let origin = crate::support::origin::EchoOrigin::start();
    let edge = Edge::start_tls(
        &format!(
            "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"alice@example.test\"]\n",
            origin.addr
        ),
        &["db.test", "auth.example.test"],
    );
    // A cached token, as a login leaves it (the edge's own, for this app).
    let tokens = tempdir();
    let aud = tunnel::derive_aud("db.test");
    let token = edge.mint("db.test", "alice@example.test", "10m");
    std::fs::write(tokens.path().join(format!("db.test-{aud}-token")), &token).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let f = tokens.path().join(format!("db.test-{aud}-token"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(tokens.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // db.test does not resolve and the CA is private: only tunnel's own flags make
    // curl reach the edge and trust it. The edge answers a plain GET carrying a
    // valid token with 400 and a text naming the protocol.
    let out = run(
        &[
            "curl",
            "--connect-to",
            &edge.connect_to(),
            "--ca-file",
            edge.ca().to_str().unwrap(),
            "--token-dir",
            tokens.path().to_str().unwrap(),
            "https://db.test/",
            "-s",
        ],
        &[],
    );
    assert_exit(&out, 0);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("carries TCP over WebSocket"), "{body}");
}

/// Drives `tunnel edge hash-password` on a pseudo-terminal: waits for each prompt
/// and for echo to be off (the pty's termios) before typing, so the check that
/// nothing is echoed cannot race. Prints everything the terminal showed.
#[cfg(unix)]
const PTY_DRIVER: &str = r#"
import os, pty, sys, termios, time
bin, first, second = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(bin, [bin, "edge", "hash-password"])
seen = b""
def read_until(marker):
    global seen
    deadline = time.time() + 30
    while marker not in seen:
        if time.time() > deadline:
            sys.exit("timed out waiting for %r; got %r" % (marker, seen))
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
def type_without_echo(text):
    deadline = time.time() + 30
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.time() > deadline:
            sys.exit("echo never turned off")
        time.sleep(0.01)
    os.write(fd, text + b"\r")
read_until(b"Password: ")
type_without_echo(first)
read_until(b"again: ")
type_without_echo(second)
read_until(b"\n$")  # the hash line (or the error line) ends the run
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[cfg(unix)]
#[test]
fn hash_password_on_a_terminal_asks_twice_without_echo() {
    let dir = tempdir();
    let driver = dir.path().join("pty_driver.py");
    std::fs::write(&driver, PTY_DRIVER).unwrap();
    let run_pty = |first: &str, second: &str| {
        std::process::Command::new("python3")
            .arg(&driver)
            .arg(crate::support::bin())
            .args([first, second])
            .output()
            .unwrap()
    };
    let out = run_pty("tty-secret-1", "tty-secret-1");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("Password: ") && shown.contains("Password again: "),
        "{shown}"
    );
    assert!(shown.contains("$argon2id$"), "{shown}");
    assert!(
        !shown.contains("tty-secret-1"),
        "the password was echoed: {shown}"
    );
    let out = run_pty("tty-secret-1", "tty-secret-2");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("tunnel: error: the two passwords differ"),
        "{shown}"
    );
    assert!(!shown.contains("$argon2id$"), "{shown}");
}
