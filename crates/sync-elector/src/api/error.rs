//! One error type for the HTTP edge, mapped to a status and a JSON body in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sync_protocol::{ErrorBody, codes};

use crate::manager::{AcquireError, LeaseError};
use crate::store::StoreError;

/// An answer that is not a success: a status, a stable code and a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: code.to_owned(),
                message: message.into(),
                holder: None,
                token: None,
            },
        }
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message)
    }

    /// 400 `out_of_range`.
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::OUT_OF_RANGE, message)
    }

    /// 404 `not_found` for a path nobody serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no such path {path:?}; see docs/protocol.md for the API"),
        )
    }

    /// 405 `method_not_allowed`.
    pub fn wrong_method(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not served on {path:?}; see docs/protocol.md for the methods of each path"
            ),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::STORE_UNAVAILABLE,
            err.to_string(),
        )
    }
}

impl From<LeaseError> for ApiError {
    fn from(err: LeaseError) -> Self {
        match err {
            LeaseError::Unknown => Self::new(
                StatusCode::NOT_FOUND,
                codes::UNKNOWN_LEASE,
                "no such lease: it was never granted by this elector, or it was already released",
            ),
            LeaseError::Lost(reason) => Self::new(
                StatusCode::GONE,
                codes::LEASE_LOST,
                format!("the lease was lost: {reason}; acquire the lock again"),
            ),
        }
    }
}

impl From<AcquireError> for ApiError {
    fn from(err: AcquireError) -> Self {
        match err {
            AcquireError::Busy(record) => {
                let holder = record.holding.map(|h| h.holder);
                let mut error = Self::new(
                    StatusCode::CONFLICT,
                    codes::LOCK_BUSY,
                    match &holder {
                        Some(h) => {
                            format!("lock {} is held by {h} and the wait ran out", record.name)
                        }
                        None => format!(
                            "lock {} was not free in time and the wait ran out",
                            record.name
                        ),
                    },
                );
                error.body.holder = holder;
                error.body.token = Some(record.token);
                error
            }
            AcquireError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, codes::KIND_CONFLICT, err.to_string())
            }
            AcquireError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::SHUTTING_DOWN,
                "the elector is shutting down; try again with its replacement",
            ),
            AcquireError::Store(err) => err.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
