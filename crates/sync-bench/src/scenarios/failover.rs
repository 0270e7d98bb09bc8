//! Failover: how long a lock stays with a dead holder. First the holder's process is killed
//! (SIGKILL; its elector lives), then the holder's elector is killed (SIGKILL; the holder's
//! process lives but is cut off). Each sample runs from just before the kill to just after the
//! waiter's acquire returned, on the shared clock.

use std::time::Duration;

use anyhow::Result;
use sync_testkit::ElectorProc;

use super::handover::{SlotEnv, electors, ours_env};
use super::{Run, settle_start};
use crate::driver::Worker;
use crate::report::Unit;
use crate::stats::Summary;
use crate::worker::{ETCD_ENV, LOCK_ENV, TTL_ENV};
use sync_testkit::clock::{between, now_ns};
use sync_testkit::stores::StoreKind;

/// The ttl of the elector-killed trials and of the v3lock comparison, in seconds.
const TTL: u64 = 5;

/// Measures every store, then etcd's v3lock.
pub fn run(run: &mut Run) -> Result<()> {
    let trials = run.pick(10, 30);
    for kind in run.stores("failover") {
        let backend = run.backend(kind)?;
        let electors_ = electors(run, &backend, 2, 15)?;
        let env = ours_env(&electors_, "bench-failover", 15);
        let samples = process_killed("ours", &env, trials, Duration::from_secs(60))?;
        let row = run.report.add(
            "failover",
            &kind.system(),
            "holder process killed, to next acquire (ttl 15 s)",
            Unit::Seconds,
            Summary::of_durations(&samples).expect("samples"),
        );
        row.goal = Some("under 1 s".into());
        drop(electors_);

        if kind == StoreKind::Memory {
            run.report.missing(
                "failover",
                &kind.system(),
                &format!("holder's elector killed, to next acquire (ttl {TTL} s)"),
                "does not apply: the memory store lives and dies with its one elector",
            );
            continue;
        }
        let samples = elector_killed(run, &backend, run.pick(2, 5))?;
        let row = run.report.add(
            "failover",
            &kind.system(),
            &format!("holder's elector killed, to next acquire (ttl {TTL} s)"),
            Unit::Seconds,
            Summary::of_durations(&samples).expect("samples"),
        );
        row.goal = Some(format!("at most ttl + 1 s = {} s", TTL + 1));

        if kind == StoreKind::Kubernetes {
            let figure = "holder process killed, to next acquire (30 s lease)";
            if run.quick {
                run.report.missing(
                    "failover",
                    "kube-lease-manager",
                    figure,
                    "skipped in --quick: each trial takes about 30 s",
                );
            } else {
                let env = super::kube_env::slots(&backend, "bench-klm-failover")?;
                let samples = process_killed("lease-manager", &env, 2, Duration::from_secs(90))?;
                run.report
                    .add(
                        "failover",
                        "kube-lease-manager",
                        figure,
                        Unit::Seconds,
                        Summary::of_durations(&samples).expect("samples"),
                    )
                    .note = Some("default timings".into());
            }
        }
        if kind == StoreKind::KubeApiServer {
            client_go(run, &backend)?;
        }
        if kind == StoreKind::Etcd {
            let endpoints = backend.etcd_endpoints().expect("etcd");
            let env = move |_| {
                vec![
                    (ETCD_ENV, endpoints.clone()),
                    (LOCK_ENV, "bench-v3lock-failover".to_owned()),
                    (TTL_ENV, TTL.to_string()),
                ]
            };
            let samples = process_killed("v3lock", &env, run.pick(1, 3), Duration::from_secs(60))?;
            run.report
                .add(
                    "failover",
                    "etcd v3lock",
                    &format!("holder process killed, to next lock (session ttl {TTL} s)"),
                    Unit::Seconds,
                    Summary::of_durations(&samples).expect("samples"),
                )
                .note = Some("the lock goes when the dead holder's session lease runs out".into());
        }
    }
    Ok(())
}

/// client-go with each set of timings: the leader's process is killed, and a candidate takes
/// over once the Lease has gone unrenewed for its duration, at its next retry. client-go runs in
/// the application's process, so there is no elector to kill apart from it.
fn client_go(run: &mut Run, backend: &sync_testkit::stores::Backend) -> Result<()> {
    for timings in &super::client_go::TIMINGS {
        let figure = "leader's process killed, to next acquire (15 s lease)";
        let lease = super::client_go::lease("failover", timings);
        let env = super::client_go::env(backend, &lease, timings)?;
        let samples = process_killed("client-go", &env, run.pick(1, 3), Duration::from_secs(60))?;
        run.report
            .add(
                "failover",
                timings.system,
                figure,
                Unit::Seconds,
                Summary::of_durations(&samples).expect("samples"),
            )
            .note = Some(timings.note.into());
        run.report.missing(
            "failover",
            timings.system,
            "holder's elector killed",
            "does not apply: client-go's election runs inside the application's process",
        );
    }
    Ok(())
}

/// A holder and a waiter of `role`; the holder is killed, the waiter's acquire is timed, and a
/// fresh waiter replaces the dead holder, `trials` times.
pub fn process_killed(
    role: &str,
    env: SlotEnv,
    trials: usize,
    within: Duration,
) -> Result<Vec<Duration>> {
    let mut holder = Worker::spawn(role, &env(0))?;
    holder.expect("ACQ", within)?;
    let mut waiter = Worker::spawn(role, &env(1))?;
    settle_start();
    let mut samples = Vec::with_capacity(trials);
    for trial in 0..trials {
        let killed = now_ns();
        holder.kill();
        let acquired = waiter.expect("ACQ", within)?;
        samples.push(between(killed, acquired.at));
        holder = std::mem::replace(&mut waiter, Worker::spawn(role, &env(trial))?);
        settle_start();
    }
    Ok(samples)
}

/// Two electors with ttl [`TTL`]; the holder's elector is killed, the waiter on the other
/// elector is timed, then the killed elector is started again with a fresh waiter on it.
fn elector_killed(
    run: &Run,
    backend: &sync_testkit::stores::Backend,
    trials: usize,
) -> Result<Vec<Duration>> {
    let start = |i: usize| backend.elector(&run.elector, &format!("bench-k{i}"), TTL, &[]);
    let mut electors = [start(0)?, start(1)?];
    let worker_on = |elector: &ElectorProc| {
        Worker::spawn(
            "ours",
            &ours_env(std::slice::from_ref(elector), "bench-elector-killed", TTL)(0),
        )
    };
    let first = worker_on(&electors[0])?;
    first.expect("ACQ", Duration::from_secs(30))?;
    let mut workers = [first, worker_on(&electors[1])?];
    settle_start();
    let mut samples = Vec::with_capacity(trials);
    let mut holder = 0;
    for _ in 0..trials {
        let waiter = 1 - holder;
        let killed = now_ns();
        electors[holder].signal("KILL");
        let acquired = workers[waiter].expect("ACQ", Duration::from_secs(TTL * 6))?;
        samples.push(between(killed, acquired.at));
        electors[holder] = start(holder)?;
        workers[holder] = worker_on(&electors[holder])?;
        settle_start();
        holder = waiter;
    }
    Ok(samples)
}
