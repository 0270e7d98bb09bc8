//! The HTTP surface: the Lease routes, the fault layer in front of them, and watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Shared;
use crate::faults::Verdict;
use crate::objects::Change;
use crate::patch::PatchKind;
use crate::status::{ApiError, GROUP, RESOURCE};

const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases";
const ITEM: &str = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(COLLECTION, get(list_or_watch).post(create))
        .route(ITEM, get(read).put(update).delete(delete).patch(patch))
        .fallback(|| async {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), faults))
        .with_state(shared)
}

fn client_of(request: &Request) -> String {
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    header(header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| header(header::USER_AGENT))
        .unwrap_or("anonymous")
        .to_owned()
}

fn verb_of(request: &Request) -> &'static str {
    let segments = request.uri().path().trim_matches('/').split('/').count();
    let watching = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match (request.method(), segments) {
        (&Method::GET, 7) => "get",
        (&Method::GET, _) if watching => "watch",
        (&Method::GET, _) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        _ => "delete",
    }
}

/// Counts the request, then applies partitions, latency, outages and 403s.
async fn faults(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let client = client_of(&request);
    let verb = verb_of(&request);
    match shared.faults.admit(&client, verb).await {
        Verdict::Serve => {
            request.extensions_mut().insert(Client(client));
            next.run(request).await
        }
        Verdict::Fail(code) => {
            ApiError::new(code, "InternalError", format!("injected failure (status {code})"), None).into_response()
        }
        Verdict::Forbidden => ApiError::new(
            403,
            "Forbidden",
            format!(
                "{RESOURCE}.{GROUP} is forbidden: User \"{client}\" cannot {verb} resource \"{RESOURCE}\" \
                 in API group \"{GROUP}\" in the namespace"
            ),
            None,
        )
        .into_response(),
    }
}

/// The client a request came from, for watch partitions.
#[derive(Clone)]
struct Client(String);

/// Equality selectors: `metadata.name=x` for fields, `k=v,k2=v2` for labels.
struct Selector {
    name: Option<String>,
    labels: Vec<(String, String)>,
}

impl Selector {
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let pairs = |text: &str| -> Result<Vec<(String, String)>, ApiError> {
            text.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p
                        .split_once("==")
                        .or_else(|| p.split_once('='))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!("unable to parse requirement: {p:?}"))
                        })?;
                    Ok((k.to_owned(), v.to_owned()))
                })
                .collect()
        };
        let mut name = None;
        for (k, v) in pairs(query.get("fieldSelector").map_or("", String::as_str))? {
            match k.as_str() {
                "metadata.name" => name = Some(v),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {other}"
                    )));
                }
            }
        }
        let labels = pairs(query.get("labelSelector").map_or("", String::as_str))?;
        Ok(Self { name, labels })
    }

    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        self.name.as_deref().is_none_or(|n| meta["name"] == n)
            && self
                .labels
                .iter()
                .all(|(k, v)| meta["labels"][k] == v.as_str())
    }
}

async fn list_or_watch(
    State(shared): State<Arc<Shared>>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let selector = Selector::parse(&query)?;
    if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        let client = request
            .extensions()
            .get::<Client>()
            .map_or_else(String::new, |c| c.0.clone());
        return Ok(watch(shared, namespace, selector, &query, client));
    }
    let objects = shared.objects.lock().expect("objects poisoned");
    let items: Vec<Value> = objects
        .list(&namespace)
        .into_iter()
        .filter(|o| selector.matches(o))
        .collect();
    Ok(Json(json!({
        "kind": "LeaseList",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": { "resourceVersion": objects.resource_version().to_string() },
        "items": items,
    }))
    .into_response())
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("JSON");
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(
    shared: Arc<Shared>,
    namespace: String,
    selector: Selector,
    query: &HashMap<String, String>,
    client: String,
) -> Response {
    let from = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .cloned();
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let dropped = shared.faults.watch_token();
    let (first, mut changes, mut last) = {
        let objects = shared.objects.lock().expect("objects poisoned");
        let changes = objects.subscribe();
        match from.map(|rv| rv.parse::<u64>()) {
            None => {
                let added = objects
                    .list(&namespace)
                    .into_iter()
                    .map(|o| event_line("ADDED", &o))
                    .collect();
                (added, changes, objects.resource_version())
            }
            Some(Ok(rv)) if rv >= objects.oldest_resumable() => {
                let replay = objects
                    .changes_since(&namespace, rv)
                    .into_iter()
                    .filter(|c| selector.matches(&c.object))
                    .map(|c| event_line(c.kind, &c.object))
                    .collect();
                (replay, changes, objects.resource_version().max(rv))
            }
            Some(Ok(rv)) => {
                let status = crate::status::failure(
                    410,
                    "Expired",
                    format!(
                        "too old resource version: {rv} ({})",
                        objects.oldest_resumable()
                    ),
                    None,
                );
                (
                    vec![event_line("ERROR", &status)],
                    broadcast::channel(1).1,
                    u64::MAX,
                )
            }
            Some(Err(_)) => {
                return ApiError::bad_request("resourceVersion is not a number".into())
                    .into_response();
            }
        }
    };
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for line in first {
            shared.faults.reachable(&client).await;
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if last == u64::MAX {
            return;
        }
        loop {
            let change: Change = tokio::select! {
                received = changes.recv() => match received {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                () = &mut deadline => return,
                () = dropped.cancelled() => return,
                () = tx.closed() => return,
            };
            if change.rv <= last
                || change.namespace != namespace
                || !selector.matches(&change.object)
            {
                continue;
            }
            last = change.rv;
            shared.faults.reachable(&client).await;
            if tx
                .send(event_line(change.kind, &change.object))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|line| line.map(Ok::<_, Infallible>))
    }));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let object = parse_body(&body)?;
    let created = shared
        .objects
        .lock()
        .expect("objects poisoned")
        .create(&namespace, object)?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        shared
            .objects
            .lock()
            .expect("objects poisoned")
            .get(&namespace, &name)?,
    ))
}

async fn update(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let object = parse_body(&body)?;
    let (object, created) = shared
        .objects
        .lock()
        .expect("objects poisoned")
        .put(&namespace, &name, object)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(object)))
}

async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let options = if body.is_empty() {
        Value::Null
    } else {
        parse_body(&body)?
    };
    let precondition = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str);
    let gone =
        shared
            .objects
            .lock()
            .expect("objects poisoned")
            .delete(&namespace, &name, precondition)?;
    Ok(Json(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": { "name": name, "group": GROUP, "kind": RESOURCE, "uid": gone["metadata"]["uid"] },
    })))
}

/// `fieldManager` and `force`, as PATCH takes them.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatchParams {
    field_manager: Option<String>,
    #[serde(default)]
    force: bool,
}

async fn patch(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<PatchParams>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(kind) = PatchKind::of(content_type) else {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/merge-patch+json, application/strategic-merge-patch+json, \
                 application/apply-patch+yaml (got {content_type:?})"
            ),
            Some(&name),
        ));
    };
    let object = parse_body(&body)?;
    Ok(Json(
        shared.objects.lock().expect("objects poisoned").patch(
            &namespace,
            &name,
            kind,
            object,
            params.field_manager.as_deref(),
            params.force,
        )?,
    ))
}
