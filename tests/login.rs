//! Lazy login end to end: the real `tunnel` client and a real `tunnel edge`, with a
//! scripted browser (`tests/fixtures/login_hook.py`, set as `BROWSER`) that fills the
//! edge's login form. The real-Chromium login is in `browser_login.rs`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::origin::EchoOrigin;
use crate::support::{Edge, Proc, assert_exit, bin, run, tempdir};

/// An edge with app `db.test` (echo origin), app `other.test`, and user alice.
pub struct World {
    /// The edge.
    pub edge: Edge,
    /// The echo origin (kept alive for the test's length).
    pub _origin: EchoOrigin,
    /// Token cache directory for clients.
    pub tokens: tempfile::TempDir,
    /// Where the hook records the URLs it opened.
    pub hook_log: PathBuf,
}

/// Hash `password` with the binary's `edge hash-password`.
pub fn hash_password(password: &str) -> String {
    let mut child = std::process::Command::new(bin())
        .args(["edge", "hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hash-password failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl World {
    /// Start the edge; `session` is the app token lifetime (e.g. "1h").
    pub fn start(session: &str) -> World {
        Self::start_full(session, "")
    }

    /// Start the edge with `extra` config (more apps) after the usual ones.
    pub fn start_with_extra(extra: &str) -> World {
        Self::start_full("1h", extra)
    }

    fn start_full(session: &str, extra: &str) -> World {
        let origin = EchoOrigin::start();
        let hash = hash_password("correct horse");
        let edge = Edge::start(&format!(
            r#"
[[apps]]
hostname = "db.test"
origin = "{o}"
allow = ["alice@example.test"]
session = "{session}"
[[apps]]
hostname = "other.test"
origin = "{o}"
allow = ["alice@example.test"]
[[users]]
email = "alice@example.test"
password_hash = "{hash}"
{extra}
"#,
            o = origin.addr
        ));
        let tokens = tempdir();
        let hook_log = tokens.path().join("hook.log");
        World {
            edge,
            _origin: origin,
            tokens,
            hook_log,
        }
    }

    /// Environment for a client: the scripted browser and the token cache.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BROWSER".into(), hook_path().display().to_string()),
            ("HOOK_LOG".into(), self.hook_log.display().to_string()),
            ("HOOK_EDGE".into(), self.edge.connect_to()),
            ("HOOK_EMAIL".into(), "alice@example.test".into()),
            ("HOOK_PASSWORD".into(), "correct horse".into()),
            (
                "TUNNEL_TOKEN_DIR".into(),
                self.tokens.path().display().to_string(),
            ),
            ("TUNNEL_CONNECT_TO".into(), self.edge.connect_to()),
        ]
    }

    /// How many times a browser was opened.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(&self.hook_log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Run `tunnel args...` with this world's environment.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(args, &env)
    }

    /// Start `tunnel tcp --hostname http://<host> --url 127.0.0.1:0` (no credentials).
    pub fn tcp(&self, host: &str, extra: &[&str]) -> (Proc, std::net::SocketAddr) {
        self.tcp_env(host, extra, self.env())
    }

    /// Like [`World::tcp`], with `browser` as `BROWSER`.
    pub fn tcp_with_browser(&self, host: &str, browser: &Path) -> (Proc, std::net::SocketAddr) {
        let mut env = self.env();
        env.retain(|(k, _)| k != "BROWSER");
        env.push(("BROWSER".into(), browser.display().to_string()));
        self.tcp_env(host, &[], env)
    }

    fn tcp_env(
        &self,
        host: &str,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) -> (Proc, std::net::SocketAddr) {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args = vec!["tcp", "--hostname", host, "--url", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(bin(), &args, &env);
        let addr = p.wait_listening();
        (p, addr)
    }

    /// Cached token files.
    pub fn token_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.tokens.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("-token"))
            .collect();
        v.sort();
        v
    }
}

fn hook_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/login_hook.py")
}

