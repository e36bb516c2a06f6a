//! Reaching the edge's address: TCP (staggered tries for a resume), directly or
//! through the HTTP proxy [`crate::proxy`] chose, with one `CONNECT` sent by the
//! client's one HTTP/1 exchange ([`super::http1`]).

use std::io;
use std::time::Duration;

use http::{HeaderValue, Request};
use tokio::net::TcpStream;

use super::dial::{DialError, RESUME_CONNECT_EVERY, jittered};
use crate::proxy::Proxy;

/// A TCP connection to `addr` (or, with `proxy`, a tunnel to it through the
/// proxy) within `limit`; `staggered` for a resume ([`connect_staggered`]).
pub async fn reach(
    addr: &str,
    proxy: Option<&Proxy>,
    limit: Duration,
    staggered: bool,
) -> Result<TcpStream, DialError> {
    match proxy {
        Some(proxy) => via_proxy(proxy, addr, limit, staggered).await,
        None => tokio::time::timeout(limit, connect_maybe_staggered(addr, staggered))
            .await
            .map_err(|_| DialError::Timeout {
                addr: addr.to_string(),
                stage: "connecting to",
                secs: limit.as_secs(),
            })?,
    }
}

async fn connect_maybe_staggered(addr: &str, staggered: bool) -> Result<TcpStream, DialError> {
    if staggered {
        connect_staggered(addr).await
    } else {
        connect(addr).await
    }
}

/// [`connect`], starting another try every [`RESUME_CONNECT_EVERY`] (jittered)
/// while none has finished; the first to finish wins and the others are dropped.
/// A SYN sent into a black hole is otherwise retried by the kernel only after 1,
/// 3, 7 s: this way one goes out within 0.75 s of the link coming back. The
/// caller bounds the whole (at the resume limit, so a few tries at most).
async fn connect_staggered(addr: &str) -> Result<TcpStream, DialError> {
    let mut tries = tokio::task::JoinSet::new();
    loop {
        let a = addr.to_string();
        tries.spawn(async move { connect(&a).await });
        tokio::select! {
            done = tries.join_next() => {
                return match done {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => Err(DialError::Connect {
                        addr: addr.to_string(),
                        source: io::Error::other(e.to_string()),
                    }),
                    None => unreachable!("a try was just started"),
                };
            }
            () = tokio::time::sleep(jittered(RESUME_CONNECT_EVERY)) => {}
        }
    }
}

async fn connect(addr: &str) -> Result<TcpStream, DialError> {
    let addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| DialError::Resolve {
            addr: addr.to_string(),
            source,
        })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                crate::serve::tune(&s);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(DialError::Connect {
        addr: addr.to_string(),
        source: last,
    })
}

async fn via_proxy(
    proxy: &Proxy,
    addr: &str,
    limit: Duration,
    staggered: bool,
) -> Result<TcpStream, DialError> {
    let tcp = tokio::time::timeout(limit, connect_maybe_staggered(proxy.addr(), staggered))
        .await
        .map_err(|_| DialError::Timeout {
            addr: proxy.addr().to_string(),
            stage: "connecting to the proxy for",
            secs: limit.as_secs(),
        })??;
    let refused = |detail: String| DialError::Proxy {
        proxy: proxy.addr().to_string(),
        addr: addr.to_string(),
        detail,
    };
    tokio::time::timeout(limit, tunnel(tcp, proxy, addr))
        .await
        .map_err(|_| refused("no answer to CONNECT".into()))?
        .map_err(refused)
}

/// Ask `proxy` (connected as `tcp`) for a tunnel to `addr` (`host:port`): the
/// stream once it answers 2xx, else one line saying what it answered.
async fn tunnel(tcp: TcpStream, proxy: &Proxy, addr: &str) -> Result<TcpStream, String> {
    let mut request = Request::builder()
        .method(http::Method::CONNECT)
        .uri(addr)
        .header(http::header::HOST, addr)
        .body(())
        .map_err(|e| format!("cannot ask for {addr}: {e}"))?;
    if let Some(auth) = proxy.authorization() {
        let auth: HeaderValue = super::upgrade::sensitive(auth.clone());
        request
            .headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, auth);
    }
    let answer = super::http1::exchange(tcp, request, "the proxy")
        .await
        .map_err(|e| e.0)?;
    match answer.switched {
        // The edge has not been asked anything yet, so nothing may follow the
        // proxy's answer; bytes that did would be lost, so they are an error.
        Some((tcp, rest)) if rest.is_empty() => Ok(tcp),
        Some((_, rest)) => Err(format!(
            "the proxy sent {} bytes after its answer, before the edge was asked anything",
            rest.len()
        )),
        None => {
            let r = &answer.response;
            let reason = r
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
                .or_else(|| r.status().canonical_reason().map(str::to_string))
                .unwrap_or_default();
            Err(format!(
                "proxy answered {:?}",
                format!("{:?} {} {reason}", r.version(), r.status().as_u16()).trim_end()
            ))
        }
    }
}
