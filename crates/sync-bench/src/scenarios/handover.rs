//! Hand-over on release: a holder in one process releases, a waiter in another process
//! acquires; the figure is from just before the release call to just after the waiter's acquire
//! returned, on the shared clock. On Kubernetes and etcd the two processes use two electors, as
//! two pods would.

use std::time::Duration;

use anyhow::{Result, bail};
use sync_testkit::ElectorProc;

use super::{Run, settle, settle_start};
use crate::driver::Worker;
use crate::report::Unit;
use crate::stats::Summary;
use crate::worker::{ETCD_ENV, LEGACY_ENV, LOCK_ENV, TTL_ENV};
use sync_testkit::clock::between;
use sync_testkit::stores::{Backend, StoreKind};

/// The environment of worker slot `i`.
pub type SlotEnv<'a> = &'a dyn Fn(usize) -> Vec<(&'static str, String)>;

/// Measures every store, then etcd's v3lock, then the original bindings.
pub fn run(run: &mut Run) -> Result<()> {
    let trials = run.pick(50, 300);
    for kind in run.stores("handover") {
        let backend = run.backend(kind)?;
        let electors = electors(run, &backend, 2, 15)?;
        let env = ours_env(&electors, "bench-handover", 15);
        let samples = trials_of(
            "ours",
            &env,
            trials,
            true,
            Duration::from_secs(30),
            (Duration::ZERO, Duration::ZERO),
        )
        .map_err(|err| with_logs(err, &electors))?;
        let goal = match kind {
            StoreKind::Memory => "2 ms (p99)",
            StoreKind::Etcd => "10 ms (p99)",
            StoreKind::Kubernetes | StoreKind::KubeApiServer => "50 ms (p99)",
        };
        let row = run.report.add(
            "handover",
            &kind.system(),
            "release to next acquire",
            Unit::Seconds,
            Summary::of_durations(&samples).expect("samples"),
        );
        row.goal = Some(goal.into());
        if electors.len() > 1 {
            row.note = Some("holder and waiter on two electors".into());
        }
        if kind == StoreKind::Etcd {
            let endpoints = backend.etcd_endpoints().expect("etcd");
            let env = move |_| {
                vec![
                    (ETCD_ENV, endpoints.clone()),
                    (LOCK_ENV, "bench-v3lock".to_owned()),
                    (TTL_ENV, "15".to_owned()),
                ]
            };
            let samples = trials_of(
                "v3lock",
                &env,
                trials,
                true,
                Duration::from_secs(30),
                (Duration::ZERO, Duration::ZERO),
            )?;
            run.report
                .add(
                    "handover",
                    "etcd v3lock",
                    "unlock to next lock",
                    Unit::Seconds,
                    Summary::of_durations(&samples).expect("samples"),
                )
                .note =
                Some("etcd's Lock/Unlock (v3lock) with one session lease per process".into());
        }
        if kind == StoreKind::Kubernetes {
            lease_manager(run, &backend)?;
            original(run, &electors)?;
        }
        if kind == StoreKind::KubeApiServer {
            client_go(run, &backend)?;
        }
    }
    Ok(())
}

/// client-go's leader election with each set of timings: the leader cancels (ReleaseOnCancel
/// releases the Lease), a candidate takes over at its next retry.
fn client_go(run: &mut Run, backend: &Backend) -> Result<()> {
    for timings in &super::client_go::TIMINGS {
        let lease = super::client_go::lease("handover", timings);
        let env = super::client_go::env(backend, &lease, timings)?;
        let samples = trials_of(
            "client-go",
            &env,
            run.pick(3, 10),
            true,
            Duration::from_secs(60),
            // A release comes at any moment of a candidate's retry cycle, not just after a try.
            (Duration::ZERO, timings.retry.mul_f64(1.0 + 1.2)),
        )?;
        run.report
            .add(
                "handover",
                timings.system,
                "release to next acquire",
                Unit::Seconds,
                Summary::of_durations(&samples).expect("samples"),
            )
            .note = Some(format!(
            "{}; a candidate tries again after 1 to 2.2 retry periods (client-go jitters by a factor of 1.2)",
            timings.note
        ));
    }
    Ok(())
}

/// kube-lease-manager with its defaults: a holder releases, a standby takes over.
fn lease_manager(run: &mut Run, backend: &Backend) -> Result<()> {
    let env = super::kube_env::slots(backend, "bench-klm-handover")?;
    let samples = trials_of(
        "lease-manager",
        &env,
        run.pick(1, 3),
        true,
        Duration::from_secs(60),
        (Duration::ZERO, Duration::ZERO),
    )?;
    run.report
        .add("handover", "kube-lease-manager", "release to next acquire", Unit::Seconds, Summary::of_durations(&samples).expect("samples"))
        .note = Some("defaults: 30 s lease, renewed 5 s before its end; a standby looks again when the lease would end".into());
    Ok(())
}

/// The original bindings: two clients on two electors (legacy ttl 30 s, polling every 10 s).
fn original(run: &mut Run, electors: &[ElectorProc]) -> Result<()> {
    let (scenario, system, figure) = (
        "handover",
        "original bindings",
        "stop renewing to next acquire",
    );
    if run.quick {
        run.report.missing(
            scenario,
            system,
            figure,
            "skipped in --quick: each trial takes 30 to 40 s",
        );
        return Ok(());
    }
    let urls: Vec<String> = electors.iter().map(|e| e.url.clone()).collect();
    let env = move |i: usize| {
        vec![
            (LEGACY_ENV, urls[i % urls.len()].clone()),
            (LOCK_ENV, "bench-original".to_owned()),
        ]
    };
    let samples = trials_of(
        "original",
        &env,
        3,
        false,
        Duration::from_secs(60),
        (Duration::ZERO, Duration::ZERO),
    )?;
    run.report
        .add(
            scenario,
            system,
            figure,
            Unit::Seconds,
            Summary::of_durations(&samples).expect("samples"),
        )
        .note =
        Some("GET then PUT every 10 s, no release: the lock runs out (legacy ttl 30 s)".into());
    Ok(())
}

/// `err`, with the last lines each elector logged.
pub fn with_logs(err: anyhow::Error, electors: &[ElectorProc]) -> anyhow::Error {
    let logs: Vec<String> = electors
        .iter()
        .map(|e| {
            let log = e.log();
            log[log.len().saturating_sub(15)..].join("\n")
        })
        .collect();
    err.context(format!("the electors logged:\n{}", logs.join("\n---\n")))
}

/// `count` electors on `backend` (one for the memory store, whose state is per elector).
pub fn electors(run: &Run, backend: &Backend, count: usize, ttl: u64) -> Result<Vec<ElectorProc>> {
    let count = if backend.kind() == StoreKind::Memory {
        1
    } else {
        count
    };
    (0..count)
        .map(|i| backend.elector(&run.elector, &format!("bench-e{i}"), ttl, &[]))
        .collect()
}

/// The environment of our client in slot `i`: elector `i` (round robin), `lock`, `ttl`.
pub fn ours_env(
    electors: &[ElectorProc],
    lock: &str,
    ttl: u64,
) -> impl Fn(usize) -> Vec<(&'static str, String)> + use<> {
    let urls: Vec<String> = electors.iter().map(|e| e.url.clone()).collect();
    let lock = lock.to_owned();
    move |i| {
        vec![
            (sync_protocol::URL_ENV, urls[i % urls.len()].clone()),
            (LOCK_ENV, lock.clone()),
            (TTL_ENV, ttl.to_string()),
        ]
    }
}

/// Two workers of `role` take turns holding the lock, `trials` times; each sample is from the
/// holder's `REL` to the other's `ACQ`, after which the old holder queues again. A role that
/// cannot queue again (`requeues` false) is replaced by a fresh worker after each trial.
///
/// A role whose waiter polls needs `spread`: the holder waits a different part of it before
/// each release (spread evenly over the trials), so that releases fall at every point of the
/// waiter's polling cycle rather than just after the try it made when it queued. `hold` is a
/// fixed wait before each release on top of that.
pub fn trials_of(
    role: &str,
    env: SlotEnv,
    trials: usize,
    requeues: bool,
    within: Duration,
    (hold, spread): (Duration, Duration),
) -> Result<Vec<Duration>> {
    let first = Worker::spawn(role, &env(0))?;
    let mut token = first.expect("ACQ", within)?.token;
    let mut slots = [first, Worker::spawn(role, &env(1))?];
    settle_start();
    let mut samples = Vec::with_capacity(trials);
    let mut holder = 0;
    for trial in 0..trials {
        let waiter = 1 - holder;
        // The golden ratio's multiples modulo 1 cover [0, 1) evenly for any number of trials.
        std::thread::sleep(hold + spread.mul_f64((trial as f64 * 0.618_033_988_75).fract()));
        slots[holder].order("release")?;
        let released = slots[holder].expect("REL", within)?;
        let acquired = slots[waiter].expect("ACQ", within)?;
        if acquired.token != 0 && acquired.token <= token {
            bail!("{role}: fencing token {} followed {token}", acquired.token);
        }
        token = acquired.token;
        samples.push(between(released.at, acquired.at));
        if requeues {
            slots[holder].order("acquire")?;
            settle();
        } else {
            slots[holder] = Worker::spawn(role, &env(holder))?;
            settle_start();
        }
        holder = waiter;
    }
    Ok(samples)
}
