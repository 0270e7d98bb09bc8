//! Every call of the client against a real etcd process: the messages declared by hand must
//! mean to etcd what they mean to us.

use std::time::Duration;

use etcd_rpc::{
    Client, Error, EventType, Options, PutRequest, RangeRequest, SortOrder, SortTarget,
    WatchCreateRequest,
};
use sync_testkit::EtcdCluster;
use tokio::time::timeout;

/// Generous: these are bounds for a hang, not performance figures.
const PATIENCE: Duration = Duration::from_secs(20);

async fn one_member(name: &'static str) -> (EtcdCluster, Client) {
    let cluster = tokio::task::spawn_blocking(move || EtcdCluster::start(1, name))
        .await
        .unwrap();
    let client = Client::connect(&[cluster.endpoint(0)], &Options::default()).unwrap();
    (cluster, client)
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn puts_and_ranges_keep_etcd_meaning_of_every_field() {
    let (_cluster, client) = one_member("rpc-kv").await;
    let first = client.put(put("/p/b", "1")).await.unwrap();
    let second = client.put(put("/p/a", "2")).await.unwrap();
    client.put(put("/q/a", "outside")).await.unwrap();
    let (r1, r2) = (
        first.header.unwrap().revision,
        second.header.unwrap().revision,
    );
    assert!(r2 > r1, "revisions go up: {r1} then {r2}");

    let all = client.range(RangeRequest::prefix("/p/")).await.unwrap();
    let keys: Vec<&[u8]> = all.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(
        keys,
        [b"/p/a".as_slice(), b"/p/b"],
        "by key, only the prefix"
    );
    assert_eq!(all.count, 2);
    assert_eq!(all.kvs[1].create_revision, r1);
    assert_eq!(all.kvs[1].value, b"1");

    let newest_first = client
        .range(RangeRequest {
            sort_target: SortTarget::Create as i32,
            sort_order: SortOrder::Descend as i32,
            limit: 1,
            keys_only: true,
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert_eq!(newest_first.kvs.len(), 1);
    assert_eq!(newest_first.kvs[0].key, b"/p/a");
    assert!(newest_first.kvs[0].value.is_empty(), "keys only");
    assert!(newest_first.more);

    let before_second = client
        .range(RangeRequest {
            max_create_revision: r2 - 1,
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert_eq!(before_second.kvs.len(), 1);
    assert_eq!(before_second.kvs[0].key, b"/p/b");

    assert!(client.delete("/p/a").await.unwrap(), "it was there");
    assert!(!client.delete("/p/a").await.unwrap(), "and is gone");
    let left = client.range(RangeRequest::prefix("/p/")).await.unwrap();
    assert_eq!(left.count, 1, "one key deleted, its neighbour kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_writes_a_key_only_if_it_does_not_exist() {
    let (_cluster, client) = one_member("rpc-txn").await;
    let created = client.create(put("/c/a", "first")).await.unwrap();
    let revision = created.expect("the key was absent");
    let again = client.create(put("/c/a", "second")).await.unwrap();
    assert_eq!(again, None, "the key exists");
    let read = client.range(RangeRequest::prefix("/c/a")).await.unwrap();
    assert_eq!(
        read.kvs[0].value, b"first",
        "the second create wrote nothing"
    );
    assert_eq!(read.kvs[0].create_revision, revision);
    client.delete("/c/a").await.unwrap();
    let recreated = client.create(put("/c/a", "third")).await.unwrap();
    assert!(
        recreated.is_some_and(|r| r > revision),
        "a deleted key can be created again, at a later revision"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_lives_while_kept_alive_and_takes_its_keys_when_revoked() {
    let (_cluster, client) = one_member("rpc-lease").await;
    let lease = client.lease_grant(30).await.unwrap();
    assert!(lease.id != 0 && lease.ttl >= 30, "{lease:?}");
    client
        .put(PutRequest {
            lease: lease.id,
            ..put("/lease/k", "v")
        })
        .await
        .unwrap();
    let read = client.range(RangeRequest::prefix("/lease/")).await.unwrap();
    assert_eq!(read.kvs[0].lease, lease.id);

    assert_eq!(
        client.lease_keep_alive_once(lease.id).await.unwrap(),
        Some(30)
    );
    let mut keeper = client.lease_keep_alive(lease.id);
    for _ in 0..3 {
        assert_eq!(
            keeper.keep_alive().await.unwrap(),
            Some(30),
            "one stream, many"
        );
    }
    let left = client.lease_time_to_live(lease.id).await.unwrap();
    assert!(left.ttl > 0 && left.granted_ttl == 30, "{left:?}");

    client.lease_revoke(lease.id).await.unwrap();
    assert!(
        client
            .range(RangeRequest::prefix("/lease/"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert_eq!(client.lease_keep_alive_once(lease.id).await.unwrap(), None);
    assert_eq!(
        keeper.keep_alive().await.unwrap(),
        None,
        "the open stream too"
    );
    assert_eq!(client.lease_time_to_live(lease.id).await.unwrap().ttl, -1);
    let revoked = client.lease_revoke(lease.id).await.unwrap_err();
    assert!(
        matches!(&revoked, Error::Call { call: "Lease/LeaseRevoke", status } if status.message().contains("not found")),
        "{revoked}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_reports_every_change_from_its_start_revision_in_order() {
    let (_cluster, client) = one_member("rpc-watch").await;
    let before = client.put(put("/w/a", "1")).await.unwrap();
    let start = before.header.unwrap().revision;
    client.put(put("/other", "x")).await.unwrap();
    let mut watch = client
        .watch(WatchCreateRequest {
            start_revision: start,
            ..WatchCreateRequest::prefix("/w/")
        })
        .await
        .unwrap();
    let lease = client.lease_grant(30).await.unwrap().id;
    client
        .put(PutRequest {
            lease,
            ..put("/w/b", "2")
        })
        .await
        .unwrap();
    client.lease_revoke(lease).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = timeout(PATIENCE, watch.message())
            .await
            .expect("the watch delivers")
            .unwrap()
            .expect("the stream stays open");
        assert_eq!(message.watch_id, watch.watch_id());
        for event in message.events {
            let kv = event.kv.clone().unwrap();
            seen.push((event.r#type(), kv.key, kv.mod_revision));
        }
    }
    let kinds: Vec<(EventType, &[u8])> = seen.iter().map(|(t, k, _)| (*t, k.as_slice())).collect();
    assert_eq!(
        kinds,
        [
            (EventType::Put, b"/w/a".as_slice()),
            (EventType::Put, b"/w/b"),
            (EventType::Delete, b"/w/b"),
        ],
        "history from the start revision, then the lease's deletion; nothing outside the prefix"
    );
    assert_eq!(seen[0].2, start);
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v3lock_waits_for_its_holder_to_unlock() {
    let (_cluster, client) = one_member("rpc-lock").await;
    let first_lease = client.lease_grant(30).await.unwrap().id;
    let second_lease = client.lease_grant(30).await.unwrap().id;
    let first = client.lock(b"door", first_lease).await.unwrap();
    assert!(first.key.starts_with(b"door/"), "{:?}", first.key);

    let waiter = client.clone();
    let mut second = tokio::spawn(async move { waiter.lock(b"door", second_lease).await });
    assert!(
        timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "the second lock waits while the first is held"
    );
    client.unlock(&first.key).await.unwrap();
    let second = timeout(PATIENCE, second)
        .await
        .expect("the waiter gets the lock after the unlock")
        .unwrap()
        .unwrap();
    assert!(second.header.unwrap().revision > first.header.unwrap().revision);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_fails_the_call_in_bounded_time() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::connect(&[format!("127.0.0.1:{port}")], &Options::default()).unwrap();
    let failed = timeout(PATIENCE, client.range(RangeRequest::prefix("/")))
        .await
        .expect("the call gives up by itself")
        .unwrap_err();
    assert!(
        matches!(
            failed,
            Error::Call {
                call: "KV/Range",
                ..
            }
        ),
        "{failed}"
    );
}
