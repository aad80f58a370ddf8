//! Budgets that keep floods cheap: a per-address budget of rejected
//! requests and a per-client budget of issues (each issue costs a knockd
//! reload). Over budget the knock endpoint still answers the teapot, so
//! the budget is no oracle; the log says why.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Past this many blocked addresses the expired ones are swept.
const BLOCKED_SWEEP_AT: usize = 4096;
/// The limiters forget idle keys every this many charges.
const FORGET_EVERY: u64 = 4096;
/// At most this many addresses are tracked (a few MiB). A flood from more
/// distinct addresses than that resets the budgets rather than the memory
/// growing without bound; blocked addresses are capped the same way.
const MAX_TRACKED: usize = 65_536;

/// A rate in events per minute with a burst; `None` when turned off (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Budget {
    pub fn new(per_minute: u32, burst: u32) -> Option<Budget> {
        Some(Budget {
            per_minute: NonZeroU32::new(per_minute)?,
            burst: NonZeroU32::new(burst.max(1))?,
        })
    }

    fn quota(self) -> Quota {
        Quota::per_minute(self.per_minute).allow_burst(self.burst)
    }
}

pub struct Limits {
    /// Replaced whole when it tracks too many addresses (governor has no
    /// `clear`); the quota is kept to build the new one.
    rejects: Option<(Quota, RwLock<DefaultKeyedRateLimiter<IpAddr>>)>,
    /// Addresses that ran out of rejection budget, and until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    issues: Option<DefaultKeyedRateLimiter<String>>,
    charges: AtomicU64,
    clock: DefaultClock,
}

/// IPv6 clients usually hold a whole /64, so they are budgeted per /64.
fn budget_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

impl Limits {
    pub fn new(rejects: Option<Budget>, issues: Option<Budget>) -> Limits {
        Limits {
            rejects: rejects.map(|b| (b.quota(), RwLock::new(RateLimiter::keyed(b.quota())))),
            blocked: Mutex::new(HashMap::new()),
            issues: issues.map(|b| RateLimiter::keyed(b.quota())),
            charges: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while `addr` has no rejection budget left; such a request is
    /// refused before any key is tried.
    pub fn address_blocked(&self, addr: IpAddr) -> bool {
        let key = budget_key(addr);
        let mut blocked = self.blocked();
        match blocked.get(&key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                blocked.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Counts a rejection against `addr`; true when this one used up the
    /// budget (the caller logs that once).
    pub fn charge_rejection(&self, addr: IpAddr) -> bool {
        let Some((_, limiter)) = &self.rejects else {
            return false;
        };
        self.forget_idle_keys();
        let key = budget_key(addr);
        let checked = limiter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check_key(&key);
        let Err(not_until) = checked else {
            return false;
        };
        let until = Instant::now() + not_until.wait_time_from(self.clock.now());
        let mut blocked = self.blocked();
        if blocked.len() >= BLOCKED_SWEEP_AT {
            let now = Instant::now();
            blocked.retain(|_, t| *t > now);
        }
        if blocked.len() < MAX_TRACKED {
            blocked.insert(key, until);
        }
        true
    }

    /// Addresses whose rejections are being counted.
    pub fn tracked_addresses(&self) -> usize {
        self.rejects.as_ref().map_or(0, |(_, l)| {
            l.read().unwrap_or_else(|p| p.into_inner()).len()
        })
    }

    /// Takes one issue from `client`'s budget; false when it has none left.
    pub fn allow_issue(&self, client: &str) -> bool {
        let Some(limiter) = &self.issues else {
            return true;
        };
        self.forget_idle_keys();
        limiter.check_key(&client.to_owned()).is_ok()
    }

    fn forget_idle_keys(&self) {
        if self
            .charges
            .fetch_add(1, Relaxed)
            .is_multiple_of(FORGET_EVERY)
        {
            if let Some((quota, lock)) = &self.rejects {
                let mut l = lock.write().unwrap_or_else(|p| p.into_inner());
                l.retain_recent();
                if l.len() > MAX_TRACKED {
                    log::warn!(
                        "event=budget-reset tracked={} note=\"more client addresses than limits \
                            can track\"",
                        l.len()
                    );
                    *l = RateLimiter::keyed(*quota);
                }
                l.shrink_to_fit();
            }
            if let Some(l) = &self.issues {
                l.retain_recent();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_once_its_rejection_budget_is_spent() {
        let limits = Limits::new(Budget::new(1, 3), None);
        let addr: IpAddr = "198.51.100.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(!limits.charge_rejection(addr));
        assert!(!limits.charge_rejection(addr));
        assert!(!limits.charge_rejection(addr));
        assert!(!limits.address_blocked(addr));
        assert!(limits.charge_rejection(addr));
        assert!(limits.address_blocked(addr));
        assert!(!limits.address_blocked(other));
    }

    #[test]
    fn ipv6_addresses_share_the_budget_of_their_64() {
        let limits = Limits::new(Budget::new(1, 1), None);
        assert!(!limits.charge_rejection("2001:db8::1".parse().unwrap()));
        assert!(limits.charge_rejection("2001:db8::ffff".parse().unwrap()));
        assert!(limits.address_blocked("2001:db8::2".parse().unwrap()));
        assert!(!limits.address_blocked("2001:db8:0:1::1".parse().unwrap()));
    }

    #[test]
    fn a_client_runs_out_of_issues_and_others_do_not() {
        let limits = Limits::new(None, Budget::new(1, 2));
        assert!(limits.allow_issue("laptop"));
        assert!(limits.allow_issue("laptop"));
        assert!(!limits.allow_issue("laptop"));
        assert!(limits.allow_issue("ci"));
    }

    #[test]
    fn a_flood_from_many_addresses_does_not_grow_memory_without_bound() {
        let limits = Limits::new(Budget::new(30, 20), None);
        for n in 0..(MAX_TRACKED as u32 + 3 * FORGET_EVERY as u32) {
            limits.charge_rejection(IpAddr::from(n.to_be_bytes()));
        }
        assert!(limits.tracked_addresses() <= MAX_TRACKED + FORGET_EVERY as usize);
    }

    #[test]
    fn a_zero_rate_turns_a_budget_off() {
        assert_eq!(Budget::new(0, 5), None);
        let limits = Limits::new(None, None);
        for _ in 0..1000 {
            assert!(!limits.charge_rejection("198.51.100.1".parse().unwrap()));
            assert!(limits.allow_issue("x"));
        }
    }
}
