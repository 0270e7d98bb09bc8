//! Store load: the requests an idle waiting elector and a holding elector send to the store, per
//! minute, in a steady state (ttl 15 s). The Kubernetes test server, and the real kube-apiserver's
//! audit log, count requests per client; for etcd, its own metrics count gRPC messages received,
//! and the waiter's share is the difference between a window with the holder alone and a window
//! with both.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;

use super::handover::ours_env;
use super::{Run, settle_start};
use crate::driver::Worker;
use crate::report::Unit;
use crate::stats::Summary;
use crate::worker::{ETCD_ENV, LOCK_ENV, TTL_ENV};
use sync_testkit::stores::{Backend, StoreKind};

/// The ttl of the measured locks, in seconds (the elector's default).
const TTL: u64 = 15;

/// Measures every store but memory (it has no store to load), then kube-lease-manager, client-go
/// and etcd's v3lock beside the store they use.
pub fn run(run: &mut Run) -> Result<()> {
    let window = Duration::from_secs(run.pick(10, 60));
    let stores = run.stores("load");
    for kind in stores.into_iter().filter(|k| *k != StoreKind::Memory) {
        let backend = run.backend(kind)?;
        let system = kind.system();
        let holder_elector = backend.elector(&run.elector, "load-holder", TTL, &[])?;
        let holder = Worker::spawn(
            "ours",
            &ours_env(std::slice::from_ref(&holder_elector), "bench-load", TTL)(0),
        )?;
        holder.expect("ACQ", Duration::from_secs(30))?;
        let (holder_rate, waiter_rate, waiter) = match kind {
            StoreKind::Kubernetes | StoreKind::KubeApiServer => {
                let waiter = waiting(run, &backend)?;
                let rates = per_minute(&backend, &["load-holder", "load-waiter"], window)?;
                (rates[0].clone(), rates[1].clone(), waiter)
            }
            _ => {
                settle_start();
                let alone = per_minute(&backend, &[""], window)?.remove(0);
                let waiter = waiting(run, &backend)?;
                let both = per_minute(&backend, &[""], window)?.remove(0);
                (alone.clone(), difference(&both, &alone), waiter)
            }
        };
        add(
            run,
            "load",
            &system,
            "idle waiting elector",
            &waiter_rate,
            window,
            Some("0 periodic requests"),
            None,
        );
        add(
            run,
            "load",
            &system,
            "holding elector",
            &holder_rate,
            window,
            Some("one write per ttl/3 = 12/min"),
            None,
        );
        // Only the alternative's clients may talk to the store while it is measured.
        drop((holder, holder_elector, waiter));
        match kind {
            StoreKind::Kubernetes => lease_manager(run, &backend, window)?,
            StoreKind::KubeApiServer => client_go(run, &backend, window)?,
            StoreKind::Etcd => v3lock(run, &backend, window)?,
            StoreKind::Memory => {}
        }
    }
    Ok(())
}

/// An elector `load-waiter` and a client process waiting through it for `bench-load`.
fn waiting(run: &Run, backend: &Backend) -> Result<(Worker, sync_testkit::ElectorProc)> {
    let elector = backend.elector(&run.elector, "load-waiter", TTL, &[])?;
    let worker = Worker::spawn(
        "ours",
        &ours_env(std::slice::from_ref(&elector), "bench-load", TTL)(0),
    )?;
    settle_start();
    Ok((worker, elector))
}

/// kube-lease-manager with its defaults: a holder and a standby, counted per client.
fn lease_manager(run: &mut Run, backend: &Backend, window: Duration) -> Result<()> {
    let env = super::kube_env::slots(backend, "bench-klm-load")?;
    let holder = Worker::spawn("lease-manager", &env(0))?;
    holder.expect("ACQ", Duration::from_secs(60))?;
    let _standby = Worker::spawn("lease-manager", &env(1))?;
    settle_start();
    let rates = per_minute(backend, &["bench-klm-load-1", "bench-klm-load-0"], window)?;
    let note = Some("default timings: 30 s lease, renewed 5 s before its end");
    add(
        run,
        "load",
        "kube-lease-manager",
        "standby",
        &rates[0],
        window,
        None,
        note,
    );
    add(
        run,
        "load",
        "kube-lease-manager",
        "holder",
        &rates[1],
        window,
        None,
        note,
    );
    Ok(())
}

