//! The Kubernetes store's cache of the namespace's Leases, fed by the reflector and by the API's
//! answers to our own reads and writes.
//!
//! Each Lease is kept as the facts the lock reads from it (holder, duration, transitions, value,
//! resourceVersion) and the few more a write carries back (uid, acquire and renew times). A Lease
//! as this store writes a lock's (our label, at most the value annotation, no other metadata)
//! is rebuilt from those facts when this elector writes it; any other Lease, one another manager
//! labelled or annotated, a semaphore's, a published leader's, is also kept whole as compact
//! JSON, so a write keeps everything it does not change. A decoded `Lease` costs about three
//! times its JSON (every optional field of `ObjectMeta` and `LeaseSpec` takes room, and each
//! label map is a B-tree node), and its JSON about twice the facts: with thousands of held locks
//! the cache is most of the store's memory.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use sync_protocol::LockName;
use tokio::time::Instant;

use super::grants::{self as lease_grants, Sightings};
use super::{MANAGED_BY, VALUE_ANNOTATION};
use crate::store::grants::Grants;
use crate::store::{Holding, Record, Signals};

/// Every Lease of the namespace this elector knows, and the change signals of their locks.
#[derive(Default)]
pub(super) struct Cache {
    /// Each boxed, so the map's nodes (half empty after in-order inserts) hold only a pointer.
    pub leases: BTreeMap<String, Box<Seen>>,
    pub signals: Signals,
    /// Whether the first list has completed, so the cache can answer alone.
    pub synced: bool,
    /// The last failure to list or watch, cleared by the next success.
    pub trouble: Option<String>,
}

/// A Lease, and when this elector saw its current resourceVersion first.
pub(super) struct Seen {
    version: Option<Box<str>>,
    uid: Option<Uid>,
    /// `spec.holderIdentity` as written: empty once released.
    holder: Option<Box<str>>,
    duration: Option<i32>,
    transitions: Option<i32>,
    acquired: Option<Timestamp>,
    renewed: Option<Timestamp>,
    value: Option<Box<str>>,
    observed_at: Instant,
    /// For a semaphore's or read-write lock's Lease: when each of its entries was first seen as
    /// it is. `None` for a lock's.
    sightings: Option<Sightings>,
    /// The whole Lease as JSON (without `managedFields`), when the facts above do not rebuild
    /// it; `None` for a lock's Lease as this store writes it.
    whole: Option<Box<[u8]>>,
}

