//! What a hostile edge, a bad flag or a missing network can get from the client:
//! tokens go only to the edge that issued them, nothing is deleted because of another
//! host's answer, bodies from an edge are bounded, and credentials with line breaks
//! are refused. Each test fails on the client before these rules (issue 10).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use tunnel::Issuer;

use crate::login::World;
use crate::support::hostile::Hostile;
use crate::support::origin::EchoOrigin;
use crate::support::{CI_TOKEN, Edge, Proc, assert_exit, bin, run, tempdir};

/// The `aud` of a compact JWT (first one).
fn aud_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    match &v["aud"] {
        serde_json::Value::Array(a) => a[0].as_str().unwrap().to_string(),
        a => a.as_str().unwrap().to_string(),
    }
}

/// A victim's token cache: a valid app token for `db.test` and an org token, both
/// from a real edge whose auth domain is `auth.example.test`.
struct Victim {
    _edge: Edge,
    cache: tempfile::TempDir,
    app_file: PathBuf,
    app_token: String,
    org_file: PathBuf,
    org_token: String,
    aud: String,
}

impl Victim {
    fn new() -> Victim {
        let origin = EchoOrigin::start();
        let edge = Edge::start(&format!(
            "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"alice@example.test\"]\n",
            origin.addr
        ));
        let app_token = edge.mint("db.test", "alice@example.test", "1h");
        let aud = aud_of(&app_token);
        let issuer = Issuer::load_or_create(
            &edge.dir.path().join("signing-key.pem"),
            "auth.example.test",
        )
        .unwrap();
        let org_token = issuer.mint_org("alice@example.test", Duration::from_secs(3600));
        let cache = tempdir();
        let app_file = cache.path().join(format!("db.test-{aud}-token"));
        let org_file = cache.path().join("auth.example.test-org-token");
        std::fs::write(&app_file, &app_token).unwrap();
        std::fs::write(&org_file, &org_token).unwrap();
        Victim {
            _edge: edge,
            cache,
            app_file,
            app_token,
            org_file,
            org_token,
            aud,
        }
    }

    fn assert_intact(&self) {
        assert_eq!(
            std::fs::read_to_string(&self.app_file).unwrap(),
            self.app_token,
            "app token changed or deleted"
        );
        assert_eq!(
            std::fs::read_to_string(&self.org_file).unwrap(),
            self.org_token,
            "org token changed or deleted"
        );
    }
}

/// A `BROWSER` that only records the URLs it was asked to open.
fn recording_browser(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("browser.log");
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", log.display()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (script, log)
}

/// `tunnel login https://evil.test` aimed at `hostile`, with `env`.
fn login_at(hostile: &Hostile, env: &[(&str, &str)]) -> std::process::Output {
    let reach = hostile.reach();
    let mut args = vec!["login", "https://evil.test"];
    args.extend(reach.iter().map(String::as_str));
    run(&args, env)
}

