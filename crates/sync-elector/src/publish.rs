//! The leader-only Service: while a holder here holds a lock named by
//! `--publish LOCK=SERVICE:PORT`, the selector-less Service SERVICE has one EndpointSlice,
//! `SERVICE-leader`, listing this pod's IP with PORT, and nothing else (docs/kubernetes.md).
//!
//! Every elector writes that same object, compare-and-set on its `resourceVersion`:
//! - **Fence.** Before any elector writes a Lease that takes LOCK over (free, released or
//!   observed expired), it empties the slice, always with a real write. So the old holder's
//!   address is gone before anyone else holds the lock, even when that holder died or is paused,
//!   and a paused holder's late write, based on an earlier read, fails with `409`.
//! - **Publish.** After its grant, the holder reads the slice, checks *after that read* that its
//!   lease is still valid, and writes its address on top of what it read.
//! - **Withdraw.** When the lease ends (release, loss, shutdown), the holder empties the slice
//!   before the store gives the Lease up; and when renewals fail, it empties it once less than
//!   [`WITHDRAW_AHEAD`] of the ttl is left before the renew deadline, so the address is gone by
//!   that deadline (it comes back if a renewal succeeds).
//! - **Resync.** While holding, it reads again every [`RESYNC`] and puts its address back if a
//!   contender's fence took it down without winning the lock.
//!
//! A `403` does not stop the lock: it is logged once, with the verbs to grant, and shown by
//! [`Announce::describe`]; publishing resumes when the API allows it again.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use sync_protocol::LockName;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{error, info, warn};

use crate::config::Publication;
use crate::manager::{Announce, Lease};
use crate::store::StoreError;
use crate::store::kubernetes::{Takeover, api_error};

/// The `endpointslice.kubernetes.io/managed-by` value on every slice we write; the EndpointSlice
/// controller leaves slices managed by others alone.
pub const MANAGED_BY: &str = "sync-elector.metaparticle.io";

/// The annotation naming the lock the slice follows.
pub const LOCK_ANNOTATION: &str = "sync.metaparticle.io/lock";

/// The annotation naming the holder whose address the slice lists (empty when none).
pub const HOLDER_ANNOTATION: &str = "sync.metaparticle.io/holder";

/// The annotation the fence rewrites, so that every fence changes the object.
pub const FENCE_ANNOTATION: &str = "sync.metaparticle.io/fence";

/// How often a holder re-reads its slice.
pub const RESYNC: Duration = Duration::from_secs(5);

/// The share of the ttl before its renew deadline at which a holder whose renewals fail takes
/// its address down. A holder renews when ttl/3 is left, so only a renewal that fails, or takes
/// longer than ttl/6, comes this close.
pub const WITHDRAW_AHEAD: u32 = 6;

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many compare-and-set conflicts one write re-reads through.
const CONFLICT_RETRIES: usize = 3;

/// The name of SERVICE's leader slice.
pub fn slice_name(service: &str) -> String {
    format!("{service}-leader")
}

/// Keeps one EndpointSlice per `--publish`, for the locks held here.
pub struct Publisher {
    slices: HashMap<LockName, Vec<Arc<Slice>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Publisher {
    /// Starts keeping `publications` in `namespace`, listing `ip`. Each slice is read once at
    /// start, so an address this pod left behind before a restart is taken down.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        ip: IpAddr,
        publications: &[Publication],
    ) -> Self {
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let mut slices: HashMap<LockName, Vec<Arc<Slice>>> = HashMap::new();
        let mut tasks = Vec::new();
        for publication in publications {
            let slice = Arc::new(Slice {
                api: api.clone(),
                target: Target {
                    namespace: namespace.to_owned(),
                    name: slice_name(&publication.service),
                    ip,
                    publication: publication.clone(),
                },
                want: Mutex::new(None),
                wake: Notify::new(),
                writing: tokio::sync::Mutex::new(()),
                trouble: Mutex::new(None),
            });
            info!(lock = %publication.lock, service = %publication.service, slice = %slice.name, %ip, "publishing the holder");
            tasks.push(tokio::spawn(keep(slice.clone())));
            slices
                .entry(publication.lock.clone())
                .or_default()
                .push(slice);
        }
        Self { slices, tasks }
    }

    fn slices(&self, name: &LockName) -> &[Arc<Slice>] {
        self.slices.get(name).map_or(&[], Vec::as_slice)
    }
}

#[async_trait]
impl Announce for Publisher {
    fn granted(&self, lease: &Arc<Lease>) {
        for slice in self.slices(&lease.name) {
            *slice.want() = Some(lease.clone());
            slice.wake.notify_one();
        }
    }

