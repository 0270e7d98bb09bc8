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

use super::grants::{self, Decision, Grants};
use super::{
    Asks, Attempt, Changes, Claim, Conflict, Holding, Kind, Record, Signals, Store, StoreError,
    Ticket,
};

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
/// let claim = Claim::lock("pod-a", Duration::from_secs(15), None);
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

/// One name's record: a lock's, or a semaphore's or read-write lock's ([`grants`]). A name
/// changes from one to the other only while nothing of it lives, and its tokens carry over.
#[derive(Debug)]
enum Entry {
    Lock {
        holding: Option<Held>,
        /// The token of the last holder; the next one gets `token + 1`.
        token: u64,
    },
    Grants(Grants),
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

impl Entry {
    /// What the name is while something of it lives at `now`; `None` when nothing does.
    fn live_kind(&self, now: Instant) -> Option<Kind> {
        match self {
            Self::Lock { holding, .. } => {
                holding.as_ref().filter(|h| h.live(now)).map(|_| Kind::Lock)
            }
            Self::Grants(grants) => grants.live_kind(now),
        }
    }

    fn token(&self) -> u64 {
        match self {
            Self::Lock { token, .. } => *token,
            Self::Grants(grants) => grants.token,
        }
    }

    fn record(&self, name: &LockName, now: Instant) -> Record {
        match self {
            Self::Lock { holding, token } => Record::lock(
                name.clone(),
                holding.as_ref().filter(|h| h.live(now)).map(|h| Holding {
                    holder: h.holder.clone(),
                    value: h.value.clone(),
                    ttl: h.ttl,
                    expires_at: h.expires_at(),
                    since: Some(h.since),
                }),
                *token,
            ),
            Self::Grants(grants) => grants.record(name, now),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock poisoned")
    }
}

impl State {
    /// The next revision.
    fn write(&mut self) -> u64 {
        self.writes += 1;
        self.writes
    }

    /// The lock's holding if it is still the ticket's, else `NotHolder`.
    fn owned<'a>(
        &'a mut self,
        name: &LockName,
        ticket: &Ticket,
    ) -> Result<&'a mut Held, StoreError> {
        match self.records.get_mut(name) {
            Some(Entry::Lock {
                holding: Some(held),
                token,
            }) if *token == ticket.token && held.holder == ticket.holder => Ok(held),
            _ => Err(StoreError::NotHolder),
        }
    }

    /// `name`'s entry for a claim of `asked`: a lock's entry for a lock, a record of grants
    /// for the others. An entry of the other shape is remade, its tokens carried over, when
    /// nothing of it lives; when something does, the name keeps its kind and the claim gets the
    /// conflict. Grants decide a conflict between two semaphore sizes or a semaphore and a
    /// read-write lock themselves.
    fn entry(
        &mut self,
        name: &LockName,
        asked: Kind,
        base: u64,
        now: Instant,
    ) -> Result<&mut Entry, Conflict> {
        let entry = self.records.entry(name.clone()).or_insert(Entry::Lock {
            holding: None,
            token: base,
        });
        let wants_lock = asked == Kind::Lock;
        if matches!(entry, Entry::Lock { .. }) != wants_lock {
            if let Some(is) = entry.live_kind(now) {
                return Err(Conflict { is, asked });
            }
            let token = entry.token();
            *entry = if wants_lock {
                Entry::Lock {
                    holding: None,
                    token,
                }
            } else {
                Entry::Grants(Grants {
                    kind: None,
                    token,
                    entries: Vec::new(),
                })
            };
        }
        Ok(entry)
    }

    /// The name's record of grants, if it is one.
    fn grants(&mut self, name: &LockName) -> Result<&mut Grants, StoreError> {
        match self.records.get_mut(name) {
            Some(Entry::Grants(grants)) => Ok(grants),
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
        held: None,
    }
}

impl MemoryStore {
    fn try_lock(&self, name: &LockName, claim: &Claim, now: Instant) -> Attempt {
        let mut state = self.state();
        let revision = state.write();
        let base = self.base;
        let entry = match state.entry(name, Kind::Lock, base, now) {
            Ok(entry) => entry,
            Err(conflict) => return Attempt::Conflict(conflict),
        };
        let Entry::Lock { holding, token } = entry else {
            unreachable!("State::entry makes a lock's entry for a lock")
        };
        if let Some(held) = holding.as_ref().filter(|h| h.live(now)) {
            let retry_at = Some(held.expires_at());
            return Attempt::Busy {
                current: entry.record(name, now),
                retry_at,
            };
        }
        let held = Held {
            holder: claim.holder.clone(),
            value: claim.value.clone(),
            ttl: claim.ttl,
            renewed_at: now,
            revision,
            since: std::time::SystemTime::now(),
        };
        *token += 1;
        let ticket = ticket_of(&held, *token);
        *holding = Some(held);
        state.signals.notify(name.as_str());
        Attempt::Acquired(ticket)
    }

