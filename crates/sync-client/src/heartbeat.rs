//! The keep-alive core every guard shares: heartbeat the lease, listen for the elector's `lost`
//! event, and declare the lease lost by the client-validity rule even when the elector is dead or
//! hung.
//!
//! The rule (docs/timing.md, rule 3): every answer from the elector says how long the lease stays
//! valid; the heartbeat task counts that from the moment it *sent* the request, and fires "lost"
//! when the time runs out without a fresh answer. The elector itself declares loss at its renew deadline,
//! before any other elector can take the lock, so a holder is told before anyone else acquires.
//! An acquire answered without waiting counts as the first heartbeat ([`Start::after_grant`]).

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

/// How a new lease's heartbeats begin: the validity its grant gives, and when the first heartbeat
/// goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// Until when the lease counts as valid without a heartbeat's answer.
    pub(crate) valid_until: Instant,
    /// When the first heartbeat is sent.
    pub(crate) first_beat: Instant,
}

impl Start {
    /// Rule 3 applied to a grant (docs/timing.md, "The grant as the first heartbeat"). The
    /// acquire was `sent` and its grant `received`, saying the lease stays valid `valid_for` from
    /// the elector's answer, which came at or after `sent`.
    ///
    /// - Answered within one beat interval (the lock was free): the acquire is the first
    ///   heartbeat. Validity counts from its send, and the next beat goes one interval after it,
    ///   as after any heartbeat. At least half the validity is left when the grant arrives.
    /// - Answered later (the acquire waited for a busy lock): counted from the send, the validity
    ///   would be cut by the wait, or already over. The first heartbeat goes out at once, and
    ///   until it answers the grant's validity counts from its arrival, as it always did.
    pub(crate) fn after_grant(
        ttl: Duration,
        sent: Instant,
        received: Instant,
        valid_for: Duration,
    ) -> Self {
        let interval = beat_interval(ttl, valid_for);
        if received.saturating_duration_since(sent) <= interval {
            Self {
                valid_until: sent + valid_for,
                first_beat: sent + interval,
            }
        } else {
            Self {
                valid_until: received + valid_for,
                first_beat: received,
            }
        }
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
    /// loss), then heartbeats in a task, beginning as `start` says.
    pub(crate) async fn start(
        client: Client,
        name: String,
        lease_id: String,
        ttl: Duration,
        start: Start,
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
            start,
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
    start: Start,
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
    let Start {
        mut valid_until,
        first_beat: mut next_beat,
    } = start;
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
    use proptest::prelude::*;

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

    #[test]
    fn a_prompt_grant_is_the_first_heartbeat() {
        let ttl = Duration::from_secs(15);
        let sent = Instant::now();
        let start = Start::after_grant(
            ttl,
            sent,
            sent + Duration::from_millis(1),
            Duration::from_secs(10),
        );
        assert_eq!(start.valid_until, sent + Duration::from_secs(10));
        assert_eq!(start.first_beat, sent + Duration::from_secs(5));
    }

    #[test]
    fn a_grant_after_a_wait_is_confirmed_at_once() {
        let ttl = Duration::from_secs(15);
        let sent = Instant::now();
        let received = sent + Duration::from_secs(30);
        let start = Start::after_grant(ttl, sent, received, Duration::from_secs(10));
        assert_eq!(start.first_beat, received);
        assert_eq!(start.valid_until, received + Duration::from_secs(10));
    }

    proptest! {
        /// For any ttl, any validity the elector may grant (ttl/3 to 2/3 ttl, rule 2 and 3) and
        /// any time the acquire took: the client never counts the grant's validity from later
        /// than its arrival; when it sends no heartbeat at once, it counts from the acquire's send
        /// (rule 3 without exception), and its first heartbeat still leaves half the validity.
        #[test]
        fn the_grant_never_stretches_validity(
            ttl_s in 1u64..=3600,
            share in 0.0f64..=1.0,
            took_ms in 0u64..=7_200_000,
        ) {
            let ttl = Duration::from_secs(ttl_s);
            let valid_for = ttl / 3 + (ttl / 3).mul_f64(share);
            let sent = Instant::now();
            let received = sent + Duration::from_millis(took_ms);
            let start = Start::after_grant(ttl, sent, received, valid_for);
            prop_assert!(start.valid_until <= received + valid_for);
            prop_assert!(start.first_beat >= received);
            if start.first_beat > received {
                prop_assert_eq!(start.valid_until, sent + valid_for);
                prop_assert!(start.valid_until >= start.first_beat + valid_for / 2);
                prop_assert!(start.first_beat <= sent + ttl / 3);
            } else {
                prop_assert!(received - sent >= beat_interval(ttl, valid_for));
            }
        }
    }
}
