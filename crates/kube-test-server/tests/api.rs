//! The test server's behaviour over real HTTP, against what the Kubernetes API documents.

use std::time::Duration;

use futures_util::StreamExt;
use kube_test_server::TestServer;
use serde_json::{Value, json};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

fn lease(name: &str, holder: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 0}})
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &TestServer, client: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {client}").parse().unwrap());
        Self {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            base: format!("{}{LEASES}", server.url()),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn crud_follows_resource_version_semantics() {
    let server = TestServer::start().await.unwrap();
    let api = Api::new(&server, "a");
    let (code, created) = api.send("POST", "", Some(&lease("x", "a"))).await;
    assert_eq!(code, 201);
    let meta = &created["metadata"];
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{meta}"
    );
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{meta}"
    );
    assert_eq!(meta["namespace"], "default");
    let rv = meta["resourceVersion"].as_str().unwrap().to_owned();

    let (code, body) = api.send("POST", "", Some(&lease("x", "b"))).await;
    assert_eq!(code, 409);
    assert_status(&body, 409, "AlreadyExists");

    let mut next = created.clone();
    next["spec"]["holderIdentity"] = json!("b");
    let (code, updated) = api.send("PUT", "/x", Some(&next)).await;
    assert_eq!(code, 200);
    assert_ne!(updated["metadata"]["resourceVersion"], json!(rv));
    let (code, body) = api.send("PUT", "/x", Some(&next)).await;
    assert_eq!(code, 409, "stale resourceVersion");
    assert_status(&body, 409, "Conflict");

    let (code, body) = api.send("GET", "/missing", None).await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(body["details"]["name"], "missing");

    let (code, list) = api
        .send("GET", "?fieldSelector=metadata.name%3Dx", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "LeaseList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["metadata"]["resourceVersion"].is_string());

    let (code, body) = api.send("DELETE", "/x", None).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "Success");
    assert_eq!(api.send("GET", "/x", None).await.0, 404);
    let (code, body) = api.send("PATCH", "/x", Some(&json!({}))).await;
    assert_eq!(code, 415);
    assert_status(&body, 415, "UnsupportedMediaType");
}

async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut Vec<u8>,
) -> Value {
    loop {
        if let Some(at) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=at).collect();
            return serde_json::from_slice(&line).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event within 5 s")
            .expect("stream open")
            .unwrap();
        buffer.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn watches_resume_from_a_version_and_expire_after_compaction() {
    let server = TestServer::start().await.unwrap();
    let api = Api::new(&server, "w");
    let (_, created) = api.send("POST", "", Some(&lease("y", "a"))).await;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = api
        .http
        .get(format!("{}?watch=true&resourceVersion={rv}", api.base))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut changed = created.clone();
    changed["spec"]["holderIdentity"] = json!("b");
    api.send("PUT", "/y", Some(&changed)).await;
    let event = next_event(&mut stream, &mut buffer).await;
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["spec"]["holderIdentity"], "b");

    server.compact();
    let response = api
        .http
        .get(format!("{}?watch=1&resourceVersion={rv}", api.base))
        .send()
        .await
        .unwrap();
    let mut old = response.bytes_stream();
    let event = next_event(&mut old, &mut Vec::new()).await;
    assert_eq!(event["type"], "ERROR");
    assert_status(&event["object"], 410, "Expired");

    server.drop_watches();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "dropped watches end");
}

#[tokio::test]
async fn faults_and_counts_are_per_client() {
    let server = TestServer::start().await.unwrap();
    let (a, b) = (Api::new(&server, "a"), Api::new(&server, "b"));
    a.send("POST", "", Some(&lease("z", "a"))).await;
    a.send("GET", "/z", None).await;
    b.send("GET", "", None).await;
    let counts = server.counts("a");
    assert_eq!((counts.create, counts.get, counts.list), (1, 1, 0));
    assert_eq!(server.counts("b").list, 1);

    server.set_forbidden("b", true);
    let (code, body) = b.send("GET", "/z", None).await;
    assert_eq!(code, 403);
    assert_status(&body, 403, "Forbidden");
    assert_eq!(a.send("GET", "/z", None).await.0, 200, "others unaffected");

    server.set_failing(Some(503));
    let (code, body) = a.send("GET", "/z", None).await;
    assert_eq!(code, 503);
    assert_status(&body, 503, "InternalError");
    server.set_failing(None);

    server.set_partitioned("a", true);
    let stalled = tokio::time::timeout(Duration::from_millis(500), a.send("GET", "/z", None)).await;
    assert!(stalled.is_err(), "a partitioned client gets no answer");
    server.set_partitioned("a", false);
    assert_eq!(a.send("GET", "/z", None).await.0, 200, "healed");

    server.set_latency(Duration::from_millis(300));
    let started = std::time::Instant::now();
    a.send("GET", "/z", None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn patch_merges_and_apply_guards_fields_another_manager_owns() {
    let server = TestServer::start().await.unwrap();
    let api = Api::new(&server, "a");
    let patch = |content_type: &'static str, query: &str, body: Value| {
        api.http
            .patch(format!("{}/x{query}", api.base))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
    };
    let apply = "application/apply-patch+yaml";
    let merge = "application/merge-patch+json";
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    let take = |holder: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30}})
    };

    // A merge patch needs the Lease; an apply creates it.
    let (code, body) = answer(patch(merge, "", json!({"spec": {}})).await.unwrap()).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = answer(patch(apply, "?fieldManager=a", take("a")).await.unwrap()).await;
    assert_eq!(
        (code, &body["spec"]["holderIdentity"]),
        (200, &json!("a")),
        "{body}"
    );

    // Another manager changing a's field conflicts, unless forced; no manager is a 400.
    let (code, body) = answer(patch(apply, "?fieldManager=b", take("b")).await.unwrap()).await;
    assert_status(&body, 409, "Conflict");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(".spec.holderIdentity"),
        "{body}"
    );
    assert_eq!(code, 409);
    let (_, body) = answer(patch(apply, "", take("b")).await.unwrap()).await;
    assert_status(&body, 400, "BadRequest");
    assert_eq!(
        server.lease("default", "x").unwrap()["spec"]["holderIdentity"],
        "a"
    );

    // A merge patch with a stale resourceVersion conflicts; null removes a field; then b's
    // apply finds nobody owning the holder and goes through.
    let (_, body) = answer(
        patch(merge, "", json!({"metadata": {"resourceVersion": "1"}}))
            .await
            .unwrap(),
    )
    .await;
    assert_status(&body, 409, "Conflict");
    let (code, body) = answer(
        patch(
            "application/strategic-merge-patch+json",
            "?fieldManager=a",
            json!({"spec": {"holderIdentity": null}}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["spec"].get("holderIdentity").is_none(), "{body}");
    let (code, body) = answer(patch(apply, "?fieldManager=b", take("b")).await.unwrap()).await;
    assert_eq!(
        (code, &body["spec"]["holderIdentity"]),
        (200, &json!("b")),
        "{body}"
    );
    let (code, body) = answer(
        patch(apply, "?fieldManager=a&force=true", take("a"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (code, &body["spec"]["holderIdentity"]),
        (200, &json!("a")),
        "forced: {body}"
    );

    let (_, body) = answer(
        patch("application/json-patch+json", "", json!([]))
            .await
            .unwrap(),
    )
    .await;
    assert_status(&body, 415, "UnsupportedMediaType");
}
