//! Login attempt limits: per client address and per account, each in two tiers
//! (see [`LoginLimits`]), with `governor`'s keyed GCRA limiters. A refused attempt
//! learns how long to wait (`Retry-After`); no password is checked for it.
//!
//! Memory is bounded: keys whose limiter is back to full are dropped when a store
//! grows past [`MAX_KEYS`]; if it is still full after that, new keys are refused
//! (fail closed) until old ones recover.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::config::LoginLimits;

/// Most keys (addresses, accounts) one limiter remembers.
pub const MAX_KEYS: usize = 100_000;
/// The slower tier allows this many times the attempts...
const SLOW_ATTEMPTS: u32 = 3;
/// ...per this many windows.
const SLOW_WINDOWS: u32 = 12;

/// What refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Too many attempts from this client address.
    Address,
    /// Too many attempts at this account.
    Account,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limited::Address => "too many login attempts from this address",
            Limited::Account => "too many login attempts at this account",
        })
    }
}

type Keyed<K, C> = RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A fast and a slow limiter over one kind of key.
struct Tiers<K: std::hash::Hash + Eq + Clone, C: Clock + Clone = DefaultClock> {
    fast: Keyed<K, C>,
    slow: Keyed<K, C>,
    clock: C,
}

impl<K: std::hash::Hash + Eq + Clone, C: Clock + Clone> Tiers<K, C> {
    fn new(attempts: u32, window: Duration, clock: C) -> Self {
        let quota = |attempts: u32, window: Duration| {
            let n = NonZeroU32::new(attempts.max(1)).expect("at least 1");
            let period = (window / n.get()).max(Duration::from_nanos(1));
            Quota::with_period(period)
                .expect("a non-zero period")
                .allow_burst(n)
        };
        Tiers {
            fast: RateLimiter::hashmap_with_clock(quota(attempts, window), clock.clone()),
            slow: RateLimiter::hashmap_with_clock(
                quota(
                    attempts.saturating_mul(SLOW_ATTEMPTS),
                    window.saturating_mul(SLOW_WINDOWS),
                ),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Count one attempt for `key`: `Err(wait)` when it must wait first.
    fn check(&self, key: &K) -> Result<(), Duration> {
        for limiter in [&self.fast, &self.slow] {
            if limiter.len() >= MAX_KEYS {
                limiter.retain_recent();
                if limiter.len() >= MAX_KEYS {
                    return Err(Duration::from_secs(1));
                }
            }
            if let Err(not_until) = limiter.check_key(key) {
                return Err(not_until.wait_time_from(self.clock.now()));
            }
        }
        Ok(())
    }
}

/// The edge's login limits.
pub struct Limits {
    address: Tiers<IpAddr>,
    account: Tiers<String>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    /// Limiters as configured.
    pub fn new(config: &LoginLimits) -> Self {
        Limits {
            address: Tiers::new(
                config.address_attempts,
                config.address_window,
                DefaultClock::default(),
            ),
            account: Tiers::new(
                config.account_attempts,
                config.account_window,
                DefaultClock::default(),
            ),
        }
    }

    /// Count one login attempt from `peer` at `email`. When refused, says why and
    /// how long to wait (at least a second, as `Retry-After` counts seconds).
    pub fn check(&self, peer: IpAddr, email: &str) -> Result<(), (Limited, Duration)> {
        let round = |d: Duration| Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64);
        self.address
            .check(&address_key(peer))
            .map_err(|d| (Limited::Address, round(d)))?;
        self.account
            .check(&account_key(email))
            .map_err(|d| (Limited::Account, round(d)))
    }
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 (one host usually
/// holds a whole /64). An IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

/// The key of an account: the email as the login page compares it, capped in
/// length so a key costs little memory.
pub fn account_key(email: &str) -> String {
    let email = email.trim().to_ascii_lowercase();
    email.chars().take(254).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(attempts: u32, window: Duration) -> Limits {
        Limits::new(&LoginLimits {
            address_attempts: attempts,
            address_window: window,
            account_attempts: attempts,
            account_window: window,
            concurrent_hashes: 1,
        })
    }

    #[test]
    fn a_burst_is_allowed_then_attempts_wait() {
        let l = limits(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..3 {
            assert!(l.check(a, &format!("u{i}@x.test")).is_ok());
        }
        let (why, wait) = l.check(a, "u9@x.test").unwrap_err();
        assert_eq!(why, Limited::Address);
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(20));
        // Another address is not limited by a's attempts; an account is limited
        // by attempts from every address.
        for _ in 0..3 {
            assert!(l.check(b, "alice@x.test").is_ok());
        }
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(l.check(c, "ALICE@x.test").unwrap_err().0, Limited::Account);
    }

    #[test]
    fn the_slow_tier_makes_delays_grow() {
        let clock = governor::clock::FakeRelativeClock::default();
        let l = Tiers::<u8, _>::new(2, Duration::from_secs(10), clock.clone());
        // Fast tier: 2 at once, then one per 5 s. Slow tier: 6 at once, then one
        // per 20 s. An attacker who waits exactly as told:
        let mut waits = Vec::new();
        for _ in 0..40 {
            match l.check(&1) {
                Ok(()) => {}
                Err(w) => {
                    waits.push(w);
                    clock.advance(w);
                }
            }
        }
        assert_eq!(waits[0], Duration::from_secs(5), "{waits:?}");
        assert!(
            waits.iter().any(|w| *w > Duration::from_secs(5)),
            "the slow tier asks for longer waits: {waits:?}"
        );
    }

    #[test]
    fn ipv6_counts_by_prefix() {
        let a = address_key("2001:db8::1".parse().unwrap());
        let b = address_key("2001:db8::ffff:2".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
