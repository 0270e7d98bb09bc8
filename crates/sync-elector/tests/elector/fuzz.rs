//! Random and malformed requests against the elector binary on every store: every answer is below
//! 500, every error is the JSON error shape, and the elector still serves afterwards. Each run
//! draws new cases (400 on memory, 150 on each other store); a failure prints the shrunk case.

use crate::support;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::Value;
use support::StoreKind;

/// A path segment: sometimes a valid name or lease id, often garbage (percent-encoded).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?",
        "[0-9a-f]{32}",
        any::<String>().prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect()),
        "[A-Za-z0-9_~!$&'()*+,;=:@.-]{0,300}",
        Just(String::new()),
    ]
}

/// A path under every route the elector serves, and some it does not.
fn path() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("/v1/locks/{}/acquire"),
            Just("/v1/semaphores/{}/acquire"),
            Just("/v1/rwlocks/{}/acquire"),
            Just("/v1/locks/{}"),
            Just("/v1/locks/{}/watch"),
            Just("/v1/leases/{}"),
            Just("/v1/leases/{}/renew"),
            Just("/v1/leases/{}/events"),
            Just("/locks/{}"),
            Just("/v1/{}"),
            Just("/{}"),
        ],
        segment(),
        proptest::option::of("[a-z=&0-9%]{0,30}"),
    )
        .prop_map(|(shape, segment, query)| {
            let path = shape.replace("{}", &segment);
            match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            }
        })
}

/// A body: none, random bytes, or JSON of the acquire shape with random values and fields.
fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let json_value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("shared")),
        Just(Value::from("exclusive")),
        Just(Value::Array(vec![])),
    ];
    let object = proptest::collection::btree_map(
        prop_oneof![
            Just("ttl_seconds".to_owned()),
            Just("wait_seconds".to_owned()),
            Just("value".to_owned()),
            Just("permits".to_owned()),
            Just("mode".to_owned()),
            "[a-z_]{1,12}",
        ],
        json_value,
        0..4,
    )
    .prop_map(|m| serde_json::to_vec(&m).unwrap());
    prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Some),
        object.prop_map(Some),
    ]
}

fn method() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("DELETE"),
        Just("PATCH"),
        Just("HEAD"),
        Just("OPTIONS")
    ]
}

/// One request: no 5xx, every error the JSON shape, and the elector still serving after it.
fn check(
    runtime: &tokio::runtime::Runtime,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    json_type: bool,
) -> Result<(), TestCaseError> {
    let url = format!("{base}{path}");
    let answer = runtime.block_on(async {
        let http = reqwest::Client::new();
        let Ok(url) = reqwest::Url::parse(&url) else {
            return None;
        };
        let mut request = http
            .request(method.parse().unwrap(), url)
            .timeout(Duration::from_secs(3));
        if json_type {
            request = request.header("content-type", "application/json");
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        // A well-formed acquire of a held lock waits, as it should: a timeout is no failure.
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Some((status, text))
    });
    if let Some((status, text)) = answer {
        prop_assert!(status < 500, "{method} {path}: {status} {text}");
        if status >= 400 && method != "HEAD" {
            let body: Value = serde_json::from_str(&text).map_err(|e| {
                TestCaseError::fail(format!("{method} {path}: {status} not JSON ({e}): {text}"))
            })?;
            prop_assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{method} {path}: {text}"
            );
        }
    }
    let health = runtime.block_on(async {
        reqwest::get(format!("{base}/healthz"))
            .await
            .map(|r| r.status().as_u16())
    });
    prop_assert_eq!(
        health.ok(),
        Some(200),
        "the elector stopped serving after {} {}",
        method,
        path
    );
    Ok(())
}

/// Random requests to an elector on `kind`: 400 on memory, 150 on each other store.
fn no_request_gets_a_5xx_and_every_error_is_json(kind: StoreKind) {
    let cases = if kind == StoreKind::Memory { 400 } else { 150 };
    let on = support::OnStore::start(kind, "fuzz-elector", 1, &["--legacy-listen", "127.0.0.1:0"]);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (method(), path(), body(), any::<bool>());
    if let Err(err) = runner.run(&strategy, |(method, path, body, json_type)| {
        check(&on.runtime, &on.elector.url, method, &path, body, json_type)
    }) {
        panic!("on {}: {err}", kind.name());
    }
}

support::on_every_store!(no_request_gets_a_5xx_and_every_error_is_json);
