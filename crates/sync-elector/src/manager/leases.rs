//! The ledger of leases: the ones held here now (by id, and the legacy protocol's by lock name),
//! the ones that ended ([`Tombstones`]), and when each lock was last freed here. A lease ends here
//! exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sync_protocol::LockName;
use tokio::time::Instant;

use super::lease::{Cause, Ending, Lease, LeaseError};
use super::tombstones::Tombstones;
use crate::lease_id::LeaseId;
use crate::metrics::Metrics;
use crate::metrics::locks::LockSeries;

/// Every lease of this elector, live or recently ended.
pub(super) struct Leases {
    state: Mutex<Ledger>,
    metrics: Metrics,
}

#[derive(Default)]
struct Ledger {
    live: HashMap<LeaseId, Live>,
    /// Legacy-protocol leases by lock name: the old bindings have no lease id, only the name.
    legacy: HashMap<LockName, LeaseId>,
    ended: Tombstones,
    /// When a lease of each lock last ended here, for the handover-time histogram.
    freed_at: HashMap<LockName, Instant>,
}

/// A live lease and its lock's series.
struct Live {
    lease: Arc<Lease>,
    series: Arc<LockSeries>,
}

impl Leases {
    /// An empty ledger, keeping the held, acquisitions, losses and handover series in `metrics`,
    /// in total and per lock.
    pub(super) fn new(metrics: Metrics) -> Self {
        Self {
            state: Mutex::new(Ledger::default()),
            metrics,
        }
    }

    /// Records a lease just granted at `now` to an acquire that asked at `asked`. When the lock
    /// was freed here after that, the time since it was freed is a handover.
    pub(super) fn insert(&self, lease: Arc<Lease>, asked: Instant, now: Instant) {
        let series = self.metrics.locks.series(&lease.name);
        let mut state = self.ledger();
        if lease.is_legacy() {
            state.legacy.insert(lease.name.clone(), lease.id);
        }
        if let Some(freed) = state.freed_at.remove(&lease.name)
            && freed >= asked
        {
            let handover = now.duration_since(freed).as_secs_f64();
            self.metrics.handover.observe(handover);
            series.handover.set(handover);
        }
        self.metrics.acquisitions.inc();
        self.metrics.held.inc();
        series.acquisitions.inc();
        series.held.inc();
        series.valid_for(lease.valid_until().saturating_duration_since(now));
        state.live.insert(lease.id, Live { lease, series });
    }

    /// `lease`'s store holding was renewed: it is valid until its new deadline.
    pub(super) fn renewed(&self, lease: &Lease) {
        if let Some(live) = self.ledger().live.get(&lease.id) {
            live.series.valid_for(
                lease
                    .valid_until()
                    .saturating_duration_since(Instant::now()),
            );
        }
    }

    /// A store renewal of `lease` failed, or is late.
    pub(super) fn renewal_failed(&self, lease: &Lease) {
        lease.renewal_late();
        if let Some(live) = self.ledger().live.get(&lease.id) {
            live.series.renewal_failures.inc();
        }
    }

    /// The live lease `id`, or why there is none.
    pub(super) fn get(&self, id: LeaseId) -> Result<Arc<Lease>, LeaseError> {
        let state = self.ledger();
        match state.live.get(&id) {
            Some(live) => Ok(live.lease.clone()),
            None => Err(state.ended.error(id)),
        }
    }

    /// The live legacy-protocol lease of `name`, if any.
    pub(super) fn legacy(&self, name: &LockName) -> Option<Arc<Lease>> {
        let state = self.ledger();
        state
            .legacy
            .get(name)
            .and_then(|id| state.live.get(id))
            .map(|live| live.lease.clone())
    }

    /// Every live lease.
    pub(super) fn all(&self) -> Vec<Arc<Lease>> {
        self.ledger()
            .live
            .values()
            .map(|live| live.lease.clone())
            .collect()
    }

    /// Takes `lease` out of the live ones, remembering how it ended. Returns false, changing
    /// nothing, when it had already ended.
    pub(super) fn end(&self, lease: &Lease, ending: &Ending) -> bool {
        let mut state = self.ledger();
        let Some(Live { series, .. }) = state.live.remove(&lease.id) else {
            return false;
        };
        if state.legacy.get(&lease.name) == Some(&lease.id) {
            state.legacy.remove(&lease.name);
        }
        state.ended.bury(lease.id, ending);
        state.freed_at.insert(lease.name.clone(), Instant::now());
        self.metrics.held.dec();
        match counted_cause(lease, ending) {
            None => series.ended("released"),
            Some(cause) => {
                series.ended(cause.label());
                self.metrics.losses.inc();
            }
        }
        if series.held.dec() == 1 {
            series.not_held();
        }
        true
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.state.lock().expect("lease ledger poisoned")
    }
}

