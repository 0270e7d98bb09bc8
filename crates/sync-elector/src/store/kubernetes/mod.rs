//! The Kubernetes store: one `coordination.k8s.io/v1` Lease per lock, in client-go's LeaseLock
//! record format, so `kubectl get leases` shows who holds what and client-go leader election on
//! the same Lease respects ours (and ours respects it).
//!
//! - A reflector keeps a cache of the namespace's Leases: one list, then one watch, re-established
//!   when it ends and re-listed after `410 Gone`. Decisions read the cache, so a waiting elector
//!   sends no request but its watch; a holder sends one write per renewal.
//! - Every write is a compare-and-set on `resourceVersion`: a `409` means re-read, never
//!   overwrite.
//! - Expiry follows client-go's observed-time rule: a holding is expired once this elector has
//!   seen its record unchanged for `leaseDurationSeconds` *on its own monotonic clock*; `renewTime`
//!   is written for people and for client-go, never compared with the local wall clock.
//! - The fencing token is `leaseTransitions + 1`; every acquisition adds one to
//!   `leaseTransitions`. Release empties the holder as client-go's `ReleaseOnCancel` does; a
//!   Lease is never deleted, because the token lives in it.
//! - Leadership changes are recorded as Events on the Lease ([`events`]), and a `403` makes the
//!   store find out which permissions it lacks and report them until they are back ([`access`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use sync_protocol::LockName;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tracing::{debug, warn};

use super::grants::{self as store_grants, Decision, Grants, NotHolder};
use super::{Asks, Attempt, Changes, Claim, Conflict, Kind, Record, Store, StoreError, Ticket};
use crate::hooks::Takeover;
use crate::kube_api::{self, RequestError};

pub mod access;
mod cache;
pub mod events;
pub mod grants;

use access::Access;
use cache::Cache;
use events::{Change, Recorder};
use grants::{self as lease_grants, GRANTS_ANNOTATION, KIND_ANNOTATION, PERMITS_ANNOTATION};

/// The label on every Lease this store creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sync-elector");

/// The annotation holding the holder's value (what followers read).
pub const VALUE_ANNOTATION: &str = "sync.metaparticle.io/value";

/// The annotation naming, comma-separated, the Services whose leader EndpointSlice follows this
/// Lease (`--publish`). It stays on the Lease, so every elector that takes the lock over fences
/// those slices first, whether it publishes them or not.
pub const PUBLISHED_ANNOTATION: &str = "sync.metaparticle.io/published-to";

/// How many compare-and-set conflicts one operation re-reads through before giving up.
const CONFLICT_RETRIES: usize = 3;

/// The same for a renewal or release of a semaphore's or read-write lock's grant: every holder
/// of the name writes the same Lease, so conflicts are the rule under load, and giving up a
/// renewal costs a holder its grant.
const GRANT_RETRIES: usize = 20;

/// Locks as Lease objects in one namespace.
pub struct KubernetesStore {
    api: Api<Lease>,
    namespace: String,
    cache: Arc<Mutex<Cache>>,
    reflector: JoinHandle<()>,
    access: Arc<Access>,
    checker: JoinHandle<()>,
    events: Recorder,
    takeover: Option<Arc<dyn Takeover>>,
}

