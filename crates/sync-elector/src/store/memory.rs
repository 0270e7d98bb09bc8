//! The in-memory store: the embedded default on one machine and for tests.
//!
//! Records live in one map behind a mutex that is never held across an await. Expiry is judged on
//! tokio's monotonic clock, so tests can run it with paused time. Records are kept after release so
//! that fencing tokens keep increasing for the life of the process, and tokens start from the wall
//! clock (microseconds since 1970) so that they keep increasing across restarts of the elector too.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use sync_protocol::LockName;
use tokio::time::Instant;

use super::{Attempt, Changes, Claim, Holding, Record, Signals, Store, StoreError, Ticket};

/// Locks in this process's memory. Cheap to create; share it behind an `Arc`.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::time::Duration;
/// use sync_elector::store::{Attempt, Claim, MemoryStore, Store};
/// use sync_protocol::LockName;
///
/// let store = MemoryStore::new();
/// let name = LockName::new("test")?;
/// let claim = Claim { holder: "pod-a".into(), ttl: Duration::from_secs(15), value: None };
/// let Attempt::Acquired(ticket) = store.try_acquire(&name, &claim).await? else { panic!() };
/// store.release(&name, &ticket).await?;
/// let Attempt::Acquired(next) = store.try_acquire(&name, &claim).await? else { panic!() };
/// assert!(next.token > ticket.token);
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Where every lock's tokens start: this store's creation time in microseconds since 1970.
    /// A restarted elector thus hands out tokens above its previous life's, unless the wall
    /// clock stepped back or the old one granted more than a million locks a second.
    base: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            state: Mutex::default(),
            base: u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX / 2),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<LockName, Entry>,
    signals: Signals,
    /// Counts every write, to make revisions unique across names.
    writes: u64,
}

#[derive(Debug, Default)]
struct Entry {
    holding: Option<Held>,
    /// The token of the last holder; the next one gets `token + 1`.
    token: u64,
}

#[derive(Debug, Clone)]
struct Held {
    holder: String,
    value: Option<String>,
    ttl: Duration,
    renewed_at: Instant,
    revision: u64,
    /// When it was granted, by the wall clock.
    since: std::time::SystemTime,
}

impl Held {
    fn expires_at(&self) -> Instant {
        self.renewed_at + self.ttl
    }

    fn live(&self, now: Instant) -> bool {
        now < self.expires_at()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl State {
    fn record(name: &LockName, entry: &Entry, now: Instant) -> Record {
        Record {
            name: name.clone(),
            holding: entry
                .holding
                .as_ref()
                .filter(|h| h.live(now))
                .map(|h| Holding {
                    holder: h.holder.clone(),
                    value: h.value.clone(),
                    ttl: h.ttl,
                    expires_at: h.expires_at(),
                    since: Some(h.since),
                }),
            token: entry.token,
        }
    }

    /// The entry's holding if it is still the ticket's, else `NotHolder`.
    fn owned<'a>(
        &'a mut self,
        name: &LockName,
        ticket: &Ticket,
    ) -> Result<&'a mut Entry, StoreError> {
        let entry = self.records.get_mut(name).ok_or(StoreError::NotHolder)?;
        match &entry.holding {
            Some(h) if entry.token == ticket.token && h.holder == ticket.holder => Ok(entry),
            _ => Err(StoreError::NotHolder),
        }
    }
}

fn ticket_of(held: &Held, token: u64) -> Ticket {
    Ticket {
        valid_from: None,
        holder: held.holder.clone(),
        token,
        ttl: held.ttl,
        value: held.value.clone(),
        revision: held.revision.to_string(),
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn try_acquire(&self, name: &LockName, claim: &Claim) -> Result<Attempt, StoreError> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("memory store lock poisoned");
        state.writes += 1;
        let revision = state.writes;
        let base = self.base;
        let entry = state.records.entry(name.clone()).or_insert_with(|| Entry {
            holding: None,
            token: base,
        });
        if let Some(held) = entry.holding.as_ref().filter(|h| h.live(now)) {
            let retry_at = Some(held.expires_at());
            return Ok(Attempt::Busy {
                current: State::record(name, entry, now),
                retry_at,
            });
        }
        let held = Held {
            holder: claim.holder.clone(),
            value: claim.value.clone(),
            ttl: claim.ttl,
            renewed_at: now,
            revision,
            since: std::time::SystemTime::now(),
        };
        entry.token += 1;
        let ticket = ticket_of(&held, entry.token);
        entry.holding = Some(held);
        state.signals.notify(name.as_str());
        Ok(Attempt::Acquired(ticket))
    }

    async fn renew(&self, name: &LockName, ticket: &Ticket) -> Result<Ticket, StoreError> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("memory store lock poisoned");
        state.writes += 1;
        let revision = state.writes;
        let entry = state.owned(name, ticket)?;
        let held = entry.holding.as_mut().expect("owned entries hold");
        held.renewed_at = now;
        held.revision = revision;
        Ok(ticket_of(held, entry.token))
    }

    async fn release(&self, name: &LockName, ticket: &Ticket) -> Result<(), StoreError> {
        let mut state = self.state.lock().expect("memory store lock poisoned");
        state.owned(name, ticket)?.holding = None;
        state.writes += 1;
        state.signals.notify(name.as_str());
        Ok(())
    }

    async fn get(&self, name: &LockName) -> Result<Option<Record>, StoreError> {
        let now = Instant::now();
        let state = self.state.lock().expect("memory store lock poisoned");
        Ok(state
            .records
            .get(name)
            .map(|entry| State::record(name, entry, now)))
    }

    async fn list(&self) -> Result<Vec<Record>, StoreError> {
        let now = Instant::now();
        let state = self.state.lock().expect("memory store lock poisoned");
        Ok(state
            .records
            .iter()
            .map(|(name, entry)| State::record(name, entry, now))
            .collect())
    }

    fn subscribe(&self, name: &LockName) -> Changes {
        let mut state = self.state.lock().expect("memory store lock poisoned");
        state.signals.subscribe(name.as_str())
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance!(super::MemoryStore::new());
}
