//! The one proxy resolver: every connection the client makes, the tunnel to the edge
//! and each HTTP request of a login (discovery, keys, token exchange, hand-off),
//! asks [`Proxies::route`] whether to go direct or through which HTTP proxy, so the
//! two never take different routes for the same environment.
//!
//! The rules are `hyper-util`'s proxy matcher (curl's): `HTTPS_PROXY` for `https`/
//! `wss` edges and `HTTP_PROXY` for `http`/`ws`, either falling back to `ALL_PROXY`
//! (each upper case first, then lower case; an empty value counts as unset), and
//! `NO_PROXY` entries that are host names (matching their subdomains too, a leading
//! `.` or `*.` optional), IP addresses, CIDR ranges, or `*`. `reqwest` used the same
//! matcher on its own before; now it is handed ours ([`Proxies::reqwest`]), so there
//! is one decision, and `--connect-to` (which names the address to dial) turns
//! proxies off for both ([`Proxies::direct`]).

use std::sync::Arc;

use base64::Engine;
use http::HeaderValue;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

/// Decides, per destination, between a direct connection and an HTTP proxy.
pub struct Proxies {
    /// `None`: always direct.
    matcher: Option<Matcher>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matcher's own Debug leaves proxy credentials out.
        f.debug_tuple("Proxies").field(&self.matcher).finish()
    }
}

