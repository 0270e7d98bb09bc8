//! Metrics: what `/metrics` costs with many locks held, for each `--metrics-lock-limit`: its
//! size, how long one scrape takes, how many series it carries, and the elector's memory.
//! The memory store only: the series are the same on every store.

use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::StreamExt;

use super::Run;
use super::footprint::{hold_many, rss_mib};
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::stores::StoreKind;

/// The limits compared: no lock labelled, the default (1,000), and every lock labelled.
const LIMITS: [usize; 3] = [0, 1_000, 10_000];

/// Measures each limit with `locks` held locks.
pub fn run(run: &mut Run) -> Result<()> {
    let locks = run.pick(2_000, 10_000);
    let scrapes = run.pick(5, 20);
    let backend = run.backend(StoreKind::Memory)?;
    for limit in LIMITS {
        let limit_flag = limit.to_string();
        let elector = backend.elector(
            &run.elector,
            "bench-metrics",
            300,
            &["--metrics-lock-limit", &limit_flag],
        )?;
        let client = sync_client::Client::builder().url(&elector.url).build()?;
        let held = run.runtime.block_on(hold_many(&client, locks))?;
        let url = format!("{}/metrics", elector.url);
        let mut times = Vec::new();
        let mut text = String::new();
        for _ in 0..scrapes {
            let t = Instant::now();
            let (status, body) = sync_testkit::http::get(&url)?;
            times.push(t.elapsed());
            anyhow::ensure!(status == 200, "GET /metrics answered {status}");
            text = body;
        }
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        let memory = rss_mib(elector.pid())?;
        let system = format!("ours/memory, --metrics-lock-limit {limit}");
        let held_note = format!("{locks} locks held through our client");
        for (figure, unit, value) in [
            ("/metrics size", Unit::KiB, text.len() as f64 / 1024.0),
            ("series on /metrics", Unit::Count, series as f64),
            ("memory", Unit::MiB, memory),
        ] {
            run.report
                .add(
                    "metrics",
                    &system,
                    figure,
                    unit,
                    Summary::of(&[value]).context("one")?,
                )
                .note = Some(held_note.clone());
        }
        run.report
            .add(
                "metrics",
                &system,
                "one scrape",
                Unit::Seconds,
                Summary::of_durations(&times).context("samples")?,
            )
            .note = Some(format!(
            "{held_note}; GET /metrics on a new connection, until the last byte"
        ));
        run.runtime.block_on(async {
            futures_util::stream::iter(held)
                .for_each_concurrent(64, |guard| async move {
                    let _ = guard.release().await;
                })
                .await;
        });
    }
    Ok(())
}
