//! Kubernetes `Status` bodies, as the API server sends them with every error.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The group and resource this server serves, as errors name them.
pub const GROUP: &str = "coordination.k8s.io";
/// The resource name, as errors name it.
pub const RESOURCE: &str = "leases";

/// A `Status` object with `status: Failure`.
pub fn failure(code: u16, reason: &str, message: String, name: Option<&str>) -> Value {
    let mut details = json!({ "group": GROUP, "kind": RESOURCE });
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    })
}

/// An error answer: the HTTP status and its `Status` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: u16,
    body: Value,
}

impl ApiError {
    /// Any failure.
    pub fn new(code: u16, reason: &str, message: String, name: Option<&str>) -> Self {
        Self {
            code,
            body: failure(code, reason, message, name),
        }
    }

    /// 404 NotFound for a lease.
    pub fn not_found(name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{RESOURCE}.{GROUP} \"{name}\" not found"),
            Some(name),
        )
    }

    /// 409 AlreadyExists on create.
    pub fn already_exists(name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{RESOURCE}.{GROUP} \"{name}\" already exists"),
            Some(name),
        )
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {RESOURCE}.{GROUP} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
            Some(name),
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(message: String) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    /// 422 Invalid.
    pub fn invalid(name: &str, message: String) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("Lease.{GROUP} \"{name}\" is invalid: {message}"),
            Some(name),
        )
    }

    /// The HTTP status code.
    #[cfg(test)]
    pub fn code(&self) -> u16 {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body)).into_response()
    }
}
