//! The wire protocol between `sync-client` and `sync-elector`: paths, request and response bodies,
//! event payloads, error codes, and the rule for lock names.
//!
//! This crate is the protocol's one home. `docs/protocol.md` describes the same contract in prose for
//! people writing clients in other languages; a change here is a change there.
//!
//! ```
//! use sync_protocol::{AcquireRequest, LockName};
//!
//! let name = LockName::new("test")?;
//! let body = AcquireRequest { ttl_seconds: Some(10), wait_seconds: Some(0.0), value: None };
//! assert_eq!(name.as_str(), "test");
//! assert_eq!(serde_json::to_string(&body)?, r#"{"ttl_seconds":10,"wait_seconds":0.0}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod name;

pub use name::{InvalidName, LockName, MAX_NAME_LEN, NAME_PATTERN};

use serde::{Deserialize, Serialize};

/// The port the elector listens on, on loopback, unless told otherwise.
pub const DEFAULT_PORT: u16 = 13131;

/// The elector address a client uses when nothing else is configured.
pub const DEFAULT_URL: &str = "http://127.0.0.1:13131";

/// The environment variable a client reads for the elector address.
pub const URL_ENV: &str = "SYNC_ELECTOR_URL";

/// The environment variable naming a file that holds the elector's bearer token, when the elector
/// runs with `--token-file`.
pub const TOKEN_FILE_ENV: &str = "SYNC_ELECTOR_TOKEN_FILE";

/// Reads a bearer-token file the way the elector (`--token-file`) and the client
/// ([`TOKEN_FILE_ENV`]) both do: the file's content, trimmed, which must not be empty. The error
/// says what is wrong with the file, for a message that names it.
///
/// ```
/// use sync_protocol::TokenFileError;
///
/// let file = std::env::temp_dir().join(format!("token-doc-{}", std::process::id()));
/// std::fs::write(&file, "s3cret\n")?;
/// assert_eq!(sync_protocol::read_token_file(&file)?, "s3cret");
/// std::fs::write(&file, " \n")?;
/// let err = sync_protocol::read_token_file(&file).unwrap_err();
/// assert!(matches!(err, TokenFileError::Empty));
/// assert_eq!(err.to_string(), "it is empty");
/// # std::fs::remove_file(&file)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_token_file(path: &std::path::Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(TokenFileError::Unreadable)?;
    match text.trim() {
        "" => Err(TokenFileError::Empty),
        token => Ok(token.to_owned()),
    }
}

/// What is wrong with a bearer-token file.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenFileError {
    /// It could not be read; the source says why.
    Unreadable(std::io::Error),
    /// It holds nothing but white space.
    Empty,
}

impl std::fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(_) => f.write_str("could not read it"),
            Self::Empty => f.write_str("it is empty"),
        }
    }
}

impl std::error::Error for TokenFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable(err) => Some(err),
            Self::Empty => None,
        }
    }
}

/// Longest lock ttl the elector accepts, in seconds (one hour).
pub const MAX_TTL_SECONDS: u64 = 3600;

/// Longest single wait the elector accepts, in seconds (one day). Longer waits are a loop of waits.
pub const MAX_WAIT_SECONDS: f64 = 86_400.0;

/// Longest `value` a holder may attach, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// The most permits a semaphore has, and the most grants (shared holders included) one name
/// has at once (docs/semaphores.md).
pub const MAX_PERMITS: u32 = 128;

/// Largest request body the elector reads, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Body of `POST /v1/locks/{name}/acquire`. Every field is optional; an empty body means
/// "wait forever, default ttl, no value".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireRequest {
    /// The lock's ttl: how long the store keeps the lock for a holder that stopped renewing, and the
    /// window within which the holder must heartbeat. 1 to [`MAX_TTL_SECONDS`]; default: the elector's
    /// `--ttl`.
    /// A whole number; `10.0` counts as `10`, as in JSON Schema.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_seconds"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub ttl_seconds: Option<u64>,
    /// How long to wait for the lock. Absent: wait until acquired. `0`: try once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 86400.0))]
    pub wait_seconds: Option<f64>,
    /// A short value followers read to find the holder, such as its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub value: Option<String>,
}

