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
use etcd_rpc::{
    Client, EventType, KeyValue, Options, PutRequest, RangeRequest, RangeResponse, SortOrder,
    SortTarget, WatchCreateRequest,
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
    Fut: Future<Output = Result<T, etcd_rpc::Error>>,
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
async fn keep_alive_once(client: Client, lease: i64) -> Result<bool, etcd_rpc::Error> {
    Ok(client.lease_keep_alive_once(lease).await?.is_some())
}

/// A key of ours as text (every key this store writes is).
fn key_str(kv: &KeyValue) -> Option<&str> {
    std::str::from_utf8(&kv.key).ok()
}

/// The revision a response was read or written at.
fn revision_of(header: Option<&etcd_rpc::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`host:port` or `http://host:port`) and keeps
    /// locks under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.request_timeout = Some(REQUEST_TIMEOUT);
        let client =
            Client::connect(endpoints, &options).map_err(|err| StoreError::Unavailable {
                store: "etcd",
                message: err.to_string(),
            })?;
        info!(endpoints = %endpoints.join(","), %prefix, "using etcd");
        Ok(Self::with_client(client, prefix))
    }

    /// A store over a client; starts its prefix watch at once.
    fn with_client(client: Client, prefix: &str) -> Self {
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
        let grant = call("granting a lease", || client.lease_grant(ttl)).await?;
        let lease = grant.id;
        let key = self.key(name, lease);
        let value = serde_json::to_vec(&Value {
            holder: claim.holder.clone(),
            value: claim.value.clone(),
            ttl_seconds: claim.ttl.as_secs(),
        })
        .expect("a Value serializes");
        let put = call("queueing for the lock", || {
            client.put(PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone(),
                lease,
                ..Default::default()
            })
        })
        .await?;
        let revision = revision_of(put.header.as_ref());
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

    /// One range read, bounded and retried.
    async fn range(&self, step: &str, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        call(step, || self.client.range(request.clone())).await
    }

    /// The key that owns `name` now (lowest create revision), with the read's revision.
    async fn owner(&self, name: &LockName) -> Result<(Option<KeyValue>, i64), StoreError> {
        let request = RangeRequest {
            sort_target: SortTarget::Create as i32,
            sort_order: SortOrder::Ascend as i32,
            limit: 1,
            ..RangeRequest::prefix(self.lock_prefix(name))
        };
        let response = self.range("reading the lock", request).await?;
        let revision = revision_of(response.header.as_ref());
        Ok((response.kvs.into_iter().next(), revision))
    }

    /// The key created just before `revision` under `name`.
    async fn predecessor(
        &self,
        name: &LockName,
        revision: i64,
    ) -> Result<Option<String>, StoreError> {
        let request = RangeRequest {
            sort_target: SortTarget::Create as i32,
            sort_order: SortOrder::Descend as i32,
            max_create_revision: revision - 1,
            limit: 1,
            keys_only: true,
            ..RangeRequest::prefix(self.lock_prefix(name))
        };
        let response = self.range("reading the line", request).await?;
        Ok(response.kvs.first().and_then(key_str).map(str::to_owned))
    }

    async fn exists(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let response = self.range("reading a key", request).await?;
        Ok(response.kvs.into_iter().next())
    }

    fn record(name: &LockName, owner: Option<&KeyValue>, expires_at: Instant) -> Record {
        let Some(kv) = owner else {
            return Record {
                name: name.clone(),
                holding: None,
                token: 0,
            };
        };
        let value: Option<Value> = serde_json::from_slice(&kv.value).ok();
        Record {
            name: name.clone(),
            holding: value.map(|v| Holding {
                holder: v.holder,
                value: v.value,
                ttl: Duration::from_secs(v.ttl_seconds),
                expires_at,
            }),
            token: u64::try_from(kv.create_revision).unwrap_or(0),
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
        let value: Option<Value> = serde_json::from_slice(&kv.value).ok();
        let ours = u64::try_from(kv.create_revision).ok() == Some(lease.token)
            && value.is_some_and(|v| v.holder == lease.holder);
        if ours {
            Ok(id)
        } else {
            Err(StoreError::NotHolder)
        }
    }

    async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        call("revoking a lease", || self.client.lease_revoke(lease))
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
                Some(kv) if key_str(&kv) == Some(key.as_str()) => {
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
                Some(kv) if kv.create_revision < revision => {
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
        let left = call("reading the lease", || {
            self.client.lease_time_to_live(kv.lease)
        })
        .await
        .map_or(0, |r| r.ttl.max(0));
        let expires_at = Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0));
        Ok(Some(Self::record(name, Some(&kv), expires_at)))
    }

    async fn list(&self) -> Result<Vec<Record>, StoreError> {
        let response = self
            .range("listing locks", RangeRequest::prefix(self.prefix.as_str()))
            .await?;
        let mut owners: BTreeMap<LockName, KeyValue> = BTreeMap::new();
        for kv in response.kvs {
            let Some(name) = key_str(&kv)
                .and_then(|k| k.strip_prefix(&self.prefix))
                .and_then(|k| k.rsplit_once('/'))
                .and_then(|(n, _)| LockName::new(n).ok())
            else {
                continue;
            };
            let first = owners
                .get(&name)
                .is_none_or(|o| o.create_revision > kv.create_revision);
            if first {
                owners.insert(name, kv);
            }
        }
        let now = Instant::now();
        Ok(owners
            .iter()
            .map(|(name, kv)| {
                let ttl = serde_json::from_slice::<Value>(&kv.value).map_or(0, |v| v.ttl_seconds);
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

    fn describe(&self) -> serde_json::Value {
        let state = self.state();
        let contenders: Vec<_> = state
            .contenders
            .iter()
            .map(|((lock, holder), c)| {
                serde_json::json!({
                    "lock": lock,
                    "holder": holder,
                    "key": c.key,
                    "revision": c.revision,
                    "predecessor": c.predecessor,
                })
            })
            .collect();
        serde_json::json!({"watching": state.watching, "contenders": contenders})
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
        if from == 0 {
            // Watching "from now" would leave a gap between a read and the watch's start: learn
            // the current revision and watch from the one after it.
            let request = RangeRequest {
                keys_only: true,
                limit: 1,
                ..RangeRequest::prefix(prefix.as_str())
            };
            match timeout(REQUEST_TIMEOUT, client.range(request)).await {
                Ok(Ok(response)) => from = revision_of(response.header.as_ref()) + 1,
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
        let request = WatchCreateRequest {
            start_revision: from,
            ..WatchCreateRequest::prefix(prefix.as_str())
        };
        let mut stream = match client.watch(request).await {
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
            if message.compact_revision > 0 {
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
            if message.canceled {
                warn!(reason = %message.cancel_reason, "etcd cancelled the watch; re-establishing it");
                break;
            }
            let mut s = state.lock().expect("etcd store state poisoned");
            for event in &message.events {
                let Some(kv) = &event.kv else { continue };
                from = from.max(kv.mod_revision + 1);
                let Some(key) = key_str(kv) else {
                    continue;
                };
                let Some((name, _)) = key
                    .strip_prefix(prefix.as_str())
                    .and_then(|k| k.rsplit_once('/'))
                else {
                    continue;
                };
                s.observers.notify(name);
                if event.r#type() == EventType::Delete {
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
