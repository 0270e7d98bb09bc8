//! The leader-only Service: while a holder here holds a lock named by
//! `--publish LOCK=SERVICE[:PORT]`, the selector-less Service SERVICE has one EndpointSlice,
//! `SERVICE-leader`, listing this pod's IP with the Service's ports, and nothing else
//! (docs/kubernetes.md).
//!
//! Every elector writes that same object, compare-and-set on its `resourceVersion`:
//! - **Fence.** Before any elector writes a Lease that takes LOCK over (free, released or
//!   observed expired), it empties the slice, always with a real write. So the old holder's
//!   address is gone before anyone else holds the lock, even when that holder died or is paused,
//!   and a paused holder's late write, based on an earlier read, fails with `409`. The Lease
//!   names its published Services
//!   ([`PUBLISHED_ANNOTATION`](crate::store::kubernetes::PUBLISHED_ANNOTATION)), so an elector started without
//!   `--publish` fences them too, and says in its log that it should publish.
//! - **Publish.** After its grant, the holder reads the slice and the Service, checks *after
//!   those reads* that its lease is still valid, and writes its address, with the Service's ports
//!   by name, on top of what it read. kube-proxy matches a slice's ports to the Service's by
//!   name, so a named port, or several, must be mirrored to carry traffic.
//! - **Withdraw.** When the lease ends (release, loss, shutdown), the holder empties the slice
//!   before the store gives the Lease up; and when renewals fail, it empties it once less than
//!   [`WITHDRAW_AHEAD`] of the ttl is left before the renew deadline, so the address is gone by
//!   that deadline; the next renewal that succeeds lists it again at once.
//! - **Resync.** While holding, it reads again every [`RESYNC`] and puts its address back if a
//!   contender's fence took it down without winning the lock, or the Service's ports changed.
//!
//! A `403` does not stop the lock: it is logged once, with the verbs to grant, and shown by
//! [`Announce::describe`]; publishing resumes when the API allows it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use sync_protocol::LockName;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{error, info, warn};

use crate::config::Publication;
use crate::hooks::{Announce, Held, Takeover};
use crate::kube_api::{self, RequestError};
use crate::store::StoreError;

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

/// How many compare-and-set conflicts one write re-reads through.
const CONFLICT_RETRIES: usize = 3;

/// The name of SERVICE's leader slice.
pub fn slice_name(service: &str) -> String {
    format!("{service}-leader")
}

/// Keeps one EndpointSlice per `--publish`, for the locks held here, and fences the slices of
/// locks that other electors publish.
pub struct Publisher {
    api: Api<EndpointSlice>,
    namespace: String,
    slices: HashMap<LockName, Vec<Arc<Slice>>>,
    tasks: Vec<JoinHandle<()>>,
    /// `LOCK=SERVICE` pairs the Lease said were published, which this elector fenced without
    /// publishing them itself: each is logged once.
    unconfigured: Mutex<BTreeSet<String>>,
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
        let mut publisher = Self::fencing_only(client.clone(), namespace);
        let services: Api<Service> = Api::namespaced(client, namespace);
        for publication in publications {
            let slice = Arc::new(Slice::new(
                publisher.api.clone(),
                Some(services.clone()),
                Target {
                    namespace: namespace.to_owned(),
                    name: slice_name(&publication.service),
                    ip: Some(ip),
                    publication: publication.clone(),
                },
            ));
            info!(lock = %publication.lock, service = %publication.service, slice = %slice.target.name, %ip, "publishing the holder");
            publisher.tasks.push(tokio::spawn(keep(slice.clone())));
            publisher
                .slices
                .entry(publication.lock.clone())
                .or_default()
                .push(slice);
        }
        publisher
    }

    /// Publishes nothing, and fences the slices a Lease names before taking it over: what an
    /// elector without `--publish` runs, so that a lock other electors publish stays safe.
    pub fn fencing_only(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            slices: HashMap::new(),
            tasks: Vec::new(),
            unconfigured: Mutex::new(BTreeSet::new()),
        }
    }

    fn slices(&self, name: &LockName) -> &[Arc<Slice>] {
        self.slices.get(name).map_or(&[], Vec::as_slice)
    }

    /// Fences the slice of `service`, which the Lease of `lock` says other electors publish,
    /// if it exists; says once that this elector should publish it too.
    async fn fence_unconfigured(
        &self,
        lock: &LockName,
        service: &str,
        claimant: &str,
    ) -> Result<(), StoreError> {
        let first = self
            .unconfigured
            .lock()
            .expect("publisher poisoned")
            .insert(format!("{lock}={service}"));
        if first {
            warn!(
                %lock,
                %service,
                "lock {lock} is published to Service {service} (its Lease says so), but this \
                 elector runs without --publish {lock}={service}: it empties the Service's \
                 EndpointSlice before taking the lock, so no other pod stays listed, and while a \
                 holder here has the lock the Service has no endpoints. Give every elector that \
                 contends for {lock} the same --publish"
            );
        }
        let slice = Slice::new(
            self.api.clone(),
            None,
            Target {
                namespace: self.namespace.clone(),
                name: slice_name(service),
                ip: None,
                publication: Publication {
                    lock: lock.clone(),
                    service: service.to_owned(),
                    port: None,
                },
            },
        );
        slice.fence(claimant, false).await
    }
}

