//! The v1 API handlers: acquire (a lock, a semaphore's permit, a read-write lock), renew, release,
//! lease events, state, list and watch.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
#[allow(unused_imports)] // ErrorBody is named only in the OpenAPI annotations
use sync_protocol::ErrorBody;
use sync_protocol::{
    AcquireRequest, Grant, HolderState, LockList, LockName, LockState, LostEvent, MAX_PERMITS,
    MAX_TTL_SECONDS, MAX_VALUE_BYTES, MAX_WAIT_SECONDS, Mode, NameKind, Renewal,
    RwLockAcquireRequest, SemaphoreAcquireRequest, WATCH_EVENT, lease_event,
};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::warn;

use super::App;
use super::error::ApiError;
use super::extract::{JsonBody, LeasePath, LockPath};
use crate::manager::{AcquireOptions, Ending, Lease, Manager};
use crate::store::{Asks, Held, Kind, Record};

/// How often an idle event stream carries a comment. Writing is also how a closed connection is
/// noticed, so this bounds how long a dead holder's lease outlives it (well under 1 s).
const EVENTS_KEEPALIVE: Duration = Duration::from_millis(250);

/// The same over HTTP/2, where a client that dies closes the connection that carries all its
/// streams, which ends them at once; the comments only keep intermediaries from timing out.
const EVENTS_KEEPALIVE_HTTP2: Duration = Duration::from_secs(15);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl App {
    fn acquire_options(&self, req: AcquireRequest) -> Result<AcquireOptions, ApiError> {
        let ttl = match req.ttl_seconds {
            None => self.default_ttl,
            Some(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                return Err(ApiError::out_of_range(format!(
                    "ttl_seconds is {s}; it must be 1 to {MAX_TTL_SECONDS}"
                )));
            }
        };
        let wait = match req.wait_seconds {
            None => None,
            Some(w) if (0.0..=MAX_WAIT_SECONDS).contains(&w) => Some(Duration::from_secs_f64(w)),
            Some(w) => {
                return Err(ApiError::out_of_range(format!(
                    "wait_seconds is {w}; it must be 0 to {MAX_WAIT_SECONDS}, or absent to wait until acquired"
                )));
            }
        };
        if let Some(value) = &req.value
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(ApiError::out_of_range(format!(
                "value is {} bytes; it must be at most {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        Ok(AcquireOptions {
            ttl,
            wait,
            value: req.value,
            asks: None,
        })
    }
}

/// A read-write lock's grant as the protocol says it.
fn mode_of(held: Held) -> Option<Mode> {
    match held {
        Held::Shared => Some(Mode::Shared),
        Held::Exclusive => Some(Mode::Exclusive),
        Held::Permit(_) | Held::Waiting => None,
    }
}

/// The wire form of a store record, with the count of acquires waiting here.
pub fn state_of(name: &LockName, record: Option<Record>, waiters: u64) -> LockState {
    let now = Instant::now();
    let (holding, token, kind, grants) = match record {
        Some(r) => (r.holding, r.token, r.kind, r.grants),
        None => (None, 0, Kind::Lock, Vec::new()),
    };
    let (kind, permits) = match kind {
        Kind::Lock => (NameKind::Lock, None),
        Kind::Semaphore { permits } => (NameKind::Semaphore, Some(permits)),
        Kind::ReadWrite => (NameKind::Rwlock, None),
    };
    let holders = grants
        .into_iter()
        .map(|g| HolderState {
            holder: g.holding.holder,
            value: g.holding.value,
            token: g.token,
            permit: match g.held {
                Held::Permit(permit) => Some(permit),
                _ => None,
            },
            mode: mode_of(g.held),
            expires_in_ms: millis(g.holding.expires_at.saturating_duration_since(now)),
        })
        .collect();
    LockState {
        name: name.to_string(),
        holder: holding.as_ref().map(|h| h.holder.clone()),
        value: holding.as_ref().and_then(|h| h.value.clone()),
        token,
        held_for_ms: holding.as_ref().and_then(|h| h.since).map(|since| {
            // A grant stamped a moment ahead by another elector's clock reads as just now.
            millis(SystemTime::now().duration_since(since).unwrap_or_default())
        }),
        expires_in_ms: holding.map(|h| millis(h.expires_at.saturating_duration_since(now))),
        waiters,
        kind,
        permits,
        holders,
    }
}

/// Whether the client asked for the acquire's answer as the lease's event stream.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Waits for the lock and takes it.
///
/// Answers once the lock is held, or with 409 when `wait_seconds` ran out first. Closing the
/// request leaves the queue. With `Accept: text/event-stream` the answer is the lease's event
/// stream, whose first event, `granted`, carries the Grant (one round trip instead of two);
/// otherwise the Grant as JSON, and the holder then opens the event stream or heartbeats.
#[utoipa::path(
    post,
    path = "/v1/locks/{name}/acquire",
    tag = "locks",
    params(super::described::NamePath),
    request_body(content = Option<AcquireRequest>, content_type = "application/json", description = "Every field is optional; an empty body waits until acquired, with the elector's default ttl"),
    responses(
        (status = 200, description = "The lock is held: the lease as JSON, or with `Accept: text/event-stream` the lease's event stream, whose first event `granted` carries the Grant", content(
            (Grant = "application/json"),
            (super::described::ServerSentEvent = "text/event-stream"),
        ), links(
            ("renew" = (operation_id = "renew", parameters(("id" = "$response.body#/lease_id")))),
            ("release" = (operation_id = "release", parameters(("id" = "$response.body#/lease_id")))),
            ("events" = (operation_id = "lease_events", parameters(("id" = "$response.body#/lease_id")))),
        )),
        (status = 400, description = "A bad name, a body that is not an AcquireRequest, or a field out of range", body = ErrorBody),
        (status = 401, response = super::described::Unauthorized),
        (status = 409, description = "The wait ran out (`lock_busy`: the body names the holder and its token), or the name is a semaphore or read-write lock (`kind_conflict`)", body = ErrorBody),
        (status = 413, response = super::described::TooLarge),
        (status = 503, response = super::described::Unavailable),
    )
)]
pub async fn acquire(
    State(app): State<App>,
    version: axum::http::Version,
    headers: HeaderMap,
    LockPath(name): LockPath,
    JsonBody(req): JsonBody<AcquireRequest>,
) -> Result<Response, ApiError> {
    let options = app.acquire_options(req)?;
    grant(app, version, &headers, name, options).await
}

