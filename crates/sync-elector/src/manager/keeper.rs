//! The keeper of every held lease: one agenda of wake-up times and one task that follows it.
//!
//! A held lease is asleep almost all of its life: it only has work at its renew time, at its
//! holder's silence deadline and at its renew deadline ([`LeaseClock::step`]). So a sleeping lease
//! is an entry in an ordered agenda, not a task of its own, and the one keeper task wakes for the
//! earliest entry. A lease with work gets a short task for it (a renewal, or its ending), which
//! puts the lease back on the agenda when the renewal is done. The keeper task runs only while
//! some lease is on the agenda.
//!
//! Locks are taken in one order: the agenda, then a lease's [`Keeping`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::warn;

use super::{Ending, Lease, Manager};
use crate::lease::Step;
use crate::store::StoreError;

/// Where a lease is in the keeper's hands. Guarded by the lease's own mutex, always taken with
/// the agenda's lock held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keeping {
    /// Being looked at, or renewing: not on the agenda.
    Busy,
    /// On the agenda, to be woken at this instant.
    Asleep(Instant),
    /// The lease has ended; it is never put on the agenda again.
    Done,
}

/// The agenda of every sleeping lease, shared by the manager and the keeper task.
#[derive(Default)]
pub(super) struct Keepers {
    agenda: Mutex<Agenda>,
    /// The last serial handed to a lease.
    serials: AtomicU64,
    /// Wakes the keeper task when an entry earlier than its current sleep arrives.
    wake: Notify,
}

#[derive(Default)]
struct Agenda {
    /// Sleeping leases by wake-up time; the lease's serial makes each key unique.
    due: BTreeMap<(Instant, u64), Arc<Lease>>,
    /// Whether the keeper task is running.
    running: bool,
}

impl Keepers {
    /// A serial for a new lease, unique in this manager: it orders leases due at the same instant.
    pub(super) fn serial(&self) -> u64 {
        self.serials.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts keeping a newly granted lease: its first step is taken at once.
    pub(super) fn start(&self, manager: &Manager, lease: Arc<Lease>) {
        visit(manager, lease);
    }

    /// Takes an ended lease off the agenda for good.
    pub(super) fn forget(&self, lease: &Lease) {
        let mut agenda = self.agenda.lock().expect("keeper agenda poisoned");
        let mut keeping = lease.keeping.lock().expect("lease keeping poisoned");
        if let Keeping::Asleep(at) = *keeping {
            agenda.due.remove(&(at, lease.serial));
        }
        *keeping = Keeping::Done;
    }

    /// Puts `lease` to sleep until `at`, unless it has ended meanwhile; starts the keeper task
    /// if none runs, or wakes it if `at` is now the earliest entry.
    fn sleep(&self, manager: &Manager, lease: Arc<Lease>, at: Instant) {
        let mut agenda = self.agenda.lock().expect("keeper agenda poisoned");
        {
            let mut keeping = lease.keeping.lock().expect("lease keeping poisoned");
            match *keeping {
                Keeping::Done => return,
                Keeping::Asleep(old) => {
                    agenda.due.remove(&(old, lease.serial));
                }
                Keeping::Busy => {}
            }
            *keeping = Keeping::Asleep(at);
        }
        let key = (at, lease.serial);
        let earliest = agenda
            .due
            .first_key_value()
            .is_none_or(|(first, _)| key < *first);
        agenda.due.insert(key, lease);
        if !agenda.running {
            agenda.running = true;
            tokio::spawn(run(manager.clone()));
        } else if earliest {
            self.wake.notify_one();
        }
    }

    /// Takes every lease due at `now` off the agenda. Returns them and the next wake-up, or
    /// `None` and stops the task's turn when the agenda is empty.
    fn take_due(&self, now: Instant) -> (Vec<Arc<Lease>>, Option<Instant>) {
        let mut agenda = self.agenda.lock().expect("keeper agenda poisoned");
        let mut due = Vec::new();
        while let Some(entry) = agenda.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let lease = entry.remove();
            *lease.keeping.lock().expect("lease keeping poisoned") = Keeping::Busy;
            due.push(lease);
        }
        let next = agenda.due.first_key_value().map(|((at, _), _)| *at);
        if next.is_none() && due.is_empty() {
            agenda.running = false;
        }
        (due, next)
    }
}

