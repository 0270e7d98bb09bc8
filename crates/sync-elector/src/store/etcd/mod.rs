//! The etcd store: locks on an etcd v3 cluster, outside Kubernetes, with etcd's own concurrency
//! recipe.
//!
//! - Each claimant puts a key of its own, `{prefix}{name}/{lease id}-{n}`, under the etcd lease
//!   of this elector's session for the lock's ttl (`session.rs`): one lease, and one keep-alive
//!   per `ttl / 3`, however many of its claims wait or hold. The key with the lowest create
//!   revision owns the lock; the fencing token is that create revision, so tokens strictly
//!   increase with every new holder.
//! - Waiters are served in the order their keys were created (first come, first served across
//!   every elector), and each waits for its *predecessor* only: one watch over the prefix, per
//!   elector, wakes a waiter when the key just before its own is deleted. A release therefore
//!   wakes one waiter, not all of them. `line.rs` holds the rule that keeps that wake-up from
//!   being lost, and a periodic sweep catches an event etcd never delivered (`tasks.rs`).
//! - Release deletes the holder's key; a claimant that stops waiting deletes its key too, leaving
//!   the line. A holder's renewal is the session's keep-alive alone: the prefix watch tells the
//!   store when a held key is deleted, so a renewal reads the key only while the watch is down
//!   or after it lost history.
//! - A semaphore's or read-write lock's claim queues in the same line and is decided from one
//!   read of it (`standing.rs`, docs/semaphores.md); a semaphore's grant also creates its permit
//!   key, `{prefix}{name}/permit-{i}`, only if absent, and gives it up with its claim key.
//! - When the cluster loses quorum or the elector is cut off, renewals fail and the holder is told
//!   "lost" by the renew deadline; the server-side lease may outlive that, which the
//!   client-validity rule covers.

mod counted;
mod line;
mod session;
mod standing;
mod tasks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use etcd_rpc::{
    Client, KeyValue, Options, PutRequest, RangeRequest, RangeResponse, SortOrder, SortTarget,
};
use serde::{Deserialize, Serialize};
use sync_protocol::LockName;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info};

use self::line::{Contender, Held, Id, Line, Position, position};
use self::session::{Beat, Event, Sessions, Share};
use self::standing::{
    Claimed, Standing, asks_of, asks_text, lowest_free_permit, permit_of, permit_suffix, standing,
};
use super::{
    Asks, Attempt, Changes, Claim, Conflict, Grant, Held as GrantHeld, Holding, Kind, Record,
    Store, StoreError, Ticket,
};

/// A name's line, read in one range: its claim keys, oldest first, and a semaphore's permit keys.
struct Read {
    claims: Vec<KeyValue>,
    permits: Vec<(u32, KeyValue)>,
}

impl Read {
    /// Splits every key under a name's prefix into claims and permits.
    fn of(prefix: &str, keys: Vec<KeyValue>) -> Self {
        let mut read = Self {
            claims: Vec::new(),
            permits: Vec::new(),
        };
        for kv in keys {
            let permit = key_str(&kv)
                .and_then(|k| k.strip_prefix(prefix))
                .and_then(permit_of);
            match permit {
                Some(permit) => read.permits.push((permit, kv)),
                None => read.claims.push(kv),
            }
        }
        read
    }

