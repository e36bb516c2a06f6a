//! `tunnel status`: a running `tcp` (or `up`) answers on a control socket private to
//! the user with its tunnels, listeners, token identity and live connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::login::{World, echo};
use crate::support::{Proc, assert_exit, bin, run, tempdir};

fn status(runtime: &str) -> serde_json::Value {
    let out = run(&["status", "--json"], &[("TUNNEL_RUNTIME_DIR", runtime)]);
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_lists_the_live_connection_and_the_token_identity() {
    let w = World::start("1h");
    let runtime = tempdir();
    let rt = runtime.path().join("run");
    let rt_s = rt.to_str().unwrap().to_string();
    let mut env = w.env();
    env.push(("TUNNEL_RUNTIME_DIR".into(), rt_s.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut p = Proc::spawn(
        bin(),
        [
            "tcp",
            "--hostname",
            "http://db.test",
            "--url",
            "127.0.0.1:0",
        ],
        &env,
    );
    let addr = p.wait_listening();
    assert_eq!(echo(addr, b"log in first"), b"log in first");

    // A live connection that has moved 1000 bytes each way.
    let mut live = TcpStream::connect(addr).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    live.write_all(&[1u8; 1000]).unwrap();
    let mut back = [0u8; 1000];
    live.read_exact(&mut back).unwrap();

    let docs = status(&rt_s);
    let docs = docs.as_array().unwrap();
    assert_eq!(docs.len(), 1, "{docs:?}");
    let t = &docs[0]["tunnels"][0];
    assert_eq!(t["hostname"], "ws://db.test/");
    assert_eq!(t["listeners"][0], addr.to_string());
    assert_eq!(t["credentials"], "login");
    assert_eq!(t["token"]["identity"], "alice@example.test", "{t}");
    let conns = t["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "only the live one: {t}");
    assert_eq!(conns[0]["peer"], live.local_addr().unwrap().to_string());
    assert_eq!(conns[0]["bytes_up"], 1000);
    assert_eq!(conns[0]["bytes_down"], 1000);
    let text = String::from_utf8_lossy(&run(&["status"], &[("TUNNEL_RUNTIME_DIR", &rt_s)]).stdout)
        .to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("alice@example.test"),
        "{text}"
    );
    let secret_free = docs[0].to_string();
    let token_file = std::fs::read_to_string(&w.token_files()[0]).unwrap();
    assert!(
        !secret_free.contains(token_file.trim()),
        "no token in the status document"
    );

    // Private to the user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&rt), 0o700);
        let sock = std::fs::read_dir(&rt)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert_eq!(mode(&sock), 0o600);
    }

    // The connection ends: it leaves the list. The process is killed: its socket
    // is cleaned up by the next query.
    drop(live);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !status(&rt_s)[0]["tunnels"][0]["connections"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection stayed listed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(p);
    assert_eq!(status(&rt_s).as_array().unwrap().len(), 0);
    assert_eq!(
        std::fs::read_dir(&rt).unwrap().count(),
        0,
        "stale socket removed"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_stable_fields_and_no_secrets() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut p = Proc::spawn(
        bin(),
        [
            "--log-format",
            "json",
            "tcp",
            "--hostname",
            "http://db.test",
            "--connect-to",
            &dead,
            "--url",
            "127.0.0.1:0",
            "--id",
            "ci.access",
            "--secret",
            "SECRET-VALUE-123",
        ],
        &[],
    );
    let addr = p.wait_listening();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.read(&mut [0u8; 1]);
    p.wait_for("connection failed", Duration::from_secs(30));
    let stderr = p.stderr();
    let mut levels = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["message"].is_string(),
            "{line}"
        );
        levels.push(v["level"].as_str().unwrap().to_string());
        if v["message"].as_str().unwrap().contains("connection failed") {
            assert!(v["peer"].is_string(), "fields are top-level: {line}");
        }
    }
    assert!(levels.iter().any(|l| l == "WARN"), "{stderr}");
    assert!(!stderr.contains("SECRET-VALUE-123"));
}
