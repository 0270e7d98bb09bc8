//! Scenarios every shared store runs the same way, whatever the store: each takes a way to start
//! an elector named `identity` with a lock ttl, on that store.

use std::time::{Duration, Instant};

use super::{ClientProc, ElectorProc, holder, releaser, token};

/// Starts an elector with an identity and a ttl (seconds) on the store under test.
pub type Start<'a> = &'a dyn Fn(&str, u64) -> ElectorProc;

/// Two electors, `a` and `b`: a holder of the lock through `a`, and a waiter for it through `b`,
/// already queued.
pub struct Contest {
    pub a: ElectorProc,
    pub b: ElectorProc,
    pub first: ClientProc,
    pub first_token: u64,
    pub waiter: ClientProc,
}

pub fn contest(start: Start, lock: &str, ttl: u64) -> Contest {
    let (a, b) = (start("a", ttl), start("b", ttl));
    let first = holder(&a, lock, ttl);
    let first_token = token(&first.expect("acquired", Duration::from_secs(20)));
    let waiter = holder(&b, lock, ttl);
    std::thread::sleep(Duration::from_millis(500));
    Contest {
        a,
        b,
        first,
        first_token,
        waiter,
    }
}

/// A holder releases through one elector; a waiter through another takes over at once, far
/// below the 15 s ttl (woken by the store, not by expiry), with a higher token.
pub fn release_hands_over(start: Start, lock: &str) {
    let (a, b) = (start("a", 15), start("b", 15));
    let first = releaser(&a, lock, 2000);
    let acquired = first.expect("acquired", Duration::from_secs(20));
    let waiter = holder(&b, lock, 15);
    first.expect("released", Duration::from_secs(20));
    let released = Instant::now();
    let next = waiter.expect("acquired", Duration::from_secs(10));
    eprintln!(
        "handover between electors: {:?} after release",
        released.elapsed()
    );
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "far below the 15 s ttl: woken by the store"
    );
    assert!(token(&next) > token(&acquired));
}

/// The holder's elector is killed: the holder is told "lost" before anyone else acquires, and
/// the lock moves after about one ttl, with a higher token.
pub fn failover_after_an_elector_is_killed(start: Start, lock: &str, ttl: u64) {
    let c = contest(start, lock, ttl);
    c.a.signal("KILL");
    let killed = Instant::now();
    let lost = c.first.next("lost", Duration::from_secs(ttl + 5));
    let lost_at = killed.elapsed();
    let next = c.waiter.expect("acquired", Duration::from_secs(ttl + 10));
    let moved = killed.elapsed();
    eprintln!(
        "elector killed: holder told lost after {lost_at:?}, lock moved after {moved:?} (ttl {ttl}s)"
    );
    assert!(lost.is_some(), "the orphaned holder was told");
    assert!(lost_at < moved, "told before anyone else acquired");
    assert!(
        moved >= Duration::from_secs(ttl) / 2,
        "not before the holding could have expired: {moved:?}"
    );
    assert!(
        moved < Duration::from_secs(ttl + 5),
        "about one ttl: {moved:?}"
    );
    assert!(token(&next) > c.first_token);
}
