//! The blocking face, for programs without an async runtime. It reads like the original .NET API
//! (`WaitOne`, `Release`, `Run`) and runs the same async core on a runtime thread of its own, so
//! heartbeats go on while the calling thread sleeps or works.
//!
//! Do not call these from inside an async runtime; use the async API there.
//!
//! ```no_run
//! use std::time::Duration;
//! use sync_client::blocking::Lock;
//!
//! let lock = Lock::new("test");
//! lock.wait_one()?;
//! std::thread::sleep(Duration::from_secs(45));
//! lock.release()?;
//! # Ok::<(), sync_client::Error>(())
//! ```

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::election::Leader;
use crate::error::{Error, Result};

/// The runtime every blocking handle shares: one worker thread, started on first use.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sync-client")
            .enable_all()
            .build()
            .expect("the sync-client runtime thread could not start")
    })
}

/// Calls `callback` once, on a thread of its own, when the process receives SIGTERM or Ctrl-C
/// ([`crate::shutdown_signal`]). The callback may call blocking methods, such as
/// [`Lock::release`]; it usually ends with [`std::process::exit`].
///
/// ```no_run
/// use std::sync::Arc;
/// use sync_client::blocking::{Lock, on_shutdown_signal};
///
/// let lock = Arc::new(Lock::new("test"));
/// let held = lock.clone();
/// on_shutdown_signal(move || {
///     let _ = held.release(); // NotHeld when it was still waiting
///     std::process::exit(0);
/// });
/// lock.wait_one()?;
/// # Ok::<(), sync_client::Error>(())
/// ```
pub fn on_shutdown_signal(callback: impl FnOnce() + Send + 'static) {
    // The handlers are installed before this returns, so a signal that comes right after is not
    // missed; the wait runs on the shared runtime, the callback on its own thread.
    let (installed, ready) = std::sync::mpsc::channel();
    let signalled = runtime().spawn(async move {
        let signal = crate::shutdown_signal();
        tokio::pin!(signal);
        // Polling once installs the handlers.
        let _ = futures_util::FutureExt::now_or_never(signal.as_mut());
        let _ = installed.send(());
        signal.await;
    });
    let _ = ready.recv();
    std::thread::Builder::new()
        .name("sync-client-shutdown".into())
        .spawn(move || {
            if runtime().block_on(signalled).is_ok() {
                callback();
            }
        })
        .expect("the sync-client shutdown thread could not start");
}

/// A lock (or a semaphore's permit, or a read-write lock) for blocking code:
/// [`wait_one`](Lock::wait_one), then [`release`](Lock::release).
pub struct Lock {
    inner: crate::Lock,
    guard: Mutex<Option<crate::LockGuard>>,
}

