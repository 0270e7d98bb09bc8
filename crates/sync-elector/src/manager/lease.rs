//! One granted lease: what its holder was given (id, lock, token, ttl), its timing, the store's
//! proof of the holding, and how it ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sync_protocol::LockName;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::hooks::Held;
use crate::lease_id::LeaseId;
pub use crate::metrics::locks::Cause;
use crate::store::Ticket;
use crate::timing::{Deadlines, Step};

/// How a lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The holder released it.
    Released,
    /// It was lost, for a cause; the reason is for people.
    Lost(Cause, String),
}

/// How the store's renewals of a lease are going: failing from the first renewal that failed or
/// went unanswered, until one succeeds.
#[derive(Debug, Default, PartialEq, Eq)]
enum Renewals {
    #[default]
    Succeeding,
    /// A renewal has gone unanswered for a sixth of the ttl.
    Late,
    /// A renewal failed with this error (logged once, not again while it repeats).
    Failed(String),
}

/// Why a lease operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No such lease here: never granted, or already released.
    #[error("no such lease: it was never granted here or was already released")]
    Unknown,
    /// The lease was lost.
    #[error("the lease was lost: {0}")]
    Lost(String),
}

/// One granted lease.
pub struct Lease {
    /// The secret that renews and releases it.
    pub id: LeaseId,
    /// The lock.
    pub name: LockName,
    /// The holder identity in the store.
    pub holder: String,
    /// The fencing token.
    pub token: u64,
    /// The lock's ttl.
    pub ttl: Duration,
    /// What it holds when the name is a semaphore (a permit) or a read-write lock (shared or
    /// exclusive); `None` for a lock.
    pub held: Option<crate::store::Held>,
    /// Whether the legacy protocol took it (its holder is the elector itself).
    legacy: bool,
    /// All that changes while it is held, under one lock.
    state: Mutex<State>,
    /// Wakes whoever waits for the ending.
    ending: Notify,
    /// Counts successful renewals.
    renewals: AtomicU64,
    /// Announces each renewal to [`Held::renewals`]' receivers; made on the first subscription
    /// (only a published lock's has one), since a watch channel's shared state costs about
    /// 350 bytes, as much as the rest of the lease.
    announced: OnceLock<watch::Sender<u64>>,
}

/// What changes in a lease while it is held.
struct State {
    clock: Deadlines,
    /// The store's proof of the holding, as its last write returned it.
    proof: Proof,
    /// How its store renewals are going.
    renewing: Renewals,
    /// How it ended, once it has.
    ended: Option<Ending>,
}

/// A [`Ticket`] but for its holder, which the store checks on every renewal, so never changes,
/// and is kept once, on the lease.
struct Proof {
    token: u64,
    ttl: Duration,
    value: Option<String>,
    revision: String,
    valid_from: Option<Instant>,
    held: Option<crate::store::Held>,
}

impl Proof {
    /// `ticket` as its holder and the rest.
    fn split(ticket: Ticket) -> (String, Self) {
        let Ticket {
            holder,
            token,
            ttl,
            value,
            revision,
            valid_from,
            held,
        } = ticket;
        let proof = Self {
            token,
            ttl,
            value,
            revision,
            valid_from,
            held,
        };
        (holder, proof)
    }
}

impl Lease {
    /// A lease on `name` for the holding `ticket`, whose validity counts from `sent`.
    pub(super) fn new(
        name: LockName,
        ticket: Ticket,
        sent: Instant,
        legacy: bool,
        now: Instant,
    ) -> Self {
        let (holder, proof) = Proof::split(ticket);
        Self {
            id: LeaseId::random(),
            name,
            holder,
            token: proof.token,
            ttl: proof.ttl,
            held: proof.held,
            legacy,
            state: Mutex::new(State {
                clock: Deadlines::new(proof.ttl, sent, now),
                proof,
                renewing: Renewals::Succeeding,
                ended: None,
            }),
            ending: Notify::new(),
            renewals: AtomicU64::new(0),
            announced: OnceLock::new(),
        }
    }

    /// Whether the legacy protocol took it.
    pub(super) fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// How long the lease stays valid from now, as reported to the holder.
    pub fn valid_for(&self) -> Duration {
        self.state().clock.valid_for(Instant::now())
    }

    /// How the lease ended: waits until it has.
    pub async fn ended(&self) -> Ending {
        let notified = self.ending.notified();
        tokio::pin!(notified);
        loop {
            // Registered before the look, so an ending between the two still wakes us.
            notified.as_mut().enable();
            if let Some(ending) = self.ending() {
                return ending;
            }
            notified.as_mut().await;
            notified.set(self.ending.notified());
        }
    }

    /// How the lease ended, if it has.
    pub fn ending(&self) -> Option<Ending> {
        self.state().ended.clone()
    }

    /// Records how the lease ended and wakes everyone waiting for it. Only the first ending
    /// counts.
    pub(super) fn finish(&self, ending: Ending) {
        self.state().ended.get_or_insert(ending);
        self.ending.notify_waiters();
    }

