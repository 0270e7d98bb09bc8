//! Per-lock series, labelled `lock`: who holds it here, who waits for it here, how its leases
//! began and ended, its last hand-over, and until when its holding is valid.
//!
//! Labels are bounded: the first `--metrics-lock-limit` names seen get a label of their own, and
//! every later name shares `lock="_other"`, whose series sum (or, for the gauges that are times,
//! keep the last value of) those locks. A name keeps its label for the elector's life, so a counter
//! never restarts while the elector runs.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sync_protocol::LockName;

/// The label shared by every lock beyond the limit.
pub const OTHER: &str = "_other";

/// How many locks get a label of their own unless `--metrics-lock-limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 1000;

/// Why a lease was lost, as the `lock_endings` series count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The holder sent no heartbeat for its ttl.
    Expired,
    /// The store could not be renewed before the renew deadline.
    StoreError,
    /// Another holder has the lock in the store.
    Taken,
    /// The elector is shutting down.
    Shutdown,
}

impl Cause {
    /// The causes whose counters exist from a lock's first series on. (`released` and
    /// `shutdown` appear when they first happen.)
    pub const COUNTED_FROM_ZERO: [Cause; 3] = [Self::Expired, Self::StoreError, Self::Taken];

    /// The `cause` label of the `lock_endings` series.
    pub fn label(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::StoreError => "store_error",
            Self::Taken => "taken",
            Self::Shutdown => "shutdown",
        }
    }
}

/// A gauge of seconds.
type Seconds = Gauge<f64, AtomicU64>;

/// A lock's label. Its text is shared by all of the lock's series (ten of them), rather than
/// copied into each.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockLabel {
    lock: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndingLabels {
    lock: Arc<str>,
    cause: &'static str,
}

/// Every lock's series, and the labels handed out so far.
pub struct Locks {
    limit: usize,
    held: Family<LockLabel, Gauge>,
    waiters: Family<LockLabel, Gauge>,
    acquisitions: Family<LockLabel, Counter>,
    endings: Family<EndingLabels, Counter>,
    handover: Family<LockLabel, Seconds>,
    valid_until: Family<LockLabel, Seconds>,
    renewal_failures: Family<LockLabel, Counter>,
    named: Mutex<HashMap<LockName, Arc<LockSeries>>>,
    other: OnceLock<Arc<LockSeries>>,
}

/// One lock's series (or `_other`'s), looked up once and kept by whoever updates them.
pub struct LockSeries {
    label: Arc<str>,
    /// Holdings through this elector now: 1 for a lock's leader; for a semaphore or a shared
    /// read-write lock, the permits or readers held here.
    pub held: Gauge,
    /// Requests waiting for it here now.
    pub waiters: Gauge,
    /// Leases granted here.
    pub acquisitions: Counter,
    /// Seconds from its last lease ending here to a waiter here holding it.
    pub handover: Seconds,
    /// Failed store renewals of its leases here.
    pub renewal_failures: Counter,
    valid_until: Seconds,
    endings: Family<EndingLabels, Counter>,
}

impl Locks {
    /// Empty families, registered in `registry`, giving at most `limit` locks a label of their
    /// own.
    pub(super) fn new(registry: &mut Registry, limit: usize) -> Self {
        let locks = Self {
            limit,
            held: Family::default(),
            waiters: Family::default(),
            acquisitions: Family::default(),
            endings: Family::default(),
            handover: Family::default(),
            valid_until: Family::default(),
            renewal_failures: Family::default(),
            named: Mutex::new(HashMap::new()),
            other: OnceLock::new(),
        };
        registry.register(
            "lock_held",
            "Holdings of the lock through this elector: 1 for the leader of a lock; permits or readers for a semaphore or a shared read-write lock",
            locks.held.clone(),
        );
        registry.register(
            "lock_waiters",
            "Requests waiting for the lock at this elector",
            locks.waiters.clone(),
        );
        registry.register(
            "lock_acquisitions",
            "Leases of the lock granted through this elector",
            locks.acquisitions.clone(),
        );
        registry.register(
            "lock_endings",
            "Leases of the lock ended here, by cause: released, expired (the holder went silent), store_error (the store could not be renewed in time, or a release came while its renewal was failing), taken (another holder has it in the store), shutdown",
            locks.endings.clone(),
        );
        registry.register(
            "lock_last_handover_seconds",
            "Seconds from the lock's last lease ending here to a waiter here holding it",
            locks.handover.clone(),
        );
        registry.register(
            "lock_valid_until_seconds",
            "Unix time at which the lock's holding here runs out unless its store holding is renewed first; 0 when not held here",
            locks.valid_until.clone(),
        );
        registry.register(
            "lock_renewal_failures",
            "Store renewals of the lock's leases here that failed, or went unanswered for a sixth of the ttl",
            locks.renewal_failures.clone(),
        );
        locks
    }

