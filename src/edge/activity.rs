//! What the edge did since its last summary: counters the connection handlers bump,
//! and the one `info` line per interval that replaces a line per connection (at
//! `info`, a busy edge would otherwise write hundreds of bytes per connection).
//!
//! Directions are named as the client names them: `up` is client to origin,
//! `down` is origin to client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Counters since the last summary; every method is one relaxed atomic add.
#[derive(Debug, Default)]
pub struct Activity {
    opened: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Activity {
    /// A stream was bridged to its origin.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream ended cleanly after `up` bytes client to origin and `down` back.
    pub fn closed(&self, up: u64, down: u64) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.bytes(up, down);
    }

    /// A stream was cut (`up`/`down` as for [`Activity::closed`], when known).
    pub fn failed(&self, up: u64, down: u64) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.bytes(up, down);
    }

    /// A request was refused (no app, login needed, forbidden, origin down).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn bytes(&self, up: u64, down: u64) {
        self.up.fetch_add(up, Ordering::Relaxed);
        self.down.fetch_add(down, Ordering::Relaxed);
    }

    /// Take the counters (resetting them) and describe them on one line, or `None`
    /// when nothing happened.
    pub fn take_summary(&self) -> Option<String> {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let (opened, closed, failed, refused) = (
            take(&self.opened),
            take(&self.closed),
            take(&self.failed),
            take(&self.refused),
        );
        let (up, down) = (take(&self.up), take(&self.down));
        if opened + closed + failed + refused + up + down == 0 {
            return None;
        }
        Some(format!(
            "streams opened={opened} closed={closed} failed={failed} refused={refused} up={up} down={down}"
        ))
    }

    /// Log the summary every `interval` until `shutdown`, then once more for the
    /// rest (nothing when nothing happened).
    pub async fn log_every(&self, interval: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            if let Some(s) = self.take_summary() {
                tracing::info!(every = ?interval, "{s}");
            }
        }
    }

    /// Log what is left, at shutdown.
    pub fn log_rest(&self) {
        if let Some(s) = self.take_summary() {
            tracing::info!("until shutdown: {s}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_resets() {
        let a = Activity::default();
        assert_eq!(a.take_summary(), None);
        a.opened();
        a.closed(3, 5);
        a.refused();
        assert_eq!(
            a.take_summary().as_deref(),
            Some("streams opened=1 closed=1 failed=0 refused=1 up=3 down=5")
        );
        assert_eq!(a.take_summary(), None);
    }
}
