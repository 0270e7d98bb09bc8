//! Elections and the blocking face against a real elector served in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use sync_client::{Client, Election};
use sync_elector::{Config, Server};
use tokio::time::{sleep, timeout};

const PROMPT: Duration = Duration::from_secs(5);

async fn elector() -> (Server, Client) {
    let mut config = Config::local("127.0.0.1:0".parse().unwrap());
    config.ttl = Duration::from_secs(5);
    let server = Server::start(config).await.expect("elector starts");
    let client = Client::builder().url(server.url()).build().unwrap();
    (server, client)
}

struct Replica {
    election: Arc<Election>,
    elected: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<sync_client::Result<()>>,
}

fn replica(client: &Client, name: &str, value: &str) -> Replica {
    let elected = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let (e, l) = (elected.clone(), lost.clone());
    let election = Arc::new(
        client
            .election(
                name,
                move || {
                    e.fetch_add(1, Ordering::SeqCst);
                },
                move || {
                    l.fetch_add(1, Ordering::SeqCst);
                },
            )
            .value(value),
    );
    let runner = election.clone();
    let task = tokio::spawn(async move { runner.run().await });
    Replica {
        election,
        elected,
        lost,
        task,
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn one_leader_and_a_new_one_when_it_resigns() {
    let (_server, client) = elector().await;
    let replicas: Vec<_> = (0..3)
        .map(|i| replica(&client, "shard-1", &format!("replica-{i}")))
        .collect();
    let leaders = |rs: &[Replica]| rs.iter().filter(|r| r.election.is_leader()).count();
    wait_for("one replica leads", || leaders(&replicas) == 1).await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(leaders(&replicas), 1, "exactly one leader");

    let first = replicas
        .iter()
        .position(|r| r.election.is_leader())
        .unwrap();
    let leader = replicas[0]
        .election
        .leader()
        .await
        .unwrap()
        .expect("a leader");
    assert_eq!(
        leader.value.as_deref(),
        Some(format!("replica-{first}").as_str())
    );

    let mut follow = replicas[0].election.observe().await.unwrap();
    let now = timeout(PROMPT, follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(now.as_ref().map(|l| l.token), Some(leader.token));

    replicas[first].election.shutdown();
    wait_for("the resigned replica's run returned", || {
        replicas[first].task.is_finished()
    })
    .await;
    wait_for("the resigned replica ran on_lost", || {
        replicas[first].lost.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_for("another replica leads", || {
        replicas
            .iter()
            .enumerate()
            .any(|(i, r)| i != first && r.election.is_leader())
    })
    .await;
    assert_eq!(leaders(&replicas), 1);

    // The follower saw the change: eventually a leader with a higher token.
    let changed = timeout(PROMPT, async {
        while let Some(item) = follow.next().await {
            if let Some(l) = item.unwrap()
                && l.token > leader.token
            {
                return l;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the follower saw the new leader");
    assert_ne!(
        changed.value.as_deref(),
        Some(format!("replica-{first}").as_str())
    );
    assert_eq!(replicas[first].elected.load(Ordering::SeqCst), 1);
    for r in &replicas {
        r.election.shutdown();
    }
}

#[tokio::test]
async fn a_leader_that_loses_its_elector_campaigns_again_on_the_next() {
    let (server, client) = elector().await;
    let addr = server.addr();
    let r = replica(&client, "again", "only");
    wait_for("it leads", || r.election.is_leader()).await;
    // The sidecar restarts: its leases end, the replica is told, and it campaigns again against
    // the elector that comes back on the same address.
    server.shutdown().await;
    wait_for("on_lost ran", || r.lost.load(Ordering::SeqCst) == 1).await;
    assert!(!r.election.is_leader());
    let mut config = Config::local(addr);
    config.ttl = Duration::from_secs(5);
    let _again = Server::start(config)
        .await
        .expect("elector restarts on the same port");
    wait_for("it leads again", || r.elected.load(Ordering::SeqCst) == 2).await;
    assert!(r.election.is_leader());
    r.election.shutdown();
    let result = timeout(PROMPT, r.task).await.expect("run returns").unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        r.lost.load(Ordering::SeqCst),
        2,
        "on_lost also runs on shutdown"
    );
}

#[test]
fn blocking_lock_mirrors_the_seed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, client) = runtime.block_on(elector());
    let url = server.url();
    let lock = sync_client::blocking::Lock::from_async(client.lock("seed").on_lost(|| {}));
    let other = sync_client::blocking::Lock::from_async(
        Client::builder()
            .url(&url)
            .build()
            .unwrap()
            .lock("seed")
            .on_lost(|| {}),
    );
    assert!(matches!(
        lock.release(),
        Err(sync_client::Error::NotHeld { .. })
    ));
    lock.wait_one().unwrap();
    assert!(lock.is_held());
    assert!(matches!(
        lock.wait_one(),
        Err(sync_client::Error::AlreadyHeld { .. })
    ));
    assert!(!other.try_wait().unwrap());
    assert!(!other.wait_timeout(Duration::from_millis(200)).unwrap());
    let token = lock.fencing_token().unwrap();
    lock.release().unwrap();
    assert!(other.try_wait().unwrap());
    assert!(other.fencing_token().unwrap() > token);
    other.release().unwrap();

    let election = Arc::new(sync_client::blocking::Election::from_async(
        client.election("seed-election", || {}, || {}),
    ));
    let runner = election.clone();
    let thread = std::thread::spawn(move || runner.run());
    for _ in 0..100 {
        if election.is_leader() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(election.is_leader());
    assert!(election.leader().unwrap().is_some());
    election.shutdown();
    thread.join().unwrap().unwrap();
    assert!(election.leader().unwrap().is_none(), "resigned on shutdown");
    runtime.block_on(server.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resigning_leader_stops_leading_before_the_next_is_elected() {
    let (_server, client) = elector().await;
    // One log, in the order the callbacks ran.
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let election = |who: &'static str| {
        let (elected, lost) = (log.clone(), log.clone());
        Arc::new(client.election(
            "ordered",
            move || elected.lock().unwrap().push(format!("{who} elected")),
            move || {
                // A leader that takes a while to stop its work.
                std::thread::sleep(Duration::from_millis(300));
                lost.lock().unwrap().push(format!("{who} lost"));
            },
        ))
    };
    let (a, b) = (election("a"), election("b"));
    let runner = a.clone();
    let a_task = tokio::spawn(async move { runner.run().await });
    wait_for("a leads", || a.is_leader()).await;
    let runner = b.clone();
    let b_task = tokio::spawn(async move { runner.run().await });
    sleep(Duration::from_millis(200)).await;

    a.shutdown();
    wait_for("b leads", || b.is_leader()).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["a elected", "a lost", "b elected"],
        "a's on_lost ran before its lock was free for b"
    );
    b.shutdown();
    a_task.await.unwrap().unwrap();
    b_task.await.unwrap().unwrap();
}
