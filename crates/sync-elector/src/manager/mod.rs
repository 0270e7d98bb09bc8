//! The lock manager: everything the elector does between the HTTP edge and the store.
//!
//! - Waiters for the same lock in this elector queue first-come-first-served; only the head of the
//!   queue contends in the store, so one elector is one contender per lock (no herd)
//!   (`queue.rs`).
//! - The head waits without polling: it sleeps until the store signals a change of the lock or the
//!   current holding's observed expiry, whichever comes first (`acquire.rs`).
//! - The keeper (`keeper.rs`) drives each granted lease's [`Deadlines`]: renew the store every
//!   `ttl/3`, declare the lease lost at the renew deadline, release it when the holder goes silent.
//!   A sleeping lease is an entry on one agenda, not a task of its own. Every lease ends through
//!   the keeper, exactly once.
//! - An [`Announce`] hook (the leader-only EndpointSlice, `publish.rs`) hears of every grant,
//!   and of every ending before the store's release, so what it shows is gone before the lock is
//!   free (`handback.rs`).
//! - Ended leases leave a tombstone for a while, so a late renew learns *why* (410 lost) instead of
//!   a bare "unknown lease" (`leases.rs`, `tombstones.rs`).
//!
//! The rooms call one way: this module uses all of them; the keeper uses the ledger, the lease
//! and the handback; those use only the lease and the store.
//!
//! [`Deadlines`]: crate::timing::Deadlines

mod acquire;
mod handback;
mod keeper;
mod lease;
mod leases;
mod queue;
mod tombstones;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sync_protocol::LockName;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use acquire::{AcquireError, AcquireOptions};
pub use lease::{Cause, Ending, Lease, LeaseError};

use acquire::{Contender, Taken, confirm};
use handback::Handback;
use keeper::Keeper;
use leases::Leases;
use queue::Queues;

use crate::hooks::Announce;
use crate::lease_id::LeaseId;
use crate::metrics::Metrics;
use crate::store::{Claim, Store};

/// How long a release on shutdown may take before the elector exits anyway.
const SHUTDOWN_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The lock manager. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    identity: String,
    metrics: Metrics,
    shutdown: CancellationToken,
    queues: Arc<Queues>,
    leases: Arc<Leases>,
    keeper: Arc<Keeper>,
    handback: Handback,
    /// The last store failure an acquire logged, so a failure that repeats (a missing
    /// permission, an outage) is logged once per change, not on every client's retry.
    last_acquire_failure: Mutex<Option<String>>,
}

impl Manager {
    /// A manager over `store`, writing `identity` as the holder for the legacy protocol and as the
    /// prefix of every v1 holder, and telling `announce`, if any, of its grants and endings.
    pub fn new(
        store: Arc<dyn Store>,
        identity: String,
        metrics: Metrics,
        announce: Option<Arc<dyn Announce>>,
    ) -> Self {
        let handback = Handback { store, announce };
        let leases = Arc::new(Leases::new(metrics.clone()));
        Self {
            inner: Arc::new(Inner {
                identity,
                shutdown: CancellationToken::new(),
                queues: Queues::new(metrics.clone()),
                keeper: Keeper::new(leases.clone(), handback.clone()),
                leases,
                handback,
                metrics,
                last_acquire_failure: Mutex::new(None),
            }),
        }
    }

