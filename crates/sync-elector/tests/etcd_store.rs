//! The etcd store against real etcd processes: the shared conformance suite, first-come-first-
//! served order with one wake per release, leaving the line, and errors.

#![cfg(feature = "etcd")]

mod support;

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

fn claim(holder: &str) -> Claim {
    Claim {
        holder: holder.into(),
        ttl: Duration::from_secs(5),
        value: None,
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
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(!message.is_empty(), "{err} ({endpoints})");
}
