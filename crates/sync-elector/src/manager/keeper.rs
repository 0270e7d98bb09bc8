//! The keeper of every held lease: one agenda of wake-up times and one task that follows it, and
//! the one place where a lease ends.
//!
//! A held lease is asleep almost all of its life: it only has work at its renew time, at its
//! holder's silence deadline and at its renew deadline ([`Deadlines::step`]). So a sleeping lease
//! is an entry in an ordered agenda, not a task of its own, and the one keeper task wakes for the
//! earliest entry. A lease with work gets a short task for it (a renewal, or its ending), which
//! puts the lease back on the agenda when the renewal is done. The keeper task runs only while
//! some lease is on the agenda.
//!
//! The keeper works on the [`Leases`] ledger, the lease's own methods and the [`Handback`]; it
//! knows nothing of the manager above it.
//!
//! [`Deadlines::step`]: crate::timing::Deadlines::step

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{info, warn};

use super::handback::Handback;
use super::lease::{Cause, Ending, Lease};
use super::leases::Leases;
use crate::lease_id::LeaseId;
use crate::store::StoreError;
use crate::timing::Step;

/// Keeps every lease of one manager.
pub(super) struct Keeper {
    agenda: Mutex<Agenda>,
    /// Wakes the keeper task when an entry earlier than its current sleep arrives.
    wake: Notify,
    leases: Arc<Leases>,
    handback: Handback,
}

#[derive(Default)]
struct Agenda {
    /// Sleeping leases by wake-up time; the lease's id makes each key unique.
    due: BTreeMap<(Instant, LeaseId), Arc<Lease>>,
    /// When each sleeping lease is due, by id, to find its entry.
    asleep: HashMap<LeaseId, Instant>,
    /// Whether the keeper task is running.
    running: bool,
}

impl Agenda {
    fn remove(&mut self, id: LeaseId) {
        if let Some(at) = self.asleep.remove(&id) {
            self.due.remove(&(at, id));
        }
    }
}

impl Keeper {
    /// A keeper for the leases of `leases`, renewing and giving back through `handback`.
    pub(super) fn new(leases: Arc<Leases>, handback: Handback) -> Arc<Self> {
        Arc::new(Self {
            agenda: Mutex::new(Agenda::default()),
            wake: Notify::new(),
            leases,
            handback,
        })
    }

    /// Starts keeping a newly granted lease: its first step is taken at once.
    pub(super) fn start(self: &Arc<Self>, lease: Arc<Lease>) {
        self.visit(lease);
    }

    /// Ends a lease here exactly once: takes it out of the ledger, tells whoever waits for its
    /// ending, and takes it off the agenda. Returns false when it had already ended. The store is
    /// not touched: [`lose`](Self::lose) and the manager's release give the lock back.
    pub(super) fn end(&self, lease: &Lease, ending: Ending) -> bool {
        if !self.leases.end(lease, &ending) {
            return false;
        }
        match &ending {
            Ending::Lost(_, reason) => {
                warn!(lock = %lease.name, holder = %lease.holder, token = lease.token, %reason, "lease lost");
                self.handback.store.lost(&lease.name, &lease.holder);
            }
            Ending::Released => {
                info!(lock = %lease.name, holder = %lease.holder, token = lease.token, "released")
            }
        }
        // Ended before it leaves the agenda, so that a renewal finishing meanwhile sees the
        // ending and does not put it back.
        lease.finish(ending);
        self.agenda().remove(lease.id);
        true
    }

    /// Ends a lease as lost and gives its holding up in the store: if the store comes back before
    /// the holding runs out, it is freed at once rather than left to expire, and a holding that
    /// is no longer ours is untouched.
    pub(super) async fn lose(&self, lease: &Lease, cause: Cause, reason: String) {
        if self.end(lease, Ending::Lost(cause, reason)) {
            self.handback.release(lease).await;
        }
    }

