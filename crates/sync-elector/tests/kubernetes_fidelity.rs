//! Our Kubernetes API test server against the real kube-apiserver: the same requests, in the
//! same order, get the same answers (status, reason, and the fields the store reads). Where they
//! differed, the test server was fixed; docs/kubernetes.md lists each difference found.

#![cfg(feature = "kubernetes")]

use http::{Method, Request};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_test_server::TestServer;
use serde_json::{Value, json};

/// What one request got, reduced to what must agree.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    /// `reason` of a Status, else `None`.
    reason: Option<String>,
    /// Facts about a returned object, such as whether it has a uid.
    facts: Vec<(String, Value)>,
}

async fn client(kubeconfig: Kubeconfig) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn send(client: &kube::Client, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = Request::builder().method(method).uri(path);
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            serde_json::to_vec(&body).unwrap()
        }
        None => Vec::new(),
    };
    let response = client
        .send(request.body(kube::client::Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    json!({ "status": status, "body": body })
}

/// The `type` and object name of each event a watch delivers before it times out.
async fn watch(client: &kube::Client, path: &str) -> Vec<String> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    let bytes = response.into_body().collect_bytes().await.unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or("?"),
                e["object"]["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn lease(name: &str, holder: Option<&str>, duration: i64, rv: Option<&str>) -> Value {
    let mut metadata = json!({ "name": name });
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv);
    }
    let mut spec = json!({ "leaseDurationSeconds": duration, "leaseTransitions": 0 });
    if let Some(holder) = holder {
        spec["holderIdentity"] = json!(holder);
    }
    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec })
}