    /// Each claim key with what it asks for, as `standing` takes them.
    fn claimed(&self) -> Vec<Claimed<'_>> {
        self.claims
            .iter()
            .map(|kv| Claimed {
                key: key_str(kv).unwrap_or_default(),
                asks: Value::of(kv).and_then(|v| asks_of(v.asks.as_deref())),
            })
            .collect()
    }

    /// What the name is: its oldest claim's kind (a lock's when nobody claims it).
    fn kind(&self) -> Kind {
        self.claims
            .first()
            .and_then(Value::of)
            .and_then(|v| asks_of(v.asks.as_deref()))
            .map_or(Kind::Lock, Asks::kind)
    }

    /// A semaphore's or read-write lock's record: its permits' holders, or the claims a read-write
    /// lock grants now. Expiry is shown as one ttl from `now` (etcd keeps it in the session's
    /// lease, not per key).
    fn grants_record(&self, name: &LockName, now: Instant) -> Record {
        let grant = |held, kv: &KeyValue| {
            let value = Value::of(kv)?;
            Some(Grant {
                held,
                token: u64::try_from(kv.create_revision).unwrap_or(0),
                holding: Holding {
                    holder: value.holder,
                    value: value.value,
                    ttl: Duration::from_secs(value.ttl_seconds),
                    expires_at: now + Duration::from_secs(value.ttl_seconds),
                    since: None,
                },
            })
        };
        let kind = self.kind();
        let mut grants: Vec<Grant> = match kind {
            Kind::Semaphore { .. } => self
                .permits
                .iter()
                .filter_map(|(permit, kv)| grant(GrantHeld::Permit(*permit), kv))
                .collect(),
            _ => {
                let claimed = self.claimed();
                claimed
                    .iter()
                    .zip(&self.claims)
                    .filter_map(|(c, kv)| {
                        let asks = c.asks?;
                        let eligible = standing(&claimed, c.key, asks) == Standing::Eligible;
                        let held = if asks == Asks::Exclusive {
                            GrantHeld::Exclusive
                        } else {
                            GrantHeld::Shared
                        };
                        eligible.then(|| grant(held, kv)).flatten()
                    })
                    .collect()
            }
        };
        grants.sort_by_key(|g| g.token);
        let token = self
            .claims
            .iter()
            .chain(self.permits.iter().map(|(_, kv)| kv))
            .map(|kv| u64::try_from(kv.create_revision).unwrap_or(0))
            .max()
            .unwrap_or(0);
        Record {
            name: name.clone(),
            holding: None,
            token,
            kind,
            grants,
        }
    }
}

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
    /// What a semaphore's or read-write lock's claim asks for (`standing::asks_text`); absent
    /// for a lock's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    asks: Option<String>,
}

impl Value {
    fn of(kv: &KeyValue) -> Option<Self> {
        serde_json::from_slice(&kv.value).ok()
    }
}

/// Locks on an etcd cluster.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    line: Arc<Mutex<Line>>,
    /// The shared leases that every key of this store lives under.
    sessions: Sessions,
    /// Numbers the keys this store writes under one lease.
    written: AtomicU64,
    /// Becomes true once the prefix watch has started. From then on it covers every change after
    /// any read this store makes, also across re-establishment (it resumes from the last
    /// revision seen), so a waiter cannot miss its predecessor's deletion.
    covered: tokio::sync::watch::Receiver<bool>,
    /// The prefix watch and the sweep.
    tasks: [JoinHandle<()>; 2],
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn unavailable(step: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable("etcd", format!("{step}: {err}"))
}

/// Runs an etcd request with a bound, retrying once or twice on a transient failure (a client
/// given several endpoints may send a call to a member that just died).
async fn call<T, F, Fut>(step: &str, mut request: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_rpc::Error>>,
{
    // The last attempt's error; `None` when it got no answer in time.
    let mut last = None;
    for attempt in 0..3 {
        match timeout(REQUEST_TIMEOUT, request()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => last = Some(err),
            Err(_) => last = None,
        }
        if attempt < 2 {
            sleep(Duration::from_millis(100)).await;
        }
    }
    Err(match last {
        Some(err) => StoreError::caused_by("etcd", format!("{step}: {err}"), err),
        None => unavailable(step, format!("no answer within {REQUEST_TIMEOUT:?}")),
    })
}

/// Deletes one of our keys in a task of its own, so that a caller that stops waiting (a release
/// bounded by a timeout) does not stop the delete. The first answer goes to the receiver
/// (`true`: the key was there); after a failure the task tries again until etcd answers, or
/// until the session's lease is gone, which took the key with it. The key's share of its
/// session goes with the task: the session would keep a key whose delete failed alive for as
/// long as any other key uses it, so a failed delete is never left to the lease's expiry.
fn delete_key(
    client: Client,
    key: String,
    share: Share,
) -> tokio::sync::oneshot::Receiver<Result<bool, StoreError>> {
    delete_keys(client, vec![key], share)
}

/// [`delete_key`] for several keys under one share, in order (a semaphore's permit key, then its
/// claim key); the answer is the last key's, or the first failure.
fn delete_keys(
    client: Client,
    keys: Vec<String>,
    share: Share,
) -> tokio::sync::oneshot::Receiver<Result<bool, StoreError>> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut first = Ok(false);
        let mut left = Vec::new();
        for key in keys {
            match call("deleting a key", || client.delete(key.as_bytes())).await {
                Ok(was_there) => first = first.map(|_| was_there),
                Err(err) => {
                    if first.is_ok() {
                        first = Err(err);
                    }
                    left.push(key);
                }
            }
        }
        let _ = answer.send(first);
        for key in left {
            while !share.session().dead() {
                match timeout(REQUEST_TIMEOUT, client.delete(key.as_bytes())).await {
                    Ok(Ok(_)) => break,
                    _ => sleep(Duration::from_millis(200)).await,
                }
            }
        }
        drop(share);
    });
    answered
}

