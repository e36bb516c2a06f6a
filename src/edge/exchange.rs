//! App discovery and the org-token exchange, the edge's side (README: "Logging in"):
//! the metadata JWT answering `cf-access-metadata-request`, the login endpoint that
//! turns a valid org token into a short-lived code, and `/cdn-cgi/access/authorized`,
//! which turns the code into an app token cookie.
//!
//! Metadata is signed once per host per [`METADATA_TTL`] and served from a bounded
//! cache ([`MetadataCache`]): RSA signing must not be something any anonymous
//! `HEAD` can make the edge do. Exchange codes are bound to the app (`aud`) and
//! the host they were made for, and are single use ([`Redeemed`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::Edge;
use super::config::App;
use super::issuer::{Claims, KIND_CODE, now_secs};
use crate::protocol;
use crate::protocol::metadata::{AppMetadata, MATCH};

/// Lifetime of an exchange code.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// How long one signed metadata JWT is served (clients accept an `iat` up to 24 h
/// old).
pub const METADATA_TTL: Duration = Duration::from_secs(300);
/// Most hosts with cached metadata (a wildcard app matches any number of hosts).
pub const METADATA_CAPACITY: usize = 4096;
/// Most redeemed codes remembered (each for at most [`CODE_TTL`]).
pub const REDEEMED_CAPACITY: usize = 100_000;

/// Signed metadata JWTs by host, each reused for [`METADATA_TTL`].
#[derive(Debug, Default)]
pub struct MetadataCache {
    by_host: Mutex<HashMap<String, (String, Instant)>>,
}

impl MetadataCache {
    /// The cached JWT for `host`, or `sign()`'s, cached from now on.
    pub fn get_or_sign(&self, host: &str, sign: impl FnOnce() -> String) -> String {
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < METADATA_TTL;
        {
            let map = lock(&self.by_host);
            if let Some((jwt, at)) = map.get(host)
                && fresh(at)
            {
                return jwt.clone();
            }
        }
        // Signed outside the lock; two racing requests both sign, once.
        let jwt = sign();
        let mut map = lock(&self.by_host);
        if map.len() >= METADATA_CAPACITY {
            map.retain(|_, (_, at)| fresh(at));
            if map.len() >= METADATA_CAPACITY {
                // Still full of fresh entries (a wildcard app, many hosts): start over
                // rather than grow.
                map.clear();
            }
        }
        map.insert(host.to_string(), (jwt.clone(), now));
        jwt
    }
}

/// Ids of exchange codes already redeemed, until they expire.
#[derive(Debug, Default)]
pub struct Redeemed {
    ids: Mutex<HashMap<String, u64>>,
}

/// Why a code cannot be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeem {
    /// Already redeemed once.
    Replay,
    /// Too many codes remembered; try again later (fail closed).
    Full,
}

impl Redeemed {
    /// Mark code `id` (expiring at `exp`, Unix seconds) as redeemed; refused when it
    /// already was.
    pub fn redeem(&self, id: &str, exp: u64) -> Result<(), Redeem> {
        let now = now_secs();
        let mut ids = lock(&self.ids);
        if ids.contains_key(id) {
            return Err(Redeem::Replay);
        }
        if ids.len() >= REDEEMED_CAPACITY {
            // Past their expiry (and the verifier's leeway) codes fail on their own.
            ids.retain(|_, exp| *exp + super::issuer::LEEWAY_SECS >= now);
            if ids.len() >= REDEEMED_CAPACITY {
                return Err(Redeem::Full);
            }
        }
        ids.insert(id.to_string(), exp);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Claims of an exchange code: a token of kind `code`, plus the host it was made
/// for and a unique id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CodeClaims {
    /// The usual claims (`type` is `code`).
    #[serde(flatten)]
    pub claims: Claims,
    /// The app host the code was made for (it is redeemed only there).
    pub host: String,
    /// Unique id (single use).
    pub jti: String,
}

/// `host` when it is a plain host name (labels of letters, digits, `-` and `_`,
/// no port, no `/`, no userinfo), lower case.
pub fn parse_app_host(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(host)
}

type Body = Full<Bytes>;

/// The base URL of our hand-off service: `transfer_url` from the config, else this
/// edge's auth domain.
pub fn transfer_base(edge: &Edge) -> String {
    edge.config.transfer_url.clone().unwrap_or_else(|| {
        let scheme = crate::protocol::http_scheme(edge.tls.is_some());
        format!("{scheme}://{}", edge.config.auth_domain)
    })
}

/// `200` with the signed `cf-access-metadata` for `app` as reached at `host`.
/// The JWT is signed once per host per [`METADATA_TTL`], with `iat` the time it
/// was signed (the edge has one key; a new key means a new process and cache).
pub fn metadata(edge: &Edge, app: &App, host: &str) -> Response<Body> {
    let jwt = edge.metadata.get_or_sign(host, || {
        edge.issuer.sign(&AppMetadata {
            kind: MATCH.into(),
            hostname: host.to_string(),
            auth_domain: edge.config.auth_domain.clone(),
            aud: app.aud.clone(),
            app_hostname: app.hostname.clone(),
            iat: now_secs(),
            transfer_url: Some(transfer_base(edge)),
        })
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(protocol::METADATA, jwt)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::default())
        .unwrap_or_default()
}

/// `/cdn-cgi/access/login/<app-host>?kid=<aud>&...` with cookie
/// `CF_Authorization=<org token>`: redirect to the app's `/authorized` with a code.
/// The app host must be a plain host name that the config routes to the app
/// named by `kid`; the redirect goes nowhere else.
pub fn login(edge: &Edge, path: &str, query: &str, headers: &HeaderMap) -> Response<Body> {
    let Some(app_host) = path
        .strip_prefix(protocol::LOGIN_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(parse_app_host)
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "the login path names no valid app host",
        );
    };
    let kid = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "kid")
        .map(|(_, v)| v.to_string());
    // The app the config routes this host to (first match wins), and only if it is
    // the one `kid` names.
    let app = super::policy::find_app(&edge.config.apps, &app_host);
    let Some(app) = app.filter(|a| Some(&a.aud) == kid.as_ref()) else {
        return text(StatusCode::NOT_FOUND, "no such app");
    };
    let org = super::policy::cookie(headers, protocol::AUTH_COOKIE)
        .and_then(|t| edge.issuer.verify_org(t).ok());
    let Some(email) = org.and_then(|c| c.email) else {
        return text(
            StatusCode::UNAUTHORIZED,
            "log in first: run `tunnel login` for this app",
        );
    };
    if !app
        .allow_emails
        .iter()
        .any(|e| *e == email.to_ascii_lowercase())
    {
        return text(StatusCode::FORBIDDEN, "not allowed into this app");
    }
    let now = now_secs();
    let code = edge.issuer.sign(&CodeClaims {
        claims: Claims {
            aud: super::issuer::Audience::Many(vec![app.aud.clone()]),
            email: Some(email.clone()),
            common_name: None,
            sub: email,
            iss: edge.issuer.iss().to_string(),
            iat: now,
            nbf: now,
            exp: now + CODE_TTL.as_secs(),
            kind: KIND_CODE.into(),
        },
        host: app_host.clone(),
        jti: protocol::random_hex(16),
    });
    let scheme = crate::protocol::http_scheme(edge.tls.is_some());
    let location = format!(
        "{scheme}://{app_host}{}?code={code}",
        protocol::AUTHORIZED_PATH
    );
    redirect(&location, None)
}

