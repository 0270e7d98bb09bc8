//! Soak: many concurrent clients, each with a connection of its own, acquire and release their own
//! lock in a loop for a minute against one elector. Reports errors, acquire latency, and the
//! elector's memory after warm-up and at the end (flat means no leak).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::Run;
use super::footprint::rss_mib;
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::stores::StoreKind;

/// Measures every store: 1,000 clients on the memory store, 100 on the others.
pub fn run(run: &mut Run) -> Result<()> {
    let window = Duration::from_secs(run.pick(10, 60));
    for kind in StoreKind::ALL {
        let clients = match kind {
            StoreKind::Memory => run.pick(200, 1_000),
            _ => run.pick(50, 100),
        };
        let backend = run.backend(kind)?;
        let elector = backend.elector(&run.elector, "bench-soak", 15, &[])?;
        let pid = elector.pid();
        let url = elector.url.clone();
        let errors = Arc::new(AtomicU64::new(0));
        let (latencies, rss) = run.runtime.block_on(async {
            let deadline = Instant::now() + window;
            let tasks: Vec<_> = (0..clients)
                .map(|i| {
                    let client = sync_client::Client::builder().url(&url).build();
                    let errors = errors.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let Ok(client) = client else {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return latencies;
                        };
                        let lock = client.lock(format!("soak-{i}")).on_lost(|| {});
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            match lock.acquire().await {
                                Ok(guard) => {
                                    latencies.push(t.elapsed());
                                    if guard.release().await.is_err() {
                                        errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                            }
                        }
                        latencies
                    })
                })
                .collect();
            // Memory after a warm-up of half the window, and at its end. (With 1,000 clients the
            // memory store's elector grows for about 45 s, then stays within 0.3 MiB for minutes.)
            tokio::time::sleep(window / 2).await;
            let warm = rss_mib(pid);
            tokio::time::sleep(window / 2).await;
            let end = rss_mib(pid);
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.unwrap_or_default());
            }
            (latencies, (warm, end))
        });
        let system = kind.system();
        let figure = |what: &str| format!("{what}, {clients} clients for {} s", window.as_secs());
        run.report
            .add(
                "soak",
                &system,
                &figure("acquire latency"),
                Unit::Seconds,
                Summary::of_durations(&latencies).unwrap_or(Summary::of(&[f64::NAN]).expect("one")),
            )
            .note = Some(format!(
            "{} acquire+release pairs, each client on a connection and lock of its own",
            latencies.len()
        ));
        run.report.add(
            "soak",
            &system,
            &figure("errors"),
            Unit::Count,
            Summary::of(&[errors.load(Ordering::Relaxed) as f64]).expect("one"),
        );
        let (warm, end) = (rss.0?, rss.1?);
        let row = run.report.add(
            "soak",
            &system,
            &figure("elector memory after warm-up, at the end"),
            Unit::MiB,
            Summary::of(&[warm, end]).expect("two"),
        );
        row.note = Some(format!(
            "{warm:.1} MiB after warm-up, {end:.1} MiB at the end (median and p99 columns are the two samples)"
        ));
    }
    Ok(())
}
