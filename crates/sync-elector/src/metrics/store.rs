//! The store's series: every request to the store's server by `store`, `resource`, `verb` and
//! `result`, how long each took, and whether the store refuses this elector's identity.
//!
//! They are the process's, like the `process_*` series: the few functions every store request
//! goes through (`kube_api::send`, the etcd client's calls) count them, without each store
//! carrying a handle. Two electors in one process (tests, an embedded elector beside another)
//! count together.

use std::sync::LazyLock;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What a request's `result` label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// A compare-and-set lost: someone else wrote first (HTTP `409`; an etcd transaction whose
    /// comparison failed still answered, so it is `Ok`).
    Conflict,
    /// The object is not there (`404`).
    NotFound,
    /// The identity may not do it (`403`, etcd's `PermissionDenied`).
    Forbidden,
    /// The server answered with another error.
    Error,
    /// The server could not be reached, or its answer could not be read.
    Unreachable,
    /// No answer in time.
    Timeout,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Error => "error",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    store: &'static str,
    resource: &'static str,
    verb: &'static str,
    result: &'static str,
}

type Latency = Family<RequestLabels, Histogram, fn() -> Histogram>;

struct Series {
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    denied: Gauge<i64, AtomicI64>,
}

static SERIES: LazyLock<Series> = LazyLock::new(|| Series {
    requests: Family::default(),
    // 500 us to about 16 s, doubling.
    latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
    denied: Gauge::default(),
});

/// Counts one request, `verb` on `resource`, to `store`, that ended as `outcome` after `took`.
pub fn observe(
    store: &'static str,
    resource: &'static str,
    verb: &'static str,
    outcome: Outcome,
    took: Duration,
) {
    let labels = RequestLabels {
        store,
        resource,
        verb,
        result: outcome.label(),
    };
    SERIES.requests.get_or_create(&labels).inc();
    SERIES
        .latency
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
}

/// Whether the store now refuses a permission the locks need (what `/readyz` reports).
pub fn permission_denied(denied: bool) {
    SERIES.denied.set(i64::from(denied));
}

/// Registers the series in `registry`.
pub(super) fn register(registry: &mut Registry) {
    registry.register(
        "store_requests",
        "Requests to the store's server, by store, resource, verb and result",
        SERIES.requests.clone(),
    );
    registry.register(
        "store_request_seconds",
        "How long requests to the store's server took, by store, resource, verb and result",
        SERIES.latency.clone(),
    );
    registry.register(
        "store_permission_denied",
        "1 while the store refuses a permission the locks need (see /readyz), else 0",
        SERIES.denied.clone(),
    );
}
