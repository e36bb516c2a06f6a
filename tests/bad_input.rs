//! Bad input: each case ends with one clear `tunnel: error:` line and its own
//! documented exit code, and nothing hangs (every run is killed after 60 s).

use std::net::{SocketAddr, TcpListener};

use tunnel::protocol::{Audience, now_secs};
use tunnel::{Claims, Issuer};

use crate::support::origin::EchoOrigin;
use crate::support::{CI_TOKEN, Edge, assert_exit, run, tempdir};

const OK_SERVICE: [&str; 4] = ["--id", "ci.access", "--secret", "s3cret"];

fn app(host: &str, origin: SocketAddr) -> String {
    format!(
        "[[apps]]\nhostname = \"{host}\"\norigin = \"{origin}\"\nallow = [\"service:ci\", \"alice@example.test\"]\n{CI_TOKEN}"
    )
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Run `tunnel ssh` (stdio mode) against `edge`, return its output after checking
/// the exit code and that stderr holds exactly one error line containing `needle`.
fn ssh(edge_addr: &str, hostname: &str, extra: &[&str], code: i32, needle: &str) -> String {
    let mut args = vec!["ssh", "--hostname", hostname, "--connect-to", edge_addr];
    args.extend_from_slice(extra);
    let out = run(&args, &[]);
    assert_exit(&out, code);
    if code == 0 {
        return String::from_utf8_lossy(&out.stderr).to_string();
    }
    one_error_line(&out, needle)
}

fn one_error_line(out: &std::process::Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("tunnel: error:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "want exactly one error line, stderr:\n{stderr}"
    );
    assert!(
        errors[0].contains(needle),
        "error line lacks {needle:?}: {}",
        errors[0]
    );
    assert!(out.stdout.is_empty(), "nothing may reach stdout");
    errors[0].to_string()
}

#[test]
fn wrong_service_secret_is_refused_without_a_login() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("db.test", origin.addr));
    let line = ssh(
        &edge.connect_to(),
        "http://db.test",
        &["--id", "ci.access", "--secret", "wrong"],
        5,
        "refused service token \"ci.access\"",
    );
    // The refusal names the status, the login redirect and the edge's reason, and
    // never offers a browser login or leaks the secret.
    for part in [
        "HTTP 302",
        "/cdn-cgi/access/login/db.test",
        "invalid service token",
        "cf-ray",
    ] {
        assert!(line.contains(part), "{line} lacks {part}");
    }
    assert!(!line.contains("wrong"), "secret leaked: {line}");
    assert_eq!(origin.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn service_token_from_env_vars_works_and_is_never_logged() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("db.test", origin.addr));
    let out = run(
        &[
            "ssh",
            "--hostname",
            "http://db.test",
            "--connect-to",
            &edge.connect_to(),
            "--log-level",
            "debug",
        ],
        &[
            ("TUNNEL_SERVICE_TOKEN_ID", "ci.access"),
            ("TUNNEL_SERVICE_TOKEN_SECRET", "s3cret"),
        ],
    );
    assert_exit(&out, 0);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    assert!(!edge.proc.stderr().contains("s3cret"));
}

#[test]
fn expired_token_is_refused() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("db.test", origin.addr));
    let good = edge.mint("db.test", "alice@example.test", "1h");
    ssh(
        &edge.connect_to(),
        "http://db.test",
        &["--token", &good],
        0,
        "",
    );
    let issuer = Issuer::load_or_create(
        &edge.dir.path().join("signing-key.pem"),
        "auth.example.test",
    )
    .unwrap();
    let claims: Claims = issuer
        .verify(&good, &tunnel::derive_aud("db.test"))
        .unwrap();
    let expired = issuer.sign(&Claims {
        exp: now_secs() - 3600,
        ..claims
    });
    let line = ssh(
        &edge.connect_to(),
        "http://db.test",
        &["--token", &expired],
        5,
        "refused the access token",
    );
    assert!(line.contains("token expired"), "{line}");
}

