//! The login hand-off service: sealed tokens wait here under the client's transfer
//! id until the client picks them up with a long poll on `/transfer/<id>`. One
//! pickup per login; unclaimed items expire; the store is capped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::protocol::transfer::Sealed;

/// How long one poll waits for the login before answering "pending".
pub const POLL_WAIT: Duration = Duration::from_secs(30);
/// How long a sealed hand-off waits for its pickup.
pub const TTL: Duration = Duration::from_secs(300);
/// Most hand-offs held at once.
pub const CAPACITY: usize = 10_000;

/// The store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many logins in progress; try again in a minute")]
pub struct Full;

/// What a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The hand-off, now removed.
    Ready(Sealed),
    /// Nothing yet: the client should poll again.
    Pending,
    /// Already picked up: a replay, answered at once.
    Gone,
}

#[derive(Debug, Default)]
struct Items {
    ready: HashMap<String, (Sealed, Instant)>,
    /// Ids already picked up, kept for [`TTL`] so a replay is refused at once.
    taken: HashMap<String, Instant>,
    /// The first poll seen for each id: who is waiting for this login, and since
    /// when (shown on the login page). Kept for [`TTL`], at most [`CAPACITY`].
    polls: HashMap<String, (FirstPoll, Instant)>,
}

/// Where and when a client first polled for a transfer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstPoll {
    /// The polling client's address.
    pub addr: IpAddr,
    /// When it first polled.
    pub at: SystemTime,
}

/// Sealed hand-offs by transfer id.
#[derive(Debug, Default)]
pub struct Handoffs {
    items: Mutex<Items>,
    arrived: Notify,
}

impl Handoffs {
    /// Hold `sealed` for the client whose transfer id is `id`, waking its poll.
    pub fn put(&self, id: &str, sealed: Sealed) -> Result<(), Full> {
        let mut items = self.lock();
        let now = Instant::now();
        items
            .ready
            .retain(|_, (_, at)| now.duration_since(*at) < TTL);
        items.taken.retain(|_, at| now.duration_since(*at) < TTL);
        items
            .polls
            .retain(|_, (_, at)| now.duration_since(*at) < TTL);
        if items.ready.len() >= CAPACITY && !items.ready.contains_key(id) {
            return Err(Full);
        }
        items.ready.insert(id.to_string(), (sealed, now));
        drop(items);
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Remember that `addr` polls for `id`, unless an earlier poll was seen. The
    /// record expires after [`TTL`]; when [`CAPACITY`] records are held, new ids
    /// are not recorded (the page then says no terminal was seen).
    pub fn record_poll(&self, id: &str, addr: IpAddr) {
        let mut items = self.lock();
        let now = Instant::now();
        if items.polls.len() >= CAPACITY {
            items
                .polls
                .retain(|_, (_, at)| now.duration_since(*at) < TTL);
        }
        if items.polls.len() < CAPACITY && !items.polls.contains_key(id) {
            let first = FirstPoll {
                addr,
                at: SystemTime::now(),
            };
            items.polls.insert(id.to_string(), (first, now));
        }
    }

    /// The first poll for `id` within the last [`TTL`], if any.
    pub fn first_poll(&self, id: &str) -> Option<FirstPoll> {
        let items = self.lock();
        items
            .polls
            .get(id)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(p, _)| *p)
    }

    /// Take the hand-off for `id`, waiting up to `wait` for it to arrive.
    pub async fn take(&self, id: &str, wait: Duration) -> Poll {
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before looking, so an arrival in between is seen.
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut items = self.lock();
                if items.taken.contains_key(id) {
                    return Poll::Gone;
                }
                if let Some((sealed, at)) = items.ready.remove(id) {
                    let now = Instant::now();
                    items.taken.insert(id.to_string(), now);
                    if now.duration_since(at) < TTL {
                        return Poll::Ready(sealed);
                    }
                    return Poll::Gone;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Poll::Pending;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Items> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sealed() -> Sealed {
        Sealed {
            body: "b".into(),
            service_public_key: "k".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn poll_wakes_on_arrival_and_pickup_is_once() {
        let h = Arc::new(Handoffs::default());
        let h2 = h.clone();
        let waiter = tokio::spawn(async move { h2.take("id", POLL_WAIT).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        h.put("id", sealed()).unwrap();
        assert_eq!(waiter.await.unwrap(), Poll::Ready(sealed()));
        assert_eq!(
            h.take("id", POLL_WAIT).await,
            Poll::Gone,
            "a replay is refused at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_poll_is_remembered_until_it_expires() {
        let h = Handoffs::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(h.first_poll("id"), None);
        h.record_poll("id", a);
        h.record_poll("id", "192.0.2.2".parse().unwrap());
        assert_eq!(h.first_poll("id").unwrap().addr, a, "the first poll counts");
        tokio::time::sleep(TTL + Duration::from_secs(1)).await;
        assert_eq!(h.first_poll("id"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_poll_times_out_and_items_expire() {
        let h = Handoffs::default();
        assert_eq!(h.take("nobody", POLL_WAIT).await, Poll::Pending);
        h.put("old", sealed()).unwrap();
        tokio::time::sleep(TTL + Duration::from_secs(1)).await;
        assert_eq!(h.take("old", Duration::ZERO).await, Poll::Gone);
    }
}
