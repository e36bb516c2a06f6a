//! `tunnel up`: several tunnels from one file in one process, one browser login per
//! auth domain, `--check`, and reload (SIGHUP and file changes) that leaves unchanged
//! tunnels and their live connections alone.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::login::{World, echo};
use crate::support::origin::EchoOrigin;
use crate::support::{CI_TOKEN, Edge, Proc, assert_exit, bin, run, tempdir};

fn write(path: &Path, text: &str) {
    // Write beside and rename over, as editors do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn three_tunnels_to_two_apps_share_one_browser_login() {
    let w = World::start("1h");
    let dir = tempdir();
    let config = dir.path().join("up.toml");
    write(
        &config,
        r#"
[[tunnels]]
name = "db"
hostname = "http://db.test"
listen = "127.0.0.1:0"
[[tunnels]]
name = "other"
hostname = "http://other.test"
listen = ["127.0.0.1:0"]
[[tunnels]]
name = "db-again"
hostname = "http://db.test"
listen = "127.0.0.1:0"
"#,
    );
    let env = w.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut p = Proc::spawn(bin(), ["up", "--config", config.to_str().unwrap()], &env);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| p.nth_listening(i)).collect();
    // Two apps of one organisation at once: one browser login, the other app waits
    // for it and exchanges the org token.
    let both: Vec<_> = [addrs[0], addrs[1]]
        .into_iter()
        .map(|a| std::thread::spawn(move || echo(a, b"at once")))
        .collect();
    for t in both {
        assert_eq!(t.join().unwrap(), b"at once");
    }
    assert_eq!(echo(addrs[2], b"third"), b"third");
    assert_eq!(
        w.logins(),
        1,
        "one browser login for the whole organisation"
    );
}

#[test]
fn check_prints_the_plan_and_bad_files_name_the_line() {
    let dir = tempdir();
    let config = dir.path().join("up.toml");
    write(
        &config,
        "connect_to = \"127.0.0.1:9\"\n[[tunnels]]\nhostname = \"db.test\"\nlisten = \"127.0.0.1:5432\"\nservice_token_id_env = \"UP_TEST_ID\"\nservice_token_secret_env = \"UP_TEST_SECRET\"\n",
    );
    let env = [
        ("UP_TEST_ID", "ci.access"),
        ("UP_TEST_SECRET", "s3cret-value"),
    ];
    let out = run(
        &["up", "--check", "--config", config.to_str().unwrap()],
        &env,
    );
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("db.test: 127.0.0.1:5432 -> db.test via 127.0.0.1:9 (service token ci.access from $UP_TEST_ID/$UP_TEST_SECRET)"), "{stdout}");
    assert!(!stdout.contains("s3cret-value"));
    // A missing environment variable, an unknown key (with its line), a clash.
    let out = run(
        &["up", "--check", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("UP_TEST_ID is not set"));
    write(
        &config,
        "[[tunnels]]\nhostname = \"db.test\"\nlisten = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n",
    );
    let out = run(
        &["up", "--check", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 4") && stderr.contains("listen_adress"),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("tunnel: error:"))
            .count(),
        1,
        "{stderr}"
    );
    write(
        &config,
        "[[tunnels]]\nhostname = \"a.test\"\nlisten = \"127.0.0.1:1\"\n[[tunnels]]\nhostname = \"b.test\"\nlisten = \"127.0.0.1:1\"\n",
    );
    let out = run(
        &["up", "--check", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1 is used by tunnels"));
}

#[test]
fn check_parses_listen_addresses_as_tcp_url_does() {
    let dir = tempdir();
    let config = dir.path().join("up.toml");
    let check = |text: &str| {
        write(&config, text);
        run(
            &["up", "--check", "--config", config.to_str().unwrap()],
            &[],
        )
    };
    // Refused by --check, not only when the tunnel starts, with the one parser's error.
    let out = check("[[tunnels]]\nhostname = \"db.test\"\nlisten = \"127.0.0.1\"\n");
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid `listen` \"127.0.0.1\": the port is missing; expected host:port"),
        "{stderr}"
    );
    // One address however it is spelled (`tcp://` and spaces are ignored, as by --url).
    let out = check(
        "[[tunnels]]\nhostname = \"a.test\"\nlisten = \"127.0.0.1:1\"\n[[tunnels]]\nhostname = \"b.test\"\nlisten = \" tcp://127.0.0.1:1/\"\n",
    );
    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is used by tunnels"));
}

fn tunnels(edge: &Edge, names: &[(&str, &str)]) -> String {
    let mut s = format!("connect_to = \"{}\"\n", edge.connect_to());
    for (name, extra) in names {
        s.push_str(&format!(
            "[[tunnels]]\nname = \"{name}\"\nhostname = \"http://db.test\"\nlisten = \"127.0.0.1:0\"\nservice_token_id_env = \"UP_ID\"\nservice_token_secret_env = \"UP_SECRET\"\n{extra}\n"
        ));
    }
    s
}

/// The address of `tunnel up`'s tunnel `name` from its `nth` "listening on" line
/// (a changed tunnel logs a new one when it restarts).
fn listening_for(p: &mut Proc, name: &str, nth: usize) -> SocketAddr {
    p.nth_listening_ending(nth, &format!(" (tunnel {name})"))
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err()
}

#[test]
fn reload_adds_removes_and_changes_tunnels_while_a_live_connection_flows() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        origin.addr
    ));
    let dir = tempdir();
    let config = dir.path().join("up.toml");
    write(
        &config,
        &tunnels(&edge, &[("keep", ""), ("drop", ""), ("change", "")]),
    );
    let env = [("UP_ID", "ci.access"), ("UP_SECRET", "s3cret")];
    let mut p = Proc::spawn(bin(), ["up", "--config", config.to_str().unwrap()], &env);
    let keep = listening_for(&mut p, "keep", 0);
    let dropped = listening_for(&mut p, "drop", 0);

    // A live connection on the unchanged tunnel: half the data now, half after.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut live = TcpStream::connect(keep).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = live.try_clone().unwrap();
    let got = std::thread::spawn(move || {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).map(|_| back)
    });
    live.write_all(&data[..data.len() / 2]).unwrap();

    // Reload by editing the file: drop one, change one, add one.
    write(
        &config,
        &tunnels(
            &edge,
            &[
                ("keep", ""),
                ("change", "headers = [\"X-Changed: 1\"]"),
                ("new", ""),
            ],
        ),
    );
    p.wait_for("reloaded", Duration::from_secs(30));
    let changed = listening_for(&mut p, "change", 1);
    let added = listening_for(&mut p, "new", 0);
    assert!(refused(dropped), "the dropped tunnel stopped accepting");
    assert_eq!(echo(changed, b"changed"), b"changed");
    assert_eq!(echo(added, b"added"), b"added");

    // A broken file (by SIGHUP this time) leaves everything as it was.
    std::fs::write(&config, "[[tunnels]]\nhostname = \n").unwrap();
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(p.child.id().to_string())
        .status();
    p.wait_for("not reloaded", Duration::from_secs(30));
    assert_eq!(echo(added, b"still"), b"still");

    live.write_all(&data[data.len() / 2..]).unwrap();
    live.shutdown(Shutdown::Write).unwrap();
    let back = got
        .join()
        .unwrap()
        .expect("the live connection kept flowing");
    assert!(
        back == data,
        "live connection: {} of {} bytes, or different",
        back.len(),
        data.len()
    );
    assert_eq!(echo(keep, b"keep"), b"keep");
}

