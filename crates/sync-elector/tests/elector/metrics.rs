//! `/metrics` as an operator reads it: each lock's series following its leases from grant to
//! ending, the store's requests counted, and the limit on per-lock labels.

use crate::support::{self, StoreKind, call, start_elector};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::sleep;

/// The value of the series `series` (name and labels, exactly as written), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Scrapes until `check` holds, for up to 20 s; returns the text that passed.
async fn until(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(http, url).await;
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}, not within 20 s:\n{text}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// On `kind`: a holder and a waiter, a release that hands the lock over, and the waiter's lease
/// left to expire, each seen in the lock's series; and the store's requests counted.
fn each_lease_is_seen_in_its_locks_series(kind: StoreKind) {
    let on = support::OnStore::start(kind, "metrics-elector", 15, &[]);
    on.runtime.block_on(follow_one_lock(&on.elector.url, kind));
}

support::on_every_store!(each_lease_is_seen_in_its_locks_series);

async fn follow_one_lock(url: &str, kind: StoreKind) {
    let http = reqwest::Client::new();
    let acquire = format!("{url}/v1/locks/watched/acquire");
    let (status, grant) = call(&http, "POST", &acquire, Some(r#"{"ttl_seconds": 15}"#)).await;
    assert_eq!(status, 200, "{grant}");
    let lease = grant["lease_id"].as_str().unwrap().to_owned();
    let waiter = tokio::spawn({
        let (http, acquire) = (http.clone(), acquire.clone());
        async move {
            call(
                &http,
                "POST",
                &acquire,
                Some(r#"{"ttl_seconds": 2, "wait_seconds": 60}"#),
            )
            .await
        }
    });

    let text = until(&http, url, "one holder and one waiter", |t| {
        value(t, "sync_elector_lock_held{lock=\"watched\"}") == Some(1.0)
            && value(t, "sync_elector_lock_waiters{lock=\"watched\"}") == Some(1.0)
    })
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let until_ = value(
        &text,
        "sync_elector_lock_valid_until_seconds{lock=\"watched\"}",
    )
    .unwrap();
    assert!(
        (now..now + 16.0).contains(&until_),
        "valid until {until_}, now {now}"
    );

    // Released: the waiter holds it, and sends no heartbeat, so its lease expires after 2 s.
    let (status, _) = call(&http, "DELETE", &format!("{url}/v1/leases/{lease}"), None).await;
    assert_eq!(status, 204);
    let (status, second) = waiter.await.unwrap();
    assert_eq!(status, 200, "{second}");
    let text = until(&http, url, "a release and an expiry", |t| {
        value(
            t,
            "sync_elector_lock_endings_total{lock=\"watched\",cause=\"expired\"}",
        ) == Some(1.0)
    })
    .await;
    for (series, expected) in [
        (
            "sync_elector_lock_endings_total{lock=\"watched\",cause=\"released\"}",
            1.0,
        ),
        (
            "sync_elector_lock_acquisitions_total{lock=\"watched\"}",
            2.0,
        ),
        ("sync_elector_lock_held{lock=\"watched\"}", 0.0),
        ("sync_elector_lock_waiters{lock=\"watched\"}", 0.0),
        (
            "sync_elector_lock_valid_until_seconds{lock=\"watched\"}",
            0.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series}\n{text}");
    }
    let handover = value(
        &text,
        "sync_elector_lock_last_handover_seconds{lock=\"watched\"}",
    )
    .unwrap();
    assert!(
        handover > 0.0 && handover < 10.0,
        "hand-over {handover}\n{text}"
    );

    let store = match kind {
        StoreKind::Memory => None,
        StoreKind::Kubernetes | StoreKind::KubeApiServer => Some("kubernetes"),
        StoreKind::Etcd => Some("etcd"),
    };
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sync_elector_store_requests_total{"))
        .collect();
    match store {
        None => assert!(requests.is_empty(), "{requests:?}"),
        Some(store) => {
            let ok: f64 = requests
                .iter()
                .filter(|l| {
                    l.contains(&format!("store=\"{store}\"")) && l.contains("result=\"ok\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert!(
                ok >= 3.0,
                "too few successful {store} requests: {requests:?}"
            );
            assert!(
                text.lines().any(|l| l.starts_with(&format!(
                    "sync_elector_store_request_seconds_count{{store=\"{store}\""
                ))),
                "no latency histogram:\n{text}"
            );
        }
    }
    assert_eq!(
        value(&text, "sync_elector_store_permission_denied"),
        Some(0.0)
    );
}

#[tokio::test]
async fn locks_beyond_the_limit_share_one_label() {
    let elector = start_elector(&["--metrics-lock-limit", "2"]);
    let http = reqwest::Client::new();
    let mut leases = Vec::new();
    for lock in ["first", "second", "third", "fourth"] {
        let (status, grant) = call(
            &http,
            "POST",
            &format!("{}/v1/locks/{lock}/acquire", elector.url),
            None,
        )
        .await;
        assert_eq!(status, 200, "{grant}");
        leases.push(grant["lease_id"].as_str().unwrap().to_owned());
    }
    let text = scrape(&http, &elector.url).await;
    for (series, expected) in [
        ("sync_elector_lock_held{lock=\"first\"}", Some(1.0)),
        ("sync_elector_lock_held{lock=\"second\"}", Some(1.0)),
        ("sync_elector_lock_held{lock=\"_other\"}", Some(2.0)),
        ("sync_elector_lock_held{lock=\"third\"}", None),
        ("sync_elector_locks_held", Some(4.0)),
    ] {
        assert_eq!(value(&text, series), expected, "{series}\n{text}");
    }
}

#[tokio::test]
async fn a_bad_lock_limit_is_refused_with_the_reason() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sync-elector"))
        .args(["--metrics-lock-limit", "many"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--metrics-lock-limit"), "{stderr}");
}