/// Reads a whole number of seconds written as an integer or as a number with no fraction.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<f64>::deserialize(d)? else {
        return Ok(None);
    };
    if number.fract() != 0.0 || !(0.0..=u64::MAX as f64).contains(&number) {
        return Err(D::Error::custom(format!(
            "ttl_seconds must be a whole number of seconds, not {number}"
        )));
    }
    Ok(Some(number as u64))
}

/// Reads a semaphore's size written as an integer or as a number with no fraction (JSON Schema
/// counts `11.0` an integer); one too large for a `u32` reads as `u32::MAX`, which the elector
/// refuses as out of range.
fn whole_permits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let number = f64::deserialize(d)?;
    if number.fract() != 0.0 || number < 0.0 {
        return Err(D::Error::custom(format!(
            "permits must be a whole number from 1 to {MAX_PERMITS}, not {number}"
        )));
    }
    Ok(if number > f64::from(u32::MAX) {
        u32::MAX
    } else {
        number as u32
    })
}

/// Body of `POST /v1/semaphores/{name}/acquire`: the semaphore's size, and the lock's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SemaphoreAcquireRequest {
    /// How many may hold the semaphore at once, 1 to [`MAX_PERMITS`]. Every claimant gives the
    /// same number while the name is held; another number is refused (`kind_conflict`).
    #[serde(deserialize_with = "whole_permits")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 128))]
    pub permits: u32,
    /// As in [`AcquireRequest`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_seconds"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub ttl_seconds: Option<u64>,
    /// As in [`AcquireRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 86400.0))]
    pub wait_seconds: Option<f64>,
    /// As in [`AcquireRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub value: Option<String>,
}

/// Body of `POST /v1/rwlocks/{name}/acquire`: shared or exclusive, and the lock's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RwLockAcquireRequest {
    /// Shared (with other readers) or exclusive (alone); default: exclusive.
    #[serde(default)]
    pub mode: Mode,
    /// As in [`AcquireRequest`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_seconds"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub ttl_seconds: Option<u64>,
    /// As in [`AcquireRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 86400.0))]
    pub wait_seconds: Option<f64>,
    /// As in [`AcquireRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub value: Option<String>,
}

impl SemaphoreAcquireRequest {
    /// The lock's fields of this request.
    pub fn acquire(&self) -> AcquireRequest {
        AcquireRequest {
            ttl_seconds: self.ttl_seconds,
            wait_seconds: self.wait_seconds,
            value: self.value.clone(),
        }
    }
}

impl RwLockAcquireRequest {
    /// The lock's fields of this request.
    pub fn acquire(&self) -> AcquireRequest {
        AcquireRequest {
            ttl_seconds: self.ttl_seconds,
            wait_seconds: self.wait_seconds,
            value: self.value.clone(),
        }
    }
}

/// A read-write lock's grant: shared with other readers, or exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Mode {
    /// Any number of shared holders at once, and no exclusive one.
    Shared,
    /// One holder, alone.
    #[default]
    Exclusive,
}

/// What a name is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NameKind {
    /// A lock (what older electors describe).
    #[default]
    Lock,
    /// A counting semaphore.
    Semaphore,
    /// A read-write lock.
    Rwlock,
}

/// One live grant of a semaphore or read-write lock, in a [`LockState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HolderState {
    /// The holder.
    pub holder: String,
    /// The value it attached, if any.
    pub value: Option<String>,
    /// Its fencing token.
    pub token: u64,
    /// A semaphore's grant: the permit it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<u32>,
    /// A read-write lock's grant: shared or exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// How long it has left unless renewed, as this elector observes it.
    pub expires_in_ms: u64,
}

