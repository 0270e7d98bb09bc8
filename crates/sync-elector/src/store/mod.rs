//! Stores: where lock records live, behind one trait that every backend implements.
//!
//! The contract is small on purpose, so that Kubernetes Leases, etcd keys and the in-memory map can
//! all keep it:
//!
//! - [`Store::try_acquire`] is one compare-and-set: it takes a free (or expired) lock for a claimant
//!   or reports who holds it and when the holding runs out *as this elector observes it*
//!   (docs/timing.md, rule 1: expiry is judged on the observer's monotonic clock, never by
//!   comparing wall clocks).
//! - The fencing token strictly increases with every new holder of a name, for as long as the
//!   backend object lives.
//! - [`Store::subscribe`] signals every change of a lock, so waiting never polls: a waiter sleeps
//!   until a change or until the observed expiry, whichever comes first.
//! - A claim may ask for a semaphore's permit or a read-write lock's grant ([`Claim::asks`],
//!   docs/semaphores.md). A name has one kind at a time; a claim of another kind while the name
//!   is held answers [`Attempt::Conflict`]. The memory and Kubernetes stores decide by
//!   [`grants`]' rules, the etcd store by the order of its keys (`etcd/standing.rs`).
//!
//! [`conformance`] holds the suite every store must pass.

pub mod conformance;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod grants;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod memory;
mod signals;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sync_protocol::LockName;
use tokio::sync::watch;
use tokio::time::Instant;

#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;
pub use grants::{Asks, Conflict, Held, Kind};
#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesStore;
pub use memory::MemoryStore;
pub use signals::Signals;

/// A claim on a lock: who wants it, for how long, and what they show to followers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The holder identity written to the store (elector identity plus session).
    pub holder: String,
    /// The lock's ttl: the store keeps the holding this long after the last renewal.
    pub ttl: Duration,
    /// A short value followers read, such as the holder's address.
    pub value: Option<String>,
    /// What it asks for when the name is not a lock: a semaphore's permit, or a read-write
    /// lock's shared or exclusive grant. `None`: a lock.
    pub asks: Option<Asks>,
}

impl Claim {
    /// A claim on a lock.
    pub fn lock(holder: impl Into<String>, ttl: Duration, value: Option<String>) -> Self {
        Self {
            holder: holder.into(),
            ttl,
            value,
            asks: None,
        }
    }
}

/// The store's ticket for a holding: its proof, returned by acquire and renew, and shown to renew
/// or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The holder identity in the store.
    pub holder: String,
    /// The fencing token of this holding.
    pub token: u64,
    /// The lock's ttl.
    pub ttl: Duration,
    /// The value shown to followers.
    pub value: Option<String>,
    /// The store's version of the record, for compare-and-set (a resourceVersion, an etcd key,
    /// a counter): opaque outside the store that made it.
    pub revision: String,
    /// When the store's own clock for this holding started, if before the request that returned
    /// it: a store that keeps many holdings alive with one shared renewal (etcd's session lease)
    /// reports when that renewal was sent, and the manager counts validity from there. `None`:
    /// from when the request was sent.
    pub valid_from: Option<Instant>,
    /// What the holding is, when the name is not a lock: a permit, or a shared or exclusive
    /// grant. `None`: a lock.
    pub held: Option<Held>,
}

impl Ticket {
    /// When this holding's validity starts, for a request sent at `sent`: the earlier of the two.
    pub fn valid_since(&self, sent: Instant) -> Instant {
        self.valid_from.map_or(sent, |from| from.min(sent))
    }
}

/// A lock as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The lock's name.
    pub name: LockName,
    /// The current holding, or `None` when free, released or observed expired.
    pub holding: Option<Holding>,
    /// The token of the current or last holder; 0 when never held.
    pub token: u64,
    /// What the name is.
    pub kind: Kind,
    /// A semaphore's or read-write lock's live grants, oldest first; empty for a lock, whose
    /// holder is in `holding`.
    pub grants: Vec<Grant>,
}

impl Record {
    /// A lock's record.
    pub fn lock(name: LockName, holding: Option<Holding>, token: u64) -> Self {
        Self {
            name,
            holding,
            token,
            kind: Kind::Lock,
            grants: Vec::new(),
        }
    }
}

/// A live grant of a semaphore or read-write lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What it holds.
    pub held: Held,
    /// Its fencing token.
    pub token: u64,
    /// Its holder, value, ttl and observed expiry.
    pub holding: Holding,
}

