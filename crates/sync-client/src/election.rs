//! Leader election: campaign for a named lock, lead while holding it, campaign again after a loss;
//! and, for everyone, read and follow the current leader.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use sync_protocol::{LockName, LockState};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::lock::Lock;

impl Client {
    /// An election for `name` that calls `on_elected` when this replica becomes leader and
    /// `on_lost` when it stops being leader.
    pub fn election(
        &self,
        name: impl Into<String>,
        on_elected: impl Fn() + Send + Sync + 'static,
        on_lost: impl Fn() + Send + Sync + 'static,
    ) -> Election {
        Election::with_client(self.clone(), name, on_elected, on_lost)
    }
}

/// How long `run` keeps trying an elector that does not answer before it gives up: long enough for
/// a sidecar that starts after the application.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

/// The current leader of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader as it shows itself: its elector's identity and session.
    pub holder: String,
    /// The value the leader attached, such as its address.
    pub value: Option<String>,
    /// The leader's fencing token.
    pub token: u64,
}

impl Leader {
    fn from_state(state: LockState) -> Option<Self> {
        state.holder.map(|holder| Self {
            holder,
            value: state.value,
            token: state.token,
        })
    }
}

/// A stream of leader changes: the leader now, then after every change (`None`: no leader).
pub type LeaderStream = Pin<Box<dyn Stream<Item = Result<Option<Leader>>> + Send>>;

/// A leader election for a named shard: one replica leads while it is healthy; when it fails,
/// another is chosen.
///
/// ```no_run
/// # async fn run() -> sync_client::Result<()> {
/// let election = sync_client::Election::new(
///     "test",
///     || println!("I am the leader!"),
///     || println!("I lost the leader!"),
/// );
/// election.run().await // until election.shutdown() is called elsewhere
/// # }
/// ```
pub struct Election {
    client: Client,
    lock: Lock,
    on_elected: Arc<dyn Fn() + Send + Sync>,
    on_lost: Arc<dyn Fn() + Send + Sync>,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
}

impl Election {
    /// An election for `name` through the default client (see [`Client::new`]).
    pub fn new(
        name: impl Into<String>,
        on_elected: impl Fn() + Send + Sync + 'static,
        on_lost: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Self::with_client(Client::new(), name, on_elected, on_lost)
    }

    pub(crate) fn with_client(
        client: Client,
        name: impl Into<String>,
        on_elected: impl Fn() + Send + Sync + 'static,
        on_lost: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        // Loss is handled by `run`, which calls `on_lost` and campaigns again: never exit.
        let lock = client.lock(name).on_lost(|| {});
        Self {
            client,
            lock,
            on_elected: Arc::new(on_elected),
            on_lost: Arc::new(on_lost),
            leading: Arc::new(AtomicBool::new(false)),
            shutdown: CancellationToken::new(),
        }
    }

    /// The ttl of the leader's lock (default: the elector's `--ttl`).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.lock = self.lock.ttl(ttl);
        self
    }

    /// A value followers read while this replica leads, such as its address.
    #[must_use]
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.lock = self.lock.value(value);
        self
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Campaigns, leads, and campaigns again after each loss, until [`shutdown`](Self::shutdown).
    /// `on_elected` runs on each election, `on_lost` whenever leadership ends (also on shutdown,
    /// where it runs before the lock is released, so that another replica is elected only after
    /// this one stopped leading).
    ///
    /// Returns an error for a bad name, or when the elector cannot be reached for 30 s in a row.
    pub async fn run(&self) -> Result<()> {
        LockName::new(self.lock.name())?;
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let campaign = tokio::select! {
                result = self.lock.acquire() => result,
                () = self.shutdown.cancelled() => return Ok(()),
            };
            let guard = match campaign {
                Ok(guard) => {
                    unreachable_since = None;
                    guard
                }
                Err(err @ (Error::Unreachable { .. } | Error::Rejected { status: 503, .. })) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= UNREACHABLE_GRACE {
                        return Err(err);
                    }
                    warn!(election = self.name(), error = %err, "campaign failed; retrying");
                    tokio::select! {
                        () = sleep(Duration::from_secs(1)) => continue,
                        () = self.shutdown.cancelled() => return Ok(()),
                    }
                }
                Err(err) => return Err(err),
            };
            self.leading.store(true, Ordering::SeqCst);
            (self.on_elected)();
            let resigned = tokio::select! {
                () = guard.lost() => false,
                () = self.shutdown.cancelled() => true,
            };
            self.leading.store(false, Ordering::SeqCst);
            if resigned {
                // The program stops leading before the lock is free for the next leader, so
                // that two never lead at once.
                (self.on_lost)();
                let released = guard.release().await;
                return match released {
                    Ok(()) | Err(Error::Lost { .. }) => Ok(()),
                    Err(err) => Err(err),
                };
            }
            drop(guard);
            (self.on_lost)();
        }
    }

    /// Runs as [`run`](Self::run) until `stop` completes, then resigns: a leader releases at
    /// once, so another replica takes over. With [`shutdown_signal`](crate::shutdown_signal),
    /// a pod's replica hands over the moment Kubernetes stops it (SIGTERM), not when the grace
    /// period ends.
    ///
    /// ```no_run
    /// # async fn run() -> sync_client::Result<()> {
    /// let election = sync_client::Election::new(
    ///     "test",
    ///     || println!("I am the leader!"),
    ///     || println!("I lost the leader!"),
    /// );
    /// election.run_until(sync_client::shutdown_signal()).await
    /// # }
    /// ```
    pub async fn run_until(&self, stop: impl Future<Output = ()>) -> Result<()> {
        let run = self.run();
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => return result,
            () = stop => self.shutdown(),
        }
        run.await
    }

    /// Ends [`run`](Self::run): a leader resigns at once, so another replica takes over.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        Ok(Leader::from_state(
            self.client.lock_state(self.name()).await?,
        ))
    }

    /// Follows the leader: the leader now, then after every change.
    pub async fn observe(&self) -> Result<LeaderStream> {
        let states = self.client.watch(self.name()).await?;
        Ok(Box::pin(states.map(|state| state.map(Leader::from_state))))
    }
}
