//! The store conformance suite: the behaviour every [`Store`] must show, written once and stamped
//! out for each store with [`store_conformance!`](crate::store_conformance).
//!
//! Each check takes a fresh store and a lock ttl short enough for a test run but long enough for
//! the store's round trips; expiry checks wait a little over one ttl. The checks use distinct lock
//! names, so a store that persists between checks (a shared etcd or test API server) still passes.

use std::time::Duration;

use sync_protocol::LockName;
use tokio::time::{Instant, sleep, timeout};

use super::{Asks, Attempt, Claim, Conflict, Held, Kind, Store, StoreError, Ticket};

/// How long a check waits for a change signal before it fails.
const SIGNAL_WAIT: Duration = Duration::from_secs(10);

fn name(test: &str) -> LockName {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    LockName::new(format!("conf-{test}-{}", &unique[..8])).expect("valid test name")
}

fn claim(holder: &str, ttl: Duration) -> Claim {
    Claim {
        holder: holder.to_owned(),
        ttl,
        value: Some(format!("{holder}.addr")),
        asks: None,
    }
}

async fn acquire(store: &dyn Store, name: &LockName, claim: &Claim) -> Ticket {
    match store.try_acquire(name, claim).await.expect("store answers") {
        Attempt::Acquired(lease) => lease,
        Attempt::Busy { current, .. } => panic!("{name} should be free, is {current:?}"),
        Attempt::Conflict(conflict) => panic!("{name} should be free, is in conflict: {conflict}"),
    }
}

/// Takes `name` for `claim` once this store sees it free: a store that learns of other stores'
/// changes through a watch may still show the previous holder for a moment.
async fn acquire_when_free(store: &dyn Store, name: &LockName, claim: &Claim) -> Ticket {
    let deadline = Instant::now() + SIGNAL_WAIT;
    loop {
        let mut changes = store.subscribe(name);
        match store.try_acquire(name, claim).await.expect("store answers") {
            Attempt::Acquired(lease) => return lease,
            Attempt::Busy { current, .. } => {
                assert!(
                    Instant::now() < deadline,
                    "{name} never came free: {current:?}"
                );
                let _ = timeout(Duration::from_millis(200), changes.changed()).await;
            }
            Attempt::Conflict(conflict) => panic!("{name} is in conflict: {conflict}"),
        }
    }
}

async fn busy(store: &dyn Store, name: &LockName, claim: &Claim) -> super::Record {
    match store.try_acquire(name, claim).await.expect("store answers") {
        Attempt::Busy { current, .. } => current,
        Attempt::Acquired(lease) => panic!("{name} should be busy, was granted {lease:?}"),
        Attempt::Conflict(conflict) => panic!("{name} should be busy, is in conflict: {conflict}"),
    }
}

/// A free lock is granted with a positive token, and the record shows the holder and value.
pub async fn acquire_free_lock(store: &dyn Store, ttl: Duration) {
    let name = name("free");
    assert_eq!(store.get(&name).await.expect("get"), None, "unknown name");
    let lease = acquire(store, &name, &claim("a", ttl)).await;
    assert!(lease.token > 0);
    assert_eq!(lease.holder, "a");
    let record = store.get(&name).await.expect("get").expect("record");
    let holding = record.holding.expect("held");
    assert_eq!(record.token, lease.token);
    assert_eq!(holding.holder, "a");
    assert_eq!(holding.value.as_deref(), Some("a.addr"));
    assert!(holding.expires_at > Instant::now());
    // When the holding began: now, give or take the clocks of one machine (etcd keeps no time).
    if store.kind() == "etcd" {
        assert_eq!(holding.since, None);
    } else {
        let since = holding
            .since
            .expect("the store records when a holding began");
        let age = std::time::SystemTime::now()
            .duration_since(since)
            .unwrap_or_default();
        assert!(
            age < Duration::from_secs(30),
            "held for {age:?} right after the grant"
        );
    }
}

/// A held lock is busy for everyone else, who sees who holds it.
pub async fn held_lock_is_busy(store: &dyn Store, ttl: Duration) {
    let name = name("busy");
    let lease = acquire(store, &name, &claim("a", ttl)).await;
    let current = busy(store, &name, &claim("b", ttl)).await;
    assert_eq!(current.token, lease.token);
    assert_eq!(current.holding.expect("held").holder, "a");
}