/// The script: every kind of request the store makes, and the mistakes it could make.
async fn script(client: &kube::Client, ns: &str) -> Vec<(String, Answer)> {
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    let item = |name: &str| format!("{leases}/{name}");
    let mut answers = Vec::new();
    let mut last_rv = String::new();
    let mut step = |what: &str, answer: Value| -> Value {
        let status = answer["status"].as_u64().unwrap() as u16;
        let body = &answer["body"];
        let reason = (body["kind"] == "Status" && status >= 400)
            .then(|| body["reason"].as_str().unwrap_or_default().to_owned());
        let mut facts = Vec::new();
        if status < 300 && body["kind"] == "Lease" {
            let meta = &body["metadata"];
            facts.push(("has uid".into(), json!(meta["uid"].is_string())));
            facts.push((
                "numeric resourceVersion".into(),
                json!(
                    meta["resourceVersion"]
                        .as_str()
                        .is_some_and(|v| v.parse::<u64>().is_ok())
                ),
            ));
            facts.push((
                "has creationTimestamp".into(),
                json!(meta["creationTimestamp"].is_string()),
            ));
            facts.push(("namespace".into(), meta["namespace"].clone()));
            facts.push((
                "holderIdentity".into(),
                body["spec"]["holderIdentity"].clone(),
            ));
            facts.push((
                "leaseTransitions".into(),
                body["spec"]["leaseTransitions"].clone(),
            ));
        }
        if status < 300 && body["kind"] == "LeaseList" {
            facts.push((
                "list resourceVersion".into(),
                json!(body["metadata"]["resourceVersion"].is_string()),
            ));
            facts.push((
                "items".into(),
                json!(body["items"].as_array().map_or(0, Vec::len)),
            ));
        }
        if body["kind"] == "WatchEvents" {
            facts.push(("events".into(), body["events"].clone()));
        }
        answers.push((
            what.to_owned(),
            Answer {
                status,
                reason,
                facts,
            },
        ));
        answer
    };

    let created = step(
        "create a",
        send(
            client,
            Method::POST,
            &leases,
            Some(lease("a", Some("x/1"), 15, None)),
        )
        .await,
    );
    last_rv.clone_from(
        &created["body"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    step(
        "create a again",
        send(
            client,
            Method::POST,
            &leases,
            Some(lease("a", Some("x/1"), 15, None)),
        )
        .await,
    );
    step("get a", send(client, Method::GET, &item("a"), None).await);
    step(
        "update a with a stale resourceVersion",
        send(
            client,
            Method::PUT,
            &item("a"),
            Some(lease("a", Some("y/2"), 15, Some("1"))),
        )
        .await,
    );
    let updated = step(
        "update a with its resourceVersion",
        send(
            client,
            Method::PUT,
            &item("a"),
            Some(lease("a", Some("y/2"), 15, Some(&last_rv))),
        )
        .await,
    );
    let rv = updated["body"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    step(
        "release a: holderIdentity null",
        send(
            client,
            Method::PUT,
            &item("a"),
            Some(lease("a", None, 1, Some(&rv))),
        )
        .await,
    );
    step(
        "update a without a resourceVersion",
        send(
            client,
            Method::PUT,
            &item("a"),
            Some(lease("a", Some("z/3"), 15, None)),
        )
        .await,
    );
    step(
        "update b, which does not exist",
        send(
            client,
            Method::PUT,
            &item("b"),
            Some(lease("b", Some("x/1"), 15, Some("5"))),
        )
        .await,
    );
    step(
        "get b, which does not exist",
        send(client, Method::GET, &item("b"), None).await,
    );
    step(
        "create with leaseDurationSeconds 0",
        send(
            client,
            Method::POST,
            &leases,
            Some(lease("c", Some("x/1"), 0, None)),
        )
        .await,
    );
    step(
        "create with an invalid name",
        send(
            client,
            Method::POST,
            &leases,
            Some(lease("Bad_Name", Some("x/1"), 15, None)),
        )
        .await,
    );
    step(
        "update with another name in the body",
        send(
            client,
            Method::PUT,
            &item("a"),
            Some(lease("other", Some("x/1"), 15, None)),
        )
        .await,
    );
    step(
        "create in a namespace that does not exist",
        send(
            client,
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/no-such-namespace/leases",
            Some(lease("d", Some("x/1"), 15, None)),
        )
        .await,
    );
    step(
        "create with a body that is not JSON",
        send(client, Method::POST, &leases, Some(json!("not an object"))).await,
    );
    let listed = step("list", send(client, Method::GET, &leases, None).await);
    // A watch from the list's resourceVersion sees what came after it, and nothing before.
    let from = listed["body"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    step(
        "create e after the list",
        send(
            client,
            Method::POST,
            &leases,
            Some(lease("e", Some("x/1"), 15, None)),
        )
        .await,
    );
    let watched = watch(
        client,
        &format!("{leases}?watch=1&resourceVersion={from}&timeoutSeconds=1"),
    )
    .await;
    step(
        "watch from the list's resourceVersion",
        json!({ "status": 200, "body": { "kind": "WatchEvents", "events": watched } }),
    );
    step(
        "delete a",
        send(client, Method::DELETE, &item("a"), None).await,
    );
    step(
        "delete a again",
        send(client, Method::DELETE, &item("a"), None).await,
    );
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_server_answers_as_the_real_kube_apiserver() {
    let plane = tokio::task::spawn_blocking(sync_testkit::ControlPlane::shared)
        .await
        .unwrap();
    let namespace = {
        let plane = plane;
        tokio::task::spawn_blocking(move || plane.create_namespace("fidelity"))
            .await
            .unwrap()
    };
    let real = client(Kubeconfig::read_from(plane.admin_kubeconfig()).unwrap()).await;
    let server = TestServer::start().await.unwrap();
    server.add_namespace(&namespace);
    let ours = client(Kubeconfig::from_yaml(&server.kubeconfig("fidelity")).unwrap()).await;

    let (real, ours) = (
        script(&real, &namespace).await,
        script(&ours, &namespace).await,
    );
    let mut differences = Vec::new();
    for ((what, real), (_, ours)) in real.iter().zip(&ours) {
        eprintln!("{what}: real {real:?}");
        if real != ours {
            differences.push(format!(
                "{what}:\n  kube-apiserver {real:?}\n  test server    {ours:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the test server differs:\n{}",
        differences.join("\n")
    );
}
