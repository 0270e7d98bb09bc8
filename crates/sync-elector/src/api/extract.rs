//! Extractors that turn every malformed input into an [`ApiError`] with a JSON body, instead of
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sync_protocol::{LockName, MAX_BODY_BYTES, codes};

use super::App;
use super::error::ApiError;
use crate::lease_id::LeaseId;

/// A lock name from the path, checked against the naming rule.
pub struct LockPath(pub LockName);

impl<S: Send + Sync> FromRequestParts<S> for LockPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_NAME,
                    format!("the lock name in the path is unreadable: {e}"),
                )
            })?;
        LockName::new(name)
            .map(Self)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_NAME, e.to_string()))
    }
}

/// A lease id from the path. Ids are 32 lower-case hex digits; anything else is a lease this
/// elector never granted.
pub struct LeasePath(pub LeaseId);

impl<S: Send + Sync> FromRequestParts<S> for LeasePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let unknown = || ApiError::from(crate::manager::LeaseError::Unknown);
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| unknown())?;
        id.parse().map(Self).map_err(|_| unknown())
    }
}

/// A JSON body of type `T`; an empty body is `T::default()`. The content type is not checked, so
/// `curl -d '{}'` works.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<App> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::BODY_TOO_LARGE,
                format!("the body is larger than {MAX_BODY_BYTES} bytes; send a smaller body"),
            )
        };
        // Refuse a body declared too large at once, rather than after reading 16 KiB of it (a
        // client that declares 100 MB and sends one byte would otherwise hold the request open).
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        // A body that trickles in (or never comes) is cut off after the client timeout.
        let read = tokio::time::timeout(app.client_timeout, Bytes::from_request(req, app));
        let read = read.await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                codes::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {:?}; send the whole body at once",
                    app.client_timeout
                ),
            )
        })?;
        let bytes = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_BODY,
                    format!("the body could not be read: {e}"),
                )
            }
        })?;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Ok(Self(T::default())),
            Some(b'{') => {}
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_BODY,
                    "the body must be a JSON object, such as {\"ttl_seconds\": 15}, or empty",
                ));
            }
        }
        serde_json::from_slice(&bytes).map(Self).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::INVALID_BODY,
                format!("the body is not valid JSON for this request: {e}"),
            )
        })
    }
}
