//! `tunnel status`: what a running `tunnel up` or `tunnel tcp` is doing. Each such
//! process keeps a [`Registry`] of its tunnels and live connections and answers on a
//! control socket private to the user (a Unix socket, 0600 in a 0700 directory; a
//! named pipe on Windows that refuses remote clients) with one JSON document. Nothing
//! in it is secret: names, addresses, byte counts, the token's identity and expiry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::auth::Authenticator;

/// Largest status document read from one process.
pub const MAX_DOCUMENT: usize = 4 * 1024 * 1024;

struct TunnelEntry {
    hostname: String,
    listeners: Vec<SocketAddr>,
    auth: Option<Arc<Authenticator>>,
    credentials: &'static str,
}

#[derive(Debug)]
struct ConnEntry {
    tunnel: String,
    peer: Option<SocketAddr>,
    since: SystemTime,
    started: Instant,
    counters: Arc<Counters>,
}

/// Bytes moved by one live connection so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Local side to the edge.
    pub up: AtomicU64,
    /// Edge to the local side.
    pub down: AtomicU64,
}

/// The tunnels and live connections of this process.
#[derive(Default)]
pub struct Registry {
    tunnels: Mutex<BTreeMap<String, TunnelEntry>>,
    conns: Mutex<BTreeMap<u64, ConnEntry>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tunnels", &lock(&self.tunnels).len())
            .field("connections", &lock(&self.conns).len())
            .finish()
    }
}

impl Registry {
    /// A new, empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Record (or replace) tunnel `name`.
    pub fn add_tunnel(
        &self,
        name: &str,
        hostname: &str,
        listeners: Vec<SocketAddr>,
        auth: Option<Arc<Authenticator>>,
        credentials: &'static str,
    ) {
        let entry = TunnelEntry {
            hostname: hostname.to_string(),
            listeners,
            auth,
            credentials,
        };
        lock(&self.tunnels).insert(name.to_string(), entry);
    }

    /// Forget tunnel `name` (its live connections stay listed until they end).
    pub fn remove_tunnel(&self, name: &str) {
        lock(&self.tunnels).remove(name);
    }

    /// Register a live connection of `tunnel`; it is listed until the guard drops.
    pub fn open(self: &Arc<Self>, tunnel: &str, peer: Option<SocketAddr>) -> Live {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(Counters::default());
        let entry = ConnEntry {
            tunnel: tunnel.to_string(),
            peer,
            since: SystemTime::now(),
            started: Instant::now(),
            counters: counters.clone(),
        };
        lock(&self.conns).insert(id, entry);
        Live {
            registry: self.clone(),
            id,
            counters,
        }
    }