/// [`delete_key`], without waiting for the answer.
fn give_up(client: Client, key: String, share: Share) {
    drop(delete_key(client, key, share));
}

/// Gives up a holding without waiting: its permit key first, if it holds one, so the permit is
/// free before the line moves, then its claim key.
fn give_up_held(client: Client, key: String, held: Held) {
    drop(delete_keys(client, held_keys(key, held.permit), held.share));
}

/// The keys of a holding, in the order they are deleted.
fn held_keys(key: String, permit: Option<String>) -> Vec<String> {
    permit.into_iter().chain([key]).collect()
}

/// Waits for [`delete_key`]'s first answer.
async fn deleted(
    answered: tokio::sync::oneshot::Receiver<Result<bool, StoreError>>,
) -> Result<bool, StoreError> {
    answered
        .await
        .unwrap_or_else(|_| Err(unavailable("deleting a key", "the delete task stopped")))
}

/// A key of ours as text (every key this store writes is).
pub(crate) fn key_str(kv: &KeyValue) -> Option<&str> {
    std::str::from_utf8(&kv.key).ok()
}

/// The revision a response was read or written at.
pub(crate) fn revision_of(header: Option<&etcd_rpc::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`host:port` or `http://host:port`) and keeps
    /// locks under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.request_timeout = Some(REQUEST_TIMEOUT);
        options.observer = Some(Arc::new(counted::Counted));
        let client = Client::connect(endpoints, &options)
            .map_err(|err| StoreError::caused_by("etcd", err.to_string(), err))?;
        info!(endpoints = %endpoints.join(","), %prefix, "using etcd");
        Ok(Self::with_client(client, prefix))
    }

    /// A store over a client; starts its prefix watch and its sweep at once.
    fn with_client(client: Client, prefix: &str) -> Self {
        let line = Arc::new(Mutex::new(Line::default()));
        let (cover, covered) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(tasks::watch_prefix(
            client.clone(),
            prefix.to_owned(),
            line.clone(),
            cover,
        ));
        let sweep = tokio::spawn(tasks::sweep(
            client.clone(),
            prefix.to_owned(),
            line.clone(),
        ));
        Self {
            client,
            prefix: prefix.to_owned(),
            line,
            sessions: Sessions::default(),
            written: AtomicU64::new(0),
            covered,
            tasks: [watcher, sweep],
        }
    }

    fn line(&self) -> MutexGuard<'_, Line> {
        tasks::lock(&self.line)
    }

    fn lock_prefix(&self, name: &LockName) -> String {
        format!("{}{name}/", self.prefix)
    }

    /// A new key for a claim on `name` under `lease`: unique, as the lease id is in the cluster
    /// and the number in this store.
    fn key(&self, name: &LockName, lease: i64) -> String {
        let n = self.written.fetch_add(1, Ordering::Relaxed);
        format!("{}{lease:016x}-{n:x}", self.lock_prefix(name))
    }

    /// The claimant's place in line: found, or made (a key under this elector's session).
    async fn place(
        &self,
        name: &LockName,
        claim: &Claim,
    ) -> Result<(i64, String, i64), StoreError> {
        let id = (name.to_string(), claim.holder.clone());
        if let Some(c) = self.line().contenders.get(&id) {
            return Ok((c.lease, c.key.clone(), c.revision));
        }
        let client = self.client.clone();
        let line = Arc::downgrade(&self.line);
        let events = client.clone();
        let hook: session::Hook = Arc::new(move |event: Event| {
            let Some(line) = line.upgrade() else { return };
            match event {
                Event::Gone(lease) => tasks::lock(&line).lease_gone(lease),
                Event::Due(lease) => {
                    let unrenewed = tasks::lock(&line).unrenewed(lease, Instant::now());
                    for (key, held) in unrenewed {
                        debug!(%key, "a holding nobody renewed for its ttl expires");
                        give_up_held(events.clone(), key, held);
                    }
                }
            }
        });
        let value = serde_json::to_vec(&Value {
            holder: claim.holder.clone(),
            value: claim.value.clone(),
            ttl_seconds: claim.ttl.as_secs(),
            asks: claim.asks.map(asks_text),
        })
        .expect("a Value serializes");
        let mut retried = false;
        let (share, lease, key, put) = loop {
            let share = self
                .sessions
                .share(&client, claim.ttl, hook.clone())
                .await?;
            let lease = share.session().lease;
            let key = self.key(name, lease);
            let put = call("queueing for the lock", || {
                client.put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone(),
                    lease,
                    ..Default::default()
                })
            })
            .await;
            match put {
                Ok(put) => break (share, lease, key, put),
                Err(err) => {
                    // etcd refuses a key under a lease it no longer has: the session died
                    // unnoticed (the elector was paused past the ttl), so queue under a new one.
                    let lapsed = err.to_string().contains("lease not found");
                    if lapsed {
                        share.session().mark_dead();
                    } else {
                        // The put may have landed with its answer lost; the session would keep
                        // that key alive in the line, so delete it.
                        give_up(client.clone(), key, share);
                    }
                    if lapsed && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(err);
                }
            }
        };
        let revision = revision_of(put.header.as_ref());
        self.line().contenders.insert(
            id,
            Contender::new(lease, key.clone(), revision, claim.ttl, Some(share)),
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

    /// Every key in `name`'s line, oldest first, from one read: the owner and a waiter's
    /// predecessor must come from the same revision.
    async fn read_line(&self, name: &LockName) -> Result<Vec<KeyValue>, StoreError> {
        let request = RangeRequest {
            sort_target: SortTarget::Create as i32,
            sort_order: SortOrder::Ascend as i32,
            ..RangeRequest::prefix(self.lock_prefix(name))
        };
        Ok(self.range("reading the line", request).await?.kvs)
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
            return Record::lock(name.clone(), None, 0);
        };
        let value: Option<Value> = serde_json::from_slice(&kv.value).ok();
        Record {
            name: name.clone(),
            holding: value.map(|v| Holding {
                holder: v.holder,
                value: v.value,
                ttl: Duration::from_secs(v.ttl_seconds),
                expires_at,
                since: None,
            }),
            token: u64::try_from(kv.create_revision).unwrap_or(0),
            kind: crate::store::Kind::Lock,
            grants: Vec::new(),
        }
    }

    /// Whether the key `ticket` names is still its holding, as far as this store knows without a
    /// read: held here and not reported deleted. `Ok(true)` when the prefix watch has covered the
    /// key since it was last read; `Ok(false)` when it must be read to be sure.
    fn known_held(&self, ticket: &Ticket) -> Result<bool, StoreError> {
        let line = self.line();
        match line.held.get(&ticket.revision) {
            Some(held)
                if held.holder == ticket.holder
                    && held.token == ticket.token
                    && !held.gone
                    && !held.share.session().dead() =>
            {
                Ok(held.verified && line.watching)
            }
            _ => Err(StoreError::NotHolder),
        }
    }

    /// Reads the key `ticket` names (for a semaphore's grant, its permit key): it exists, was
    /// created at the ticket's token, and names its holder. `NotHolder` otherwise.
    async fn check_owned(&self, name: &LockName, ticket: &Ticket) -> Result<(), StoreError> {
        let key = match ticket.held {
            Some(GrantHeld::Permit(permit)) => {
                format!("{}{}", self.lock_prefix(name), permit_suffix(permit))
            }
            _ => ticket.revision.clone(),
        };
        let kv = self.exists(&key).await?.ok_or(StoreError::NotHolder)?;
        let value: Option<Value> = serde_json::from_slice(&kv.value).ok();
        let ours = u64::try_from(kv.create_revision).ok() == Some(ticket.token)
            && value.is_some_and(|v| v.holder == ticket.holder);
        if ours {
            Ok(())
        } else {
            Err(StoreError::NotHolder)
        }
    }
}