#[async_trait]
impl Announce for Publisher {
    fn granted(&self, lease: Arc<dyn Held>) {
        for slice in self.slices(lease.name()) {
            *slice.want() = Some(lease.clone());
            slice.wake.notify_one();
        }
    }

    async fn ended(&self, lease: &dyn Held) {
        for slice in self.slices(lease.name()) {
            {
                let mut want = slice.want();
                if want.as_ref().is_some_and(|held| held.id() == lease.id()) {
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
                slice.target.publication.service.clone(),
                serde_json::json!({
                    "lock": slice.target.publication.lock.as_str(),
                    "slice": slice.target.name,
                    "address": slice.target.ip.map(|ip| ip.to_string()),
                    "ports": slice.listed.lock().expect("slice ports poisoned").clone(),
                    "holding": slice.want().as_ref().map(|lease| lease.holder().to_owned()),
                    "trouble": slice.trouble.lock().expect("slice trouble poisoned").clone(),
                    "ports_note": slice.ports_note.lock().expect("slice note poisoned").clone(),
                }),
            );
        }
        let unconfigured = self.unconfigured.lock().expect("publisher poisoned");
        if !unconfigured.is_empty() {
            shown.insert(
                "fenced without --publish".into(),
                serde_json::json!(unconfigured.iter().collect::<Vec<_>>()),
            );
        }
        serde_json::json!(shown)
    }
}

#[async_trait]
impl Takeover for Publisher {
    async fn before_takeover(
        &self,
        name: &LockName,
        claimant: &str,
        published: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut services: BTreeSet<String> = published.iter().cloned().collect();
        for slice in self.slices(name) {
            slice.fence(claimant, true).await?;
            services.insert(slice.target.publication.service.clone());
        }
        for service in published {
            let mine = self
                .slices(name)
                .iter()
                .any(|slice| &slice.target.publication.service == service);
            if !mine {
                self.fence_unconfigured(name, service, claimant).await?;
            }
        }
        Ok(services.into_iter().collect())
    }
}

/// Reconciles one slice whenever told; while holding, also every [`RESYNC`], at the moment the
/// lease comes within [`WITHDRAW_AHEAD`] of its renew deadline, and, once the address is down
/// for want of renewals, at the next renewal that succeeds.
async fn keep(slice: Arc<Slice>) {
    loop {
        // Subscribed before the reconcile, so a renewal during it is not missed.
        let held = slice.want().clone();
        let mut renewals = held.as_ref().map(|lease| lease.renewals());
        slice.reconcile().await;
        let told = slice.wake.notified();
        let (Some(lease), Some(renewals)) = (held, renewals.as_mut()) else {
            told.await;
            continue;
        };
        if renewals.has_changed().unwrap_or(false) {
            continue;
        }
        match lease
            .valid_for()
            .checked_sub(withdraw_margin(lease.as_ref()))
        {
            // Just past the point, so the reconcile finds the margin crossed.
            Some(left) if !left.is_zero() => {
                let _ = timeout(RESYNC.min(left + Duration::from_millis(1)), told).await;
            }
            // Withdrawn for want of renewals: the next one that succeeds lists it again.
            _ => {
                tokio::select! {
                    _ = timeout(RESYNC, told) => {}
                    _ = renewals.changed() => {}
                }
            }
        }
    }
}

/// How much validity a published lease must have left to stay published.
fn withdraw_margin(lease: &dyn Held) -> Duration {
    lease.ttl() / WITHDRAW_AHEAD
}

/// One Service's leader slice, as this elector keeps it.
struct Slice {
    api: Api<EndpointSlice>,
    /// Where the Service's ports are read; `None` for a slice this elector only fences.
    services: Option<Api<Service>>,
    target: Target,
    /// The lease held here whose address the slice should list.
    want: Mutex<Option<Arc<dyn Held>>>,
    wake: Notify,
    /// One read-then-write at a time, so a withdraw never races this elector's own publish.
    writing: tokio::sync::Mutex<()>,
    /// The last failure logged, until a write succeeds again.
    trouble: Mutex<Option<String>>,
    /// The last problem with the Service's ports logged, until it changes.
    ports_note: Mutex<Option<String>>,
    /// The ports the slice listed at the last publish, as `name:port/protocol`.
    listed: Mutex<Vec<String>>,
}

/// Which slice, and what it lists when this elector holds the lock.
struct Target {
    namespace: String,
    name: String,
    /// This pod's address; `None` for a slice this elector only fences.
    ip: Option<IpAddr>,
    publication: Publication,
}

impl Slice {
    fn new(api: Api<EndpointSlice>, services: Option<Api<Service>>, target: Target) -> Self {
        Self {
            api,
            services,
            target,
            want: Mutex::new(None),
            wake: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            trouble: Mutex::new(None),
            ports_note: Mutex::new(None),
            listed: Mutex::new(Vec::new()),
        }
    }