#[test]
fn wrongly_signed_token_is_refused() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("db.test", origin.addr));
    let dir = tempdir();
    let other = Issuer::load_or_create(&dir.path().join("other.pem"), "auth.example.test").unwrap();
    let forged = other.sign(&Claims {
        aud: Audience::One(tunnel::derive_aud("db.test")),
        email: Some("alice@example.test".into()),
        common_name: None,
        sub: "alice".into(),
        iss: "https://auth.example.test".into(),
        iat: now_secs(),
        nbf: now_secs(),
        exp: now_secs() + 3600,
        kind: "app".into(),
    });
    ssh(
        &edge.connect_to(),
        "http://db.test",
        &["--token", &forged],
        5,
        "refused the access token",
    );
}

#[test]
fn token_for_another_app_is_refused() {
    let origin = EchoOrigin::start();
    let body = format!(
        "{}\n[[apps]]\nhostname = \"other.test\"\norigin = \"{}\"\nallow = [\"alice@example.test\"]\n",
        app("db.test", origin.addr),
        origin.addr
    );
    let edge = Edge::start(&body);
    let other = edge.mint("other.test", "alice@example.test", "1h");
    let line = ssh(
        &edge.connect_to(),
        "http://db.test",
        &["--token", &other],
        5,
        "refused the access token",
    );
    assert!(line.contains("another app"), "{line}");
}

#[test]
fn untrusted_edge_certificate() {
    let origin = EchoOrigin::start();
    let edge = Edge::start_tls(&app("db.test", origin.addr), &["db.test"]);
    let line = ssh(
        &edge.connect_to(),
        "https://db.test",
        &OK_SERVICE,
        7,
        "TLS with db.test",
    );
    assert!(line.contains("pass it with --ca-file"), "{line}");
    // With the CA it works; a name the certificate lacks is refused, and the hint
    // is about the name, not the CA.
    let ca = edge.ca().display().to_string();
    let mut ok = OK_SERVICE.to_vec();
    ok.extend(["--ca-file", &ca]);
    ssh(&edge.connect_to(), "https://db.test", &ok, 0, "");
    let line = ssh(
        &edge.connect_to(),
        "https://other.test",
        &ok,
        7,
        "TLS with other.test",
    );
    assert!(line.contains("certificate is for another name"), "{line}");
    assert!(!line.contains("--ca-file"), "{line}");
}

#[test]
fn https_against_a_plain_http_edge_says_so() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("db.test", origin.addr));
    let line = ssh(
        &edge.connect_to(),
        "https://db.test",
        &OK_SERVICE,
        7,
        "TLS with db.test",
    );
    assert!(line.contains("use an http:// hostname"), "{line}");
    assert!(!line.contains("--ca-file"), "{line}");
}

#[test]
fn argument_errors_are_one_line_with_clap_s_tip_and_exit_2() {
    let out = run(&["tcp", "--hostnme", "db.test"], &[]);
    assert_exit(&out, 2);
    let line = one_error_line(&out, "unexpected argument '--hostnme'");
    assert!(line.contains("'--hostname'"), "{line}");
    assert!(line.contains("see 'tunnel tcp --help'"), "{line}");
    let out = run(&["logni", "https://app.test"], &[]);
    assert_exit(&out, 2);
    let line = one_error_line(&out, "unrecognized subcommand 'logni'");
    assert!(line.contains("'login'"), "{line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn url_listed_twice_or_not_of_this_machine_is_named() {
    let port = closed_port().port();
    let twice = format!("127.0.0.1:{port},127.0.0.1:{port}");
    let out = run(
        &["tcp", "--hostname", "http://db.test", "--url", &twice],
        &[],
    );
    assert_exit(&out, 2);
    let line = one_error_line(&out, "lists this address twice");
    assert!(!line.contains("another program"), "{line}");
    let out = run(
        &[
            "tcp",
            "--hostname",
            "http://db.test",
            "--url",
            "10.9.9.9:5000",
        ],
        &[],
    );
    assert_exit(&out, 2);
    one_error_line(
        &out,
        "10.9.9.9:5000 (--url \"10.9.9.9:5000\"): that is not an address of this machine",
    );
}

#[test]
fn demo_checks_its_flags_before_starting_anything() {
    let out = run(&["demo", "--url", "nonsense"], &[]);
    assert_exit(&out, 2);
    one_error_line(&out, "invalid --url \"nonsense\"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "started something first:\n{stderr}"
    );
}

#[test]
fn mint_token_refuses_a_token_that_is_expired_at_once() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&app("db.test", origin.addr));
    let config = edge.config.display().to_string();
    for ttl in ["0s", "0ms"] {
        let out = run(
            &[
                "edge",
                "mint-token",
                "--config",
                &config,
                "--app",
                "db.test",
                "--email",
                "a@b.test",
                "--ttl",
                ttl,
            ],
            &[],
        );
        assert_exit(&out, 2);
        one_error_line(&out, "expired at once");
    }
}