    /// The holder was heard from at `now`; how long the lease stays valid.
    pub(super) fn heard_from_holder(&self, now: Instant) -> Duration {
        let clock = &mut self.state().clock;
        clock.heard_from_holder(now);
        clock.valid_for(now)
    }

    /// What to do about the lease at `now`.
    pub(super) fn step(&self, now: Instant) -> Step {
        self.state().clock.step(now)
    }

    /// When the lease is lost unless the store is renewed first.
    pub(super) fn valid_until(&self) -> Instant {
        self.state().clock.valid_until()
    }

    /// The store's proof of the holding, to renew or release it.
    pub(super) fn ticket(&self) -> Ticket {
        let state = self.state();
        let proof = &state.proof;
        Ticket {
            holder: self.holder.clone(),
            token: proof.token,
            ttl: proof.ttl,
            value: proof.value.clone(),
            revision: proof.revision.clone(),
            valid_from: proof.valid_from,
            held: proof.held,
        }
    }

    /// A renewal sent at `sent` returned `renewed`. Returns whether renewals had been failing
    /// with an error (one that was logged).
    pub(super) fn renewed(&self, renewed: Ticket, sent: Instant) -> bool {
        let since = renewed.valid_since(sent);
        let mut state = self.state();
        let recovered = matches!(std::mem::take(&mut state.renewing), Renewals::Failed(_));
        state.proof = Proof::split(renewed).1;
        state.clock.store_renewed(since);
        drop(state);
        let count = self.renewals.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(announced) = self.announced.get() {
            announced.send_replace(count);
        }
        recovered
    }

    /// The store renewal under way has gone unanswered for a sixth of the ttl: until one
    /// succeeds, the store is failing this lease.
    pub(super) fn renewal_late(&self) {
        let renewing = &mut self.state().renewing;
        if *renewing == Renewals::Succeeding {
            *renewing = Renewals::Late;
        }
    }

    /// Whether the store is failing this lease: its last renewal failed or is late.
    pub(super) fn is_store_failing(&self) -> bool {
        self.state().renewing != Renewals::Succeeding
    }

    /// A renewal failed at `now` with `message`. Returns whether the failure is new (worth a
    /// log line) rather than the same as the last one.
    pub(super) fn renew_failed(&self, message: String, now: Instant) -> bool {
        let mut state = self.state();
        state.clock.store_failed(now);
        if matches!(&state.renewing, Renewals::Failed(last) if *last == message) {
            return false;
        }
        state.renewing = Renewals::Failed(message);
        true
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lease state poisoned")
    }
}

impl Held for Lease {
    fn id(&self) -> LeaseId {
        self.id
    }

    fn name(&self) -> &LockName {
        &self.name
    }

    fn holder(&self) -> &str {
        &self.holder
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn valid_for(&self) -> Duration {
        Lease::valid_for(self)
    }

    fn renewals(&self) -> watch::Receiver<u64> {
        self.announced
            .get_or_init(|| watch::Sender::new(self.renewals.load(Ordering::SeqCst)))
            .subscribe()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A lease of `name` with ttl 15 s, granted now.
    pub(in crate::manager) fn lease(name: &str, legacy: bool) -> Lease {
        let ticket = Ticket {
            holder: "elector/1".into(),
            token: 1,
            ttl: Duration::from_secs(15),
            value: None,
            revision: "1".into(),
            valid_from: None,
            held: None,
        };
        let now = Instant::now();
        Lease::new(LockName::new(name).unwrap(), ticket, now, legacy, now)
    }

    #[tokio::test]
    async fn the_first_ending_is_the_one_waiters_hear() {
        let lease = std::sync::Arc::new(lease("a", false));
        let waiter = tokio::spawn({
            let lease = lease.clone();
            async move { lease.ended().await }
        });
        tokio::task::yield_now().await;
        lease.finish(Ending::Lost(
            Cause::StoreError,
            "the store went away".into(),
        ));
        lease.finish(Ending::Released);
        assert_eq!(
            waiter.await.unwrap(),
            Ending::Lost(Cause::StoreError, "the store went away".into())
        );
        assert_eq!(
            lease.ended().await,
            Ending::Lost(Cause::StoreError, "the store went away".into())
        );
    }

    #[test]
    fn a_renewal_failure_is_worth_a_log_line_once_until_it_changes() {
        let lease = lease("a", false);
        let now = Instant::now();
        assert!(lease.renew_failed("timeout".into(), now));
        assert!(!lease.renew_failed("timeout".into(), now));
        assert!(lease.renew_failed("forbidden".into(), now));
        let renewals = Held::renewals(&lease);
        assert!(
            lease.renewed(lease.ticket(), now),
            "renewals had been failing"
        );
        assert!(!lease.renewed(lease.ticket(), now));
        assert!(lease.renew_failed("forbidden".into(), now));
        assert!(renewals.has_changed().unwrap(), "a renewal is announced");
    }
}