/// Waits for a permit of a semaphore and takes it.
///
/// As a lock's acquire, for a semaphore of `permits`: at most that many hold it at once. The
/// Grant names the permit; a protected resource fences writes per permit (docs/semaphores.md).
#[utoipa::path(
    post,
    path = "/v1/semaphores/{name}/acquire",
    tag = "semaphores",
    params(super::described::NamePath),
    request_body(content = SemaphoreAcquireRequest, content_type = "application/json", description = "The semaphore's size, and the lock's optional fields"),
    responses(
        (status = 200, description = "A permit is held: the lease as JSON, or with `Accept: text/event-stream` the lease's event stream, whose first event `granted` carries the Grant", content(
            (Grant = "application/json"),
            (super::described::ServerSentEvent = "text/event-stream"),
        ), links(
            ("renew" = (operation_id = "renew", parameters(("id" = "$response.body#/lease_id")))),
            ("release" = (operation_id = "release", parameters(("id" = "$response.body#/lease_id")))),
            ("events" = (operation_id = "lease_events", parameters(("id" = "$response.body#/lease_id")))),
        )),
        (status = 400, description = "A bad name, a body that is not a SemaphoreAcquireRequest, or a field out of range", body = ErrorBody),
        (status = 401, response = super::described::Unauthorized),
        (status = 409, description = "The wait ran out (`lock_busy`), or the name is held as another kind or as a semaphore of another size (`kind_conflict`)", body = ErrorBody),
        (status = 413, response = super::described::TooLarge),
        (status = 503, response = super::described::Unavailable),
    )
)]
pub async fn acquire_permit(
    State(app): State<App>,
    version: axum::http::Version,
    headers: HeaderMap,
    LockPath(name): LockPath,
    JsonBody(req): JsonBody<SemaphoreAcquireRequest>,
) -> Result<Response, ApiError> {
    let permits = req.permits;
    if !(1..=MAX_PERMITS).contains(&permits) {
        return Err(ApiError::out_of_range(format!(
            "permits is {permits}; give the semaphore's size, 1 to {MAX_PERMITS}"
        )));
    }
    let options = AcquireOptions {
        asks: Some(Asks::Permit { permits }),
        ..app.acquire_options(req.acquire())?
    };
    grant(app, version, &headers, name, options).await
}

