//! The CLI login page, `/cdn-cgi/access/cli?token=<id>&aud=<aud>&...`: a plain HTML
//! form (no JavaScript), CSRF-safe by a double-submit cookie (`SameSite=Strict`),
//! every echoed value escaped. A good password for a user the app allows seals
//! `{"app_token","org_token"}` for the client's key and holds it for pickup.
//!
//! Against phishing, the page shows what asks: the app, the address and time of
//! the terminal polling for this login, and the code it printed
//! ([`crate::protocol::login_code`]); the user must tick that the code matches.
//! Against guessing, attempts are limited per address and per account
//! ([`super::limits`]); against floods, password checks run on the blocking pool,
//! a few at a time ([`PasswordChecks`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use subtle::ConstantTimeEq;

use super::Edge;
use super::config::{App, User};
use crate::protocol::transfer::{self, Handoff};

/// Largest login form accepted.
pub const MAX_FORM: usize = 16 * 1024;
/// Lifetime of org tokens issued at login.
pub const ORG_SESSION: Duration = Duration::from_secs(24 * 3600);
/// Name of the CSRF cookie.
pub const CSRF_COOKIE: &str = "tunnel_csrf";
/// Most password checks waiting for their turn; beyond, `503` at once.
pub const MAX_QUEUED: usize = 256;

type Body = Full<Bytes>;

/// Hash a password for `[[users]] password_hash` (argon2id, PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    crate::protocol::random_fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Password checks (argon2, tens of milliseconds of CPU and 19 MiB each) off the
/// async workers, on `concurrent` threads of their own, the rest queued (at most
/// [`MAX_QUEUED`]). So a login flood waits for its turn while WebSocket handshakes
/// keep flowing. Dedicated threads rather than tokio's blocking pool, so the
/// number of threads stays fixed: the pool starts a new thread whenever a check
/// begins before the last one's thread is idle again, and each thread may keep a
/// malloc arena holding argon2's 19 MiB (measured: 516 MB RSS after a flood with
/// the pool, 380 MB with these threads).
#[derive(Debug)]
pub struct PasswordChecks {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// One password check and where its answer goes.
struct Job {
    users: Arc<[User]>,
    email: String,
    password: String,
    answer: tokio::sync::oneshot::Sender<Result<usize, &'static str>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Too many password checks waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many logins in progress; try again in a moment")]
pub struct Busy;

impl PasswordChecks {
    /// `concurrent` threads checking passwords for `users`; they end when this is
    /// dropped.
    pub fn new(concurrent: u32) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(MAX_QUEUED);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..concurrent.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(e) => e.into_inner().recv(),
                        };
                        let Ok(job) = job else { return };
                        if job.answer.is_closed() {
                            continue; // abandoned while queued
                        }
                        let found =
                            check_password(&job.users, &job.email, &job.password).and_then(|u| {
                                let at = job.users.iter().position(|x| x.email == u.email);
                                at.ok_or("unknown user")
                            });
                        let _ = job.answer.send(found);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a password-check thread: {e}");
            }
        }
        PasswordChecks { jobs }
    }

    /// The index of the user in `users` with this email and password, or why not
    /// (for the log), checked like [`check_password`] on a password-check thread, in
    /// turn.
    pub async fn check(
        &self,
        users: &Arc<[User]>,
        email: &str,
        password: String,
    ) -> Result<Result<usize, &'static str>, Busy> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = Job {
            users: users.clone(),
            email: email.to_string(),
            password,
            answer,
        };
        self.jobs.try_send(job).map_err(|_| Busy)?;
        answered.await.map_err(|_| Busy)
    }
}

/// The user with this email and password, or why not (for the edge's log, never
/// the page: "unknown user", "unusable password hash", "wrong password"). Unknown
/// users cost the same time as known ones (a dummy hash is checked), so timing
/// does not reveal who exists. Slow on purpose: call it through [`PasswordChecks`]
/// on a server.
pub fn check_password<'a>(
    users: &'a [User],
    email: &str,
    password: &str,
) -> Result<&'a User, &'static str> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let email = email.trim().to_ascii_lowercase();
    let user = users.iter().find(|u| u.email == email);
    let hash = match user {
        Some(u) => u.password_hash.expose().to_string(),
        None => DUMMY
            .get_or_init(|| hash_password("dummy password").unwrap_or_default())
            .clone(),
    };
    let verified = PasswordHash::new(&hash).map(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    });
    match (user, verified) {
        (None, _) => Err("unknown user"),
        (Some(_), Err(_)) => Err("unusable password hash in the config"),
        (Some(_), Ok(false)) => Err("wrong password"),
        (Some(u), Ok(true)) => Ok(u),
    }
}

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
    use crate::secret::Secret;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let users = vec![User {
            email: "a@b.test".into(),
            password_hash: Secret::new(h),
        }];
        assert!(check_password(&users, "A@b.test", "pw").is_ok());
        assert_eq!(
            check_password(&users, "a@b.test", "nope").err(),
            Some("wrong password")
        );
        assert_eq!(
            check_password(&users, "x@b.test", "pw").err(),
            Some("unknown user")
        );
    }

    #[tokio::test]
    async fn checks_run_off_the_async_workers_and_abandoned_ones_leave_the_queue() {
        let h = hash_password("pw").unwrap();
        let users: Arc<[User]> = vec![User {
            email: "a@b.test".into(),
            password_hash: Secret::new(h),
        }]
        .into();
        let checks = PasswordChecks::new(1);
        // Requests that give up at once, many more than the queue holds.
        for _ in 0..MAX_QUEUED * 2 {
            let wait = checks.check(&users, "a@b.test", "pw".into());
            let _ = tokio::time::timeout(std::time::Duration::ZERO, wait).await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let answer = loop {
            match checks.check(&users, "a@b.test", "pw".into()).await {
                Err(Busy) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                other => break other,
            }
        };
        assert_eq!(answer, Ok(Ok(0)));
        assert_eq!(
            checks.check(&users, "a@b.test", "no".into()).await,
            Ok(Err("wrong password"))
        );
    }

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
