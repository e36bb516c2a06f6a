//! Resumable streams on the edge (README: "Resumable streams"): every stream that
//! offered resumption has an entry here while it lives, keyed by its stream id, with
//! its current single-use ticket and the identity and app it was opened for. A
//! resume request that proves the same identity and presents the ticket claims the
//! stream: its task drops the old WebSocket (broken, or not yet noticed to be) and
//! takes up the new one. The table is bounded: beyond [`MAX_STREAMS`] new streams
//! are simply not offered resumption. Here too: a resumable stream's task ([`run`])
//! and the answer to a resume request ([`resume`]); `server` routes to both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use super::Edge;
use super::policy::{self, Identity};
use super::server::{Body, refusal, switching_protocols};
use crate::bridge;
use crate::protocol::{self, random_hex};
use crate::secret::Secret;

/// Most resumable streams one edge process holds (live or waiting for their
/// client); each may hold up to a replay buffer of [`crate::bridge::resume::REPLAY_LIMIT`].
pub const MAX_STREAMS: usize = 1024;
/// Random bytes in a stream id (not secret; it names the entry).
const ID_BYTES: usize = 16;
/// Random bytes in a ticket: 256 bits.
const TICKET_BYTES: usize = 32;

/// A resume request handed to the stream's task.
#[derive(Debug)]
pub struct Claim {
    /// The new WebSocket, once the `101` is sent.
    pub upgrade: hyper::upgrade::OnUpgrade,
    /// Positions the client delivered to its local socket.
    pub peer_has: u64,
    /// The task answers with what it delivered to the origin.
    pub reply: oneshot::Sender<u64>,
}

/// Why a resume was refused (safe to show; never the ticket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such stream here: it ended, its window passed, or it lives on another edge.
    Unknown,
    /// The ticket, identity or app does not match the stream's.
    Mismatch,
    /// The stream's task is busy with another resume, or just ended.
    Busy,
}

impl Refused {
    /// A few words for the `Tunnel-Refusal` header and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Unknown => {
                "no such stream to resume on this edge (it ended, its resume window passed, or it belongs to another edge process)"
            }
            Refused::Mismatch => "resume ticket, identity or app does not match the stream",
            Refused::Busy => "the stream is being resumed already",
        }
    }
}

struct Entry {
    ticket: Secret,
    host: String,
    identity: Identity,
    claims: mpsc::Sender<Claim>,
}

/// The resumable streams of one edge process.
#[derive(Default)]
pub struct Streams {
    map: Mutex<HashMap<String, Entry>>,
}

/// A registered stream: its id, first ticket, and where its claims arrive.
#[derive(Debug)]
pub struct Registered {
    /// The stream id.
    pub id: String,
    /// The first ticket.
    pub ticket: Secret,
    /// Resume requests for this stream.
    pub claims: mpsc::Receiver<Claim>,
    /// Bound of the stream's replay buffer (the app's `resume_buffer`).
    pub replay_limit: usize,
}

impl Registered {
    /// What the `101` of the stream's first WebSocket offers its client.
    pub fn offer(&self, window: std::time::Duration) -> crate::protocol::ResumeOffer {
        crate::protocol::ResumeOffer {
            id: self.id.clone(),
            ticket: self.ticket.clone(),
            window,
            delivered: 0,
        }
    }
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere cannot leave the map half-updated: every change is one call.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a new stream opened by `identity` for app `host`; `None` when the
    /// table is full (the stream is then not resumable).
    pub fn register(&self, host: &str, identity: &Identity) -> Option<Registered> {
        let mut map = self.lock();
        if map.len() >= MAX_STREAMS {
            return None;
        }
        let (tx, rx) = mpsc::channel(1);
        let id = random_hex(ID_BYTES);
        let ticket = Secret::new(random_hex(TICKET_BYTES));
        map.insert(
            id.clone(),
            Entry {
                ticket: ticket.clone(),
                host: host.to_string(),
                identity: identity.clone(),
                claims: tx,
            },
        );
        Some(Registered {
            id,
            ticket,
            claims: rx,
            replay_limit: bridge::resume::REPLAY_LIMIT,
        })
    }

    /// The stream ended (or its window passed): forget it.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Check a resume of stream `id` with `ticket` by `identity` for app `host`
    /// and, if it matches, rotate the ticket and hand `claim` to the stream's task.
    /// Returns the new ticket.
    pub fn claim(
        &self,
        id: &str,
        ticket: &Secret,
        host: &str,
        identity: &Identity,
        claim: Claim,
    ) -> Result<Secret, Refused> {
        let mut map = self.lock();
        let entry = map.get_mut(id).ok_or(Refused::Unknown)?;
        let same_ticket: bool = entry
            .ticket
            .expose()
            .as_bytes()
            .ct_eq(ticket.expose().as_bytes())
            .into();
        if !same_ticket || entry.host != host || entry.identity != *identity {
            return Err(Refused::Mismatch);
        }
        entry.claims.try_send(claim).map_err(|_| Refused::Busy)?;
        // Single use: the old ticket is worthless from now on.
        entry.ticket = Secret::new(random_hex(TICKET_BYTES));
        Ok(entry.ticket.clone())
    }
}

