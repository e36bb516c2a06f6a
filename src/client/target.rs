//! Parsing `--hostname`, `--connect-to`, `--destination` and `-H` once, into the
//! [`Target`] every connection uses.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::protocol::host_port::{self, HostPortError, Port};
use crate::secret::Secret;

/// How the client proves who it is to the edge: one of these, never two.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Nothing, and no login either: the edge's login redirect is the answer
    /// (probes and parse-only targets).
    #[default]
    None,
    /// An Access JWT, sent as `Cf-Access-Token`.
    Token(Secret),
    /// A service token, sent as `Cf-Access-Client-Id` / `Cf-Access-Client-Secret`.
    ServiceToken {
        /// The client id (not secret; shown in errors).
        id: String,
        /// The client secret.
        secret: Secret,
    },
    /// A lazy login for this app: the cached token, or a browser login when needed.
    Login(Arc<crate::auth::Authenticator>),
}

impl Credentials {
    /// What kind of credentials these are, for status output (never the value).
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None | Credentials::Login(_) => "login",
            Credentials::Token(_) => "token",
            Credentials::ServiceToken { .. } => "service token",
        }
    }

    /// The login flow, when these credentials are a login.
    pub fn login(&self) -> Option<&Arc<crate::auth::Authenticator>> {
        match self {
            Credentials::Login(auth) => Some(auth),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(t) => f.debug_tuple("Token").field(t).finish(),
            Credentials::ServiceToken { id, secret } => f
                .debug_struct("ServiceToken")
                .field("id", id)
                .field("secret", secret)
                .finish(),
            Credentials::Login(_) => f.write_str("Login"),
        }
    }
}

/// How the edge is spoken to: a plain WebSocket, or TLS with its client config.
#[derive(Clone)]
pub enum Scheme {
    /// `ws://`, for loopback development.
    Plain,
    /// `wss://`, with the roots (and `--ca-file`) to verify the edge by.
    Tls(Arc<rustls::ClientConfig>),
}

/// A parsed `--hostname`: where the app is, nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUrl {
    host: String,
    port: u16,
    tls: bool,
    path: String,
}

/// Everything needed to open one tunnel stream, validated once at start and built
/// once by [`TargetBuilder`]; read-only afterwards.
#[derive(Clone)]
pub struct Target {
    app: AppUrl,
    scheme: Scheme,
    connect_to: Option<String>,
    destination: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    credentials: Credentials,
    proxy: Option<crate::proxy::Proxy>,
    metrics: Option<crate::metrics::TunnelMetrics>,
    status: Option<crate::status::Tap>,
}

/// Collects what a [`Target`] needs; [`TargetBuilder::build`] cannot fail, because
/// the TLS config is given up front.
#[derive(Clone)]
pub struct TargetBuilder {
    target: Target,
}