    fn agenda(&self) -> std::sync::MutexGuard<'_, Agenda> {
        self.agenda.lock().expect("keeper agenda poisoned")
    }

    /// Puts `lease` to sleep until `at`, unless it has ended meanwhile; starts the keeper task
    /// if none runs, or wakes it if `at` is now the earliest entry.
    fn sleep(self: &Arc<Self>, lease: Arc<Lease>, at: Instant) {
        let mut agenda = self.agenda();
        if lease.ending().is_some() {
            return;
        }
        agenda.remove(lease.id);
        let key = (at, lease.id);
        let earliest = agenda
            .due
            .first_key_value()
            .is_none_or(|(first, _)| key < *first);
        agenda.asleep.insert(lease.id, at);
        agenda.due.insert(key, lease);
        if !agenda.running {
            agenda.running = true;
            tokio::spawn(self.clone().run());
        } else if earliest {
            self.wake.notify_one();
        }
    }

    /// Takes every lease due at `now` off the agenda. Returns them and the next wake-up, or
    /// `None` and stops the task's turn when the agenda is empty.
    fn take_due(&self, now: Instant) -> (Vec<Arc<Lease>>, Option<Instant>) {
        let mut agenda = self.agenda();
        let mut due = Vec::new();
        while let Some(entry) = agenda.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let lease = entry.remove();
            agenda.asleep.remove(&lease.id);
            due.push(lease);
        }
        let next = agenda.due.first_key_value().map(|((at, _), _)| *at);
        if next.is_none() && due.is_empty() {
            agenda.running = false;
        }
        (due, next)
    }

    /// The keeper task: wakes each sleeping lease when it is due, and ends when none sleeps.
    async fn run(self: Arc<Self>) {
        loop {
            let woken = self.wake.notified();
            let (due, next) = self.take_due(Instant::now());
            let idle = due.is_empty() && next.is_none();
            for lease in due {
                self.visit(lease);
            }
            if idle {
                return;
            }
            // With no next entry, the leases just visited are all renewing or ending: look
            // again, and end the task if still none sleeps.
            if let Some(at) = next {
                tokio::select! {
                    () = sleep_until(at) => {}
                    () = woken => {}
                }
            }
        }
    }

    /// Takes a lease's next step: sleep on the agenda, or a task for a renewal or its ending.
    fn visit(self: &Arc<Self>, lease: Arc<Lease>) {
        let (cause, reason) = match lease.step(Instant::now()) {
            Step::SleepUntil(at) => return self.sleep(lease, at),
            Step::RenewStore => {
                tokio::spawn(self.clone().renew(lease));
                return;
            }
            Step::HolderSilent => (
                Cause::Expired,
                format!(
                    "the holder sent no heartbeat for its ttl of {}",
                    humantime::format_duration(lease.ttl)
                ),
            ),
            Step::DeadlinePassed => (
                Cause::StoreError,
                format!(
                    "the {} store could not be renewed before the renew deadline",
                    self.handback.store.kind()
                ),
            ),
        };
        let keeper = self.clone();
        tokio::spawn(async move { keeper.lose(&lease, cause, reason).await });
    }

    /// Renews a lease's store holding once, bounded by its renew deadline, then takes its next
    /// step. Abandoned if the lease ends meanwhile.
    async fn renew(self: Arc<Self>, lease: Arc<Lease>) {
        let current = lease.ticket();
        let deadline = lease.valid_until();
        let sent = Instant::now();
        // A store that has not answered within half a renew interval counts as a failed renewal
        // at once, while the lease is still held: a hung store shows before the lease is lost.
        let mut counted = false;
        let result = {
            let renewal = timeout_at(deadline, self.handback.store.renew(&lease.name, &current));
            tokio::pin!(renewal);
            let late = tokio::time::sleep(lease.ttl / 6);
            tokio::pin!(late);
            loop {
                tokio::select! {
                    result = &mut renewal => break result,
                    () = &mut late, if !counted => {
                        counted = true;
                        self.leases.renewal_failed(&lease);
                    }
                    _ = lease.ended() => return,
                }
            }
        };
        match result {
            Ok(Ok(renewed)) => {
                if lease.renewed(renewed, sent) {
                    info!(lock = %lease.name, "renewed again after failed renewals");
                }
                self.leases.renewed(&lease);
            }
            Ok(Err(StoreError::NotHolder)) => {
                if self.end(
                    &lease,
                    Ending::Lost(Cause::Taken, "another holder took the lock".into()),
                ) {
                    self.handback.withdraw(&lease).await;
                }
                return;
            }
            Ok(Err(err)) => {
                if !counted {
                    self.leases.renewal_failed(&lease);
                }
                let message = err.to_string();
                if lease.renew_failed(message.clone(), Instant::now()) {
                    warn!(lock = %lease.name, error = %message, "renewal failed; retrying until the renew deadline (the same failure is not logged again)");
                }
            }
            Err(_) => {
                // The deadline passed while the store was silent (counted as late above); the
                // next step says so.
            }
        }
        self.visit(lease);
    }
}
