//! The Kubernetes store over real HTTP: the shared conformance suite against a real
//! kube-apiserver (sync-testkit's `ControlPlane`) and against the Kubernetes API test server, and
//! on the test server the client-go record format, compare-and-set races, API load and errors.

#![cfg(feature = "kubernetes")]

use crate::support;

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_test_server::TestServer;
use serde_json::json;
use sync_elector::store::conformance::Guarded;
use sync_elector::store::{Attempt, Claim, KubernetesStore, Store, StoreError};
use sync_protocol::LockName;
use tokio::time::{Instant, sleep};

/// A store whose requests the server counts under `client`.
async fn store_on(server: &TestServer, client: &str) -> KubernetesStore {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig(client)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let store = KubernetesStore::new(kube::Client::try_from(config).unwrap(), "default", None);
    for _ in 0..100 {
        if store.ready().await.is_ok() {
            return store;
        }
        sleep(Duration::from_millis(20)).await;
    }
    panic!("the store never synced");
}

async fn fixture() -> Guarded<KubernetesStore> {
    let server = TestServer::start().await.unwrap();
    let store = store_on(&server, "conformance").await;
    Guarded::new(store, server)
}

mod conformance {
    sync_elector::store_conformance!(super::fixture().await);
    sync_elector::store_conformance!(primitives: super::fixture().await);
}