/// An HTTP proxy to reach a destination through (with `CONNECT`).
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port` of the proxy.
    addr: String,
    /// `Proxy-Authorization` (Basic, from `user:password@` in the proxy URL).
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("auth", &self.auth.as_ref().map(|_| "MASKED"))
            .finish()
    }
}

/// A proxy from the environment that the client cannot use.
#[derive(Debug, thiserror::Error)]
#[error(
    "the proxy for {host} from the environment is a {scheme}:// proxy ({addr}); tunnel speaks only to http:// proxies (HTTP CONNECT): set https_proxy/http_proxy/all_proxy to an http:// URL, or list {host} in no_proxy"
)]
pub struct ProxyError {
    /// The destination host.
    host: String,
    /// The proxy URL's scheme (`socks5`, `https`, ...).
    scheme: String,
    /// The proxy's `host:port` (never its credentials).
    addr: String,
}

impl Proxies {
    /// The proxies the process environment names.
    pub fn from_env() -> Proxies {
        Proxies::from_lookup(|k| std::env::var(k).ok())
    }

    /// Direct for every destination (with `--connect-to`, which names the address).
    pub fn direct() -> Proxies {
        Proxies { matcher: None }
    }

    /// [`Proxies::from_env`] unless `connect_to` is given, then [`Proxies::direct`].
    pub fn for_reach(connect_to: Option<&str>) -> Proxies {
        match connect_to {
            Some(_) => Proxies::direct(),
            None => Proxies::from_env(),
        }
    }

    /// The proxies named by the variables `lookup` reads (tests pass their own).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Proxies {
        // As hyper-util (and reqwest before us): a CGI environment's HTTP_PROXY may
        // come from a request header ("httpoxy"), so none is trusted there.
        if lookup("REQUEST_METHOD").is_some() {
            return Proxies::direct();
        }
        let var = |name: &str| {
            [name.to_ascii_uppercase(), name.to_string()]
                .iter()
                .filter_map(|n| lookup(n))
                .find(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        // `*.corp` as `.corp`: the matcher takes a leading dot, not a star.
        let no = var("no_proxy")
            .split(',')
            .map(|e| {
                let e = e.trim();
                e.strip_prefix("*.")
                    .map_or(e.to_string(), |d| format!(".{d}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        let matcher = Matcher::builder()
            .all(var("all_proxy"))
            .http(var("http_proxy"))
            .https(var("https_proxy"))
            .no(no)
            .build();
        Proxies {
            matcher: Some(matcher),
        }
    }

    /// The proxy for `host` (a name or an IP address, no port) when reached over
    /// `https`/`wss` (`tls`) or `http`/`ws`: `None` for a direct connection.
    pub fn route(&self, tls: bool, host: &str) -> Result<Option<Proxy>, ProxyError> {
        let Some(matcher) = &self.matcher else {
            return Ok(None);
        };
        let scheme = if tls { "https" } else { "http" };
        let bracketed = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let Ok(uri) = format!("{scheme}://{bracketed}/").parse::<http::Uri>() else {
            // Not a host a URL can name: nothing a proxy could be asked for either.
            return Ok(None);
        };
        matcher
            .intercept(&uri)
            .map(|i| Proxy::from_intercept(&i, host))
            .transpose()
    }

    /// This resolver as `reqwest`'s only proxy source (it replaces reqwest's own
    /// reading of the environment): every request goes where [`Proxies::route`] says.
    /// A destination routed to a proxy the client cannot use goes nowhere: the
    /// caller checks its hosts with [`Proxies::route`] first and reports that.
    pub fn reqwest(self: &Arc<Self>) -> reqwest::Proxy {
        let me = Arc::clone(self);
        reqwest::Proxy::custom(move |url: &reqwest::Url| {
            let host = url.host_str()?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match me.route(url.scheme() == "https", host) {
                Ok(Some(proxy)) => Some(proxy.url()),
                Ok(None) => None,
                // Unreachable after the caller's check; never fall back to direct.
                Err(_) => Some(unusable()),
            }
        })
    }
}

/// A proxy URL that refuses at once (port 0), for a route that must not go direct.
fn unusable() -> reqwest::Url {
    reqwest::Url::parse("http://0.0.0.0:0/").expect("a valid constant URL")
}

impl Proxy {
    fn from_intercept(i: &Intercept, host: &str) -> Result<Proxy, ProxyError> {
        let uri = i.uri();
        let scheme = uri.scheme_str().unwrap_or("http");
        let proxy_host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(80);
        let addr = format!("{proxy_host}:{port}");
        if scheme != "http" {
            return Err(ProxyError {
                host: host.to_string(),
                scheme: scheme.to_string(),
                addr,
            });
        }
        Ok(Proxy {
            addr,
            auth: i.basic_auth().cloned(),
        })
    }

    /// The proxy's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The `Proxy-Authorization` header value, if the proxy URL had credentials.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// `http://[user:password@]host:port/`, as reqwest takes a proxy: it turns the
    /// credentials back into the same Basic header.
    fn url(&self) -> reqwest::Url {
        let Ok(mut url) = reqwest::Url::parse(&format!("http://{}/", self.addr)) else {
            return unusable();
        };
        let basic = self
            .auth
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        if let Some(pair) = basic {
            let (user, password) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
            let _ = url.set_username(user);
            let _ = url.set_password(Some(password).filter(|p| !p.is_empty()));
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> Proxies {
        Proxies::from_lookup(move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn addr(p: &Proxies, tls: bool, host: &str) -> Option<String> {
        p.route(tls, host).unwrap().map(|p| p.addr)
    }

    #[test]
    fn env_and_no_proxy() {
        let e = env(&[
            ("HTTPS_PROXY", "http://u:p@proxy.corp:3128"),
            ("no_proxy", "internal.test,.corp,*.star.test,10.0.0.0/8,::1"),
        ]);
        let p = e.route(true, "db.example.com").unwrap().unwrap();
        assert_eq!(p.addr(), "proxy.corp:3128");
        assert!(!format!("{p:?}").contains("u:p"));
        assert_eq!(p.authorization().unwrap(), "Basic dTpw");
        assert_eq!(addr(&e, false, "db.example.com"), None, "http_proxy unset");
        assert_eq!(addr(&e, true, "db.internal.test"), None);
        assert_eq!(addr(&e, true, "internal.test"), None);
        assert_eq!(addr(&e, true, "x.corp"), None);
        assert_eq!(addr(&e, true, "a.star.test"), None);
        assert_eq!(addr(&e, true, "10.1.2.3"), None, "CIDR entry");
        assert_eq!(addr(&e, true, "::1"), None);
        assert!(addr(&e, true, "11.1.2.3").is_some());
        assert!(addr(&e, true, "notinternal.test").is_some());
    }

    #[test]
    fn variables_schemes_and_ports() {
        let e = env(&[("http_proxy", "proxy:8080"), ("ALL_PROXY", "http://all")]);
        assert_eq!(addr(&e, false, "a.test").unwrap(), "proxy:8080");
        assert_eq!(addr(&e, true, "a.test").unwrap(), "all:80", "ALL_PROXY");
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
        ]);
        assert_eq!(addr(&e, true, "a.test").unwrap(), "upper:1");
        let e = env(&[("HTTPS_PROXY", " "), ("https_proxy", "http://lower:2")]);
        assert_eq!(addr(&e, true, "a.test").unwrap(), "lower:2");
        let e = env(&[("all_proxy", "socks5h://s:1080")]);
        let err = e.route(true, "a.test").unwrap_err().to_string();
        assert!(err.contains("socks5") && err.contains("no_proxy"), "{err}");
        let e = env(&[("https_proxy", "http://p:1"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(addr(&e, true, "a.test"), None, "CGI");
        assert_eq!(addr(&Proxies::direct(), true, "a.test"), None);
    }

    #[test]
    fn reqwest_gets_the_same_credentials() {
        let e = env(&[("https_proxy", "http://us%3Aer:p%40ss:w@proxy:3128")]);
        let p = e.route(true, "a.test").unwrap().unwrap();
        let url = p.url();
        assert_eq!(url.host_str(), Some("proxy"));
        let again = Matcher::builder().all(url.to_string()).build();
        let i = again
            .intercept(&"https://a.test/".parse().unwrap())
            .unwrap();
        assert_eq!(i.basic_auth(), p.authorization());
        let e = env(&[("https_proxy", "http://user@proxy:3128")]);
        let p = e.route(true, "a.test").unwrap().unwrap();
        let again = Matcher::builder().all(p.url().to_string()).build();
        let i = again
            .intercept(&"https://a.test/".parse().unwrap())
            .unwrap();
        assert_eq!(i.basic_auth(), p.authorization());
    }
}
