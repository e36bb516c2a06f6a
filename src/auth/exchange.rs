//! Org-token exchange (README: "What the client sends to whom"): with a valid org token, follow the app's
//! login redirects, sending `CF_Authorization=<org token>` only to the org token's own
//! auth domain (over TLS, on a login path), carry the `CF_AppSession` cookie back to
//! the app host, stop after `/cdn-cgi/access/authorized` there, and take the
//! `CF_Authorization` cookie it sets as the new app token. No browser.

use reqwest::{StatusCode, Url};

use super::AuthError;
use super::binding;
use crate::protocol;

/// Most redirects followed.
pub const MAX_HOPS: usize = 10;

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new app token (not yet checked against the app's issuer and AUD).
    Token(String),
    /// The org token's own auth domain refused it (`401`): it is no good any more.
    OrgTokenRefused,
    /// The auth domain knows the user but does not let them into this app (`403`).
    Forbidden,
    /// The chain ended without a token for another reason; the org token may still
    /// be good (nothing is deleted because of another host's answer).
    NoToken,
}

/// Where the exchange may send what.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The app URL the chain starts at (`scheme://host[:port]/`).
    pub app_url: &'a str,
    /// The org token's auth domain (`host[:port]`): the only place it goes.
    pub auth_domain: &'a str,
    /// Whether plain `http` is allowed (a development edge reached over loopback).
    pub plain_ok: bool,
}

