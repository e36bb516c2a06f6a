//! Is the peer still there? The keepalive of one bridged connection, sans IO: the
//! pump tells it what happened and when, it answers with what to do.
//!
//! Evidence that the peer is alive is anything it sent: bytes read from the
//! WebSocket (a pong, data, a ping of its own), and also bytes it sent that *we*
//! have not consumed yet because our local side does not read (backpressure). In
//! that case the peer's pong would sit behind that data anyway, so a slow local
//! reader must not be taken for a dead peer ([`Keepalive::check`] with `holding`).
//!
//! When nothing was heard for [`Settings::interval`], a ping becomes due; if nothing
//! is heard within [`Settings::timeout`] after that, the peer is presumed dead,
//! whether or not the ping could be written (a frozen peer that stops reading also
//! blocks our writer, so the ping may never leave). While we hold the peer's data a
//! ping still goes out every `timeout`, so the peer, whose writer we block, keeps
//! hearing from us.

use std::time::Duration;

use tokio::time::Instant;

/// How a connection checks that its peer is alive (`--keepalive-interval`,
/// `--keepalive-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Send a ping after this long without hearing from the peer.
    pub interval: Duration,
    /// Presume the peer dead when nothing arrives this long after a ping was due.
    pub timeout: Duration,
}

impl Default for Settings {
    /// The values stock `cloudflared` uses: a ping after 54 s of silence, dead
    /// 60 s later; both well below Cloudflare's idle cutoff of about 270 s.
    fn default() -> Self {
        Settings {
            interval: Duration::from_secs(54),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Where the ping cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ping {
    /// Nothing outstanding: a ping becomes due `interval` after the peer was heard.
    Idle,
    /// A ping became due at this instant and waits for the writer.
    Due(Instant),
    /// The ping that became due at this instant was handed to the writer.
    Sent(Instant),
}

/// The keepalive state of one connection; its [`Settings`] are passed in (the
/// pump holds them already: every byte per connection counts).
#[derive(Debug)]
pub(super) struct Keepalive {
    /// When the peer last proved it is alive.
    heard: Instant,
    ping: Ping,
}

impl Keepalive {
    /// A connection that just heard from its peer (the handshake), at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Keepalive {
            heard: now,
            ping: Ping::Idle,
        }
    }

    /// Bytes arrived from the peer at `now`.
    pub(super) fn heard(&mut self, now: Instant) {
        self.heard = now;
        self.ping = Ping::Idle;
    }

    /// When the peer last proved it is alive.
    pub(super) fn last_heard(&self) -> Instant {
        self.heard
    }

    /// Whether a ping should be written now; the caller writes it when this says so.
    pub(super) fn take_ping(&mut self) -> bool {
        match self.ping {
            Ping::Due(t) => {
                self.ping = Ping::Sent(t);
                true
            }
            _ => false,
        }
    }

    /// The timer fired at `now`; `holding` says we hold data from the peer that our
    /// local side has not taken yet. `Ok(true)`: a ping just became due (let the
    /// writer run). `Err(silent)`: the peer is presumed dead, silent that long.
    pub(super) fn check(
        &mut self,
        s: &Settings,
        now: Instant,
        holding: bool,
    ) -> Result<bool, Duration> {
        match self.ping {
            Ping::Idle if now >= self.heard + s.interval => {
                self.ping = Ping::Due(now);
                Ok(true)
            }
            Ping::Due(t) | Ping::Sent(t) if now >= t + s.timeout => {
                if !holding {
                    return Err(now - self.heard);
                }
                // Its unconsumed data proves it alive (its pong waits behind that
                // data); ping again so that it keeps hearing from us.
                self.heard = now;
                self.ping = Ping::Due(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// When [`Keepalive::check`] has something to do next.
    pub(super) fn deadline(&self, s: &Settings) -> Instant {
        match self.ping {
            Ping::Idle => self.heard + s.interval,
            Ping::Due(t) | Ping::Sent(t) => t + s.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(20),
    };

    #[test]
    fn a_silent_peer_is_dead_interval_plus_timeout_after_it_was_last_heard() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0);
        assert_eq!(k.deadline(&S), t0 + S.interval);
        assert_eq!(k.check(&S, t0 + Duration::from_secs(9), false), Ok(false));
        assert_eq!(k.check(&S, k.deadline(&S), false), Ok(true));
        assert!(k.take_ping());
        assert!(!k.take_ping(), "one ping per cycle");
        assert_eq!(k.deadline(&S), t0 + S.interval + S.timeout);
        assert_eq!(
            k.check(&S, k.deadline(&S), false),
            Err(S.interval + S.timeout)
        );
    }

    #[test]
    fn a_ping_the_writer_cannot_send_still_times_out() {
        // A frozen peer stops reading: our writer blocks and the ping never leaves.
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0);
        assert_eq!(k.check(&S, t0 + S.interval, false), Ok(true));
        let dead = k.deadline(&S);
        assert_eq!(dead, t0 + S.interval + S.timeout);
        assert!(k.check(&S, dead, false).is_err());
    }

    #[test]
    fn hearing_anything_resets_the_cycle() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0);
        k.check(&S, t0 + S.interval, false).unwrap();
        assert!(k.take_ping());
        let t1 = t0 + Duration::from_secs(15);
        k.heard(t1);
        assert!(!k.take_ping());
        assert_eq!(k.deadline(&S), t1 + S.interval);
        assert_eq!(k.check(&S, t1 + Duration::from_secs(9), false), Ok(false));
        // The old ping's deadline has no meaning any more.
        assert_eq!(k.check(&S, t1 + S.interval, false), Ok(true));
    }

    #[test]
    fn held_peer_data_is_proof_of_life_and_pings_keep_going_out() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0);
        k.check(&S, t0 + S.interval, true).unwrap();
        assert!(k.take_ping());
        let mut now = k.deadline(&S);
        for _ in 0..100 {
            assert_eq!(k.check(&S, now, true), Ok(true), "never dead while holding");
            assert!(k.take_ping(), "a ping every timeout while holding");
            assert_eq!(k.deadline(&S), now + S.timeout);
            now = k.deadline(&S);
        }
        // Once the data is taken, silence counts again from the last proof.
        assert!(k.check(&S, now, false).is_err());
    }
}
