//! The OpenAPI 3.1 description of the v1 API, generated from the handlers' annotations and the
//! protocol's types (so it cannot drift from the code), served at `/openapi.json`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use sync_protocol::{AcquireRequest, ErrorBody, Grant, LockList, LockState, LostEvent, Renewal};
use utoipa::OpenApi;

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

/// Declares an error answer shared by several paths: its name, and what it means.
macro_rules! error_response {
    ($name:ident, $description:literal) => {
        #[doc = $description]
        #[derive(utoipa::ToResponse)]
        #[response(description = $description)]
        #[allow(dead_code)] // described, never built: ApiError writes the answer
        pub struct $name(ErrorBody);
    };
}

error_response!(
    Unauthorized,
    "The elector runs with --token-file and the bearer token is missing or wrong"
);
error_response!(
    Unavailable,
    "The store did not answer, or the elector is shutting down"
);
error_response!(
    UnknownLease,
    "No such lease: never granted, released, or forgotten"
);
error_response!(LeaseLost, "The lease was lost; the body says why");
error_response!(BadLeaseId, "The lease id is malformed");
error_response!(BadName, "The name breaks the naming rule");
error_response!(TooLarge, "The body is larger than 16 KiB");

/// The `{name}` path parameter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // described, never built: LockPath extracts the name
pub struct NamePath {
    /// The lock's name: a DNS-1123 subdomain (lower-case letters, digits, '-' and '.'), at most
    /// 253 characters.
    #[param(
        max_length = 253,
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    )]
    name: String,
}

/// The `{id}` path parameter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // described, never built: LeasePath extracts the id
pub struct LeaseIdPath {
    /// The lease id the grant returned (32 hex digits).
    id: String,
}

/// One server-sent event, as OpenAPI tools parse a `text/event-stream` body: its name and its
/// data (JSON text: a `Renewal`, a `LostEvent` or a `LockState`, or empty for `released`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // described, never built: the streams are written by axum's Sse
pub struct ServerSentEvent {
    /// `held`, `lost`, `released` (lease events) or `state` (watch).
    event: String,
    /// The event's JSON payload.
    data: String,
}

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
