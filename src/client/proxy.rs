//! HTTP(S) proxies from the environment, as `cloudflared` takes them: `https_proxy`
//! (for `wss://`) or `http_proxy` (for `ws://`), upper or lower case, skipped for
//! hosts in `no_proxy`. The tunnel goes through with one `CONNECT`.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest proxy response head we read.
const MAX_HEAD: usize = 16 * 1024;

/// A proxy to reach the edge through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port` of the proxy.
    pub addr: String,
    /// `user:password` from the proxy URL, sent as Basic auth.
    auth: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("auth", &self.auth.as_ref().map(|_| "MASKED"))
            .finish()
    }
}

/// The proxy for `host` from the environment, if any. `lookup` reads a variable
/// (tests pass their own).
pub fn from_env(tls: bool, host: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<Proxy> {
    let var = |name: &str| {
        lookup(name)
            .or_else(|| lookup(&name.to_ascii_uppercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let raw = if tls {
        var("https_proxy")
    } else {
        var("http_proxy")
    }?;
    if var("no_proxy").is_some_and(|no| bypass(&no, host)) {
        return None;
    }
    parse(&raw)
}

/// Whether `no_proxy` (comma-separated hosts, `.suffix`es, or `*`) covers `host`.
pub fn bypass(no_proxy: &str, host: &str) -> bool {
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
        })
}

/// Parse `http://[user:pass@]host[:port]` (scheme optional; port 80 when absent, as
/// Go's `ProxyFromEnvironment`, which `cloudflared` uses, defaults it).
pub fn parse(raw: &str) -> Option<Proxy> {
    let rest = raw.trim();
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    if rest.contains("://") {
        return None;
    }
    let rest = rest.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a.to_string()), h),
        None => (None, rest),
    };
    if hostport.is_empty() {
        return None;
    }
    let has_port = hostport
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
    let addr = if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Some(Proxy { addr, auth })
}

/// Ask `proxy` (already connected as `stream`) to open a tunnel to `target`
/// (`host:port`). Errors are one line.
pub async fn connect(
    stream: &mut TcpStream,
    proxy: &Proxy,
    target: &str,
    limit: Duration,
) -> Result<(), String> {
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &proxy.auth {
        let enc = base64::engine::general_purpose::STANDARD.encode(auth);
        req.push_str(&format!("Proxy-Authorization: Basic {enc}\r\n"));
    }
    req.push_str("\r\n");
    let exchange = async {
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // Read byte by byte up to the blank line, so no tunnelled byte is consumed.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err("response head too long".to_string());
            }
            let b = stream.read_u8().await.map_err(|e| e.to_string())?;
            head.push(b);
        }
        match super::dial::parse_response(&head) {
            Ok(Some((response, _))) if response.status().is_success() => Ok(()),
            _ => {
                let status_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                Err(format!(
                    "proxy answered {:?}",
                    String::from_utf8_lossy(status_line)
                ))
            }
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| "no answer to CONNECT".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_no_proxy() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = env(&[
            ("HTTPS_PROXY", "http://u:p@proxy.corp:3128"),
            ("no_proxy", "internal.test,.corp"),
        ]);
        let p = from_env(true, "db.example.com", e).unwrap();
        assert_eq!(p.addr, "proxy.corp:3128");
        assert!(!format!("{p:?}").contains("u:p"));
        assert_eq!(
            from_env(false, "db.example.com", e),
            None,
            "http_proxy unset"
        );
        assert_eq!(from_env(true, "db.internal.test", e), None);
        assert_eq!(from_env(true, "x.corp", e), None);
        assert_eq!(parse("proxy:8080").unwrap().addr, "proxy:8080");
        assert_eq!(parse("proxy").unwrap().addr, "proxy:80");
        assert_eq!(parse("socks5://proxy:1080"), None);
    }
}
