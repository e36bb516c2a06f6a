//! The wire contract shared by our client and our edge, compatible with Cloudflare
//! Access and stock `cloudflared access` (README: "How it works"), and what both
//! sides read: the audience claim, the clock, randomness, the app metadata claims
//! ([`metadata`]), the login hand-off's crypto ([`transfer`]) and the one
//! `host:port` parser ([`host_port`]).

pub mod host_port;
pub mod metadata;
pub mod transfer;

use serde::{Deserialize, Serialize};

/// Header carrying an Access JWT on the WebSocket handshake.
pub const ACCESS_TOKEN: &str = "Cf-Access-Token";
/// Service-token id header.
pub const CLIENT_ID: &str = "Cf-Access-Client-Id";
/// Service-token secret header.
pub const CLIENT_SECRET: &str = "Cf-Access-Client-Secret";
/// Bastion mode: the `host:port` the edge should dial for this stream.
pub const JUMP_DESTINATION: &str = "Cf-Access-Jump-Destination";
/// Request header asking the edge for the app metadata JWT.
pub const METADATA_REQUEST: &str = "cf-access-metadata-request";
/// Response header carrying the app metadata JWT.
pub const METADATA: &str = "cf-access-metadata";
/// Cloudflare's request id, shown in errors when present.
pub const CF_RAY: &str = "cf-ray";
/// Cookie holding an Access token (browser and org-token exchange).
pub const AUTH_COOKIE: &str = "CF_Authorization";
/// Cookie set during the org-token exchange.
pub const APP_SESSION_COOKIE: &str = "CF_AppSession";

/// Path prefix of a login redirect's `Location` ("you must log in").
pub const LOGIN_PATH: &str = "/cdn-cgi/access/login";
/// Path where the edge publishes its JWKS.
pub const CERTS_PATH: &str = "/cdn-cgi/access/certs";
/// Path of the CLI login page.
pub const CLI_PATH: &str = "/cdn-cgi/access/cli";
/// Path ending the org-token exchange.
pub const AUTHORIZED_PATH: &str = "/cdn-cgi/access/authorized";

/// Capability header for half-close: our client sends it on the handshake and our
/// edge echoes it on the `101`. When both did, an empty binary message means "no
/// more data from me" and the other direction keeps flowing (RFC 6455 forbids data
/// after a close frame, so a close frame cannot express half-close). Stock peers
/// ignore the header and never see the marker: they get standard close frames.
pub const HALF_CLOSE: &str = "Tunnel-Half-Close";
/// Capability and resume header (README: "Resumable streams"). Our client sends
/// `Tunnel-Resume: 1` on a new stream; an edge that keeps streams for a resume
/// window answers the `101` with `Tunnel-Resume: <id> <ticket> <window-secs> 0`.
/// To resume, the client sends `Tunnel-Resume: <id> <ticket> <delivered>` (with its
/// credentials, as on any dial) and the edge answers with a new ticket and its own
/// delivered count. Stock peers ignore the header: nothing changes for them.
pub const RESUME: &str = "Tunnel-Resume";

/// What an edge answers on a resumable stream's `101`: the stream, a single-use
/// ticket for its next resume, the window, and what the edge has delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeOffer {
    /// The stream id (not secret).
    pub id: String,
    /// The ticket for the next resume, single use.
    pub ticket: crate::secret::Secret,
    /// How long the edge keeps the stream after its WebSocket breaks.
    pub window: std::time::Duration,
    /// Positions the edge delivered to the origin (0 on a new stream).
    pub delivered: u64,
}

impl ResumeOffer {
    /// The header value.
    pub fn to_header(&self) -> String {
        format!(
            "{} {} {} {}",
            self.id,
            self.ticket.expose(),
            self.window.as_secs(),
            self.delivered
        )
    }

    /// Parse a header value; `None` if malformed.
    pub fn parse(v: &str) -> Option<ResumeOffer> {
        let mut it = v.split_ascii_whitespace();
        let id = token(it.next()?)?;
        let ticket = token(it.next()?)?;
        let window = std::time::Duration::from_secs(it.next()?.parse().ok()?);
        let delivered = it.next()?.parse().ok()?;
        it.next().is_none().then(|| ResumeOffer {
            id,
            ticket: ticket.into(),
            window,
            delivered,
        })
    }
}

/// What a client sends to resume a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The stream id.
    pub id: String,
    /// The ticket from the last `101`.
    pub ticket: crate::secret::Secret,
    /// Positions the client delivered to its local socket.
    pub delivered: u64,
}

impl ResumeRequest {
    /// The header value.
    pub fn to_header(&self) -> String {
        format!("{} {} {}", self.id, self.ticket.expose(), self.delivered)
    }

    /// Parse a header value; `None` if malformed (or the capability `1`).
    pub fn parse(v: &str) -> Option<ResumeRequest> {
        let mut it = v.split_ascii_whitespace();
        let id = token(it.next()?)?;
        let ticket = token(it.next()?)?;
        let delivered = it.next()?.parse().ok()?;
        it.next().is_none().then(|| ResumeRequest {
            id,
            ticket: ticket.into(),
            delivered,
        })
    }
}