/// A live holding of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The holder identity.
    pub holder: String,
    /// The value shown to followers.
    pub value: Option<String>,
    /// The lock's ttl.
    pub ttl: Duration,
    /// When this elector will consider the holding expired unless it sees a renewal first.
    pub expires_at: Instant,
    /// When the holding began, on the wall clock of the elector that granted it; `None` when the
    /// store does not record it (etcd: a claimant's key is written when it queues, not when it
    /// is granted, and writing it again at each grant would cost a round trip per hand-over).
    pub since: Option<SystemTime>,
}

/// The outcome of one [`Store::try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The claimant now holds the lock.
    Acquired(Ticket),
    /// Someone else holds it.
    Busy {
        /// The lock as it is now.
        current: Record,
        /// When the current holding runs out as observed here, if nobody renews it; `None` when the
        /// store itself expires holdings and says so through [`Store::subscribe`].
        retry_at: Option<Instant>,
    },
    /// The name is another kind than the claim asks for, or a semaphore of another size, and
    /// is held; nothing changed.
    Conflict(Conflict),
}

/// What can go wrong talking to a store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The holding is no longer ours: another holder took the lock, or the record is gone.
    #[error("the lock is no longer held by this holder")]
    NotHolder,
    /// The store did not answer or refused; the message says which and why.
    #[error("the {store} store is unavailable: {message}")]
    Unavailable {
        /// Which store.
        store: &'static str,
        /// What happened, for the log and the waiting client.
        message: String,
        /// The error underneath, when one caused it (a `kube::Error`, an etcd status).
        #[source]
        source: Option<Cause>,
    },
}

/// The error underneath a [`StoreError`], shared so that the error stays cheap to clone.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// `store` is unavailable, for the reason in `message`.
    pub fn unavailable(store: &'static str, message: impl Into<String>) -> Self {
        Self::Unavailable {
            store,
            message: message.into(),
            source: None,
        }
    }

    /// `store` is unavailable because of `source`; `message` says it for people.
    pub fn caused_by(
        store: &'static str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            store,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

/// Two store errors are equal when they say the same; their causes are not compared.
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::NotHolder, Self::NotHolder) => true,
            (
                Self::Unavailable { store, message, .. },
                Self::Unavailable {
                    store: other_store,
                    message: other_message,
                    ..
                },
            ) => store == other_store && message == other_message,
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// A signal that fires on every change of one lock. Read the lock again after it fires; the value
/// inside only counts changes.
pub type Changes = watch::Receiver<u64>;

/// A place where lock records live. See the module documentation for the contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and errors: `memory`, `kubernetes`, `etcd`.
    fn kind(&self) -> &'static str;

    /// Takes the lock for `claim` if it is free or observed expired; never waits.
    async fn try_acquire(&self, name: &LockName, claim: &Claim) -> Result<Attempt, StoreError>;

    /// Extends a holding by its ttl. [`StoreError::NotHolder`] when it is no longer ours.
    async fn renew(&self, name: &LockName, ticket: &Ticket) -> Result<Ticket, StoreError>;

    /// Gives a holding up, so the next claimant can take it at once. Releasing a holding that is no
    /// longer ours changes nothing and answers [`StoreError::NotHolder`].
    async fn release(&self, name: &LockName, ticket: &Ticket) -> Result<(), StoreError>;

    /// The lock's record, or `None` when the store has never seen the name (or, for a store that
    /// forgets released locks, holds nothing for it now).
    async fn get(&self, name: &LockName) -> Result<Option<Record>, StoreError>;

    /// Every record the store has, sorted by name.
    async fn list(&self) -> Result<Vec<Record>, StoreError>;

    /// A signal for a waiter on `name`: it fires at least when a change may let this store's
    /// pending claim on `name` succeed (the memory and Kubernetes stores: every change; etcd: the
    /// waiter's predecessor going away), and for changes this store makes itself. Subscribe
    /// *before* trying, so no change is missed.
    fn subscribe(&self, name: &LockName) -> Changes;

    /// A signal for every change of `name`, for followers of the holder. Defaults to
    /// [`subscribe`](Self::subscribe) for stores whose waiter signal already fires on every change.
    fn observe(&self, name: &LockName) -> Changes {
        self.subscribe(name)
    }

    /// The claimant stopped waiting for `name` (it timed out, went away, or the elector is
    /// stopping): drop whatever place in line the store keeps for it.
    async fn abandon(&self, _name: &LockName, _claim: &Claim) {}

    /// The manager ended `holder`'s holding of `name` as lost (its renewals failed, or the store
    /// said it is no longer ours), for stores that record leadership changes where people look
    /// (the Kubernetes store's Events). Must not block.
    fn lost(&self, _name: &LockName, _holder: &str) {}

    /// Whether the store can serve now (for `/readyz`).
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// What the store keeps for this elector's waiters, for a person looking at a stuck one
    /// (the elector logs it on SIGUSR1). `null` when there is nothing to show.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