/// Release frees the lock at once, and the next holder's token is strictly greater.
pub async fn release_hands_over_with_higher_token(store: &dyn Store, ttl: Duration) {
    let name = name("release");
    let mut last = 0;
    for holder in ["a", "b", "c", "a"] {
        let lease = acquire(store, &name, &claim(holder, ttl)).await;
        assert!(lease.token > last, "token {} after {last}", lease.token);
        last = lease.token;
        store.release(&name, &lease).await.expect("release");
        let record = store.get(&name).await.expect("get");
        assert_eq!(record.and_then(|r| r.holding), None, "released");
    }
}

/// Renewal keeps a lock past its ttl; a stale or foreign lease can neither renew nor release.
pub async fn renewal_keeps_and_strangers_cannot(store: &dyn Store, ttl: Duration) {
    let name = name("renew");
    let mut lease = acquire(store, &name, &claim("a", ttl)).await;
    let end = Instant::now() + ttl + ttl / 2;
    while Instant::now() < end {
        sleep(ttl / 4).await;
        lease = store.renew(&name, &lease).await.expect("renew");
        busy(store, &name, &claim("b", ttl)).await;
    }
    let stranger = Ticket {
        holder: "b".into(),
        ..lease.clone()
    };
    assert_eq!(
        store.renew(&name, &stranger).await,
        Err(StoreError::NotHolder)
    );
    assert_eq!(
        store.release(&name, &stranger).await,
        Err(StoreError::NotHolder)
    );
    busy(store, &name, &claim("b", ttl)).await;
    store.release(&name, &lease).await.expect("release");
    assert_eq!(
        store.release(&name, &lease).await,
        Err(StoreError::NotHolder),
        "second release"
    );
}

/// A holding nobody renews runs out after its ttl (as observed here); the next holder gets a higher
/// token and the old lease is dead.
pub async fn unrenewed_lock_expires(store: &dyn Store, ttl: Duration) {
    let name = name("expire");
    let old = acquire(store, &name, &claim("a", ttl)).await;
    let started = Instant::now();
    let retry_at = match store
        .try_acquire(&name, &claim("b", ttl))
        .await
        .expect("store")
    {
        Attempt::Busy { retry_at, .. } => retry_at,
        other => panic!("granted or in conflict while held: {other:?}"),
    };
    if let Some(at) = retry_at {
        assert!(at > Instant::now(), "retry_at in the future");
    }
    let mut changes = store.subscribe(&name);
    let new = loop {
        assert!(
            started.elapsed() < ttl * 3 + Duration::from_secs(10),
            "lock never expired"
        );
        match store
            .try_acquire(&name, &claim("b", ttl))
            .await
            .expect("store")
        {
            Attempt::Acquired(lease) => break lease,
            Attempt::Busy { retry_at, .. } => {
                let wake = retry_at.unwrap_or_else(|| Instant::now() + ttl);
                let _ = timeout(
                    wake.saturating_duration_since(Instant::now()),
                    changes.changed(),
                )
                .await;
            }
            Attempt::Conflict(conflict) => panic!("a lock in conflict: {conflict}"),
        }
    };
    assert!(
        started.elapsed() >= ttl - ttl / 10,
        "expired after {:?}, before its ttl {ttl:?}",
        started.elapsed()
    );
    assert!(new.token > old.token);
    assert_eq!(store.renew(&name, &old).await, Err(StoreError::NotHolder));
}

/// Observers hear of acquisitions and releases.
pub async fn changes_are_signalled(store: &dyn Store, ttl: Duration) {
    let name = name("watch");
    let mut changes = store.observe(&name);
    let lease = acquire(store, &name, &claim("a", ttl)).await;
    timeout(SIGNAL_WAIT, changes.changed())
        .await
        .expect("signal after acquire")
        .expect("store alive");
    store.release(&name, &lease).await.expect("release");
    timeout(SIGNAL_WAIT, changes.changed())
        .await
        .expect("signal after release")
        .expect("store alive");
}

/// A waiter that found the lock busy is woken when the holder releases, and then gets it.
pub async fn a_waiter_is_woken_by_release(store: &dyn Store, ttl: Duration) {
    let name = name("wake");
    let lease = acquire(store, &name, &claim("a", ttl)).await;
    let mut changes = store.subscribe(&name);
    busy(store, &name, &claim("b", ttl)).await;
    changes.mark_unchanged();
    store.release(&name, &lease).await.expect("release");
    timeout(SIGNAL_WAIT, changes.changed())
        .await
        .expect("the waiter was woken")
        .expect("store alive");
    let next = acquire(store, &name, &claim("b", ttl)).await;
    assert!(next.token > lease.token);
}

