//! The etcd store against real etcd processes: the shared conformance suite, first-come-first-
//! served order with one wake per release, leaving the line, and errors.

#![cfg(feature = "etcd")]

use crate::support;

use std::time::Duration;

use support::EtcdCluster;
use sync_elector::store::conformance::Guarded;
use sync_elector::store::{Attempt, Claim, EtcdStore, Store, StoreError};
use sync_protocol::LockName;
use tokio::time::{sleep, timeout};

async fn store_on(cluster: &EtcdCluster) -> EtcdStore {
    let store = EtcdStore::connect(&[cluster.endpoints()], "/sync-test/")
        .await
        .unwrap();
    for _ in 0..100 {
        if store.ready().await.is_ok() {
            return store;
        }
        sleep(Duration::from_millis(20)).await;
    }
    panic!("the etcd store never became ready");
}

async fn fixture() -> Guarded<EtcdStore> {
    let cluster = one_member("conformance").await;
    let store = store_on(&cluster).await;
    Guarded::new(store, cluster)
}

mod conformance {
    // etcd's smallest lease is about 2 s (1.5 x its election timeout, rounded up).
    sync_elector::store_conformance!(
        super::fixture().await,
        ttl = ::std::time::Duration::from_secs(2)
    );
    sync_elector::store_conformance!(
        primitives: super::fixture().await,
        ttl = ::std::time::Duration::from_secs(2)
    );
}

/// A one-member etcd for test `name`, started off the async runtime.
async fn one_member(name: &'static str) -> EtcdCluster {
    tokio::task::spawn_blocking(move || EtcdCluster::start(1, name))
        .await
        .unwrap()
}

/// The holder on one store and the waiter on another, as with two electors: the waiter's store
/// hears of the release only through etcd's watch. The old waiter protocol lost this wake-up
/// when the release fell between its two reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_from_another_elector_racing_an_attempt_never_strands_the_waiter() {
    let cluster = one_member("race").await;
    let (holders, waiters) = (store_on(&cluster).await, store_on(&cluster).await);
    sync_elector::store::conformance::release_racing_an_attempt(
        &holders,
        &waiters,
        Duration::from_secs(5),
    )
    .await;
}

