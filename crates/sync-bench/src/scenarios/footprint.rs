//! Footprint: the elector's time from start to ready, its resident memory idle, with many held
//! locks, and with many waiters on one lock (read from `/proc/PID/status`); on the real
//! kube-apiserver, also a program holding one lock through ours and through client-go.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;

use super::Run;
use super::handover::ours_env;
use crate::driver::Worker;
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::stores::StoreKind;

/// Measures every store.
pub fn run(run: &mut Run) -> Result<()> {
    let (locks, waiters) = run.pick((2_000, 200), (10_000, 1_000));
    for kind in run.stores("footprint") {
        let backend = run.backend(kind)?;
        let system = kind.system();
        let mut starts = Vec::new();
        let mut elector = None;
        for i in 0..run.pick(3, 10) {
            drop(elector.take());
            let t = Instant::now();
            elector = Some(backend.elector(&run.elector, &format!("bench-start{i}"), 300, &[])?);
            starts.push(t.elapsed());
        }
        let elector = elector.expect("started");
        run.report
            .add(
                "footprint",
                &system,
                "start to ready",
                Unit::Seconds,
                Summary::of_durations(&starts).expect("samples"),
            )
            .note = Some("process start until GET /readyz answers 200".into());

        std::thread::sleep(Duration::from_secs(1));
        let idle = resident(elector.pid())?;
        let row = run.report.add(
            "footprint",
            &system,
            "memory idle",
            Unit::MiB,
            Summary::of(&[idle.total]).expect("one"),
        );
        row.goal = Some("10 MB".into());
        row.note = Some(idle.note());

        let client = sync_client::Client::builder().url(&elector.url).build()?;
        let held = run.runtime.block_on(hold_many(&client, locks))?;
        std::thread::sleep(Duration::from_secs(1));
        let with_locks = resident(elector.pid())?;
        let row = run.report.add(
            "footprint",
            &system,
            &format!("memory with {locks} held locks"),
            Unit::MiB,
            Summary::of(&[with_locks.total]).expect("one"),
        );
        row.goal = Some("40 MB with 10,000".into());
        row.note = Some(format!(
            "each held through our client, with its event stream open; {}",
            with_locks.note()
        ));
        run.runtime.block_on(async {
            futures_util::stream::iter(held)
                .for_each_concurrent(64, |guard| async move {
                    let _ = guard.release().await;
                })
                .await;
        });

        // A fresh elector, so that the held locks' memory (which the allocator keeps) does not
        // count here.
        drop(elector);
        let elector = backend.elector(&run.elector, "bench-crowd", 300, &[])?;
        let client = sync_client::Client::builder().url(&elector.url).build()?;
        let queued = run
            .runtime
            .block_on(queue_many(&client, &elector.url, waiters))?;
        let with_waiters = resident(elector.pid())?;
        run.runtime.block_on(async { drop(queued) });
        run.report
            .add(
                "footprint",
                &system,
                &format!("memory with {waiters} waiters on one lock"),
                Unit::MiB,
                Summary::of(&[with_waiters.total]).expect("one"),
            )
            .note = Some(with_waiters.note());
        if kind == StoreKind::KubeApiServer {
            drop(elector);
            one_holder(run)?;
        }
    }
    Ok(())
}