/// Waits for a read-write lock, shared or exclusive, and takes it.
///
/// As a lock's acquire: any number of shared holders at once, or one exclusive holder. A waiting
/// exclusive request stops new shared grants, so writers are not starved.
#[utoipa::path(
    post,
    path = "/v1/rwlocks/{name}/acquire",
    tag = "rwlocks",
    params(super::described::NamePath),
    request_body(content = Option<RwLockAcquireRequest>, content_type = "application/json", description = "Every field is optional; an empty body waits for the exclusive grant, with the elector's default ttl"),
    responses(
        (status = 200, description = "The grant is held: the lease as JSON, or with `Accept: text/event-stream` the lease's event stream, whose first event `granted` carries the Grant", content(
            (Grant = "application/json"),
            (super::described::ServerSentEvent = "text/event-stream"),
        ), links(
            ("renew" = (operation_id = "renew", parameters(("id" = "$response.body#/lease_id")))),
            ("release" = (operation_id = "release", parameters(("id" = "$response.body#/lease_id")))),
            ("events" = (operation_id = "lease_events", parameters(("id" = "$response.body#/lease_id")))),
        )),
        (status = 400, description = "A bad name, a body that is not an RwLockAcquireRequest, or a field out of range", body = ErrorBody),
        (status = 401, response = super::described::Unauthorized),
        (status = 409, description = "The wait ran out (`lock_busy`), or the name is held as another kind (`kind_conflict`)", body = ErrorBody),
        (status = 413, response = super::described::TooLarge),
        (status = 503, response = super::described::Unavailable),
    )
)]
pub async fn acquire_rwlock(
    State(app): State<App>,
    version: axum::http::Version,
    headers: HeaderMap,
    LockPath(name): LockPath,
    JsonBody(req): JsonBody<RwLockAcquireRequest>,
) -> Result<Response, ApiError> {
    let asks = match req.mode {
        Mode::Shared => Asks::Shared,
        Mode::Exclusive => Asks::Exclusive,
    };
    let options = AcquireOptions {
        asks: Some(asks),
        ..app.acquire_options(req.acquire())?
    };
    grant(app, version, &headers, name, options).await
}

/// Takes `name` as `options` ask, and answers with the Grant as JSON, or as the first event of
/// the lease's stream when the client asked for one.
async fn grant(
    app: App,
    version: axum::http::Version,
    headers: &HeaderMap,
    name: LockName,
    options: AcquireOptions,
) -> Result<Response, ApiError> {
    let lease = app.manager.acquire(name, options).await?;
    let grant = Grant {
        name: lease.name.to_string(),
        lease_id: lease.id.to_string(),
        token: lease.token,
        holder: lease.holder.clone(),
        ttl_seconds: lease.ttl.as_secs(),
        valid_for_ms: millis(lease.valid_for()),
        permit: match lease.held {
            Some(Held::Permit(permit)) => Some(permit),
            _ => None,
        },
        mode: lease.held.and_then(mode_of),
    };
    if !wants_stream(headers) {
        return Ok(Json(grant).into_response());
    }
    let granted = Event::default()
        .event(lease_event::GRANTED)
        .json_data(grant)
        .expect("a Grant serializes");
    Ok(lease_stream(&app, &lease, granted, version).into_response())
}

