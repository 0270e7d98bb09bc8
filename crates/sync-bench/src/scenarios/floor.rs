//! The loopback floor: a bare HTTP round trip through the client's HTTP stack (reqwest, set up as
//! `sync-client` sets it up) to a minimal axum handler in a process of its own (axum's own
//! server, which speaks HTTP/2 with prior knowledge as the elector does). Every other
//! latency is read against it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use super::Run;
use crate::report::Unit;
use crate::stats::Summary;

/// The floor's median round trip in seconds, once measured in this run.
pub static FLOOR: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Serves `GET /` with `204` on a loopback port, prints the address, and serves forever (the
/// `__floor` role of this binary).
pub fn serve() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Measures the floor and records it in [`FLOOR`].
pub fn run(run: &mut Run) -> Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("__floor")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the floor server")?;
    let mut addr = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut addr)?;
    let url = format!("http://{}/", addr.trim());
    let trials = run.pick(2_000, 20_000);
    let result = run.runtime.block_on(async {
        let http = http()?;
        for _ in 0..200 {
            http.get(&url).send().await?;
        }
        let mut samples = Vec::with_capacity(trials);
        let started = Instant::now();
        for _ in 0..trials {
            let t = Instant::now();
            http.get(&url).send().await?.error_for_status()?;
            samples.push(t.elapsed());
        }
        anyhow::Ok((samples, started.elapsed()))
    });
    let _ = child.kill();
    let _ = child.wait();
    let (samples, total) = result?;
    let summary = Summary::of_durations(&samples).expect("samples");
    let _ = FLOOR.set(summary.median);
    run.report
        .add(
            "floor",
            "loopback HTTP",
            "round trip",
            Unit::Seconds,
            summary,
        )
        .note =
        Some("reqwest (HTTP/2, as sync-client) to a bare axum handler in another process".into());
    let rate = trials as f64 / total.as_secs_f64();
    run.report.add(
        "floor",
        "loopback HTTP",
        "sequential requests per second",
        Unit::OpsPerSecond,
        Summary::of(&[rate]).expect("one"),
    );
    Ok(())
}

/// An HTTP client as sync-client sets reqwest up: no proxy, no Nagle, HTTP/2 with prior knowledge.
pub fn http() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .http2_prior_knowledge()
        .build()
}

/// The floor's median, measuring it first if this run has not.
pub fn floor(run: &mut Run) -> Result<f64> {
    if FLOOR.get().is_none() {
        self::run(run)?;
    }
    Ok(*FLOOR.get().expect("measured"))
}
