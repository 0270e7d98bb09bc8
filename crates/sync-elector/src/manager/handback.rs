//! Giving an ended lease's lock back: first take down what the [`Announce`] hook shows for it,
//! then release the holding in the store, so that what it showed is gone before the lock is free.

use std::sync::Arc;

use tokio::time::timeout;
use tracing::warn;

use super::lease::Lease;
use crate::hooks::Announce;
use crate::store::{Store, StoreError};

/// The store, and what shows its holdings elsewhere, for giving locks back.
#[derive(Clone)]
pub(super) struct Handback {
    pub(super) store: Arc<dyn Store>,
    pub(super) announce: Option<Arc<dyn Announce>>,
}

impl Handback {
    /// Takes down what the announcer shows for an ended lease, waiting at most one renew
    /// interval: past that the release goes ahead, and the next holder's fence takes it down.
    pub(super) async fn withdraw(&self, lease: &Lease) {
        if let Some(announce) = &self.announce
            && timeout(lease.ttl / 3, announce.ended(lease)).await.is_err()
        {
            warn!(lock = %lease.name, "taking down the holder's announcement timed out; releasing anyway");
        }
    }

    /// Withdraws an ended lease's announcement, then gives the lock up in the store.
    pub(super) async fn release(&self, lease: &Lease) {
        self.withdraw(lease).await;
        let held = lease.ticket();
        match timeout(lease.ttl, self.store.release(&lease.name, &held)).await {
            Ok(Ok(())) | Ok(Err(StoreError::NotHolder)) => {}
            Ok(Err(err)) => {
                warn!(lock = %lease.name, error = %err, "release failed; the lock runs out after its ttl")
            }
            Err(_) => {
                warn!(lock = %lease.name, "release timed out; the lock runs out after its ttl")
            }
        }
    }
}