    /// The series of `name`: its own, or `_other`'s once the limit is reached.
    pub fn series(&self, name: &LockName) -> Arc<LockSeries> {
        let mut named = self.named.lock().expect("lock series poisoned");
        if let Some(series) = named.get(name) {
            return series.clone();
        }
        if named.len() < self.limit {
            let series = Arc::new(self.create(name.as_str()));
            named.insert(name.clone(), series.clone());
            return series;
        }
        drop(named);
        self.other
            .get_or_init(|| Arc::new(self.create(OTHER)))
            .clone()
    }

    fn create(&self, lock: &str) -> LockSeries {
        let label = LockLabel {
            lock: Arc::from(lock),
        };
        // The losses start at 0, so that `increase()` sees the first one: a counter that appears
        // at 1 has no earlier sample to rise from, and the flapping alert would miss it.
        for cause in Cause::COUNTED_FROM_ZERO {
            let _ = self.endings.get_or_create(&EndingLabels {
                lock: label.lock.clone(),
                cause: cause.label(),
            });
        }
        LockSeries {
            label: label.lock.clone(),
            held: self.held.get_or_create_owned(&label),
            waiters: self.waiters.get_or_create_owned(&label),
            acquisitions: self.acquisitions.get_or_create_owned(&label),
            handover: self.handover.get_or_create_owned(&label),
            valid_until: self.valid_until.get_or_create_owned(&label),
            renewal_failures: self.renewal_failures.get_or_create_owned(&label),
            endings: self.endings.clone(),
        }
    }
}

impl LockSeries {
    /// The label these series carry: the lock's name, or `_other`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Counts a lease that ended for `cause`.
    pub fn ended(&self, cause: &'static str) {
        self.endings
            .get_or_create(&EndingLabels {
                lock: self.label.clone(),
                cause,
            })
            .inc();
    }

    /// The holding here is valid for `left` from now.
    pub fn valid_for(&self, left: Duration) {
        let until = SystemTime::now() + left;
        self.valid_until.set(
            until
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
        );
    }

    /// Nothing is held here any more.
    pub fn not_held(&self) {
        self.valid_until.set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> LockName {
        LockName::new(n).unwrap()
    }

    #[test]
    fn names_beyond_the_limit_share_one_label() {
        let mut registry = Registry::default();
        let locks = Locks::new(&mut registry, 2);
        assert_eq!(locks.series(&name("a")).label(), "a");
        assert_eq!(locks.series(&name("b")).label(), "b");
        let c = locks.series(&name("c"));
        let d = locks.series(&name("d"));
        assert_eq!((c.label(), d.label()), (OTHER, OTHER));
        assert!(Arc::ptr_eq(&c, &d), "one set of series for the rest");
        c.held.inc();
        d.held.inc();
        assert_eq!(locks.series(&name("a")).label(), "a", "a keeps its label");

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("lock_held{lock=\"_other\"} 2"), "{text}");
        assert!(text.contains("lock_held{lock=\"a\"} 0"), "{text}");
        assert!(!text.contains("lock=\"c\""), "{text}");
    }

    #[test]
    fn an_ending_is_counted_by_its_cause_and_validity_is_a_time() {
        let mut registry = Registry::default();
        let locks = Locks::new(&mut registry, 10);
        let a = locks.series(&name("a"));
        a.ended("released");
        a.ended("released");
        a.ended("expired");
        a.valid_for(Duration::from_secs(15));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("lock_endings_total{lock=\"a\",cause=\"released\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("lock_endings_total{lock=\"a\",cause=\"expired\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lock_endings_total{lock=\"a\",cause=\"taken\"} 0"),
            "a loss cause is there at 0 before it happens:\n{text}"
        );
        let until: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("lock_valid_until_seconds{lock=\"a\"} "))
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now + 5.0..now + 16.0).contains(&until), "{until} vs {now}");
        a.not_held();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("lock_valid_until_seconds{lock=\"a\"} 0"),
            "{text}"
        );
    }
}