/// Heartbeats a lease.
#[utoipa::path(
    post,
    path = "/v1/leases/{id}/renew",
    tag = "leases",
    params(super::described::LeaseIdPath),
    responses(
        (status = 200, description = "Renewed: how long the lease stays valid", body = Renewal),
        (status = 400, response = super::described::BadLeaseId),
        (status = 401, response = super::described::Unauthorized),
        (status = 404, response = super::described::UnknownLease),
        (status = 410, response = super::described::LeaseLost),
        (status = 413, response = super::described::TooLarge),
    )
)]
pub async fn renew(
    State(app): State<App>,
    LeasePath(id): LeasePath,
) -> Result<Json<Renewal>, ApiError> {
    let valid_for = app.manager.heartbeat(id)?;
    Ok(Json(Renewal {
        valid_for_ms: millis(valid_for),
    }))
}

/// Releases a lease: the next waiter takes the lock at once.
#[utoipa::path(
    delete,
    path = "/v1/leases/{id}",
    tag = "leases",
    params(super::described::LeaseIdPath),
    responses(
        (status = 204, description = "Released"),
        (status = 400, response = super::described::BadLeaseId),
        (status = 401, response = super::described::Unauthorized),
        (status = 404, response = super::described::UnknownLease),
        (status = 410, response = super::described::LeaseLost),
        (status = 503, response = super::described::Unavailable),
    )
)]
pub async fn release(
    State(app): State<App>,
    LeasePath(id): LeasePath,
) -> Result<StatusCode, ApiError> {
    app.manager.release(id, "released by its holder").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Releases a lease when its event stream is dropped before the lease ended: the holder's
/// connection closed, so the holder is gone.
struct ReleaseOnClose {
    manager: Manager,
    lease: Arc<Lease>,
}

impl Drop for ReleaseOnClose {
    fn drop(&mut self) {
        let (manager, id) = (self.manager.clone(), self.lease.id);
        if manager.lease(id).is_err() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = manager
                    .release(id, "the holder's event stream closed")
                    .await;
            });
        }
    }
}

/// The lease's events, as server-sent events: `held` first, then `lost` or `released`, after
/// which the stream ends. Closing it while the lease is held releases the lease.
#[utoipa::path(
    get,
    path = "/v1/leases/{id}/events",
    tag = "leases",
    params(super::described::LeaseIdPath),
    responses(
        (status = 200, description = "The event stream (text/event-stream); `held` carries a Renewal, `lost` a LostEvent", content_type = "text/event-stream", body = super::described::ServerSentEvent),
        (status = 400, response = super::described::BadLeaseId),
        (status = 401, response = super::described::Unauthorized),
        (status = 404, response = super::described::UnknownLease),
        (status = 410, response = super::described::LeaseLost),
    )
)]
pub async fn lease_events(
    State(app): State<App>,
    version: axum::http::Version,
    LeasePath(id): LeasePath,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let lease = app.manager.lease(id)?;
    let held = Event::default()
        .event(lease_event::HELD)
        .json_data(Renewal {
            valid_for_ms: millis(lease.valid_for()),
        })
        .expect("a Renewal serializes");
    Ok(lease_stream(&app, &lease, held, version))
}

