//! The etcd store: locks on an etcd v3 cluster, outside Kubernetes, with etcd's own concurrency
//! recipe.
//!
//! - Each claimant puts a key of its own, `{prefix}{name}/{lease id}`, under an etcd lease whose
//!   ttl is the lock's ttl (kept alive by this elector while it waits or holds). The key with the
//!   lowest create revision owns the lock; the fencing token is that create revision, so tokens
//!   strictly increase with every new holder.
//! - Waiters are served in the order their keys were created (first come, first served across
//!   every elector), and each waits for its *predecessor* only: one watch over the prefix, per
//!   elector, wakes a waiter when the key just before its own is deleted. A release therefore
//!   wakes one waiter, not all of them.
//! - Release revokes the holder's lease, which deletes its key. A claimant that stops waiting
//!   revokes its lease too, leaving the line.
//! - When the cluster loses quorum or the elector is cut off, renewals fail and the holder is told
//!   "lost" by the renew deadline; the server-side lease may outlive that, which the
//!   client-validity rule covers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, GetResponse, KeyValue, PutOptions, SortOrder,
    SortTarget, WatchOptions,
};
use serde::{Deserialize, Serialize};
use sync_protocol::LockName;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

use super::{Attempt, Changes, Claim, Holding, Record, Signals, Store, StoreError, StoreLease};

/// How long one etcd request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/metaparticle-sync/locks/";

/// What a claimant's key holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Value {
    holder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    ttl_seconds: u64,
}

/// A claimant of this elector waiting in line (not yet the owner).
struct Contender {
    lease: i64,
    key: String,
    revision: i64,
    /// The key just before ours, whose deletion wakes us.
    predecessor: Option<String>,
    keepalive: JoinHandle<()>,
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

#[derive(Default)]
struct State {
    contenders: HashMap<(String, String), Contender>,
    /// Waiters' signals: a predecessor went away, or this store changed the lock.
    waiters: Signals,
    /// Followers' signals: any change of the lock.
    observers: Signals,
    /// Whether the prefix watch is established.
    watching: bool,
}

/// Locks on an etcd cluster.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    state: Arc<Mutex<State>>,
    /// Becomes true once the prefix watch has started. From then on it covers every change after
    /// any read this store makes, also across re-establishment (it resumes from the last
    /// revision seen), so a waiter cannot miss its predecessor's deletion.
    covered: tokio::sync::watch::Receiver<bool>,
    watcher: JoinHandle<()>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn unavailable(step: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: "etcd",
        message: format!("{step}: {err}"),
    }
}

