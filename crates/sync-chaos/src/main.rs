//! The chaos harness: `cargo run --release -p sync-chaos -- [--store S] [--short | --duration D]`.
//!
//! For each store it starts pods (an elector and its worker processes), a fencing register the
//! workers write to while they hold the lock (or a semaphore's permit, or a read-write lock:
//! `--primitive`), and a nemesis that kills and pauses workers, kills
//! and pauses electors, and breaks the store (Kubernetes API errors, latency, partitions and
//! dropped watches; etcd leader kills, quorum loss, and network partitions in network
//! namespaces). Then the checker reads the whole history. The report goes to the terminal and to
//! `target/chaos/chaos.{json,md}`; the exit status is 1 when any check failed. See
//! docs/reliability.md.

mod checker;
mod fence;
mod history;
mod nemesis;
mod netns;
mod pods;
mod register;
mod report;
mod rng;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sync_testkit::clock::now_ns;
use sync_testkit::stores::StoreKind;

use crate::fence::Admits;
use crate::nemesis::{Deck, Fault};
use crate::pods::{Setup, System};
use crate::register::Register;
use crate::rng::Rng;

/// Fault-injection runs against every store, with the history checked.
#[derive(Parser, Debug)]
#[command(name = "sync-chaos")]
struct Args {
    /// `memory`, `kubernetes` (the API test server), `kube-apiserver` (a real one), `etcd`, or
    /// `all` (every store but `kube-apiserver`).
    #[arg(long, default_value = "all")]
    store: String,
    /// How long the nemesis runs on each store.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    duration: Duration,
    /// Run each of the store's fault kinds once instead (what CI runs).
    #[arg(long)]
    short: bool,
    /// The seed for the nemesis and the workers (default: from the clock; the report says it).
    #[arg(long)]
    seed: Option<u64>,
    /// What the workers contend for: `lock`, `semaphore=<n>` (n permits) or `rwlock` (a
    /// writer one section in three).
    #[arg(long, default_value = "lock")]
    primitive: Admits,
    /// The lock's ttl in seconds.
    #[arg(long, default_value_t = 3)]
    ttl: u64,
    /// How long past the ttl the store may stay without a holder after a fault heals.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    slack: Duration,
    /// Do not use network namespaces, even when this process may create them.
    #[arg(long)]
    no_netns: bool,
    /// Where the report and the histories go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// The elector binary (default: build and use this workspace's release binary).
    #[arg(long, env = "SYNC_CHAOS_ELECTOR")]
    elector: Option<PathBuf>,
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("__worker") {
        return worker::run();
    }
    let args = Args::parse();
    let stores: Vec<StoreKind> = match args.store.as_str() {
        "all" => StoreKind::ALL.to_vec(),
        name => vec![
            StoreKind::ALL
                .into_iter()
                .chain([StoreKind::KubeApiServer])
                .find(|k| k.name() == name)
                .with_context(|| {
                    format!(
                        "unknown store {name:?}: memory, kubernetes (the API test server), \
                         kube-apiserver (a real one, from scripts/install-test-deps), etcd or all"
                    )
                })?,
        ],
    };
    if args.ttl < 2 {
        bail!("--ttl must be at least 2 seconds (etcd's shortest lease)");
    }
    let binary = match &args.elector {
        Some(path) => path.clone(),
        None => sync_testkit::release_elector()?,
    };
    let seed = args.seed.unwrap_or_else(now_ns);
    let netns = !args.no_netns && netns::available();
    if !netns && !args.no_netns {
        eprintln!(
            "network namespaces are not available here (needs root and ip): etcd runs without net-partition"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = report::Report {
        machine: sync_testkit::machine(),
        started: utc_now(),
        seed,
        short: args.short,
        stores: Vec::new(),
    };
    for kind in stores {
        eprintln!("== {}, {} (seed {seed})", kind.name(), args.primitive);
        let run = run_store(kind, &args, &binary, &runtime, seed, netns)
            .with_context(|| format!("the chaos run on {}", kind.name()))?;
        report.stores.push(run);
    }
    println!("{}", report.markdown());
    report.write(&args.out)?;
    eprintln!("wrote {}/chaos.json and chaos.md", args.out.display());
    if !report.passed() {
        bail!("the checker found failures (above)");
    }
    Ok(())
}

fn run_store(
    kind: StoreKind,
    args: &Args,
    binary: &Path,
    runtime: &tokio::runtime::Runtime,
    seed: u64,
    netns: bool,
) -> Result<report::StoreRun> {
    let dir = std::path::absolute(args.out.join(kind.name()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let register = Register::start(&dir, args.primitive)?;
    let netns = netns && kind == StoreKind::Etcd;
    let setup = Setup {
        binary,
        ttl: args.ttl,
        primitive: args.primitive,
        dir: &dir,
        register: register.path(),
        seed,
        netns,
    };
    let mut system = System::start(kind, runtime, &setup)?;
    let ttl = Duration::from_secs(args.ttl);
    let mut rng = Rng::new(seed);
    let mut deck = Deck::new(Fault::for_store(kind, netns));

    // Let the workers get going before the first fault.
    let warm = Instant::now();
    while register.last_writer().is_none() {
        if warm.elapsed() > Duration::from_secs(30) {
            bail!(
                "no worker wrote to the register within 30 s (see {})",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));

    let started = Instant::now();
    let mut faults = Vec::new();
    loop {
        let done = if args.short {
            faults.len() >= deck.kinds()
        } else {
            started.elapsed() >= args.duration
        };
        if done {
            break;
        }
        let fault = deck.draw(&mut rng);
        let injected = nemesis::inject(&mut system, &register, fault, ttl, &mut rng)?;
        eprintln!(
            "  {:>6.1} s  {} (worker {:?}, pod {:?}), {:.1} s",
            started.elapsed().as_secs_f64(),
            fault.name(),
            injected.worker,
            injected.pod,
            Duration::from_nanos(injected.end - injected.start).as_secs_f64()
        );
        faults.push(injected);
        std::thread::sleep(ttl + rng.millis(500, 2000));
    }
    // Long enough that a system that never recovered shows as a gap over the bound.
    std::thread::sleep(ttl + args.slack + Duration::from_secs(1));
    // The window closes before the workers are stopped: stopping one frees the lock for the next,
    // and what happens after the window is not part of the history.
    let end = now_ns();
    let seconds = started.elapsed().as_secs();
    system.stop();

    let mut sections = Vec::new();
    let mut waits = Vec::new();
    let mut acquire_errors = 0;
    for w in &system.workers {
        let kills: Vec<u64> = faults
            .iter()
            .filter(|x| x.fault == Fault::KillHolder && x.worker == Some(w.id))
            .map(|x| x.start)
            .collect();
        let history = history::read(&system.history(w.id), w.id, &kills, end)?;
        acquire_errors += history.errors;
        sections.extend(history.sections);
        waits.extend(history.waits);
    }
    let findings = checker::check(
        &sections,
        &waits,
        &register.log(),
        &faults,
        checker::Terms {
            admits: args.primitive,
            ttl,
            slack: args.slack,
            end,
        },
    );
    std::fs::write(
        dir.join("history.json"),
        serde_json::to_string(&serde_json::json!({
            "sections": sections, "waits": waits, "writes": register.log(), "faults": faults,
        }))?,
    )?;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for x in &faults {
        *by_kind.entry(x.fault.name()).or_default() += 1;
    }
    Ok(report::StoreRun {
        store: kind.name().to_owned(),
        primitive: args.primitive,
        seconds,
        ttl_s: args.ttl,
        pods: system.pods.len(),
        workers: system.workers.len(),
        netns,
        faults: by_kind,
        acquire_errors,
        findings,
    })
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