    fn try_grant(&self, name: &LockName, claim: &Claim, asks: Asks, now: Instant) -> Attempt {
        let mut state = self.state();
        let revision = state.write();
        let base = self.base;
        let entry = match state.entry(name, asks.kind(), base, now) {
            Ok(entry) => entry,
            Err(conflict) => return Attempt::Conflict(conflict),
        };
        let Entry::Grants(grants) = entry else {
            unreachable!("State::entry makes a record of grants for a semaphore or rwlock")
        };
        let decision = grants.decide(
            &grants::Claim {
                holder: &claim.holder,
                asks,
                ttl: claim.ttl,
                value: claim.value.as_deref(),
            },
            now,
        );
        match decision {
            Decision::Granted(granted) => {
                state.signals.notify(name.as_str());
                Attempt::Acquired(Ticket {
                    holder: granted.holder,
                    token: granted.token,
                    ttl: granted.ttl,
                    value: granted.value,
                    revision: revision.to_string(),
                    valid_from: None,
                    held: Some(granted.held),
                })
            }
            Decision::Busy { retry_at, changed } => {
                let current = entry.record(name, now);
                if changed {
                    state.signals.notify(name.as_str());
                }
                Attempt::Busy {
                    current,
                    retry_at: Some(retry_at),
                }
            }
            Decision::Conflict(conflict) => Attempt::Conflict(conflict),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn try_acquire(&self, name: &LockName, claim: &Claim) -> Result<Attempt, StoreError> {
        let now = Instant::now();
        Ok(match claim.asks {
            None => self.try_lock(name, claim, now),
            Some(asks) => self.try_grant(name, claim, asks, now),
        })
    }

    async fn renew(&self, name: &LockName, ticket: &Ticket) -> Result<Ticket, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        let revision = state.write();
        if ticket.held.is_some() {
            state
                .grants(name)?
                .renew(&ticket.holder, ticket.token, now)
                .map_err(|_| StoreError::NotHolder)?;
            return Ok(Ticket {
                revision: revision.to_string(),
                ..ticket.clone()
            });
        }
        let held = state.owned(name, ticket)?;
        held.renewed_at = now;
        held.revision = revision;
        Ok(ticket_of(held, ticket.token))
    }

    async fn release(&self, name: &LockName, ticket: &Ticket) -> Result<(), StoreError> {
        let mut state = self.state();
        if ticket.held.is_some() {
            state
                .grants(name)?
                .release(&ticket.holder, ticket.token)
                .map_err(|_| StoreError::NotHolder)?;
        } else {
            state.owned(name, ticket)?;
            if let Some(Entry::Lock { holding, .. }) = state.records.get_mut(name) {
                *holding = None;
            }
        }
        state.write();
        state.signals.notify(name.as_str());
        Ok(())
    }

    async fn get(&self, name: &LockName) -> Result<Option<Record>, StoreError> {
        let now = Instant::now();
        let state = self.state();
        Ok(state.records.get(name).map(|entry| entry.record(name, now)))
    }

    async fn list(&self) -> Result<Vec<Record>, StoreError> {
        let now = Instant::now();
        let state = self.state();
        Ok(state
            .records
            .iter()
            .map(|(name, entry)| entry.record(name, now))
            .collect())
    }

    fn subscribe(&self, name: &LockName) -> Changes {
        self.state().signals.subscribe(name.as_str())
    }

    async fn abandon(&self, name: &LockName, claim: &Claim) {
        let mut state = self.state();
        if claim.asks.is_some()
            && let Ok(grants) = state.grants(name)
            && grants.abandon(&claim.holder)
        {
            // A writer that stops waiting lets the readers behind it in.
            state.signals.notify(name.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance!(super::MemoryStore::new());
    crate::store_conformance!(primitives: super::MemoryStore::new());
}
