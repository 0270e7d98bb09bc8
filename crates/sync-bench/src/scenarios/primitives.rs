//! Semaphores and read-write locks (docs/semaphores.md), through our client library in this
//! process: a permit's acquire+release, a permit handed over on release, a writer's wait behind
//! readers that all release at once, and the store requests of an elector whose only client
//! waits, for a permit and as a writer. On Kubernetes and etcd the holders and the waiter use two
//! electors, as two pods would.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sync_client::{Client, Mode};

use super::Run;
use super::load::{difference, per_minute};
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::stores::{Backend, StoreKind};

/// The ttl of every grant here, in seconds (the elector's default).
const TTL: u64 = 15;
/// The semaphore's size in the acquire figure.
const PERMITS: u32 = 4;
/// How many readers the writer waits behind.
const READERS: usize = 4;

/// Measures every store.
pub fn run(run: &mut Run) -> Result<()> {
    let trials = run.pick(200, 1_000);
    let handovers = run.pick(30, 100);
    let window = Duration::from_secs(run.pick(10, 60));
    for kind in run.stores("primitives") {
        let backend = run.backend(kind)?;
        let electors = super::handover::electors(run, &backend, 2, TTL)?;
        let clients: Vec<Client> = electors
            .iter()
            .map(|e| Client::builder().url(&e.url).build())
            .collect::<Result<_, _>>()?;
        let (a, b) = (&clients[0], clients.last().expect("an elector"));
        let (acquire, handover, writer) = run.runtime.block_on(async {
            anyhow::Ok((
                permit_loop(a, trials).await?,
                permit_handover(a, b, handovers).await?,
                writer_behind_readers(a, b, handovers).await?,
            ))
        })?;
        let system = kind.system();
        let note = (electors.len() > 1).then(|| "holders and waiter on two electors".to_owned());
        run.report
            .add(
                "primitives",
                &system,
                &format!("permit acquire+release, one client ({PERMITS} permits)"),
                Unit::Seconds,
                Summary::of_durations(&acquire).context("no samples")?,
            )
            .note = Some("as a lock's: the acquire and the release".into());
        run.report
            .add(
                "primitives",
                &system,
                "permit hand-over: release to the waiter's grant",
                Unit::Seconds,
                Summary::of_durations(&handover).context("no samples")?,
            )
            .note = note.clone();
        run.report
            .add(
                "primitives",
                &system,
                &format!("writer behind {READERS} readers: their releases to its grant"),
                Unit::Seconds,
                Summary::of_durations(&writer).context("no samples")?,
            )
            .note = note;
        if kind != StoreKind::Memory {
            idle_waiters(run, &backend, &clients, window)?;
        }
    }
    Ok(())
}

/// `trials` acquire+release pairs of one permit, after a warm-up.
async fn permit_loop(client: &Client, trials: usize) -> Result<Vec<Duration>> {
    let permit = client
        .semaphore("bench-permit", PERMITS)
        .on_lost(|| eprintln!("bench-permit lost"));
    for _ in 0..20 {
        permit.acquire().await?.release().await?;
    }
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        let t = Instant::now();
        permit.acquire().await?.release().await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Both permits of a semaphore of two held through `a`, a waiter on `b`: from just before one
/// permit's release to the waiter's grant.
async fn permit_handover(a: &Client, b: &Client, trials: usize) -> Result<Vec<Duration>> {
    let name = "bench-permit-handover";
    let held = a
        .semaphore(name, 2)
        .on_lost(move || eprintln!("{name} lost"));
    let kept = held.acquire().await?;
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        let freed = held.acquire().await?;
        let waiter = b
            .semaphore(name, 2)
            .on_lost(move || eprintln!("{name} lost"));
        let waiting = tokio::spawn(async move {
            let guard = waiter.acquire().await?;
            anyhow::Ok((Instant::now(), guard))
        });
        super::settle_async().await;
        let released = Instant::now();
        freed.release().await?;
        let (granted, guard) = waiting.await??;
        samples.push(granted.duration_since(released));
        guard.release().await?;
    }
    kept.release().await?;
    Ok(samples)
}

/// [`READERS`] shared grants through `a`, a writer waiting on `b`: from just before the readers
/// release (all at once) to the writer's grant.
async fn writer_behind_readers(a: &Client, b: &Client, trials: usize) -> Result<Vec<Duration>> {
    let name = "bench-rw";
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = a
                .rwlock(name, Mode::Shared)
                .on_lost(move || eprintln!("{name} lost"));
            readers.push(reader.acquire().await?);
        }
        let writer = b
            .rwlock(name, Mode::Exclusive)
            .on_lost(move || eprintln!("{name} lost"));
        let waiting = tokio::spawn(async move {
            let guard = writer.acquire().await?;
            anyhow::Ok((Instant::now(), guard))
        });
        super::settle_async().await;
        let released = Instant::now();
        futures_util::future::try_join_all(readers.into_iter().map(|r| r.release())).await?;
        let (granted, guard) = waiting.await??;
        samples.push(granted.duration_since(released));
        guard.release().await?;
    }
    Ok(samples)
}

/// The store requests per minute of the second elector while its one client waits for a held
/// semaphore's permit, then as a writer behind a reader.
fn idle_waiters(
    run: &mut Run,
    backend: &Backend,
    clients: &[Client],
    window: Duration,
) -> Result<()> {
    let (a, b) = (clients[0].clone(), clients[clients.len() - 1].clone());
    let system = backend.kind().system();
    let etcd = backend.kind() == StoreKind::Etcd;
    // On etcd a waiting elector keeps its session lease alive and sweeps once per ttl, as for a
    // lock; on Kubernetes a waiting writer keeps its entry in the Lease alive.
    let lock_waiter =
        "as a lock's waiting elector: its session's keep-alive per ttl/3, a sweep per ttl";
    let cases = [
        (
            "waiting for a permit",
            None,
            if etcd {
                lock_waiter
            } else {
                "0 periodic requests"
            },
        ),
        (
            "waiting writer",
            Some(Mode::Exclusive),
            if etcd {
                lock_waiter
            } else {
                "one write per ttl/3 (12/min): its waiting entry, which stops new readers"
            },
        ),
    ];
    for (who, mode, expect) in cases {
        let name = format!(
            "bench-idle-{}",
            if mode.is_some() { "rw" } else { "permit" }
        );
        let ask = |client: &Client, mode: Option<Mode>| match mode {
            Some(mode) => client.rwlock(&name, mode),
            None => client.semaphore(&name, 1),
        };
        let holder = run
            .runtime
            .block_on(ask(&a, mode.map(|_| Mode::Shared)).on_lost(|| {}).acquire())?;
        let alone = match backend.kind() {
            StoreKind::Etcd => Some(per_minute(backend, &[""], window)?.remove(0)),
            _ => None,
        };
        let waiter = ask(&b, mode).on_lost(|| {});
        let waiting = run.runtime.spawn(async move { waiter.acquire().await });
        super::settle_start();
        let rates = match alone {
            Some(alone) => difference(&per_minute(backend, &[""], window)?.remove(0), &alone),
            None => per_minute(backend, &["bench-e1"], window)?.remove(0),
        };
        waiting.abort();
        run.runtime.block_on(holder.release())?;
        super::load::add(
            run,
            "primitives",
            &system,
            &format!("idle elector, {who}"),
            &rates,
            window,
            Some(expect),
            None,
        );
    }
    Ok(())
}