#[test]
fn unreachable_edge() {
    let line = ssh(
        &closed_port().to_string(),
        "http://db.test",
        &OK_SERVICE,
        6,
        "cannot connect to the edge",
    );
    assert!(line.contains("refused"), "{line}");
}

#[test]
fn origin_that_refuses() {
    let edge = Edge::start(&app("db.test", closed_port()));
    ssh(
        &edge.connect_to(),
        "http://db.test",
        &OK_SERVICE,
        8,
        "could not reach the origin",
    );
}

#[test]
fn unknown_app_and_forbidden_jump_destination() {
    let origin = EchoOrigin::start();
    let body = format!(
        "{}\n[[apps]]\nhostname = \"bastion.test\"\ndestinations = [\"{}\"]\nallow = [\"service:ci\"]\n",
        app("db.test", origin.addr),
        origin.addr
    );
    let edge = Edge::start(&body);
    ssh(
        &edge.connect_to(),
        "http://nope.test",
        &OK_SERVICE,
        9,
        "no app is configured for nope.test",
    );
    let mut bad = OK_SERVICE.to_vec();
    bad.extend(["--destination", "10.9.9.9:22"]);
    ssh(
        &edge.connect_to(),
        "http://bastion.test",
        &bad,
        9,
        "destination 10.9.9.9:22 is not allowed",
    );
    let dest = origin.addr.to_string();
    let mut good = OK_SERVICE.to_vec();
    good.extend(["--destination", &dest]);
    ssh(&edge.connect_to(), "http://bastion.test", &good, 0, "");
}

#[test]
fn malformed_hostname_and_url() {
    for host in ["", "ftp://db.test", "db test", "db.test:99999"] {
        let out = run(&["ssh", "--hostname", host], &[]);
        assert_exit(&out, 2);
        one_error_line(&out, "invalid --hostname");
    }
    for url in ["nope", "127.0.0.1:http", ":80"] {
        let out = run(&["tcp", "--hostname", "http://db.test", "--url", url], &[]);
        assert_exit(&out, 2);
        one_error_line(&out, "invalid --url");
    }
    let out = run(&["tcp", "--hostname", "http://db.test", "--id", "x"], &[]);
    assert_exit(&out, 2);
}

#[test]
fn port_already_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = taken.local_addr().unwrap().to_string();
    let out = run(&["tcp", "--hostname", "http://db.test", "--url", &url], &[]);
    assert_exit(&out, 3);
    one_error_line(&out, "another program uses this port");
}

#[test]
fn bad_edge_config_is_one_line_and_exit_3() {
    let dir = tempdir();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, "listen = \"0.0.0.0:7000\"\nauth_domain = \"a.test\"\n[[apps]]\nhostname = \"x.test\"\norigin = \"127.0.0.1:1\"\nallow = [\"a@b.test\"]\n").unwrap();
    let out = run(&["edge", "--config", path.to_str().unwrap()], &[]);
    assert_exit(&out, 3);
    one_error_line(&out, "set tls_cert and tls_key");
}
