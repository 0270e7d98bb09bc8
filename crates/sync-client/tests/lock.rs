//! The async lock API against a real elector served in-process on an ephemeral port.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sync_client::{Client, Error, Mode};
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
async fn a_lock_granted_after_a_long_wait_is_kept() {
    // ttl 2 s: a grant is valid for at most 1.3 s, far less than the waiter's 3 s in line. Its
    // validity cannot count from the acquire's send, so its first heartbeat confirms it at once.
    let (_server, client) = elector(2).await;
    let holder = client
        .lock("long-wait")
        .on_lost(|| {})
        .acquire()
        .await
        .unwrap();
    let waiter = {
        let lock = client.lock("long-wait").on_lost(|| {});
        tokio::spawn(async move { lock.acquire().await.unwrap() })
    };
    sleep(Duration::from_secs(3)).await;
    holder.release().await.unwrap();
    let guard = timeout(PROMPT, waiter).await.expect("handed over").unwrap();
    sleep(Duration::from_secs(3)).await;
    assert!(guard.is_held(), "lost: {:?}", guard.loss_signal().reason());
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

#[tokio::test]
async fn a_semaphore_admits_n_holders_each_on_its_own_permit() {
    let (_server, client) = elector(15).await;
    let jobs = client.semaphore("jobs", 3).on_lost(|| {});
    assert_eq!(jobs.permits(), Some(3));
    let mut guards = Vec::new();
    for _ in 0..3 {
        guards.push(jobs.try_acquire().await.unwrap().expect("a permit is free"));
    }
    let mut permits: Vec<_> = guards.iter().map(|g| g.permit().unwrap()).collect();
    permits.sort_unstable();
    assert_eq!(permits, vec![0, 1, 2]);
    assert!(
        guards
            .windows(2)
            .all(|w| w[0].fencing_token() < w[1].fencing_token())
    );
    assert!(jobs.try_acquire().await.unwrap().is_none(), "a fourth");
    let state = client.lock_state("jobs").await.unwrap();
    assert_eq!(state.kind, sync_client::NameKind::Semaphore);
    assert_eq!(state.permits, Some(3));
    assert_eq!(state.holders.len(), 3);

    let waiter = {
        let jobs = jobs.clone();
        tokio::spawn(async move { jobs.acquire().await.unwrap() })
    };
    sleep(Duration::from_millis(200)).await;
    let freed = guards.remove(1);
    let (permit, token) = (freed.permit(), freed.fencing_token());
    freed.release().await.unwrap();
    let next = timeout(PROMPT, waiter).await.expect("handed over").unwrap();
    assert_eq!(next.permit(), permit, "the freed permit");
    assert!(next.fencing_token() > token);
    assert_eq!(next.mode(), None);
}

#[tokio::test]
async fn a_semaphores_waiters_are_served_first_come_first_served() {
    let (_server, client) = elector(15).await;
    let pool = client.semaphore("pool-fifo", 2).on_lost(|| {});
    let held = [pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (pool, order) = (pool.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let guard = pool.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            // Spaced well apart, so that the order of the grants is the order of the pushes.
            sleep(Duration::from_millis(500)).await;
            guard.release().await.unwrap();
        }));
        sleep(Duration::from_millis(100)).await;
    }
    let [first, second] = held;
    first.release().await.unwrap();
    sleep(Duration::from_millis(200)).await;
    second.release().await.unwrap();
    for w in waiters {
        timeout(PROMPT, w).await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn a_waiting_writer_stops_new_readers() {
    let (_server, client) = elector(15).await;
    let read = client.rwlock("config", Mode::Shared).on_lost(|| {});
    let write = client.rwlock("config", Mode::Exclusive).on_lost(|| {});
    let first = read.acquire().await.unwrap();
    let second = read.try_acquire().await.unwrap().expect("readers share");
    assert_eq!(second.mode(), Some(Mode::Shared));
    assert_eq!(second.permit(), None);
    assert!(
        write.try_acquire().await.unwrap().is_none(),
        "readers hold it"
    );

    let writer = {
        let write = write.clone();
        tokio::spawn(async move { write.acquire().await.unwrap() })
    };
    sleep(Duration::from_millis(200)).await;
    assert!(
        read.try_acquire().await.unwrap().is_none(),
        "a reader waits behind the waiting writer"
    );
    let highest = second.fencing_token();
    first.release().await.unwrap();
    second.release().await.unwrap();
    let writer = timeout(PROMPT, writer)
        .await
        .expect("the writer's turn")
        .unwrap();
    assert_eq!(writer.mode(), Some(Mode::Exclusive));
    assert!(writer.fencing_token() > highest);
    assert!(
        read.try_acquire().await.unwrap().is_none(),
        "a writer alone"
    );
    writer.release().await.unwrap();
    assert!(read.try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn a_name_keeps_its_kind_and_size_while_held() {
    let (_server, client) = elector(15).await;
    let lock = client.lock("shared-name").on_lost(|| {});
    let guard = lock.acquire().await.unwrap();
    for other in [
        client.semaphore("shared-name", 2),
        client.rwlock("shared-name", Mode::Shared),
    ] {
        let err = other.on_lost(|| {}).try_acquire().await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains("shared-name"), "{err}");
    }
    guard.release().await.unwrap();

    let two = client.semaphore("pool", 2).on_lost(|| {});
    let held = two.acquire().await.unwrap();
    let err = client
        .semaphore("pool", 3)
        .on_lost(|| {})
        .acquire_timeout(PROMPT)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    held.release().await.unwrap();
    // Free again, the name takes whatever is asked next.
    let three = client.semaphore("pool", 3).on_lost(|| {});
    three.acquire().await.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn a_semaphore_size_out_of_range_fails_before_any_request() {
    let client = Client::builder().url("http://127.0.0.1:1").build().unwrap();
    for permits in [0, sync_client::MAX_PERMITS + 1] {
        let err = client
            .semaphore("jobs", permits)
            .try_acquire()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidPermits { .. }), "{err:?}");
        assert!(err.to_string().contains("1 to 128"), "{err}");
    }
}

#[test]
fn a_blocking_semaphore_says_its_permit() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, client) = runtime.block_on(elector(15));
    let one = sync_client::blocking::Lock::from_async(client.semaphore("single", 1).on_lost(|| {}));
    let other =
        sync_client::blocking::Lock::from_async(client.semaphore("single", 1).on_lost(|| {}));
    assert!(matches!(one.permit(), Err(Error::NotHeld { .. })));
    one.wait_one().unwrap();
    assert_eq!(one.permit().unwrap(), Some(0));
    assert!(!other.try_wait().unwrap());
    one.release().unwrap();
    assert!(other.try_wait().unwrap());
    other.release().unwrap();
    runtime.block_on(server.shutdown());
}