/// What a resumable stream's task waits for next.
enum Step {
    /// The bridge ended (cleanly, by a failure of the origin, or of the WebSocket).
    Ended(Result<bridge::Stats, bridge::BridgeError>),
    /// The client resumed while the old WebSocket still ran.
    Claim(Claim),
}

/// Bridge a resumable stream: when its WebSocket breaks, keep `origin` and the
/// session for `window`, waiting for the client to resume; take up each new
/// WebSocket it brings. The stream's bytes are counted by its session.
pub(super) async fn run(
    origin: &mut TcpStream,
    ws: bridge::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
    opts: bridge::Options,
    mut reg: Registered,
    window: Duration,
    peer: SocketAddr,
    ray: &str,
) -> Result<bridge::Stats, bridge::BridgeError> {
    let mut session = bridge::Session::new(reg.replay_limit);
    let mut peer_has = 0;
    let mut next = Some(ws);
    let mut broken: Option<(bridge::BridgeError, tokio::time::Instant)> = None;
    loop {
        let claim = match next.take() {
            Some(ws) => {
                let step = {
                    let run = bridge::run_resumable(origin, ws, opts, &mut session, peer_has);
                    tokio::select! {
                        r = run => Step::Ended(r),
                        Some(c) = reg.claims.recv() => Step::Claim(c),
                    }
                };
                match step {
                    Step::Ended(Err(e)) if e.is_link_failure() => {
                        info!(%peer, ray, "websocket broke: {e}; keeping the origin for {window:?} for a resume");
                        broken = Some((e, tokio::time::Instant::now() + window));
                        continue;
                    }
                    Step::Ended(result) => {
                        return result.map(|_| session.stats());
                    }
                    Step::Claim(c) => c,
                }
            }
            None => {
                let (_, until) = broken.as_ref().expect("waiting only after a break");
                match tokio::time::timeout_at(*until, reg.claims.recv()).await {
                    Ok(Some(c)) => c,
                    _ => {
                        let (e, _) = broken.take().expect("checked above");
                        info!(%peer, ray, "resume window of {window:?} passed");
                        return Err(e);
                    }
                }
            }
        };
        info!(%peer, ray, "stream resumed by its client");
        let _ = claim.reply.send(session.delivered());
        peer_has = claim.peer_has;
        match claim.upgrade.await {
            Ok(u) => {
                let ws = bridge::WebSocket::new(
                    TokioIo::new(u),
                    bridge::Role::Server,
                    bridge::EDGE_MAX_FRAME,
                );
                next = Some(ws);
            }
            Err(e) => {
                let until = tokio::time::Instant::now() + window;
                broken = Some((bridge::BridgeError::Io(std::io::Error::other(e)), until));
            }
        }
    }
}

/// Answer a resume request for `app`, already authenticated as `identity`: hand
/// the new WebSocket to the stream's task and tell the client where to start.
#[allow(clippy::too_many_arguments)]
pub(super) async fn resume(
    edge: &Edge,
    app: &super::config::App,
    host: &str,
    identity: &policy::Identity,
    value: &str,
    accept: String,
    req: &mut Request<Incoming>,
    peer: SocketAddr,
    ray: &str,
) -> Response<Body> {
    let count = |outcome: &str| {
        if let Some(m) = edge.metrics.get() {
            m.edge_resumes_total
                .with_label_values(&[&app.hostname, outcome])
                .inc();
        }
    };
    let refuse = |status, why: &str| {
        edge.activity.refused();
        count("refused");
        info!(%peer, %host, %identity, ray, "resume refused: {why}");
        refusal(status, why, ray)
    };
    let Some(request) = protocol::ResumeRequest::parse(value) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "malformed Tunnel-Resume header: expected \"1\" or \"<id> <ticket> <delivered>\"",
        );
    };
    let (reply, delivered) = tokio::sync::oneshot::channel();
    let claim = Claim {
        upgrade: hyper::upgrade::on(req),
        peer_has: request.delivered,
        reply,
    };
    let ticket =
        match edge
            .streams
            .claim(&request.id, &request.ticket, &app.hostname, identity, claim)
        {
            Ok(t) => t,
            Err(why) => {
                let status = match why {
                    Refused::Mismatch => StatusCode::FORBIDDEN,
                    _ => StatusCode::NOT_FOUND,
                };
                return refuse(status, why.reason());
            }
        };
    let Ok(delivered) = delivered.await else {
        return refuse(StatusCode::NOT_FOUND, Refused::Unknown.reason());
    };
    let offer = protocol::ResumeOffer {
        id: request.id,
        ticket,
        window: app.resume_window,
        delivered,
    };
    count("resumed");
    switching_protocols(accept, ray, true, Some(&offer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tickets_are_random_and_the_table_is_bounded() {
        let s = Streams::default();
        let who = Identity::Service("ci".into());
        let a = s.register("db.test", &who).unwrap();
        let b = s.register("db.test", &who).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.ticket, b.ticket);
        assert_eq!(a.ticket.expose().len(), 2 * TICKET_BYTES);
        for _ in 2..MAX_STREAMS {
            s.register("db.test", &who).unwrap();
        }
        assert!(s.register("db.test", &who).is_none(), "full");
        s.remove(&a.id);
        assert!(s.register("db.test", &who).is_some());
    }
}