    async fn ended(&self, lease: &Lease) {
        for slice in self.slices(&lease.name) {
            {
                let mut want = slice.want();
                if want.as_ref().is_some_and(|held| held.id == lease.id) {
                    *want = None;
                }
            }
            slice.reconcile().await;
        }
    }

    fn describe(&self) -> serde_json::Value {
        let mut shown = BTreeMap::new();
        for slice in self.slices.values().flatten() {
            shown.insert(
                slice.publication.service.clone(),
                serde_json::json!({
                    "lock": slice.publication.lock.as_str(),
                    "slice": slice.name,
                    "address": format!("{}:{}", slice.ip, slice.publication.port),
                    "holding": slice.want().as_ref().map(|lease| lease.holder.clone()),
                    "trouble": slice.trouble.lock().expect("slice trouble poisoned").clone(),
                }),
            );
        }
        serde_json::json!(shown)
    }
}

#[async_trait]
impl Takeover for Publisher {
    async fn before_takeover(&self, name: &LockName, claimant: &str) -> Result<(), StoreError> {
        for slice in self.slices(name) {
            slice.fence(claimant).await?;
        }
        Ok(())
    }
}

/// Reconciles one slice whenever told; while holding, also every [`RESYNC`] and at the moment
/// the lease comes within [`WITHDRAW_AHEAD`] of its renew deadline.
async fn keep(slice: Arc<Slice>) {
    loop {
        slice.reconcile().await;
        let next = slice.want().as_ref().map(|lease| {
            match lease.valid_for().checked_sub(withdraw_margin(lease)) {
                // Just past the point, so the reconcile finds the margin crossed.
                Some(left) if !left.is_zero() => RESYNC.min(left + Duration::from_millis(1)),
                _ => RESYNC,
            }
        });
        let told = slice.wake.notified();
        match next {
            Some(wait) => {
                let _ = timeout(wait, told).await;
            }
            None => told.await,
        }
    }
}

/// How much validity a published lease must have left to stay published.
fn withdraw_margin(lease: &Lease) -> Duration {
    lease.ttl / WITHDRAW_AHEAD
}

/// One Service's leader slice, as this elector keeps it.
struct Slice {
    api: Api<EndpointSlice>,
    target: Target,
    /// The lease held here whose address the slice should list.
    want: Mutex<Option<Arc<Lease>>>,
    wake: Notify,
    /// One read-then-write at a time, so a withdraw never races this elector's own publish.
    writing: tokio::sync::Mutex<()>,
    /// The last failure logged, until a write succeeds again.
    trouble: Mutex<Option<String>>,
}

/// Why a request failed.
enum Failure {
    /// 403: the service account may not do it.
    Forbidden(String),
    /// Anything else.
    Other(String),
}

impl std::ops::Deref for Slice {
    type Target = Target;

    fn deref(&self) -> &Target {
        &self.target
    }
}

/// Which slice, and what it lists when this elector holds the lock.
struct Target {
    namespace: String,
    name: String,
    ip: IpAddr,
    publication: Publication,
}