/// Two electors on one etcd, contending for a semaphore and a read-write lock.
#[tokio::test(flavor = "multi_thread")]
async fn two_electors_never_grant_more_than_a_semaphore_or_read_write_lock_allows() {
    let cluster = one_member("contend").await;
    let (a, b) = (store_on(&cluster).await, store_on(&cluster).await);
    sync_elector::store::conformance::two_electors_contending(&a, &b, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_semaphore_serves_claims_on_two_electors_first_come_first_served() {
    let cluster = one_member("fifo").await;
    let (a, b) = (store_on(&cluster).await, store_on(&cluster).await);
    sync_elector::store::conformance::first_come_first_served_across_electors(
        &a,
        &b,
        Duration::from_secs(5),
    )
    .await;
}

fn claim(holder: &str) -> Claim {
    Claim {
        holder: holder.into(),
        ttl: Duration::from_secs(5),
        value: None,
        asks: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waiters_are_served_in_arrival_order_and_each_release_wakes_one() {
    let cluster = one_member("fifo").await;
    let lock = LockName::new("fifo").unwrap();
    // Four electors (one store each) queue behind a holder, in a known order.
    let holder = store_on(&cluster).await;
    let mut lease = match holder.try_acquire(&lock, &claim("h")).await.unwrap() {
        Attempt::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    let mut waiters = std::collections::VecDeque::new();
    for i in 0..4 {
        let store = store_on(&cluster).await;
        let changes = store.subscribe(&lock);
        let claim = claim(&format!("w{i}"));
        assert!(matches!(
            store.try_acquire(&lock, &claim).await.unwrap(),
            Attempt::Busy { .. }
        ));
        waiters.push_back((store, changes, claim));
    }
    let mut current = holder;
    for round in 0..4 {
        current.release(&lock, &lease).await.unwrap();
        let (store, mut changes, claim) = waiters.pop_front().unwrap();
        timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("the next waiter is woken")
            .unwrap();
        // Only the next in line was woken; the others sleep on.
        for (_, later, _) in &waiters {
            assert!(
                !later.has_changed().unwrap(),
                "round {round}: a later waiter was woken too"
            );
        }
        let next = match store.try_acquire(&lock, &claim).await.unwrap() {
            Attempt::Acquired(next) => next,
            other => panic!("round {round}: {other:?}"),
        };
        assert!(
            next.token > lease.token,
            "first come, first served, with rising tokens"
        );
        assert_eq!(next.holder, format!("w{round}"));
        lease = next;
        current = store;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let cluster = one_member("abandon").await;
    let lock = LockName::new("line").unwrap();
    let (a, b, c) = (
        store_on(&cluster).await,
        store_on(&cluster).await,
        store_on(&cluster).await,
    );
    let Attempt::Acquired(held) = a.try_acquire(&lock, &claim("a")).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        b.try_acquire(&lock, &claim("b")).await.unwrap(),
        Attempt::Busy { .. }
    ));
    let mut c_changes = c.subscribe(&lock);
    assert!(matches!(
        c.try_acquire(&lock, &claim("c")).await.unwrap(),
        Attempt::Busy { .. }
    ));
    b.abandon(&lock, &claim("b")).await;
    // c's predecessor (b) left: c is woken, finds a still holding, and now waits for a.
    timeout(Duration::from_secs(10), c_changes.changed())
        .await
        .expect("c woken")
        .unwrap();
    assert!(matches!(
        c.try_acquire(&lock, &claim("c")).await.unwrap(),
        Attempt::Busy { .. }
    ));
    a.release(&lock, &held).await.unwrap();
    timeout(Duration::from_secs(10), c_changes.changed())
        .await
        .expect("c woken")
        .unwrap();
    assert!(matches!(
        c.try_acquire(&lock, &claim("c")).await.unwrap(),
        Attempt::Acquired(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_is_a_clear_error() {
    let cluster = one_member("gone").await;
    let store = store_on(&cluster).await;
    let endpoints = cluster.endpoints();
    drop(cluster);
    let err = store
        .try_acquire(&LockName::new("x").unwrap(), &claim("a"))
        .await
        .unwrap_err();
    let StoreError::Unavailable {
        store: "etcd",
        message,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(!message.is_empty(), "{err} ({endpoints})");
}

/// What one elector sends etcd while it holds two locks and five of its claims wait: one
/// session lease kept alive once per ttl/3 for all seven keys, no read per renewal, and the
/// sweep's one read per ttl while claims wait.
#[tokio::test(flavor = "multi_thread")]
async fn one_session_keeps_every_key_alive_with_one_request_per_renew_interval() {
    let cluster = one_member("session").await;
    let store = store_on(&cluster).await;
    let ttl = Duration::from_secs(6);
    let claim = |holder: &str| Claim {
        holder: holder.into(),
        ttl,
        value: None,
        asks: None,
    };
    let (held, x) = (LockName::new("held").unwrap(), LockName::new("x").unwrap());
    let mut leases = Vec::new();
    for (lock, holder) in [(&held, "a"), (&x, "a")] {
        let Attempt::Acquired(lease) = store.try_acquire(lock, &claim(holder)).await.unwrap()
        else {
            panic!("free lock")
        };
        leases.push((lock, lease));
    }
    for i in 0..5 {
        assert!(matches!(
            store
                .try_acquire(&x, &claim(&format!("w{i}")))
                .await
                .unwrap(),
            Attempt::Busy { .. }
        ));
    }
    let sessions = store.describe()["sessions"].clone();
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    assert_eq!(sessions[0]["keys"], 7, "{sessions}");

    let before = cluster.received(0).unwrap();
    let window = Duration::from_secs(18);
    let started = tokio::time::Instant::now();
    // Renew as the manager does: each holding a third of the ttl after the validity its last
    // renewal reported, which falls due together with the session's own beat.
    while started.elapsed() < window {
        let due = leases
            .iter()
            .map(|(_, l)| l.valid_from.expect("etcd reports it") + ttl / 3)
            .min()
            .unwrap();
        tokio::time::sleep_until(due).await;
        for (lock, lease) in &mut leases {
            if lease.valid_from.unwrap() + ttl / 3 <= tokio::time::Instant::now() {
                *lease = store.renew(lock, lease).await.expect("still held");
            }
        }
    }
    let after = cluster.received(0).unwrap();
    let sent =
        |method: &str| after.get(method).unwrap_or(&0.0) - before.get(method).unwrap_or(&0.0);
    let intervals = window.as_secs_f64() / (ttl / 3).as_secs_f64();
    eprintln!(
        "in {window:?}: {} keep-alives, {} ranges, {} grants, {} puts",
        sent("LeaseKeepAlive"),
        sent("Range"),
        sent("LeaseGrant"),
        sent("Put")
    );
    assert!(sent("LeaseKeepAlive") >= 1.0, "the session was kept alive");
    assert!(
        sent("LeaseKeepAlive") <= intervals + 2.0,
        "more than one keep-alive per renew interval: {} in {intervals} intervals",
        sent("LeaseKeepAlive")
    );
    let sweeps = window.as_secs_f64() / ttl.as_secs_f64();
    assert!(
        sent("Range") <= sweeps + 1.0,
        "renewals read the keys: {} ranges",
        sent("Range")
    );
    assert_eq!(sent("LeaseGrant"), 0.0);
    assert_eq!(sent("Put"), 0.0);
    for i in 0..5 {
        assert!(
            matches!(
                store
                    .try_acquire(&x, &claim(&format!("w{i}")))
                    .await
                    .unwrap(),
                Attempt::Busy { .. }
            ),
            "waiter w{i} kept its place"
        );
    }
}

/// A holding the manager stops renewing (it was declared lost, or its elector hung) must not be
/// kept alive by the session its waiters share: it ends about a ttl after its last renewal.
#[tokio::test(flavor = "multi_thread")]
async fn a_holding_nobody_renews_expires_though_its_session_lives_on() {
    let cluster = one_member("unrenewed").await;
    let (a, b) = (store_on(&cluster).await, store_on(&cluster).await);
    let lock = LockName::new("quiet").unwrap();
    let Attempt::Acquired(_) = a.try_acquire(&lock, &claim("a")).await.unwrap() else {
        panic!("free lock")
    };
    // a's session stays in use: a claim of a waits on another lock b holds.
    let other = LockName::new("busy").unwrap();
    let Attempt::Acquired(_) = b.try_acquire(&other, &claim("b")).await.unwrap() else {
        panic!("free lock")
    };
    assert!(matches!(
        a.try_acquire(&other, &claim("a2")).await.unwrap(),
        Attempt::Busy { .. }
    ));
    let started = tokio::time::Instant::now();
    acquired_within(
        &b,
        &lock,
        &claim("c"),
        Duration::from_secs(20),
        "the unrenewed holding never ended",
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it ended before its ttl: {:?}",
        started.elapsed()
    );
}

/// The manager bounds a release by a timeout, which drops the release midway when etcd is slow
/// (it was, in a chaos run, right after quorum came back). The key must still go: the session
/// its other claims keep alive would otherwise keep the released key, and the lock, forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_caller_stops_waiting_still_frees_the_lock() {
    let cluster = one_member("cancelled").await;
    let (a, b) = (store_on(&cluster).await, store_on(&cluster).await);
    let (lock, other) = (
        LockName::new("dropped").unwrap(),
        LockName::new("kept").unwrap(),
    );
    let Attempt::Acquired(held) = a.try_acquire(&lock, &claim("a")).await.unwrap() else {
        panic!("free lock")
    };
    // a's session stays in use: a claim of a waits on a lock b holds.
    let Attempt::Acquired(_) = b.try_acquire(&other, &claim("b")).await.unwrap() else {
        panic!("free lock")
    };
    assert!(matches!(
        a.try_acquire(&other, &claim("a2")).await.unwrap(),
        Attempt::Busy { .. }
    ));
    // The release is dropped at its first wait, as a timeout that ran out drops it.
    let _ = timeout(Duration::ZERO, a.release(&lock, &held)).await;
    acquired_within(
        &b,
        &lock,
        &claim("c"),
        Duration::from_secs(12),
        "the released key was kept alive by the session",
    )
    .await;
}

/// Tries `claim` on `lock` until it is granted, woken by the lock's signal (and at least every
/// second); fails with `why` when that takes `bound` or longer.
async fn acquired_within(
    store: &EtcdStore,
    lock: &LockName,
    claim: &Claim,
    bound: Duration,
    why: &str,
) {
    let started = tokio::time::Instant::now();
    let mut changes = store.subscribe(lock);
    loop {
        match store.try_acquire(lock, claim).await.unwrap() {
            Attempt::Acquired(_) => return,
            Attempt::Busy { .. } => {
                assert!(started.elapsed() < bound, "{why}");
                let _ = timeout(Duration::from_secs(1), changes.changed()).await;
            }
            Attempt::Conflict(conflict) => panic!("a lock in conflict: {conflict}"),
        }
    }
}