/// The keeper task: wakes each sleeping lease when it is due, and ends when none sleeps.
async fn run(manager: Manager) {
    let keepers = &manager.inner.keepers;
    loop {
        let woken = keepers.wake.notified();
        let (due, next) = keepers.take_due(Instant::now());
        let idle = due.is_empty() && next.is_none();
        for lease in due {
            visit(&manager, lease);
        }
        if idle {
            return;
        }
        // With no next entry, the leases just visited are all renewing or ending: look again,
        // and end the task if still none sleeps.
        if let Some(at) = next {
            tokio::select! {
                () = sleep_until(at) => {}
                () = woken => {}
            }
        }
    }
}

/// Takes a lease's next step: sleep on the agenda, or a task for a renewal or its ending.
fn visit(manager: &Manager, lease: Arc<Lease>) {
    let step = lease
        .clock
        .lock()
        .expect("lease clock poisoned")
        .step(Instant::now());
    match step {
        Step::SleepUntil(at) => manager.inner.keepers.sleep(manager, lease, at),
        Step::RenewStore => {
            tokio::spawn(renew(manager.clone(), lease));
        }
        Step::HolderSilent => {
            let reason = format!(
                "the holder sent no heartbeat for its ttl of {}",
                humantime::format_duration(lease.ttl)
            );
            tokio::spawn(lose(manager.clone(), lease, reason));
        }
        Step::DeadlinePassed => {
            let reason = format!(
                "the {} store could not be renewed before the renew deadline",
                manager.inner.store.kind()
            );
            tokio::spawn(lose(manager.clone(), lease, reason));
        }
    }
}

/// Ends a lease as lost and gives its holding up in the store: if the store comes back before
/// the holding runs out, it is freed at once rather than left to expire, and a holding that is no
/// longer ours is untouched.
async fn lose(manager: Manager, lease: Arc<Lease>, reason: String) {
    if manager.end(&lease, Ending::Lost(reason)) {
        manager.release_in_store(&lease).await;
    }
}

/// Renews a lease's store holding once, bounded by its renew deadline, then takes its next step.
/// Abandoned if the lease ends meanwhile.
async fn renew(manager: Manager, lease: Arc<Lease>) {
    let store = &manager.inner.store;
    let current = lease
        .store_lease
        .lock()
        .expect("store lease poisoned")
        .clone();
    let deadline = lease
        .clock
        .lock()
        .expect("lease clock poisoned")
        .valid_until();
    let sent = Instant::now();
    let result = tokio::select! {
        result = timeout_at(deadline, store.renew(&lease.name, &current)) => result,
        _ = lease.ended() => return,
    };
    match result {
        Ok(Ok(renewed)) => {
            *lease.renew_failure.lock().expect("lease failure poisoned") = None;
            let since = renewed.valid_since(sent);
            *lease.store_lease.lock().expect("store lease poisoned") = renewed;
            lease
                .clock
                .lock()
                .expect("lease clock poisoned")
                .store_renewed(since);
        }
        Ok(Err(StoreError::NotHolder)) => {
            if manager.end(&lease, Ending::Lost("another holder took the lock".into())) {
                manager.withdraw(&lease).await;
            }
            return;
        }
        Ok(Err(err)) => {
            let message = err.to_string();
            let mut last = lease.renew_failure.lock().expect("lease failure poisoned");
            if last.as_ref() != Some(&message) {
                warn!(lock = %lease.name, error = %message, "renewal failed; retrying until the renew deadline (the same failure is not logged again)");
                *last = Some(message);
            }
            drop(last);
            lease
                .clock
                .lock()
                .expect("lease clock poisoned")
                .store_failed(Instant::now());
        }
        Err(_) => {
            // The deadline passed while the store was silent; the next step says so.
        }
    }
    visit(&manager, lease);
}