    /// The status document: every tunnel with its listeners, token and live
    /// connections.
    pub fn snapshot(&self) -> Value {
        let conns = lock(&self.conns);
        let tunnels = lock(&self.tunnels);
        let now = crate::protocol::now_secs();
        let list: Vec<Value> = tunnels
            .iter()
            .map(|(name, t)| {
                let token = t.auth.as_ref().and_then(|a| a.current()).and_then(|tok| {
                    let c = crate::auth::jwt::claims(tok.expose()).ok()?;
                    Some(json!({
                        "identity": c.email,
                        "expiry": crate::auth::jwt::rfc3339(c.exp),
                        "expires_in_secs": c.exp.saturating_sub(now),
                    }))
                });
                let live: Vec<Value> = conns
                    .values()
                    .filter(|c| &c.tunnel == name)
                    .map(|c| {
                        json!({
                            "peer": c.peer.map(|p| p.to_string()),
                            "since": crate::auth::jwt::rfc3339(
                                c.since.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                            ),
                            "age_secs": c.started.elapsed().as_secs(),
                            "bytes_up": c.counters.up.load(Ordering::Relaxed),
                            "bytes_down": c.counters.down.load(Ordering::Relaxed),
                        })
                    })
                    .collect();
                json!({
                    "name": name,
                    "hostname": t.hostname,
                    "listeners": t.listeners.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
                    "credentials": t.credentials,
                    "token": token,
                    "connections": live,
                })
            })
            .collect();
        json!({
            "pid": std::process::id(),
            "tunnels": list,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is a single insert or remove: a panic cannot leave them torn.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A live connection's place in the registry; removed when dropped.
#[derive(Debug)]
pub struct Live {
    registry: Arc<Registry>,
    id: u64,
    counters: Arc<Counters>,
}

impl Live {
    /// Wrap the local side so its bytes are counted as they move.
    pub fn count<L>(&self, local: L) -> Counting<L> {
        Counting {
            inner: local,
            counters: self.counters.clone(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        lock(&self.registry.conns).remove(&self.id);
    }
}

/// The local side of a connection, counting what is read (up) and written (down).
#[derive(Debug)]
pub struct Counting<L> {
    inner: L,
    counters: Arc<Counters>,
}

impl<L: AsyncRead + Unpin> AsyncRead for Counting<L> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.counters.up.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl<L: AsyncWrite + Unpin> AsyncWrite for Counting<L> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.down.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.down.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One tunnel's handle on the registry: its name fixed.
#[derive(Debug, Clone)]
pub struct Tap {
    /// The process's registry.
    pub registry: Arc<Registry>,
    /// The tunnel's name.
    pub name: String,
}

/// Where control sockets live: `$XDG_RUNTIME_DIR/tunnel` where there is one, else
/// `<config dir>/tunnel/run`; `TUNNEL_RUNTIME_DIR` overrides both. Unix only, as
/// the control sockets are.
#[cfg(unix)]
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TUNNEL_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match dirs::runtime_dir() {
        Some(d) => d.join("tunnel"),
        None => dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("tunnel")
            .join("run"),
    }
}

/// The control socket: a Unix socket, or a named pipe on Windows.
#[cfg(unix)]
#[path = "status/unix.rs"]
mod socket;
#[cfg(windows)]
#[path = "status/windows.rs"]
mod socket;

/// Answer `tunnel status` queries with `registry`'s snapshot until `shutdown`.
/// Failing to set up the control socket is not fatal: the tunnels run without it.
pub async fn serve(registry: Arc<Registry>, shutdown: CancellationToken) {
    let (listener, _served) = match socket::bind() {
        Ok(l) => l,
        Err(e) => {
            return tracing::warn!(
                "no status socket ({e}); `tunnel status` will not see this process"
            );
        }
    };
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = socket::accept(&listener) => c,
        };
        match conn {
            Ok(c) => {
                let mut doc = registry.snapshot().to_string();
                doc.push('\n');
                tokio::spawn(async move { socket::reply(c, doc.as_bytes()).await });
            }
            Err(e) => {
                debug!("status accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The documents of every running `tunnel` process of this user.
pub async fn query() -> (Vec<Value>, Vec<String>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for r in socket::query_all().await {
        match r.and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string())) {
            Ok(v) => docs.push(v),
            Err(e) => errors.push(e),
        }
    }
    (docs, errors)
}

/// The documents as a table for people.
pub fn text(docs: &[Value]) -> String {
    if docs.is_empty() {
        return "no running `tunnel up` or `tunnel tcp` found\n".into();
    }
    let mut out = String::new();
    for d in docs {
        out.push_str(&format!("process {}\n", d["pid"]));
        for t in d["tunnels"].as_array().into_iter().flatten() {
            let listeners: Vec<&str> = t["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            out.push_str(&format!(
                "  {}  {} -> {}  ({})\n",
                t["name"].as_str().unwrap_or(""),
                listeners.join(", "),
                t["hostname"].as_str().unwrap_or(""),
                t["credentials"].as_str().unwrap_or("")
            ));
            if let Some(tok) = t["token"].as_object() {
                out.push_str(&format!(
                    "    token: {} until {}\n",
                    tok.get("identity")
                        .and_then(Value::as_str)
                        .unwrap_or("(no identity)"),
                    tok.get("expiry").and_then(Value::as_str).unwrap_or("?")
                ));
            }
            for c in t["connections"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "    {}  {} s  up {} B  down {} B\n",
                    c["peer"].as_str().unwrap_or("stdio"),
                    c["age_secs"],
                    c["bytes_up"],
                    c["bytes_down"]
                ));
            }
        }
    }
    out
}
