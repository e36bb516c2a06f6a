//! The CLI login page, `/cdn-cgi/access/cli?token=<id>&aud=<aud>&...`: a plain HTML
//! form (no JavaScript), CSRF-safe by a double-submit cookie (`SameSite=Strict`),
//! every echoed value escaped. A good password for a user the app allows seals
//! `{"app_token","org_token"}` for the client's key and holds it for pickup.
//!
//! Against phishing, the page shows what asks: the app, the address and time of
//! the terminal polling for this login, and the code it printed
//! ([`crate::protocol::login_code`]); the user must tick that the code matches.
//! Against guessing, attempts are limited per address and per account
//! ([`super::limits`]); against floods, password checks run on a few threads of
//! their own ([`PasswordChecks`], in `login/password.rs`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use subtle::ConstantTimeEq;

use super::Edge;
use super::config::{App, User};
use crate::protocol::transfer::{self, Handoff};

mod password;

pub use password::{Busy, PasswordChecks, hash_password};

/// Largest login form accepted.
pub const MAX_FORM: usize = 16 * 1024;
/// Lifetime of org tokens issued at login.
pub const ORG_SESSION: Duration = Duration::from_secs(24 * 3600);
/// Name of the CSRF cookie.
pub const CSRF_COOKIE: &str = "tunnel_csrf";

type Body = Full<Bytes>;

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The login link's hand-off id and app, from the page's `query`; the title and
/// body of a refusal page when the link is incomplete or names no app.
fn link<'a>(
    edge: &'a Edge,
    query: &str,
) -> Result<(String, &'a App), (&'static str, &'static str)> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (id, aud) = (param("token"), param("aud"));
    if transfer::decode_key(&id).is_err() || aud.is_empty() {
        return Err((
            "Bad login link",
            "<p id=\"error\">This login link is incomplete. Run the tunnel command again.</p>",
        ));
    }
    let Some(app) = edge.config.apps.iter().find(|a| a.aud == aud) else {
        return Err((
            "Unknown app",
            "<p id=\"error\">No app matches this login link.</p>",
        ));
    };
    Ok((id, app))
}

/// `user` logged in for `app`: if the app allows them, seal their tokens for the
/// waiting client (hand-off `id`) and say so.
fn hand_off(edge: &Edge, app: &App, user: &User, id: &str) -> Response<Body> {
    if !app.allow_emails.contains(&user.email) {
        tracing::info!(app = %app.hostname, email = %user.email, "login refused by policy");
        let msg = format!(
            "<p id=\"error\">{} may not use {}.</p>",
            escape(&user.email),
            escape(&app.hostname)
        );
        return page(StatusCode::FORBIDDEN, "Not allowed", &msg, None);
    }
    let handoff = Handoff {
        app_token: edge.issuer.mint(&app.aud, &user.email, app.session),
        org_token: edge.issuer.mint_org(&user.email, ORG_SESSION),
    };
    let sealed = match transfer::seal(&handoff, id) {
        Ok(s) => s,
        Err(e) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Bad login link",
                &format!("<p id=\"error\">{}</p>", escape(&e.to_string())),
                None,
            );
        }
    };
    if edge.handoffs.put(id, sealed).is_err() {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "<p id=\"error\">Too many logins in progress; try again in a minute.</p>",
            None,
        );
    }
    tracing::info!(app = %app.hostname, email = %user.email, "login complete; hand-off ready");
    let msg = format!(
        "<p id=\"done\">Logged in to {} as {}. You can close this window and return to the terminal.</p>",
        escape(&app.hostname),
        escape(&user.email)
    );
    page(StatusCode::OK, "Logged in", &msg, None)
}