    /// The store this manager uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.handback.store
    }

    /// This elector's identity.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The metrics this manager keeps.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// What this elector is doing, for a person looking at a stuck waiter: how many clients
    /// wait for each lock here, the leases it holds, and the store's own state.
    pub fn describe(&self) -> serde_json::Value {
        let mut held: Vec<serde_json::Value> = self
            .inner
            .leases
            .all()
            .iter()
            .map(|lease| {
                serde_json::json!({
                    "lock": lease.name.as_str(),
                    "holder": lease.holder,
                    "token": lease.token,
                })
            })
            .collect();
        held.sort_by(|a, b| a["lock"].as_str().cmp(&b["lock"].as_str()));
        serde_json::json!({
            "identity": self.inner.identity,
            "store": self.store().kind(),
            "waiting": self.inner.queues.lengths(),
            "held": held,
            "store_state": self.store().describe(),
            "published": self.inner.handback.announce.as_ref().map(|a| a.describe()),
        })
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// How many acquires wait for `name` here.
    pub fn waiting(&self, name: &LockName) -> u64 {
        self.inner.queues.len(name) as u64
    }

    /// A token cancelled when shutdown begins, for streams that should end then.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Waits for and takes `name`. Dropping the future leaves the queue.
    pub async fn acquire(
        &self,
        name: LockName,
        options: AcquireOptions,
    ) -> Result<Arc<Lease>, AcquireError> {
        let session = uuid::Uuid::new_v4().simple().to_string();
        let holder = format!("{}/{}", self.inner.identity, &session[..8]);
        self.acquire_as(name, holder, options, false).await
    }

    async fn acquire_as(
        &self,
        name: LockName,
        holder: String,
        options: AcquireOptions,
        legacy: bool,
    ) -> Result<Arc<Lease>, AcquireError> {
        let asked = Instant::now();
        let place = self.inner.queues.join(&name);
        let contender = Contender {
            store: self.store(),
            name: &name,
            claim: Claim {
                holder,
                ttl: options.ttl,
                value: options.value,
                asks: options.asks,
            },
            place: &place,
            deadline: options.wait.map(|wait| Instant::now() + wait),
            shutdown: &self.inner.shutdown,
        };
        let Taken { ticket, sent } = {
            let taken = contender.contend().await;
            self.note_failure(&name, &taken);
            taken?
        };
        let (ticket, sent) = confirm(self.store(), &name, ticket, sent).await?;
        drop(place);
        let now = Instant::now();
        let lease = Arc::new(Lease::new(name, ticket, sent, legacy, now));
        self.inner.leases.insert(lease.clone(), asked, now);
        info!(lock = %lease.name, holder = %lease.holder, token = lease.token, "acquired");
        self.inner.keeper.start(lease.clone());
        if let Some(announce) = &self.inner.handback.announce {
            announce.granted(lease.clone());
        }
        Ok(lease)
    }

    /// Logs a store failure of an acquire, once until the failure changes.
    fn note_failure(&self, name: &LockName, taken: &Result<Taken, AcquireError>) {
        let mut last = self
            .inner
            .last_acquire_failure
            .lock()
            .expect("acquire failure poisoned");
        match taken {
            Ok(_) => *last = None,
            Err(AcquireError::Store(err)) => {
                let message = err.to_string();
                if last.as_ref() != Some(&message) {
                    warn!(lock = %name, error = %message, "store failed while acquiring (logged again only when the failure changes)");
                    *last = Some(message);
                }
            }
            Err(_) => {}
        }
    }

    /// The holder of `lease_id` is alive: push its silence deadline out by one ttl. Returns how
    /// long the lease stays valid.
    pub fn heartbeat(&self, lease_id: LeaseId) -> Result<Duration, LeaseError> {
        Ok(self.lease(lease_id)?.heard_from_holder(Instant::now()))
    }

    /// The live lease with this id.
    pub fn lease(&self, lease_id: LeaseId) -> Result<Arc<Lease>, LeaseError> {
        self.inner.leases.get(lease_id)
    }

    /// Releases a lease: it ends at once here, and the store record is given up so the next
    /// waiter anywhere can take it.
    pub async fn release(&self, lease_id: LeaseId, why: &str) -> Result<(), LeaseError> {
        let lease = self.lease(lease_id)?;
        if !self.inner.keeper.end(&lease, Ending::Released) {
            return Err(LeaseError::Unknown);
        }
        debug!(lock = %lease.name, why, "releasing");
        self.inner.handback.release(&lease).await;
        Ok(())
    }

    /// Legacy `PUT /locks/{name}`: renews this elector's legacy holding of `name`, or takes the
    /// lock once without waiting. The holder is the elector's identity, as in the original.
    pub async fn legacy_put(
        &self,
        name: LockName,
        ttl: Duration,
    ) -> Result<Arc<Lease>, AcquireError> {
        if let Some(lease) = self.inner.leases.legacy(&name)
            && self.heartbeat(lease.id).is_ok()
        {
            return Ok(lease);
        }
        let options = AcquireOptions {
            ttl,
            wait: Some(Duration::ZERO),
            value: None,
            asks: None,
        };
        self.acquire_as(name, self.inner.identity.clone(), options, true)
            .await
    }

    /// Begins shutdown: waiters are turned away, every held lease is released in the store and
    /// its holder told it is lost. Returns when that is done (or after a bounded wait).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let leases = self.inner.leases.all();
        info!(
            held = leases.len(),
            "shutting down: releasing every held lock"
        );
        let keeper = &self.inner.keeper;
        let releases = leases.iter().map(|lease| {
            keeper.lose(
                lease,
                Cause::Shutdown,
                "the elector is shutting down".into(),
            )
        });
        if timeout(
            SHUTDOWN_RELEASE_WAIT,
            futures_util::future::join_all(releases),
        )
        .await
        .is_err()
        {
            warn!("some releases did not finish in time; those locks run out after their ttl");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn manager() -> Manager {
        Manager::new(
            Arc::new(MemoryStore::new()),
            "elector".into(),
            Metrics::new(),
            None,
        )
    }

    fn options(wait: Option<Duration>) -> AcquireOptions {
        AcquireOptions {
            ttl: Duration::from_secs(15),
            wait,
            value: None,
            asks: None,
        }
    }

    /// `task`'s result; a test that would hang fails instead.
    async fn granted(task: tokio::task::JoinHandle<Arc<Lease>>) -> Arc<Lease> {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the waiter was not granted the lock")
            .unwrap()
    }

    fn name() -> LockName {
        LockName::new("a").unwrap()
    }

    /// Starts an acquire of "a" that waits, and returns once it is in line.
    async fn waiter(manager: &Manager) -> tokio::task::JoinHandle<Arc<Lease>> {
        let before = manager.waiting(&name());
        let task = tokio::spawn({
            let manager = manager.clone();
            async move { manager.acquire(name(), options(None)).await.unwrap() }
        });
        while manager.waiting(&name()) == before {
            tokio::task::yield_now().await;
        }
        task
    }

    #[tokio::test]
    async fn waiters_are_granted_the_lock_in_the_order_they_came() {
        let manager = manager();
        let first = manager.acquire(name(), options(None)).await.unwrap();
        let second = waiter(&manager).await;
        let third = waiter(&manager).await;
        manager.release(first.id, "test").await.unwrap();
        let second = granted(second).await;
        assert_eq!(manager.waiting(&name()), 1);
        assert!(second.token > first.token);
        manager.release(second.id, "test").await.unwrap();
        let third = granted(third).await;
        assert!(third.token > second.token);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_line_to_the_next() {
        let manager = manager();
        let first = manager.acquire(name(), options(None)).await.unwrap();
        let impatient = manager
            .acquire(name(), options(Some(Duration::from_millis(1))))
            .await;
        assert!(
            matches!(&impatient, Err(AcquireError::Busy(record)) if record.holding.as_ref().is_some_and(|h| h.holder == first.holder)),
            "{:?}",
            impatient.err()
        );
        let cancelled = waiter(&manager).await;
        let patient = waiter(&manager).await;
        cancelled.abort();
        let _ = cancelled.await;
        assert_eq!(manager.waiting(&name()), 1);
        manager.release(first.id, "test").await.unwrap();
        let granted = granted(patient).await;
        assert_eq!(granted.name, name());
        assert_eq!(manager.waiting(&name()), 0);
    }

    #[tokio::test]
    async fn an_ended_lease_answers_how_it_ended() {
        let manager = manager();
        let released = manager.acquire(name(), options(None)).await.unwrap();
        manager.release(released.id, "test").await.unwrap();
        assert_eq!(released.ended().await, Ending::Released);
        assert_eq!(manager.heartbeat(released.id), Err(LeaseError::Unknown));
        assert_eq!(
            manager.release(released.id, "again").await,
            Err(LeaseError::Unknown)
        );

        let held = manager.acquire(name(), options(None)).await.unwrap();
        manager.shutdown().await;
        let lost = Ending::Lost(Cause::Shutdown, "the elector is shutting down".into());
        assert_eq!(held.ended().await, lost);
        assert_eq!(
            manager.heartbeat(held.id),
            Err(LeaseError::Lost("the elector is shutting down".into()))
        );
        assert!(matches!(
            manager.acquire(name(), options(None)).await,
            Err(AcquireError::ShuttingDown)
        ));
        assert_eq!(
            manager
                .store()
                .get(&name())
                .await
                .unwrap()
                .and_then(|r| r.holding),
            None,
            "the lock is free in the store"
        );
    }

    #[tokio::test]
    async fn a_semaphore_s_waiters_take_permits_as_they_come_free_and_a_lock_is_refused() {
        let manager = manager();
        let two = AcquireOptions {
            asks: Some(crate::store::Asks::Permit { permits: 2 }),
            ..options(None)
        };
        let first = manager.acquire(name(), two.clone()).await.unwrap();
        let second = manager.acquire(name(), two.clone()).await.unwrap();
        let third = tokio::spawn({
            let (manager, two) = (manager.clone(), two.clone());
            async move { manager.acquire(name(), two).await.unwrap() }
        });
        while manager.waiting(&name()) == 0 {
            tokio::task::yield_now().await;
        }
        let lock = manager.acquire(name(), options(Some(Duration::ZERO))).await;
        assert!(
            matches!(&lock, Err(AcquireError::Conflict { .. })),
            "a lock on a semaphore's name: {:?}",
            lock.err()
        );
        manager.release(second.id, "test").await.unwrap();
        let third = granted(third).await;
        assert_eq!(third.held, second.held, "the permit given back");
        assert!(third.token > second.token && second.token > first.token);
    }

    #[tokio::test]
    async fn a_legacy_put_renews_the_elector_s_own_holding() {
        let manager = manager();
        let ttl = Duration::from_secs(30);
        let first = manager.legacy_put(name(), ttl).await.unwrap();
        let again = manager.legacy_put(name(), ttl).await.unwrap();
        assert_eq!(first.id, again.id);
        assert_eq!(first.holder, "elector");
        let v1 = manager.acquire(name(), options(Some(Duration::ZERO))).await;
        assert!(matches!(v1, Err(AcquireError::Busy(_))));
    }
}
