//! The tunnel's way through an HTTP proxy ([`crate::proxy`] decides which, if any):
//! one `CONNECT` to the edge's address.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::Proxy;

/// Longest proxy response head we read.
const MAX_HEAD: usize = 16 * 1024;

/// Ask `proxy` (already connected as `stream`) to open a tunnel to `target`
/// (`host:port`). Errors are one line.
pub async fn connect(
    stream: &mut TcpStream,
    proxy: &Proxy,
    target: &str,
    limit: Duration,
) -> Result<(), String> {
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = proxy.authorization().and_then(|a| a.to_str().ok()) {
        req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
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
