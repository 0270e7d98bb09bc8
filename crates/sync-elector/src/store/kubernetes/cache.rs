//! The Kubernetes store's cache of the namespace's Leases, fed by the reflector and by the API's
//! answers to our own reads and writes.
//!
//! Each Lease is kept as what the lock reads from it (holder, duration, transitions, value,
//! resourceVersion) and as compact JSON, which becomes a `Lease` again only when this elector
//! writes it. A decoded `Lease` costs about three times its JSON in memory (every optional field
//! of `ObjectMeta` and `LeaseSpec` takes room, and each label map is a B-tree node), and with
//! thousands of held locks the cache is most of the store's memory.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use sync_protocol::LockName;
use tokio::time::Instant;

use super::grants::{self as lease_grants, Sightings};
use super::{acquired, duration, holder, transitions, value};
use crate::store::grants::Grants;
use crate::store::{Holding, Record, Signals};

/// Every Lease of the namespace this elector knows, and the change signals of their locks.
#[derive(Default)]
pub(super) struct Cache {
    pub leases: BTreeMap<String, Seen>,
    pub signals: Signals,
    /// Whether the first list has completed, so the cache can answer alone.
    pub synced: bool,
    /// The last failure to list or watch, cleared by the next success.
    pub trouble: Option<String>,
}

/// A Lease, and when this elector saw its current resourceVersion first.
pub(super) struct Seen {
    /// The Lease as JSON, without `managedFields`.
    json: Box<[u8]>,
    version: Option<Box<str>>,
    holder: Option<Box<str>>,
    ttl: Duration,
    transitions: u64,
    since: Option<SystemTime>,
    value: Option<Box<str>>,
    observed_at: Instant,
    /// For a semaphore's or read-write lock's Lease: when each of its entries was first seen as
    /// it is. `None` for a lock's.
    sightings: Option<Sightings>,
}

impl Seen {
    /// `lease` as seen at `observed_at`.
    pub fn new(lease: &Lease, observed_at: Instant) -> Self {
        Self {
            json: serde_json::to_vec(lease)
                .expect("a Lease serializes")
                .into_boxed_slice(),
            version: lease.metadata.resource_version.as_deref().map(Box::from),
            holder: holder(lease).map(Box::from),
            ttl: duration(lease),
            transitions: transitions(lease),
            since: acquired(lease),
            value: value(lease).map(String::into_boxed_str),
            observed_at,
            sightings: None,
        }
    }

    /// `lease` as seen at `observed_at`, after `before`: a semaphore's or read-write lock's
    /// entries that have not changed keep the dates they were first seen at.
    fn after(lease: &Lease, observed_at: Instant, before: Option<&Seen>) -> Self {
        let mut seen = Self::new(lease, observed_at);
        if matches!(lease_grants::kind(lease), Ok(Some(_)) | Err(_)) {
            let earlier = before.and_then(|b| b.sightings.clone()).unwrap_or_default();
            // A Lease whose entries do not parse is refused when read; nothing to date.
            seen.sightings = Some(earlier.update(lease, observed_at).unwrap_or_default());
        }
        seen
    }

    /// For a semaphore's or read-write lock's Lease, its record of grants, each entry dated on
    /// this elector's clock; `None` for a lock's.
    pub fn grants(&self, now: Instant) -> Option<Result<Grants, lease_grants::Malformed>> {
        let sightings = self.sightings.as_ref()?;
        lease_grants::read(&self.lease(), sightings, now).transpose()
    }

    /// The Lease itself, to write it back changed.
    pub fn lease(&self) -> Lease {
        serde_json::from_slice(&self.json).expect("a cached Lease decodes: it was encoded here")
    }

    /// Its resourceVersion.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Its holder, whether or not the holding has run out (none when empty).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    /// When the holding runs out unless the Lease changes: counted from when this elector saw
    /// this version first.
    pub fn expires_at(&self) -> Instant {
        self.observed_at + self.ttl
    }

    /// The live holder, judged by observed time.
    pub fn live_holder(&self, now: Instant) -> Option<&str> {
        self.holder().filter(|_| now < self.expires_at())
    }

    /// The name's record at `now`.
    pub fn record(&self, name: &LockName, now: Instant) -> Record {
        if let Some(Ok(grants)) = self.grants(now) {
            return grants.record(name, now);
        }
        Record {
            name: name.clone(),
            holding: self.live_holder(now).map(|h| Holding {
                holder: h.to_owned(),
                value: self.value.as_deref().map(str::to_owned),
                ttl: self.ttl,
                expires_at: self.expires_at(),
                since: self.since,
            }),
            token: if self.holder.is_some() || self.transitions > 0 {
                self.transitions + 1
            } else {
                0
            },
            kind: crate::store::Kind::Lock,
            grants: Vec::new(),
        }
    }
}

