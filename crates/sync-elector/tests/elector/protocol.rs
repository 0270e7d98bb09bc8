//! The v1 acquire's two answers, as a client in any language sees them on the wire: the grant as
//! JSON (the v1 form every client speaks), or, with `Accept: text/event-stream`, the lease's
//! event stream whose first event carries the grant (one round trip for both).

use std::time::Duration;

use serde_json::Value;
use sync_elector::{Config, Server};
use tokio::time::timeout;

/// Generous bound for anything that should happen at once.
const PROMPT: Duration = Duration::from_secs(5);

async fn elector() -> Server {
    let mut config = Config::local("127.0.0.1:0".parse().unwrap());
    config.ttl = Duration::from_secs(5);
    Server::start(config).await.unwrap()
}

/// Reads server-sent events off a response, as `(event, data)`; comments are skipped.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = v.trim().to_owned();
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                return Some((event, data));
            }
            let chunk = timeout(PROMPT, self.response.chunk())
                .await
                .expect("the stream went quiet")
                .expect("the stream broke")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn acquire(
    http: &reqwest::Client,
    server: &Server,
    lock: &str,
    accept: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = http
        .post(format!("{}/v1/locks/{lock}/acquire", server.url()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    timeout(PROMPT, request.send()).await.unwrap().unwrap()
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn with_accept_event_stream_the_acquire_answers_with_the_lease_stream() {
    let server = elector().await;
    let http = reqwest::Client::new();
    let response = acquire(
        &http,
        &server,
        "streamed",
        Some("text/event-stream, application/json;q=0.5"),
        "{}",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/event-stream"));
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let (event, data) = events.next().await.expect("a first event");
    assert_eq!(event, "granted");
    let grant: Value = serde_json::from_str(&data).unwrap();
    let lease = grant["lease_id"].as_str().expect("a lease id").to_owned();
    assert!(grant["token"].as_u64().unwrap() >= 1, "{grant}");
    assert_eq!(grant["name"], "streamed");
    assert!(grant["valid_for_ms"].as_u64().unwrap() > 0, "{grant}");

    // Held: another acquire that does not wait is refused.
    let busy = acquire(&http, &server, "streamed", None, r#"{"wait_seconds":0}"#).await;
    assert_eq!(busy.status(), 409);

    // Release is one request; the stream then says so and ends.
    let released = http
        .delete(format!("{}/v1/leases/{lease}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 204);
    assert_eq!(
        events.next().await.map(|(e, _)| e).as_deref(),
        Some("released")
    );
    assert_eq!(events.next().await, None, "the stream ends");
}

#[tokio::test]
async fn closing_the_acquire_stream_releases_the_lock() {
    let server = elector().await;
    let http = reqwest::Client::new();
    let response = acquire(&http, &server, "closed", Some("text/event-stream"), "{}").await;
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    assert_eq!(
        events.next().await.map(|(e, _)| e).as_deref(),
        Some("granted")
    );
    drop(events);
    let next = acquire(&http, &server, "closed", None, r#"{"wait_seconds":5}"#).await;
    assert_eq!(
        next.status(),
        200,
        "the holder went away, so the lock was free"
    );
}

#[tokio::test]
async fn without_asking_for_the_stream_the_grant_is_json_as_in_v1() {
    let server = elector().await;
    let http = reqwest::Client::new();
    for (lock, accept) in [
        ("plain", None),
        ("any", Some("*/*")),
        ("json", Some("application/json")),
    ] {
        let response = acquire(&http, &server, lock, accept, "{}").await;
        assert_eq!(response.status(), 200, "{accept:?}");
        assert!(
            content_type(&response).starts_with("application/json"),
            "{accept:?}: {}",
            content_type(&response)
        );
        let grant: Value = response.json().await.unwrap();
        assert!(grant["lease_id"].is_string(), "{grant}");
    }
}
