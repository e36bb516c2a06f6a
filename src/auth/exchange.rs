//! Org-token exchange (README: "Logging in"): with a valid org token, follow the app's
//! login redirects sending `CF_Authorization=<org token>` to login URLs, carry the
//! `CF_AppSession` cookie, stop after `/cdn-cgi/access/authorized`, and take the
//! `CF_Authorization` cookie it sets as the new app token. No browser.

use super::AuthError;
use crate::protocol;

/// Most redirects followed.
pub const MAX_HOPS: usize = 10;

/// Exchange `org_token` for an app token for `app_url`. `Ok(None)` when the chain
/// does not end in a new token (the org token was refused).
pub async fn exchange(
    http: &reqwest::Client,
    app_url: &str,
    org_token: &str,
) -> Result<Option<String>, AuthError> {
    let mut url = reqwest::Url::parse(app_url)
        .map_err(|e| AuthError::Discovery(format!("{app_url}: {e}")))?;
    let mut app_session: Option<String> = None;
    for _ in 0..MAX_HOPS {
        let mut req = http.head(url.clone());
        let mut cookies = Vec::new();
        if url.path().contains(protocol::LOGIN_PATH) {
            cookies.push(format!("{}={org_token}", protocol::AUTH_COOKIE));
        }
        if let Some(s) = &app_session {
            cookies.push(format!("{}={s}", protocol::APP_SESSION_COOKIE));
        }
        if !cookies.is_empty() {
            req = req.header(reqwest::header::COOKIE, cookies.join("; "));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| super::network(&format!("token exchange at {url}"), &e))?;
        if let Some(s) = set_cookie(resp.headers(), protocol::APP_SESSION_COOKIE) {
            app_session = Some(s);
        }
        if url.path().starts_with(protocol::AUTHORIZED_PATH) {
            return Ok(set_cookie(resp.headers(), protocol::AUTH_COOKIE)
                .filter(|t| super::jwt::claims(t).is_ok_and(|c| c.exp > super::jwt::now_secs())));
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        match (resp.status().is_redirection(), location) {
            (true, Some(loc)) => {
                url = url
                    .join(loc)
                    .map_err(|e| AuthError::Discovery(format!("bad redirect {loc:?}: {e}")))?;
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
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
