//! The keep-alive core every guard shares: heartbeat the lease, listen for the elector's `lost`
//! event, and declare the lease lost by the client-validity rule even when the elector is dead or
//! hung.
//!
//! The rule (docs/timing.md, rule 3): every answer from the elector says how long the lease stays
//! valid; the heartbeat task counts that from the moment it *sent* the request, and fires "lost"
//! when the time runs out without a fresh answer. The elector itself declares loss at its renew deadline,
//! before any other elector can take the lock, so a holder is told before anyone else acquires.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sync_protocol::{LostEvent, lease_event, paths};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::client::{Client, Events};
use crate::error::Error;

/// What happens when a lease is lost.
#[derive(Clone)]
pub(crate) enum OnLost {
    /// Call the user's callback.
    Call(Arc<dyn Fn() + Send + Sync>),
    /// The seed's promise: without a lost callback the program exits.
    Exit,
}

/// A signal that fires when a lease is lost. Cheap to clone.
///
/// ```no_run
/// # async fn example(guard: sync_client::LockGuard) {
/// let signal = guard.loss_signal();
/// tokio::spawn(async move {
///     signal.lost().await;
///     eprintln!("stop writing: the lock is gone");
/// });
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LossSignal {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl LossSignal {
    /// Resolves once the lease is lost. Never resolves for a lease released on purpose.
    pub async fn lost(&self) {
        self.token.cancelled().await;
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why the lease was lost, once it has been.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().expect("loss reason poisoned").clone()
    }
}

/// The lease a heartbeat keeps.
struct Kept {
    client: Client,
    name: String,
    lease_id: String,
    ttl: Duration,
}

/// A running heartbeat. Stopping it (or dropping it) ends the heartbeats without firing "lost".
pub(crate) struct Heartbeat {
    signal: LossSignal,
    task: Option<JoinHandle<()>>,
    quiet: CancellationToken,
}

/// How long a quieted heartbeat may take to read its event stream to the end after a release.
const FINISH: Duration = Duration::from_secs(2);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Heartbeat {
    /// Starts keeping a lease: opens its event stream unless the acquire answered with it (so
    /// the elector hears at once if this process dies, and this task hears at once of a
    /// loss), then heartbeats in a task.
    /// `valid_until` comes from the grant; the first heartbeat goes out at once, so the validity
    /// is soon measured from a request this task timed itself.
    pub(crate) async fn start(
        client: Client,
        name: String,
        lease_id: String,
        ttl: Duration,
        valid_until: Instant,
        on_lost: OnLost,
        events: Option<Events>,
    ) -> Result<Self, Error> {
        let events = match events {
            Some(events) => Some(events),
            None => match client.events(&paths::lease_events(&lease_id)).await {
                Ok(stream) => Some(Box::pin(stream) as Events),
                Err(Error::Lost { reason, .. }) => return Err(Error::Lost { name, reason }),
                Err(err) => {
                    debug!(lock = %name, error = %err, "no event stream; relying on heartbeats");
                    None
                }
            },
        };
        let signal = LossSignal {
            token: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
        };
        let kept = Kept {
            client,
            name,
            lease_id,
            ttl,
        };
        let quiet = CancellationToken::new();
        let task = tokio::spawn(run(
            kept,
            valid_until,
            events,
            on_lost,
            signal.clone(),
            quiet.clone(),
        ));
        Ok(Self {
            signal,
            task: Some(task),
            quiet,
        })
    }

    pub(crate) fn signal(&self) -> &LossSignal {
        &self.signal
    }

    /// Stops heartbeating at once; "lost" will not fire. The event stream is cut.
    pub(crate) fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Prepares for a release: heartbeats stop, "lost" will not fire, and the event stream is
    /// read until the elector ends it after the release. Ending it ourselves would cut it, which
    /// HTTP/2 counts against the connection that every lock of this process shares.
    pub(crate) fn quiet(&self) {
        self.quiet.cancel();
    }

    /// Waits (a short while) for a quieted heartbeat to see its event stream end.
    pub(crate) async fn finish(&mut self) {
        if let Some(task) = self.task.take() {
            finish(task).await;
        }
    }

    /// The heartbeat's task, for a release that runs after the guard is gone.
    pub(crate) fn detach(&mut self) -> Option<JoinHandle<()>> {
        self.task.take()
    }
}

/// Waits for a quieted heartbeat's task, and stops it if the stream does not end in time.
pub(crate) async fn finish(task: JoinHandle<()>) {
    let abort = task.abort_handle();
    if tokio::time::timeout(FINISH, task).await.is_err() {
        abort.abort();
    }
}

/// Reads a released lease's event stream until the elector ends it.
async fn drain(events: Option<Events>) {
    let Some(mut events) = events else { return };
    while let Some(Ok((kind, _))) = events.next().await {
        if kind == lease_event::RELEASED || kind == lease_event::LOST {
            return;
        }
    }
}

/// How often to heartbeat, given the ttl and the validity the elector just reported: at least
/// twice per validity window, at most every third of the ttl.
fn beat_interval(ttl: Duration, valid_for: Duration) -> Duration {
    (ttl / 3).min(valid_for / 2).max(Duration::from_millis(20))
}

async fn run(
    kept: Kept,
    mut valid_until: Instant,
    mut events: Option<Events>,
    on_lost: OnLost,
    signal: LossSignal,
    quiet: CancellationToken,
) {
    let Kept {
        client,
        name,
        lease_id,
        ttl,
    } = kept;
    let lose = |reason: String| {
        if quiet.is_cancelled() {
            // Being released: a heartbeat that was in flight found the lease already gone.
            return;
        }
        warn!(lock = %name, %reason, "lock lost");
        *signal.reason.lock().expect("loss reason poisoned") = Some(reason.clone());
        signal.token.cancel();
        match &on_lost {
            OnLost::Call(callback) => callback(),
            OnLost::Exit => {
                eprintln!(
                    "sync-client: lock {name:?} was lost ({reason}) and no lost callback was set; \
                     exiting, as Metaparticle Sync promises. Set a lost callback (Lock::on_lost) to \
                     handle the loss instead."
                );
                std::process::exit(1);
            }
        }
    };
    let mut next_beat = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = quiet.cancelled() => return drain(events).await,
            () = sleep_until(valid_until) => {
                return lose("the elector did not confirm the lease before its validity ran out".into());
            }
            event = async { events.as_mut().expect("guarded").next().await }, if events.is_some() => {
                match event {
                    Some(Ok((kind, data))) if kind == lease_event::LOST => {
                        let reason = serde_json::from_str::<LostEvent>(&data)
                            .map(|e| e.reason)
                            .unwrap_or_else(|_| "the elector said so".into());
                        return lose(reason);
                    }
                    Some(Ok((kind, _))) if kind == lease_event::RELEASED => return,
                    Some(Ok(_)) => {}
                    // The elector releases a lease whose event stream closes, and a new
                    // elector process knows nothing of it: either way the lease is gone.
                    Some(Err(_)) | None => {
                        return lose("the connection to the elector broke".into());
                    }
                }
            }
            () = sleep_until(next_beat) => {
                let sent = Instant::now();
                let wait = valid_until.saturating_duration_since(sent);
                match timeout_at(valid_until, client.renew(&lease_id, wait)).await {
                    Ok(Ok(renewal)) => {
                        let valid_for = Duration::from_millis(renewal.valid_for_ms);
                        valid_until = sent + valid_for;
                        next_beat = sent + beat_interval(ttl, valid_for);
                    }
                    Ok(Err(Error::Lost { reason, .. })) => return lose(reason),
                    Ok(Err(Error::Rejected { status: 404, .. })) => {
                        return lose("the elector no longer knows this lease".into());
                    }
                    Ok(Err(err)) => {
                        debug!(lock = %name, error = %err, "heartbeat failed; retrying");
                        next_beat = Instant::now() + (ttl / 10).min(Duration::from_millis(500));
                    }
                    Err(_) => {} // validity ran out; the first branch says so
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_at_least_twice_per_validity() {
        let ttl = Duration::from_secs(15);
        assert_eq!(
            beat_interval(ttl, Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(
            beat_interval(ttl, Duration::from_secs(6)),
            Duration::from_secs(3)
        );
        assert_eq!(
            beat_interval(ttl, Duration::ZERO),
            Duration::from_millis(20)
        );
    }
}
