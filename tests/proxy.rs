//! One proxy resolver (issue 11): for the same environment, a login's HTTP requests
//! and the tunnel take the same route, direct or through the same proxy. Each test
//! runs a real lazy login (the scripted browser of `login.rs`) and a tunnel, with a
//! recording HTTP proxy in the environment.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};

use crate::login::{World, echo};
use crate::support::origin::EchoOrigin;
use crate::support::proxy::recording_proxy;
use crate::support::{Proc, bin, read_head};

/// `tunnel tcp --hostname <host> --url 127.0.0.1:0` with `w`'s login environment
/// (scripted browser, token cache) and `env`, but no `--connect-to`.
fn tunnel(w: &World, host: &str, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let mut all: Vec<(String, String)> = w.env();
    all.retain(|(k, _)| k != "TUNNEL_CONNECT_TO");
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = ["tcp", "--hostname", host, "--url", "127.0.0.1:0"];
    let mut p = Proc::spawn(bin(), args, &all);
    let addr = p.wait_listening();
    (p, addr)
}

/// A `no_proxy` CIDR covers the app's address: the login's requests to the app and
/// the tunnel both go direct, while the auth domain (not covered) goes through the
/// proxy. Before, the tunnel read `no_proxy` its own way (no CIDRs) and went through
/// the proxy while the login's requests to the same host went direct.
#[test]
fn a_no_proxy_cidr_sends_login_and_tunnel_direct_alike() {
    let origin = EchoOrigin::start();
    let w = World::start_with_extra(&format!(
        "[[apps]]\nhostname = \"127.0.0.1\"\norigin = \"{}\"\nallow = [\"alice@example.test\"]\n",
        origin.addr
    ));
    let (proxy, requests) = recording_proxy(w.edge.addr);
    let app = format!("http://127.0.0.1:{}", w.edge.addr.port());
    let (tcp, local) = tunnel(
        &w,
        &app,
        &[("http_proxy", &proxy), ("no_proxy", "127.0.0.0/8")],
    );
    assert_eq!(echo(local, b"direct"), b"direct", "{}", tcp.stderr());
    assert_eq!(w.logins(), 1);
    let seen: Vec<String> = requests.try_iter().collect();
    assert!(
        seen.iter().all(|l| !l.contains("127.0.0.1")),
        "the app's address is in no_proxy, yet the proxy was asked: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("auth.example.test")),
        "the auth domain is not in no_proxy, so its requests go through the proxy: {seen:?}"
    );
    tcp.terminate();
}

/// `ALL_PROXY` alone: the login's requests and the tunnel both go through it.
/// Before, the tunnel ignored `ALL_PROXY` and dialled the app's name directly.
#[test]
fn all_proxy_carries_login_and_tunnel_alike() {
    let w = World::start("1h");
    let (proxy, requests) = recording_proxy(w.edge.addr);
    let (tcp, local) = tunnel(&w, "http://db.test", &[("ALL_PROXY", &proxy)]);
    assert_eq!(echo(local, b"proxied"), b"proxied", "{}", tcp.stderr());
    let seen: Vec<String> = requests.try_iter().collect();
    assert!(
        seen.iter().any(|l| l == "CONNECT db.test:80 HTTP/1.1"),
        "the tunnel: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("HEAD http://db.test/ ")),
        "the login's app discovery: {seen:?}"
    );
    tcp.terminate();
}

/// `--connect-to` names the address to dial: the tunnel and the login's requests
/// both go there directly, past a proxy in the environment. Before, the tunnel
/// went direct and the login's requests through the proxy.
#[test]
fn connect_to_sends_login_and_tunnel_past_the_proxy_alike() {
    let w = World::start("1h");
    let (proxy, requests) = recording_proxy(w.edge.addr);
    let mut env = w.env();
    env.push(("http_proxy".into(), proxy));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = [
        "tcp",
        "--hostname",
        "http://db.test",
        "--url",
        "127.0.0.1:0",
    ];
    let mut tcp = Proc::spawn(bin(), args, &env);
    let local = tcp.wait_listening();
    assert_eq!(echo(local, b"direct"), b"direct", "{}", tcp.stderr());
    assert_eq!(w.logins(), 1);
    let seen: Vec<String> = requests.try_iter().collect();
    assert!(seen.is_empty(), "the proxy was asked: {seen:?}");
    tcp.terminate();
}

/// A proxy that refuses the `CONNECT` is named with its answer (exit 6), and the
/// credentials in the proxy URL reach it as Basic auth.
#[test]
fn a_refusing_proxy_is_reported_with_its_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let recorder = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let head = read_head(&mut s).expect("a CONNECT");
        s.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    let url = format!("http://u:p@{proxy}");
    let out = crate::support::run(
        &[
            "ssh",
            "--hostname",
            "http://db.test",
            "--id",
            "ci.access",
            "--secret",
            "s3cret",
        ],
        &[("http_proxy", &url)],
    );
    crate::support::assert_exit(&out, 6);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the proxy {proxy} could not open a tunnel to db.test:80: proxy answered \"HTTP/1.1 407 Proxy Authentication Required\""
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("dTpw"),
        "proxy credentials in an error: {stderr}"
    );
    let head = recorder.join().unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("connect db.test:80 http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("proxy-authorization: basic dtpw\r\n"),
        "{head}"
    );
}

/// `tunnel curl` sends curl the route the login's requests took. Here `HTTP_PROXY`
/// and `http_proxy` disagree: our resolver (as reqwest before it) takes the upper
/// case one, while curl alone would take the lower case one (a dead proxy). Before,
/// the token came through one proxy and curl went to the other.
#[test]
fn curl_takes_the_route_of_the_login() {
    let w = World::start("1h");
    let (proxy, requests) = recording_proxy(w.edge.addr);
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("http://{dead}");
    let mut env: Vec<(String, String)> = w.env();
    env.retain(|(k, _)| k != "TUNNEL_CONNECT_TO");
    env.push(("HTTP_PROXY".into(), proxy));
    env.push(("http_proxy".into(), dead));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = crate::support::run(&["curl", "http://db.test/", "-s"], &env);
    crate::support::assert_exit(&out, 0);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("carries TCP over WebSocket"), "{body}");
    let seen: Vec<String> = requests.try_iter().collect();
    assert!(
        seen.iter().any(|l| l == "GET http://db.test/ HTTP/1.1"),
        "curl's request: {seen:?}"
    );
}

/// A proxy the client cannot speak to (SOCKS, or TLS to the proxy) is refused at
/// start with one line, for the tunnel and the token commands alike, never
/// bypassed. Before, the tunnel ignored it and dialled directly.
#[test]
fn a_socks_proxy_is_refused_at_start_not_bypassed() {
    let env = [("ALL_PROXY", "socks5h://127.0.0.1:1080")];
    for args in [
        &[
            "ssh",
            "--hostname",
            "http://db.test",
            "--id",
            "ci.access",
            "--secret",
            "s3cret",
        ][..],
        &["token", "--app", "http://db.test/path"][..],
    ] {
        let out = crate::support::run(args, &env);
        crate::support::assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("the proxy for db.test from the environment is a socks5h:// proxy")
                && stderr.trim().lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
}
