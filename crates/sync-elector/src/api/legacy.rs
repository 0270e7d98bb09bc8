//! The original Metaparticle elector protocol, so the old .NET, Java, JavaScript, Python, Go and
//! Rust bindings keep working unchanged.
//!
//! - `GET /locks/{name}`: 200 with the lock when someone holds it, 404 when nobody does.
//! - `PUT /locks/{name}`: acquires or renews the lock for *this elector's identity* (200), or 409
//!   when another holder has it. No waiting: the old clients retry every 10 s.
//! - There is no release: a lock nobody renews runs out after the legacy ttl (30 s).
//!
//! The old clients only read status codes; the 200 body keeps the original's shape
//! (`metadata.name`, `spec.owner`, `spec.expiry`) for anyone who printed it.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use sync_protocol::{LockName, codes};
use tokio::time::Instant;

use super::{ApiError, App, LockPath};

/// The legacy routes, to be given a state and fallbacks by the caller.
pub fn routes() -> Router<App> {
    Router::new().route("/locks/{name}", get(get_lock).put(put_lock))
}

fn lock_body(name: &LockName, owner: &str, expires_in: std::time::Duration) -> Value {
    let expiry = Utc::now() + chrono::Duration::from_std(expires_in).unwrap_or_default();
    json!({
        "metadata": { "name": name.as_str() },
        "spec": { "owner": owner, "expiry": expiry.to_rfc3339_opts(SecondsFormat::Millis, true) },
    })
}

async fn get_lock(
    State(app): State<App>,
    LockPath(name): LockPath,
) -> Result<Json<Value>, ApiError> {
    let record = app.manager.store().get(&name).await?;
    match record.and_then(|r| r.holding) {
        Some(h) => Ok(Json(lock_body(
            &name,
            &h.holder,
            h.expires_at.saturating_duration_since(Instant::now()),
        ))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("lock {name} is not held"),
        )),
    }
}

async fn put_lock(
    State(app): State<App>,
    LockPath(name): LockPath,
) -> Result<Json<Value>, ApiError> {
    let lease = app.manager.legacy_put(name.clone(), app.legacy_ttl).await?;
    Ok(Json(lock_body(&name, &lease.holder, lease.ttl)))
}
