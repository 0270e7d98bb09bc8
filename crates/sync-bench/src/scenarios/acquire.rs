//! Uncontended acquire and release through our client library, in this process: the latency of
//! one acquire+release pair and the rate of one client in a loop, then the rate of many clients
//! on distinct locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::Run;
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::stores::StoreKind;

/// How many clients the "many clients" figure runs, each on its own lock.
const CLIENTS: usize = 16;

/// Measures every store.
pub fn run(run: &mut Run) -> Result<()> {
    let floor = super::floor::floor(run)?;
    for kind in run.stores("acquire") {
        let backend = run.backend(kind)?;
        let elector = backend.elector(&run.elector, "bench-acquire", 15, &[])?;
        let client = sync_client::Client::builder().url(&elector.url).build()?;
        let trials = run.pick(500, 3_000);
        let window = Duration::from_secs(run.pick(3, 10));
        let (samples, one_rate, many_rate) = run.runtime.block_on(async {
            let lock = client
                .lock("bench-acquire")
                .on_lost(|| eprintln!("bench-acquire lost"));
            for _ in 0..50 {
                lock.acquire().await?.release().await?;
            }
            let mut samples = Vec::with_capacity(trials);
            let started = Instant::now();
            for _ in 0..trials {
                let t = Instant::now();
                lock.acquire().await?.release().await?;
                samples.push(t.elapsed());
            }
            let one_rate = trials as f64 / started.elapsed().as_secs_f64();
            let many_rate = many_clients(&client, window).await?;
            anyhow::Ok((samples, one_rate, many_rate))
        })?;
        let system = kind.system();
        let summary = Summary::of_durations(&samples).expect("samples");
        let row = run.report.add(
            "acquire",
            &system,
            "acquire+release, one client",
            Unit::Seconds,
            summary,
        );
        if kind == StoreKind::Memory {
            row.goal = Some("at most 2.5x the floor".into());
        }
        row.note = Some(
            "2 HTTP requests: acquire (answered with the lease's event stream, and counting as the first heartbeat), release".into(),
        );
        run.report.add(
            "acquire",
            &system,
            "acquire+release median / floor median",
            Unit::Ratio,
            Summary::of(&[summary.median / floor]).expect("one"),
        );
        run.report.add(
            "acquire",
            &system,
            "operations per second, one client",
            Unit::OpsPerSecond,
            Summary::of(&[one_rate]).expect("one"),
        );
        let row = run.report.add(
            "acquire",
            &system,
            &format!("operations per second, {CLIENTS} clients on distinct locks"),
            Unit::OpsPerSecond,
            Summary::of(&[many_rate]).expect("one"),
        );
        if kind == StoreKind::Memory {
            row.goal = Some("20,000/s on 2 cores".into());
        }
        row.note =
            Some("clients, elector (and the Kubernetes test server) share the 2 cores".into());
    }
    Ok(())
}

/// Acquire+release pairs per second from [`CLIENTS`] concurrent clients, each looping on its own
/// lock for `window`.
async fn many_clients(client: &sync_client::Client, window: Duration) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let lock = client
                .lock(format!("bench-many-{i}"))
                .on_lost(|| eprintln!("bench-many lost"));
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    lock.acquire().await?.release().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
