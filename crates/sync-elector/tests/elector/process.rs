//! The elector as a real process, with clients in this process and in processes of their own:
//! contention, a holder's process killed, the elector killed or stopped, SIGTERM, and the
//! legacy protocol driven the way the original bindings drove it.

use crate::support;

use std::time::{Duration, Instant};

use support::{ClientProc, critical_section, register, start_elector, temp_dir};
use sync_client::Client;

fn client(url: &str) -> Client {
    Client::builder().url(url).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_way_contention_keeps_mutual_exclusion_with_increasing_tokens() {
    let elector = start_elector(&["--ttl", "5s"]);
    let dir = temp_dir("contention");
    let rounds = 5;
    let env = |dir: &std::path::Path| {
        vec![
            ("SYNC_TEST_LOCK", "contended".to_owned()),
            ("SYNC_TEST_ROUNDS", rounds.to_string()),
            ("SYNC_TEST_DIR", dir.display().to_string()),
        ]
    };
    let children: Vec<_> = (0..4)
        .map(|_| ClientProc::spawn("contend", &elector.url, &env(&dir)))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (lock, dir) = (
            client(&elector.url).lock("contended").on_lost(|| {}),
            dir.to_path_buf(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let guard = lock.acquire().await.unwrap();
                let token = guard.fencing_token();
                let d = dir.clone();
                tokio::task::spawn_blocking(move || {
                    critical_section(&d, token, Duration::from_millis(5))
                })
                .await
                .unwrap();
                guard.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
    }
    for child in &children {
        child.expect("done", Duration::from_secs(60));
    }
    let (tokens, violations) = register(&dir);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(tokens.len(), 8 * rounds as usize);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not strictly increasing: {tokens:?}"
    );
}

#[tokio::test]
async fn killing_the_holders_process_frees_the_lock_at_once() {
    let elector = start_elector(&["--ttl", "15s"]);
    let holder = ClientProc::spawn("hold", &elector.url, &[("SYNC_TEST_LOCK", "crash".into())]);
    holder.expect("acquired", Duration::from_secs(20));
    let first = client(&elector.url)
        .lock_state("crash")
        .await
        .unwrap()
        .token;
    let lock = client(&elector.url).lock("crash").on_lost(|| {});
    let waiter = tokio::spawn(async move { lock.acquire().await.map(|g| g.fencing_token()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    support::signal_pid(holder.pid(), "KILL");
    let token = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the lock moved")
        .unwrap()
        .unwrap();
    assert_eq!(token, first + 1);
    eprintln!("holder killed: lock moved after {:?}", killed.elapsed());
    // Well inside the 15 s ttl: the closed connection released it, not expiry.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn memory_store_tokens_keep_increasing_across_an_elector_restart() {
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let mut elector = start_elector(&["--ttl", "5s"]);
        let guard = client(&elector.url)
            .lock("restarted")
            .on_lost(|| {})
            .acquire()
            .await
            .unwrap();
        tokens.push(guard.fencing_token());
        elector.signal("KILL");
        elector.wait_exit(Duration::from_secs(5));
    }
    assert!(
        tokens[1] > tokens[0],
        "a restarted elector went back to token {} after {}",
        tokens[1],
        tokens[0]
    );
}

/// Sends `signal` to a holder's elector and checks the holder is told it lost the lock within
/// `bound`, which is below the ttl.
fn holder_reports_lost_within(signal: &str, ttl: u64, bound: Duration) {
    let ttl_flag = format!("{ttl}s");
    let mut elector = start_elector(&["--ttl", &ttl_flag]);
    let holder = ClientProc::spawn(
        "hold",
        &elector.url,
        &[
            ("SYNC_TEST_LOCK", "orphan".into()),
            ("SYNC_TEST_TTL", ttl.to_string()),
        ],
    );
    holder.expect("acquired", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let hit = Instant::now();
    elector.signal(signal);
    holder.expect("lost", Duration::from_secs(ttl + 5));
    let told = hit.elapsed();
    eprintln!("SIG{signal} to the elector: holder told lost after {told:?} (ttl {ttl}s)");
    assert!(
        told < bound,
        "told after {told:?}, expected within {bound:?}"
    );
    elector.signal("CONT");
    elector.signal("KILL");
    elector.wait_exit(Duration::from_secs(5));
}

#[test]
fn a_killed_elector_leaves_its_holder_told_lost_at_once() {
    // The broken connection tells the holder; it does not wait out its validity (20 s).
    holder_reports_lost_within("KILL", 30, Duration::from_secs(5));
}

#[test]
fn a_stopped_elector_leaves_its_holder_told_lost_before_the_ttl() {
    // A hung elector keeps the connection open: the validity deadline tells the holder.
    holder_reports_lost_within("STOP", 6, Duration::from_secs(6));
}

#[tokio::test]
async fn sigterm_releases_tells_holders_and_exits_zero() {
    let mut elector = start_elector(&["--ttl", "15s"]);
    let holder = ClientProc::spawn(
        "hold",
        &elector.url,
        &[("SYNC_TEST_LOCK", "rolling".into())],
    );
    holder.expect("acquired", Duration::from_secs(20));
    let waiter = {
        let lock = client(&elector.url).lock("rolling").on_lost(|| {});
        tokio::spawn(async move { lock.acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = Instant::now();
    elector.signal("TERM");
    let lost = holder.expect("lost", Duration::from_secs(10));
    // The validity left was about 10 s: being told in far less means the elector said so.
    assert!(
        term.elapsed() < Duration::from_secs(5),
        "told after {:?} ({lost})",
        term.elapsed()
    );
    let status = elector
        .wait_exit(Duration::from_secs(10))
        .expect("the elector exits");
    assert!(status.success(), "{status:?}");
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            &waited,
            Err(sync_client::Error::Rejected { status: 503, .. })
                | Err(sync_client::Error::Unreachable { .. })
        ),
        "a waiter is turned away, not granted: {waited:?}"
    );
    assert!(
        elector
            .log()
            .iter()
            .any(|l| l.contains("releasing every held lock held=1"))
    );
}

#[test]
fn without_a_lost_callback_a_holder_exits_with_a_clear_message() {
    let elector = start_elector(&["--ttl", "15s"]);
    let child = support::child_command("hold-without-callback", &elector.url)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    elector.signal("TERM");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("EVENT acquired"), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lock \"bare\" was lost"), "{stderr}");
    assert!(stderr.contains("no lost callback was set"), "{stderr}");
}

#[tokio::test]
async fn the_legacy_protocol_holds_with_puts_and_runs_out_when_left_alone() {
    let elector = start_elector(&["--legacy-listen", "127.0.0.1:0"]);
    let legacy = elector.legacy_url.clone().unwrap();
    let http = reqwest::Client::new();
    let lock_url = format!("{legacy}/locks/legacy-test");
    let get = || async { http.get(&lock_url).send().await.unwrap().status().as_u16() };
    let put = || async { http.put(&lock_url).send().await.unwrap() };
    let v1 = client(&elector.url).lock("legacy-test").on_lost(|| {});

    // The original clients: GET (404 or 200), then PUT; then every 10 s, GET and PUT to hold.
    assert_eq!(get().await, 404);
    let started = Instant::now();
    let first = put().await;
    assert_eq!(first.status().as_u16(), 200);
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["spec"]["owner"], "proc-elector");
    assert_eq!(body["metadata"]["name"], "legacy-test");
    let mut last_put = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(get().await, 200);
        assert_eq!(put().await.status().as_u16(), 200);
        last_put = Instant::now();
        assert!(
            v1.try_acquire().await.unwrap().is_none(),
            "held through the legacy protocol"
        );
    }
    assert!(
        started.elapsed() > Duration::from_secs(35),
        "held past the 30 s ttl by renewals"
    );
    // The main port speaks the legacy protocol too (the .NET, Java, JS and Python bindings).
    let main = http
        .get(format!("{}/locks/legacy-test", elector.url))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status().as_u16(), 200);

    // Left alone, it runs out after the legacy ttl of 30 s.
    loop {
        assert!(
            last_put.elapsed() < Duration::from_secs(40),
            "the lock never ran out"
        );
        if get().await == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ran_out = last_put.elapsed();
    assert!(
        ran_out >= Duration::from_secs(29),
        "ran out after {ran_out:?}, before the 30 s ttl"
    );

    // Now a v1 client takes it, and a legacy PUT gets 409.
    let guard = v1
        .try_acquire()
        .await
        .unwrap()
        .expect("free after running out");
    assert_eq!(put().await.status().as_u16(), 409);
    guard.release().await.unwrap();
    assert_eq!(put().await.status().as_u16(), 200);
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    for (args, says) in [
        (
            &["--store", "etcd", "--etcd-endpoints", "https://etcd:2379"][..],
            "TLS",
        ),
        (&["--etcd-prefix", "/locks"][..], "must end with '/'"),
        (&["--store", "zookeeper"][..], "memory, kubernetes, etcd"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sync-elector"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sync-elector"))
        .args(["--ttl", "15"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("15s"));
}

#[tokio::test]
async fn json_logs_carry_the_lock_holder_and_token_as_keys() {
    let elector = start_elector(&["--log-format", "json"]);
    let guard = client(&elector.url)
        .lock("logged")
        .on_lost(|| {})
        .acquire()
        .await
        .unwrap();
    let (holder, token) = (guard.holder().to_owned(), guard.fencing_token());
    guard.release().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<serde_json::Value> = elector
            .log()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect();
        if events.iter().any(|e| e["message"] == "released") {
            break events;
        }
        assert!(Instant::now() < deadline, "no release logged: {events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for message in ["acquired", "released"] {
        let event = events
            .iter()
            .find(|e| e["message"] == message)
            .unwrap_or_else(|| panic!("no {message} event: {events:?}"));
        assert_eq!(event["lock"], "logged", "{event}");
        assert_eq!(event["holder"], holder.as_str(), "{event}");
        assert_eq!(event["token"], token, "{event}");
        assert_eq!(event["level"], "INFO", "{event}");
    }
    // The default stays text, for people.
    let text = start_elector(&[]);
    let first = text.log().first().cloned().unwrap_or_default();
    assert!(
        first.contains("started") && !first.starts_with('{'),
        "{first}"
    );
}
