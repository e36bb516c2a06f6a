//! The smaller commands: `demo` (the README's first command), `ssh-config`,
//! `edge check-config` and `edge mint-token`.

use crate::support::{CI_TOKEN, Edge, assert_exit, run, tempdir};

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
