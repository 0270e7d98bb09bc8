//! The lock manager: everything the elector does between the HTTP edge and the store.
//!
//! - Waiters for the same lock in this elector queue first-come-first-served; only the head of the
//!   queue contends in the store, so one elector is one contender per lock (no herd).
//! - The head waits without polling: it sleeps until the store signals a change of the lock or the
//!   current holding's observed expiry, whichever comes first.
//! - The keeper (`manager/keeper.rs`) drives each granted lease's [`LeaseClock`]: renew the store every
//!   `ttl/3`, declare the lease lost at the renew deadline, release it when the holder goes silent.
//!   A sleeping lease is an entry on one agenda, not a task of its own.
//! - An [`Announce`] (the leader-only EndpointSlice, `publish.rs`) hears of every grant, and of
//!   every ending before the store's release, so what it shows is gone before the lock is free.
//! - Ended leases leave a tombstone for a while, so a late renew learns *why* (410 lost) instead of
//!   a bare "unknown lease".

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sync_protocol::LockName;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod keeper;

use keeper::{Keepers, Keeping};

use crate::lease::LeaseClock;
use crate::metrics::Metrics;
use crate::store::{Attempt, Claim, Record, Store, StoreError, StoreLease};

/// How many ended lease ids are remembered, to answer "lost" rather than "unknown".
const TOMBSTONES: usize = 4096;

/// How long a release on shutdown may take before the elector exits anyway.
const SHUTDOWN_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The lock manager. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    identity: String,
    metrics: Metrics,
    shutdown: CancellationToken,
    state: Mutex<State>,
    keepers: Keepers,
    announce: Option<Arc<dyn Announce>>,
}

/// Shows this elector's holdings outside the store: told of every grant, and of every ending
/// before the store's release.
#[async_trait::async_trait]
pub trait Announce: Send + Sync + 'static {
    /// `lease` was just granted here.
    fn granted(&self, lease: &Arc<Lease>);
    /// `lease` has ended here: take down what shows it. The manager waits for this before it
    /// releases the lock in the store.
    async fn ended(&self, lease: &Lease);
    /// What it shows and what stops it, for [`Manager::describe`].
    fn describe(&self) -> serde_json::Value;
}

#[derive(Default)]
struct State {
    queues: HashMap<LockName, VecDeque<(u64, Arc<Notify>)>>,
    leases: HashMap<String, Arc<Lease>>,
    /// Legacy-protocol leases by lock name: the old bindings have no lease id, only the name.
    legacy: HashMap<LockName, String>,
    ended: Tombstones,
    /// When a lease of each lock last ended here, for the handover-time histogram.
    freed_at: HashMap<LockName, Instant>,
    next_waiter: u64,
    /// The last store failure an acquire logged, so a failure that repeats (a missing
    /// permission, an outage) is logged once per change, not on every client's retry.
    last_acquire_failure: Option<String>,
}

/// How a lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The holder released it.
    Released,
    /// It was lost; the reason is for people.
    Lost(String),
}

/// One granted lease.
pub struct Lease {
    /// The secret that renews and releases it.
    pub id: String,
    /// The lock.
    pub name: LockName,
    /// The holder identity in the store.
    pub holder: String,
    /// The fencing token.
    pub token: u64,
    /// The lock's ttl.
    pub ttl: Duration,
    legacy: bool,
    clock: Mutex<LeaseClock>,
    store_lease: Mutex<StoreLease>,
    /// How it ended, once it has.
    ended: Mutex<Option<Ending>>,
    /// Wakes whoever waits for the ending.
    ending: Notify,
    /// Orders this lease on the keeper's agenda.
    serial: u64,
    /// Where the lease is in the keeper's hands.
    keeping: Mutex<Keeping>,
    /// The last renewal failure logged for this lease: the same failure is not logged again.
    renew_failure: Mutex<Option<String>>,
}

impl Lease {
    /// How long the lease stays valid from now, as reported to the holder.
    pub fn valid_for(&self) -> Duration {
        self.clock
            .lock()
            .expect("lease clock poisoned")
            .valid_for(Instant::now())
    }

