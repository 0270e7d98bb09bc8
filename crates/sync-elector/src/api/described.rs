//! The answers and parameters the v1 handlers' OpenAPI annotations name, declared once: described
//! for the document, never built (the extractors and `ApiError` do the work).

use sync_protocol::ErrorBody;

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