/// What `ending` of `lease` counts as on `/metrics`: `None` for a release, else the cause of
/// the loss. A holder that releases while the store is failing its lease has given up on it: the
/// client library counts its validity down and stops a moment before the renew deadline. That
/// is a loss to the store, not a release.
fn counted_cause(lease: &Lease, ending: &Ending) -> Option<Cause> {
    match ending {
        Ending::Released if lease.is_store_failing() => Some(Cause::StoreError),
        Ending::Released => None,
        Ending::Lost(cause, _) => Some(*cause),
    }
}

#[cfg(test)]
mod tests {
    use super::super::lease::tests::lease;
    use super::*;

    #[test]
    fn a_lease_ends_once_and_then_answers_how_it_ended() {
        let leases = Leases::new(Metrics::new());
        let granted = Arc::new(lease("a", false));
        leases.insert(granted.clone(), Instant::now(), Instant::now());
        assert!(leases.get(granted.id).is_ok());
        assert_eq!(leases.metrics.held.get(), 1);

        let lost = Ending::Lost(Cause::Taken, "another holder took the lock".into());
        assert!(leases.end(&granted, &lost));
        assert!(!leases.end(&granted, &Ending::Released), "ended twice");
        assert_eq!(
            leases.get(granted.id).err(),
            Some(LeaseError::Lost("another holder took the lock".into()))
        );
        assert_eq!(leases.metrics.held.get(), 0);
        assert_eq!(leases.metrics.losses.get(), 1);
        assert!(leases.all().is_empty());
    }

    #[test]
    fn a_released_lease_is_unknown_afterwards() {
        let leases = Leases::new(Metrics::new());
        let granted = Arc::new(lease("a", false));
        leases.insert(granted.clone(), Instant::now(), Instant::now());
        assert!(leases.end(&granted, &Ending::Released));
        assert_eq!(leases.get(granted.id).err(), Some(LeaseError::Unknown));
        assert_eq!(leases.metrics.losses.get(), 0);
    }

    #[test]
    fn a_release_while_the_store_fails_counts_as_a_store_error() {
        let leases = Leases::new(Metrics::new());
        let granted = Arc::new(lease("a", false));
        leases.insert(granted.clone(), Instant::now(), Instant::now());
        leases.renewal_failed(&granted);
        assert!(leases.end(&granted, &Ending::Released));
        assert_eq!(leases.metrics.losses.get(), 1);
        let text = leases.metrics.render();
        assert!(
            text.contains("sync_elector_lock_endings_total{lock=\"a\",cause=\"store_error\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_legacy_lease_is_found_by_name_until_it_ends() {
        let leases = Leases::new(Metrics::new());
        let name = LockName::new("a").unwrap();
        let v1 = Arc::new(lease("a", false));
        leases.insert(v1.clone(), Instant::now(), Instant::now());
        assert!(leases.legacy(&name).is_none(), "a v1 lease is not legacy");
        assert!(leases.end(&v1, &Ending::Released));

        let legacy = Arc::new(lease("a", true));
        leases.insert(legacy.clone(), Instant::now(), Instant::now());
        assert_eq!(leases.legacy(&name).map(|l| l.id), Some(legacy.id));
        assert!(leases.end(&legacy, &Ending::Lost(Cause::Expired, "ran out".into())));
        assert!(leases.legacy(&name).is_none());
    }

    #[test]
    fn a_handover_is_timed_only_for_an_acquire_that_asked_before_the_lock_was_freed() {
        let leases = Leases::new(Metrics::new());
        let first = Arc::new(lease("a", false));
        leases.insert(first.clone(), Instant::now(), Instant::now());
        leases.end(&first, &Ending::Released);
        // Freed, then asked for and taken: no handover.
        let second = Arc::new(lease("a", false));
        leases.insert(second.clone(), Instant::now(), Instant::now());
        // Asked for while the second held it, taken when it was freed: a handover.
        let asked = Instant::now();
        leases.end(&second, &Ending::Released);
        let third = Arc::new(lease("a", false));
        leases.insert(third, asked, Instant::now());
        let text = leases.metrics.render();
        assert!(
            text.contains("sync_elector_handover_seconds_count 1"),
            "{text}"
        );
    }
}