/// Serve `GET` (the form) or `POST` (the login) of the CLI login page to `peer`.
pub async fn cli_page(
    edge: &Edge,
    req: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let query = req.uri().query().unwrap_or("").to_string();
    let (id, app) = match link(edge, &query) {
        Ok(found) => found,
        Err((title, body)) => return page(StatusCode::BAD_REQUEST, title, body, None),
    };
    let secure = edge.tls.is_some();
    let asking = Asking {
        app: &app.hostname,
        code: crate::protocol::login_code(&id),
        poll: edge.handoffs.first_poll(&id),
    };
    let form = |error: Option<&str>, status| form(&query, &asking, error, status, secure);
    if req.method() != http::Method::POST {
        return form(None, StatusCode::OK);
    }
    if !same_origin(req.headers()) {
        return page(
            StatusCode::FORBIDDEN,
            "Refused",
            "<p id=\"error\">Cross-site login refused.</p>",
            None,
        );
    }
    let cookie = super::policy::cookie(req.headers(), CSRF_COOKIE).map(str::to_string);
    let fields = match read_form(req.into_body()).await {
        Ok(fields) => fields,
        Err(refused) => return refused,
    };
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let csrf_ok = cookie
        .as_deref()
        .is_some_and(|c| !c.is_empty() && bool::from(c.as_bytes().ct_eq(field("csrf").as_bytes())));
    if !csrf_ok {
        return form(
            Some("Your session expired; please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    if field("confirm") != "on" {
        return form(
            Some("Check that the code matches the one in your terminal, then tick the box."),
            StatusCode::BAD_REQUEST,
        );
    }
    let account = super::limits::account_key(field("email"));
    if let Err((why, wait)) = edge.limits.check(peer.ip(), &account) {
        tracing::info!(%peer, app = %app.hostname, account, retry_after = wait.as_secs(), "login refused: {why}");
        let mut r = form(
            Some(&format!(
                "Too many login attempts. Try again in {} seconds.",
                wait.as_secs()
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from(wait.as_secs()));
        return r;
    }
    let credentials = (field("email"), field("password"));
    let user = match logged_in(edge, peer, app, &account, credentials, &form).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    hand_off(edge, app, user, &id)
}

/// The posted form's fields, or a refusal page when it is too large.
async fn read_form(body: hyper::body::Incoming) -> Result<Vec<(String, String)>, Response<Body>> {
    match Limited::new(body, MAX_FORM).collect().await {
        Ok(b) => Ok(form_urlencoded::parse(&b.to_bytes()).into_owned().collect()),
        Err(_) => Err(page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "<p id=\"error\">Form too large.</p>",
            None,
        )),
    }
}

/// The user with this `email` and `password`, or the page that refuses them
/// (`form` redraws the login form with an error).
async fn logged_in<'a>(
    edge: &'a Edge,
    peer: SocketAddr,
    app: &App,
    account: &str,
    (email, password): (&str, &str),
    form: &(dyn Fn(Option<&str>, StatusCode) -> Response<Body> + Sync),
) -> Result<&'a User, Response<Body>> {
    let users = &edge.users;
    let checked = edge
        .passwords
        .check(users, email, password.to_string())
        .await;
    match checked {
        Ok(Ok(i)) => Ok(&users[i]),
        Ok(Err(why)) => {
            tracing::info!(%peer, app = %app.hostname, account, "login refused: {why}");
            Err(form(
                Some("Wrong email or password."),
                StatusCode::UNAUTHORIZED,
            ))
        }
        Err(Busy) => {
            tracing::warn!(%peer, app = %app.hostname, "login refused: too many password checks queued");
            let mut r = page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "<p id=\"error\">Too many logins in progress; try again in a moment.</p>",
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from(1u64));
            Err(r)
        }
    }
}

/// What is asking for a login, as the page shows it.
struct Asking<'a> {
    /// The app's hostname pattern.
    app: &'a str,
    /// The code the CLI printed.
    code: String,
    /// The terminal polling for this login, once it has.
    poll: Option<super::handoff::FirstPoll>,
}

fn form(
    query: &str,
    asking: &Asking<'_>,
    error: Option<&str>,
    status: StatusCode,
    secure: bool,
) -> Response<Body> {
    let csrf = crate::protocol::random_hex(16);
    let error = error
        .map(|e| format!("<p id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let requester = match asking.poll {
        Some(p) => format!(
            "A terminal at <b id=\"requester\">{}</b> started this login at <b id=\"requested-at\">{}</b>.",
            escape(&show_addr(p.addr)),
            humantime::format_rfc3339_seconds(p.at)
        ),
        None => "<span id=\"requester\">No terminal has picked up this login yet.</span>".into(),
    };
    let body = format!(
        r#"<p>Log in to <b id="app">{app}</b>.</p>
<p>{requester} It shows the code <b id="code">{code}</b>.</p>
<p>Only go on if you started this login yourself and your terminal shows the same
code. If someone sent you this link, close this page: logging in would give them
your access.</p>{error}
<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
<p><label><input id="confirm" name="confirm" type="checkbox" required> My terminal shows the code {code}</label></p>
<p><label>Email <input id="email" name="email" type="email" autocomplete="username" required></label></p>
<p><label>Password <input id="password" name="password" type="password" autocomplete="current-password" required></label></p>
<p><button id="login" type="submit">Log in</button></p>
</form>"#,
        app = escape(asking.app),
        code = escape(&asking.code),
        action = escape(&format!("{}?{query}", crate::protocol::CLI_PATH)),
    );
    let cookie = format!(
        "{CSRF_COOKIE}={csrf}; Path={}; HttpOnly; SameSite=Strict{}",
        crate::protocol::CLI_PATH,
        if secure { "; Secure" } else { "" }
    );
    page(status, "Log in", &body, Some(cookie))
}

fn page(status: StatusCode, title: &str, body: &str, cookie: Option<String>) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body>{body}</body></html>\n",
        escape(title)
    );
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-frame-options", "DENY")
        .header(
            "content-security-policy",
            "default-src 'none'; form-action 'self'",
        );
    if let Some(c) = cookie {
        b = b.header(header::SET_COOKIE, c);
    }
    b.body(Body::from(html)).unwrap_or_default()
}

/// An address as people read it (an IPv4-mapped IPv6 address as IPv4).
fn show_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// Whether a request's `Origin` (when the browser sent one) is this very host; a
/// cross-site form post is refused even before the CSRF check.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn origin_check() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "db.test".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://db.test".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "https://evil.test".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