/// A lease's event stream: `first`, then `lost` or `released`, after which it ends. Closing it
/// while the lease is held releases the lease.
fn lease_stream(
    app: &App,
    lease: &Arc<Lease>,
    first: Event,
    version: axum::http::Version,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let guard = ReleaseOnClose {
        manager: app.manager.clone(),
        lease: lease.clone(),
    };
    let stream = futures_util::stream::unfold(Some((Some(first), guard)), |state| async move {
        let (first, guard) = state?;
        if let Some(event) = first {
            return Some((Ok(event), Some((None, guard))));
        }
        let event = match guard.lease.ended().await {
            Ending::Released => Event::default().event(lease_event::RELEASED).data(""),
            Ending::Lost(_, reason) => Event::default()
                .event(lease_event::LOST)
                .json_data(LostEvent { reason })
                .expect("a LostEvent serializes"),
        };
        drop(guard);
        Some((Ok(event), None))
    });
    let keepalive = if version == axum::http::Version::HTTP_2 {
        EVENTS_KEEPALIVE_HTTP2
    } else {
        EVENTS_KEEPALIVE
    };
    Sse::new(stream).keep_alive(KeepAlive::new().interval(keepalive))
}

/// The lock's state as this elector observes it.
#[utoipa::path(
    get,
    path = "/v1/locks/{name}",
    tag = "locks",
    params(super::described::NamePath),
    responses(
        (status = 200, description = "The lock's state (a lock never held is free with token 0)", body = LockState),
        (status = 400, response = super::described::BadName),
        (status = 401, response = super::described::Unauthorized),
        (status = 503, response = super::described::Unavailable),
    )
)]
pub async fn lock_state(
    State(app): State<App>,
    LockPath(name): LockPath,
) -> Result<Json<LockState>, ApiError> {
    let record = app.manager.store().get(&name).await?;
    let waiters = app.manager.waiting(&name);
    Ok(Json(state_of(&name, record, waiters)))
}

/// Every lock the store knows, sorted by name.
#[utoipa::path(
    get,
    path = "/v1/locks",
    tag = "locks",
    responses(
        (status = 200, description = "Every lock", body = LockList),
        (status = 401, response = super::described::Unauthorized),
        (status = 503, response = super::described::Unavailable),
    )
)]
pub async fn list(State(app): State<App>) -> Result<Json<LockList>, ApiError> {
    let records = app.manager.store().list().await?;
    let locks = records
        .into_iter()
        .map(|r| {
            let name = r.name.clone();
            let waiters = app.manager.waiting(&name);
            state_of(&name, Some(r), waiters)
        })
        .collect();
    Ok(Json(LockList { locks }))
}

/// The lock's state now, then after every change of holder, token or value, as server-sent
/// `state` events carrying a LockState. The stream ends when the elector shuts down.
#[utoipa::path(
    get,
    path = "/v1/locks/{name}/watch",
    tag = "locks",
    params(super::described::NamePath),
    responses(
        (status = 200, description = "The event stream (text/event-stream) of `state` events", content_type = "text/event-stream", body = super::described::ServerSentEvent),
        (status = 400, response = super::described::BadName),
        (status = 401, response = super::described::Unauthorized),
    )
)]
pub async fn watch(
    State(app): State<App>,
    LockPath(name): LockPath,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = app.manager.store().observe(&name);
    let shutdown = app.manager.shutdown_token();
    let start = (
        app,
        name,
        changes,
        None::<(Option<String>, u64, Option<String>)>,
    );
    let stream = futures_util::stream::unfold(start, move |(app, name, mut changes, last)| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                if shutdown.is_cancelled() {
                    return None;
                }
                let record = match app.manager.store().get(&name).await {
                    Ok(record) => record,
                    Err(err) => {
                        warn!(lock = %name, error = %err, "watch could not read the lock; retrying");
                        sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let expires_at = record
                    .as_ref()
                    .and_then(|r| r.holding.as_ref())
                    .map(|h| h.expires_at);
                let state = state_of(&name, record, app.manager.waiting(&name));
                let key = (state.holder.clone(), state.token, state.value.clone());
                if last.as_ref() != Some(&key) {
                    let event = Event::default()
                        .event(WATCH_EVENT)
                        .json_data(&state)
                        .expect("a LockState serializes");
                    return Some((Ok(event), (app, name, changes, Some(key))));
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return None },
                    () = async { match expires_at { Some(at) => sleep_until(at).await, None => std::future::pending().await } } => {}
                    () = shutdown.cancelled() => return None,
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
