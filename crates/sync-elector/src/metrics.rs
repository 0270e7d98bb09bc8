//! Prometheus metrics: what an operator watches on `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The elector's metrics. Cheap to clone: clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Leases held through this elector now.
    pub held: Gauge,
    /// Requests waiting for a lock now.
    pub waiters: Gauge,
    /// Leases granted since start.
    pub acquisitions: Counter,
    /// Leases lost (not released by their holder) since start.
    pub losses: Counter,
    /// Seconds from a lock's lease ending here to a waiter here holding it.
    pub handover: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh series in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sync_elector");
        let held = Gauge::default();
        let waiters = Gauge::default();
        let acquisitions = Counter::default();
        let losses = Counter::default();
        // 100 us to about 26 s, doubling.
        let handover = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 2.0, 19,
        ));
        registry.register(
            "locks_held",
            "Leases held through this elector",
            held.clone(),
        );
        registry.register("waiters", "Requests waiting for a lock", waiters.clone());
        registry.register("acquisitions", "Leases granted", acquisitions.clone());
        registry.register("losses", "Leases lost rather than released", losses.clone());
        registry.register(
            "handover_seconds",
            "Time from a lease ending here to the next waiter here holding the lock",
            handover.clone(),
        );
        Self {
            registry: Arc::new(registry),
            held,
            waiters,
            acquisitions,
            losses,
            handover,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
