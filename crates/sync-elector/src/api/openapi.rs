//! The OpenAPI 3.1 description of the v1 API, generated from the handlers' annotations and the
//! protocol's types (so it cannot drift from the code), served at `/openapi.json`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use sync_protocol::{
    AcquireRequest, ErrorBody, Grant, HolderState, LockList, LockState, LostEvent, Mode, NameKind,
    Renewal, RwLockAcquireRequest, SemaphoreAcquireRequest,
};
use utoipa::OpenApi;

use super::described::{
    BadLeaseId, BadName, LeaseLost, ServerSentEvent, TooLarge, Unauthorized, Unavailable,
    UnknownLease,
};
use super::v1;

/// The v1 API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sync-elector",
        description = "Distributed locks and leader election: the v1 API of the Metaparticle Sync \
                       elector. docs/protocol.md describes the same contract in prose; the legacy \
                       protocol, health and metrics are described there too."
    ),
    paths(
        v1::acquire,
        v1::acquire_permit,
        v1::acquire_rwlock,
        v1::renew,
        v1::release,
        v1::lease_events,
        v1::lock_state,
        v1::list,
        v1::watch
    ),
    components(
        schemas(
            AcquireRequest,
            SemaphoreAcquireRequest,
            RwLockAcquireRequest,
            Mode,
            NameKind,
            HolderState,
            Grant,
            Renewal,
            LockState,
            LockList,
            LostEvent,
            ErrorBody,
            ServerSentEvent
        ),
        responses(
            Unauthorized,
            Unavailable,
            UnknownLease,
            LeaseLost,
            BadLeaseId,
            BadName,
            TooLarge
        )
    )
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        camel_case_links(&mut doc);
        serde_json::to_string_pretty(&doc).expect("the document serializes")
    })
}

/// utoipa 5.5 writes a response link's fields in snake case (`operation_id`); OpenAPI, and the
/// tools that follow links (schemathesis' stateful phase), read `operationId`.
fn camel_case_links(doc: &mut serde_json::Value) {
    let operations = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|path| path.as_object_mut())
        .flat_map(|path| path.values_mut());
    for operation in operations {
        let Some(responses) = operation["responses"].as_object_mut() else {
            continue;
        };
        for response in responses.values_mut() {
            let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
                continue;
            };
            for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(snake) {
                        link.insert(camel.to_owned(), value);
                    }
                }
            }
        }
    }
}

/// `GET /openapi.json`
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_route_is_described() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/v1/locks", "get"),
            ("/v1/locks/{name}", "get"),
            ("/v1/locks/{name}/acquire", "post"),
            ("/v1/locks/{name}/watch", "get"),
            ("/v1/leases/{id}", "delete"),
            ("/v1/leases/{id}/renew", "post"),
            ("/v1/leases/{id}/events", "get"),
        ] {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is missing"
            );
        }
        let acquire = &doc["components"]["schemas"]["AcquireRequest"]["properties"];
        assert_eq!(acquire["ttl_seconds"]["maximum"], 3600);
        // The published naming rule is the one sync-protocol's test checks LockName against.
        let name = &paths["/v1/locks/{name}"]["get"]["parameters"][0]["schema"];
        assert_eq!(name["pattern"], sync_protocol::NAME_PATTERN);
        assert_eq!(name["maxLength"], sync_protocol::MAX_NAME_LEN);
        // A grant links to the operations that take its lease id, in OpenAPI's spelling.
        let links = &paths["/v1/locks/{name}/acquire"]["post"]["responses"]["200"]["links"];
        assert_eq!(links["renew"]["operationId"], "renew");
        assert_eq!(
            links["release"]["parameters"]["id"],
            "$response.body#/lease_id"
        );
        assert!(links["renew"].get("operation_id").is_none());
    }
}