impl EtcdStore {
    /// Waits until the watch covers what a read will show, or a key's deletion between the read
    /// and the watch's start would never wake a waiter.
    async fn covered(&self) -> Result<(), StoreError> {
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
        Ok(())
    }

    /// The claimant `holder` leaves `name`'s line: its key is deleted.
    async fn leave(&self, name: &LockName, holder: &str) {
        let contender = self
            .line()
            .contenders
            .remove(&(name.to_string(), holder.to_owned()));
        let Some(c) = contender else { return };
        let Some(share) = c.share else { return };
        if let Err(err) = deleted(delete_key(self.client.clone(), c.key, share)).await {
            debug!(lock = %name, error = %err, "could not leave the line yet; trying again in the background");
        }
    }

    /// A semaphore's or read-write lock's claim (docs/semaphores.md): queue a key as for a lock,
    /// read the whole line, and decide from that one read where the claim stands
    /// (`standing.rs`). A semaphore's eligible claim then creates the lowest free permit key,
    /// only if nobody has, under the same session; its token is that key's create revision. A
    /// read-write lock's token is its claim key's.
    async fn try_grant(
        &self,
        name: &LockName,
        claim: &Claim,
        asks: Asks,
    ) -> Result<Attempt, StoreError> {
        let id: Id = (name.to_string(), claim.holder.clone());
        let prefix = self.lock_prefix(name);
        for _ in 0..4 {
            let (lease, key, revision) = self.place(name, claim).await?;
            self.line().begin_read(&id);
            let read = match self.read_line(name).await {
                Ok(line) => Read::of(&prefix, line),
                Err(err) => {
                    self.line().end_read(&id);
                    return Err(err);
                }
            };
            let claimed = read.claimed();
            let (held, token, permit) = match standing(&claimed, &key, asks) {
                Standing::Gone => {
                    let mut l = self.line();
                    l.end_read(&id);
                    l.contenders.remove(&id);
                    continue;
                }
                Standing::Conflict(conflict) => {
                    self.line().end_read(&id);
                    self.leave(name, &claim.holder).await;
                    return Ok(Attempt::Conflict(conflict));
                }
                Standing::Behind(keys) => {
                    self.line().wait_behind(&id, &keys);
                    debug!(lock = %name, waits_for = ?keys, "waiting for the keys in the way");
                    return Ok(Attempt::Busy {
                        current: read.grants_record(name, Instant::now()),
                        retry_at: None,
                    });
                }
                Standing::Eligible => match asks {
                    Asks::Permit { permits } => {
                        let taken: Vec<u32> = read.permits.iter().map(|(p, _)| *p).collect();
                        let Some(permit) = lowest_free_permit(permits, &taken) else {
                            // A permit whose claim is gone but whose key is not yet: wait for
                            // the permit keys to go.
                            let keys: Vec<&str> = read
                                .permits
                                .iter()
                                .filter_map(|(_, kv)| key_str(kv))
                                .collect();
                            self.line().wait_behind(&id, &keys);
                            return Ok(Attempt::Busy {
                                current: read.grants_record(name, Instant::now()),
                                retry_at: None,
                            });
                        };
                        self.line().end_read(&id);
                        let permit_key = format!("{prefix}{}", permit_suffix(permit));
                        let value = serde_json::to_vec(&Value {
                            holder: claim.holder.clone(),
                            value: claim.value.clone(),
                            ttl_seconds: claim.ttl.as_secs(),
                            asks: None,
                        })
                        .expect("a Value serializes");
                        let created = call("taking a permit", || {
                            self.client.create(PutRequest {
                                key: permit_key.clone().into_bytes(),
                                value: value.clone(),
                                lease,
                                ..Default::default()
                            })
                        })
                        .await?;
                        // Another claimant took that permit first: read the line again.
                        let Some(created) = created else { continue };
                        (GrantHeld::Permit(permit), created, Some(permit_key))
                    }
                    Asks::Shared | Asks::Exclusive => {
                        self.line().end_read(&id);
                        let held = if asks == Asks::Shared {
                            GrantHeld::Shared
                        } else {
                            GrantHeld::Exclusive
                        };
                        (held, revision, None)
                    }
                },
            };
            match self.hold(name, claim, &id, key, token, permit).await? {
                Some(ticket) => {
                    return Ok(Attempt::Acquired(Ticket {
                        held: Some(held),
                        ..ticket
                    }));
                }
                None => continue,
            }
        }
        Err(unavailable(
            "queueing for the lock",
            "our place in line kept disappearing",
        ))
    }

