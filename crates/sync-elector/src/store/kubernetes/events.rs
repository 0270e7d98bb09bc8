//! Leadership changes as Kubernetes Events on the Lease, the way client-go's leader election
//! records them (reason `LeaderElection`, message `<holder> became leader` or `<holder> stopped
//! leading`), so `kubectl describe lease` and `kubectl get events` show who led when.
//!
//! Events are a record for people, never part of the lock: they are written by a task of their
//! own after the change, so they add nothing to an acquire or a release; a full queue or a failed
//! write drops the Event (logged once per kind of failure). Each lock may record a burst of
//! [`BURST`] Events and then one every [`REFILL`], so a flapping lock cannot flood the API.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::kube_api;

/// Events a lock may record at once.
pub const BURST: u32 = 5;

/// How often a lock that used its burst may record one more.
pub const REFILL: Duration = Duration::from_secs(30);

/// What `kubectl get events` shows as the source.
const COMPONENT: &str = "sync-elector";

/// How many Events may wait to be written before new ones are dropped.
const QUEUE: usize = 256;

/// One leadership change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The Lease's name.
    pub lease: String,
    /// Its uid, when known, so the Event points at this Lease object.
    pub uid: Option<String>,
    /// The holder identity.
    pub holder: String,
    /// What happened: `became leader`, `stopped leading`.
    pub what: &'static str,
}

/// The sending side: cheap to call from the store's hot paths.
pub struct Recorder {
    queue: mpsc::Sender<Change>,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts the writer for Events in `namespace`.
    pub fn start(client: kube::Client, namespace: &str) -> Self {
        let (queue, changes) = mpsc::channel(QUEUE);
        let api: Api<Event> = Api::namespaced(client, namespace);
        let task = tokio::spawn(write_events(api, namespace.to_owned(), changes));
        Self { queue, task }
    }

    /// Queues `change`; drops it when the queue is full.
    pub fn record(&self, change: Change) {
        if self.queue.try_send(change).is_err() {
            debug!("the Event queue is full; an Event was dropped");
        }
    }
}

/// A token bucket per lock, each kept as the one instant that says it all: when the lock's
/// bucket is full again (the generic cell rate algorithm). A lock whose bucket is full needs no
/// entry, and the full ones are swept out whenever the map has doubled since the last sweep, so
/// the names of locks long gone do not accumulate. Locks are told apart by a keyed 64-bit hash of
/// their name: two names that collide (among a million locks, about one chance in 37 million)
/// would share a bucket, which can only drop an Event.
#[derive(Debug)]
pub struct Limiter {
    /// When each lock's bucket is full again, by the hash of its name.
    full_at: HashMap<u64, Instant>,
    hasher: RandomState,
    /// The number of entries at which to sweep next.
    sweep_at: usize,
}

/// The fewest entries worth a sweep.
const SWEEP_FROM: usize = 1024;

impl Limiter {
    /// Every lock starts with a full burst.
    pub fn new() -> Self {
        Self {
            full_at: HashMap::new(),
            hasher: RandomState::new(),
            sweep_at: SWEEP_FROM,
        }
    }

    /// Whether `lease` may record an Event at `now`; takes a token when it may.
    pub fn allow(&mut self, lease: &str, now: Instant) -> bool {
        if self.full_at.len() >= self.sweep_at {
            self.full_at.retain(|_, full| *full > now);
            self.sweep_at = (self.full_at.len() * 2).max(SWEEP_FROM);
        }
        let full = self
            .full_at
            .entry(self.hasher.hash_one(lease))
            .or_insert(now);
        // Each Event takes one refill's worth out of a bucket that holds BURST of them.
        let after = (*full).max(now) + REFILL;
        if after.duration_since(now) > REFILL * BURST {
            return false;
        }
        *full = after;
        true
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The Event for `change`, as client-go's `LeaseLock.RecordEvent` writes it.
pub fn event(namespace: &str, change: &Change, now: k8s_openapi::jiff::Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            // As client-go's recorder: the object's name and a unique suffix.
            name: Some(format!(
                "{}.{:x}",
                change.lease,
                now.as_nanosecond().unsigned_abs()
            )),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            name: Some(change.lease.clone()),
            namespace: Some(namespace.to_owned()),
            uid: change.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some("LeaderElection".into()),
        message: Some(format!("{} {}", change.holder, change.what)),
        type_: Some("Normal".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

async fn write_events(api: Api<Event>, namespace: String, mut changes: mpsc::Receiver<Change>) {
    let mut limiter = Limiter::new();
    let mut last_failure: Option<String> = None;
    while let Some(change) = changes.recv().await {
        if !limiter.allow(&change.lease, Instant::now()) {
            debug!(lease = %change.lease, "Event rate limit reached; not recorded");
            continue;
        }
        let event = event(&namespace, &change, k8s_openapi::jiff::Timestamp::now());
        let failure = kube_api::send(
            "events",
            "create",
            api.create(&PostParams::default(), &event),
        )
        .await
        .err()
        .map(|err| err.to_string());
        if let Some(failure) = &failure
            && last_failure.as_ref() != Some(failure)
        {
            warn!(%failure, "could not record a leadership Event (deploy/rbac.yaml lets the elector create events)");
        }
        last_failure = failure;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_lock_gets_its_burst_then_one_per_refill() {
        let mut limiter = Limiter::new();
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| limiter.allow("a", t0)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(limiter.allow("b", t0), "each lock has its own bucket");
        assert!(!limiter.allow("a", t0 + REFILL / 2));
        assert!(limiter.allow("a", t0 + REFILL));
        assert!(!limiter.allow("a", t0 + REFILL));
        let full_again = t0 + REFILL * (BURST + 1);
        let allowed = (0..20).filter(|_| limiter.allow("a", full_again)).count();
        assert_eq!(
            allowed, BURST as usize,
            "a bucket refills to its burst, no further"
        );
    }

    #[test]
    fn locks_whose_buckets_are_full_again_are_forgotten() {
        let mut limiter = Limiter::new();
        let t0 = Instant::now();
        let busy = (0..=BURST).filter(|_| limiter.allow("busy", t0)).count();
        assert_eq!(busy, BURST as usize);
        for i in 1..SWEEP_FROM {
            assert!(limiter.allow(&format!("once-{i}"), t0));
        }
        assert_eq!(limiter.full_at.len(), SWEEP_FROM);
        // The next call sweeps: by then every bucket but the busy lock's is full again.
        let later = t0 + REFILL * 2;
        assert!(limiter.allow("new", later));
        assert_eq!(
            limiter.full_at.len(),
            2,
            "the busy lock's and the new one's"
        );
        let busy = (0..BURST).filter(|_| limiter.allow("busy", later)).count();
        assert_eq!(
            busy, 2,
            "the busy lock's bucket was kept: two refills since"
        );
    }

    #[test]
    fn the_event_reads_as_client_go_writes_it() {
        let change = Change {
            lease: "test".into(),
            uid: Some("u-1".into()),
            holder: "pod-a/1".into(),
            what: "became leader",
        };
        let e = event("ns", &change, k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(e.reason.as_deref(), Some("LeaderElection"));
        assert_eq!(e.message.as_deref(), Some("pod-a/1 became leader"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Lease"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u-1"));
        assert!(e.metadata.name.unwrap().starts_with("test."));
    }
}