/// One echo round trip through a local listener.
pub fn echo(addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(msg).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    back
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn first_connection_logs_in_then_bytes_flow_and_the_token_is_cached() {
    let w = World::start("1h");
    let (_tcp, local) = w.tcp("http://db.test", &[]);
    assert_eq!(w.logins(), 0, "nothing happens before the first connection");
    assert_eq!(echo(local, b"hello"), b"hello");
    assert_eq!(w.logins(), 1);
    let files = w.token_files();
    assert_eq!(files.len(), 2, "app and org token cached: {files:?}");
    use std::os::unix::fs::PermissionsExt;
    for f in &files {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A second process uses the cache: no browser.
    let (_tcp2, local2) = w.tcp("http://db.test", &[]);
    assert_eq!(echo(local2, b"again"), b"again");
    assert_eq!(w.logins(), 1);
}

#[test]
fn fifty_connections_while_logged_out_cause_exactly_one_login() {
    let w = World::start("1h");
    let (_tcp, local) = w.tcp("http://db.test", &[]);
    let clients: Vec<_> = (0..50u32)
        .map(|i| {
            std::thread::spawn(move || {
                let msg = format!("client {i}");
                assert_eq!(echo(local, msg.as_bytes()), msg.as_bytes());
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a connection failed");
    }
    assert_eq!(w.logins(), 1, "exactly one browser login");
}

#[test]
fn two_processes_share_one_login_through_the_lock() {
    let w = World::start("1h");
    let (_a, la) = w.tcp("http://db.test", &[]);
    let (_b, lb) = w.tcp("http://db.test", &[]);
    let ta = std::thread::spawn(move || echo(la, b"a"));
    let tb = std::thread::spawn(move || echo(lb, b"b"));
    assert_eq!(ta.join().unwrap(), b"a");
    assert_eq!(tb.join().unwrap(), b"b");
    assert_eq!(w.logins(), 1, "one login shared by both processes");
    let leftovers: Vec<_> = std::fs::read_dir(w.tokens.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".url") || n.starts_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "url/temp files left behind: {leftovers:?}"
    );
    assert_no_lock_held(w.tokens.path());
}

/// Every `.lock` file in `dir` is free: the login lock is an OS lock on the open
/// file, so the (empty) file may stay after its holder is gone, but no lock may.
fn assert_no_lock_held(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.to_string_lossy().ends_with(".lock") {
            let f = std::fs::File::open(&path).unwrap();
            assert!(f.try_lock().is_ok(), "{} is still locked", path.display());
        }
    }
}

/// Issue 16: the login lock is an OS file lock. Two processes racing for one login
/// open one browser; when the holder is killed with SIGKILL and left unreaped (as a
/// busy supervisor leaves it: a zombie still has a pid and a /proc entry, which
/// fooled the old pid check), the OS has released its lock and the other process
/// takes over and logs in.
#[test]
fn racing_logins_open_one_browser_and_a_killed_holder_releases_the_lock() {
    let w = World::start("1h");
    race_for_login(&w, w.env(), |env| {
        Proc::spawn(bin(), ["login", "http://db.test"], env)
    });
}

/// Two `tunnel login` processes started by `spawn` (with `env` plus a recording
/// browser) race for one login: exactly one opens the browser; after it is killed
/// with SIGKILL (not reaped) the other takes the lock, logs in and exits 0.
pub fn race_for_login(
    w: &World,
    mut env: Vec<(String, String)>,
    spawn: impl Fn(&[(&str, &str)]) -> Proc,
) {
    let dir = tempdir();
    // The browser only records the URL until `go` exists, then really logs in.
    let go = dir.path().join("go");
    let browser = dir.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\nif [ -e '{go}' ]; then exec python3 '{hook}' \"$1\"; fi\n\
             HOOK_MODE=record exec python3 '{hook}' \"$1\"\n",
            go = go.display(),
            hook = hook_path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.retain(|(k, _)| k != "BROWSER");
    env.push(("BROWSER".into(), browser.display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let procs = [spawn(&env), spawn(&env)];
    // Each one either opens the browser or says it waits for the other.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let roles = loop {
        let roles = procs.each_ref().map(|p| {
            let e = p.stderr();
            (
                e.contains("Log in to"),
                e.contains("Another tunnel process"),
            )
        });
        if roles.iter().all(|(holder, waiter)| holder | waiter) {
            break roles;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither logging in nor waiting:\n{}\n---\n{}",
            procs[0].stderr(),
            procs[1].stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        roles[0].0 != roles[1].0,
        "exactly one process logs in, the other waits: {roles:?}"
    );
    let [p0, p1] = procs;
    let (holder, mut next) = if roles[0].0 { (p0, p1) } else { (p1, p0) };
    while w.logins() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the browser never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.logins(), 1, "one browser for two racing processes");

    std::fs::write(&go, "").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &holder.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Not reaped (`holder` is dropped at the end): a zombie now. The waiter must
    // take over anyway.
    next.wait_for("Log in to", Duration::from_secs(60));
    let status = next.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", next.stderr());
    assert_eq!(
        w.logins(),
        2,
        "the second browser only after the holder died"
    );
    assert_eq!(w.token_files().len(), 2, "app and org token cached");
}

#[test]
fn expired_app_token_is_exchanged_with_the_org_token_without_a_browser() {
    let w = World::start("1h");
    let out = w.run(&["login", "http://db.test", "--json"]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["email"], "alice@example.test");
    let app_file = PathBuf::from(v["token_file"].as_str().unwrap());
    assert_eq!(w.logins(), 1);
    // Replace the app token with an expired one: the org token gets a new one.
    let issuer = tunnel::Issuer::load_or_create(
        &w.edge.dir.path().join("signing-key.pem"),
        "auth.example.test",
    )
    .unwrap();
    let mut claims = issuer
        .verify(v["token"].as_str().unwrap(), v["aud"].as_str().unwrap())
        .unwrap();
    claims.exp = tunnel::protocol::now_secs() - 10;
    std::fs::write(&app_file, issuer.sign(&claims)).unwrap();
    let (_tcp, local) = w.tcp("http://db.test", &[]);
    assert_eq!(echo(local, b"x"), b"x");
    assert_eq!(w.logins(), 1, "no browser: the org token was exchanged");
    // Expired org token too: the browser is needed again.
    let org_file = w
        .token_files()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("-org-token"))
        .unwrap();
    let mut org = issuer
        .verify_org(&std::fs::read_to_string(&org_file).unwrap())
        .unwrap();
    org.exp = tunnel::protocol::now_secs() - 10;
    std::fs::write(&org_file, issuer.sign(&org)).unwrap();
    std::fs::write(&app_file, issuer.sign(&claims)).unwrap();
    let (_tcp2, local2) = w.tcp("http://db.test", &[]);
    assert_eq!(echo(local2, b"y"), b"y");
    assert_eq!(w.logins(), 2);
}

#[test]
fn token_for_another_apps_aud_is_deleted_and_replaced() {
    let w = World::start("1h");
    let out = w.run(&["login", "http://db.test", "--json"]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let app_file = PathBuf::from(v["token_file"].as_str().unwrap());
    let foreign = w.edge.mint("other.test", "alice@example.test", "1h");
    std::fs::write(&app_file, &foreign).unwrap();
    let out = w.run(&["token", "--app", "http://db.test", "--json"]);
    assert_exit(&out, 4);
    assert!(!app_file.exists(), "the foreign token was deleted");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["error"]["code"], "login_needed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tunnel login http://db.test")
    );
    // The tunnel replaces it (org exchange) and bytes flow.
    let (_tcp, local) = w.tcp("http://db.test", &[]);
    assert_eq!(echo(local, b"z"), b"z");
    assert_ne!(std::fs::read_to_string(&app_file).unwrap(), foreign);
}

#[test]
fn token_logout_and_their_exit_codes() {
    let w = World::start("1h");
    let out = w.run(&["token", "--app", "http://db.test"]);
    assert_exit(&out, 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `tunnel login http://db.test`"));
    assert_eq!(w.logins(), 0, "token never starts a login");
    let out = w.run(&["login", "http://db.test", "--print"]);
    assert_exit(&out, 0);
    let token = stdout(&out);
    assert_eq!(token.split('.').count(), 3);
    let out = w.run(&["login", "http://db.test", "--quiet"]);
    assert_exit(&out, 0);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "--quiet prints nothing"
    );
    assert_eq!(w.logins(), 1, "a cached token is reused by login");
    let out = w.run(&["token", "--app", "http://db.test"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), token);
    let out = w.run(&["token", "--app", "http://db.test", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for key in ["token", "app", "aud", "email", "expiry", "token_file"] {
        assert!(!v[key].is_null(), "--json lacks {key}: {v}");
    }
    assert!(v["expiry"].as_str().unwrap().ends_with('Z'));
    let out = w.run(&["logout", "http://db.test", "--json"]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["removed"].as_array().unwrap().len(), 1);
    assert_exit(&w.run(&["token", "--app", "http://db.test"]), 4);
    assert_exit(&w.run(&["logout", "--all"]), 0);
    assert!(
        w.token_files().is_empty(),
        "logout --all removes the org token too"
    );
    // Bad input: a malformed URL is a usage error, in JSON too.
    let out = w.run(&["token", "--app", "ftp://x", "--json"]);
    assert_exit(&out, 2);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["error"]["code"], "usage");
}

#[test]
fn curl_sends_the_token_and_passes_curl_exit_code_through() {
    let w = World::start("1h");
    // The edge answers a non-WebSocket request carrying a valid token with 400 and a
    // text naming the protocol: proof the header arrived.
    let out = w.run(&[
        "curl",
        "http://db.test/",
        "-s",
        "--connect-to",
        &format!("db.test:80:{}", w.edge.connect_to()),
    ]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("carries TCP over WebSocket"),
        "{}",
        stdout(&out)
    );
    assert_eq!(w.logins(), 1);
    // curl's own failure code comes back unchanged (22 with --fail on HTTP 400).
    let out = w.run(&[
        "curl",
        "http://db.test/",
        "-s",
        "--fail",
        "--connect-to",
        &format!("db.test:80:{}", w.edge.connect_to()),
    ]);
    assert_exit(&out, 22);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("eyJ"),
        "token leaked to stderr"
    );
}

#[test]
fn service_token_refusal_never_opens_a_browser() {
    let w = World::start("1h");
    let out = w.run(&[
        "ssh",
        "--hostname",
        "http://db.test",
        "--id",
        "nope",
        "--secret",
        "nope",
    ]);
    assert_exit(&out, 5);
    assert_eq!(w.logins(), 0);
}

#[test]
fn login_now_logs_in_before_the_first_connection() {
    let w = World::start("1h");
    let (_tcp, local) = w.tcp("http://db.test", &["--login-now"]);
    assert_eq!(w.logins(), 1);
    assert_eq!(echo(local, b"n"), b"n");
    assert_eq!(w.logins(), 1);
}

#[test]
fn interrupting_a_pending_login_leaves_nothing_behind() {
    let w = World::start("1h");
    let mut env = w.env();
    env.push(("HOOK_MODE".into(), "record".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut p = Proc::spawn(bin(), ["login", "http://db.test"], &env);
    p.wait_for("cdn-cgi/access/cli?token=", Duration::from_secs(30));
    // The lock and URL files exist while the login waits.
    let names = || -> Vec<String> {
        std::fs::read_dir(w.tokens.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n != "hook.log" && !n.ends_with(".lock"))
            .collect()
    };
    assert!(names().iter().any(|n| n.ends_with(".url")), "{:?}", names());
    p.terminate();
    let status = p.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{}", p.stderr());
    assert!(names().is_empty(), "left behind: {:?}", names());
    assert_no_lock_held(w.tokens.path());
}

/// One raw HTTP/1.1 request to the edge; returns (status, headers+body text).
fn http(
    edge: &Edge,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: db.test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let i = text.find(start).map(|i| i + start.len()).unwrap_or(0);
    let j = text[i..].find(end).map(|j| i + j).unwrap_or(text.len());
    &text[i..j]
}

#[test]
fn login_page_is_csrf_safe_escapes_input_and_hands_off_once() {
    let mut w = World::start("1h");
    let keys = tunnel::protocol::transfer::KeyPair::generate();
    let id = keys.id();
    let aud = tunnel::derive_aud("db.test");
    let q =
        |extra: &str| format!("/cdn-cgi/access/cli?token={id}&aud={aud}&redirect_url=%2F{extra}");

    // The form, with an echoed query value that must come back escaped.
    let (status, page) = http(
        &w.edge,
        "GET",
        &q("&x=%3Cscript%3Ealert(1)%3C/script%3E"),
        &[],
        "",
    );
    assert_eq!(status, 200);
    assert!(
        !page.contains("<script>"),
        "unescaped input echoed:\n{page}"
    );
    let cookie = between(&page, "tunnel_csrf=", ";").to_string();
    let field = between(&page, "name=\"csrf\" value=\"", "\"").to_string();
    assert_eq!(cookie, field, "double-submit cookie and field");
    assert!(page.to_ascii_lowercase().contains("samesite=strict"));

    let form = |csrf: &str, pw: &str| {
        format!("email=alice%40example.test&password={pw}&csrf={csrf}&confirm=on")
    };
    let ctype = ("Content-Type", "application/x-www-form-urlencoded");
    // No cookie (a cross-site post): refused.
    let (status, _) = http(
        &w.edge,
        "POST",
        &q(""),
        &[ctype],
        &form(&field, "correct+horse"),
    );
    assert_eq!(status, 403);
    // Cross-site Origin: refused even with the cookie.
    let c = format!("tunnel_csrf={cookie}");
    let (status, _) = http(
        &w.edge,
        "POST",
        &q(""),
        &[ctype, ("Cookie", &c), ("Origin", "https://evil.test")],
        &form(&field, "correct+horse"),
    );
    assert_eq!(status, 403);
    // Wrong password: 401, the form again with an error.
    let (status, page) = http(
        &w.edge,
        "POST",
        &q(""),
        &[ctype, ("Cookie", &c)],
        &form(&field, "wrong"),
    );
    assert_eq!(status, 401);
    assert!(page.contains("id=\"error\""));
    // The edge's log says why (the page does not), and never the password.
    let line = w
        .edge
        .proc
        .wait_for("login refused: wrong password", crate::support::READY);
    assert!(line.contains("alice@example.test"), "{line}");
    let stranger =
        "email=mallory%40example.test&password=hunter2-typo&confirm=on&csrf=".to_string() + &field;
    let (status, _) = http(&w.edge, "POST", &q(""), &[ctype, ("Cookie", &c)], &stranger);
    assert_eq!(status, 401);
    w.edge
        .proc
        .wait_for("login refused: unknown user", crate::support::READY);
    assert!(
        !w.edge.proc.stderr().contains("hunter2-typo"),
        "password logged"
    );
    // Right password: done, and the hand-off opens with our key only, once.
    let (status, page) = http(
        &w.edge,
        "POST",
        &q(""),
        &[ctype, ("Cookie", &c)],
        &form(&field, "correct+horse"),
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"done\""));
    let (status, resp) = http(&w.edge, "GET", &format!("/transfer/{id}"), &[], "");
    assert_eq!(status, 200);
    let key = between(&resp.to_ascii_lowercase(), "service-public-key: ", "\r\n").to_string();
    let key = resp[resp.to_ascii_lowercase().find(&key).unwrap()..][..key.len()].to_string();
    let body = resp.split("\r\n\r\n").nth(1).unwrap().trim().to_string();
    let handoff = keys
        .open(&body, &key)
        .expect("the hand-off opens with our key");
    assert!(
        tunnel::protocol::transfer::KeyPair::generate()
            .open(&body, &key)
            .is_err(),
        "and only ours"
    );
    assert_eq!(
        http(&w.edge, "GET", &format!("/transfer/{id}"), &[], "").0,
        410,
        "a replay is refused"
    );
    // The app token it carried is accepted by the edge.
    let out = run(
        &[
            "ssh",
            "--hostname",
            "http://db.test",
            "--connect-to",
            &w.edge.connect_to(),
            "--token",
            &handoff.app_token,
        ],
        &[],
    );
    assert_exit(&out, 0);
}

#[test]
fn token_expiring_mid_run_is_refreshed_without_a_browser_or_disturbing_live_streams() {
    let w = World::start("2s");
    let (_tcp, local) = w.tcp("http://db.test", &[]);
    // A live connection, opened with the first token.
    let mut live = TcpStream::connect(local).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0u8; 1];
    live.write_all(b"1").unwrap();
    live.read_exact(&mut byte).unwrap();
    assert_eq!(w.logins(), 1);
    let app_token = || {
        let f = w
            .token_files()
            .into_iter()
            .find(|p| !p.to_string_lossy().ends_with("-org-token"));
        f.map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_default()
    };
    let first = app_token();
    // Let the 2 s token expire (not a timing assertion: any longer wait works too).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(echo(local, b"new connection"), b"new connection");
    assert_eq!(w.logins(), 1, "refreshed through the org token, no browser");
    assert_ne!(app_token(), first, "a new app token was obtained");
    // The live connection never noticed.
    live.write_all(b"2").unwrap();
    live.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"2");
}
