//! Locks, semaphores and read-write locks: a named handle (`Lock`) and the proof of holding it
//! (`LockGuard`). The three differ only in what the acquire asks for ([`Ask`]); holding, renewing,
//! losing and releasing are the same.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sync_protocol::{
    AcquireRequest, LockName, MAX_PERMITS, Mode, RwLockAcquireRequest, SemaphoreAcquireRequest,
    paths,
};
use tokio::time::Instant;

use crate::client::{Acquired, Client};
use crate::error::{Error, Result};
use crate::heartbeat::{Heartbeat, LossSignal, OnLost, Start};

type Callback = Arc<dyn Fn() + Send + Sync>;

impl Client {
    /// A handle on the lock `name`. No I/O happens until it is acquired.
    pub fn lock(&self, name: impl Into<String>) -> Lock {
        Lock::with_client(self.clone(), name)
    }

    /// A handle on one permit of the counting semaphore `name`: at most `permits` holders at
    /// once (1 to 128). Every user of the name must give the same `permits` while it is held;
    /// another number, or using the name as a lock, fails with [`Error::Conflict`].
    ///
    /// The guard's [`permit`](LockGuard::permit) says which of the N permits it holds, 0 to
    /// N-1; a resource that fences writes keeps the highest token seen per permit
    /// (docs/semaphores.md).
    ///
    /// ```no_run
    /// # async fn run() -> sync_client::Result<()> {
    /// let client = sync_client::Client::new();
    /// let jobs = client.semaphore("nightly-jobs", 3).on_lost(|| eprintln!("lost a permit"));
    /// let permit = jobs.acquire().await?;
    /// println!("running as permit {:?}, token {}", permit.permit(), permit.fencing_token());
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn semaphore(&self, name: impl Into<String>, permits: u32) -> Lock {
        Lock::with_client(self.clone(), name).asking(Ask::Permit { permits })
    }

    /// A handle on the read-write lock `name` in `mode`: any number of [`Mode::Shared`]
    /// holders, or one [`Mode::Exclusive`] holder, never both. A waiting exclusive request stops
    /// new shared grants, so writers are not starved.
    ///
    /// ```no_run
    /// # async fn run() -> sync_client::Result<()> {
    /// use sync_client::Mode;
    ///
    /// let client = sync_client::Client::new();
    /// let reader = client.rwlock("config", Mode::Shared).on_lost(|| {}).acquire().await?;
    /// // ... read, passing reader.fencing_token() ...
    /// reader.release().await?;
    /// let writer = client.rwlock("config", Mode::Exclusive).on_lost(|| {}).acquire().await?;
    /// writer.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn rwlock(&self, name: impl Into<String>, mode: Mode) -> Lock {
        Lock::with_client(self.clone(), name).asking(Ask::ReadWrite(mode))
    }
}

/// What an acquire asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    /// The lock, alone.
    Lock,
    /// One of `permits` permits of a semaphore.
    Permit { permits: u32 },
    /// A read-write lock, shared or exclusive.
    ReadWrite(Mode),
}

/// A distributed lock, by name. Creating one does no I/O; [`acquire`](Lock::acquire) waits for it.
///
/// As in Metaparticle Sync, a lock has a name, an optional callback when acquired, and an optional
/// callback when lost. **Without a lost callback the program exits** if the lock is ever lost,
/// because code that goes on believing it holds a lock is worse than code that stops.
///
/// ```no_run
/// # async fn run() -> sync_client::Result<()> {
/// use std::time::Duration;
///
/// let client = sync_client::Client::new();
/// let lock = client
///     .lock("test")
///     .ttl(Duration::from_secs(10))
///     .on_acquired(|| println!("acquired"))
///     .on_lost(|| eprintln!("lost"));
/// let guard = lock.acquire().await?;
/// // ... write to the protected resource, passing guard.fencing_token() ...
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "a Lock does nothing until it is acquired"]
pub struct Lock {
    client: Client,
    name: String,
    ask: Ask,
    ttl: Option<Duration>,
    value: Option<String>,
    on_acquired: Option<Callback>,
    on_lost: Option<Callback>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("ask", &self.ask)
            .field("ttl", &self.ttl)
            .field("elector", &self.client.url())
            .finish_non_exhaustive()
    }
}