    /// How the lease ended: waits until it has.
    pub async fn ended(&self) -> Ending {
        let notified = self.ending.notified();
        tokio::pin!(notified);
        loop {
            // Registered before the look, so an ending between the two still wakes us.
            notified.as_mut().enable();
            if let Some(ending) = self.ended.lock().expect("lease ending poisoned").clone() {
                return ending;
            }
            notified.as_mut().await;
            notified.set(self.ending.notified());
        }
    }
}

/// What an acquire asks for.
#[derive(Debug, Clone)]
pub struct AcquireOptions {
    /// The lock's ttl.
    pub ttl: Duration,
    /// How long to wait: `None` forever, zero to try once.
    pub wait: Option<Duration>,
    /// The value shown to followers.
    pub value: Option<String>,
}

/// Why an acquire did not grant the lock.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    /// Someone else holds it and the wait ran out.
    #[error("lock {} is held by another holder", .0.name)]
    Busy(Record),
    /// The elector is shutting down.
    #[error("the elector is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
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

#[derive(Default)]
struct Tombstones {
    order: VecDeque<String>,
    lost: HashMap<String, String>,
    released: HashSet<String>,
}

impl Tombstones {
    fn bury(&mut self, id: &str, ending: &Ending) {
        if self.order.len() >= TOMBSTONES
            && let Some(old) = self.order.pop_front()
        {
            self.lost.remove(&old);
            self.released.remove(&old);
        }
        self.order.push_back(id.to_owned());
        match ending {
            Ending::Released => {
                self.released.insert(id.to_owned());
            }
            Ending::Lost(reason) => {
                self.lost.insert(id.to_owned(), reason.clone());
            }
        }
    }

    fn error(&self, id: &str) -> LeaseError {
        match self.lost.get(id) {
            Some(reason) => LeaseError::Lost(reason.clone()),
            None => LeaseError::Unknown,
        }
    }
}

/// A claim being pressed in the store; unless it succeeds, the store is told to drop the
/// claimant's place in line when this is dropped (the wait ran out or its caller went away).
struct Contention {
    store: Arc<dyn Store>,
    name: LockName,
    claim: Claim,
    pressed: bool,
}

impl Drop for Contention {
    fn drop(&mut self) {
        if !self.pressed {
            return;
        }
        let (store, name, claim) = (self.store.clone(), self.name.clone(), self.claim.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { store.abandon(&name, &claim).await });
        }
    }
}

/// A waiter's place in a lock's local queue; leaving it (by drop) lets the next waiter move up.
struct Place {
    inner: Arc<Inner>,
    name: LockName,
    id: u64,
    turn: Arc<Notify>,
}

impl Place {
    fn is_head(&self) -> bool {
        let state = self.inner.state.lock().expect("manager state poisoned");
        state
            .queues
            .get(&self.name)
            .and_then(|q| q.front())
            .is_some_and(|(id, _)| *id == self.id)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.inner.metrics.waiters.dec();
        let mut state = self.inner.state.lock().expect("manager state poisoned");
        if let Some(queue) = state.queues.get_mut(&self.name) {
            let was_head = queue.front().is_some_and(|(id, _)| *id == self.id);
            queue.retain(|(id, _)| *id != self.id);
            if was_head && let Some((_, next)) = queue.front() {
                next.notify_one();
            }
            if queue.is_empty() {
                state.queues.remove(&self.name);
            }
        }
    }
}

impl Manager {
    /// A manager over `store`, writing `identity` as the holder for the legacy protocol and as the
    /// prefix of every v1 holder.
    pub fn new(store: Arc<dyn Store>, identity: String, metrics: Metrics) -> Self {
        Self::announcing(store, identity, metrics, None)
    }

