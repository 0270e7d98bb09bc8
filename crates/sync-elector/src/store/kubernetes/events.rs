//! Leadership changes as Kubernetes Events on the Lease, the way client-go's leader election
//! records them (reason `LeaderElection`, message `<holder> became leader` or `<holder> stopped
//! leading`), so `kubectl describe lease` and `kubectl get events` show who led when.
//!
//! Events are a record for people, never part of the lock: they are written by a task of their
//! own after the change, so they add nothing to an acquire or a release; a full queue or a failed
//! write drops the Event (logged once per kind of failure). Each lock may record a burst of
//! [`BURST`] Events and then one every [`REFILL`], so a flapping lock cannot flood the API.

use std::collections::HashMap;
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

/// A per-lock token bucket.
#[derive(Debug)]
pub struct Limiter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl Limiter {
    /// Every lock starts with a full burst.
    pub fn new() -> Self {
        Self {
            buckets: HashMap::new(),
        }
    }

    /// Whether `lease` may record an Event at `now`; takes a token when it may.
    pub fn allow(&mut self, lease: &str, now: Instant) -> bool {
        let (tokens, at) = self
            .buckets
            .entry(lease.to_owned())
            .or_insert((f64::from(BURST), now));
        let refilled = now.saturating_duration_since(*at).as_secs_f64() / REFILL.as_secs_f64();
        *tokens = (*tokens + refilled).min(f64::from(BURST));
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
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