/// A store on the real kube-apiserver shared by this test process, as its admin, in namespace
/// `namespace`.
async fn real_store_in(namespace: &str) -> KubernetesStore {
    let plane = sync_testkit::ControlPlane::shared();
    let kubeconfig = Kubeconfig::read_from(plane.admin_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let store = KubernetesStore::new(kube::Client::try_from(config).unwrap(), namespace, None);
    for _ in 0..500 {
        if store.ready().await.is_ok() {
            return store;
        }
        sleep(Duration::from_millis(20)).await;
    }
    panic!("the store on the real kube-apiserver never synced");
}

/// A namespace of its own on the shared real kube-apiserver, for one test.
fn real_namespace(test: &str) -> String {
    // Starting the control plane blocks; that is fine for a test's own runtime thread.
    sync_testkit::ControlPlane::shared().create_namespace(test)
}

async fn real_fixture() -> KubernetesStore {
    real_store_in(&real_namespace("conformance")).await
}

/// The same suite against a real kube-apiserver v1.37 and its etcd 3.6.
mod conformance_on_kube_apiserver {
    sync_elector::store_conformance!(super::real_fixture().await);
    sync_elector::store_conformance!(primitives: super::real_fixture().await);
}

/// Two electors on one real kube-apiserver, contending for a semaphore and a read-write lock.
#[tokio::test(flavor = "multi_thread")]
async fn on_kube_apiserver_two_electors_never_grant_more_than_a_semaphore_or_read_write_lock_allows()
 {
    let namespace = real_namespace("contend");
    let (a, b) = (
        real_store_in(&namespace).await,
        real_store_in(&namespace).await,
    );
    sync_elector::store::conformance::two_electors_contending(&a, &b, Duration::from_secs(15))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_kube_apiserver_a_release_from_another_elector_racing_an_attempt_never_strands_the_waiter()
 {
    let namespace = real_namespace("race");
    let (holders, waiters) = (
        real_store_in(&namespace).await,
        real_store_in(&namespace).await,
    );
    sync_elector::store::conformance::release_racing_an_attempt(
        &holders,
        &waiters,
        Duration::from_secs(5),
    )
    .await;
}

/// The cache drops `managedFields` to save memory; the writes built from it must not drop the
/// server's record of who owns which field (another manager's annotation stays its own).
#[tokio::test(flavor = "multi_thread")]
async fn on_kube_apiserver_our_writes_keep_other_managers_fields() {
    let namespace = real_namespace("fields");
    let store = real_store_in(&namespace).await;
    let lock = name("fields");
    let Attempt::Acquired(lease) = store
        .try_acquire(&lock, &claim("pod-a/1", 15))
        .await
        .unwrap()
    else {
        panic!("free lock")
    };
    let plane = sync_testkit::ControlPlane::shared();
    plane.kubectl_ok(&[
        "annotate",
        "-n",
        &namespace,
        "lease/fields",
        "team=storage",
        "--field-manager=someone-else",
    ]);
    // Let the watch bring the annotated version into the cache before renewing from it.
    sleep(Duration::from_millis(500)).await;
    let lease = store.renew(&lock, &lease).await.unwrap();
    store.release(&lock, &lease).await.unwrap();
    let object: serde_json::Value = serde_json::from_str(&plane.kubectl_ok(&[
        "get",
        "-n",
        &namespace,
        "lease/fields",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(object["metadata"]["annotations"]["team"], "storage");
    let managers: Vec<&str> = object["metadata"]["managedFields"]
        .as_array()
        .expect("the server keeps managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"someone-else"),
        "another manager's field ownership was lost: {managers:?}"
    );
}

/// The holder on one store and the waiter on another, as with two electors: the waiter's store
/// hears of the release only through its watch of the API.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_from_another_elector_racing_an_attempt_never_strands_the_waiter() {
    let server = TestServer::start().await.unwrap();
    let (holders, waiters) = (store_on(&server, "a").await, store_on(&server, "b").await);
    sync_elector::store::conformance::release_racing_an_attempt(
        &holders,
        &waiters,
        Duration::from_secs(5),
    )
    .await;
}

fn claim(holder: &str, ttl: u64) -> Claim {
    Claim {
        holder: holder.into(),
        ttl: Duration::from_secs(ttl),
        value: Some(format!("{holder}:8080")),
        asks: None,
    }
}

fn name(n: &str) -> LockName {
    LockName::new(n).unwrap()
}

#[tokio::test]
async fn the_lease_is_a_client_go_leader_election_record() {
    let server = TestServer::start().await.unwrap();
    let store = store_on(&server, "a").await;
    let Attempt::Acquired(lease) = store
        .try_acquire(&name("shard"), &claim("pod-a/1", 15))
        .await
        .unwrap()
    else {
        panic!("free lock")
    };
    let object = server.lease("default", "shard").unwrap();
    let spec = &object["spec"];
    assert_eq!(spec["holderIdentity"], "pod-a/1");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(
        spec["acquireTime"]
            .as_str()
            .is_some_and(|t| t.contains('.')),
        "MicroTime: {spec}"
    );
    assert!(spec["renewTime"].is_string());
    assert_eq!(
        object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "sync-elector"
    );
    assert_eq!(
        object["metadata"]["annotations"]["sync.metaparticle.io/value"],
        "pod-a/1:8080"
    );
    assert_eq!(lease.token, 1);

    store.release(&name("shard"), &lease).await.unwrap();
    let object = server
        .lease("default", "shard")
        .expect("a released Lease is kept");
    assert!(
        object["spec"]
            .get("holderIdentity")
            .is_none_or(|h| h.is_null() || h == ""),
        "{object}"
    );
    assert_eq!(object["spec"]["leaseTransitions"], 0, "the token lives on");
    let Attempt::Acquired(next) = store
        .try_acquire(&name("shard"), &claim("pod-b/2", 15))
        .await
        .unwrap()
    else {
        panic!("released lock")
    };
    assert_eq!(next.token, 2);
}

#[tokio::test]
async fn racing_electors_get_exactly_one_holder() {
    let server = TestServer::start().await.unwrap();
    let stores = [
        store_on(&server, "a").await,
        store_on(&server, "b").await,
        store_on(&server, "c").await,
    ];
    for round in 0..10 {
        let lock = name(&format!("race-{round}"));
        let attempts = futures_util::future::join_all(stores.iter().enumerate().map(|(i, s)| {
            let lock = lock.clone();
            async move {
                s.try_acquire(&lock, &claim(&format!("e{i}"), 15))
                    .await
                    .unwrap()
            }
        }))
        .await;
        let winners = attempts
            .iter()
            .filter(|a| matches!(a, Attempt::Acquired(_)))
            .count();
        assert_eq!(winners, 1, "round {round}: {attempts:?}");
    }
}

#[tokio::test]
async fn a_foreign_holder_is_respected_until_it_stops_renewing() {
    // A client-go elector's record, written as client-go writes it.
    let server = TestServer::start().await.unwrap();
    let store = store_on(&server, "ours").await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/apis/coordination.k8s.io/v1/namespaces/default/leases",
        server.url()
    );
    let mut record = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "controller"},
        "spec": {"holderIdentity": "client-go-pod", "leaseDurationSeconds": 2, "leaseTransitions": 4,
                 "acquireTime": "2020-01-01T00:00:00.000000Z", "renewTime": "2020-01-01T00:00:00.000000Z"}});
    (_, record) = support::call(&http, "POST", &url, Some(&record.to_string())).await;
    let started = Instant::now();
    // client-go renews every 500 ms for 3 s (its renewTime is in the past: the wall clock is never
    // trusted), and we stay out; then it stops, and we take over about 2 s later.
    while started.elapsed() < Duration::from_secs(3) {
        match store
            .try_acquire(&name("controller"), &claim("ours/1", 15))
            .await
            .unwrap()
        {
            Attempt::Busy { current, .. } => {
                assert_eq!(current.holding.unwrap().holder, "client-go-pod");
            }
            other => panic!("took a lease its holder is renewing, or conflicted: {other:?}"),
        }
        sleep(Duration::from_millis(500)).await;
        record["spec"]["renewTime"] = json!(format!(
            "2020-01-01T00:00:0{}.000000Z",
            started.elapsed().as_secs()
        ));
        let put = format!("{url}/controller");
        (_, record) = support::call(&http, "PUT", &put, Some(&record.to_string())).await;
    }
    let stopped = Instant::now();
    let token = loop {
        match store
            .try_acquire(&name("controller"), &claim("ours/1", 15))
            .await
            .unwrap()
        {
            Attempt::Acquired(lease) => break lease.token,
            Attempt::Busy { retry_at, .. } => {
                tokio::time::sleep_until(
                    retry_at.unwrap_or_else(|| Instant::now() + Duration::from_millis(100)),
                )
                .await;
            }
            Attempt::Conflict(conflict) => panic!("a lock in conflict: {conflict}"),
        }
    };
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "took over after {waited:?}, before its 2 s duration"
    );
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(token, 6, "leaseTransitions 4 -> 5, token = transitions + 1");
    assert_eq!(
        server.lease("default", "controller").unwrap()["spec"]["leaseTransitions"],
        5
    );
}