/// Runs an etcd request with a bound, retrying once or twice on a transient failure (a client
/// given several endpoints may send a call to a member that just died).
async fn call<T, F, Fut>(step: &str, mut request: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut last = None;
    for attempt in 0..3 {
        match timeout(REQUEST_TIMEOUT, request()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => last = Some(err.to_string()),
            Err(_) => last = Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
        if attempt < 2 {
            sleep(Duration::from_millis(100)).await;
        }
    }
    Err(unavailable(step, last.unwrap_or_default()))
}

/// Sends one keep-alive for `lease`: `true` while the lease lives, `false` once it is gone.
async fn keep_alive_once(mut client: Client, lease: i64) -> Result<bool, etcd_client::Error> {
    // Opening the stream sends one keep-alive and reads its answer, which is all we need:
    // sending another through the keeper doubled every elector's keep-alive traffic.
    match client.lease_keep_alive(lease).await {
        Ok(_) => Ok(true),
        // etcd answered with ttl 0: the lease expired or was revoked.
        Err(etcd_client::Error::LeaseKeepAliveError(message)) if message == "lease not found" => {
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

/// `host:port` or `http://host:port`, as a URL; `https` is refused (no TLS support yet).
pub fn endpoint_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Err("an etcd endpoint is empty; write host:port or http://host:port".into());
    }
    if endpoint.starts_with("https://") {
        return Err(format!(
            "{endpoint}: TLS to etcd is not supported yet; use http://"
        ));
    }
    let url = if endpoint.starts_with("http://") {
        endpoint.to_owned()
    } else if endpoint.contains("://") {
        return Err(format!(
            "{endpoint}: an etcd endpoint is host:port or http://host:port"
        ));
    } else {
        format!("http://{endpoint}")
    };
    let rest = &url["http://".len()..];
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(url),
        _ => Err(format!(
            "{endpoint}: an etcd endpoint needs a host and a port, as 127.0.0.1:2379"
        )),
    }
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`host:port` or `http://host:port`) and keeps
    /// locks under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let urls = endpoints
            .iter()
            .map(|e| endpoint_url(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| StoreError::Unavailable {
                store: "etcd",
                message,
            })?;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = Client::connect(&urls, Some(options))
            .await
            .map_err(|e| unavailable(&format!("connecting to etcd at {}", urls.join(",")), e))?;
        info!(endpoints = %urls.join(","), %prefix, "using etcd");
        Ok(Self::with_client(client, prefix))
    }

    /// A store over a connected client; starts its prefix watch at once.
    pub fn with_client(client: Client, prefix: &str) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (cover, covered) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(watch_prefix(
            client.clone(),
            prefix.to_owned(),
            state.clone(),
            cover,
        ));
        Self {
            client,
            prefix: prefix.to_owned(),
            state,
            covered,
            watcher,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("etcd store state poisoned")
    }

    fn lock_prefix(&self, name: &LockName) -> String {
        format!("{}{name}/", self.prefix)
    }

    fn key(&self, name: &LockName, lease: i64) -> String {
        format!("{}{lease:016x}", self.lock_prefix(name))
    }

    /// The claimant's place in line: found, or made (a lease, kept alive, and a key under it).
    async fn place(
        &self,
        name: &LockName,
        claim: &Claim,
    ) -> Result<(i64, String, i64), StoreError> {
        let id = (name.to_string(), claim.holder.clone());
        if let Some(c) = self.state().contenders.get(&id) {
            return Ok((c.lease, c.key.clone(), c.revision));
        }
        let ttl = i64::try_from(claim.ttl.as_secs()).unwrap_or(i64::MAX);
        let client = self.client.clone();
        let grant = call("granting a lease", || {
            let mut c = client.clone();
            async move { c.lease_grant(ttl, None).await }
        })
        .await?;
        let lease = grant.id();
        let key = self.key(name, lease);
        let value = serde_json::to_vec(&Value {
            holder: claim.holder.clone(),
            value: claim.value.clone(),
            ttl_seconds: claim.ttl.as_secs(),
        })
        .expect("a Value serializes");
        let put = call("queueing for the lock", || {
            let (mut c, key, value) = (client.clone(), key.clone(), value.clone());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        let revision = put.header().map_or(0, |h| h.revision());
        let keepalive = tokio::spawn(keep_alive(
            client,
            lease,
            claim.ttl / 3,
            self.state.clone(),
            name.to_string(),
        ));
        self.state().contenders.insert(
            id,
            Contender {
                lease,
                key: key.clone(),
                revision,
                predecessor: None,
                keepalive,
            },
        );
        Ok((lease, key, revision))
    }

    /// One range read of `key` with `options`, bounded and retried.
    async fn range(
        &self,
        step: &str,
        key: &str,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, StoreError> {
        call(step, || {
            let (mut c, key, options) = (self.client.clone(), key.to_owned(), options.clone());
            async move { c.get(key, options).await }
        })
        .await
    }

    /// The key that owns `name` now (lowest create revision), with the read's revision.
    async fn owner(&self, name: &LockName) -> Result<(Option<KeyValue>, i64), StoreError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let response = self
            .range("reading the lock", &self.lock_prefix(name), Some(options))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((response.kvs().first().cloned(), revision))
    }

    /// The key created just before `revision` under `name`.
    async fn predecessor(
        &self,
        name: &LockName,
        revision: i64,
    ) -> Result<Option<String>, StoreError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(revision - 1)
            .with_limit(1)
            .with_keys_only();
        let response = self
            .range("reading the line", &self.lock_prefix(name), Some(options))
            .await?;
        Ok(response
            .kvs()
            .first()
            .and_then(|kv| kv.key_str().ok())
            .map(str::to_owned))
    }

    async fn exists(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self.range("reading a key", key, None).await?;
        Ok(response.kvs().first().cloned())
    }

    fn record(name: &LockName, owner: Option<&KeyValue>, expires_at: Instant) -> Record {
        let Some(kv) = owner else {
            return Record {
                name: name.clone(),
                holding: None,
                token: 0,
            };
        };
        let value: Option<Value> = serde_json::from_slice(kv.value()).ok();
        Record {
            name: name.clone(),
            holding: value.map(|v| Holding {
                holder: v.holder,
                value: v.value,
                ttl: Duration::from_secs(v.ttl_seconds),
                expires_at,
            }),
            token: u64::try_from(kv.create_revision()).unwrap_or(0),
        }
    }

    /// The key `lease` owns, checked: it exists, was created at the lease's token, and names its
    /// holder. `NotHolder` otherwise.
    async fn owned(&self, name: &LockName, lease: &StoreLease) -> Result<i64, StoreError> {
        let id: i64 = lease.revision.parse().map_err(|_| StoreError::NotHolder)?;
        let kv = self
            .exists(&self.key(name, id))
            .await?
            .ok_or(StoreError::NotHolder)?;
        let value: Option<Value> = serde_json::from_slice(kv.value()).ok();
        let ours = u64::try_from(kv.create_revision()).ok() == Some(lease.token)
            && value.is_some_and(|v| v.holder == lease.holder);
        if ours {
            Ok(id)
        } else {
            Err(StoreError::NotHolder)
        }
    }

    async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let client = self.client.clone();
        call("revoking a lease", || {
            let mut c = client.clone();
            async move { c.lease_revoke(lease).await }
        })
        .await
        .map(drop)
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn try_acquire(&self, name: &LockName, claim: &Claim) -> Result<Attempt, StoreError> {
        // Decide only once the watch covers what we read, or a predecessor's deletion between
        // our read and the watch's start would never wake us.
        let mut covered = self.covered.clone();
        timeout(REQUEST_TIMEOUT, covered.wait_for(|c| *c))
            .await
            .map_err(|_| {
                unavailable(
                    "watching locks",
                    "the watch on etcd could not be established",
                )
            })?
            .map_err(|_| unavailable("watching locks", "the watch on etcd stopped"))?;
        for _ in 0..2 {
            let id = (name.to_string(), claim.holder.clone());
            let waited = self.state().contenders.contains_key(&id);
            let (lease, key, revision) = self.place(name, claim).await?;
            let (owner, read_at) = self.owner(name).await?;
            match owner {
                Some(kv) if kv.key_str().ok() == Some(key.as_str()) => {
                    // A waiter's lease was last kept alive up to a third of the ttl ago, but
                    // the grant's validity is counted from this call: refresh the lease first,
                    // or it could run out in etcd before the holder's renew deadline.
                    if waited
                        && !call("refreshing the lease", || {
                            keep_alive_once(self.client.clone(), lease)
                        })
                        .await?
                    {
                        self.state().contenders.remove(&id);
                        continue;
                    }
                    self.state().contenders.remove(&id);
                    self.state().waiters.notify(name.as_str());
                    return Ok(Attempt::Acquired(StoreLease {
                        holder: claim.holder.clone(),
                        token: u64::try_from(revision).unwrap_or(0),
                        ttl: claim.ttl,
                        value: claim.value.clone(),
                        revision: lease.to_string(),
                    }));
                }
                Some(kv) if kv.create_revision() < revision => {
                    let predecessor = self.predecessor(name, revision).await?;
                    if let Some(c) = self.state().contenders.get_mut(&id) {
                        c.predecessor = predecessor.clone();
                    }
                    // The predecessor may have gone between the read and now: look once more,
                    // so its deletion cannot slip between the watch and our registration.
                    if let Some(p) = &predecessor
                        && self.exists(p).await?.is_none()
                    {
                        self.state().waiters.notify(name.as_str());
                    }
                    debug!(lock = %name, read_at, "waiting for the predecessor");
                    return Ok(Attempt::Busy {
                        current: Self::record(name, Some(&kv), Instant::now() + claim.ttl),
                        retry_at: None,
                    });
                }
                _ => {
                    // Our key is gone (its lease ran out while we waited): queue again.
                    self.state().contenders.remove(&id);
                }
            }
        }
        Err(unavailable(
            "queueing for the lock",
            "our place in line kept disappearing",
        ))
    }

    async fn renew(&self, name: &LockName, lease: &StoreLease) -> Result<StoreLease, StoreError> {
        let id = self.owned(name, lease).await?;
        let alive = call("renewing the lease", || {
            keep_alive_once(self.client.clone(), id)
        })
        .await?;
        if !alive {
            return Err(StoreError::NotHolder);
        }
        Ok(lease.clone())
    }

    async fn release(&self, name: &LockName, lease: &StoreLease) -> Result<(), StoreError> {
        let id = self.owned(name, lease).await?;
        self.revoke(id).await?;
        self.state().waiters.notify(name.as_str());
        Ok(())
    }

    async fn get(&self, name: &LockName) -> Result<Option<Record>, StoreError> {
        let (owner, _) = self.owner(name).await?;
        let Some(kv) = owner else {
            return Ok(None);
        };
        let client = self.client.clone();
        let lease = kv.lease();
        let left = call("reading the lease", || {
            let mut c = client.clone();
            async move { c.lease_time_to_live(lease, None).await }
        })
        .await
        .map_or(0, |r| r.ttl().max(0));
        let expires_at = Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0));
        Ok(Some(Self::record(name, Some(&kv), expires_at)))
    }

    async fn list(&self) -> Result<Vec<Record>, StoreError> {
        let response = self
            .range(
                "listing locks",
                &self.prefix,
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let mut owners: BTreeMap<LockName, KeyValue> = BTreeMap::new();
        for kv in response.kvs() {
            let Some(name) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(&self.prefix))
                .and_then(|k| k.rsplit_once('/'))
                .and_then(|(n, _)| LockName::new(n).ok())
            else {
                continue;
            };
            let first = owners
                .get(&name)
                .is_none_or(|o| o.create_revision() > kv.create_revision());
            if first {
                owners.insert(name, kv.clone());
            }
        }
        let now = Instant::now();
        Ok(owners
            .iter()
            .map(|(name, kv)| {
                let ttl = serde_json::from_slice::<Value>(kv.value()).map_or(0, |v| v.ttl_seconds);
                Self::record(name, Some(kv), now + Duration::from_secs(ttl))
            })
            .collect())
    }

    fn subscribe(&self, name: &LockName) -> Changes {
        self.state().waiters.subscribe(name.as_str())
    }

    fn observe(&self, name: &LockName) -> Changes {
        self.state().observers.subscribe(name.as_str())
    }

    async fn abandon(&self, name: &LockName, claim: &Claim) {
        let contender = self
            .state()
            .contenders
            .remove(&(name.to_string(), claim.holder.clone()));
        if let Some(c) = contender
            && let Err(err) = self.revoke(c.lease).await
        {
            debug!(lock = %name, error = %err, "could not leave the line; the place expires with its lease");
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self.state().watching {
            Ok(())
        } else {
            Err(unavailable(
                "watching locks",
                "the watch on etcd is not established",
            ))
        }
    }
}