    fn want(&self) -> std::sync::MutexGuard<'_, Option<Arc<dyn Held>>> {
        self.want.lock().expect("slice want poisoned")
    }

    /// Lists this pod's address while a valid lease is held here, and takes it down otherwise.
    async fn reconcile(&self) {
        let _writing = self.writing.lock().await;
        for _ in 0..CONFLICT_RETRIES {
            let current = match self.read().await {
                Ok(current) => current,
                Err(failure) => return self.failed("reading", &failure),
            };
            let ports = if self.want().is_some() {
                match self.service_ports().await {
                    Ok(ports) => Some(ports),
                    Err(failure) => return self.failed("reading the Service of", &failure),
                }
            } else {
                None
            };
            // Checked after the reads: the write below lands only if nobody fenced since.
            let holder = self
                .want()
                .as_ref()
                .filter(|lease| lease.valid_for() > withdraw_margin(lease.as_ref()))
                .map(|lease| lease.holder().to_owned());
            let ports = ports.filter(|_| holder.is_some());
            let desired =
                self.target
                    .object(current.as_ref(), holder.as_deref(), None, ports.clone());
            let listed_here = current.as_ref().is_some_and(|s| self.target.lists_us(s));
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
                    match (&holder, ports) {
                        (Some(holder), Some(ports)) => {
                            let shown: Vec<String> = ports.iter().map(show_port).collect();
                            info!(service = %self.target.publication.service, %holder, ip = ?self.target.ip, ports = ?shown, "published the holder's address");
                            *self.listed.lock().expect("slice ports poisoned") = shown;
                        }
                        _ => {
                            info!(service = %self.target.publication.service, "withdrew this pod's address")
                        }
                    }
                    return self.recovered();
                }
                Ok(false) => continue,
                Err(failure) => return self.failed("writing", &failure),
            }
        }
        warn!(slice = %self.target.name, "the EndpointSlice kept changing under us; trying again later");
    }

    /// The ports to list: the Service's, mirrored by name ([`mirror_ports`]). A Service this
    /// elector may not read (403) is treated as missing, and said once.
    async fn service_ports(&self) -> Result<Vec<EndpointPort>, RequestError> {
        let Some(services) = &self.services else {
            return Ok(Vec::new());
        };
        let service = &self.target.publication.service;
        let (ports, note) = match kube_api::send("services", "get", services.get_opt(service)).await
        {
            Ok(found) => mirror_ports(&self.target, found.as_ref()),
            Err(err) if err.code() == Some(403) => {
                let message = status_message(&err);
                let (ports, _) = mirror_ports(&self.target, None);
                let note = format!(
                    "may not read Service {}/{service} ({message}), so its ports are unknown: give \
                     the elector's service account get on services named {service} \
                     (deploy/leader-service.yaml). Until then the slice lists {}",
                    self.target.namespace,
                    describe_ports(&ports)
                );
                (ports, Some(note))
            }
            Err(other) => return Err(other),
        };
        let mut last = self.ports_note.lock().expect("slice note poisoned");
        if *last != note {
            match &note {
                Some(note) => warn!(service = %service, "{note}"),
                None if last.is_some() => {
                    info!(service = %service, "the Service's ports are mirrored again")
                }
                None => {}
            }
            *last = note;
        }
        Ok(ports)
    }

    /// Empties the slice with a write that always changes it, before `claimant` takes the lock
    /// over; a missing slice is created empty when `create` says so, and left missing otherwise.
    /// A 403 is logged and lets the lock go on; any other failure fails the attempt.
    async fn fence(&self, claimant: &str, create: bool) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        let note = format!(
            "{claimant} at {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        for _ in 0..CONFLICT_RETRIES {
            let result = match self.read().await {
                Ok(None) if !create => Ok(true),
                Ok(current) => {
                    let object = self
                        .target
                        .object(current.as_ref(), None, Some(&note), None);
                    self.write(object, current.is_none()).await
                }
                Err(failure) => Err(failure),
            };
            match result {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                Err(err) if err.code() == Some(403) => {
                    self.failed("clearing", &err);
                    return Ok(());
                }
                Err(err) => {
                    self.failed("clearing", &err);
                    return Err(StoreError::caused_by(
                        "kubernetes",
                        self.clearing(&err.to_string()),
                        err,
                    ));
                }
            }
        }
        Err(StoreError::unavailable(
            "kubernetes",
            self.clearing("it kept changing under us"),
        ))
    }

    /// What went wrong clearing the slice before a takeover.
    fn clearing(&self, why: &str) -> String {
        format!(
            "clearing the EndpointSlice {}/{} of Service {} before taking lock {}: {why}",
            self.target.namespace,
            self.target.name,
            self.target.publication.service,
            self.target.publication.lock
        )
    }

    async fn read(&self) -> Result<Option<EndpointSlice>, RequestError> {
        kube_api::send("endpointslices", "get", self.api.get_opt(&self.target.name)).await
    }

    /// Creates or replaces (compare-and-set) the slice. `Ok(false)` on a conflict.
    async fn write(&self, object: EndpointSlice, create: bool) -> Result<bool, RequestError> {
        Ok(kube_api::write(&self.api, &object, create).await?.is_some())
    }

    /// Logs a failure once, until it changes or a write succeeds.
    fn failed(&self, step: &str, err: &RequestError) {
        let (forbidden, message) = match err.code() {
            Some(403) => (
                true,
                // The same words whatever the step, so it is logged once until it is mended.
                format!(
                    "may not write the EndpointSlice {}/{}: the Kubernetes API answered 403 \
                     Forbidden ({}). Lock {} still works, but Service {} gets no \
                     endpoints: give the elector's service account get, create and update on \
                     endpointslices.discovery.k8s.io in namespace {} (deploy/leader-service.yaml)",
                    self.target.namespace,
                    self.target.name,
                    status_message(err),
                    self.target.publication.lock,
                    self.target.publication.service,
                    self.target.namespace
                ),
            ),
            _ => (
                false,
                format!(
                    "{step} the EndpointSlice {}/{}: {err}",
                    self.target.namespace, self.target.name
                ),
            ),
        };
        let mut trouble = self.trouble.lock().expect("slice trouble poisoned");
        if trouble.as_ref() != Some(&message) {
            if forbidden {
                error!(service = %self.target.publication.service, "{message}");
            } else {
                warn!(service = %self.target.publication.service, "{message} (logged again only when it changes)");
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
            info!(service = %self.target.publication.service, "the EndpointSlice can be written again");
        }
    }
}