impl Lock {
    /// A lock named `name` through the default client (see [`Client::new`]).
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_client(Client::new(), name)
    }

    pub(crate) fn with_client(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            ask: Ask::Lock,
            ttl: None,
            value: None,
            on_acquired: None,
            on_lost: None,
        }
    }

    /// A semaphore's permit or a read-write lock's mode in place of the lock.
    fn asking(mut self, ask: Ask) -> Self {
        self.ask = ask;
        self
    }

    /// The semaphore's size, for a handle from [`Client::semaphore`].
    pub fn permits(&self) -> Option<u32> {
        match self.ask {
            Ask::Permit { permits } => Some(permits),
            _ => None,
        }
    }

    /// The mode asked for, for a handle from [`Client::rwlock`].
    pub fn mode(&self) -> Option<Mode> {
        match self.ask {
            Ask::ReadWrite(mode) => Some(mode),
            _ => None,
        }
    }

    /// The lock's ttl: how long it outlives a holder that stopped heartbeating. Rounded up to whole
    /// seconds; default: the elector's `--ttl` (15 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// A short value that others read while this holder has the lock, such as its address.
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Called each time the lock is acquired, before `acquire` returns.
    pub fn on_acquired(mut self, callback: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_acquired = Some(Arc::new(callback));
        self
    }

    /// Called if a held lock is lost (not when it is released). Setting it also stops the
    /// default of exiting the program on loss; pass `|| {}` to handle loss only through
    /// [`LockGuard::lost`]. The callback runs on the runtime: keep it short.
    pub fn on_lost(mut self, callback: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_lost = Some(Arc::new(callback));
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until the lock is acquired. Dropping the future leaves the queue.
    pub async fn acquire(&self) -> Result<LockGuard> {
        match self.request(None).await? {
            Ok(guard) => Ok(guard),
            Err(holder) => Err(Error::Protocol(format!(
                "the elector gave up an unbounded wait for {} (holder {holder:?})",
                self.name
            ))),
        }
    }

    /// Takes the lock if it is free now; `None` when someone else holds it.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        Ok(self.request(Some(Duration::ZERO)).await?.ok())
    }

    /// Waits at most `wait` for the lock; [`Error::Timeout`] when it stays held.
    pub async fn acquire_timeout(&self, wait: Duration) -> Result<LockGuard> {
        self.request(Some(wait))
            .await?
            .map_err(|holder| Error::Timeout {
                name: self.name.clone(),
                waited: wait,
                holder,
            })
    }

    /// One acquire request: the guard, or who held the lock when the wait ran out.
    async fn request(&self, wait: Option<Duration>) -> Result<Result<LockGuard, Option<String>>> {
        let name = LockName::new(self.name.as_str())?;
        let ttl_seconds = self
            .ttl
            .map(|t| t.as_secs() + u64::from(t.subsec_nanos() > 0));
        let wait_seconds = wait.map(|w| w.as_secs_f64());
        let value = self.value.clone();
        let name = name.as_str();
        let sent = Instant::now();
        let acquired = match self.ask {
            Ask::Lock => {
                let body = AcquireRequest {
                    ttl_seconds,
                    wait_seconds,
                    value,
                };
                self.client.acquire(&paths::acquire(name), &body).await
            }
            Ask::Permit { permits } => {
                if !(1..=MAX_PERMITS).contains(&permits) {
                    return Err(Error::InvalidPermits { permits });
                }
                let body = SemaphoreAcquireRequest {
                    permits,
                    ttl_seconds,
                    wait_seconds,
                    value,
                };
                self.client
                    .acquire(&paths::acquire_permit(name), &body)
                    .await
            }
            Ask::ReadWrite(mode) => {
                let body = RwLockAcquireRequest {
                    mode,
                    ttl_seconds,
                    wait_seconds,
                    value,
                };
                self.client
                    .acquire(&paths::acquire_rwlock(name), &body)
                    .await
            }
        };
        let (grant, events) = match acquired? {
            Acquired::Granted(grant, events) => (grant, events),
            Acquired::Busy { holder } => return Ok(Err(holder)),
        };
        let ttl = Duration::from_secs(grant.ttl_seconds);
        let start = Start::after_grant(
            ttl,
            sent,
            Instant::now(),
            Duration::from_millis(grant.valid_for_ms),
        );
        let on_lost = match &self.on_lost {
            Some(callback) => OnLost::Call(callback.clone()),
            None => OnLost::Exit,
        };
        let heartbeat = Heartbeat::start(
            self.client.clone(),
            grant.name.clone(),
            grant.lease_id.clone(),
            ttl,
            start,
            on_lost,
            events,
        )
        .await?;
        if let Some(callback) = &self.on_acquired {
            callback();
        }
        Ok(Ok(LockGuard {
            client: self.client.clone(),
            name: grant.name,
            lease_id: grant.lease_id,
            holder: grant.holder,
            token: grant.token,
            permit: grant.permit,
            mode: grant.mode,
            heartbeat,
            runtime: tokio::runtime::Handle::current(),
            released: false,
        }))
    }
}