    /// A manager that also tells `announce` of its grants and endings.
    pub fn announcing(
        store: Arc<dyn Store>,
        identity: String,
        metrics: Metrics,
        announce: Option<Arc<dyn Announce>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                identity,
                metrics,
                shutdown: CancellationToken::new(),
                state: Mutex::new(State::default()),
                keepers: Keepers::default(),
                announce,
            }),
        }
    }

    /// The store this manager uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
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
        let state = self.inner.state.lock().expect("manager state poisoned");
        let waiting: std::collections::BTreeMap<String, usize> = state
            .queues
            .iter()
            .map(|(name, queue)| (name.to_string(), queue.len()))
            .collect();
        let mut held: Vec<serde_json::Value> = state
            .leases
            .values()
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
            "store": self.inner.store.kind(),
            "waiting": waiting,
            "held": held,
            "store_state": self.inner.store.describe(),
            "published": self.inner.announce.as_ref().map(|a| a.describe()),
        })
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// How many acquires wait for `name` here.
    pub fn waiting(&self, name: &LockName) -> u64 {
        let state = self.inner.state.lock().expect("manager state poisoned");
        state.queues.get(name).map_or(0, |queue| queue.len() as u64)
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
        let deadline = options.wait.map(|wait| Instant::now() + wait);
        let shutdown = self.inner.shutdown.clone();
        let place = self.enqueue(&name);
        let turn = place.turn.clone();
        let store = &self.inner.store;
        let claim = Claim {
            holder,
            ttl: options.ttl,
            value: options.value,
        };
        let mut contention = Contention {
            store: store.clone(),
            name: name.clone(),
            claim: claim.clone(),
            pressed: false,
        };
        let mut waited = false;
        loop {
            if shutdown.is_cancelled() {
                return Err(AcquireError::ShuttingDown);
            }
            let notified = turn.notified();
            if !place.is_head() {
                waited = true;
                tokio::select! {
                    () = notified => continue,
                    () = sleep_until_opt(deadline) => {
                        let current = store.get(&name).await.map_err(AcquireError::Store)?;
                        return Err(AcquireError::Busy(current.unwrap_or(Record {
                            name, holding: None, token: 0,
                        })));
                    }
                    () = shutdown.cancelled() => return Err(AcquireError::ShuttingDown),
                }
            }
            let mut changes = store.subscribe(&name);
            let sent = Instant::now();
            contention.pressed = true;
            match store.try_acquire(&name, &claim).await {
                Ok(Attempt::Acquired(store_lease)) => {
                    contention.pressed = false;
                    self.inner
                        .state
                        .lock()
                        .expect("manager state poisoned")
                        .last_acquire_failure = None;
                    let (store_lease, sent) = self.confirm(&name, store_lease, sent).await?;
                    drop(place);
                    return Ok(self.install(name, store_lease, sent, legacy, waited));
                }
                Ok(Attempt::Busy { current, retry_at }) => {
                    waited = true;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(AcquireError::Busy(current));
                    }
                    tokio::select! {
                        _ = changes.changed() => {}
                        () = sleep_until_opt(retry_at) => {}
                        () = sleep_until_opt(deadline) => return Err(AcquireError::Busy(current)),
                        () = shutdown.cancelled() => return Err(AcquireError::ShuttingDown),
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    let mut state = self.inner.state.lock().expect("manager state poisoned");
                    if state.last_acquire_failure.as_ref() != Some(&message) {
                        warn!(lock = %name, error = %message, "store failed while acquiring (logged again only when the failure changes)");
                        state.last_acquire_failure = Some(message);
                    }
                    drop(state);
                    return Err(AcquireError::Store(err));
                }
            }
        }
    }

    /// Makes sure a fresh grant carries real validity: when the acquiring write took so long
    /// that less than one renew interval is left, renew once before handing it out; if that
    /// fails, give the lock back and report the store's trouble.
    async fn confirm(
        &self,
        name: &LockName,
        store_lease: StoreLease,
        sent: Instant,
    ) -> Result<(StoreLease, Instant), AcquireError> {
        let sent = store_lease.valid_since(sent);
        let clock = LeaseClock::new(store_lease.ttl, sent, Instant::now());
        if clock.is_fresh(Instant::now()) {
            return Ok((store_lease, sent));
        }
        let store = &self.inner.store;
        let resent = Instant::now();
        match timeout(clock.renew_interval(), store.renew(name, &store_lease)).await {
            Ok(Ok(renewed)) => {
                let since = renewed.valid_since(resent);
                Ok((renewed, since))
            }
            failed => {
                warn!(lock = %name, "the acquiring write took too long and could not be confirmed; giving the lock back");
                let _ = timeout(clock.renew_interval(), store.release(name, &store_lease)).await;
                Err(AcquireError::Store(match failed {
                    Ok(Err(err)) => err,
                    _ => StoreError::Unavailable {
                        store: store.kind(),
                        message: "the store answered too slowly to grant the lock safely".into(),
                    },
                }))
            }
        }
    }

    fn enqueue(&self, name: &LockName) -> Place {
        let turn = Arc::new(Notify::new());
        let mut state = self.inner.state.lock().expect("manager state poisoned");
        state.next_waiter += 1;
        let id = state.next_waiter;
        state
            .queues
            .entry(name.clone())
            .or_default()
            .push_back((id, turn.clone()));
        self.inner.metrics.waiters.inc();
        Place {
            inner: self.inner.clone(),
            name: name.clone(),
            id,
            turn,
        }
    }

    fn install(
        &self,
        name: LockName,
        store_lease: StoreLease,
        sent: Instant,
        legacy: bool,
        waited: bool,
    ) -> Arc<Lease> {
        let now = Instant::now();
        let lease = Arc::new(Lease {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.clone(),
            holder: store_lease.holder.clone(),
            token: store_lease.token,
            ttl: store_lease.ttl,
            legacy,
            clock: Mutex::new(LeaseClock::new(store_lease.ttl, sent, now)),
            store_lease: Mutex::new(store_lease),
            ended: Mutex::new(None),
            ending: Notify::new(),
            serial: self.inner.keepers.serial(),
            keeping: Mutex::new(Keeping::Busy),
            renew_failure: Mutex::new(None),
        });
        {
            let mut state = self.inner.state.lock().expect("manager state poisoned");
            state.leases.insert(lease.id.clone(), lease.clone());
            if legacy {
                state.legacy.insert(name.clone(), lease.id.clone());
            }
            if let Some(freed) = state.freed_at.remove(&name)
                && waited
            {
                self.inner
                    .metrics
                    .handover
                    .observe(now.duration_since(freed).as_secs_f64());
            }
        }
        self.inner.metrics.acquisitions.inc();
        self.inner.metrics.held.inc();
        info!(lock = %name, holder = %lease.holder, token = lease.token, "acquired");
        self.inner.keepers.start(self, lease.clone());
        if let Some(announce) = &self.inner.announce {
            announce.granted(&lease);
        }
        lease
    }

    /// The holder of `lease_id` is alive: push its silence deadline out by one ttl. Returns how
    /// long the lease stays valid.
    pub fn heartbeat(&self, lease_id: &str) -> Result<Duration, LeaseError> {
        let lease = self.lease(lease_id)?;
        let now = Instant::now();
        let mut clock = lease.clock.lock().expect("lease clock poisoned");
        clock.heard_from_holder(now);
        Ok(clock.valid_for(now))
    }

    /// The live lease with this id.
    pub fn lease(&self, lease_id: &str) -> Result<Arc<Lease>, LeaseError> {
        let state = self.inner.state.lock().expect("manager state poisoned");
        match state.leases.get(lease_id) {
            Some(lease) => Ok(lease.clone()),
            None => Err(state.ended.error(lease_id)),
        }
    }

    /// Releases a lease: it ends at once here, and the store record is given up so the next
    /// waiter anywhere can take it.
    pub async fn release(&self, lease_id: &str, why: &str) -> Result<(), LeaseError> {
        let lease = self.lease(lease_id)?;
        if !self.end(&lease, Ending::Released) {
            return Err(LeaseError::Unknown);
        }
        debug!(lock = %lease.name, why, "releasing");
        self.release_in_store(&lease).await;
        Ok(())
    }

    /// Takes down what the announcer shows for an ended lease, waiting at most one renew
    /// interval: past that the release goes ahead, and the next holder's fence takes it down.
    async fn withdraw(&self, lease: &Lease) {
        if let Some(announce) = &self.inner.announce
            && timeout(lease.ttl / 3, announce.ended(lease)).await.is_err()
        {
            warn!(lock = %lease.name, "taking down the holder's announcement timed out; releasing anyway");
        }
    }

    /// Withdraws an ended lease's announcement, then gives the lock up in the store.
    async fn release_in_store(&self, lease: &Lease) {
        self.withdraw(lease).await;
        let store_lease = lease
            .store_lease
            .lock()
            .expect("store lease poisoned")
            .clone();
        match timeout(
            lease.ttl,
            self.inner.store.release(&lease.name, &store_lease),
        )
        .await
        {
            Ok(Ok(())) | Ok(Err(StoreError::NotHolder)) => {}
            Ok(Err(err)) => {
                warn!(lock = %lease.name, error = %err, "release failed; the lock runs out after its ttl")
            }
            Err(_) => {
                warn!(lock = %lease.name, "release timed out; the lock runs out after its ttl")
            }
        }
    }

    /// Ends a lease exactly once: forgets it, tells its listeners, stops its keeper. Returns false
    /// when it had already ended.
    fn end(&self, lease: &Lease, ending: Ending) -> bool {
        {
            let mut state = self.inner.state.lock().expect("manager state poisoned");
            if state.leases.remove(&lease.id).is_none() {
                return false;
            }
            if lease.legacy && state.legacy.get(&lease.name) == Some(&lease.id) {
                state.legacy.remove(&lease.name);
            }
            state.ended.bury(&lease.id, &ending);
            state.freed_at.insert(lease.name.clone(), Instant::now());
        }
        self.inner.metrics.held.dec();
        if let Ending::Lost(reason) = &ending {
            self.inner.metrics.losses.inc();
            warn!(lock = %lease.name, holder = %lease.holder, token = lease.token, %reason, "lease lost");
            self.inner.store.lost(&lease.name, &lease.holder);
        } else {
            info!(lock = %lease.name, holder = %lease.holder, token = lease.token, "released");
        }
        self.inner.keepers.forget(lease);
        *lease.ended.lock().expect("lease ending poisoned") = Some(ending);
        lease.ending.notify_waiters();
        true
    }

    /// Legacy `PUT /locks/{name}`: renews this elector's legacy holding of `name`, or takes the
    /// lock once without waiting. The holder is the elector's identity, as in the original.
    pub async fn legacy_put(
        &self,
        name: LockName,
        ttl: Duration,
    ) -> Result<Arc<Lease>, AcquireError> {
        let existing = {
            let state = self.inner.state.lock().expect("manager state poisoned");
            state
                .legacy
                .get(&name)
                .and_then(|id| state.leases.get(id))
                .cloned()
        };
        if let Some(lease) = existing
            && self.heartbeat(&lease.id).is_ok()
        {
            return Ok(lease);
        }
        let options = AcquireOptions {
            ttl,
            wait: Some(Duration::ZERO),
            value: None,
        };
        self.acquire_as(name, self.inner.identity.clone(), options, true)
            .await
    }

    /// Begins shutdown: waiters are turned away, every held lease is released in the store and
    /// its holder told it is lost. Returns when that is done (or after a bounded wait).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let leases: Vec<_> = {
            let state = self.inner.state.lock().expect("manager state poisoned");
            state.leases.values().cloned().collect()
        };
        info!(
            held = leases.len(),
            "shutting down: releasing every held lock"
        );
        let releases = leases.into_iter().map(|lease| {
            let manager = self.clone();
            async move {
                if manager.end(&lease, Ending::Lost("the elector is shutting down".into())) {
                    manager.release_in_store(&lease).await;
                }
            }
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
