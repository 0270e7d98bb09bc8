//! The two hooks through which something outside the store follows the locks, declared together
//! and below everything that calls or implements them. The leader-only Service (`publish.rs`)
//! implements both:
//!
//! - the Kubernetes store runs [`Takeover`] before every write that takes a lock over, so what
//!   showed the previous holder is taken down before the Lease names anyone new;
//! - the manager tells [`Announce`] of every grant, and of every ending before it releases the
//!   lock in the store, so what shows a holder here is gone before the lock is free.
//!
//! A hook sees a lease held here as a [`Held`], not as the manager's own type, so the hooks
//! depend on nothing above them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sync_protocol::LockName;
use tokio::sync::watch;

use crate::lease_id::LeaseId;
use crate::store::StoreError;

/// A lease held through this elector, as a hook sees it.
pub trait Held: Send + Sync + 'static {
    /// The lease's id, unique in this elector.
    fn id(&self) -> LeaseId;
    /// The lock.
    fn name(&self) -> &LockName;
    /// The holder identity in the store.
    fn holder(&self) -> &str;
    /// The lock's ttl.
    fn ttl(&self) -> Duration;
    /// How long the lease stays valid from now unless renewed.
    fn valid_for(&self) -> Duration;
    /// Changes on every successful renewal of the store's holding.
    fn renewals(&self) -> watch::Receiver<u64>;
}

/// Shows this elector's holdings outside the store: told of every grant, and of every ending
/// before the store's release.
#[async_trait]
pub trait Announce: Send + Sync + 'static {
    /// `lease` was just granted here.
    fn granted(&self, lease: Arc<dyn Held>);
    /// `lease` has ended here: take down what shows it. The manager waits for this before it
    /// releases the lock in the store.
    async fn ended(&self, lease: &dyn Held);
    /// What it shows and what stops it, for the elector's description of itself.
    fn describe(&self) -> serde_json::Value;
}

/// Runs before every write that takes a lock over (free, released, or observed expired), and
/// must succeed first.
#[async_trait]
pub trait Takeover: Send + Sync + 'static {
    /// `claimant` is about to take `name`, whose record names the Services in `published`.
    /// Returns the Services the record names from now on. An error fails this attempt to
    /// acquire.
    async fn before_takeover(
        &self,
        name: &LockName,
        claimant: &str,
        published: &[String],
    ) -> Result<Vec<String>, StoreError>;
}