#[test]
fn a_cloudflared_config_imports_as_a_checked_plan_without_its_secrets() {
    let dir = tempdir();
    let yml = dir.path().join("config.yml");
    std::fs::write(
        &yml,
        "logDirectory: /var/log/cloudflared\nforwarders:\n  - url: ssh.example.com\n    listener: tcp://localhost:2222\n  - url: https://rdp.example.com\n    listener: 127.0.0.1:3389\n    destination: 10.0.0.5:3389\n    serviceTokenID: rdp.access\n    serviceTokenSecret: very-secret-value\n",
    )
    .unwrap();
    let out = run(&["up", "--from-cloudflared", yml.to_str().unwrap()], &[]);
    assert_exit(&out, 0);
    let toml = String::from_utf8_lossy(&out.stdout).to_string();
    let notes = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !toml.contains("very-secret-value") && !notes.contains("very-secret-value"),
        "{toml}{notes}"
    );
    assert!(
        notes.contains("TUNNEL_RDP_EXAMPLE_COM_ID=rdp.access"),
        "{notes}"
    );
    let config = dir.path().join("up.toml");
    std::fs::write(&config, &toml).unwrap();
    let env = [
        ("TUNNEL_RDP_EXAMPLE_COM_ID", "rdp.access"),
        ("TUNNEL_RDP_EXAMPLE_COM_SECRET", "very-secret-value"),
    ];
    let out = run(
        &["up", "--check", "--config", config.to_str().unwrap()],
        &env,
    );
    assert_exit(&out, 0);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("ssh.example.com: localhost:2222 -> ssh.example.com (login"),
        "{plan}"
    );
    assert!(plan.contains("rdp.example.com: 127.0.0.1:3389 -> https://rdp.example.com to 10.0.0.5:3389 (service token rdp.access"), "{plan}");
}

/// Issue 11: `SSL_CERT_FILE` is read once per process, not on every TLS config
/// build: a `tunnel up` whose file has gone since it started still reloads (it
/// builds a config for the new tunnel). Before, the reload read the file again and
/// was refused.
#[test]
fn ssl_cert_file_is_read_once_per_process() {
    let origin = EchoOrigin::start();
    let edge = Edge::start(&format!(
        "[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        origin.addr
    ));
    // The CA apart from the config, so its removal is no change to the watched file.
    let pki = tempdir();
    crate::support::write_test_pki(pki.path(), &["db.test"]);
    let ca = pki.path().join("ca.pem");
    let dir = tempdir();
    let config = dir.path().join("up.toml");
    write(&config, &tunnels(&edge, &[("first", "")]));
    let env = [
        ("UP_ID", "ci.access"),
        ("UP_SECRET", "s3cret"),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ];
    let mut p = Proc::spawn(bin(), ["up", "--config", config.to_str().unwrap()], &env);
    let first = listening_for(&mut p, "first", 0);
    p.wait_for("tunnels up from", Duration::from_secs(30));
    std::fs::remove_file(&ca).unwrap();
    write(&config, &tunnels(&edge, &[("first", ""), ("second", "")]));
    // The file watcher may not be installed yet: SIGHUP reloads too.
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(p.child.id().to_string())
        .status();
    let log = p.wait_for("reloaded", Duration::from_secs(30));
    assert!(!log.contains("not reloaded"), "{log}");
    let second = listening_for(&mut p, "second", 0);
    assert_eq!(echo(second, b"second"), b"second");
    assert_eq!(echo(first, b"first"), b"first");
}