/// client-go with each set of timings: a leader and a candidate, counted per client in the
/// real API server's audit log.
fn client_go(run: &mut Run, backend: &Backend, window: Duration) -> Result<()> {
    for timings in &super::client_go::TIMINGS {
        let lease = super::client_go::lease("load", timings);
        let env = super::client_go::env(backend, &lease, timings)?;
        let holder = Worker::spawn("client-go", &env(0))?;
        holder.expect("ACQ", Duration::from_secs(60))?;
        let _standby = Worker::spawn("client-go", &env(1))?;
        settle_start();
        let users = [format!("{lease}-1"), format!("{lease}-0")];
        let rates = per_minute(backend, &[&users[0], &users[1]], window)?;
        let note = Some(timings.note);
        add(
            run,
            "load",
            timings.system,
            "standby",
            &rates[0],
            window,
            None,
            note,
        );
        add(
            run,
            "load",
            timings.system,
            "holder",
            &rates[1],
            window,
            None,
            note,
        );
    }
    Ok(())
}

/// etcd's v3lock: a holder alone, then with a waiter blocked in `Lock`.
fn v3lock(run: &mut Run, backend: &Backend, window: Duration) -> Result<()> {
    let endpoints = backend.etcd_endpoints().expect("etcd");
    let env = vec![
        (ETCD_ENV, endpoints),
        (LOCK_ENV, "bench-v3lock-load".to_owned()),
        (TTL_ENV, TTL.to_string()),
    ];
    let holder = Worker::spawn("v3lock", &env)?;
    holder.expect("ACQ", Duration::from_secs(30))?;
    settle_start();
    let alone = per_minute(backend, &[""], window)?.remove(0);
    let _waiter = Worker::spawn("v3lock", &env)?;
    settle_start();
    let both = per_minute(backend, &[""], window)?.remove(0);
    let note = Some("session lease kept alive every ttl/3");
    add(
        run,
        "load",
        "etcd v3lock",
        "idle waiter",
        &difference(&both, &alone),
        window,
        None,
        note,
    );
    add(
        run,
        "load",
        "etcd v3lock",
        "holder",
        &alone,
        window,
        None,
        note,
    );
    Ok(())
}

/// Requests per minute by method over `window`, for each of `clients`.
pub fn per_minute(
    backend: &Backend,
    clients: &[&str],
    window: Duration,
) -> Result<Vec<HashMap<String, f64>>> {
    let before: Vec<_> = clients
        .iter()
        .map(|c| backend.requests(c))
        .collect::<Result<_>>()?;
    std::thread::sleep(window);
    let after: Vec<_> = clients
        .iter()
        .map(|c| backend.requests(c))
        .collect::<Result<_>>()?;
    let scale = 60.0 / window.as_secs_f64();
    Ok(after
        .iter()
        .zip(&before)
        .map(|(a, b)| {
            difference(a, b)
                .into_iter()
                .map(|(k, v)| (k, v * scale))
                .collect()
        })
        .collect())
}

/// `a - b` per method, keeping only methods that changed.
pub fn difference(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> HashMap<String, f64> {
    a.iter()
        .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| v.abs() > 0.5)
        .collect()
}

/// Adds a requests-per-minute row to `scenario`, with the methods in the note.
#[expect(clippy::too_many_arguments, reason = "one row's every field")]
pub fn add(
    run: &mut Run,
    scenario: &str,
    system: &str,
    who: &str,
    rates: &HashMap<String, f64>,
    window: Duration,
    goal: Option<&str>,
    note: Option<&str>,
) {
    // A difference of two windows may come out a hair below zero.
    let total: f64 = rates.values().sum::<f64>().max(0.0);
    let mut methods: Vec<_> = rates.iter().collect();
    methods.sort_by(|a, b| a.0.cmp(b.0));
    let detail = methods
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    let row = run.report.add(
        scenario,
        system,
        &format!(
            "{who}: store requests per minute ({} s window)",
            window.as_secs()
        ),
        Unit::PerMinute,
        Summary::of(&[total]).expect("one"),
    );
    row.goal = goal.map(str::to_owned);
    row.note = match (detail.is_empty(), note) {
        (true, note) => note.map(str::to_owned),
        (false, None) => Some(detail),
        (false, Some(note)) => Some(format!("{detail}; {note}")),
    };
}
