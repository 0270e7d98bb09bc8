//! The one error type of the client library: each variant is something the caller can act on.

use std::time::Duration;

pub use sync_protocol::InvalidName;

/// What can go wrong with a lock or an election.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing answered at the elector's address.
    #[error(
        "could not reach the sync-elector at {url} ({reason}); start the sync-elector sidecar \
         (in a pod: the elector container; on one machine: `cargo run -p sync-elector`), or point \
         SYNC_ELECTOR_URL at it"
    )]
    Unreachable {
        /// The address tried.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The elector address is not a usable `http://` URL.
    #[error("invalid elector URL {url:?}: {reason}")]
    InvalidUrl {
        /// The address given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bearer token for the elector could not be used.
    #[error("the elector's bearer token from {from} is unusable: {reason}")]
    Token {
        /// Where the token came from: a file, or `ClientBuilder::token`.
        from: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The lock name breaks the naming rule.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A semaphore's size outside 1 to 128 ([`sync_protocol::MAX_PERMITS`]).
    #[error(
        "a semaphore has 1 to {} permits, not {permits}",
        sync_protocol::MAX_PERMITS
    )]
    InvalidPermits {
        /// The size asked for.
        permits: u32,
    },
    /// The lock did not become free within the wait.
    #[error("timed out after {waited:?} waiting for lock {name}{}", holder_suffix(.holder))]
    Timeout {
        /// The lock.
        name: String,
        /// How long the caller waited.
        waited: Duration,
        /// Who held it when the wait ran out, if known.
        holder: Option<String>,
    },
    /// The name is in use as another kind (a lock, a semaphore, a read-write lock) or as a
    /// semaphore of another size. Every user of a name must ask for the same thing.
    #[error("{reason}")]
    Conflict {
        /// The elector's explanation, naming both kinds.
        reason: String,
    },
    /// The lock was lost.
    #[error("lock {name} was lost: {reason}")]
    Lost {
        /// The lock.
        name: String,
        /// Why, for people.
        reason: String,
    },
    /// A blocking lock was released (or asked for its token) while not held.
    #[error("lock {name} is not held")]
    NotHeld {
        /// The lock.
        name: String,
    },
    /// A blocking lock was waited on while already held; locks are not re-entrant.
    #[error("lock {name} is already held by this handle; locks are not re-entrant")]
    AlreadyHeld {
        /// The lock.
        name: String,
    },
    /// The elector refused the request.
    #[error("the elector refused the request ({status} {code}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The protocol's error code.
        code: String,
        /// The elector's explanation.
        message: String,
    },
    /// The elector answered something this client does not understand.
    #[error("unexpected answer from the sync-elector: {0}")]
    Protocol(String),
}

fn holder_suffix(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map(|h| format!(" (held by {h})"))
        .unwrap_or_default()
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
