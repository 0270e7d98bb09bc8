//! Taking a lock: wait for the head of the local line, contend in the store without polling, and
//! make sure a fresh grant carries real validity before it is handed out.

use std::sync::Arc;
use std::time::Duration;

use sync_protocol::LockName;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::queue::Place;
use crate::store::{Asks, Attempt, Claim, Conflict, Kind, Record, Store, StoreError, Ticket};
use crate::timing::Deadlines;

/// What an acquire asks for.
#[derive(Debug, Clone)]
pub struct AcquireOptions {
    /// The lock's ttl.
    pub ttl: Duration,
    /// How long to wait: `None` forever, zero to try once.
    pub wait: Option<Duration>,
    /// The value shown to followers.
    pub value: Option<String>,
    /// A semaphore's permit or a read-write lock's grant; `None`: a lock.
    pub asks: Option<Asks>,
}

/// Why an acquire did not grant the lock.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    /// Someone else holds it and the wait ran out.
    #[error("lock {} is held by another holder", .0.name)]
    Busy(Record),
    /// The name is held as another kind than asked for; nothing changed.
    #[error("{name} is held as another kind: {conflict}")]
    Conflict {
        /// The name.
        name: LockName,
        /// What it is and what was asked.
        conflict: Conflict,
    },
    /// The elector is shutting down.
    #[error("the elector is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A holding just taken in the store.
pub(super) struct Taken {
    /// The store's proof of it.
    pub ticket: Ticket,
    /// When its validity starts.
    pub sent: Instant,
}

/// One acquire of `name` for `claim`, from its place in the local line.
pub(super) struct Contender<'a> {
    pub store: &'a Arc<dyn Store>,
    pub name: &'a LockName,
    pub claim: Claim,
    /// Its place in the line, which the caller keeps until the grant is installed, so the next
    /// waiter does not contend for a lock that is being handed out.
    pub place: &'a Place,
    /// When to give up; `None`: never.
    pub deadline: Option<Instant>,
    pub shutdown: &'a CancellationToken,
}

impl Contender<'_> {
    /// Waits for the head of the line, then contends in the store until the lock is taken, the
    /// deadline passes, or the elector shuts down.
    pub(super) async fn contend(self) -> Result<Taken, AcquireError> {
        let Contender {
            store,
            name,
            claim,
            place,
            deadline,
            shutdown,
        } = self;
        let mut contention = Contention {
            store: store.clone(),
            name: name.clone(),
            claim: claim.clone(),
            pressed: false,
        };
        loop {
            if shutdown.is_cancelled() {
                return Err(AcquireError::ShuttingDown);
            }
            let notified = place.turn().notified();
            if !place.is_head() {
                tokio::select! {
                    () = notified => continue,
                    () = sleep_until_opt(deadline) => {
                        let current = store.get(name).await.map_err(AcquireError::Store)?;
                        return Err(refused(name, &claim, current));
                    }
                    () = shutdown.cancelled() => return Err(AcquireError::ShuttingDown),
                }
            }
            let mut changes = store.subscribe(name);
            let sent = Instant::now();
            contention.pressed = true;
            match store.try_acquire(name, &claim).await {
                Ok(Attempt::Acquired(ticket)) => {
                    contention.pressed = false;
                    return Ok(Taken { ticket, sent });
                }
                Ok(Attempt::Busy { current, retry_at }) => {
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
                Ok(Attempt::Conflict(conflict)) => {
                    return Err(AcquireError::Conflict {
                        name: name.clone(),
                        conflict,
                    });
                }
                Err(err) => return Err(AcquireError::Store(err)),
            }
        }
    }
}

/// Why a claim that never reached the head of its line ran out of time, from the name's record:
/// a conflict if the name is held as another kind, else busy.
fn refused(name: &LockName, claim: &Claim, current: Option<Record>) -> AcquireError {
    let current = current.unwrap_or_else(|| Record::lock(name.clone(), None, 0));
    let asked = claim.asks.map_or(Kind::Lock, Asks::kind);
    let held = current.holding.is_some() || !current.grants.is_empty();
    if held && current.kind != asked {
        return AcquireError::Conflict {
            name: name.clone(),
            conflict: Conflict {
                is: current.kind,
                asked,
            },
        };
    }
    AcquireError::Busy(current)
}

/// Makes sure a fresh grant carries real validity: when the acquiring write took so long that
/// less than one renew interval is left, renew once before handing it out; if that fails, give
/// the lock back and report the store's trouble. Returns the holding and when its validity
/// starts.
pub(super) async fn confirm(
    store: &Arc<dyn Store>,
    name: &LockName,
    ticket: Ticket,
    sent: Instant,
) -> Result<(Ticket, Instant), AcquireError> {
    let sent = ticket.valid_since(sent);
    let clock = Deadlines::new(ticket.ttl, sent, Instant::now());
    if clock.is_fresh(Instant::now()) {
        return Ok((ticket, sent));
    }
    let resent = Instant::now();
    match timeout(clock.renew_interval(), store.renew(name, &ticket)).await {
        Ok(Ok(renewed)) => {
            let since = renewed.valid_since(resent);
            Ok((renewed, since))
        }
        failed => {
            warn!(lock = %name, "the acquiring write took too long and could not be confirmed; giving the lock back");
            let _ = timeout(clock.renew_interval(), store.release(name, &ticket)).await;
            Err(AcquireError::Store(match failed {
                Ok(Err(err)) => err,
                _ => StoreError::unavailable(
                    store.kind(),
                    "the store answered too slowly to grant the lock safely",
                ),
            }))
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
