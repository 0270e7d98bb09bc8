//! Bad input: every mistake gets a 4xx with `{"error", "message"}`, and changes nothing.

use crate::support;

use std::time::Duration;

use support::call;
use sync_elector::{Config, Server};

async fn elector() -> Server {
    let mut config = Config::local("127.0.0.1:0".parse().unwrap());
    config.ttl = Duration::from_secs(5);
    Server::start(config).await.unwrap()
}

#[tokio::test]
async fn every_bad_request_gets_a_json_4xx_and_changes_nothing() {
    let server = elector().await;
    let http = reqwest::Client::new();
    let long = "x".repeat(254);
    let big_value = format!(r#"{{"value":"{}"}}"#, "v".repeat(2000));
    let huge = format!(r#"{{"value":"{}"}}"#, "v".repeat(20_000));
    let lease = "0123456789abcdef0123456789abcdef";
    let mut cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/v1/locks/Bad/acquire".into(),
            None,
            400,
            "invalid_name",
        ),
        (
            "POST",
            format!("/v1/locks/{long}/acquire"),
            None,
            400,
            "invalid_name",
        ),
        (
            "POST",
            "/v1/locks/a_b/acquire".into(),
            None,
            400,
            "invalid_name",
        ),
        (
            "POST",
            "/v1/locks/%FF/acquire".into(),
            None,
            400,
            "invalid_name",
        ),
        (
            "GET",
            "/v1/locks/..%2Fetc".into(),
            None,
            400,
            "invalid_name",
        ),
        (
            "GET",
            "/v1/locks/-x-/watch".into(),
            None,
            400,
            "invalid_name",
        ),
        ("PUT", "/locks/Bad".into(), None, 400, "invalid_name"),
        (
            "POST",
            format!("/v1/leases/{lease}/renew"),
            None,
            404,
            "unknown_lease",
        ),
        (
            "DELETE",
            format!("/v1/leases/{lease}"),
            None,
            404,
            "unknown_lease",
        ),
        (
            "GET",
            format!("/v1/leases/{lease}/events"),
            None,
            404,
            "unknown_lease",
        ),
        (
            "POST",
            "/v1/leases/not-a-lease/renew".into(),
            None,
            404,
            "unknown_lease",
        ),
        ("GET", "/nope".into(), None, 404, "not_found"),
        ("GET", "/v1/locks/a/b/c".into(), None, 404, "not_found"),
        ("PUT", "/v1/locks".into(), None, 405, "method_not_allowed"),
        (
            "DELETE",
            "/v1/locks/x".into(),
            None,
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v1/locks/x/acquire".into(),
            None,
            405,
            "method_not_allowed",
        ),
        ("POST", "/healthz".into(), None, 405, "method_not_allowed"),
        ("DELETE", "/locks/x".into(), None, 405, "method_not_allowed"),
    ];
    // Bodies of an acquire, each wrong in its own way.
    let bodies: Vec<(String, u16, &str)> = vec![
        ("{".to_owned(), 400, "invalid_body"),
        ("[]".to_owned(), 400, "invalid_body"),
        (r#"{"ttl_seconds":"5"}"#.to_owned(), 400, "invalid_body"),
        (r#"{"ttl_seconds":-1}"#.to_owned(), 400, "invalid_body"),
        (r#"{"ttl_seconds":1e30}"#.to_owned(), 400, "invalid_body"),
        (r#"{"ttl":5}"#.to_owned(), 400, "invalid_body"),
        (r#"{"ttl_seconds":0}"#.to_owned(), 400, "out_of_range"),
        (r#"{"ttl_seconds":3601}"#.to_owned(), 400, "out_of_range"),
        (r#"{"wait_seconds":-1}"#.to_owned(), 400, "out_of_range"),
        (r#"{"wait_seconds":1e12}"#.to_owned(), 400, "out_of_range"),
        (big_value, 400, "out_of_range"),
        (huge, 413, "body_too_large"),
    ];
    cases.extend(bodies.into_iter().map(|(body, status, code)| {
        (
            "POST",
            "/v1/locks/ok/acquire".to_owned(),
            Some(body),
            status,
            code,
        )
    }));
    for (method, path, body, status, code) in cases {
        let url = format!("{}{path}", server.url());
        let (got, body) = call(&http, method, &url, body.as_deref()).await;
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(body["error"], code, "{method} {path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.len() > 10,
            "{method} {path}: a message that says what to fix: {body}"
        );
    }
    let (_, locks) = call(&http, "GET", &format!("{}/v1/locks", server.url()), None).await;
    assert_eq!(locks["locks"], serde_json::json!([]), "nothing changed");
    let (health, _) = call(&http, "GET", &format!("{}/healthz", server.url()), None).await;
    assert_eq!(health, 200, "still serving");
}

#[tokio::test]
async fn a_silent_holder_loses_its_lease_and_a_late_renew_hears_why() {
    let server = elector().await;
    let http = reqwest::Client::new();
    let acquire = format!("{}/v1/locks/silent/acquire", server.url());
    let (_, grant) = call(&http, "POST", &acquire, Some(r#"{"ttl_seconds":1}"#)).await;
    let lease = grant["lease_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let renew = format!("{}/v1/leases/{lease}/renew", server.url());
    let (status, body) = call(&http, "POST", &renew, None).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"], "lease_lost");
    assert!(
        body["message"].as_str().unwrap().contains("heartbeat"),
        "{body}"
    );
    let (_, state) = call(
        &http,
        "GET",
        &format!("{}/v1/locks/silent", server.url()),
        None,
    )
    .await;
    assert_eq!(
        state["holder"],
        serde_json::Value::Null,
        "released for the next holder"
    );
    let metrics = http
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sync_elector_losses_total 1"), "{metrics}");
    assert!(
        metrics.contains("sync_elector_acquisitions_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_health_listener_serves_health_and_metrics_only() {
    let mut config = Config::local("127.0.0.1:0".parse().unwrap());
    config.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::start(config).await.unwrap();
    let health = format!("http://{}", server.health_addr().unwrap());
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = http
            .get(format!("{health}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    let (status, body) = call(&http, "POST", &format!("{health}/v1/locks/x/acquire"), None).await;
    assert_eq!(status, 404, "no lock API on the health listener");
    assert_eq!(body["error"], "not_found");
}