/// A malformed `--hostname`, `--destination`, `--connect-to` or `-H`.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `--hostname` could not be understood.
    #[error(
        "invalid --hostname {0:?}: {1}; expected a host name such as db.example.com or https://db.example.com"
    )]
    Hostname(String, &'static str),
    /// A `host:port` flag could not be understood.
    #[error(transparent)]
    HostPort(#[from] HostPortError),
    /// `-H` could not be understood.
    #[error("invalid --header \"{0}\": expected 'Name: value' on one line")]
    Header(String),
    /// A credential flag holds a character no header can carry (its value is secret,
    /// so it is not shown).
    #[error("{0} holds a line break or control character; pass the value alone, on one line")]
    Credential(&'static str),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url())
            .field("connect_to", &self.connect_to)
            .field("destination", &self.destination)
            .field("credentials", &self.credentials)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl AppUrl {
    /// Parse `--hostname`: a bare host (`db.example.com`, TLS on 443), `host:port`,
    /// `https://host[:port][/path]`, or `http://...` (plain WebSocket, for loopback
    /// development; stock `cloudflared` would upgrade it to TLS).
    pub fn parse(hostname: &str) -> Result<AppUrl, TargetError> {
        let bad = |why| TargetError::Hostname(hostname.to_string(), why);
        let s = hostname.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let (tls, rest) = if let Some(r) = strip_prefix_ci(s, "https://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(s, "wss://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(s, "http://") {
            (false, r)
        } else if let Some(r) = strip_prefix_ci(s, "ws://") {
            (false, r)
        } else if s.contains("://") {
            return Err(bad("unsupported scheme (use https:// or http://)"));
        } else {
            (true, s)
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
            Some(i) => (&rest[..i], "/"),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let authority =
            host_port::parse("--hostname", authority, Port::Optional).map_err(|e| bad(e.why()))?;
        let (host, port) = (authority.host(), authority.port());
        let path = path.split('#').next().unwrap_or("/");
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("the path holds spaces or control characters"));
        }
        if path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(bad(
                "the path holds characters a URL cannot carry; percent-encode them",
            ));
        }
        Ok(AppUrl {
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            tls,
            path: path.to_string(),
        })
    }

    /// The app's host name (lower case; an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The edge port (443 for TLS, 80 for plain, unless given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the edge speaks TLS (`wss://`, `https://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `https` or `http`, for the app's web URLs (login, metadata).
    pub fn http_scheme(&self) -> &'static str {
        crate::protocol::http_scheme(self.tls)
    }

    /// The `Host` header value: the host, plus the port when it is not the default.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The hostname and port, as an address to dial.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL shown to people: `wss://host[:port]/path`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.host_header(), self.path)
    }
}

impl Target {
    /// Start building the target for `app`; `tls` verifies the edge when the app is
    /// `https` (a plain app does not use it).
    pub fn builder(app: AppUrl, tls: Arc<rustls::ClientConfig>) -> TargetBuilder {
        let scheme = if app.tls {
            Scheme::Tls(tls)
        } else {
            Scheme::Plain
        };
        TargetBuilder {
            target: Target {
                app,
                scheme,
                connect_to: None,
                destination: None,
                headers: Vec::new(),
                credentials: Credentials::None,
                proxy: None,
                metrics: None,
                status: None,
            },
        }
    }

    /// The parsed `--hostname`.
    pub fn app(&self) -> &AppUrl {
        &self.app
    }

    /// App hostname: sent as `Host` and TLS SNI.
    pub fn host(&self) -> &str {
        &self.app.host
    }

    /// Plain or TLS, with the TLS config.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Whether the edge speaks TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Tls(_))
    }

    /// The `Host` header value (see [`AppUrl::host_header`]).
    pub fn host_header(&self) -> String {
        self.app.host_header()
    }

    /// The URL shown to people: `wss://host[:port]/path`.
    pub fn url(&self) -> String {
        self.app.url()
    }

    /// The address to dial: `--connect-to`, or the hostname and port.
    pub fn dial_addr(&self) -> String {
        match &self.connect_to {
            Some(a) => a.clone(),
            None => self.app.addr(),
        }
    }

    /// Bastion mode destination, sent as `Cf-Access-Jump-Destination`.
    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }

    /// Extra request headers (`-H`).
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Credentials to present.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// HTTP proxy to tunnel through (from the environment; never with `--connect-to`).
    pub fn proxy(&self) -> Option<&crate::proxy::Proxy> {
        self.proxy.as_ref()
    }

    /// Where this tunnel's connections are counted (`--metrics`).
    pub fn metrics(&self) -> Option<&crate::metrics::TunnelMetrics> {
        self.metrics.as_ref()
    }

    /// Where its live connections are listed for `tunnel status`.
    pub fn status(&self) -> Option<&crate::status::Tap> {
        self.status.as_ref()
    }
}

impl TargetBuilder {
    /// The parsed `--hostname` being built for.
    pub fn app(&self) -> &AppUrl {
        &self.target.app
    }