/// Proof of holding a lock, a semaphore's permit, or a read-write lock. Heartbeats in the
/// background while it lives.
///
/// Dropping the guard releases the lock as a best effort; [`release`](LockGuard::release) is where
/// errors are seen. Pass [`fencing_token`](LockGuard::fencing_token) with every write to the
/// protected resource, and have the resource refuse a token lower than one it has seen: that is
/// the only defence against a holder that was paused past its lease and still writes.
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    client: Client,
    name: String,
    lease_id: String,
    holder: String,
    token: u64,
    permit: Option<u32>,
    mode: Option<Mode>,
    heartbeat: Heartbeat,
    runtime: tokio::runtime::Handle,
    released: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("token", &self.token)
            .field("permit", &self.permit)
            .field("mode", &self.mode)
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// The fencing token: strictly greater than that of every earlier grant of this name. For a
    /// semaphore, fence per [`permit`](Self::permit); for a read-write lock, a shared grant's
    /// write is checked against exclusive tokens only (docs/semaphores.md).
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// A semaphore's grant: which permit it holds, 0 to N-1. `None` for locks and read-write
    /// locks.
    pub fn permit(&self) -> Option<u32> {
        self.permit
    }

    /// A read-write lock's grant: shared or exclusive. `None` for locks and semaphores.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This holder as others see it (elector identity and session).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether the lock is still held (not lost).
    pub fn is_held(&self) -> bool {
        !self.heartbeat.signal().is_lost()
    }

    /// Resolves when the lock is lost.
    pub async fn lost(&self) {
        self.heartbeat.signal().lost().await;
    }

    /// A cloneable signal of loss, for tasks that outlive a borrow of the guard.
    pub fn loss_signal(&self) -> LossSignal {
        self.heartbeat.signal().clone()
    }

    /// Releases the lock so the next waiter takes it at once.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        if let Some(reason) = self.heartbeat.signal().reason() {
            self.heartbeat.stop();
            return Err(Error::Lost {
                name: self.name.clone(),
                reason,
            });
        }
        self.heartbeat.quiet();
        let released = self.client.release(&self.lease_id).await;
        if released.is_ok() {
            // The elector ends the event stream after the release; see it end.
            self.heartbeat.finish().await;
        } else {
            self.heartbeat.stop();
        }
        match released {
            // A lease whose event stream closed first (the heartbeat was stopped) is released too.
            Ok(()) | Err(Error::Rejected { status: 404, .. }) => Ok(()),
            Err(Error::Lost { reason, .. }) => Err(Error::Lost {
                name: self.name.clone(),
                reason,
            }),
            Err(err) => Err(err),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released || self.heartbeat.signal().is_lost() {
            self.heartbeat.stop();
            return;
        }
        self.heartbeat.quiet();
        let heartbeat = self.heartbeat.detach();
        let client = self.client.clone();
        let lease_id = std::mem::take(&mut self.lease_id);
        // Best effort: if this does not run, the closed event stream releases the lease anyway.
        self.runtime.spawn(async move {
            let released = client.release(&lease_id).await;
            if let Some(heartbeat) = heartbeat {
                if released.is_ok() {
                    crate::heartbeat::finish(heartbeat).await;
                } else {
                    heartbeat.abort();
                }
            }
        });
    }
}