impl Target {
    fn lists_us(&self, slice: &EndpointSlice) -> bool {
        let Some(ip) = self.ip else {
            return false;
        };
        let ip = ip.to_string();
        slice.endpoints.iter().any(|e| e.addresses.contains(&ip))
    }

    /// The slice as it should be: `holder`'s address when given, else empty; with `ports`, else
    /// the ports it has; on top of `current`'s metadata (its resourceVersion for the
    /// compare-and-set, others' labels kept).
    fn object(
        &self,
        current: Option<&EndpointSlice>,
        holder: Option<&str>,
        fence: Option<&str>,
        ports: Option<Vec<EndpointPort>>,
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
        let listed = holder.zip(self.ip);
        annotations.insert(
            HOLDER_ANNOTATION.into(),
            listed.map_or("", |(holder, _)| holder).to_owned(),
        );
        if let Some(fence) = fence {
            annotations.insert(FENCE_ANNOTATION.into(), fence.to_owned());
        }
        let endpoints = listed
            .map(|(_, ip)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Endpoint::default()
            })
            .into_iter()
            .collect();
        let address_type = match (self.ip, current) {
            (Some(IpAddr::V6(_)), _) => "IPv6".to_owned(),
            (Some(IpAddr::V4(_)), _) => "IPv4".to_owned(),
            (None, Some(current)) => current.address_type.clone(),
            (None, None) => "IPv4".to_owned(),
        };
        let ports = ports.unwrap_or_else(|| {
            current
                .and_then(|current| current.ports.clone())
                .unwrap_or_default()
        });
        EndpointSlice {
            metadata,
            address_type,
            endpoints,
            ports: Some(ports),
        }
    }
}

