//! `tunnel doctor`: each broken step is named with its fix and its exit code, and a
//! working path exits 0. Real edge, real binary, loopback only.

use std::time::Duration;

use tunnel::Issuer;

use crate::support::origin::EchoOrigin;
use crate::support::{CI_TOKEN, Edge, assert_exit, run, tempdir};

fn edge() -> (Edge, EchoOrigin) {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"alice@example.test\", \"service:ci\"]\n{CI_TOKEN}",
        origin.addr
    ));
    (edge, origin)
}

fn doctor(args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    let out = run(&all, env);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (out, stdout)
}

/// `tunnel doctor HOST --connect-to TO` with the test service token and `extra`.
fn doctor_service(host: &str, to: &str, extra: &[&str]) -> (std::process::Output, String) {
    let mut args = vec![
        host,
        "--connect-to",
        to,
        "--id",
        "ci.access",
        "--secret",
        "s3cret",
    ];
    args.extend_from_slice(extra);
    doctor(&args, &[])
}

/// The line of `step` in the report, e.g. `fail  connect ...`.
fn line<'a>(report: &'a str, step: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(step))
        .unwrap_or_else(|| panic!("no {step} line in:\n{report}"))
}

#[test]
fn a_working_path_exits_0_and_json_lists_every_step() {
    let (edge, _o) = edge();
    let to = edge.connect_to();
    let (out, report) = doctor_service("http://db.test", &to, &[]);
    assert_exit(&out, 0);
    assert!(line(&report, "upgrade").starts_with("  ok"), "{report}");
    assert!(
        report.contains("a tunnel to this app would work"),
        "{report}"
    );
    let (out, json) = doctor_service("http://db.test", &to, &["--json"]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], true);
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        &steps[..4],
        ["resolve", "proxy", "connect", "upgrade"],
        "{json}"
    );
    assert!(!json.contains("s3cret"), "no secret in the report");
}

#[test]
fn an_edge_that_is_down_fails_at_connect() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (out, report) = doctor(
        &[
            "http://db.test",
            "--connect-to",
            &dead,
            "--id",
            "a",
            "--secret",
            "b",
        ],
        &[],
    );
    assert_exit(&out, 6);
    assert!(line(&report, "connect").starts_with("  fail"), "{report}");
    assert!(report.contains("fix: the edge is down"), "{report}");
}

#[test]
fn a_private_ca_fails_at_tls_and_says_what_would_help() {
    let origin = EchoOrigin::start();
    let edge = Edge::start_tls(
        &format!(
            "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
            origin.addr
        ),
        &["db.test"],
    );
    let to = edge.connect_to();
    let (out, report) = doctor_service("https://db.test", &to, &[]);
    assert_exit(&out, 7);
    assert!(line(&report, "tls").starts_with("  fail"), "{report}");
    assert!(report.contains("--ca-file"), "{report}");
    let ca = edge.ca().display().to_string();
    let (out, _) = doctor_service("https://db.test", &to, &["--ca-file", &ca]);
    assert_exit(&out, 0);
}

#[test]
fn a_wrong_hostname_is_refused_by_the_edge() {
    let (edge, _o) = edge();
    let to = edge.connect_to();
    let cache = tempdir();
    let env = [("TUNNEL_TOKEN_DIR", cache.path().to_str().unwrap())];
    let (out, report) = doctor(&["http://nope.test", "--connect-to", &to], &env);
    assert_exit(&out, 9);
    assert!(
        line(&report, "upgrade").contains("no app is configured for nope.test"),
        "{report}"
    );
}

#[test]
fn login_needed_refused_identity_and_expired_token_are_told_apart() {
    let (edge, _o) = edge();
    let to = edge.connect_to();
    let cache = tempdir();
    let env = [("TUNNEL_TOKEN_DIR", cache.path().to_str().unwrap())];
    // No token at all: log in.
    let (out, report) = doctor(&["http://db.test", "--connect-to", &to], &env);
    assert_exit(&out, 4);
    assert!(line(&report, "upgrade").starts_with("  fail"), "{report}");
    assert!(
        report.contains("run `tunnel login http://db.test/`"),
        "{report}"
    );
    assert!(line(&report, "discovery").starts_with("  ok"), "{report}");
    assert!(line(&report, "clock").starts_with("  ok"), "{report}");

    // A cached token for someone the app does not allow: the edge's refusal.
    let issuer = Issuer::load_or_create(
        &edge.dir.path().join("signing-key.pem"),
        "auth.example.test",
    )
    .unwrap();
    let aud = tunnel::derive_aud("db.test");
    let file = cache.path().join(format!("db.test-{aud}-token"));
    std::fs::write(
        &file,
        issuer.mint(&aud, "mallory@example.test", Duration::from_secs(3600)),
    )
    .unwrap();
    let (out, report) = doctor(&["http://db.test", "--connect-to", &to], &env);
    assert_exit(&out, 9);
    assert!(line(&report, "token").starts_with("  ok"), "{report}");
    assert!(line(&report, "upgrade").starts_with("  fail"), "{report}");

    // An expired one: named as such, and kept on disk (doctor deletes nothing).
    let mut claims = issuer
        .verify(
            &issuer.mint(&aud, "alice@example.test", Duration::from_secs(60)),
            &aud,
        )
        .unwrap();
    claims.exp = tunnel::protocol::now_secs() - 3600;
    std::fs::write(&file, issuer.sign(&claims)).unwrap();
    let (out, report) = doctor(&["http://db.test", "--connect-to", &to], &env);
    assert_exit(&out, 4);
    assert!(line(&report, "token").contains("expired at"), "{report}");
    assert!(
        file.exists(),
        "doctor must not delete the token it inspects"
    );

    // A good one: the path works end to end.
    std::fs::write(
        &file,
        issuer.mint(&aud, "alice@example.test", Duration::from_secs(3600)),
    )
    .unwrap();
    let (out, report) = doctor(&["http://db.test", "--connect-to", &to], &env);
    assert_exit(&out, 0);
    assert!(
        line(&report, "upgrade").contains("with the cached token"),
        "{report}"
    );
}