/// A release that lands while a waiter's attempt is under way, at any moment of it, either
/// lets the attempt take the lock or wakes the waiter afterwards: a waiter is never left asleep
/// behind a free lock. See [`release_racing_an_attempt`].
pub async fn a_release_racing_an_attempt_never_strands_the_waiter(
    store: &dyn Store,
    ttl: Duration,
) {
    release_racing_an_attempt(store, store, ttl).await;
}

/// The race of [`a_release_racing_an_attempt_never_strands_the_waiter`] with the holder on one
/// store and the waiter on another, as with two electors sharing a backend: the waiter's store
/// learns of the release only from the backend. The manager subscribes before each attempt, as
/// here; the release is tried at twenty moments, half a millisecond apart, from the attempt's
/// start.
pub async fn release_racing_an_attempt(holders: &dyn Store, waiters: &dyn Store, ttl: Duration) {
    let name = name("race");
    let waiter = claim("waiter", ttl);
    for moment in 0..20u64 {
        let holder = claim(&format!("holder-{moment}"), ttl);
        let lease = acquire_when_free(holders, &name, &holder).await;
        let mut changes = waiters.subscribe(&name);
        let release = async {
            sleep(Duration::from_micros(500 * moment)).await;
            holders.release(&name, &lease).await
        };
        let (attempt, released) = tokio::join!(waiters.try_acquire(&name, &waiter), release);
        released.expect("release");
        let won = match attempt.expect("store answers") {
            Attempt::Acquired(won) => won,
            Attempt::Busy { .. } => {
                timeout(SIGNAL_WAIT, changes.changed())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("a release {moment} half-milliseconds into the attempt woke nobody")
                    })
                    .expect("store alive");
                acquire_when_free(waiters, &name, &waiter).await
            }
            Attempt::Conflict(conflict) => panic!("a lock in conflict: {conflict}"),
        };
        waiters.release(&name, &won).await.expect("release");
    }
}