/// The slice's ports for Service `service` (`None`: it does not exist), mirrored by name as
/// kube-proxy matches them: each Service port's name, protocol and application protocol, with
/// its `targetPort` number (which defaults to its `port`); for a Service with one port, `--publish`'s
/// PORT when given. Also what to tell the operator, if anything is wrong.
fn mirror_ports(target: &Target, service: Option<&Service>) -> (Vec<EndpointPort>, Option<String>) {
    let publication = &target.publication;
    let name = &publication.service;
    let namespace = &target.namespace;
    let unnamed = |port: u16| EndpointPort {
        name: Some(String::new()),
        port: Some(i32::from(port)),
        protocol: Some("TCP".into()),
        app_protocol: None,
    };
    let Some(service) = service else {
        let ports: Vec<EndpointPort> = publication.port.map(unnamed).into_iter().collect();
        let note = format!(
            "Service {namespace}/{name} does not exist: create it without a selector \
             (deploy/leader-service.yaml). Until then the slice lists {}",
            describe_ports(&ports)
        );
        return (ports, Some(note));
    };
    let spec = service.spec.clone().unwrap_or_default();
    let service_ports = spec.ports.unwrap_or_default();
    let mut notes = Vec::new();
    if spec.selector.as_ref().is_some_and(|s| !s.is_empty()) {
        notes.push(format!(
            "Service {namespace}/{name} has a selector, so Kubernetes also lists every ready pod \
             it selects and non-leaders get traffic too: remove its selector"
        ));
    }
    if service_ports.is_empty() {
        notes.push(format!(
            "Service {namespace}/{name} has no ports: the slice lists none, and no traffic \
             reaches the leader"
        ));
    }
    let mut ports = Vec::new();
    for port in &service_ports {
        let port_name = port.name.clone().unwrap_or_default();
        let number = match (&port.target_port, publication.port) {
            (_, Some(pinned)) if service_ports.len() == 1 => Some(i32::from(pinned)),
            (None, _) => Some(port.port),
            (Some(IntOrString::Int(number)), _) => Some(*number),
            (Some(IntOrString::String(target)), _) => {
                notes.push(format!(
                    "port {port_name:?} of Service {namespace}/{name} has targetPort {target:?}, \
                     a name only a Service with a selector can resolve: set it to the number the \
                     program listens on (the port is not listed until then)"
                ));
                None
            }
        };
        if let Some(number) = number {
            ports.push(EndpointPort {
                name: Some(port_name),
                port: Some(number),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            });
        }
    }
    if let Some(pinned) = publication.port
        && service_ports.len() > 1
    {
        notes.push(format!(
            "--publish {}={name}:{pinned} names one port, but Service {namespace}/{name} has {}: \
             each is listed with its own targetPort, and {pinned} is not used. Drop :{pinned}",
            publication.lock,
            service_ports.len()
        ));
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    (ports, note)
}

/// A port as the log and the state dump show it: `name:number/protocol` (`:number/protocol`
/// without a name).
fn show_port(port: &EndpointPort) -> String {
    format!(
        "{}:{}/{}",
        port.name.as_deref().unwrap_or(""),
        port.port.unwrap_or(0),
        port.protocol.as_deref().unwrap_or("TCP")
    )
}

fn describe_ports(ports: &[EndpointPort]) -> String {
    if ports.is_empty() {
        "this pod's address with no port, which carries no traffic".to_owned()
    } else {
        let shown: Vec<String> = ports.iter().map(show_port).collect();
        format!("port {}", shown.join(", "))
    }
}

/// The API server's own words in an error answer; empty when it did not answer.
fn status_message(err: &RequestError) -> &str {
    match err {
        RequestError::Status { message, .. } => message,
        _ => "",
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
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    use super::*;

    fn target(ip: &str) -> Target {
        target_for(ip, "leader=web:8080")
    }

    fn target_for(ip: &str, publish: &str) -> Target {
        Target {
            namespace: "ns".into(),
            name: slice_name("web"),
            ip: Some(ip.parse().unwrap()),
            publication: publish.parse().unwrap(),
        }
    }

    fn port(name: Option<&str>, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: name.map(String::from),
            port,
            target_port: target,
            ..ServicePort::default()
        }
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn shown(ports: &[EndpointPort]) -> Vec<String> {
        ports.iter().map(show_port).collect()
    }

    #[test]
    fn a_holders_slice_lists_its_address_and_the_ports_under_the_service_labels() {
        let (ports, note) = mirror_ports(
            &target("10.1.2.3"),
            Some(&service(vec![port(None, 80, None)])),
        );
        assert_eq!(note, None);
        let slice = target("10.1.2.3").object(None, Some("pod-a/1234"), None, Some(ports));
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
        assert_eq!(
            shown(slice.ports.as_ref().unwrap()),
            [":8080/TCP"],
            "one unnamed port, PORT from --publish, matching a Service with one unnamed port"
        );
        assert!(target("10.1.2.3").lists_us(&slice));
        assert!(!target("10.1.2.4").lists_us(&slice));
        assert_eq!(
            target("fd00::1")
                .object(None, None, None, None)
                .address_type,
            "IPv6"
        );
    }

    #[test]
    fn the_services_ports_are_mirrored_by_name_with_their_target_ports() {
        let named = service(vec![port(Some("http"), 80, Some(IntOrString::Int(8080)))]);
        let (ports, note) = mirror_ports(&target_for("10.1.2.3", "leader=web"), Some(&named));
        assert_eq!(
            (shown(&ports), note),
            (vec!["http:8080/TCP".to_owned()], None)
        );
        // PORT pins the one port's number; the name still comes from the Service.
        let (ports, _) = mirror_ports(&target_for("10.1.2.3", "leader=web:9000"), Some(&named));
        assert_eq!(shown(&ports), ["http:9000/TCP"]);

        let mut two = service(vec![
            port(Some("http"), 80, Some(IntOrString::Int(8080))),
            port(Some("admin"), 9090, None),
        ]);
        two.spec.as_mut().unwrap().ports.as_mut().unwrap()[1].protocol = Some("UDP".into());
        let (ports, note) = mirror_ports(&target_for("10.1.2.3", "leader=web"), Some(&two));
        assert_eq!(
            shown(&ports),
            ["http:8080/TCP", "admin:9090/UDP"],
            "targetPort defaults to port"
        );
        assert_eq!(note, None);
        let (ports, note) = mirror_ports(&target_for("10.1.2.3", "leader=web:7000"), Some(&two));
        assert_eq!(shown(&ports), ["http:8080/TCP", "admin:9090/UDP"]);
        assert!(
            note.unwrap().contains("Drop :7000"),
            "PORT cannot name one of two ports"
        );
    }

    #[test]
    fn what_cannot_be_mirrored_is_said_and_the_rest_is_listed() {
        let by_name = service(vec![
            port(Some("http"), 80, Some(IntOrString::String("http".into()))),
            port(Some("admin"), 9090, Some(IntOrString::Int(9091))),
        ]);
        let (ports, note) = mirror_ports(&target_for("10.1.2.3", "leader=web"), Some(&by_name));
        assert_eq!(shown(&ports), ["admin:9091/TCP"]);
        assert!(note.unwrap().contains("set it to the number"));

        let (ports, note) = mirror_ports(&target_for("10.1.2.3", "leader=web:8080"), None);
        assert_eq!(
            shown(&ports),
            [":8080/TCP"],
            "a missing Service: PORT, unnamed"
        );
        assert!(note.unwrap().contains("does not exist"));
        let (ports, note) = mirror_ports(&target_for("10.1.2.3", "leader=web"), None);
        assert!(ports.is_empty());
        assert!(note.unwrap().contains("no port"));

        let mut selected = service(vec![port(None, 80, None)]);
        selected.spec.as_mut().unwrap().selector = Some([("app".into(), "web".into())].into());
        let (_, note) = mirror_ports(&target_for("10.1.2.3", "leader=web"), Some(&selected));
        assert!(note.unwrap().contains("remove its selector"));
    }

    #[test]
    fn without_a_holder_the_slice_is_empty_and_keeps_what_others_wrote() {
        let t = target("10.1.2.3");
        let ports = vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }];
        let mut current = t.object(None, Some("pod-a/1"), None, Some(ports.clone()));
        current.metadata.resource_version = Some("42".into());
        current
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "blue".into());
        let cleared = t.object(Some(&current), None, None, None);
        assert!(cleared.endpoints.is_empty());
        assert_eq!(cleared.ports, current.ports, "the ports stay");
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
            &t.object(Some(&current), Some("pod-a/1"), None, Some(ports.clone()))
        ));
        assert!(
            !same_content(
                &current,
                &t.object(Some(&current), Some("pod-a/2"), None, Some(ports))
            ),
            "a new holder rewrites the slice"
        );
        assert!(
            !same_content(
                &current,
                &t.object(Some(&current), Some("pod-a/1"), None, Some(Vec::new()))
            ),
            "a change of the Service's ports rewrites the slice"
        );
    }

    #[test]
    fn every_fence_changes_the_object_and_an_elector_without_publish_lists_nobody() {
        let t = target("10.1.2.3");
        let empty = t.object(None, None, Some("b/1 at 2026-11-30T17:00:00.000001Z"), None);
        let again = t.object(
            Some(&empty),
            None,
            Some("b/1 at 2026-11-30T17:00:00.000002Z"),
            None,
        );
        assert_ne!(
            empty.metadata.annotations, again.metadata.annotations,
            "the same content with a new fence note: the API gives it a new resourceVersion"
        );
        let unconfigured = Target {
            ip: None,
            ..target("10.1.2.3")
        };
        let mut current = t.object(None, Some("a/1"), None, None);
        current.address_type = "IPv6".into();
        let fenced = unconfigured.object(Some(&current), Some("b/2"), Some("b/2 at now"), None);
        assert!(fenced.endpoints.is_empty(), "no address of its own to list");
        assert_eq!(
            fenced.address_type, "IPv6",
            "the slice's own address type stays"
        );
    }
}
