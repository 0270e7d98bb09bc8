//! The hook that shows this elector's holdings outside the store (the leader-only EndpointSlice,
//! `publish.rs`): told of every grant, and of every ending before the store's release.

use std::sync::Arc;

use super::lease::Lease;

/// Shows this elector's holdings outside the store: told of every grant, and of every ending
/// before the store's release.
#[async_trait::async_trait]
pub trait Announce: Send + Sync + 'static {
    /// `lease` was just granted here.
    fn granted(&self, lease: &Arc<Lease>);
    /// `lease` has ended here: take down what shows it. The manager waits for this before it
    /// releases the lock in the store.
    async fn ended(&self, lease: &Lease);
    /// What it shows and what stops it, for [`Manager::describe`](super::Manager::describe).
    fn describe(&self) -> serde_json::Value;
}