/// Keeps a waiting claimant's lease alive; when it cannot, wakes the waiter so it queues again.
async fn keep_alive(
    client: Client,
    lease: i64,
    every: Duration,
    state: Arc<Mutex<State>>,
    name: String,
) {
    let every = every.max(Duration::from_millis(200));
    loop {
        sleep(every).await;
        let alive = timeout(REQUEST_TIMEOUT, keep_alive_once(client.clone(), lease)).await;
        if let Ok(Ok(false)) = alive {
            state
                .lock()
                .expect("etcd store state poisoned")
                .waiters
                .notify(&name);
            return;
        }
    }
}

/// One watch over the whole prefix: followers hear every change of their lock; a waiter hears
/// only the deletion of its predecessor. Re-established after errors, from the last revision seen.
async fn watch_prefix(
    client: Client,
    prefix: String,
    state: Arc<Mutex<State>>,
    cover: tokio::sync::watch::Sender<bool>,
) {
    // The first revision the watch must deliver; 0 until the current revision is known.
    let mut from = 0i64;
    loop {
        let mut c = client.clone();
        if from == 0 {
            // Watching "from now" would leave a gap between a read and the watch's start: learn
            // the current revision and watch from the one after it.
            let options = GetOptions::new()
                .with_prefix()
                .with_keys_only()
                .with_limit(1);
            match timeout(REQUEST_TIMEOUT, c.get(prefix.clone(), Some(options))).await {
                Ok(Ok(response)) => from = response.header().map_or(0, |h| h.revision()) + 1,
                failed => {
                    let error = match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                    };
                    warn!(%error, "could not read etcd's revision; retrying");
                    sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = match c.watch(prefix.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(err) => {
                state.lock().expect("etcd store state poisoned").watching = false;
                warn!(error = %err, "could not watch etcd; retrying");
                sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        state.lock().expect("etcd store state poisoned").watching = true;
        cover.send_replace(true);
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(err) => {
                    warn!(error = %err, "the etcd watch broke; re-establishing it");
                    break;
                }
            };
            if message.compact_revision() > 0 {
                // The history we asked for is gone: start again from the current revision, and
                // wake every waiter once so each reads the line again.
                from = 0;
                let mut s = state.lock().expect("etcd store state poisoned");
                let names: Vec<String> = s.contenders.keys().map(|(n, _)| n.clone()).collect();
                for name in names {
                    s.waiters.notify(&name);
                }
                break;
            }
            let mut s = state.lock().expect("etcd store state poisoned");
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                from = from.max(kv.mod_revision() + 1);
                let Some(key) = kv.key_str().ok() else {
                    continue;
                };
                let Some((name, _)) = key
                    .strip_prefix(prefix.as_str())
                    .and_then(|k| k.rsplit_once('/'))
                else {
                    continue;
                };
                s.observers.notify(name);
                if event.event_type() == EventType::Delete {
                    let woken: Vec<String> = s
                        .contenders
                        .iter()
                        .filter(|(_, c)| c.predecessor.as_deref() == Some(key))
                        .map(|((n, _), _)| n.clone())
                        .collect();
                    for name in woken {
                        s.waiters.notify(&name);
                    }
                }
            }
        }
        state.lock().expect("etcd store state poisoned").watching = false;
        sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_two_forms_and_refuse_the_rest() {
        assert_eq!(
            endpoint_url("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            endpoint_url(" http://etcd-0:2379 ").unwrap(),
            "http://etcd-0:2379"
        );
        assert!(
            endpoint_url("https://etcd:2379")
                .unwrap_err()
                .contains("TLS")
        );
        assert!(endpoint_url("etcd").unwrap_err().contains("port"));
        assert!(endpoint_url("etcd:http").unwrap_err().contains("port"));
        assert!(
            endpoint_url("grpc://etcd:2379")
                .unwrap_err()
                .contains("host:port")
        );
        assert!(endpoint_url("").unwrap_err().contains("empty"));
    }
}