/// A stream id or ticket: 1 to 128 hex digits.
fn token(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| s.to_string())
}

/// `n` random bytes as lower-case hex (stream ids, resume tickets, CSRF tokens,
/// code ids, generated secrets).
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    random_fill(&mut b);
    hex(&b)
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Response header our edge sets on a refusal, naming the reason in a few words
/// (never a secret), so the client can tell the user what to fix.
pub const REFUSAL: &str = "Tunnel-Refusal";

/// An audience claim: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "x"`
    One(String),
    /// `"aud": ["x", "y"]`
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` is among the audiences.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// `https` with TLS, else `http`: the scheme of an edge's web URLs.
pub fn http_scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `User-Agent` our client sends.
pub const USER_AGENT: &str = concat!("tunnel/", env!("CARGO_PKG_VERSION"));

/// Fill `buf` with random bytes from the system's generator (aws-lc-rs, the
/// project's one crypto provider).
pub fn random_fill(buf: &mut [u8]) {
    // The system generator fails only when the OS has no entropy source at all;
    // nothing sensible can go on without one.
    aws_lc_rs::rand::fill(buf).expect("the system random generator works");
}

/// SHA-256 of `data` (aws-lc-rs, the project's one crypto provider).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 4.1).
pub fn websocket_key() -> String {
    use base64::Engine;
    let mut nonce = [0u8; 16];
    random_fill(&mut nonce);
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` answering `key`: base64 of SHA-1 of the key and the
/// RFC 6455 GUID (section 4.2.2; SHA-1 here is a fixed protocol check, not security).
pub fn websocket_accept(key: &[u8]) -> String {
    use aws_lc_rs::digest;
    use base64::Engine;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// Symbols of a [`login_code`]: digits and capitals without 0, 1, I and O, so the
/// code reads back unambiguously. 32 symbols, 5 bits each.
pub const LOGIN_CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// The short code a login page shows and the CLI that started the login prints
/// next to its URL (`XXXX-XXXX`), so the user can see that the page answers their
/// own terminal and not a link someone else sent them. Derived from the transfer
/// id (the CLI's public key) with SHA-256: 40 bits, 8 symbols of 5 bits.
pub fn login_code(transfer_id: &str) -> String {
    let digest = sha256(format!("tunnel-login-code:{}", transfer_id.trim()).as_bytes());
    let bits = digest[..5]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        let symbol = (bits >> (35 - 5 * i)) & 31;
        code.push(char::from(LOGIN_CODE_ALPHABET[symbol as usize]));
    }
    code
}

/// True when a `Location` value points at an Access login page.
pub fn is_login_redirect(location: &str) -> bool {
    let path = match location.find("://") {
        Some(i) => {
            let rest = &location[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => location,
    };
    path.starts_with(LOGIN_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_codes_are_short_stable_and_unambiguous() {
        let a = login_code("q2Tz0eJ8dW3kN0eHb7lVfQ2mJm0nY7Yb5dC7XoB0f1M");
        assert_eq!(a, login_code("q2Tz0eJ8dW3kN0eHb7lVfQ2mJm0nY7Yb5dC7XoB0f1M"));
        assert_eq!(a.len(), 9);
        assert_eq!(a.as_bytes()[4], b'-');
        assert!(
            a.chars()
                .filter(|c| *c != '-')
                .all(|c| LOGIN_CODE_ALPHABET.contains(&(c as u8)))
        );
        assert_ne!(a, login_code("another id"));
        for c in "0O1I".bytes() {
            assert!(!LOGIN_CODE_ALPHABET.contains(&c));
        }
    }

    #[test]
    fn websocket_keys_and_accepts_follow_rfc_6455() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let (a, b) = (websocket_key(), websocket_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24, "16 bytes in base64: {a}");
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn resume_headers_round_trip_and_refuse_junk() {
        let offer = ResumeOffer {
            id: random_hex(8),
            ticket: random_hex(32).into(),
            window: std::time::Duration::from_secs(300),
            delivered: 7,
        };
        assert_eq!(ResumeOffer::parse(&offer.to_header()), Some(offer.clone()));
        let req = ResumeRequest {
            id: offer.id.clone(),
            ticket: offer.ticket.clone(),
            delivered: 9,
        };
        assert_eq!(ResumeRequest::parse(&req.to_header()), Some(req));
        assert_eq!(ResumeRequest::parse("1"), None);
        assert_eq!(ResumeRequest::parse("ab cd 1 2"), None);
        assert_eq!(ResumeRequest::parse("ab zz 1"), None);
        assert!(!format!("{offer:?}").contains(offer.ticket.expose()));
    }

    #[test]
    fn login_redirects_are_recognised_by_path_only() {
        assert!(is_login_redirect(
            "https://team.cloudflareaccess.com/cdn-cgi/access/login/db.example.com?kid=x"
        ));
        assert!(is_login_redirect("/cdn-cgi/access/login/x"));
        assert!(!is_login_redirect("https://db.example.com/other"));
        assert!(!is_login_redirect(
            "https://evil.test/x?/cdn-cgi/access/login"
        ));
    }
}