/// The answer to a successful acquire: the lease the holder now owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    /// The lock's name.
    pub name: String,
    /// The secret that renews and releases this lease; only the holder knows it.
    pub lease_id: String,
    /// The fencing token: strictly greater than the token of every earlier holder of this lock.
    pub token: u64,
    /// The holder as others see it: the elector's identity and a session.
    pub holder: String,
    /// The lock's ttl in seconds.
    pub ttl_seconds: u64,
    /// How long the lease stays valid from the moment the request was sent, unless renewed.
    pub valid_for_ms: u64,
    /// A semaphore's grant: the permit it holds, 0 to N-1 (fence writes per permit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<u32>,
    /// A read-write lock's grant: shared or exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// The answer to `POST /v1/leases/{lease_id}/renew`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Renewal {
    /// How long the lease stays valid from the moment the renew was sent, unless renewed again.
    pub valid_for_ms: u64,
}

/// What `GET /v1/locks/{name}` and the watch stream say about one lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockState {
    /// The lock's name.
    pub name: String,
    /// Who holds it, or `None` when free.
    pub holder: Option<String>,
    /// The value the holder attached, if any.
    pub value: Option<String>,
    /// The fencing token of the current (or last) holder; 0 when the lock was never held.
    pub token: u64,
    /// How long the current holding has left before it runs out unless renewed, as this elector
    /// observes it; `None` when free.
    pub expires_in_ms: Option<u64>,
    /// How long the current holder has held the lock, by the wall clock of the elector that
    /// granted it; `None` when free, or when the store does not record when a holding began
    /// (etcd). Older electors do not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_for_ms: Option<u64>,
    /// How many acquires wait for the lock at this elector (other electors' waiters are not
    /// counted). Older electors do not send it, which reads as 0.
    #[serde(default)]
    pub waiters: u64,
    /// What the name is. Older electors do not send it: a lock.
    #[serde(default)]
    pub kind: NameKind,
    /// A semaphore's number of permits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
    /// A semaphore's or read-write lock's live grants, oldest first (`holder`, `value` and
    /// `expires_in_ms` above are then `null`); empty for a lock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<HolderState>,
}

/// The answer to `GET /v1/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockList {
    /// Every lock the store knows, sorted by name.
    pub locks: Vec<LockState>,
}

/// Event names on `GET /v1/leases/{lease_id}/events`.
pub mod lease_event {
    /// The first event of `GET /v1/leases/{id}/events`: the lease is held. Data:
    /// [`super::Renewal`].
    pub const HELD: &str = "held";
    /// The first event of an acquire answered as a stream (`Accept: text/event-stream`): the
    /// lock is held. Data: [`super::Grant`].
    pub const GRANTED: &str = "granted";
    /// The lease is lost; the stream ends. Data: [`super::LostEvent`].
    pub const LOST: &str = "lost";
    /// The holder released the lease; the stream ends. No data.
    pub const RELEASED: &str = "released";
}

/// Event name on `GET /v1/locks/{name}/watch`: data is a [`LockState`].
pub const WATCH_EVENT: &str = "state";

/// Data of the `lost` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LostEvent {
    /// Why the lease was lost, for people: the store could not be renewed, the holder stopped
    /// heartbeating, the elector is shutting down, or another holder took the lock.
    pub reason: String,
}

/// The body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code; see [`codes`].
    pub error: String,
    /// What went wrong and what to fix, for people.
    pub message: String,
    /// For `lock_busy`: who holds the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// For `lock_busy`: the current holder's fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

/// The error codes of [`ErrorBody::error`], with the HTTP status each comes with.
pub mod codes {
    /// 400: the lock name breaks the naming rule.
    pub const INVALID_NAME: &str = "invalid_name";
    /// 400: the body is not JSON of the expected shape.
    pub const INVALID_BODY: &str = "invalid_body";
    /// 400: a number or string is out of its range.
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// 408: the body did not arrive within the elector's client timeout.
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    /// 413: the body is larger than the elector reads.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// 404: no such lease (never existed, or released).
    pub const UNKNOWN_LEASE: &str = "unknown_lease";
    /// 410: the lease was lost.
    pub const LEASE_LOST: &str = "lease_lost";
    /// 409: another holder has the lock and the wait ran out.
    pub const LOCK_BUSY: &str = "lock_busy";
    /// 409: the name is held as another kind (a lock, a semaphore of another size, a read-write
    /// lock) than the request asks for.
    pub const KIND_CONFLICT: &str = "kind_conflict";
    /// 404: no such path.
    pub const NOT_FOUND: &str = "not_found";
    /// 405: the path exists, the method does not.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 503: the elector is shutting down.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// 503: the store did not answer.
    pub const STORE_UNAVAILABLE: &str = "store_unavailable";
    /// 401: a bearer token is required and was missing or wrong.
    pub const UNAUTHORIZED: &str = "unauthorized";
}

