//! App discovery and the org-token exchange, the edge's side (README: "Logging in"):
//! the metadata JWT answering `cf-access-metadata-request`, the login endpoint that
//! turns a valid org token into a short-lived code, and `/cdn-cgi/access/authorized`,
//! which turns the code into an app token cookie.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::Edge;
use super::config::App;
use super::issuer::{KIND_CODE, now_secs};
use crate::auth::metadata::{AppMetadata, MATCH};
use crate::protocol;

/// Lifetime of an exchange code.
pub const CODE_TTL: Duration = Duration::from_secs(60);

type Body = Full<Bytes>;

/// The base URL of our hand-off service: `transfer_url` from the config, else this
/// edge's auth domain.
pub fn transfer_base(edge: &Edge) -> String {
    edge.config.transfer_url.clone().unwrap_or_else(|| {
        let scheme = if edge.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", edge.config.auth_domain)
    })
}

/// `200` with the signed `cf-access-metadata` for `app` as reached at `host`.
pub fn metadata(edge: &Edge, app: &App, host: &str) -> Response<Body> {
    let claims = AppMetadata {
        kind: MATCH.into(),
        hostname: host.to_string(),
        auth_domain: edge.config.auth_domain.clone(),
        aud: app.aud.clone(),
        app_hostname: app.hostname.clone(),
        iat: now_secs(),
        transfer_url: Some(transfer_base(edge)),
    };
    let jwt = edge.issuer.sign(&claims);
    Response::builder()
        .status(StatusCode::OK)
        .header(protocol::METADATA, jwt)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::default())
        .unwrap_or_default()
}

/// `/cdn-cgi/access/login/<app-host>?kid=<aud>&...` with cookie
/// `CF_Authorization=<org token>`: redirect to the app's `/authorized` with a code.
pub fn login(edge: &Edge, path: &str, query: &str, headers: &HeaderMap) -> Response<Body> {
    let app_host = path
        .trim_start_matches(protocol::LOGIN_PATH)
        .trim_start_matches('/')
        .to_ascii_lowercase();
    let kid = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "kid")
        .map(|(_, v)| v.to_string());
    let app = edge
        .config
        .apps
        .iter()
        .find(|a| Some(&a.aud) == kid.as_ref());
    let Some(app) = app.filter(|a| super::policy::host_matches(&a.hostname, &app_host)) else {
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
    let code = edge.issuer.mint_kind(&app.aud, &email, CODE_TTL, KIND_CODE);
    let scheme = if edge.tls.is_some() { "https" } else { "http" };
    let location = format!(
        "{scheme}://{app_host}{}?code={code}",
        protocol::AUTHORIZED_PATH
    );
    redirect(&location, None)
}

/// `/cdn-cgi/access/authorized?code=<code>` on the app: set the app token cookie.
pub fn authorized(edge: &Edge, app: &App, query: &str) -> Response<Body> {
    let code = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string());
    let Some(claims) = code.and_then(|c| edge.issuer.verify_kind(&c, &app.aud, KIND_CODE).ok())
    else {
        return text(StatusCode::UNAUTHORIZED, "invalid or expired code");
    };
    let Some(email) = claims.email else {
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
        "{}={}; Path=/; HttpOnly{secure}",
        protocol::APP_SESSION_COOKIE,
        super::login::random_hex()
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
