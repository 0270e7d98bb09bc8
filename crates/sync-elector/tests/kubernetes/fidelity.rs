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

/// One run of the script on one server: each request's reduced answer, in order.
struct Run<'a> {
    client: &'a kube::Client,
    answers: Vec<(String, Answer)>,
}

impl Run<'_> {
    /// Sends a request, records what must agree, and returns the whole answer.
    async fn step(&mut self, what: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let answer = send(self.client, method, path, body).await;
        self.record(what, &answer);
        answer
    }

    fn record(&mut self, what: &str, answer: &Value) {
        let status = answer["status"].as_u64().unwrap() as u16;
        let body = &answer["body"];
        let reason = (body["kind"] == "Status" && status >= 400)
            .then(|| body["reason"].as_str().unwrap_or_default().to_owned());
        let mut facts: Vec<(String, Value)> = Vec::new();
        let mut fact = |name: &str, value: Value| facts.push((name.to_owned(), value));
        if status < 300 && body["kind"] == "Lease" {
            let meta = &body["metadata"];
            fact("has uid", json!(meta["uid"].is_string()));
            let rv = meta["resourceVersion"].as_str();
            fact(
                "numeric resourceVersion",
                json!(rv.is_some_and(|v| v.parse::<u64>().is_ok())),
            );
            fact(
                "has creationTimestamp",
                json!(meta["creationTimestamp"].is_string()),
            );
            fact("namespace", meta["namespace"].clone());
            fact("holderIdentity", body["spec"]["holderIdentity"].clone());
            fact("leaseTransitions", body["spec"]["leaseTransitions"].clone());
        }
        if status < 300 && body["kind"] == "LeaseList" {
            fact(
                "list resourceVersion",
                json!(body["metadata"]["resourceVersion"].is_string()),
            );
            fact("items", json!(body["items"].as_array().map_or(0, Vec::len)));
        }
        if body["kind"] == "WatchEvents" {
            fact("events", body["events"].clone());
        }
        self.answers.push((
            what.to_owned(),
            Answer {
                status,
                reason,
                facts,
            },
        ));
    }
}

fn rv_of(answer: &Value) -> String {
    answer["body"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The script: every kind of request the store makes, and the mistakes it could make.
async fn script(client: &kube::Client, ns: &str) -> Vec<(String, Answer)> {
    use Method as M;
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    let a = format!("{leases}/a");
    let x = |name: &str, duration, rv: Option<&str>| Some(lease(name, Some("x/1"), duration, rv));
    let mut run = Run {
        client,
        answers: Vec::new(),
    };

    let created = run
        .step("create a", M::POST, &leases, x("a", 15, None))
        .await;
    run.step("create a again", M::POST, &leases, x("a", 15, None))
        .await;
    run.step("get a", M::GET, &a, None).await;
    let stale = Some(lease("a", Some("y/2"), 15, Some("1")));
    run.step("update a with a stale resourceVersion", M::PUT, &a, stale)
        .await;
    let current = Some(lease("a", Some("y/2"), 15, Some(&rv_of(&created))));
    let updated = run
        .step("update a with its resourceVersion", M::PUT, &a, current)
        .await;
    let release = Some(lease("a", None, 1, Some(&rv_of(&updated))));
    run.step("release a: holderIdentity null", M::PUT, &a, release)
        .await;
    run.step(
        "update a without a resourceVersion",
        M::PUT,
        &a,
        x("a", 15, None),
    )
    .await;
    let b = format!("{leases}/b");
    run.step(
        "update b, which does not exist",
        M::PUT,
        &b,
        x("b", 15, Some("5")),
    )
    .await;
    run.step("get b, which does not exist", M::GET, &b, None)
        .await;
    run.step(
        "create with leaseDurationSeconds 0",
        M::POST,
        &leases,
        x("c", 0, None),
    )
    .await;
    run.step(
        "create with an invalid name",
        M::POST,
        &leases,
        x("Bad_Name", 15, None),
    )
    .await;
    run.step(
        "update with another name in the body",
        M::PUT,
        &a,
        x("other", 15, None),
    )
    .await;
    let elsewhere = "/apis/coordination.k8s.io/v1/namespaces/no-such-namespace/leases";
    run.step(
        "create in a namespace that does not exist",
        M::POST,
        elsewhere,
        x("d", 15, None),
    )
    .await;
    run.step(
        "create with a body that is not JSON",
        M::POST,
        &leases,
        Some(json!("not an object")),
    )
    .await;
    let listed = run.step("list", M::GET, &leases, None).await;
    // A watch from the list's resourceVersion sees what came after it, and nothing before.
    run.step(
        "create e after the list",
        M::POST,
        &leases,
        x("e", 15, None),
    )
    .await;
    let from = rv_of(&listed);
    let events = watch(
        client,
        &format!("{leases}?watch=1&resourceVersion={from}&timeoutSeconds=1"),
    )
    .await;
    run.record(
        "watch from the list's resourceVersion",
        &json!({ "status": 200, "body": { "kind": "WatchEvents", "events": events } }),
    );
    run.step("delete a", M::DELETE, &a, None).await;
    run.step("delete a again", M::DELETE, &a, None).await;
    run.answers
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_server_answers_as_the_real_kube_apiserver() {
    let plane = tokio::task::spawn_blocking(sync_testkit::ControlPlane::shared)
        .await
        .unwrap();
    let namespace = tokio::task::spawn_blocking(move || plane.create_namespace("fidelity"))
        .await
        .unwrap();
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
