//! Semaphores and read-write locks on the wire (docs/protocol.md), as a client in any language
//! sees them: the grant names its permit or mode, the state lists every holder, and a name asked
//! for as another kind is refused with `409 kind_conflict`.

use std::time::Duration;

use serde_json::{Value, json};
use sync_elector::{Config, Server};
use tokio::time::timeout;

/// Generous bound for anything that should happen at once.
const PROMPT: Duration = Duration::from_secs(5);

async fn elector() -> Server {
    let mut config = Config::local("127.0.0.1:0".parse().unwrap());
    config.ttl = Duration::from_secs(5);
    Server::start(config).await.unwrap()
}

/// POSTs `body` to `path` and returns the status and the JSON answer.
async fn post(http: &reqwest::Client, server: &Server, path: &str, body: &str) -> (u16, Value) {
    let response = timeout(
        PROMPT,
        http.post(format!("{}{path}", server.url()))
            .body(body.to_owned())
            .send(),
    )
    .await
    .expect("answered in time")
    .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, server: &Server, path: &str) -> Value {
    let url = format!("{}{path}", server.url());
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn release(http: &reqwest::Client, server: &Server, grant: &Value) {
    let lease = grant["lease_id"].as_str().unwrap();
    let url = format!("{}/v1/leases/{lease}", server.url());
    let response = http.delete(url).send().await.unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn a_semaphore_grants_its_permits_and_no_more() {
    let server = elector().await;
    let http = reqwest::Client::new();
    let path = "/v1/semaphores/jobs/acquire";
    let two = json!({"permits": 2}).to_string();
    let (status, a) = post(&http, &server, path, &two).await;
    assert_eq!(status, 200, "{a}");
    let (_, b) = post(&http, &server, path, &two).await;
    assert_eq!(
        (a["permit"].clone(), b["permit"].clone()),
        (json!(0), json!(1))
    );
    assert!(b["token"].as_u64() > a["token"].as_u64());

    let full = json!({"permits": 2, "wait_seconds": 0}).to_string();
    let (status, busy) = post(&http, &server, path, &full).await;
    assert_eq!((status, busy["error"].as_str()), (409, Some("lock_busy")));

    let state = get(&http, &server, "/v1/locks/jobs").await;
    assert_eq!(state["kind"], "semaphore");
    assert_eq!(state["permits"], 2);
    let holders: Vec<&Value> = state["holders"].as_array().unwrap().iter().collect();
    assert_eq!(holders.len(), 2, "{state}");
    assert_eq!(holders[1]["permit"], 1);
    assert!(state["holder"].is_null(), "no single holder: {state}");

    release(&http, &server, &a).await;
    let (status, c) = post(&http, &server, path, &full).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["permit"], 0, "the permit given back");
    assert!(c["token"].as_u64() > b["token"].as_u64());
}

#[tokio::test]
async fn a_name_asked_for_as_another_kind_is_refused_and_nothing_changes() {
    let server = elector().await;
    let http = reqwest::Client::new();
    let (status, _) = post(
        &http,
        &server,
        "/v1/semaphores/jobs/acquire",
        r#"{"permits": 3}"#,
    )
    .await;
    assert_eq!(status, 200);
    let before = get(&http, &server, "/v1/locks/jobs").await;
    for (path, body, says) in [
        ("/v1/locks/jobs/acquire", "{}", "a lock"),
        (
            "/v1/semaphores/jobs/acquire",
            r#"{"permits": 5}"#,
            "5 permits",
        ),
        (
            "/v1/rwlocks/jobs/acquire",
            r#"{"mode": "shared"}"#,
            "read-write",
        ),
    ] {
        let (status, error) = post(&http, &server, path, body).await;
        assert_eq!(status, 409, "{path}: {error}");
        assert_eq!(error["error"], "kind_conflict", "{path}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("a semaphore of 3 permits") && message.contains(says),
            "{path}: {message}"
        );
    }
    let mut after = get(&http, &server, "/v1/locks/jobs").await;
    after["holders"][0]["expires_in_ms"] = before["holders"][0]["expires_in_ms"].clone();
    assert_eq!(after, before, "nothing changed");
}

#[tokio::test]
async fn bad_semaphore_and_read_write_bodies_say_what_to_fix() {
    let server = elector().await;
    let http = reqwest::Client::new();
    for (path, body, code, hint) in [
        ("/v1/semaphores/s/acquire", "", "out_of_range", "1 to 128"),
        ("/v1/semaphores/s/acquire", "{}", "invalid_body", "permits"),
        (
            "/v1/semaphores/s/acquire",
            r#"{"permits": 0}"#,
            "out_of_range",
            "1 to 128",
        ),
        (
            "/v1/semaphores/s/acquire",
            r#"{"permits": 129}"#,
            "out_of_range",
            "1 to 128",
        ),
        (
            "/v1/semaphores/s/acquire",
            r#"{"permits": 2, "mode": "shared"}"#,
            "invalid_body",
            "mode",
        ),
        (
            "/v1/rwlocks/r/acquire",
            r#"{"mode": "reader"}"#,
            "invalid_body",
            "shared",
        ),
        (
            "/v1/rwlocks/r/acquire",
            r#"{"permits": 2}"#,
            "invalid_body",
            "permits",
        ),
    ] {
        let (status, error) = post(&http, &server, path, body).await;
        assert_eq!(status, 400, "{path} {body}: {error}");
        assert_eq!(error["error"], code, "{path} {body}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(hint), "{path} {body}: {message}");
    }
    let state = get(&http, &server, "/v1/locks").await;
    assert_eq!(state["locks"], json!([]), "nothing was created");
}

#[tokio::test]
async fn readers_share_and_a_waiting_writer_goes_before_later_readers() {
    let server = elector().await;
    let http = reqwest::Client::new();
    let path = "/v1/rwlocks/table/acquire";
    let shared = r#"{"mode": "shared"}"#;
    let (_, r1) = post(&http, &server, path, shared).await;
    let (status, r2) = post(&http, &server, path, shared).await;
    assert_eq!(status, 200, "{r2}");
    assert_eq!(
        (r1["mode"].as_str(), r2["mode"].as_str()),
        (Some("shared"), Some("shared"))
    );

    let writer = tokio::spawn({
        let (http, url) = (http.clone(), format!("{}{path}", server.url()));
        async move {
            let response = http.post(url).body("{}").send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    // Until the writer waits, a reader still gets in; from then on, readers wait behind it.
    let late = r#"{"mode": "shared", "wait_seconds": 0}"#;
    let mut blocked = false;
    for _ in 0..100 {
        let (status, answer) = post(&http, &server, path, late).await;
        if status == 409 {
            blocked = true;
            break;
        }
        release(&http, &server, &answer).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(blocked, "a reader got in beside a waiting writer");

    release(&http, &server, &r1).await;
    release(&http, &server, &r2).await;
    let (status, w) = timeout(PROMPT, writer)
        .await
        .expect("the writer got in")
        .unwrap();
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["mode"], "exclusive");
    assert!(w["token"].as_u64() > r2["token"].as_u64());
    let state = get(&http, &server, "/v1/locks/table").await;
    assert_eq!(state["kind"], "rwlock");
    assert_eq!(state["holders"][0]["mode"], "exclusive", "{state}");
}
