//! The edge's login and exchange under attack (issue 10, items 6, 8, 11 and 12),
//! against the real `tunnel edge` over loopback: password guessing meets `429`,
//! the org-token exchange redirects nowhere but the app, its codes work once, the
//! login page says who asks, and ambiguous requests are refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::login::hash_password;
use crate::support::Edge;

const PASSWORD: &str = "correct horse";

/// An edge with app `*.wild.test` (and `db.test`), user alice, and `top` lines.
fn edge(top: &str) -> Edge {
    let hash = hash_password(PASSWORD);
    Edge::start_with(
        &format!(
            r#"
[[apps]]
hostname = "db.test"
origin = "127.0.0.1:9"
allow = ["alice@example.test"]
[[apps]]
hostname = "*.wild.test"
origin = "127.0.0.1:9"
allow = ["alice@example.test"]
[[users]]
email = "alice@example.test"
password_hash = "{hash}"
"#
        ),
        top,
    )
}

/// A response: status, head (lower-cased names are not guaranteed) and body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Send `raw` (a whole HTTP/1.1 request) to the edge from `from` (a loopback
/// address of ours, e.g. 127.0.0.2) and read the reply to the end.
fn send_from(edge: &Edge, from: &str, raw: &str) -> Reply {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&edge.addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `GET path` with `Host: host` and extra header lines.
fn get(edge: &Edge, host: &str, path: &str, headers: &str) -> Reply {
    send_from(
        edge,
        "127.0.0.1",
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n"),
    )
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let i = text.find(start).map_or(text.len(), |i| i + start.len());
    let j = text[i..].find(end).map_or(text.len(), |j| i + j);
    &text[i..j]
}

/// A login page for a fresh transfer id: its path and the CSRF value.
struct LoginPage {
    id: String,
    path: String,
    csrf: String,
    page: String,
}

fn login_page(edge: &Edge, from: &str) -> LoginPage {
    let id = tunnel::protocol::transfer::KeyPair::generate().id();
    let aud = tunnel::derive_aud("db.test");
    let path = format!("/cdn-cgi/access/cli?token={id}&aud={aud}&redirect_url=%2F");
    let r = send_from(
        edge,
        from,
        &format!("GET {path} HTTP/1.1\r\nHost: auth.example.test\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let csrf = between(&r.head, "tunnel_csrf=", ";").to_string();
    LoginPage {
        id,
        path,
        csrf,
        page: r.body,
    }
}

/// POST the login form of `p` from `from`.
fn post_login(
    edge: &Edge,
    from: &str,
    p: &LoginPage,
    email: &str,
    pw: &str,
    confirm: bool,
) -> Reply {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut body = format!("csrf={}&email={}&password={}", p.csrf, enc(email), enc(pw));
    if confirm {
        body.push_str("&confirm=on");
    }
    send_from(
        edge,
        from,
        &format!(
            "POST {} HTTP/1.1\r\nHost: auth.example.test\r\nConnection: close\r\n\
             Cookie: tunnel_csrf={}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            p.path,
            p.csrf,
            body.len()
        ),
    )
}

/// Try the right password until the limits let it through, waiting as told by
/// `Retry-After` (bounded; a slow machine only makes it wait longer).
fn right_password_eventually(edge: &Edge, from: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = login_page(edge, from);
        let r = post_login(edge, from, &p, "alice@example.test", PASSWORD, true);
        if r.status != 429 || Instant::now() > deadline {
            return r;
        }
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        std::thread::sleep(Duration::from_secs(wait));
    }
}

/// Eight wrong passwords at `email` from `from`, all at once: they reach the edge
/// together, before any password check is done, whatever the machine's speed.
fn burst(edge: &Edge, from: &str, email: &str) -> Vec<Reply> {
    let p = login_page(edge, from);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let p = &p;
                s.spawn(move || post_login(edge, from, p, email, &format!("guess{i}"), true))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

#[test]
fn password_guessing_from_one_address_meets_429_then_the_right_password_works() {
    let edge = edge("[login_limits]\naddress_attempts = 3\naddress_window = \"1s\"");
    let replies = burst(&edge, "127.0.0.1", "alice@example.test");
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    for r in replies.iter().filter(|r| r.status == 429) {
        let wait: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(wait >= 1, "{}", r.head);
    }
    assert!(
        statuses.contains(&429),
        "no attempt was limited: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    // Another address is not limited by this one's guesses.
    let p2 = login_page(&edge, "127.0.0.2");
    let r = post_login(
        &edge,
        "127.0.0.2",
        &p2,
        "alice@example.test",
        PASSWORD,
        true,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // After the window, the right password works from the guessing address too.
    let r = right_password_eventually(&edge, "127.0.0.1");
    assert_eq!(r.status, 200, "{}", r.body);
    let log = edge.proc.stderr();
    assert!(
        log.contains("too many login attempts from this address"),
        "{log}"
    );
    assert!(!log.contains("guess"), "a password reached the log: {log}");
}

#[test]
fn password_guessing_at_one_account_meets_429_from_any_address() {
    // A window long enough that the account is still held when the burst's
    // password checks are done, however slow they are here.
    let edge = edge("[login_limits]\naccount_attempts = 3\naccount_window = \"30s\"");
    let statuses: Vec<u16> = burst(&edge, "127.0.0.1", "ALICE@example.test")
        .iter()
        .map(|r| r.status)
        .collect();
    assert!(
        statuses.contains(&429),
        "no attempt was limited: {statuses:?}"
    );
    // The account is held for every address, the right password included...
    let p2 = login_page(&edge, "127.0.0.3");
    let r = post_login(
        &edge,
        "127.0.0.3",
        &p2,
        "alice@example.test",
        PASSWORD,
        true,
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // ...until the window has passed.
    let r = right_password_eventually(&edge, "127.0.0.3");
    assert_eq!(r.status, 200, "{}", r.body);
    let log = edge.proc.stderr();
    assert!(
        log.contains("too many login attempts at this account"),
        "{log}"
    );
}

#[test]
fn login_page_shows_who_asks_and_wants_the_code_confirmed() {
    let edge = edge("");
    let p = login_page(&edge, "127.0.0.1");
    let code = tunnel::protocol::login_code(&p.id);
    assert!(
        p.page.contains(&code),
        "the page shows the CLI's code: {}",
        p.page
    );
    assert!(p.page.contains("id=\"confirm\""), "{}", p.page);
    assert!(
        p.page.contains("No terminal"),
        "nobody polled yet: {}",
        p.page
    );
    // The CLI polls for the hand-off from 127.0.0.5; the page names that address.
    let (addr, id) = (edge.addr, p.id.clone());
    std::thread::spawn(move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let local: SocketAddr = "127.0.0.5:0".parse().unwrap();
        socket.bind(&local.into()).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut s: TcpStream = socket.into();
        let req = format!("GET /transfer/{id} HTTP/1.1\r\nHost: auth.example.test\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let r = get(&edge, "auth.example.test", &p.path, "");
        if r.body.contains("127.0.0.5") || Instant::now() > deadline {
            break r.body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        page.contains("127.0.0.5"),
        "the requester's address: {page}"
    );
    assert!(page.contains("id=\"requested-at\""), "{page}");
    // Without the confirmation the right password does not log in.
    let r = post_login(
        &edge,
        "127.0.0.1",
        &p,
        "alice@example.test",
        PASSWORD,
        false,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.body.contains("id=\"done\""));
    let r = post_login(&edge, "127.0.0.1", &p, "alice@example.test", PASSWORD, true);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"done\""));
}

/// An org token for alice, signed with the edge's own key.
fn org_token(edge: &Edge) -> String {
    let issuer = tunnel::Issuer::load_or_create(
        &edge.dir.path().join("signing-key.pem"),
        "auth.example.test",
    )
    .unwrap();
    issuer.mint_org("alice@example.test", Duration::from_secs(3600))
}

#[test]
fn org_exchange_redirects_only_to_the_app_host() {
    let edge = edge("");
    let cookie = format!("Cookie: CF_Authorization={}\r\n", org_token(&edge));
    let aud = tunnel::derive_aud("*.wild.test");
    // The attack of issue 10: the "app host" in the path ends in the wildcard.
    for path in [
        format!("/cdn-cgi/access/login/evil.example/.wild.test?kid={aud}"),
        format!("/cdn-cgi/access/login/alice@evil.example/.wild.test?kid={aud}"),
        format!("/cdn-cgi/access/login/evil.example?kid={aud}"),
        format!("/cdn-cgi/access/login/db.test?kid={aud}"),
    ] {
        let r = get(&edge, "auth.example.test", &path, &cookie);
        assert_ne!(r.status, 302, "{path}: {}", r.head);
        assert!(r.header("location").is_none(), "{path}: {}", r.head);
    }
    let r = get(
        &edge,
        "auth.example.test",
        &format!("/cdn-cgi/access/login/a.wild.test?kid={aud}"),
        &cookie,
    );
    assert_eq!(r.status, 302, "{}", r.head);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("http://a.wild.test/cdn-cgi/access/authorized?code="),
        "{}",
        r.head
    );
}

#[test]
fn exchange_codes_are_single_use_and_bound_to_their_host() {
    let edge = edge("");
    let cookie = format!("Cookie: CF_Authorization={}\r\n", org_token(&edge));
    let aud = tunnel::derive_aud("*.wild.test");
    let code_for = |host: &str| {
        let r = get(
            &edge,
            "auth.example.test",
            &format!("/cdn-cgi/access/login/{host}?kid={aud}"),
            &cookie,
        );
        assert_eq!(r.status, 302, "{}", r.head);
        let location = r.header("location").unwrap().to_string();
        location[location.find("/cdn-cgi").unwrap()..].to_string()
    };
    let path = code_for("a.wild.test");
    let first = get(&edge, "a.wild.test", &path, "");
    assert_eq!(first.status, 302, "{}", first.head);
    assert!(
        first
            .header("set-cookie")
            .unwrap()
            .starts_with("CF_Authorization=")
    );
    let replay = get(&edge, "a.wild.test", &path, "");
    assert_eq!(replay.status, 401, "a code redeemed twice: {}", replay.head);
    assert!(replay.header("set-cookie").is_none());
    // A code made for one host is refused at another host of the same app.
    let elsewhere = get(&edge, "b.wild.test", &code_for("a.wild.test"), "");
    assert_eq!(elsewhere.status, 401, "{}", elsewhere.head);
}

#[test]
fn ambiguous_hosts_are_refused_and_the_session_cookie_is_same_site() {
    let edge = edge("");
    let two_hosts = send_from(
        &edge,
        "127.0.0.1",
        "GET / HTTP/1.1\r\nHost: db.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(two_hosts.status, 400, "{}", two_hosts.head);
    let absolute = send_from(
        &edge,
        "127.0.0.1",
        "GET http://evil.test/ HTTP/1.1\r\nHost: db.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(absolute.status, 400, "{}", absolute.head);
    let same = send_from(
        &edge,
        "127.0.0.1",
        "GET http://db.test/ HTTP/1.1\r\nHost: db.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(same.status, 302, "{}", same.head);
    // A browser-style request starts the exchange with a SameSite session cookie.
    let cookie = same.header("set-cookie").expect("CF_AppSession is set");
    assert!(cookie.starts_with("CF_AppSession="), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
}