impl Lock {
    /// A lock named `name` through the default client (`SYNC_ELECTOR_URL`, else
    /// `http://127.0.0.1:13131`).
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_async(crate::Lock::new(name))
    }

    /// One permit of the counting semaphore `name` with `permits` permits, through the default
    /// client: [`wait_one`](Self::wait_one) takes a permit, [`release`](Self::release) gives it
    /// back ([`crate::Client::semaphore`]).
    ///
    /// ```no_run
    /// let jobs = sync_client::blocking::Lock::semaphore("nightly-jobs", 3);
    /// jobs.wait_one()?;
    /// println!("permit {:?}, token {}", jobs.permit()?, jobs.fencing_token()?);
    /// jobs.release()?;
    /// # Ok::<(), sync_client::Error>(())
    /// ```
    pub fn semaphore(name: impl Into<String>, permits: u32) -> Self {
        Self::from_async(crate::Client::new().semaphore(name, permits))
    }

    /// The read-write lock `name` in `mode`, through the default client
    /// ([`crate::Client::rwlock`]).
    ///
    /// ```no_run
    /// use sync_client::{Mode, blocking::Lock};
    ///
    /// let reader = Lock::rwlock("config", Mode::Shared);
    /// reader.wait_one()?;
    /// reader.release()?;
    /// # Ok::<(), sync_client::Error>(())
    /// ```
    pub fn rwlock(name: impl Into<String>, mode: crate::Mode) -> Self {
        Self::from_async(crate::Client::new().rwlock(name, mode))
    }

    /// A blocking lock from a configured async one (ttl, value, callbacks, client).
    ///
    /// ```no_run
    /// let client = sync_client::Client::builder().url("http://127.0.0.1:13131").build()?;
    /// let lock = sync_client::blocking::Lock::from_async(
    ///     client.lock("test").on_lost(|| eprintln!("lost the lock")),
    /// );
    /// # Ok::<(), sync_client::Error>(())
    /// ```
    pub fn from_async(lock: crate::Lock) -> Self {
        Self {
            inner: lock,
            guard: Mutex::new(None),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    fn hold(&self, guard: Option<crate::LockGuard>) -> bool {
        let held = guard.is_some();
        *self.guard.lock().expect("blocking lock poisoned") = guard;
        held
    }

    fn check_not_held(&self) -> Result<()> {
        let guard = self.guard.lock().expect("blocking lock poisoned");
        if guard.as_ref().is_some_and(crate::LockGuard::is_held) {
            return Err(Error::AlreadyHeld {
                name: self.name().to_owned(),
            });
        }
        Ok(())
    }

    /// Waits until the lock is acquired (the seed's `WaitOne`).
    pub fn wait_one(&self) -> Result<()> {
        self.check_not_held()?;
        let guard = runtime().block_on(self.inner.acquire())?;
        self.hold(Some(guard));
        Ok(())
    }

    /// Takes the lock if it is free now (the seed's `TryWait`); `false` when someone holds it.
    pub fn try_wait(&self) -> Result<bool> {
        self.check_not_held()?;
        let guard = runtime().block_on(self.inner.try_acquire())?;
        Ok(self.hold(guard))
    }

    /// Waits at most `wait`; `false` when the lock stayed held.
    pub fn wait_timeout(&self, wait: Duration) -> Result<bool> {
        self.check_not_held()?;
        match runtime().block_on(self.inner.acquire_timeout(wait)) {
            Ok(guard) => Ok(self.hold(Some(guard))),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Releases the lock; [`Error::NotHeld`] when it is not held.
    pub fn release(&self) -> Result<()> {
        let guard = self.guard.lock().expect("blocking lock poisoned").take();
        match guard {
            Some(guard) => runtime().block_on(guard.release()),
            None => Err(Error::NotHeld {
                name: self.name().to_owned(),
            }),
        }
    }

    /// Whether the lock is held now.
    pub fn is_held(&self) -> bool {
        self.guard
            .lock()
            .expect("blocking lock poisoned")
            .as_ref()
            .is_some_and(crate::LockGuard::is_held)
    }

    /// The fencing token of the current holding; [`Error::NotHeld`] when not held.
    pub fn fencing_token(&self) -> Result<u64> {
        self.held(crate::LockGuard::fencing_token)
    }

    /// A semaphore's permit in the current holding (`None` for other kinds); [`Error::NotHeld`]
    /// when not held.
    pub fn permit(&self) -> Result<Option<u32>> {
        self.held(crate::LockGuard::permit)
    }

    /// `read` of the current holding's guard; [`Error::NotHeld`] when not held.
    fn held<T>(&self, read: impl FnOnce(&crate::LockGuard) -> T) -> Result<T> {
        self.guard
            .lock()
            .expect("blocking lock poisoned")
            .as_ref()
            .map(read)
            .ok_or_else(|| Error::NotHeld {
                name: self.name().to_owned(),
            })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Release inside the runtime, so the guard's best-effort release can run there.
        if let Some(guard) = self.guard.get_mut().ok().and_then(Option::take) {
            let _enter = runtime().enter();
            drop(guard);
        }
    }
}

/// A leader election for blocking code: [`run`](Election::run) blocks until
/// [`shutdown`](Election::shutdown) is called from another thread.
///
/// ```no_run
/// let election = sync_client::blocking::Election::new(
///     "test",
///     || println!("I am the leader!"),
///     || println!("I lost the leader!"),
/// );
/// election.run()?;
/// # Ok::<(), sync_client::Error>(())
/// ```
pub struct Election {
    inner: crate::Election,
}

impl Election {
    /// An election for `name` through the default client.
    pub fn new(
        name: impl Into<String>,
        on_elected: impl Fn() + Send + Sync + 'static,
        on_lost: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Self::from_async(crate::Election::new(name, on_elected, on_lost))
    }

    /// A blocking election from a configured async one.
    pub fn from_async(election: crate::Election) -> Self {
        Self { inner: election }
    }

    /// Campaigns, leads and campaigns again until [`shutdown`](Self::shutdown) (the seed's `Run`).
    pub fn run(&self) -> Result<()> {
        runtime().block_on(self.inner.run())
    }

    /// Runs as [`run`](Self::run) until the process receives SIGTERM or Ctrl-C, then resigns
    /// and returns: in a pod, the next replica takes over the moment Kubernetes stops this one
    /// ([`crate::shutdown_signal`]).
    ///
    /// ```no_run
    /// let election = sync_client::blocking::Election::new(
    ///     "test",
    ///     || println!("I am the leader!"),
    ///     || println!("I lost the leader!"),
    /// );
    /// election.run_until_shutdown_signal()?;
    /// # Ok::<(), sync_client::Error>(())
    /// ```
    pub fn run_until_shutdown_signal(&self) -> Result<()> {
        runtime().block_on(self.inner.run_until(crate::shutdown_signal()))
    }

    /// Ends `run`; a leader resigns at once.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }

    /// The current leader, if any.
    pub fn leader(&self) -> Result<Option<Leader>> {
        runtime().block_on(self.inner.leader())
    }
}
