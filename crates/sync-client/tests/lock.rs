//! The async lock API against a real elector served in-process on an ephemeral port.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sync_client::{Client, Error};
use sync_elector::{Config, Server};
use tokio::time::{Instant, sleep, timeout};

/// Generous bound for anything that should happen "at once".
const PROMPT: Duration = Duration::from_secs(5);

async fn elector(ttl_secs: u64) -> (Server, Client) {
    let mut config = Config::local("127.0.0.1:0".parse().unwrap());
    config.ttl = Duration::from_secs(ttl_secs);
    config.identity = Some("test-elector".into());
    let server = Server::start(config).await.expect("elector starts");
    let client = Client::builder().url(server.url()).build().expect("client");
    (server, client)
}

#[tokio::test]
async fn acquire_release_and_tokens_strictly_increase() {
    let (_server, client) = elector(5).await;
    let lock = client.lock("tokens").on_lost(|| {});
    let mut last = 0;
    for _ in 0..5 {
        let guard = lock.acquire().await.expect("acquire");
        assert!(guard.fencing_token() > last);
        assert!(guard.is_held());
        assert!(
            guard.holder().starts_with("test-elector/"),
            "{}",
            guard.holder()
        );
        last = guard.fencing_token();
        guard.release().await.expect("release");
    }
}

#[tokio::test]
async fn try_acquire_and_timeout_report_contention_as_values() {
    let (_server, client) = elector(5).await;
    let holder = client.lock("busy").value("10.0.0.1:80").on_lost(|| {});
    let guard = holder.acquire().await.unwrap();
    let other = client.lock("busy").on_lost(|| {});
    assert!(other.try_acquire().await.unwrap().is_none());
    let started = Instant::now();
    match other.acquire_timeout(Duration::from_millis(300)).await {
        Err(Error::Timeout { holder, waited, .. }) => {
            assert_eq!(holder.as_deref(), Some(guard.holder()));
            assert_eq!(waited, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    let state = client.lock_state("busy").await.unwrap();
    assert_eq!(state.holder.as_deref(), Some(guard.holder()));
    assert_eq!(state.value.as_deref(), Some("10.0.0.1:80"));
    assert_eq!(state.token, guard.fencing_token());
    guard.release().await.unwrap();
    assert!(other.try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn release_hands_over_to_a_waiter_at_once() {
    let (_server, client) = elector(15).await;
    let guard = client
        .lock("handover")
        .on_lost(|| {})
        .acquire()
        .await
        .unwrap();
    let waiter = {
        let lock = client.lock("handover").on_lost(|| {});
        tokio::spawn(async move {
            let guard = lock.acquire().await.unwrap();
            (Instant::now(), guard.fencing_token())
        })
    };
    sleep(Duration::from_millis(200)).await;
    let released = Instant::now();
    let first = guard.fencing_token();
    guard.release().await.unwrap();
    let (acquired, token) = timeout(PROMPT, waiter).await.expect("handed over").unwrap();
    assert!(token > first);
    // Far below the 15 s ttl: the waiter was woken, not left to the lock's expiry.
    assert!(acquired.duration_since(released) < PROMPT);
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let (_server, client) = elector(15).await;
    let guard = client.lock("fifo").on_lost(|| {}).acquire().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let lock = client.lock("fifo").on_lost(|| {});
        let order = order.clone();
        waiters.push(tokio::spawn(async move {
            let guard = lock.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            guard.release().await.unwrap();
        }));
        sleep(Duration::from_millis(100)).await;
    }
    guard.release().await.unwrap();
    for w in waiters {
        timeout(PROMPT, w).await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn dropping_an_acquire_future_leaves_the_queue() {
    let (server, client) = elector(15).await;
    let guard = client
        .lock("cancel")
        .on_lost(|| {})
        .acquire()
        .await
        .unwrap();
    let impatient = client.lock("cancel").on_lost(|| {});
    assert!(
        timeout(Duration::from_millis(300), impatient.acquire())
            .await
            .is_err()
    );
    // The abandoned request must not sit at the head of the queue: a later waiter gets the lock.
    let mut left = false;
    for _ in 0..50 {
        if server
            .manager()
            .metrics()
            .render()
            .contains("sync_elector_waiters 0")
        {
            left = true;
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert!(left, "the cancelled waiter is still queued");
    let next = client.lock("cancel").on_lost(|| {});
    let waiter = tokio::spawn(async move { next.acquire().await.map(|g| g.fencing_token()) });
    sleep(Duration::from_millis(100)).await;
    let first = guard.fencing_token();
    guard.release().await.unwrap();
    assert_eq!(
        timeout(PROMPT, waiter).await.unwrap().unwrap().unwrap(),
        first + 1
    );
}

#[tokio::test]
async fn dropping_the_guard_releases_the_lock() {
    let (_server, client) = elector(15).await;
    let lock = client.lock("drop").on_lost(|| {});
    let first = lock.acquire().await.unwrap();
    let token = first.fencing_token();
    drop(first);
    let again = timeout(PROMPT, lock.acquire())
        .await
        .expect("released by drop")
        .unwrap();
    assert_eq!(again.fencing_token(), token + 1);
}

#[tokio::test]
async fn heartbeats_keep_a_lock_past_its_ttl() {
    let (_server, client) = elector(2).await;
    let guard = client.lock("keep").on_lost(|| {}).acquire().await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert!(guard.is_held(), "lost: {:?}", guard.loss_signal().reason());
    assert!(
        client
            .lock("keep")
            .on_lost(|| {})
            .try_acquire()
            .await
            .unwrap()
            .is_none()
    );
    guard.release().await.unwrap();
}

#[tokio::test]
async fn callbacks_fire_on_acquire_and_on_loss() {
    let (server, client) = elector(15).await;
    let acquired = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let lock = {
        let (a, l) = (acquired.clone(), lost.clone());
        client
            .lock("callbacks")
            .on_acquired(move || {
                a.fetch_add(1, Ordering::SeqCst);
            })
            .on_lost(move || {
                l.fetch_add(1, Ordering::SeqCst);
            })
    };
    let guard = lock.acquire().await.unwrap();
    assert_eq!(acquired.load(Ordering::SeqCst), 1);
    let signal = guard.loss_signal();
    server.shutdown().await;
    timeout(PROMPT, guard.lost())
        .await
        .expect("told of the loss");
    assert!(!guard.is_held());
    assert_eq!(lost.load(Ordering::SeqCst), 1);
    assert!(
        signal.reason().unwrap().contains("shutting down"),
        "{:?}",
        signal.reason()
    );
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
}

#[tokio::test]
async fn an_absent_elector_is_named_in_the_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::builder().url(&url).build().unwrap();
    let err = client.lock("test").try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("start the sync-elector sidecar"), "{text}");
}

#[tokio::test]
async fn bad_names_and_urls_fail_before_any_request() {
    let client = Client::builder().url("http://127.0.0.1:1").build().unwrap();
    let err = client.lock("Not_Valid").try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::InvalidName(_)), "{err:?}");
    assert!(err.to_string().contains("lower-case"));
    let err = Client::builder()
        .url("https://127.0.0.1:13131")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("http://"), "{err}");
    let err = Client::builder().url("not a url").build().unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
}
