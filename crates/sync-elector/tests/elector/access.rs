//! Access: the lock API stays on loopback unless allowed, a bearer token guards it when one is
//! configured, and only the holder's lease id renews or releases a lease. Against the elector
//! binary, started for real.

use crate::support;

use std::process::Command;

use serde_json::Value;
use support::{StoreKind, call};

#[test]
fn a_reachable_address_is_refused_without_allow_remote() {
    // The elector must refuse before it binds anything: nothing listens on 0.0.0.0 here.
    let out = Command::new(env!("CARGO_BIN_EXE_sync-elector"))
        .args(["--listen", "0.0.0.0:0", "--store", "memory"])
        .output()
        .expect("the elector runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("--allow-remote") && stderr.contains("0.0.0.0:0"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_token_guards_every_lock_route_and_only_those() {
    let dir = support::temp_dir("token");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let elector = support::elector(
        "token-elector",
        &["--token-file", token_file.to_str().unwrap()],
        &[],
    );
    let url = elector.url.clone();
    let http = reqwest::Client::new();
    let send = |method: &str, path: &str, token: Option<&str>| {
        let mut request = http.request(method.parse().unwrap(), format!("{url}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    for (method, path) in [
        ("POST", "/v1/locks/guarded/acquire"),
        ("GET", "/v1/locks"),
        ("GET", "/v1/locks/guarded"),
        ("PUT", "/locks/guarded"),
        ("GET", "/locks/guarded"),
    ] {
        for token in [None, Some("wrong"), Some("s3cret-token-and-more")] {
            let response = send(method, path, token).await.unwrap();
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer")
            );
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert_eq!(body["error"], "unauthorized", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains("--token-file"),
                "{body}"
            );
        }
    }
    // Nothing was taken by those requests.
    let state: Value = send("GET", "/v1/locks/guarded", Some("s3cret-token"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["holder"], Value::Null, "{state}");
    // Probes and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            send("GET", path, None).await.unwrap().status(),
            200,
            "{path}"
        );
    }

    // The client library with the token takes and releases; without it, it is told why.
    let client = sync_client::Client::builder()
        .url(&url)
        .token("s3cret-token")
        .build()
        .unwrap();
    let guard = client
        .lock("guarded")
        .on_lost(|| {})
        .acquire()
        .await
        .unwrap();
    guard.release().await.unwrap();
    let anonymous = sync_client::Client::builder().url(&url).build().unwrap();
    let err = anonymous
        .lock("guarded")
        .on_lost(|| {})
        .acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, sync_client::Error::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bearer token"), "{err}");
}

/// Only the holder's lease id renews or releases, on `kind`.
fn only_the_holders_lease_id_renews_or_releases(kind: StoreKind) {
    let on = support::OnStore::start(kind, "access-elector", 15, &[]);
    on.runtime
        .block_on(strangers_cannot_touch_a_lease(&on.elector.url));
}

support::on_every_store!(only_the_holders_lease_id_renews_or_releases);

async fn strangers_cannot_touch_a_lease(url: &str) {
    let http = reqwest::Client::new();
    let (_, grant) = call(&http, "POST", &format!("{url}/v1/locks/mine/acquire"), None).await;
    let lease = grant["lease_id"].as_str().unwrap().to_owned();
    // A stranger's guesses, and a lease id of its own that it already released.
    let (_, other) = call(
        &http,
        "POST",
        &format!("{url}/v1/locks/other/acquire"),
        None,
    )
    .await;
    let released = other["lease_id"].as_str().unwrap();
    let (deleted, _) = call(
        &http,
        "DELETE",
        &format!("{url}/v1/leases/{released}"),
        None,
    )
    .await;
    assert_eq!(deleted, 204);
    let mut flipped = lease.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    for stranger in [
        "0123456789abcdef0123456789abcdef",
        flipped.as_str(),
        released,
    ] {
        for (method, path) in [
            ("POST", format!("/v1/leases/{stranger}/renew")),
            ("DELETE", format!("/v1/leases/{stranger}")),
        ] {
            let (status, body) = call(&http, method, &format!("{url}{path}"), None).await;
            assert!(
                status == 404 || status == 410,
                "{method} {path}: {status} {body}"
            );
            assert!(body["error"].is_string(), "{body}");
        }
    }
    let (_, state) = call(&http, "GET", &format!("{url}/v1/locks/mine"), None).await;
    assert_eq!(state["holder"], grant["holder"], "still held: {state}");
    let (renewed, _) = call(
        &http,
        "POST",
        &format!("{url}/v1/leases/{lease}/renew"),
        None,
    )
    .await;
    assert_eq!(renewed, 200);
}
