//! The HTTP edge: one router for the v1 API, the legacy protocol, health and metrics, with every
//! unknown path and wrong method answered in the JSON error shape.

mod access;
mod described;
mod error;
mod extract;
pub mod legacy;
pub mod openapi;
pub mod v1;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use sync_protocol::{MAX_BODY_BYTES, codes};

pub use error::ApiError;
pub use extract::{JsonBody, LeasePath, LockPath};

use crate::manager::Manager;

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    /// The lock manager.
    pub manager: Manager,
    /// The ttl of acquires that name none.
    pub default_ttl: Duration,
    /// The ttl of legacy-protocol locks.
    pub legacy_ttl: Duration,
    /// The bearer token lock requests must carry (`--token-file`), if any.
    pub token: Option<std::sync::Arc<str>>,
    /// How long a request's body may take to arrive (`--client-timeout`).
    pub client_timeout: Duration,
}

/// The full API: v1, legacy, health and metrics.
pub fn router(app: App) -> Router {
    let v1 = Router::new()
        .route("/v1/locks", get(v1::list))
        .route("/v1/locks/{name}", get(v1::lock_state))
        .route("/v1/locks/{name}/acquire", post(v1::acquire))
        .route("/v1/semaphores/{name}/acquire", post(v1::acquire_permit))
        .route("/v1/rwlocks/{name}/acquire", post(v1::acquire_rwlock))
        .route("/v1/locks/{name}/watch", get(v1::watch))
        .route("/v1/leases/{id}", axum::routing::delete(v1::release))
        .route("/v1/leases/{id}/renew", post(v1::renew))
        .route("/v1/leases/{id}/events", get(v1::lease_events))
        .merge(legacy::routes());
    let locks = guarded(v1, &app);
    finish(health_routes().merge(locks), app)
}

/// Only the legacy protocol, for `--legacy-listen`.
pub fn legacy_router(app: App) -> Router {
    finish(guarded(legacy::routes(), &app), app)
}

/// Only health and metrics, for `--health-listen`.
pub fn health_router(app: App) -> Router {
    finish(health_routes(), app)
}

/// Health, metrics and the API description: open to everyone, whatever `--token-file` says.
fn health_routes() -> Router<App> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
}

/// Lock routes behind the bearer-token check (a no-op without `--token-file`).
fn guarded(routes: Router<App>, app: &App) -> Router<App> {
    routes.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        access::require_token,
    ))
}

/// Every listener's edge: JSON errors for unknown paths and methods, and the body limit.
fn finish(routes: Router<App>, app: App) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::wrong_method(method.as_str(), uri.path())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    let answer = ready(&app).await;
    app.manager.metrics().ready.set(i64::from(answer.is_ok()));
    answer
}

async fn ready(app: &App) -> Result<Json<serde_json::Value>, ApiError> {
    if app.manager.is_shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SHUTTING_DOWN,
            "the elector is shutting down",
        ));
    }
    app.manager.store().ready().await?;
    Ok(Json(
        serde_json::json!({ "status": "ready", "store": app.manager.store().kind() }),
    ))
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.manager.metrics().render(),
    )
}