/// The Services a Lease names as published ([`PUBLISHED_ANNOTATION`]).
fn published(lease: Option<&Lease>) -> Vec<String> {
    lease
        .and_then(|l| l.metadata.annotations.as_ref())
        .and_then(|a| a.get(PUBLISHED_ANNOTATION))
        .map(|names| {
            names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for KubernetesStore {
    fn drop(&mut self) {
        self.reflector.abort();
        self.checker.abort();
    }
}

fn rv(lease: &Lease) -> Option<&str> {
    lease.metadata.resource_version.as_deref()
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn duration(lease: &Lease) -> Duration {
    let secs = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(0);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn transitions(lease: &Lease) -> u64 {
    let t = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    u64::try_from(t).unwrap_or(0)
}

fn value(lease: &Lease) -> Option<String> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VALUE_ANNOTATION).cloned())
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Turns a failed request into a store error whose message says what to fix, keeping the
/// request's error as its cause.
fn unavailable(step: &str, err: RequestError) -> StoreError {
    let hint = match err.code() {
        Some(403) => {
            "; give the elector's service account the Role in deploy/rbac.yaml (get, list, watch, create, update on leases)"
        }
        Some(404) => "; check the namespace (--namespace)",
        _ => "",
    };
    StoreError::caused_by("kubernetes", format!("{step}: {err}{hint}"), err)
}

/// [`unavailable`], telling `access` of a 403.
fn failed(access: &Access, step: &str, err: RequestError) -> StoreError {
    let forbidden = err.code() == Some(403);
    let error = unavailable(step, err);
    if forbidden && let StoreError::Unavailable { message, .. } = &error {
        access.forbidden(message);
    }
    error
}

impl KubernetesStore {
    /// A store over `client` in `namespace`, running `takeover`, if any, before every write
    /// that takes a lock over; starts its reflector, its permission checker and its Event writer
    /// at once.
    pub fn new(client: kube::Client, namespace: &str, takeover: Option<Arc<dyn Takeover>>) -> Self {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let cache = Arc::new(Mutex::new(Cache::default()));
        let access = Arc::new(Access::default());
        let reflector = tokio::spawn(reflect(api.clone(), cache.clone(), access.clone()));
        Self {
            api,
            namespace: namespace.to_owned(),
            cache,
            reflector,
            checker: access::start(client.clone(), namespace, access.clone()),
            access,
            events: Recorder::start(client, namespace),
            takeover,
        }
    }

    /// Turns a failed request into a store error; a 403 also tells the permission checker.
    fn failed(&self, step: &str, err: RequestError) -> StoreError {
        failed(&self.access, step, err)
    }

    /// Records a leadership change of `name`'s Lease, whose uid is `uid`, as an Event.
    fn record(&self, name: &LockName, uid: Option<String>, holder: &str, what: &'static str) {
        self.events.record(Change {
            lease: name.to_string(),
            uid,
            holder: holder.to_owned(),
            what,
        });
    }

    /// The namespace of the Leases.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().expect("kubernetes cache poisoned")
    }

    /// The freshest Lease known: the cache once synced, else the API. `None` when absent.
    async fn current(&self, name: &str, refresh: bool) -> Result<Option<Lease>, StoreError> {
        if !refresh {
            let cache = self.cache();
            if cache.synced {
                return Ok(cache.leases.get(name).map(|s| s.lease(name)));
            }
        }
        let lease = kube_api::send("leases", "get", self.api.get_opt(name))
            .await
            .map_err(|e| self.failed("reading the Lease", e))?;
        let mut cache = self.cache();
        match lease {
            Some(lease) => {
                cache.upsert(lease);
                Ok(cache.leases.get(name).map(|s| s.lease(name)))
            }
            None => {
                cache.remove(name);
                Ok(None)
            }
        }
    }

    /// Writes `lease` (create when `create`, else replace with its resourceVersion) and caches
    /// the answer. `Ok(None)` on a compare-and-set conflict.
    async fn write(
        &self,
        lease: Lease,
        create: bool,
        step: &str,
    ) -> Result<Option<Lease>, StoreError> {
        match kube_api::write(&self.api, &lease, create).await {
            Ok(Some(written)) => {
                self.cache().upsert(written.clone());
                Ok(Some(written))
            }
            Ok(None) => {
                debug!(lock = ?lease.metadata.name, "conflict; re-reading");
                Ok(None)
            }
            Err(err) if !create && err.code() == Some(404) => Err(StoreError::NotHolder),
            Err(err) => Err(self.failed(step, err)),
        }
    }

    fn lease_for(name: &LockName, old: Option<&Lease>, claim: &Claim) -> Lease {
        let now = now_micro();
        let mut metadata = old
            .map(|l| l.metadata.clone())
            .unwrap_or_else(|| ObjectMeta {
                name: Some(name.to_string()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..ObjectMeta::default()
            });
        let annotations = metadata.annotations.get_or_insert_with(Default::default);
        for key in [KIND_ANNOTATION, PERMITS_ANNOTATION, GRANTS_ANNOTATION] {
            annotations.remove(key);
        }
        match &claim.value {
            Some(v) => annotations.insert(VALUE_ANNOTATION.to_owned(), v.clone()),
            None => annotations.remove(VALUE_ANNOTATION),
        };
        let transitions = old.map_or(0, |l| transitions(l) + 1);
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(claim.holder.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(claim.ttl.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(i32::try_from(transitions).unwrap_or(i32::MAX)),
                ..old.and_then(|l| l.spec.clone()).unwrap_or_default()
            }),
        }
    }

    fn ticket(lease: &Lease) -> Ticket {
        Ticket {
            valid_from: None,
            holder: holder(lease).unwrap_or_default().to_owned(),
            token: transitions(lease) + 1,
            ttl: duration(lease),
            value: value(lease),
            revision: rv(lease).unwrap_or_default().to_owned(),
            held: None,
        }
    }

    /// The cached Lease if `ticket` still holds it; `NotHolder` otherwise.
    async fn owned(
        &self,
        name: &LockName,
        ticket: &Ticket,
        refresh: bool,
    ) -> Result<Lease, StoreError> {
        match self.current(name.as_str(), refresh).await? {
            Some(current)
                if holder(&current) == Some(ticket.holder.as_str())
                    && transitions(&current) + 1 == ticket.token =>
            {
                Ok(current)
            }
            _ => Err(StoreError::NotHolder),
        }
    }
}

/// A semaphore's or read-write lock's Lease someone edited into nonsense: the message says what
/// to fix.
fn malformed(err: lease_grants::Malformed) -> StoreError {
    StoreError::caused_by("kubernetes", err.to_string(), err)
}

impl KubernetesStore {
    /// `name`'s record at `now` as the cache has it; a free lock when the cache has no Lease.
    fn cached_record(&self, name: &LockName, now: Instant) -> Record {
        self.cache()
            .leases
            .get(name.as_str())
            .map_or(Record::lock(name.clone(), None, 0), |seen| {
                seen.record(name, now)
            })
    }

    /// The record of grants the Lease keeps, the Lease itself (`None`: there is none yet), and
    /// `Err(Conflict)` when a lock holds the Lease.
    async fn read_grants(
        &self,
        name: &LockName,
        asked: Kind,
        refresh: bool,
    ) -> Result<Result<(Grants, Option<Lease>), Conflict>, StoreError> {
        // Brings the cache up to date; the decision and the write then both come from the cache's
        // Lease, whose entries it has dated (a write based on a version it has since replaced
        // fails its compare-and-set, and is decided again).
        self.current(name.as_str(), refresh).await?;
        let now = Instant::now();
        let cache = self.cache();
        let Some(seen) = cache.leases.get(name.as_str()) else {
            return Ok(Ok((Grants::default(), None)));
        };
        let lease = seen.lease(name.as_str());
        let grants = match seen.grants_of(&lease, now) {
            Some(grants) => grants.map_err(malformed)?,
            None if seen.live_holder(now).is_some() => {
                return Ok(Err(Conflict {
                    is: Kind::Lock,
                    asked,
                }));
            }
            // A lock's Lease nobody holds: its tokens carry over.
            None => Grants {
                kind: None,
                token: seen.record(name, now).token,
                entries: Vec::new(),
            },
        };
        Ok(Ok((grants, Some(lease))))
    }

    /// `lease` (or a new Lease for `name`) carrying `grants`.
    fn lease_with(name: &LockName, lease: Option<Lease>, grants: &Grants) -> Lease {
        let mut lease = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        if let Some(annotations) = lease.metadata.annotations.as_mut() {
            // A lock's value, and the Services its leader was published to (fenced before a
            // lock's Lease becomes a semaphore's, in try_grant): neither belongs to grants.
            annotations.remove(VALUE_ANNOTATION);
            annotations.remove(PUBLISHED_ANNOTATION);
        }
        lease_grants::write(grants, &mut lease, now_micro());
        lease
    }

    /// A claim on a semaphore or read-write lock: one compare-and-set on the name's Lease,
    /// decided by [`Grants::decide`] (docs/semaphores.md).
    async fn try_grant(
        &self,
        name: &LockName,
        claim: &Claim,
        asks: Asks,
    ) -> Result<Attempt, StoreError> {
        let mut refresh = false;
        for _ in 0..CONFLICT_RETRIES {
            let (mut grants, lease) = match self.read_grants(name, asks.kind(), refresh).await? {
                Ok(read) => read,
                Err(conflict) => return Ok(Attempt::Conflict(conflict)),
            };
            refresh = true;
            let create = lease.is_none();
            if let Some(takeover) = &self.takeover {
                let services = published(lease.as_ref());
                if !services.is_empty() {
                    takeover
                        .before_takeover(name, &claim.holder, &services)
                        .await?;
                }
            }
            let now = Instant::now();
            let decision = grants.decide(
                &store_grants::Claim {
                    holder: &claim.holder,
                    asks,
                    ttl: claim.ttl,
                    value: claim.value.as_deref(),
                },
                now,
            );
            let granted = match decision {
                Decision::Conflict(conflict) => return Ok(Attempt::Conflict(conflict)),
                Decision::Busy { retry_at, changed } => {
                    if changed
                        && self
                            .write(
                                Self::lease_with(name, lease, &grants),
                                create,
                                "waiting in the Lease",
                            )
                            .await?
                            .is_none()
                    {
                        continue;
                    }
                    let current = self.cached_record(name, Instant::now());
                    return Ok(Attempt::Busy {
                        current,
                        retry_at: Some(retry_at),
                    });
                }
                Decision::Granted(granted) => granted,
            };
            let lease = Self::lease_with(name, lease, &grants);
            if let Some(written) = self
                .write(lease, create, "taking a grant in the Lease")
                .await?
            {
                return Ok(Attempt::Acquired(Ticket {
                    holder: granted.holder,
                    token: granted.token,
                    ttl: granted.ttl,
                    value: granted.value,
                    revision: rv(&written).unwrap_or_default().to_owned(),
                    valid_from: None,
                    held: Some(granted.held),
                }));
            }
        }
        let current = self.cached_record(name, Instant::now());
        Ok(Attempt::Busy {
            current,
            retry_at: None,
        })
    }

    /// Changes the grants in `name`'s Lease with `change`, by compare-and-set; `NotHolder` when
    /// `change` finds nothing of the caller's, or the Lease is gone or a lock's.
    async fn change_grants(
        &self,
        name: &LockName,
        step: &str,
        change: impl Fn(&mut Grants, Instant) -> Result<(), NotHolder>,
    ) -> Result<Lease, StoreError> {
        let mut refresh = false;
        for _ in 0..GRANT_RETRIES {
            let (mut grants, lease) = match self.read_grants(name, Kind::ReadWrite, refresh).await?
            {
                Ok((grants, Some(lease))) => (grants, lease),
                Ok((_, None)) | Err(_) => return Err(StoreError::NotHolder),
            };
            refresh = true;
            change(&mut grants, Instant::now()).map_err(|_| StoreError::NotHolder)?;
            let lease = Self::lease_with(name, Some(lease), &grants);
            if let Some(written) = self.write(lease, false, step).await? {
                return Ok(written);
            }
        }
        Err(StoreError::unavailable(
            "kubernetes",
            format!("{step} {name}: it kept changing under us"),
        ))
    }
}

#[async_trait]
impl Store for KubernetesStore {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn try_acquire(&self, name: &LockName, claim: &Claim) -> Result<Attempt, StoreError> {
        if let Some(message) = self.access.denied() {
            return Err(StoreError::unavailable("kubernetes", message));
        }
        if let Some(asks) = claim.asks {
            return self.try_grant(name, claim, asks).await;
        }
        let mut refresh = false;
        for _ in 0..CONFLICT_RETRIES {
            let current = self.current(name.as_str(), refresh).await?;
            refresh = true;
            if current.is_some() {
                let cache = self.cache();
                let now = Instant::now();
                if let Some(seen) = cache.leases.get(name.as_str())
                    && let Some(grants) = seen.grants(name.as_str(), now)
                {
                    let grants = grants.map_err(malformed)?;
                    if let Some(is) = grants.live_kind(now) {
                        return Ok(Attempt::Conflict(Conflict {
                            is,
                            asked: Kind::Lock,
                        }));
                    }
                } else if let Some(seen) = cache.leases.get(name.as_str())
                    && seen.live_holder(now).is_some()
                {
                    return Ok(Attempt::Busy {
                        current: seen.record(name, Instant::now()),
                        retry_at: Some(seen.expires_at()),
                    });
                }
            }
            let create = current.is_none();
            let mut lease = Self::lease_for(name, current.as_ref(), claim);
            if let Some(takeover) = &self.takeover {
                let services = takeover
                    .before_takeover(name, &claim.holder, &published(current.as_ref()))
                    .await?;
                if !services.is_empty() {
                    lease
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(PUBLISHED_ANNOTATION.to_owned(), services.join(","));
                }
            }
            if let Some(written) = self.write(lease, create, "taking the Lease").await? {
                self.record(
                    name,
                    written.metadata.uid.clone(),
                    &claim.holder,
                    "became leader",
                );
                return Ok(Attempt::Acquired(Self::ticket(&written)));
            }
        }
        let current = self.cached_record(name, Instant::now());
        Ok(Attempt::Busy {
            current,
            retry_at: None,
        })
    }

    async fn renew(&self, name: &LockName, ticket: &Ticket) -> Result<Ticket, StoreError> {
        if ticket.held.is_some() {
            let written = self
                .change_grants(name, "renewing a grant in the Lease", |grants, now| {
                    grants.renew(&ticket.holder, ticket.token, now).map(|_| ())
                })
                .await?;
            return Ok(Ticket {
                revision: rv(&written).unwrap_or_default().to_owned(),
                ..ticket.clone()
            });
        }
        let mut refresh = false;
        for _ in 0..CONFLICT_RETRIES {
            let mut current = self.owned(name, ticket, refresh).await?;
            refresh = true;
            if let Some(spec) = current.spec.as_mut() {
                spec.renew_time = Some(now_micro());
            }
            if let Some(written) = self.write(current, false, "renewing the Lease").await? {
                return Ok(Self::ticket(&written));
            }
        }
        Err(StoreError::unavailable(
            "kubernetes",
            format!("renewing the Lease {name}: it kept changing under us"),
        ))
    }

    async fn release(&self, name: &LockName, ticket: &Ticket) -> Result<(), StoreError> {
        if ticket.held.is_some() {
            self.change_grants(name, "releasing a grant in the Lease", |grants, _| {
                grants.release(&ticket.holder, ticket.token)
            })
            .await?;
            return Ok(());
        }
        let mut refresh = false;
        for _ in 0..CONFLICT_RETRIES {
            let mut current = self.owned(name, ticket, refresh).await?;
            refresh = true;
            if let Some(spec) = current.spec.as_mut() {
                // As client-go's ReleaseOnCancel writes it: an empty holder (the empty string,
                // not an absent field), a 1 s duration, acquire and renew times of now, the same
                // transitions.
                let now = now_micro();
                spec.holder_identity = Some(String::new());
                spec.lease_duration_seconds = Some(1);
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
            }
            if let Some(annotations) = current.metadata.annotations.as_mut() {
                annotations.remove(VALUE_ANNOTATION);
            }
            if let Some(written) = self.write(current, false, "releasing the Lease").await? {
                self.record(
                    name,
                    written.metadata.uid.clone(),
                    &ticket.holder,
                    "stopped leading",
                );
                return Ok(());
            }
        }
        Err(StoreError::unavailable(
            "kubernetes",
            format!("releasing the Lease {name}: it kept changing under us"),
        ))
    }

    async fn get(&self, name: &LockName) -> Result<Option<Record>, StoreError> {
        self.current(name.as_str(), false).await?;
        let cache = self.cache();
        Ok(cache
            .leases
            .get(name.as_str())
            .map(|seen| seen.record(name, Instant::now())))
    }

    async fn list(&self) -> Result<Vec<Record>, StoreError> {
        if !self.cache().synced {
            let list = kube_api::send("leases", "list", self.api.list(&ListParams::default()))
                .await
                .map_err(|e| self.failed("listing Leases", e))?;
            let mut cache = self.cache();
            for lease in list.items {
                cache.upsert(lease);
            }
        }
        let now = Instant::now();
        let cache = self.cache();
        Ok(cache
            .leases
            .iter()
            .filter_map(|(name, seen)| {
                LockName::new(name.as_str())
                    .ok()
                    .map(|n| seen.record(&n, now))
            })
            .collect())
    }

    fn subscribe(&self, name: &LockName) -> Changes {
        self.cache().signals.subscribe(name.as_str())
    }

    async fn abandon(&self, name: &LockName, claim: &Claim) {
        if claim.asks != Some(Asks::Exclusive) {
            return;
        }
        // A writer that stops waiting takes its entry out, so the readers behind it need not
        // wait for it to run out; if that fails, it runs out after its ttl.
        let _ = self
            .change_grants(name, "withdrawing a waiting writer", |grants, _| {
                grants.abandon(&claim.holder).then_some(()).ok_or(NotHolder)
            })
            .await;
    }

    fn lost(&self, name: &LockName, holder: &str) {
        let uid = self.cache().leases.get(name.as_str()).map(|s| s.uid());
        if let Some(uid) = uid {
            self.record(name, uid, holder, "stopped leading");
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if let Some(message) = self.access.denied() {
            return Err(StoreError::unavailable("kubernetes", message));
        }
        let cache = self.cache();
        match (&cache.trouble, cache.synced) {
            (Some(trouble), _) => Err(StoreError::unavailable("kubernetes", trouble.clone())),
            (None, false) => Err(StoreError::unavailable(
                "kubernetes",
                "the first list of Leases has not completed yet",
            )),
            (None, true) => Ok(()),
        }
    }
}

/// Keeps the cache in step with the API server: list, then watch from the list's
/// resourceVersion; re-watch when a watch ends, re-list after 410 Gone, back off on errors.
async fn reflect(api: Api<Lease>, cache: Arc<Mutex<Cache>>, access: Arc<Access>) {
    let mut backoff = Duration::from_millis(200);
    let trouble = |message: String| {
        let mut c = cache.lock().expect("kubernetes cache poisoned");
        if c.trouble.as_ref() != Some(&message) {
            warn!(%message, "Kubernetes store");
        }
        c.trouble = Some(message);
    };
    loop {
        let list = match kube_api::send("leases", "list", api.list(&ListParams::default())).await {
            Ok(list) => list,
            Err(err) => {
                let timed_out = matches!(err, RequestError::TimedOut(_));
                trouble(failed(&access, "listing Leases", err).to_string());
                if !timed_out {
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                continue;
            }
        };
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        {
            let mut c = cache.lock().expect("kubernetes cache poisoned");
            let listed: std::collections::HashSet<&str> = list
                .items
                .iter()
                .filter_map(|l| l.metadata.name.as_deref())
                .collect();
            let gone: Vec<String> = c
                .leases
                .keys()
                .filter(|name| !listed.contains(name.as_str()))
                .cloned()
                .collect();
            for name in gone {
                c.remove_as_of(&name, list.metadata.resource_version.as_deref());
            }
            for lease in list.items {
                c.upsert(lease);
            }
            c.synced = true;
            c.trouble = None;
        }
        backoff = Duration::from_millis(200);
        'watch: loop {
            let params = WatchParams::default().timeout(290);
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(err) => {
                    trouble(failed(&access, "watching Leases", err.into()).to_string());
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let mut stream = std::pin::pin!(stream);
            let mut events = 0usize;
            while let Some(event) = stream.next().await {
                events += 1;
                let mut c = cache.lock().expect("kubernetes cache poisoned");
                c.trouble = None;
                match event {
                    Ok(WatchEvent::Added(lease) | WatchEvent::Modified(lease)) => {
                        version = rv(&lease).unwrap_or(&version).to_owned();
                        c.upsert(lease);
                    }
                    Ok(WatchEvent::Deleted(lease)) => {
                        version = rv(&lease).unwrap_or(&version).to_owned();
                        if let Some(name) = &lease.metadata.name {
                            c.remove_as_of(name, rv(&lease));
                        }
                    }
                    Ok(WatchEvent::Bookmark(mark)) => version = mark.metadata.resource_version,
                    Ok(WatchEvent::Error(status)) if status.code == 410 => break 'watch,
                    Ok(WatchEvent::Error(status)) => {
                        drop(c);
                        trouble(format!(
                            "watching Leases: {} {}",
                            status.code, status.message
                        ));
                        break;
                    }
                    Err(kube::Error::Api(status)) if status.code == 410 => break 'watch,
                    Err(err) => {
                        drop(c);
                        trouble(unavailable("watching Leases", err.into()).to_string());
                        break;
                    }
                }
            }
            if events == 0 {
                // A watch that ends at once, again and again, must not spin.
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            } else {
                backoff = Duration::from_millis(200);
            }
        }
        debug!("watch history expired; listing again");
    }
}

#[cfg(test)]
mod tests {
    use super::cache::tests::lease;
    use super::*;

    #[test]
    fn every_acquisition_adds_a_transition() {
        let name = LockName::new("x").unwrap();
        let claim = Claim {
            holder: "b/1".into(),
            ttl: Duration::from_secs(15),
            value: Some("addr".into()),
            asks: None,
        };
        let fresh = KubernetesStore::lease_for(&name, None, &claim);
        assert_eq!(fresh.spec.as_ref().unwrap().lease_transitions, Some(0));
        assert_eq!(
            fresh
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get(MANAGED_BY.0)
                .map(String::as_str),
            Some(MANAGED_BY.1)
        );
        let next = KubernetesStore::lease_for(&name, Some(&lease(Some("a"), 3)), &claim);
        let spec = next.spec.unwrap();
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.holder_identity.as_deref(), Some("b/1"));
        assert_eq!(
            next.metadata.resource_version.as_deref(),
            Some("5"),
            "compare-and-set"
        );
    }
}
