//! Prometheus metrics: what an operator watches on `/metrics`. The elector's series carry the
//! `sync_elector_` prefix: totals here, each lock's in [`locks`], the store's requests in
//! [`store`]. The process's own (module `process`) carry the names every client uses.

pub mod locks;
mod process;
pub mod store;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The elector's metrics. Cheap to clone: clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// The process's series, without the prefix.
    process: Arc<Registry>,
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
    /// Each lock's series.
    pub locks: Arc<locks::Locks>,
    /// The last `/readyz` answer: 1 ready, 0 not (or not asked yet).
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh series in a fresh registry, with [`locks::DEFAULT_LIMIT`] locks labelled.
    pub fn new() -> Self {
        Self::with_lock_limit(locks::DEFAULT_LIMIT)
    }

    /// Fresh series in a fresh registry, giving at most `lock_limit` locks a `lock` label of
    /// their own.
    pub fn with_lock_limit(lock_limit: usize) -> Self {
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
            "build",
            "The elector's version, the stores it was built with, and the protocols it speaks",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("stores", crate::config::STORES.join(",")),
                ("protocols", "v1,legacy".to_owned()),
            ]),
        );
        let locks = Arc::new(locks::Locks::new(&mut registry, lock_limit));
        let ready = Gauge::default();
        registry.register(
            "ready",
            "The last /readyz answer: 1 ready, 0 not ready (or not asked yet)",
            ready.clone(),
        );
        store::register(&mut registry);
        let mut process = Registry::default();
        process.register_collector(Box::new(process::Process::new()));
        registry.register(
            "handover_seconds",
            "Time from a lease ending here to the next waiter here holding the lock",
            handover.clone(),
        );
        Self {
            registry: Arc::new(registry),
            process: Arc::new(process),
            held,
            waiters,
            acquisitions,
            losses,
            handover,
            locks,
            ready,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_and_the_process_are_described() {
        let text = Metrics::new().render();
        let build = text
            .lines()
            .find(|l| l.starts_with("sync_elector_build_info{"))
            .unwrap_or_else(|| panic!("no build info:\n{text}"));
        assert!(
            build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && build.contains("stores=\"memory")
                && build.contains("protocols=\"v1,legacy\"")
                && build.ends_with(" 1"),
            "{build}"
        );
        for series in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "sync_elector_locks_held ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(series)),
                "{series}missing:\n{text}"
            );
        }
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