/// Exchange `org_token` for an app token within `scope`.
pub async fn exchange(
    http: &reqwest::Client,
    scope: Scope<'_>,
    org_token: &str,
) -> Result<Outcome, AuthError> {
    let app = Url::parse(scope.app_url)
        .map_err(|e| AuthError::Discovery(format!("{}: {e}", scope.app_url)))?;
    let same_origin = |u: &Url| {
        u.scheme() == app.scheme()
            && u.host_str() == app.host_str()
            && u.port_or_known_default() == app.port_or_known_default()
    };
    let mut url = app.clone();
    let mut app_session: Option<String> = None;
    for _ in 0..MAX_HOPS {
        let mut req = http.head(url.clone());
        let mut cookies = Vec::new();
        let sends_org = binding::org_token_may_go_to(&url, scope.auth_domain, scope.plain_ok);
        if sends_org {
            cookies.push(format!("{}={org_token}", protocol::AUTH_COOKIE));
        }
        let on_app = same_origin(&url);
        if let (true, Some(s)) = (on_app, &app_session) {
            cookies.push(format!("{}={s}", protocol::APP_SESSION_COOKIE));
        }
        if !cookies.is_empty() {
            req = req.header(reqwest::header::COOKIE, cookies.join("; "));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| super::network(&format!("token exchange at {}", redact(&url)), &e))?;
        if on_app && let Some(s) = set_cookie(resp.headers(), protocol::APP_SESSION_COOKIE) {
            app_session = Some(s);
        }
        if url.path().starts_with(protocol::AUTHORIZED_PATH) {
            if !on_app {
                return Ok(Outcome::NoToken);
            }
            return Ok(set_cookie(resp.headers(), protocol::AUTH_COOKIE)
                .filter(|t| super::jwt::claims(t).is_ok_and(|c| c.exp > super::jwt::now_secs()))
                .map_or(Outcome::NoToken, Outcome::Token));
        }
        let status = resp.status();
        if sends_org && status == StatusCode::UNAUTHORIZED {
            return Ok(Outcome::OrgTokenRefused);
        }
        if sends_org && status == StatusCode::FORBIDDEN {
            return Ok(Outcome::Forbidden);
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        match (status.is_redirection(), location) {
            (true, Some(loc)) => {
                url = url
                    .join(loc)
                    .map_err(|e| AuthError::Discovery(format!("bad redirect {loc:?}: {e}")))?;
            }
            _ => return Ok(Outcome::NoToken),
        }
    }
    Ok(Outcome::NoToken)
}

/// A URL for messages: no query (it may hold a one-time code).
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// The value of cookie `name` in the response's `Set-Cookie` headers.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback HTTP server answering every request with `answer(path_and_query,
    /// cookie header)` and recording each request's head.
    async fn server(
        answer: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, answer) = (seen.clone(), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (log, answer) = (log.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    let cookie = head
                        .lines()
                        .find_map(|l| l.strip_prefix("cookie: "))
                        .unwrap_or("")
                        .to_string();
                    log.lock().unwrap().push(head);
                    let reply = answer(&target, &cookie);
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        (addr, seen)
    }

    fn client(names: &[(&str, SocketAddr)]) -> reqwest::Client {
        let tls = crate::tls::client_config(None).unwrap();
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls((*tls).clone());
        for (n, a) in names {
            b = b.resolve(n, *a);
        }
        b.build().unwrap()
    }

    /// The app of a real exchange: `/authorized` with its session cookie sets the
    /// token `t`; anything else redirects to the auth domain's login and sets
    /// `CF_AppSession=s1`.
    async fn app_server(auth_port: u16, t: String) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        server(move |target, cookie| {
            if target.starts_with("/cdn-cgi/access/authorized")
                && cookie.contains("CF_AppSession=s1")
            {
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: /\r\nSet-Cookie: CF_Authorization={t}; Path=/\r\nContent-Length: 0\r\n\r\n"
                )
            } else {
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://auth.test:{auth_port}/cdn-cgi/access/login/app.test?kid=a\r\nSet-Cookie: CF_AppSession=s1\r\nContent-Length: 0\r\n\r\n"
                )
            }
        })
        .await
    }

    /// A client reaching `app.test` and `auth.test` on these servers, the app URL,
    /// and the auth domain (with its port).
    fn chain(app: SocketAddr, auth: SocketAddr) -> (reqwest::Client, String, String) {
        let http = client(&[("app.test", app), ("auth.test", auth)]);
        let app_url = format!("http://app.test:{}/", app.port());
        (http, app_url, format!("auth.test:{}", auth.port()))
    }

    fn found(location: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
    }

    const UNAUTHORIZED: &str = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";

    fn token() -> String {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let exp = super::super::jwt::now_secs() + 600;
        format!(
            "{}.{}.sig",
            enc("{}"),
            enc(&format!(r#"{{"aud":"a","exp":{exp}}}"#))
        )
    }

    #[tokio::test]
    async fn a_redirect_to_another_host_never_carries_the_org_token() {
        let (evil, evil_seen) = server(|_, _| UNAUTHORIZED.to_string()).await;
        let port = evil.port();
        let (app, _) = server(move |_, _| {
            found(&format!(
                "http://evil.test:{port}/cdn-cgi/access/login/app.test?kid=a"
            ))
        })
        .await;
        let http = client(&[("app.test", app), ("evil.test", evil)]);
        let scope = Scope {
            app_url: &format!("http://app.test:{}/", app.port()),
            auth_domain: "auth.test",
            plain_ok: true,
        };
        let out = exchange(&http, scope, "ORG-SECRET").await.unwrap();
        assert_eq!(
            out,
            Outcome::NoToken,
            "another host's 401 is not a refusal of the org token"
        );
        let seen = evil_seen.lock().unwrap().join("\n");
        assert!(
            seen.contains("/cdn-cgi/access/login/"),
            "the redirect was followed: {seen}"
        );
        assert!(!seen.contains("ORG-SECRET"), "the org token leaked: {seen}");
    }

    #[tokio::test]
    async fn the_auth_domain_gets_it_and_the_app_session_goes_back_to_the_app() {
        let minted = token();
        let t = minted.clone();
        let (auth, auth_seen) = server(move |_, cookie| {
            if cookie.contains("CF_Authorization=ORG-SECRET") {
                found("/cdn-cgi/access/authorized?code=c")
            } else {
                UNAUTHORIZED.to_string()
            }
        })
        .await;
        let auth_port = auth.port();
        let (app, app_seen) = app_server(auth_port, t).await;
        // The auth server redirects to a relative /authorized: on its own host, which
        // is not the app: no token, and the app session cookie does not go there.
        let (http, app_url, domain) = chain(app, auth);
        let scope = Scope {
            app_url: &app_url,
            auth_domain: &domain,
            plain_ok: true,
        };
        assert_eq!(
            exchange(&http, scope, "ORG-SECRET").await.unwrap(),
            Outcome::NoToken
        );
        assert!(
            !auth_seen
                .lock()
                .unwrap()
                .join("\n")
                .contains("CF_AppSession")
        );
        // Over plain HTTP without the loopback allowance, the org token is never sent.
        let strict = Scope {
            plain_ok: false,
            ..scope
        };
        assert_eq!(
            exchange(&http, strict, "ORG-SECRET").await.unwrap(),
            Outcome::NoToken
        );
        assert!(
            !auth_seen
                .lock()
                .unwrap()
                .last()
                .unwrap()
                .contains("ORG-SECRET"),
            "sent over plain HTTP"
        );
        let _ = app_seen;
    }

    #[tokio::test]
    async fn a_full_chain_yields_the_token_and_a_refusal_by_the_auth_domain_is_reported() {
        let minted = token();
        let t = minted.clone();
        let app_port = Arc::new(Mutex::new(0u16));
        let p = app_port.clone();
        let (auth, _) = server(move |_, cookie| match cookie {
            c if c.contains("CF_Authorization=GOOD") => found(&format!(
                "http://app.test:{}/cdn-cgi/access/authorized?code=c",
                p.lock().unwrap()
            )),
            c if c.contains("CF_Authorization=FORBIDDEN") => {
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_string()
            }
            _ => UNAUTHORIZED.to_string(),
        })
        .await;
        let auth_port = auth.port();
        let (app, _) = app_server(auth_port, t).await;
        *app_port.lock().unwrap() = app.port();
        let (http, app_url, domain) = chain(app, auth);
        let scope = Scope {
            app_url: &app_url,
            auth_domain: &domain,
            plain_ok: true,
        };
        assert_eq!(
            exchange(&http, scope, "GOOD").await.unwrap(),
            Outcome::Token(minted)
        );
        assert_eq!(
            exchange(&http, scope, "BAD").await.unwrap(),
            Outcome::OrgTokenRefused
        );
        assert_eq!(
            exchange(&http, scope, "FORBIDDEN").await.unwrap(),
            Outcome::Forbidden
        );
    }
}