/// The paths of the v1 API.
pub mod paths {
    /// `POST`: wait for and take the lock.
    pub fn acquire(name: &str) -> String {
        format!("/v1/locks/{name}/acquire")
    }
    /// `POST`: wait for and take a permit of the semaphore `name`.
    pub fn acquire_permit(name: &str) -> String {
        format!("/v1/semaphores/{name}/acquire")
    }
    /// `POST`: wait for and take the read-write lock `name`, shared or exclusive.
    pub fn acquire_rwlock(name: &str) -> String {
        format!("/v1/rwlocks/{name}/acquire")
    }
    /// `GET`: the lock's state.
    pub fn lock(name: &str) -> String {
        format!("/v1/locks/{name}")
    }
    /// `GET`: server-sent events on every change of holder.
    pub fn watch(name: &str) -> String {
        format!("/v1/locks/{name}/watch")
    }
    /// `GET`: every lock.
    pub const LOCKS: &str = "/v1/locks";
    /// `POST`: heartbeat a lease.
    pub fn renew(lease_id: &str) -> String {
        format!("/v1/leases/{lease_id}/renew")
    }
    /// `DELETE`: release a lease.
    pub fn lease(lease_id: &str) -> String {
        format!("/v1/leases/{lease_id}")
    }
    /// `GET`: server-sent events about a lease; closing it releases the lease.
    pub fn lease_events(lease_id: &str) -> String {
        format!("/v1/leases/{lease_id}/events")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_acquire_body_is_all_defaults() {
        let body: AcquireRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(body, AcquireRequest::default());
    }

    #[test]
    fn ttl_takes_whole_numbers_written_either_way() {
        let body: AcquireRequest = serde_json::from_str(r#"{"ttl_seconds": 10.0}"#).unwrap();
        assert_eq!(body.ttl_seconds, Some(10));
        let body: AcquireRequest = serde_json::from_str(r#"{"ttl_seconds": 7}"#).unwrap();
        assert_eq!(body.ttl_seconds, Some(7));
        for bad in [
            r#"{"ttl_seconds": 1.5}"#,
            r#"{"ttl_seconds": -1}"#,
            r#"{"ttl_seconds": "5"}"#,
        ] {
            assert!(
                serde_json::from_str::<AcquireRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn permits_take_whole_numbers_written_either_way() {
        let read = |body: &str| serde_json::from_str::<SemaphoreAcquireRequest>(body);
        assert_eq!(read(r#"{"permits": 3}"#).unwrap().permits, 3);
        assert_eq!(read(r#"{"permits": 11.0}"#).unwrap().permits, 11);
        assert_eq!(read(r#"{"permits": 1e12}"#).unwrap().permits, u32::MAX);
        for refused in [r#"{"permits": 2.5}"#, r#"{"permits": -1}"#, "{}"] {
            assert!(read(refused).is_err(), "{refused}");
        }
        let rw: RwLockAcquireRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(rw.mode, Mode::Exclusive, "exclusive unless asked");
    }

    #[test]
    fn unknown_acquire_fields_are_refused() {
        let err = serde_json::from_str::<AcquireRequest>(r#"{"ttl": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `ttl`"), "{err}");
    }

    #[test]
    fn error_body_omits_absent_holder() {
        let body = ErrorBody {
            error: codes::NOT_FOUND.into(),
            message: "no such path".into(),
            holder: None,
            token: None,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"not_found","message":"no such path"}"#
        );
    }
}