/// `list` shows every lock the store has touched, sorted by name.
pub async fn list_shows_locks(store: &dyn Store, ttl: Duration) {
    let first = name("list-a");
    let second = LockName::new(format!("{first}-b")).expect("valid");
    acquire(store, &first, &claim("a", ttl)).await;
    let lease = acquire(store, &second, &claim("b", ttl)).await;
    store.release(&second, &lease).await.expect("release");
    let all = store.list().await.expect("list");
    let names: Vec<_> = all.iter().map(|r| r.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    let a = all.iter().find(|r| r.name == first).expect("first listed");
    assert_eq!(a.holding.as_ref().expect("held").holder, "a");
    // A released lock is listed without a holder, or (a store that forgets released locks) not
    // at all.
    if let Some(b) = all.iter().find(|r| r.name == second) {
        assert_eq!(b.holding, None);
    }
}

fn permit_of(holder: &str, ttl: Duration, permits: u32) -> Claim {
    Claim {
        asks: Some(Asks::Permit { permits }),
        ..claim(holder, ttl)
    }
}

fn rw(holder: &str, ttl: Duration, exclusive: bool) -> Claim {
    Claim {
        asks: Some(if exclusive {
            Asks::Exclusive
        } else {
            Asks::Shared
        }),
        ..claim(holder, ttl)
    }
}

async fn conflict(store: &dyn Store, name: &LockName, claim: &Claim) -> Conflict {
    match store.try_acquire(name, claim).await.expect("store answers") {
        Attempt::Conflict(conflict) => conflict,
        other => panic!("{name} should answer a conflict to {claim:?}, answered {other:?}"),
    }
}

/// A semaphore of N grants N claims distinct permits, refuses the next while they hold, and gives
/// a released permit to the next claim with a greater token.
pub async fn a_semaphore_admits_n_and_no_more(store: &dyn Store, ttl: Duration) {
    let name = name("semaphore");
    let mut tickets = Vec::new();
    for holder in ["a", "b", "c"] {
        tickets.push(acquire(store, &name, &permit_of(holder, ttl, 3)).await);
    }
    let permits: Vec<_> = tickets.iter().map(|t| t.held).collect();
    assert_eq!(
        permits,
        [
            Some(Held::Permit(0)),
            Some(Held::Permit(1)),
            Some(Held::Permit(2))
        ]
    );
    assert!(tickets.windows(2).all(|w| w[0].token < w[1].token));
    let current = busy(store, &name, &permit_of("d", ttl, 3)).await;
    assert_eq!(current.kind, Kind::Semaphore { permits: 3 });
    let holders: Vec<_> = current
        .grants
        .iter()
        .map(|g| g.holding.holder.as_str())
        .collect();
    assert_eq!(holders, ["a", "b", "c"]);
    let record = store.get(&name).await.expect("get").expect("record");
    assert_eq!(record.grants.len(), 3);
    assert_eq!(record.holding, None, "a semaphore has no single holder");

    store.release(&name, &tickets[1]).await.expect("release");
    let d = acquire_when_free(store, &name, &permit_of("d", ttl, 3)).await;
    assert_eq!(d.held, Some(Held::Permit(1)), "the permit b gave back");
    assert!(d.token > tickets[2].token);
    assert_eq!(
        store.release(&name, &tickets[1]).await,
        Err(StoreError::NotHolder),
        "a released grant stays released"
    );
    let renewed = store.renew(&name, &d).await.expect("the holder renews");
    assert_eq!((renewed.token, renewed.held), (d.token, d.held));
}

/// A name held as one kind refuses every other kind, and a semaphore of another size, without
/// changing anything; once free it may become another kind, with tokens still growing.
pub async fn a_name_is_one_kind_at_a_time(store: &dyn Store, ttl: Duration) {
    let name = name("kind");
    let semaphore = acquire(store, &name, &permit_of("a", ttl, 3)).await;
    // What a record says, without its expiry (which a store may compute at each read).
    let said = |record: Option<super::Record>| {
        record.map(|r| {
            let grants: Vec<_> = r
                .grants
                .into_iter()
                .map(|g| (g.held, g.token, g.holding.holder, g.holding.value))
                .collect();
            (r.kind, r.token, r.holding.map(|h| h.holder), grants)
        })
    };
    let before = said(store.get(&name).await.expect("get"));
    let three = Kind::Semaphore { permits: 3 };
    assert_eq!(
        conflict(store, &name, &claim("b", ttl)).await,
        Conflict {
            is: three,
            asked: Kind::Lock
        }
    );
    assert_eq!(
        conflict(store, &name, &permit_of("b", ttl, 5)).await,
        Conflict {
            is: three,
            asked: Kind::Semaphore { permits: 5 }
        }
    );
    assert_eq!(
        conflict(store, &name, &rw("b", ttl, false)).await.asked,
        Kind::ReadWrite
    );
    assert_eq!(
        said(store.get(&name).await.expect("get")),
        before,
        "nothing changed"
    );

    store.release(&name, &semaphore).await.expect("release");
    let lock = acquire_when_free(store, &name, &claim("b", ttl)).await;
    assert!(lock.token > semaphore.token, "tokens outlive the kind");
    assert_eq!(lock.held, None);
    assert_eq!(
        conflict(store, &name, &rw("c", ttl, true)).await,
        Conflict {
            is: Kind::Lock,
            asked: Kind::ReadWrite
        }
    );
}

/// Readers share; a writer waits for them and, while it waits, new readers wait behind it; the
/// writer gets in when the readers leave, and readers after it when it leaves or gives up.
pub async fn readers_share_and_a_waiting_writer_goes_first(store: &dyn Store, ttl: Duration) {
    let name = name("rw");
    let r1 = acquire(store, &name, &rw("r1", ttl, false)).await;
    let r2 = acquire(store, &name, &rw("r2", ttl, false)).await;
    assert_eq!(r1.held, Some(Held::Shared));
    let writer = rw("w", ttl, true);
    busy(store, &name, &writer).await;
    busy(store, &name, &rw("r3", ttl, false)).await;
    store.release(&name, &r1).await.expect("release");
    busy(store, &name, &writer).await;
    store.release(&name, &r2).await.expect("release");
    let w = acquire_when_free(store, &name, &writer).await;
    assert_eq!(w.held, Some(Held::Exclusive));
    assert!(w.token > r2.token);
    busy(store, &name, &rw("r3", ttl, false)).await;
    // A claim that stops waiting says so (a store may keep its place in line until then).
    let gives_up = rw("w2", ttl, true);
    busy(store, &name, &gives_up).await;
    store.abandon(&name, &gives_up).await;
    store.release(&name, &w).await.expect("release");
    let r3 = acquire_when_free(store, &name, &rw("r3", ttl, false)).await;
    assert!(r3.token > w.token);

    // A writer that gives up lets the readers behind it in at once.
    let late = rw("w3", ttl, true);
    busy(store, &name, &late).await;
    busy(store, &name, &rw("r4", ttl, false)).await;
    store.abandon(&name, &late).await;
    acquire_when_free(store, &name, &rw("r4", ttl, false)).await;
}

/// A permit nobody renews runs out after its ttl, as a lock does: the next claim takes it with a
/// greater token, and the old holder can no longer renew.
pub async fn an_unrenewed_permit_expires(store: &dyn Store, ttl: Duration) {
    let name = name("permit-expire");
    let old = acquire(store, &name, &permit_of("a", ttl, 1)).await;
    let started = Instant::now();
    busy(store, &name, &permit_of("b", ttl, 1)).await;
    let new = loop {
        assert!(
            started.elapsed() < ttl * 3 + Duration::from_secs(10),
            "the permit never expired"
        );
        match store
            .try_acquire(&name, &permit_of("b", ttl, 1))
            .await
            .expect("store")
        {
            Attempt::Acquired(ticket) => break ticket,
            Attempt::Busy { retry_at, .. } => {
                let wake = retry_at.unwrap_or_else(|| Instant::now() + ttl);
                sleep(wake.saturating_duration_since(Instant::now())).await;
            }
            Attempt::Conflict(conflict) => panic!("a semaphore in conflict: {conflict}"),
        }
    };
    assert!(
        started.elapsed() >= ttl - ttl / 10,
        "expired after {:?}, before its ttl {ttl:?}",
        started.elapsed()
    );
    assert!(new.token > old.token);
    assert_eq!(new.held, Some(Held::Permit(0)));
    assert_eq!(store.renew(&name, &old).await, Err(StoreError::NotHolder));
}

/// For stores that order claims across electors (etcd, by revision): claimants that asked for a
/// semaphore's one permit on two electors, in the order `a`, `b`, `a`, are granted it in that
/// order, whichever of them tries first after each release.
pub async fn first_come_first_served_across_electors(a: &dyn Store, b: &dyn Store, ttl: Duration) {
    let name = name("fifo-electors");
    let holder = permit_of("elector-a/holder", ttl, 1);
    let held = acquire(a, &name, &holder).await;
    let line = [
        (a, permit_of("elector-a/first", ttl, 1)),
        (b, permit_of("elector-b/second", ttl, 1)),
        (a, permit_of("elector-a/third", ttl, 1)),
    ];
    for (store, claim) in &line {
        busy(*store, &name, claim).await;
    }
    a.release(&name, &held).await.expect("release");
    for turn in 0..line.len() {
        // The later claimants try first: each must wait for its turn.
        for (store, claim) in line[turn + 1..].iter().rev() {
            busy(*store, &name, claim).await;
        }
        let (store, claim) = &line[turn];
        let ticket = acquire_when_free(*store, &name, claim).await;
        assert_eq!(ticket.held, Some(Held::Permit(0)), "{}", claim.holder);
        store.release(&name, &ticket).await.expect("release");
    }
}

/// Claimants on two electors (`a` and `b`, two stores on one backend) take and give back a
/// semaphore's permits, then a read-write lock's grants, as fast as they can for a while: the
/// holders counted at any moment never exceed N, nor include a writer beside anyone, however
/// their writes race.
pub async fn two_electors_contending(a: &dyn Store, b: &dyn Store, ttl: Duration) {
    let semaphore = contend(
        [a, b],
        ttl,
        |_| Asks::Permit { permits: 2 },
        |now| now.len() <= 2,
    )
    .await;
    assert!(
        semaphore >= 6,
        "the claimants took turns: {semaphore} grants"
    );
    let rw = contend(
        [a, b],
        ttl,
        |i| if i < 2 { Asks::Exclusive } else { Asks::Shared },
        |now| !now.contains(&Asks::Exclusive) || now.len() == 1,
    )
    .await;
    assert!(rw >= 6, "the claimants took turns: {rw} grants");
}

/// Six claimants, three on each store, for 4 s; returns how many grants they had.
async fn contend(
    stores: [&dyn Store; 2],
    ttl: Duration,
    asks: fn(usize) -> Asks,
    allowed: fn(&[Asks]) -> bool,
) -> u64 {
    let name = name("contend");
    let holding = std::sync::Mutex::new(Vec::new());
    let deadline = Instant::now() + Duration::from_secs(4);
    let claimant = |i: usize| {
        let (store, name, holding) = (stores[i % 2], &name, &holding);
        async move {
            let claim = Claim {
                asks: Some(asks(i)),
                ..claim(&format!("elector-{}/{i}", i % 2), ttl)
            };
            let mut grants = 0u64;
            while Instant::now() < deadline {
                let mut changes = store.subscribe(name);
                match store
                    .try_acquire(name, &claim)
                    .await
                    .expect("store answers")
                {
                    Attempt::Acquired(ticket) => {
                        {
                            let mut now = holding.lock().expect("not poisoned");
                            now.push(asks(i));
                            assert!(allowed(&now), "too many hold at once: {now:?}");
                        }
                        grants += 1;
                        sleep(Duration::from_millis(5)).await;
                        {
                            let mut now = holding.lock().expect("not poisoned");
                            let at = now.iter().position(|a| *a == asks(i));
                            now.remove(at.expect("counted"));
                        }
                        store.release(name, &ticket).await.expect("release");
                    }
                    Attempt::Busy { .. } => {
                        let _ = timeout(Duration::from_millis(200), changes.changed()).await;
                    }
                    Attempt::Conflict(conflict) => panic!("one kind only: {conflict}"),
                }
            }
            store.abandon(name, &claim).await;
            grants
        }
    };
    let all = futures_util::future::join_all((0..6).map(claimant)).await;
    all.into_iter().sum()
}

/// A store together with what must outlive it in a test (a test server, a child process).
pub struct Guarded<S> {
    store: S,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl<S: Store> Guarded<S> {
    /// `store`, keeping `keep` alive as long as it.
    pub fn new(store: S, keep: impl std::any::Any + Send + Sync) -> Self {
        Self {
            store,
            _keep: Box::new(keep),
        }
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Guarded<S> {
    fn lost(&self, name: &LockName, holder: &str) {
        self.store.lost(name, holder);
    }
    fn kind(&self) -> &'static str {
        self.store.kind()
    }
    async fn try_acquire(&self, name: &LockName, claim: &Claim) -> Result<Attempt, StoreError> {
        self.store.try_acquire(name, claim).await
    }
    async fn renew(&self, name: &LockName, ticket: &Ticket) -> Result<Ticket, StoreError> {
        self.store.renew(name, ticket).await
    }
    async fn release(&self, name: &LockName, ticket: &Ticket) -> Result<(), StoreError> {
        self.store.release(name, ticket).await
    }
    async fn get(&self, name: &LockName) -> Result<Option<super::Record>, StoreError> {
        self.store.get(name).await
    }
    async fn list(&self) -> Result<Vec<super::Record>, StoreError> {
        self.store.list().await
    }
    fn subscribe(&self, name: &LockName) -> super::Changes {
        self.store.subscribe(name)
    }
    fn observe(&self, name: &LockName) -> super::Changes {
        self.store.observe(name)
    }
    async fn abandon(&self, name: &LockName, claim: &Claim) {
        self.store.abandon(name, claim).await;
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.store.ready().await
    }
}

/// Stamps out the conformance suite as `#[tokio::test]`s for a store.
///
/// `$store` is an expression that makes a fresh store (it may `.await`); the optional `ttl` is the
/// lock ttl used by the checks (default 1 s). `store_conformance!(primitives: $store)` stamps out
/// the semaphore and read-write lock checks, for the stores that keep them (docs/semaphores.md).
///
/// ```no_run
/// mod memory_store {
///     sync_elector::store_conformance!(sync_elector::store::MemoryStore::new());
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($store:expr) => {
        $crate::store_conformance!($store, ttl = ::std::time::Duration::from_secs(1));
    };
    ($store:expr, ttl = $ttl:expr) => {
        $crate::store_conformance!(@tests $store, $ttl;
            acquire_free_lock, held_lock_is_busy, release_hands_over_with_higher_token,
            renewal_keeps_and_strangers_cannot, unrenewed_lock_expires, changes_are_signalled,
            a_waiter_is_woken_by_release, a_release_racing_an_attempt_never_strands_the_waiter,
            list_shows_locks);
    };
    (primitives: $store:expr) => {
        $crate::store_conformance!(primitives: $store, ttl = ::std::time::Duration::from_secs(1));
    };
    (primitives: $store:expr, ttl = $ttl:expr) => {
        $crate::store_conformance!(@tests $store, $ttl;
            a_semaphore_admits_n_and_no_more, a_name_is_one_kind_at_a_time,
            readers_share_and_a_waiting_writer_goes_first, an_unrenewed_permit_expires);
    };
    (@tests $store:expr, $ttl:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let store = $store;
                $crate::store::conformance::$check(&store, $ttl).await;
            }
        )*
    };
}