impl Seen {
    /// `lease` as seen at `observed_at`.
    pub fn new(lease: &Lease, observed_at: Instant) -> Self {
        let spec = lease.spec.as_ref();
        let value = super::value(lease).map(String::into_boxed_str);
        let whole = (!rebuilds(lease, value.as_deref())).then(|| {
            serde_json::to_vec(lease)
                .expect("a Lease serializes")
                .into_boxed_slice()
        });
        Self {
            version: lease.metadata.resource_version.as_deref().map(Box::from),
            uid: lease.metadata.uid.as_deref().map(Uid::new),
            holder: spec
                .and_then(|s| s.holder_identity.as_deref())
                .map(Box::from),
            duration: spec.and_then(|s| s.lease_duration_seconds),
            transitions: spec.and_then(|s| s.lease_transitions),
            acquired: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
            renewed: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            value,
            observed_at,
            sightings: None,
            whole,
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
    pub fn grants(
        &self,
        name: &str,
        now: Instant,
    ) -> Option<Result<Grants, lease_grants::Malformed>> {
        // A lock's Lease has no sightings: not decoded for nothing.
        self.sightings.as_ref()?;
        self.grants_of(&self.lease(name), now)
    }

    /// [`Seen::grants`], read from `lease`, this Lease already decoded by [`Seen::lease`].
    pub fn grants_of(
        &self,
        lease: &Lease,
        now: Instant,
    ) -> Option<Result<Grants, lease_grants::Malformed>> {
        let sightings = self.sightings.as_ref()?;
        lease_grants::read(lease, sightings, now).transpose()
    }

    /// The Lease's uid, when it has one.
    pub fn uid(&self) -> Option<String> {
        self.uid.as_ref().map(Uid::text)
    }

    /// The Lease named `name` itself, to write it back changed: everything a write carries
    /// (its namespace comes from the request's path; the API server keeps its creation time and
    /// field owners).
    pub fn lease(&self, name: &str) -> Lease {
        if let Some(json) = &self.whole {
            return serde_json::from_slice(json)
                .expect("a cached Lease decodes: it was encoded here");
        }
        Lease {
            metadata: plain_metadata(
                name,
                self.uid().as_deref(),
                self.version.as_deref(),
                self.value.as_deref(),
            ),
            spec: Some(LeaseSpec {
                holder_identity: self.holder.as_deref().map(str::to_owned),
                lease_duration_seconds: self.duration,
                lease_transitions: self.transitions,
                acquire_time: self.acquired.map(MicroTime),
                renew_time: self.renewed.map(MicroTime),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Its resourceVersion.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Its holder, whether or not the holding has run out (none when empty).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(
            self.duration
                .and_then(|d| u64::try_from(d).ok())
                .unwrap_or(0),
        )
    }

    fn transitions(&self) -> u64 {
        self.transitions
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0)
    }

    /// When the holding runs out unless the Lease changes: counted from when this elector saw
    /// this version first.
    pub fn expires_at(&self) -> Instant {
        self.observed_at + self.ttl()
    }

    /// The live holder, judged by observed time.
    pub fn live_holder(&self, now: Instant) -> Option<&str> {
        self.holder().filter(|_| now < self.expires_at())
    }

    /// The name's record at `now`.
    pub fn record(&self, name: &LockName, now: Instant) -> Record {
        if let Some(Ok(grants)) = self.grants(name.as_str(), now) {
            return grants.record(name, now);
        }
        let transitions = self.transitions();
        Record {
            name: name.clone(),
            holding: self.live_holder(now).map(|h| Holding {
                holder: h.to_owned(),
                value: self.value.as_deref().map(str::to_owned),
                ttl: self.ttl(),
                expires_at: self.expires_at(),
                since: self.acquired.map(SystemTime::from),
            }),
            token: if self.holder().is_some() || transitions > 0 {
                transitions + 1
            } else {
                0
            },
            kind: crate::store::Kind::Lock,
            grants: Vec::new(),
        }
    }
}

/// A Lease's uid. The API server writes them as lowercase RFC 4122 UUIDs, kept here as their 16
/// bytes rather than 36 characters on the heap; anything else is kept as written.
enum Uid {
    Uuid([u8; 16]),
    Other(Box<str>),
}

impl Uid {
    fn new(text: &str) -> Self {
        match uuid::Uuid::try_parse(text) {
            Ok(uuid)
                if uuid
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    == text =>
            {
                Self::Uuid(uuid.into_bytes())
            }
            _ => Self::Other(text.into()),
        }
    }

    /// The uid exactly as the API server wrote it.
    fn text(&self) -> String {
        match self {
            Self::Uuid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().to_string(),
            Self::Other(text) => text.to_string(),
        }
    }
}

/// The metadata this store writes on a lock's Lease: its name, our label, the holder's value.
fn plain_metadata(
    name: &str,
    uid: Option<&str>,
    version: Option<&str>,
    value: Option<&str>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        uid: uid.map(str::to_owned),
        resource_version: version.map(str::to_owned),
        labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
        annotations: value.map(|v| [(VALUE_ANNOTATION.to_owned(), v.to_owned())].into()),
        ..ObjectMeta::default()
    }
}

/// Whether the facts [`Seen`] keeps rebuild everything of `lease` that a write carries: only
/// our label, at most the value annotation, no other metadata, and no spec field but the five
/// this store writes. Every field is named, so a field a new k8s-openapi adds is considered here.
fn rebuilds(lease: &Lease, value: Option<&str>) -> bool {
    let ObjectMeta {
        annotations,
        creation_timestamp: _,
        deletion_grace_period_seconds,
        deletion_timestamp,
        finalizers,
        generate_name,
        generation,
        labels,
        managed_fields: _,
        name: _,
        namespace: _,
        owner_references,
        resource_version: _,
        self_link,
        uid: _,
    } = &lease.metadata;
    let only_ours = labels.as_ref().is_some_and(|l| {
        l.len() == 1 && l.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
    });
    let annotations_rebuilt =
        annotations.as_ref().map_or(0, |a| a.len()) == usize::from(value.is_some());
    let spec_rebuilt = lease.spec.as_ref().is_some_and(|s| {
        let LeaseSpec {
            acquire_time: _,
            holder_identity: _,
            lease_duration_seconds: _,
            lease_transitions: _,
            preferred_holder,
            renew_time: _,
            strategy,
        } = s;
        preferred_holder.is_none() && strategy.is_none()
    });
    only_ours
        && annotations_rebuilt
        && spec_rebuilt
        && deletion_grace_period_seconds.is_none()
        && deletion_timestamp.is_none()
        && finalizers.as_ref().is_none_or(Vec::is_empty)
        && generate_name.is_none()
        && generation.is_none()
        && owner_references.as_ref().is_none_or(Vec::is_empty)
        && self_link.is_none()
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
            let seen = Seen::after(&lease, Instant::now(), self.leases.get(name).map(|s| &**s));
            self.leases.insert(name.to_owned(), Box::new(seen));
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
            seen.lease("x"),
            stored,
            "every field, other managers' labels and annotations included"
        );
        assert_eq!(seen.version(), Some("5"));
    }

    #[test]
    fn a_lock_lease_as_this_store_writes_it_is_kept_as_facts_alone() {
        let mut written = lease(Some("a"), 3);
        written.metadata.labels = Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into());
        written.metadata.annotations = Some([(VALUE_ANNOTATION.into(), "addr".into())].into());
        written.metadata.uid = Some("4f1c".into());
        let spec = written.spec.as_mut().unwrap();
        spec.acquire_time = Some(MicroTime("2026-12-04T10:00:00.123456Z".parse().unwrap()));
        spec.renew_time = Some(MicroTime("2026-12-04T10:00:05.654321Z".parse().unwrap()));
        let mut answered = written.clone();
        answered.metadata.namespace = Some("prod".into());
        answered.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-04T09:00:00Z".parse().unwrap(),
            ));
        let seen = Seen::new(&answered, Instant::now());
        assert!(seen.whole.is_none(), "no JSON kept");
        assert_eq!(
            seen.lease("x"),
            written,
            "everything a write carries; the server keeps namespace and creation time"
        );

        // Released, on a server that keeps an emptied annotation map: still facts alone.
        let spec = written.spec.as_mut().unwrap();
        spec.holder_identity = Some(String::new());
        written.metadata.annotations = Some(BTreeMap::new());
        let seen = Seen::new(&written, Instant::now());
        assert!(seen.whole.is_none());
        let rebuilt = seen.lease("x");
        assert_eq!(
            rebuilt.spec.unwrap().holder_identity.as_deref(),
            Some(""),
            "the empty holder, as written"
        );
        assert_eq!(rebuilt.metadata.annotations, None);
        assert_eq!(seen.holder(), None, "an empty holder is free");
    }

    #[test]
    fn a_uid_reads_back_exactly_as_written() {
        for written in [
            "0b6f4f3e-64c1-4a53-9a4f-2d2f0e2c7b1a",
            "0B6F4F3E-64C1-4A53-9A4F-2D2F0E2C7B1A",
            "0b6f4f3e64c14a539a4f2d2f0e2c7b1a",
            "4f1c",
            "",
        ] {
            let uid = Uid::new(written);
            assert_eq!(uid.text(), written);
            let compact = matches!(uid, Uid::Uuid(_));
            assert_eq!(
                compact,
                written.len() == 36 && written == written.to_lowercase()
            );
        }
    }

    #[test]
    fn a_lease_with_anything_else_is_kept_whole() {
        let ours = || {
            let mut lease = lease(Some("a"), 3);
            lease.metadata.labels = Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into());
            lease
        };
        let mut others: Vec<Lease> = Vec::new();
        let mut labelled = ours();
        labelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "theirs".into());
        others.push(labelled);
        let mut annotated = ours();
        annotated.metadata.annotations = Some([("note".into(), "kept".into())].into());
        others.push(annotated);
        let mut owned = ours();
        owned.metadata.finalizers = Some(vec!["example.com/keep".into()]);
        others.push(owned);
        let mut preferred = ours();
        preferred.spec.as_mut().unwrap().preferred_holder = Some("b".into());
        others.push(preferred);
        let mut unlabelled = ours();
        unlabelled.metadata.labels = None;
        others.push(unlabelled);
        for lease in others {
            let seen = Seen::new(&lease, Instant::now());
            assert!(seen.whole.is_some(), "{lease:?}");
            assert_eq!(seen.lease("x"), lease);
        }
        assert!(Seen::new(&ours(), Instant::now()).whole.is_none());
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