impl Slice {
    fn want(&self) -> std::sync::MutexGuard<'_, Option<Arc<Lease>>> {
        self.want.lock().expect("slice want poisoned")
    }

    /// Lists this pod's address while a valid lease is held here, and takes it down otherwise.
    async fn reconcile(&self) {
        let _writing = self.writing.lock().await;
        for _ in 0..CONFLICT_RETRIES {
            let current = match self.read().await {
                Ok(current) => current,
                Err(failure) => return self.failed("reading", failure),
            };
            // Checked after the read: the write below lands only if nobody fenced since.
            let holder = self
                .want()
                .as_ref()
                .filter(|lease| lease.valid_for() > withdraw_margin(lease))
                .map(|lease| lease.holder.clone());
            let desired = self.object(current.as_ref(), holder.as_deref(), None);
            let listed_here = current.as_ref().is_some_and(|s| self.lists_us(s));
            let done = match (&holder, &current) {
                (Some(_), Some(current)) => same_content(current, &desired),
                (Some(_), None) => false,
                (None, _) => !listed_here,
            };
            if done {
                return self.recovered();
            }
            match self.write(desired, current.is_none()).await {
                Ok(true) => {
                    match &holder {
                        Some(holder) => {
                            info!(service = %self.publication.service, %holder, ip = %self.ip, "published the holder's address")
                        }
                        None => {
                            info!(service = %self.publication.service, "withdrew this pod's address")
                        }
                    }
                    return self.recovered();
                }
                Ok(false) => continue,
                Err(failure) => return self.failed("writing", failure),
            }
        }
        warn!(slice = %self.name, "the EndpointSlice kept changing under us; trying again later");
    }

    /// Empties the slice with a write that always changes it, before `claimant` takes the lock
    /// over. A 403 is logged and lets the lock go on; any other failure fails the attempt.
    async fn fence(&self, claimant: &str) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        let note = format!(
            "{claimant} at {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        for _ in 0..CONFLICT_RETRIES {
            let result = match self.read().await {
                Ok(current) => {
                    let object = self.object(current.as_ref(), None, Some(&note));
                    self.write(object, current.is_none()).await
                }
                Err(failure) => Err(failure),
            };
            match result {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                Err(Failure::Other(message)) => {
                    let err = self.unavailable(&message);
                    self.failed("clearing", Failure::Other(message));
                    return Err(err);
                }
                Err(forbidden) => {
                    self.failed("clearing", forbidden);
                    return Ok(());
                }
            }
        }
        Err(self.unavailable("it kept changing under us"))
    }

    fn unavailable(&self, why: &str) -> StoreError {
        StoreError::Unavailable {
            store: "kubernetes",
            message: format!(
                "clearing the EndpointSlice {}/{} of Service {} before taking lock {}: {why}",
                self.namespace, self.name, self.publication.service, self.publication.lock
            ),
        }
    }

    async fn read(&self) -> Result<Option<EndpointSlice>, Failure> {
        match timeout(REQUEST_TIMEOUT, self.api.get_opt(&self.name)).await {
            Ok(Ok(slice)) => Ok(slice),
            Ok(Err(err)) => Err(failure(err)),
            Err(_) => Err(Failure::Other("the Kubernetes API did not answer".into())),
        }
    }

    /// Creates or replaces (compare-and-set) the slice. `Ok(false)` on a conflict.
    async fn write(&self, object: EndpointSlice, create: bool) -> Result<bool, Failure> {
        let params = PostParams::default();
        let request = async {
            if create {
                self.api.create(&params, &object).await
            } else {
                self.api.replace(&self.name, &params, &object).await
            }
        };
        match timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Ok(false),
            Ok(Err(err)) => Err(failure(err)),
            Err(_) => Err(Failure::Other("the Kubernetes API did not answer".into())),
        }
    }

    /// Logs a failure once, until it changes or a write succeeds.
    fn failed(&self, step: &str, failure: Failure) {
        let (forbidden, message) = match failure {
            Failure::Forbidden(message) => (
                true,
                // The same words whatever the step, so it is logged once until it is mended.
                format!(
                    "may not write the EndpointSlice {}/{}: the Kubernetes API answered 403 \
                     Forbidden ({message}). Lock {} still works, but Service {} gets no \
                     endpoints: give the elector's service account get, create and update on \
                     endpointslices.discovery.k8s.io in namespace {} (deploy/leader-service.yaml)",
                    self.namespace,
                    self.name,
                    self.publication.lock,
                    self.publication.service,
                    self.namespace
                ),
            ),
            Failure::Other(message) => (
                false,
                format!(
                    "{step} the EndpointSlice {}/{}: {message}",
                    self.namespace, self.name
                ),
            ),
        };
        let mut trouble = self.trouble.lock().expect("slice trouble poisoned");
        if trouble.as_ref() != Some(&message) {
            if forbidden {
                error!(service = %self.publication.service, "{message}");
            } else {
                warn!(service = %self.publication.service, "{message} (logged again only when it changes)");
            }
            *trouble = Some(message);
        }
    }

    fn recovered(&self) {
        if self
            .trouble
            .lock()
            .expect("slice trouble poisoned")
            .take()
            .is_some()
        {
            info!(service = %self.publication.service, "the EndpointSlice can be written again");
        }
    }
}

impl Target {
    fn lists_us(&self, slice: &EndpointSlice) -> bool {
        let ip = self.ip.to_string();
        slice.endpoints.iter().any(|e| e.addresses.contains(&ip))
    }