    /// Takes the holding of `key` (and a semaphore's `permit` key) with `token`, once the
    /// session that keeps them alive is known to live. `None` when it is gone, which took the
    /// keys with it: the caller queues again.
    async fn hold(
        &self,
        name: &LockName,
        claim: &Claim,
        id: &Id,
        key: String,
        token: i64,
        permit: Option<String>,
    ) -> Result<Option<Ticket>, StoreError> {
        let share = self.line().contenders.remove(id).and_then(|c| c.share);
        let Some(share) = share else { return Ok(None) };
        // The grant's validity counts from the session's last keep-alive, not from this call.
        // When that is a renew interval old or more (the elector was paused, or keep-alives
        // failed), keep the lease alive first.
        let session = share.session().clone();
        let mut valid_from = session.beat();
        if valid_from.elapsed() >= claim.ttl / 3 {
            match session.renew(&self.client).await {
                Ok(Beat::Alive(sent)) => valid_from = sent,
                Ok(Beat::Gone) => return Ok(None),
                Err(err) => {
                    drop(delete_keys(
                        self.client.clone(),
                        held_keys(key, permit),
                        share,
                    ));
                    return Err(err);
                }
            }
        }
        if session.dead() {
            return Ok(None);
        }
        let token = u64::try_from(token).unwrap_or(0);
        let mut l = self.line();
        let verified = l.watching;
        l.held.insert(
            key.clone(),
            Held {
                holder: claim.holder.clone(),
                token,
                renewed: valid_from,
                share,
                gone: false,
                verified,
                permit,
            },
        );
        l.waiters.notify(name.as_str());
        Ok(Some(Ticket {
            holder: claim.holder.clone(),
            token,
            ttl: claim.ttl,
            value: claim.value.clone(),
            revision: key,
            valid_from: Some(valid_from),
            held: None,
        }))
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn try_acquire(&self, name: &LockName, claim: &Claim) -> Result<Attempt, StoreError> {
        self.covered().await?;
        if let Some(asks) = claim.asks {
            return self.try_grant(name, claim, asks).await;
        }
        let id: Id = (name.to_string(), claim.holder.clone());
        for _ in 0..2 {
            let (_, key, revision) = self.place(name, claim).await?;
            // From here on, deletions in this lock's line are recorded for us (see `line`).
            self.line().begin_read(&id);
            let read = match self.read_line(name).await {
                Ok(line) => Read::of(&self.lock_prefix(name), line),
                Err(err) => {
                    self.line().end_read(&id);
                    return Err(err);
                }
            };
            let is = read.kind();
            if is != Kind::Lock {
                self.line().end_read(&id);
                self.leave(name, &claim.holder).await;
                return Ok(Attempt::Conflict(Conflict {
                    is,
                    asked: Kind::Lock,
                }));
            }
            let line = read.claims;
            match position(&line, &key) {
                Position::Head => {
                    self.line().end_read(&id);
                    match self.hold(name, claim, &id, key, revision, None).await? {
                        Some(ticket) => return Ok(Attempt::Acquired(ticket)),
                        None => continue,
                    }
                }
                Position::Behind { owner, predecessor } => {
                    let predecessor = key_str(predecessor).unwrap_or_default();
                    self.line().wait_behind(&id, &[predecessor]);
                    debug!(lock = %name, predecessor, "waiting for the predecessor");
                    return Ok(Attempt::Busy {
                        current: Self::record(name, Some(owner), Instant::now() + claim.ttl),
                        retry_at: None,
                    });
                }
                Position::Gone => {
                    // Our key is gone (its lease ran out while we waited): queue again.
                    self.line().contenders.remove(&id);
                }
            }
        }
        Err(unavailable(
            "queueing for the lock",
            "our place in line kept disappearing",
        ))
    }

    async fn renew(&self, name: &LockName, ticket: &Ticket) -> Result<Ticket, StoreError> {
        if !self.known_held(ticket)? {
            self.check_owned(name, ticket).await?;
            if let Some(held) = self.line().held.get_mut(&ticket.revision) {
                held.verified = true;
            }
        }
        let session = match self.line().held.get(&ticket.revision) {
            Some(held) => held.share.session().clone(),
            None => return Err(StoreError::NotHolder),
        };
        match session.renew(&self.client).await? {
            Beat::Alive(sent) => {
                if let Some(held) = self.line().held.get_mut(&ticket.revision) {
                    held.renewed = held.renewed.max(sent);
                }
                Ok(Ticket {
                    valid_from: Some(sent),
                    ..ticket.clone()
                })
            }
            Beat::Gone => {
                self.line().held.remove(&ticket.revision);
                Err(StoreError::NotHolder)
            }
        }
    }

    async fn release(&self, name: &LockName, ticket: &Ticket) -> Result<(), StoreError> {
        // Only a key this store holds: the key names the holding, so deleting it gives up
        // exactly this holding and nothing else.
        let held = {
            let mut line = self.line();
            let ours = line
                .held
                .get(&ticket.revision)
                .is_some_and(|h| h.holder == ticket.holder && h.token == ticket.token);
            if !ours {
                return Err(StoreError::NotHolder);
            }
            line.held.remove(&ticket.revision)
        };
        let Some(held) = held else {
            return Err(StoreError::NotHolder);
        };
        let keys = held_keys(ticket.revision.clone(), held.permit);
        let answered = delete_keys(self.client.clone(), keys, held.share);
        let deleted = deleted(answered).await?;
        self.line().waiters.notify(name.as_str());
        if deleted {
            Ok(())
        } else {
            Err(StoreError::NotHolder)
        }
    }

    async fn get(&self, name: &LockName) -> Result<Option<Record>, StoreError> {
        let (owner, _) = self.owner(name).await?;
        let Some(kv) = owner else {
            return Ok(None);
        };
        if Value::of(&kv).is_some_and(|v| v.asks.is_some()) {
            let read = Read::of(&self.lock_prefix(name), self.read_line(name).await?);
            return Ok(Some(read.grants_record(name, Instant::now())));
        }
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
        let mut lines: BTreeMap<LockName, Vec<KeyValue>> = BTreeMap::new();
        for kv in response.kvs {
            let Some(name) = key_str(&kv)
                .and_then(|k| k.strip_prefix(&self.prefix))
                .and_then(|k| k.rsplit_once('/'))
                .and_then(|(n, _)| LockName::new(n).ok())
            else {
                continue;
            };
            lines.entry(name).or_default().push(kv);
        }
        let now = Instant::now();
        Ok(lines
            .into_iter()
            .map(|(name, mut keys)| {
                keys.sort_by_key(|kv| kv.create_revision);
                let read = Read::of(&self.lock_prefix(&name), keys);
                if read.kind() != Kind::Lock {
                    return read.grants_record(&name, now);
                }
                let owner = read.claims.first();
                let ttl = owner.and_then(Value::of).map_or(0, |v| v.ttl_seconds);
                Self::record(&name, owner, now + Duration::from_secs(ttl))
            })
            .collect())
    }

    fn subscribe(&self, name: &LockName) -> Changes {
        self.line().waiters.subscribe(name.as_str())
    }

    fn observe(&self, name: &LockName) -> Changes {
        self.line().observers.subscribe(name.as_str())
    }

    async fn abandon(&self, name: &LockName, claim: &Claim) {
        self.leave(name, &claim.holder).await;
    }

    fn lost(&self, name: &LockName, holder: &str) {
        // The session keeps every key under it alive, so a holding the manager gave up as lost
        // (its renewals timed out) must be deleted, or its key would keep the lock for as long as
        // the session lives. Deleted in the background, again until etcd answers.
        let prefix = self.lock_prefix(name);
        let lost = self
            .line()
            .take_held(|key, held| key.starts_with(&prefix) && held.holder == holder);
        for (key, held) in lost {
            give_up_held(self.client.clone(), key, held);
        }
    }

    fn describe(&self) -> serde_json::Value {
        let mut described = self.line().describe();
        described["sessions"] = self
            .sessions
            .describe()
            .into_iter()
            .map(|(lease, ttl, keys)| serde_json::json!({"lease": lease, "ttl_seconds": ttl, "keys": keys}))
            .collect();
        described
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self.line().watching {
            Ok(())
        } else {
            Err(unavailable(
                "watching locks",
                "the watch on etcd is not established",
            ))
        }
    }
}