/// Connect to a local listener, send a line, and read until the tunnel gives up.
fn poke(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(b"hello\n");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

#[test]
fn a_hostile_edge_claiming_another_app_gets_no_token_and_deletes_nothing() {
    let victim = Victim::new();
    // A server with a certificate the client trusts, its own keys and auth domain,
    // claiming the victim app's hostname and (public) AUD.
    let hostile = Hostile::claiming("db.test", &victim.aud);
    let (browser, browser_log) = recording_browser(victim.cache.path());
    let env = [
        ("TUNNEL_TOKEN_DIR", victim.cache.path().to_str().unwrap()),
        ("BROWSER", browser.to_str().unwrap()),
    ];
    let mut args: Vec<String> = [
        "tcp",
        "--hostname",
        "https://evil.test",
        "--url",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(hostile.reach());
    let mut p = Proc::spawn(bin(), &args, &env);
    let addr = p.wait_listening();
    poke(addr);
    poke(addr);
    let seen = hostile.transcript();
    assert!(
        seen.contains("cf-access-metadata-request"),
        "discovery reached it: {seen}"
    );
    assert!(
        !seen.contains(&victim.app_token),
        "the victim's app token was sent:\n{seen}"
    );
    assert!(
        !seen.contains(&victim.org_token),
        "the victim's org token was sent:\n{seen}"
    );
    victim.assert_intact();
    assert!(
        !browser_log.exists(),
        "no login for an edge that lies about its app"
    );
    let stderr = p.stderr();
    assert!(stderr.contains("does not cover evil.test"), "{stderr}");
}

#[test]
fn a_hostile_edge_under_its_own_name_gets_nothing_it_did_not_issue() {
    let victim = Victim::new();
    // Self-consistent this time: its own host, its own auth domain, the victim's AUD.
    let hostile = Hostile::claiming("evil.test", &victim.aud);
    let (browser, _) = recording_browser(victim.cache.path());
    let out = login_at(
        &hostile,
        &[
            ("TUNNEL_TOKEN_DIR", victim.cache.path().to_str().unwrap()),
            ("BROWSER", browser.to_str().unwrap()),
        ],
    );
    assert_exit(&out, 5);
    let seen = hostile.transcript();
    assert!(
        !seen.contains(&victim.app_token) && !seen.contains(&victim.org_token),
        "{seen}"
    );
    victim.assert_intact();
}

#[test]
fn an_edge_cannot_make_the_client_read_a_huge_jwks() {
    let hostile = Hostile::claiming("evil.test", "aud1");
    *hostile.jwks_bytes.lock().unwrap() = 64 * 1024 * 1024;
    let cache = tempdir();
    let out = login_at(
        &hostile,
        &[
            ("TUNNEL_TOKEN_DIR", cache.path().to_str().unwrap()),
            ("BROWSER", "false"),
        ],
    );
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("larger than"), "{stderr}");
}

#[test]
fn credentials_and_headers_with_line_breaks_are_usage_errors() {
    let cases: [(&[&str], &str); 5] = [
        (&["--token", "abc\r\nX-Evil: 1"], "--token"),
        (
            &["--id", "ci.access\n", "--secret", "s3cret"],
            "--service-token-id",
        ),
        (
            &["--id", "ci.access", "--secret", "s3c\rret"],
            "--service-token-secret",
        ),
        (&["-H", "X-A: b\r\nX-Evil: c"], "--header"),
        (&["-H", "X-A: b\n"], "--header"),
    ];
    for (extra, flag) in cases {
        let mut args = vec![
            "tcp",
            "--hostname",
            "http://db.test",
            "--url",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let out = run(&args, &[]);
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert!(
            !stderr.contains("s3c") && !stderr.contains("abc"),
            "a secret was echoed: {stderr}"
        );
    }
}

#[test]
fn token_and_logout_answer_from_the_cache_without_the_network() {
    let victim = Victim::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = dead.to_string();
    let env = [("TUNNEL_TOKEN_DIR", victim.cache.path().to_str().unwrap())];
    let out = run(
        &["token", "--app", "http://db.test", "--connect-to", &dead],
        &env,
    );
    assert_exit(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        victim.app_token
    );
    // A reader that went away (`tunnel token | head -c1`): quiet, and still 0.
    let out = crate::support::run_into_closed_pipe(
        &["token", "--app", "http://db.test", "--connect-to", &dead],
        &env,
    );
    assert_exit(&out, 0);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another app: no token cached, and the edge is unreachable: "log in", not "network".
    let out = run(
        &["token", "--app", "http://other.test", "--connect-to", &dead],
        &env,
    );
    assert_exit(&out, 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tunnel login"));
    let out = run(&["logout", "http://db.test", "--connect-to", &dead], &env);
    assert_exit(&out, 0);
    assert!(
        !victim.app_file.exists(),
        "logout removed the app token offline"
    );
    assert!(
        victim.org_file.exists(),
        "logout of one app keeps the org token"
    );
}

#[test]
fn an_app_that_refuses_a_logged_in_user_is_reported_without_a_second_browser() {
    let origin = EchoOrigin::start();
    let w = World::start_with_extra(&format!(
        "[[apps]]\nhostname = \"private.test\"\norigin = \"{}\"\nallow = [\"bob@example.test\"]\n",
        origin.addr
    ));
    assert_exit(&w.run(&["login", "http://db.test"]), 0);
    assert_eq!(w.logins(), 1);
    let out = w.run(&["login", "http://private.test"]);
    assert_exit(&out, 9);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not allow alice@example.test"),
        "{stderr}"
    );
    assert_eq!(
        w.logins(),
        1,
        "no browser window for a user the app refuses"
    );
    assert!(
        w.token_files()
            .iter()
            .any(|p| p.to_string_lossy().ends_with("-org-token")),
        "the org token is kept: it is good for the apps that allow this user"
    );
}

#[test]
fn login_now_checks_a_service_token_against_the_edge() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        origin.addr
    ));
    let to = edge.connect_to();
    let base = [
        "tcp",
        "--hostname",
        "http://db.test",
        "--connect-to",
        &to,
        "--url",
        "127.0.0.1:0",
        "--login-now",
    ];
    let mut bad = base.to_vec();
    bad.extend_from_slice(&["--id", "ci.access", "--secret", "wrong"]);
    let out = run(&bad, &[]);
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ci.access"), "{stderr}");
    // The right one starts listening (and the probe stream ended cleanly).
    let mut good = base.to_vec();
    good.extend_from_slice(&["--id", "ci.access", "--secret", "s3cret"]);
    let mut p = Proc::spawn(bin(), &good, &[]);
    let addr = p.wait_listening();
    assert_eq!(crate::login::echo(addr, b"ping"), b"ping");
}