/// Whether resourceVersion `new` replaces `old`. Direct answers (our reads and writes) and watch
/// events arrive on different connections, so the watch may deliver an older version after we
/// stored a newer answer; applying it would step the cache back (a released lock would look
/// held). The API server's versions are etcd revisions, integers that grow (Kubernetes 1.35,
/// KEP-5504, documents them as comparable); versions that do not parse are only compared for equality.
pub(super) fn replaces(old: Option<&str>, new: Option<&str>) -> bool {
    match (numeric(old), numeric(new)) {
        (Some(old), Some(new)) => new > old,
        _ => old != new,
    }
}

fn numeric(version: Option<&str>) -> Option<u64> {
    version?.parse().ok()
}

impl Cache {
    /// Stores what the API said about a Lease; a new resourceVersion restarts its observed clock.
    ///
    /// `managedFields` is dropped: nothing here reads it, it is most of a Lease's size on a real
    /// API server (about 3 KiB of the 4 KiB), and an update that leaves it out keeps the server's
    /// copy (the API server takes the live object's field ownership when a request has none).
    pub fn upsert(&mut self, mut lease: Lease) {
        lease.metadata.managed_fields = None;
        let Some(name) = lease.metadata.name.as_deref() else {
            return;
        };
        let version = lease.metadata.resource_version.as_deref();
        let newer = self
            .leases
            .get(name)
            .is_none_or(|seen| replaces(seen.version(), version));
        if newer {
            let seen = Seen::after(&lease, Instant::now(), self.leases.get(name));
            self.leases.insert(name.to_owned(), seen);
            self.signals.notify(name);
        }
    }

    /// Forgets a Lease.
    pub fn remove(&mut self, name: &str) {
        if self.leases.remove(name).is_some() {
            self.signals.notify(name);
        }
    }

    /// Removes a Lease the API says is gone as of `version`, unless we hold a newer version of
    /// it (it was created again since).
    pub fn remove_as_of(&mut self, name: &str, version: Option<&str>) {
        let newer_here = self.leases.get(name).is_some_and(|seen| {
            matches!((numeric(seen.version()), numeric(version)), (Some(here), Some(gone)) if here > gone)
        });
        if !newer_here {
            self.remove(name);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// A Lease named `x` at resourceVersion 5, with another manager's label.
    pub(in crate::store::kubernetes) fn lease(holder: Option<&str>, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("x".into()),
                resource_version: Some("5".into()),
                labels: Some([("team".to_owned(), "theirs".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(10),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn expiry_counts_from_when_this_elector_saw_the_record() {
        let name = LockName::new("x").unwrap();
        let t0 = Instant::now();
        let seen = Seen::new(&lease(Some("a"), 3), t0);
        assert_eq!(seen.live_holder(t0 + Duration::from_secs(9)), Some("a"));
        assert_eq!(seen.live_holder(t0 + Duration::from_secs(10)), None);
        let record = seen.record(&name, t0);
        assert_eq!(record.token, 4, "token is leaseTransitions + 1");
        let released = Seen::new(&lease(Some(""), 3), t0);
        assert_eq!(released.live_holder(t0), None, "an empty holder is free");
    }

    #[test]
    fn the_cached_lease_decodes_to_what_was_stored() {
        let mut stored = lease(Some("a"), 3);
        stored
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("note".into(), "kept".into());
        let seen = Seen::new(&stored, Instant::now());
        assert_eq!(
            seen.lease(),
            stored,
            "every field, other managers' labels and annotations included"
        );
        assert_eq!(seen.version(), Some("5"));
    }

    fn version(mut lease: Lease, rv: &str) -> Lease {
        lease.metadata.resource_version = Some(rv.into());
        lease
    }

    #[test]
    fn an_older_watch_event_does_not_step_the_cache_back() {
        let mut cache = Cache {
            leases: BTreeMap::new(),
            signals: Signals::default(),
            synced: true,
            trouble: None,
        };
        let holder_of = |cache: &Cache| cache.leases["x"].holder().map(str::to_owned);
        // Our release answered with version 7; the watch still delivers our grant (6) after it.
        cache.upsert(version(lease(None, 3), "7"));
        cache.upsert(version(lease(Some("a"), 3), "6"));
        assert_eq!(holder_of(&cache), None, "the stale grant was ignored");
        cache.upsert(version(lease(None, 3), "7"));
        cache.upsert(version(lease(Some("b"), 4), "8"));
        assert_eq!(
            holder_of(&cache).as_deref(),
            Some("b"),
            "a newer version applies"
        );
        // A deletion as of an older version leaves a Lease created again since; a newer one removes it.
        cache.remove_as_of("x", Some("5"));
        assert!(cache.leases.contains_key("x"));
        cache.remove_as_of("x", Some("8"));
        assert!(!cache.leases.contains_key("x"));
        assert!(replaces(Some("9"), Some("10")), "numerically, not as text");
        assert!(
            replaces(Some("opaque-a"), Some("opaque-b")),
            "opaque versions: any change"
        );
    }
}
