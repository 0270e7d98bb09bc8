//! Random and malformed requests against the elector binary: every answer is below 500, every
//! error is the JSON error shape, and the elector still serves afterwards.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

/// One elector for every case of the run (started on first use, stopped with the process).
fn elector() -> &'static str {
    static ELECTOR: OnceLock<(support::ElectorProc, String)> = OnceLock::new();
    &ELECTOR
        .get_or_init(|| {
            let e = support::elector(
                "fuzz-elector",
                &["--ttl", "1s", "--legacy-listen", "127.0.0.1:0"],
                &[],
            );
            let url = e.url.clone();
            (e, url)
        })
        .1
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

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
        Just(Value::Array(vec![])),
    ];
    let object = proptest::collection::btree_map(
        prop_oneof![
            Just("ttl_seconds".to_owned()),
            Just("wait_seconds".to_owned()),
            Just("value".to_owned()),
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_request_gets_a_5xx_and_every_error_is_json(
        method in method(),
        path in path(),
        body in body(),
        json_type in any::<bool>(),
    ) {
        let url = format!("{}{path}", elector());
        let answer = runtime().block_on(async {
            let http = reqwest::Client::new();
            let Ok(url) = reqwest::Url::parse(&url) else { return None };
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
                let body: Value = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(format!("{method} {path}: {status} not JSON ({e}): {text}")))?;
                prop_assert!(body["error"].is_string() && body["message"].is_string(), "{method} {path}: {text}");
            }
        }
        let health = runtime().block_on(async {
            reqwest::get(format!("{}/healthz", elector())).await.map(|r| r.status().as_u16())
        });
        prop_assert_eq!(health.ok(), Some(200), "the elector stopped serving after {} {}", method, path);
    }
}
