//! Resumable streams on the edge (README: "Resumable streams"): every stream that
//! offered resumption has an entry here while it lives, keyed by its stream id, with
//! its current single-use ticket and the identity and app it was opened for. A
//! resume request that proves the same identity and presents the ticket claims the
//! stream: its task drops the old WebSocket (broken, or not yet noticed to be) and
//! takes up the new one. The table is bounded: beyond [`MAX_STREAMS`] new streams
//! are simply not offered resumption.

use std::collections::HashMap;
use std::sync::Mutex;

use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use super::policy::Identity;
use crate::protocol::random_hex;
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