/// `/cdn-cgi/access/authorized?code=<code>` on the app at `host`: set the app
/// token cookie. The code must be for this app and this host, and unused.
pub fn authorized(edge: &Edge, app: &App, host: &str, query: &str) -> Response<Body> {
    let code = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string());
    let Some(code) = code.and_then(|c| edge.issuer.verify_as::<CodeClaims>(&c, &app.aud).ok())
    else {
        return text(StatusCode::UNAUTHORIZED, "invalid or expired code");
    };
    if code.claims.kind != KIND_CODE || code.host != host {
        return text(
            StatusCode::UNAUTHORIZED,
            "code made for another app or host",
        );
    }
    match edge.redeemed.redeem(&code.jti, code.claims.exp) {
        Ok(()) => {}
        Err(Redeem::Replay) => {
            tracing::warn!(%host, "exchange code redeemed twice; refused");
            return text(StatusCode::UNAUTHORIZED, "code already used");
        }
        Err(Redeem::Full) => return text(StatusCode::SERVICE_UNAVAILABLE, "busy; try again"),
    }
    let Some(email) = code.claims.email else {
        return text(StatusCode::UNAUTHORIZED, "invalid code");
    };
    let token = edge.issuer.mint(&app.aud, &email, app.session);
    let secure = if edge.tls.is_some() { "; Secure" } else { "" };
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax{secure}",
        protocol::AUTH_COOKIE
    );
    redirect("/", Some(cookie))
}

/// A new `CF_AppSession` cookie value for a login redirect.
pub fn app_session_cookie(edge: &Edge) -> String {
    let secure = if edge.tls.is_some() { "; Secure" } else { "" };
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
        protocol::APP_SESSION_COOKIE,
        protocol::random_hex(16)
    )
}

fn redirect(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut r = Response::builder()
        .status(StatusCode::FOUND)
        .body(Body::default())
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(format!("{msg}\n")))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_hosts_are_plain_host_names() {
        assert_eq!(parse_app_host("DB.test").as_deref(), Some("db.test"));
        for bad in [
            "evil.example/.wild.test",
            "user@evil.example",
            "evil.example:443",
            "",
            "a..test",
            "-a.test",
            "a.test/",
            "a%2ftest",
        ] {
            assert_eq!(parse_app_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn codes_are_redeemed_once() {
        let r = Redeemed::default();
        let exp = now_secs() + 60;
        assert_eq!(r.redeem("a", exp), Ok(()));
        assert_eq!(r.redeem("a", exp), Err(Redeem::Replay));
        assert_eq!(r.redeem("b", exp), Ok(()));
    }

    fn edge(dir: &std::path::Path) -> Edge {
        let config = crate::edge::Config::parse(
            r#"
listen = "127.0.0.1:0"
auth_domain = "auth.test"
signing_key = "k.pem"
[[apps]]
hostname = "*.wild.test"
origin = "127.0.0.1:1"
allow = ["alice@example.test"]
"#,
            dir,
        )
        .unwrap();
        Edge::load(config).unwrap()
    }

    #[test]
    fn metadata_is_signed_once_per_host_and_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        let app = &edge.config.apps[0];
        let jwt = |host: &str| {
            metadata(&edge, app, host).headers()[protocol::METADATA]
                .to_str()
                .unwrap()
                .to_string()
        };
        let first = jwt("a.wild.test");
        // Past the second `iat` counts in: a fresh signature would differ.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(jwt("a.wild.test"), first, "served from the cache");
        let other = jwt("b.wild.test");
        assert_ne!(other, first);
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(other.split('.').nth(1).unwrap())
            .unwrap();
        let claims: AppMetadata = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims.hostname, "b.wild.test");
    }
}
