//! client-go's leader election beside ours on the real kube-apiserver: the two sets of timings it
//! runs with, and the environment of its workers (`test-deps/client-go-elector --worker`, a
//! `LeaderElector` with a LeaseLock and `ReleaseOnCancel`).

use std::time::Duration;

use anyhow::Result;

use crate::worker::{NAMESPACE_ENV, TIMINGS_ENV};
use sync_testkit::stores::Backend;

/// One set of client-go timings, and how the report names it.
pub struct Timings {
    /// The system's name in the report.
    pub system: &'static str,
    /// `LeaseDuration,RenewDeadline,RetryPeriod` as Go durations.
    pub flags: &'static str,
    /// What the timings are, for the report's notes.
    pub note: &'static str,
    /// A short tag for Lease and user names.
    pub tag: &'static str,
    /// `RetryPeriod`.
    pub retry: Duration,
}

/// client-go's defaults, then ours: our elector at ttl 15 s renews every ttl/3 = 5 s and gives
/// up at 2/3 ttl = 10 s, which in client-go's terms is RetryPeriod 5 s, RenewDeadline 10 s.
pub const TIMINGS: [Timings; 2] = [
    Timings {
        system: "client-go (defaults)",
        flags: "15s,10s,2s",
        note: "client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period",
        tag: "d",
        retry: Duration::from_secs(2),
    },
    Timings {
        system: "client-go (our timings)",
        flags: "15s,10s,5s",
        note: "our timings at ttl 15 s: 15 s lease, 10 s renew deadline, 5 s retry period",
        tag: "o",
        retry: Duration::from_secs(5),
    },
];

/// The environment of client-go worker `i` on Lease `lock` with `timings`: a kubeconfig of its
/// own per slot (`LOCK-0`, `LOCK-1`), whose user the audit log counts.
pub fn env(
    backend: &Backend,
    lock: &str,
    timings: &Timings,
) -> Result<impl Fn(usize) -> Vec<(&'static str, String)> + use<>> {
    let slots = super::kube_env::slots(backend, lock)?;
    let namespace = backend.namespace().to_owned();
    let flags = timings.flags.to_owned();
    Ok(move |i: usize| {
        let mut env = slots(i);
        env.push((NAMESPACE_ENV, namespace.clone()));
        env.push((TIMINGS_ENV, flags.clone()));
        env
    })
}

/// The Lease name for `scenario` and `timings`.
pub fn lease(scenario: &str, timings: &Timings) -> String {
    format!("bench-cg{}-{scenario}", timings.tag)
}
