//! The benchmark harness: `cargo run --release -p sync-bench -- <scenario>|all [--quick]`.
//!
//! It starts everything itself (elector processes, etcd, the Kubernetes API test server, worker
//! processes that are this binary started again), measures, prints a markdown table, and writes
//! the same figures as JSON and markdown under `target/bench/`. See `docs/performance.md`.

mod driver;
mod report;
mod scenarios;
mod stats;
mod worker;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Parser;

/// Measures latency, hand-over, failover, footprint and store load of the elector on every
/// store, next to etcd's v3lock and the original Metaparticle bindings.
#[derive(Parser, Debug)]
#[command(name = "sync-bench")]
struct Args {
    /// A scenario (floor, acquire, instructions, handover, hold, failover, footprint, load,
    /// primitives, metrics), `all` of those, or `soak` (many clients for a minute per store; run by name
    /// only).
    scenario: String,
    /// Fewer trials and shorter windows: finishes in about 3 minutes.
    #[arg(long)]
    quick: bool,
    /// Where the JSON and markdown reports go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The elector binary to measure (default: build and use this workspace's release binary).
    #[arg(long, env = "SYNC_BENCH_ELECTOR")]
    elector: Option<PathBuf>,
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__worker") => return worker::run(argv.get(2).map_or("", String::as_str)),
        Some("__floor") => return scenarios::floor::serve(),
        Some("__client") => {
            return scenarios::instructions::client_loop(argv.get(2).map_or("", String::as_str));
        }
        _ => {}
    }
    let args = Args::parse();
    let names: Vec<&str> = if args.scenario == "all" {
        scenarios::ALL.to_vec()
    } else if scenarios::ALL.contains(&args.scenario.as_str())
        || scenarios::BY_NAME.contains(&args.scenario.as_str())
    {
        vec![args.scenario.as_str()]
    } else {
        bail!(
            "unknown scenario {:?}: pick one of {}, {} or all",
            args.scenario,
            scenarios::ALL.join(", "),
            scenarios::BY_NAME.join(", ")
        );
    };
    let elector = match args.elector {
        Some(path) => path,
        None => sync_testkit::release_elector()?,
    };
    let mut run = scenarios::Run {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        elector,
        quick: args.quick,
        report: report::Report {
            machine: sync_testkit::machine(),
            started: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            quick: args.quick,
            rows: Vec::new(),
        },
    };
    let started = std::time::Instant::now();
    if !names.contains(&"floor") {
        scenarios::run("floor", &mut run)?;
    }
    for name in names {
        scenarios::run(name, &mut run).with_context(|| format!("scenario {name}"))?;
    }
    let markdown = run.report.markdown();
    println!("{markdown}");
    let file = if args.scenario == "all" {
        "report".to_owned()
    } else {
        args.scenario.clone()
    };
    run.report
        .write(&args.out, &file)
        .with_context(|| format!("writing the report under {}", args.out.display()))?;
    eprintln!(
        "done in {:.0} s; wrote {}/{file}.json and .md",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
