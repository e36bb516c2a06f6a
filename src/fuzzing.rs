//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their
//! seed corpus (`tests/fuzz_seeds.rs`). Each runs one parser of attacker-controlled
//! bytes, and what consumes its output, on arbitrary input. They never unwrap on the
//! input: a panic here is a bug in the code under test (or a broken contract that
//! the assertions below check). Not a stable API.
//!
//! The fixed edge config and token issuer are made once per process: generating
//! the RSA key takes far longer than a fuzz iteration.

use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::client::dial;
use crate::client::target::{self, Credentials, Target};
use crate::edge::{Config, Issuer, policy, server};
use crate::secret::Secret;
use crate::{exit, protocol};

/// The edge config every target checks requests against: an app with an origin,
/// a bastion app with destinations, and a service token (the one in
/// `tests/fixtures/cloudflared-service-token.http`).
pub const EDGE_TOML: &str = r#"
listen = "127.0.0.1:0"
auth_domain = "auth.example.test"
[[apps]]
hostname = "db.test"
origin = "127.0.0.1:5432"
allow = ["alice@example.test", "service:ci"]
[[apps]]
hostname = "*.ssh.test"
destinations = ["10.0.0.1:22", "bastion.ssh.test:22"]
allow = ["service:ci"]
[[service_tokens]]
name = "ci"
client_id = "ci.access"
client_secret = "s3cret"
"#;

/// The hostname the client-side targets dial.
const CLIENT_HOST: &str = "db.test";
/// The access token the client holds. Its snowman is a character no header text
/// can carry, so finding it in an error message means the secret leaked.
const CLIENT_TOKEN: &str = "token-\u{2603}";
/// The service-token secret the client holds; likewise never shown.
const CLIENT_SECRET: &str = "secret-\u{2603}";

/// Most request headers the edge accepts (hyper's default).
const MAX_REQUEST_HEADERS: usize = 100;
/// Most response headers the client accepts (tungstenite's limit).
const MAX_RESPONSE_HEADERS: usize = 124;

struct Fixture {
    config: Config,
    issuer: Issuer,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::parse(EDGE_TOML, Path::new(".")).expect("EDGE_TOML is valid");
        // The issuer keeps the key in memory, so the directory can go at once.
        let dir = tempfile::tempdir().expect("a temporary directory for the signing key");
        let issuer =
            Issuer::load_or_create(&dir.path().join("signing-key.pem"), "auth.example.test")
                .expect("a fresh signing key");
        Fixture { config, issuer }
    })
}

/// The edge's view of a handshake: `data` as an HTTP/1.1 request head, through
/// every policy check of every app and the WebSocket accept.
pub fn edge_request(data: &[u8]) {
    let mut raw = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let Some(headers) = header_map(req.headers) else {
        return;
    };
    let f = fixture();
    if let Some(host) = policy::request_host(&headers) {
        let _ = policy::find_app(&f.config.apps, &host);
    }
    let _ = policy::cookie(&headers, protocol::AUTH_COOKIE);
    if let Some(accept) = server::websocket_accept(&headers) {
        // The 101 is built with `expect`: the accept key must be a valid value.
        assert!(HeaderValue::from_str(&accept).is_ok(), "accept {accept:?}");
    }
    for app in &f.config.apps {
        match policy::authorize(&f.config, &f.issuer, app, &headers) {
            policy::Decision::Allow(_) => {}
            policy::Decision::Login(reason) | policy::Decision::Forbidden(reason) => {
                assert_header_line(&reason)
            }
        }
        if let Err(reason) = policy::upstream(app, &headers) {
            assert_header_line(&reason);
        }
    }
}

/// The client's view of a refused handshake: `data` as an HTTP/1.1 response head
/// (parsed as tungstenite does), classified for each kind of credentials.
pub fn client_response(data: &[u8]) {
    let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    let Ok(httparse::Status::Complete(len)) = resp.parse(data) else {
        return;
    };
    let (Some(code), Some(headers)) = (resp.code, header_map(resp.headers)) else {
        return;
    };
    let Ok(mut response) = http::Response::builder()
        .status(code)
        .body((len < data.len()).then(|| data[len..].to_vec()))
    else {
        return;
    };
    *response.headers_mut() = headers;
    let base = Target::parse(CLIENT_HOST).expect("CLIENT_HOST is valid");
    for credentials in [
        Credentials::None,
        Credentials::Token(Secret::new(CLIENT_TOKEN)),
        Credentials::ServiceToken {
            id: "ci.access".into(),
            secret: Secret::new(CLIENT_SECRET),
        },
    ] {
        let target = Target {
            credentials,
            ..base.clone()
        };
        let error = dial::classify(&target, &response);
        let message = error.to_string();
        assert!(!message.contains('\n'), "message spans lines: {message:?}");
        assert!(!message.contains('\u{2603}'), "secret shown: {message:?}");
        let code = error.exit_code();
        assert!(
            [
                exit::LOGIN_NEEDED,
                exit::AUTH_REFUSED,
                exit::ORIGIN,
                exit::EDGE_REFUSED
            ]
            .contains(&code),
            "exit code {code} for {message:?}"
        );
    }
}

/// `data` (lossy UTF-8) as a presented token: the JWT header parser, and the
/// issuer's checks against each app's audience.
pub fn jwt(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let _ = jsonwebtoken::decode_header(token.as_ref());
    let f = fixture();
    for app in &f.config.apps {
        let _ = f.issuer.verify(&token, &app.aud);
    }
}

/// `data` (when UTF-8) as `edge.toml`; a refusal must be one line.
pub fn edge_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = Config::parse(text, Path::new("/tmp")) {
        assert!(!message.contains('\n'), "error spans lines: {message:?}");
    }
}

/// `data` (when UTF-8) as `--hostname`, `--destination` and `-H`; a hostname that
/// parses must make a handshake request.
pub fn hostname(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(target) = Target::parse(s) {
        let _ = (target.host_header(), target.dial_addr());
        let _ = dial::handshake_request(&target, None);
    }
    let _ = target::parse_host_port("--destination", s);
    let _ = target::parse_header(s);
}

/// Headers as hyper and tungstenite build them: any name or value `http` refuses
/// fails the whole head.
fn header_map(raw: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// Refusal reasons travel in the `Tunnel-Refusal` header and one log line.
fn assert_header_line(reason: &str) {
    assert!(
        HeaderValue::from_str(reason).is_ok() && !reason.contains('\n'),
        "reason is not one header line: {reason:?}"
    );
}
