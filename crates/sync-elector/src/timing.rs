//! The timing of one held lease: when to renew the store, when the holder has gone silent, and
//! when the lease must be declared lost. Pure: inputs are events and the clock, the output is the
//! next step, so the rules of the timing model are tested here without sockets.
//!
//! The rules (docs/timing.md, rule 2):
//! - the store record is renewed every `ttl / 3`;
//! - if no renewal has succeeded for `renew_deadline` (`2/3 ttl`), measured from when the last
//!   successful renewal was *sent*, the lease is lost: this happens before any other elector can
//!   see the record unchanged for a whole `ttl`;
//! - if the holder has not heartbeaten for `ttl`, it is presumed hung and the lease is released;
//! - the validity the elector reports to its holder ends at the renew deadline.

use std::time::Duration;

use tokio::time::Instant;

/// What the lease keeper should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do before this instant.
    SleepUntil(Instant),
    /// Renew the store record now.
    RenewStore,
    /// The holder has not heartbeaten for a whole ttl: release the lease.
    HolderSilent,
    /// No store renewal succeeded before the renew deadline: the lease is lost.
    DeadlinePassed,
}

/// The clocks of one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    ttl: Duration,
    /// When the last successful store write (acquire or renew) was sent.
    store_sent: Instant,
    /// When the holder's last heartbeat arrived.
    heard_from_holder: Instant,
    /// Set after a failed store renewal: when to try again.
    retry_at: Option<Instant>,
}

impl Deadlines {
    /// A lease whose store write was sent at `store_sent` and granted at `now`.
    pub fn new(ttl: Duration, store_sent: Instant, now: Instant) -> Self {
        Self {
            ttl,
            store_sent,
            heard_from_holder: now,
            retry_at: None,
        }
    }

    /// The lock's ttl.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the store record is renewed.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// How long after the last successful store write the lease is declared lost.
    pub fn renew_deadline(&self) -> Duration {
        self.ttl * 2 / 3
    }

    /// When the lease is lost unless the store is renewed first.
    pub fn valid_until(&self) -> Instant {
        self.store_sent + self.renew_deadline()
    }

    /// How long the lease stays valid from `now`, as reported to the holder.
    pub fn valid_for(&self, now: Instant) -> Duration {
        self.valid_until().saturating_duration_since(now)
    }

    /// Whether at least one renew interval of validity is left at `now`. A grant whose store
    /// write took longer than that (a slow or retried request) must be renewed before it is
    /// handed out, or its holder would be told "lost" at once.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.valid_for(now) >= self.renew_interval()
    }

    /// The holder heartbeated at `now`.
    pub fn heard_from_holder(&mut self, now: Instant) {
        self.heard_from_holder = now;
    }

    /// A store renewal sent at `sent` succeeded.
    pub fn store_renewed(&mut self, sent: Instant) {
        self.store_sent = self.store_sent.max(sent);
        self.retry_at = None;
    }

    /// A store renewal failed at `now`; try again soon, well before the deadline.
    pub fn store_failed(&mut self, now: Instant) {
        let backoff = (self.ttl / 15).clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.retry_at = Some(now + backoff);
    }

    /// What to do at `now`.
    pub fn step(&self, now: Instant) -> Step {
        let deadline = self.valid_until();
        if now >= deadline {
            return Step::DeadlinePassed;
        }
        let holder_deadline = self.heard_from_holder + self.ttl;
        if now >= holder_deadline {
            return Step::HolderSilent;
        }
        let renew_at = self
            .retry_at
            .unwrap_or(self.store_sent + self.renew_interval());
        if now >= renew_at {
            return Step::RenewStore;
        }
        Step::SleepUntil(renew_at.min(holder_deadline).min(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(15);

    fn clock() -> (Deadlines, Instant) {
        let t0 = Instant::now();
        (Deadlines::new(TTL, t0, t0), t0)
    }

    #[test]
    fn renews_every_third_of_the_ttl() {
        let (mut c, t0) = clock();
        assert_eq!(c.step(t0), Step::SleepUntil(t0 + TTL / 3));
        assert_eq!(c.step(t0 + TTL / 3), Step::RenewStore);
        c.store_renewed(t0 + TTL / 3);
        c.heard_from_holder(t0 + TTL / 3);
        assert_eq!(c.step(t0 + TTL / 3), Step::SleepUntil(t0 + TTL * 2 / 3));
    }

    #[test]
    fn reports_validity_up_to_the_renew_deadline() {
        let (mut c, t0) = clock();
        assert_eq!(c.valid_for(t0), TTL * 2 / 3);
        assert_eq!(c.valid_for(t0 + TTL), Duration::ZERO);
        c.store_renewed(t0 + Duration::from_secs(5));
        assert_eq!(c.valid_for(t0 + Duration::from_secs(5)), TTL * 2 / 3);
    }

    #[test]
    fn failed_renewals_retry_then_lose_before_the_ttl() {
        let (mut c, t0) = clock();
        let mut now = t0 + TTL / 3;
        let mut tries = 0;
        loop {
            c.heard_from_holder(now);
            match c.step(now) {
                Step::RenewStore => {
                    tries += 1;
                    c.store_failed(now);
                }
                Step::SleepUntil(t) => now = t,
                Step::DeadlinePassed => break,
                Step::HolderSilent => panic!("holder is heartbeating"),
            }
        }
        assert_eq!(now, t0 + TTL * 2 / 3, "lost exactly at the renew deadline");
        assert!(now < t0 + TTL, "before anyone else may take the lock");
        assert!(tries >= 5, "retried {tries} times");
    }

    #[test]
    fn a_silent_holder_is_released_after_one_ttl() {
        let (mut c, t0) = clock();
        let mut now = t0;
        loop {
            match c.step(now) {
                Step::RenewStore => c.store_renewed(now),
                Step::SleepUntil(t) => now = t,
                Step::HolderSilent => break,
                Step::DeadlinePassed => panic!("store is healthy"),
            }
        }
        assert_eq!(now, t0 + TTL);
    }

    #[test]
    fn a_grant_that_took_too_long_is_not_fresh() {
        let (c, t0) = clock();
        assert!(c.is_fresh(t0));
        assert!(c.is_fresh(t0 + TTL / 3));
        assert!(!c.is_fresh(t0 + TTL / 3 + Duration::from_millis(1)));
    }

    #[test]
    fn a_late_success_never_moves_validity_backwards() {
        let (mut c, t0) = clock();
        c.store_renewed(t0 + Duration::from_secs(6));
        c.store_renewed(t0 + Duration::from_secs(5));
        assert_eq!(c.valid_until(), t0 + Duration::from_secs(6) + TTL * 2 / 3);
    }
}