    /// The slice as it should be: `holder`'s address when given, else empty; on top of
    /// `current`'s metadata (its resourceVersion for the compare-and-set, others' labels kept).
    fn object(
        &self,
        current: Option<&EndpointSlice>,
        holder: Option<&str>,
        fence: Option<&str>,
    ) -> EndpointSlice {
        let mut metadata = current.map_or_else(
            || ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            |current| current.metadata.clone(),
        );
        let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(
            "kubernetes.io/service-name".into(),
            self.publication.service.clone(),
        );
        labels.insert(
            "endpointslice.kubernetes.io/managed-by".into(),
            MANAGED_BY.into(),
        );
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(LOCK_ANNOTATION.into(), self.publication.lock.to_string());
        annotations.insert(HOLDER_ANNOTATION.into(), holder.unwrap_or("").to_owned());
        if let Some(fence) = fence {
            annotations.insert(FENCE_ANNOTATION.into(), fence.to_owned());
        }
        let endpoints = holder
            .map(|_| Endpoint {
                addresses: vec![self.ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Endpoint::default()
            })
            .into_iter()
            .collect();
        EndpointSlice {
            metadata,
            address_type: if self.ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some(String::new()),
                port: Some(i32::from(self.publication.port)),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        }
    }
}

fn failure(err: kube::Error) -> Failure {
    match err {
        kube::Error::Api(status) if status.code == 403 => Failure::Forbidden(status.message),
        other => Failure::Other(api_error(&other)),
    }
}

/// Whether `current` already says what `desired` says (endpoints, ports, holder).
fn same_content(current: &EndpointSlice, desired: &EndpointSlice) -> bool {
    let holder = |s: &EndpointSlice| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOLDER_ANNOTATION).cloned())
    };
    current.endpoints == desired.endpoints
        && current.ports == desired.ports
        && current.address_type == desired.address_type
        && holder(current) == holder(desired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ip: &str) -> Target {
        Target {
            namespace: "ns".into(),
            name: slice_name("web"),
            ip: ip.parse().unwrap(),
            publication: "leader=web:8080".parse().unwrap(),
        }
    }

    #[test]
    fn a_holders_slice_lists_its_address_and_port_under_the_service_labels() {
        let slice = target("10.1.2.3").object(None, Some("pod-a/1234"), None);
        assert_eq!(slice.metadata.name.as_deref(), Some("web-leader"));
        assert_eq!(slice.metadata.namespace.as_deref(), Some("ns"));
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "web");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], MANAGED_BY);
        let annotations = slice.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[HOLDER_ANNOTATION], "pod-a/1234");
        assert_eq!(annotations[LOCK_ANNOTATION], "leader");
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints.len(), 1);
        assert_eq!(slice.endpoints[0].addresses, ["10.1.2.3"]);
        let conditions = slice.endpoints[0].conditions.as_ref().unwrap();
        assert_eq!(conditions.ready, Some(true));
        let port = &slice.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.port, port.protocol.as_deref(), port.name.as_deref()),
            (Some(8080), Some("TCP"), Some("")),
            "one unnamed port, matching a Service with one unnamed port"
        );
        assert!(target("10.1.2.3").lists_us(&slice));
        assert!(!target("10.1.2.4").lists_us(&slice));
        assert_eq!(
            target("fd00::1").object(None, None, None).address_type,
            "IPv6"
        );
    }

    #[test]
    fn without_a_holder_the_slice_is_empty_and_keeps_what_others_wrote() {
        let t = target("10.1.2.3");
        let mut current = t.object(None, Some("pod-a/1"), None);
        current.metadata.resource_version = Some("42".into());
        current
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "blue".into());
        let cleared = t.object(Some(&current), None, None);
        assert!(cleared.endpoints.is_empty());
        assert_eq!(cleared.ports, current.ports, "the port stays");
        assert_eq!(
            cleared.metadata.resource_version.as_deref(),
            Some("42"),
            "a compare-and-set on what was read"
        );
        assert_eq!(cleared.metadata.labels.as_ref().unwrap()["team"], "blue");
        assert_eq!(
            cleared.metadata.annotations.as_ref().unwrap()[HOLDER_ANNOTATION],
            ""
        );
        assert!(!same_content(&current, &cleared));
        assert!(same_content(
            &current,
            &t.object(Some(&current), Some("pod-a/1"), None)
        ));
        assert!(
            !same_content(&current, &t.object(Some(&current), Some("pod-a/2"), None)),
            "a new holder rewrites the slice"
        );
    }

    #[test]
    fn every_fence_changes_the_object() {
        let t = target("10.1.2.3");
        let empty = t.object(None, None, Some("b/1 at 2026-11-30T17:00:00.000001Z"));
        let again = t.object(
            Some(&empty),
            None,
            Some("b/1 at 2026-11-30T17:00:00.000002Z"),
        );
        assert_ne!(
            empty.metadata.annotations, again.metadata.annotations,
            "the same content with a new fence note: the API gives it a new resourceVersion"
        );
    }
}