    /// Dial this `host:port` instead of the app's, keeping `Host` and SNI.
    pub fn connect_to(mut self, addr: Option<String>) -> Self {
        self.target.connect_to = addr;
        self
    }

    /// Bastion mode destination (`--destination`).
    pub fn destination(mut self, dest: Option<String>) -> Self {
        self.target.destination = dest;
        self
    }

    /// Extra request headers (`-H`).
    pub fn headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        self.target.headers = headers;
        self
    }

    /// The credentials to present.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.target.credentials = credentials;
        self
    }

    /// The HTTP proxy to tunnel through.
    pub fn proxy(mut self, proxy: Option<crate::proxy::Proxy>) -> Self {
        self.target.proxy = proxy;
        self
    }

    /// Count this tunnel's connections (`--metrics`).
    pub fn metrics(mut self, metrics: Option<crate::metrics::TunnelMetrics>) -> Self {
        self.target.metrics = metrics;
        self
    }

    /// List its live connections for `tunnel status`.
    pub fn status(mut self, tap: crate::status::Tap) -> Self {
        self.target.status = Some(tap);
        self
    }

    /// The finished target.
    pub fn build(self) -> Target {
        self.target
    }
}

/// Check a `host:port` flag value (`--connect-to`, `--destination`) by the one
/// parser's rules ([`host_port`]); the value as the edge and the dialer get it.
pub fn parse_host_port(flag: &'static str, value: &str) -> Result<String, TargetError> {
    Ok(host_port::parse(flag, value, Port::Required)?.to_string())
}

/// Parse one `-H 'Name: value'` (or `Name=value`, as some scripts write). A line
/// break anywhere is refused, never trimmed away: it would end the header.
pub fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), TargetError> {
    let bad = || TargetError::Header(raw.escape_debug().to_string());
    if raw.contains(['\r', '\n']) {
        return Err(bad());
    }
    let (name, value) = raw
        .split_once(':')
        .or_else(|| raw.split_once('='))
        .ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_means_tls_on_443() {
        let t = AppUrl::parse("DB.example.com").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("db.example.com", 443, true)
        );
        assert_eq!(t.url(), "wss://db.example.com/");
        assert_eq!(t.addr(), "db.example.com:443");
    }

    #[test]
    fn paths_a_url_cannot_carry_are_refused() {
        // Found by the hostname fuzz target: this once panicked building the request.
        let err = AppUrl::parse("Cf/u@-Access-Token=abc/def`ghi").unwrap_err();
        assert!(err.to_string().contains("percent-encode"), "{err}");
        assert!(AppUrl::parse("db.test/a%60b").is_ok());
    }

    #[test]
    fn schemes_ports_and_paths() {
        let t = AppUrl::parse("http://app.test:8080/x?y=1").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 8080, "/x?y=1"));
        assert_eq!(t.host_header(), "app.test:8080");
        let t = AppUrl::parse("https://[::1]:7443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 7443));
        assert_eq!(t.addr(), "[::1]:7443");
        assert_eq!(AppUrl::parse("db.test:9000").unwrap().port, 9000);
    }

    #[test]
    fn malformed_hostnames_are_refused() {
        for bad in [
            "",
            "ftp://x",
            "https://",
            "a b.test",
            "x.test:99999",
            "x.test:0",
            "u@x.test",
            "x..test",
        ] {
            assert!(AppUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn host_port_and_headers() {
        assert!(parse_host_port("--destination", "10.0.0.5:22").is_ok());
        assert!(parse_host_port("--destination", "10.0.0.5").is_err());
        assert!(parse_host_port("--connect-to", "[::1]:7000").is_ok());
        let (n, v) = parse_header("X-Test: a b").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-test", "a b"));
        assert!(parse_header("nocolon").is_err());
        for raw in ["X-A: b\r\n", "X-A: b\nX-Evil: c", "X-A\r: b"] {
            assert!(parse_header(raw).is_err(), "{raw:?} should be refused");
        }
    }
}