/// A program that holds one Lock: ours (an application process with our client, and its
/// elector) beside client-go's (one process, the election inside it), each read after holding
/// for a few renewals.
fn one_holder(run: &mut Run) -> Result<()> {
    // A namespace of its own: the Kubernetes store caches every Lease in its namespace, and the
    // one above still holds the thousands just measured.
    let backend = &run.backend(StoreKind::KubeApiServer)?;
    let hold = Duration::from_secs(run.pick(6, 12));
    let elector = backend.elector(&run.elector, "bench-one", 15, &[])?;
    let ours = Worker::spawn(
        "ours",
        &ours_env(std::slice::from_ref(&elector), "bench-one", 15)(0),
    )?;
    ours.expect("ACQ", Duration::from_secs(30))?;
    std::thread::sleep(hold);
    let (app, sidecar) = (rss_mib(ours.pid())?, rss_mib(elector.pid())?);
    let system = StoreKind::KubeApiServer.system();
    for (figure, mib, note) in [
        (
            "memory of the elector, one lock held",
            sidecar,
            "the sidecar",
        ),
        (
            "memory of the application holding one lock",
            app,
            "sync-bench's worker: our client library on a one-thread runtime",
        ),
    ] {
        run.report
            .add(
                "footprint",
                &system,
                figure,
                Unit::MiB,
                Summary::of(&[mib]).expect("one"),
            )
            .note = Some(note.into());
    }
    drop((ours, elector));

    let timings = &super::client_go::TIMINGS[0];
    let lease = super::client_go::lease("footprint", timings);
    let leader = Worker::spawn(
        "client-go",
        &super::client_go::env(backend, &lease, timings)?(0),
    )?;
    leader.expect("ACQ", Duration::from_secs(60))?;
    std::thread::sleep(hold);
    run.report
        .add(
            "footprint",
            timings.system,
            "memory of the application holding one lock",
            Unit::MiB,
            Summary::of(&[rss_mib(leader.pid())?]).expect("one"),
        )
        .note = Some(
        "client-go-elector: client-go's LeaderElector in a Go program that does nothing else"
            .into(),
    );
    Ok(())
}

/// Acquires `count` distinct locks (ttl 300 s) and returns their guards.
pub async fn hold_many(
    client: &sync_client::Client,
    count: usize,
) -> Result<Vec<sync_client::LockGuard>> {
    let acquired: Vec<_> = futures_util::stream::iter(0..count)
        .map(|i| {
            let lock = client
                .lock(format!("bench-held-{i}"))
                .ttl(Duration::from_secs(300))
                .on_lost(|| eprintln!("a footprint lock was lost"));
            async move { lock.acquire().await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    Ok(acquired.into_iter().collect::<Result<_, _>>()?)
}

/// Holds lock `bench-crowd` and queues `count` waiters on it; returns the holder and the waiting
/// tasks once the elector reports them queued.
async fn queue_many(client: &sync_client::Client, url: &str, count: usize) -> Result<Queued> {
    let lock = || {
        client
            .lock("bench-crowd")
            .ttl(Duration::from_secs(300))
            .on_lost(|| {})
    };
    let holder = lock().acquire().await?;
    let tasks = (0..count)
        .map(|_| {
            let lock = lock();
            tokio::spawn(async move { lock.acquire().await.map(drop) })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = format!("{url}/metrics");
    loop {
        let (_, text) = tokio::task::spawn_blocking({
            let metrics = metrics.clone();
            move || sync_testkit::http::get(&metrics)
        })
        .await??;
        if waiting(&text) >= count as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} waiters were queued after 60 s",
                waiting(&text)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Queued {
        _holder: holder,
        tasks,
    })
}

/// The holder and waiters of [`queue_many`]; dropping it ends them.
struct Queued {
    _holder: sync_client::LockGuard,
    tasks: Vec<tokio::task::JoinHandle<sync_client::Result<()>>>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `sync_elector_waiters` summed over locks, from the elector's metrics.
fn waiting(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sync_elector_waiters"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    Ok(resident(pid)?.total)
}

/// A process's resident memory, in MiB.
pub struct Resident {
    /// All of it (`VmRSS`).
    pub total: f64,
    /// Its anonymous part (`RssAnon`): the heap and stacks, what the process itself allocated.
    /// The rest is mapped pages of the binary and its libraries, shared with the page cache.
    pub anonymous: f64,
}

impl Resident {
    /// A row's note saying how much of the figure is anonymous.
    pub fn note(&self) -> String {
        format!(
            "{:.1} MiB of it anonymous (RssAnon); the rest is the binary's mapped pages",
            self.anonymous
        )
    }
}

/// The resident memory of process `pid`, read from `/proc/PID/status`.
pub fn resident(pid: u32) -> Result<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the elector's /proc status")?;
    let mib = |field: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc status"))?;
        Ok(kib / 1024.0)
    };
    Ok(Resident {
        total: mib("VmRSS:")?,
        anonymous: mib("RssAnon:")?,
    })
}