#[tokio::test]
async fn a_waiting_elector_sends_nothing_but_its_watch() {
    let server = TestServer::start().await.unwrap();
    let holder = store_on(&server, "holder").await;
    let waiter = store_on(&server, "waiter").await;
    let lock = name("quiet");
    let Attempt::Acquired(mut lease) = holder.try_acquire(&lock, &claim("h", 3)).await.unwrap()
    else {
        panic!()
    };
    let mut changes = waiter.subscribe(&lock);
    let before = server.counts("waiter");
    let started = Instant::now();
    let mut woken = 0;
    while started.elapsed() < Duration::from_secs(4) {
        // The holder renews every ttl/3; the waiter wakes on each change and looks again.
        lease = holder.renew(&lock, &lease).await.unwrap();
        if tokio::time::timeout(Duration::from_secs(2), changes.changed())
            .await
            .is_ok()
        {
            woken += 1;
        }
        assert!(matches!(
            waiter.try_acquire(&lock, &claim("w", 3)).await.unwrap(),
            Attempt::Busy { .. }
        ));
        sleep(Duration::from_secs(1)).await;
    }
    let after = server.counts("waiter");
    assert!(
        woken >= 3,
        "the waiter heard the renewals through its watch ({woken})"
    );
    assert_eq!(
        after.requests(),
        before.requests(),
        "no requests besides the watch: {before:?} -> {after:?}"
    );
    assert_eq!(after.watch, before.watch, "one watch, kept open");
    let holder_counts = server.counts("holder");
    assert_eq!(
        holder_counts.get, 0,
        "the holder writes, it does not poll: {holder_counts:?}"
    );
}

#[tokio::test]
async fn api_errors_are_clear_and_other_clients_carry_on() {
    let server = TestServer::start().await.unwrap();
    let denied = store_on(&server, "denied").await;
    let fine = store_on(&server, "fine").await;
    server.set_forbidden("denied", true);
    let err = denied
        .try_acquire(&name("rbac"), &claim("d", 5))
        .await
        .unwrap_err();
    let StoreError::Unavailable { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("403") && message.contains("Role"),
        "{message}"
    );
    assert!(matches!(
        fine.try_acquire(&name("rbac"), &claim("f", 5))
            .await
            .unwrap(),
        Attempt::Acquired(_)
    ));

    server.set_failing(Some(500));
    let err = fine
        .try_acquire(&name("outage"), &claim("f", 5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    // The API's answer stays reachable as the error's cause, below the message.
    let cause = std::error::Error::source(&err).expect("the error keeps its cause");
    assert!(cause.to_string().contains("500"), "{cause}");
    // kube retries 503 with backoff; the store's request timeout bounds it.
    server.set_failing(Some(503));
    let err = fine
        .try_acquire(&name("outage"), &claim("f", 5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    server.set_failing(None);
    assert!(matches!(
        fine.try_acquire(&name("outage"), &claim("f", 5))
            .await
            .unwrap(),
        Attempt::Acquired(_)
    ));
}

#[tokio::test]
async fn a_missing_namespace_is_named_in_the_error() {
    let server = TestServer::start().await.unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig("lost")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let store = KubernetesStore::new(kube::Client::try_from(config).unwrap(), "nowhere", None);
    let err = store
        .try_acquire(&name("x"), &claim("a", 5))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("namespaces \"nowhere\" not found") && text.contains("--namespace"),
        "{text}"
    );
}

#[tokio::test]
async fn the_cache_recovers_from_dropped_watches_and_expired_history() {
    let server = TestServer::start().await.unwrap();
    let a = store_on(&server, "a").await;
    let b = store_on(&server, "b").await;
    let lock = name("resync");
    let mut changes = b.subscribe(&lock);
    server.drop_watches();
    server.compact();
    sleep(Duration::from_millis(500)).await;
    let Attempt::Acquired(lease) = a.try_acquire(&lock, &claim("a", 5)).await.unwrap() else {
        panic!()
    };
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("b's re-established watch saw the acquisition")
        .unwrap();
    let record = b.get(&lock).await.unwrap().unwrap();
    assert_eq!(record.token, lease.token);
    assert_eq!(record.holding.unwrap().holder, "a");
}
